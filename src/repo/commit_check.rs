//! The commit check (format-spec §15): a writer that relied on the index
//! (deduplication, files unchanged since the parent) makes sure, before it
//! writes a snapshot, that every blob the snapshot reaches is still in a live
//! pack; and checks again after writing it, in case the process stood still
//! in between. A writer takes no lock, so a prune may have run meanwhile.
//!
//! Blobs can only leave the live index when the index is rewritten (prune,
//! `repair index`), which starts a new cache epoch. So when the epoch did
//! not change since the writer started, nothing it relied on can be gone and
//! the check costs one listing of `index/`. Otherwise it walks the
//! snapshot's trees; packs a prune condemned meanwhile are revived (an index
//! file listing them live) while their grace leaves room for it, and
//! anything else makes the commit fail.

use super::Repository;
use crate::filter::BlobKind;
use crate::id::Id;
use crate::index::file::{IndexFile, IndexedPack};
use crate::repo::layout;
use anyhow::{anyhow, Result};
use std::collections::HashSet;

/// A pack no index file lists is deleted by prune only once it is at least
/// this old (and older than prune's grace), by the storage's clock: a backup
/// indexes its packs within seconds, and checks that it did within this
/// time less a margin.
pub const UNINDEXED_MIN_AGE_NS: i64 = 3600 * 1_000_000_000;

/// What a writer read the index at: the cache epoch when it started
/// relying on it.
#[derive(Debug, Clone, Copy)]
pub struct CommitWindow {
    epoch: u64,
}

/// What the tree walk found.
#[derive(Default)]
struct Walk {
    trees: Vec<Id>,
    missing: u64,
    first_missing: Option<(BlobKind, Id)>,
    condemned_packs: HashSet<Id>,
}

/// How long before a condemned pack may be deleted a revival must be
/// visible: the margin for listings that lag behind writes.
fn revival_margin_ns(grace_ns: i64) -> i64 {
    (grace_ns / 2).min(3600 * 1_000_000_000)
}

/// Whether a revival written at storage time `written_ns` keeps a pack
/// condemned at `since_ns` with `grace_ns` from deletion: it must be visible
/// to the prune that would delete it, which looks no earlier than
/// `since + grace`. With no grace nothing can be revived. On storage that
/// keeps no times (both unknown) no prune ever deletes a condemned pack, so
/// any revival holds.
pub fn revival_allowed(since_ns: Option<i64>, grace_ns: i64, written_ns: Option<i64>) -> bool {
    let (since, written_ns) = match (since_ns, written_ns) {
        (None, None) => return true,
        (Some(since), Some(written)) => (since, written),
        _ => return false,
    };
    let deadline = since
        .saturating_add(grace_ns)
        .saturating_sub(revival_margin_ns(grace_ns));
    grace_ns > 0 && written_ns < deadline
}

impl CommitWindow {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Repository {
    /// Called before a writer first relies on the index.
    pub fn open_commit_window(&self) -> Result<CommitWindow> {
        Ok(CommitWindow {
            epoch: self.index.epoch()?,
        })
    }

    /// Makes sure every blob below `root` is in a live pack now, reviving
    /// packs condemned since `window` where allowed; otherwise fails, and the
    /// caller commits nothing. On success the trees are recorded as verified
    /// and the returned window starts now.
    pub fn ensure_committable(&self, root: &Id, window: CommitWindow) -> Result<CommitWindow> {
        self.sync_index()?;
        let epoch = self.index.epoch()?;
        if epoch == window.epoch {
            return Ok(window);
        }
        let walk = self.walk_liveness(root, epoch)?;
        if let Some((kind, id)) = walk.first_missing {
            return Err(anyhow!(
                "{} blobs this backup relies on (e.g. {} blob {}) were removed from the \
                 repository while it ran (by a prune or `repair index`); no snapshot was \
                 written. Run the backup (or copy) again: it stores them again",
                walk.missing,
                kind.name(),
                id.short()
            ));
        }
        if !walk.condemned_packs.is_empty() {
            self.revive(&walk.condemned_packs)?;
        }
        self.index.mark_verified(walk.trees, epoch)?;
        Ok(CommitWindow { epoch })
    }

    /// Every tree below `root` not yet verified in `epoch`, and the blobs
    /// that are not live: condemned (by pack) or missing.
    fn walk_liveness(&self, root: &Id, epoch: u64) -> Result<Walk> {
        let mut walk = Walk::default();
        let mut seen = HashSet::new();
        let mut stack = vec![*root];
        while let Some(tree_id) = stack.pop() {
            if !seen.insert(tree_id) || self.index.is_verified(&tree_id, epoch)? {
                continue;
            }
            self.classify(BlobKind::Tree, &tree_id, &mut walk)?;
            walk.trees.push(tree_id);
            let tree = self.load_tree(&tree_id)?;
            for node in tree.nodes {
                match node.kind {
                    crate::tree::NodeKind::Dir { subtree } => stack.push(subtree),
                    crate::tree::NodeKind::File { content } => {
                        for id in &content {
                            self.classify(BlobKind::Data, id, &mut walk)?;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(walk)
    }

    fn classify(&self, kind: BlobKind, id: &Id, walk: &mut Walk) -> Result<()> {
        if self.index.contains(kind, id)? {
            return Ok(());
        }
        match self.index.lookup_any(kind, id)? {
            Some(loc) => {
                walk.condemned_packs.insert(loc.pack);
            }
            None => {
                walk.missing += 1;
                walk.first_missing.get_or_insert((kind, *id));
            }
        }
        Ok(())
    }

    /// Lists condemned packs as live again in a new index file, then checks
    /// by the file's storage time that the revival came in time.
    fn revive(&self, packs: &HashSet<Id>) -> Result<()> {
        let mut revived = Vec::new();
        let mut condemnations = Vec::new();
        for pack in packs {
            let info = self.index.condemned(pack)?.ok_or_else(|| {
                anyhow!(
                    "pack {} holds blobs this backup relies on but is neither live nor \
                     condemned in the index; no snapshot was written. Run the backup (or copy) again",
                    pack.short()
                )
            })?;
            let path = layout::pack(pack);
            let size = self.storage.size(&path)?;
            let blobs = self.read_pack_header(pack, size)?;
            revived.push(IndexedPack {
                id: *pack,
                size,
                blobs,
            });
            condemnations.push((*pack, info));
        }
        revived.sort_by_key(|p| p.id);
        let file = IndexFile {
            packs: revived,
            ..Default::default()
        };
        let id = self.save_index_file(&file)?;
        crate::crash_point::crash_point("revival-written");
        let written = self.storage.modified_ns(&layout::index(&id))?;
        if let Some((pack, _)) = condemnations
            .iter()
            .find(|(_, c)| !revival_allowed(c.since_ns, c.grace_ns, written))
        {
            return Err(anyhow!(
                "pack {} holds blobs this backup relies on, and a prune condemned it too long \
                 ago for this backup to keep it (prune --keep-delete); no snapshot was \
                 written. Run the backup (or copy) again: it stores the data again",
                pack.short()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::revival_allowed;

    const H: i64 = 3600 * 1_000_000_000;

    #[test]
    fn a_revival_must_land_well_before_the_grace_ends() {
        let since = Some(100 * H);
        // a day of grace: up to an hour before its end
        assert!(revival_allowed(since, 24 * H, Some(100 * H + 22 * H)));
        assert!(!revival_allowed(since, 24 * H, Some(100 * H + 23 * H)));
        // ten minutes of grace: up to five minutes
        assert!(revival_allowed(since, H / 6, Some(100 * H + H / 13)));
        assert!(!revival_allowed(since, H / 6, Some(100 * H + H / 12)));
    }

    #[test]
    fn nothing_is_revived_without_grace_or_a_known_time() {
        assert!(!revival_allowed(Some(0), 0, Some(-1)));
        assert!(!revival_allowed(None, 24 * H, Some(0)));
        assert!(!revival_allowed(Some(0), 24 * H, None));
        // storage without times: no prune deletes, any revival holds
        assert!(revival_allowed(None, 0, None));
        // hostile numbers saturate instead of overflowing
        assert!(revival_allowed(Some(i64::MAX), i64::MAX, Some(0)));
        assert!(!revival_allowed(Some(i64::MIN), 1, Some(0)));
    }
}
