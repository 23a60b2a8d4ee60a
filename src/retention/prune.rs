//! `prune`: give back the space of blobs no snapshot reaches, in two phases,
//! beside running backups (format-spec §14, §15).
//!
//! Plan (reads only): mark every blob reachable from the snapshots; each
//! reachable blob is claimed by one pack (duplicates left by concurrent
//! backups count as unused). Live packs with nothing claimed are *condemned*,
//! not deleted: recorded in the new index with the time, so deduplication
//! stops using them. Packs with a small claimed share are repacked, and the
//! originals condemned too. A pack condemned by an earlier run is deleted
//! once its grace (`--keep-delete`, and at least the grace it was condemned
//! with) has passed by the storage's own clock and still nothing needs it;
//! one that a snapshot needs again is revived. Packs no index lists are
//! deleted once the storage's modification time says they are older than
//! the grace. No host's clock is compared with another's.
//!
//! Execute (under the maintenance lock, which backups never take), in an
//! order where a crash at any point leaves a valid repository:
//! 1. repacked blobs are verified and written into new packs;
//! 2. the new index is written; its last file supersedes every index file
//!    that existed when prune started;
//! 3. index files and snapshots written since the plan are read: a pack to
//!    delete that a backup revived or a new snapshot needs is spared;
//! 4. only then the old index files, and then the packs, are deleted.

use crate::backup::progress::Progress;
use crate::crash_point::crash_point;
use crate::filter::{decode_blob, BlobKind, EncodedBlob};
use crate::id::Id;
use crate::index::file::{CondemnedPack, IndexFile, IndexedPack};
use crate::pack::{PackBuilder, PackedBlob};
use crate::repo::lock::LockKind;
use crate::repo::{layout, Repository, UNINDEXED_MIN_AGE_NS};
use crate::tree::NodeKind;
use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

/// The default grace: a day, as rustic's `--keep-delete`.
pub const DEFAULT_KEEP_DELETE_NS: i64 = 24 * 3600 * 1_000_000_000;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Unused data tolerated afterwards, as a percentage of the repository.
    pub max_unused_percent: f64,
    /// Repack at most this many bytes of packs in one run.
    pub max_repack_bytes: Option<u64>,
    /// How long a pack stays condemned (and an unindexed pack is left alone)
    /// before it may be deleted, in storage time.
    pub keep_delete_ns: i64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            max_repack_bytes: None,
            keep_delete_ns: DEFAULT_KEEP_DELETE_NS,
        }
    }
}

/// A pack some of whose blobs move to new packs.
struct Repack {
    id: Id,
    size: u64,
    /// The blobs claimed from this pack: these are copied.
    keep: Vec<PackedBlob>,
    /// The whole pack, condemned once its blobs are copied.
    pack: IndexedPack,
}

/// What prune will do; `stats` says it in numbers.
pub struct PrunePlan {
    /// Every index file on storage when planning: the new index supersedes all.
    old_index_files: Vec<Id>,
    /// Packs kept live as they are (revived ones among them).
    keep: Vec<IndexedPack>,
    repack: Vec<Repack>,
    /// Packs that stay or become condemned.
    condemn: Vec<CondemnedPack>,
    /// Packs deleted at the end: condemned past their grace and needed by
    /// nothing, or unindexed and older than the grace.
    delete: Vec<Id>,
    /// The blobs of the condemned packs in `delete`, to spare a pack that a
    /// snapshot written meanwhile needs.
    delete_blobs: HashMap<(BlobKind, Id), Id>,
    /// The condemned packs in `delete`, to list them live again if spared.
    delete_packs: HashMap<Id, IndexedPack>,
    /// The snapshots the plan marked from.
    snapshots_marked: HashSet<Id>,
    grace_ns: i64,
    pub stats: PruneStats,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct PruneStats {
    pub snapshots: usize,
    pub packs: usize,
    pub bytes: u64,
    pub blobs: u64,
    pub blobs_used: u64,
    pub bytes_used: u64,
    /// Live packs nothing uses: condemned now, deleted by a later prune.
    pub packs_unused: usize,
    pub bytes_unused_packs: u64,
    /// Condemned packs whose grace is over: deleted now.
    pub packs_expired: usize,
    pub bytes_expired: u64,
    /// Condemned packs still within their grace.
    pub packs_waiting: usize,
    pub bytes_waiting: u64,
    /// Condemned packs a snapshot needs again: live again.
    pub packs_revived: usize,
    /// Packs no index lists, older than the grace: deleted now.
    pub packs_unindexed: usize,
    pub bytes_unindexed: u64,
    /// Packs no index lists, younger than the grace (perhaps a running
    /// backup's): left alone.
    pub packs_unindexed_young: usize,
    pub packs_repack: usize,
    pub bytes_repack: u64,
    /// Of the repacked bytes, what is copied into new packs.
    pub bytes_repack_used: u64,
    /// Unused bytes left in kept packs (what `--max-unused` tolerates).
    pub bytes_unused_left: u64,
    /// What this run deletes (expired and old unindexed packs).
    pub bytes_freed: u64,
    /// What a later run frees, once the packs condemned now have waited.
    pub bytes_freed_later: u64,
    pub index_files_old: usize,
}

/// What executing the plan did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct PruneResult {
    pub packs_written: usize,
    pub bytes_written: u64,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    pub packs_condemned: usize,
    pub packs_deleted: usize,
    /// Packs to delete that a backup or snapshot written meanwhile needed.
    pub packs_spared: usize,
    pub temp_files_removed: usize,
}

/// `5%`, `0`, `12.5%`: unused space tolerated after a prune, below 100; the
/// error starts with the value, for the caller to name its field.
pub fn parse_max_unused(s: &str) -> Result<f64> {
    let number = s.trim().strip_suffix('%').unwrap_or(s.trim());
    number
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..100.0).contains(p))
        .ok_or_else(|| anyhow!("{s:?}: give a percentage from 0 to below 100, e.g. 5%"))
}

/// The index as prune reads it: live packs, and condemned ones with their
/// condemnation time resolved to a number where the storage told it.
struct ReadIndex {
    live: HashMap<Id, IndexedPack>,
    condemned: HashMap<Id, CondemnedPack>,
}

fn read_index(repo: &Repository, files: &[(Id, Option<i64>)]) -> Result<ReadIndex> {
    let read = files
        .par_iter()
        .map(|(id, written)| Ok((*id, *written, repo.read_index_file(id)?)))
        .collect::<Result<Vec<(Id, Option<i64>, IndexFile)>>>()
        .context("reading the index (prune changes nothing while it cannot)")?;
    let superseded: HashSet<Id> = read
        .iter()
        .flat_map(|(_, _, f)| f.supersedes.iter().copied())
        .collect();
    let mut index = ReadIndex {
        live: HashMap::new(),
        condemned: HashMap::new(),
    };
    for (_, written, file) in read
        .into_iter()
        .filter(|(id, _, _)| !superseded.contains(id))
    {
        for p in file.packs {
            index.live.entry(p.id).or_insert(p);
        }
        for mut c in file.condemned {
            c.since_ns = c.since_ns.or(written);
            index.condemned.entry(c.pack.id).or_insert(c);
        }
    }
    // Live in any file (a backup revived it): live.
    index.condemned.retain(|id, _| !index.live.contains_key(id));
    Ok(index)
}

/// Reads the repository and decides; changes nothing. Needs the maintenance
/// lock: its storage time is the plan's "now".
pub fn plan_prune(repo: &Repository, opts: &PruneOptions) -> Result<PrunePlan> {
    if opts.keep_delete_ns < 0 {
        return Err(anyhow!("--keep-delete cannot be negative"));
    }
    let now = repo.storage_now_ns()?;
    let mut stats = PruneStats::default();
    // Snapshots first, then the index: a backup writes its index files
    // before its snapshot, so every snapshot listed here finds its blobs in
    // the index read next (and its trees in the cache synced now).
    let snapshots = repo.list_snapshots()?;
    repo.sync_index()?;
    let index_files = repo.list_index_files()?;
    let old_index_files: Vec<Id> = index_files.iter().map(|(id, _)| *id).collect();
    stats.index_files_old = old_index_files.len();
    let ReadIndex {
        live: mut packs,
        condemned,
    } = read_index(repo, &index_files)?;

    let on_storage: HashMap<Id, (u64, Option<i64>)> = repo
        .storage
        .list(layout::DATA_DIR)?
        .into_iter()
        .filter_map(|o| Some((layout::id_of(&o.path)?, (o.size, o.modified_ns))))
        .collect();
    for p in packs.values() {
        match on_storage.get(&p.id) {
            Some((size, _)) if *size == p.size => {}
            found => {
                return Err(anyhow!(
                    "pack {} is in the index but {} on storage; prune changes nothing while the \
                     repository is damaged: run `cairn check`, then `cairn repair index`",
                    p.id.short(),
                    match found {
                        None => "missing".to_string(),
                        Some((s, _)) => format!("{s} bytes instead of {}", p.size),
                    }
                ))
            }
        }
    }
    // A condemned pack that is gone was deleted by an earlier prune that
    // stopped before its index said so.
    let mut condemned: HashMap<Id, CondemnedPack> = condemned
        .into_iter()
        .filter(|(id, _)| on_storage.contains_key(id))
        .collect();
    let grace = opts.keep_delete_ns;
    let mut delete: Vec<Id> = Vec::new();
    for (id, (size, modified)) in &on_storage {
        if packs.contains_key(id) || condemned.contains_key(id) {
            continue;
        }
        // A running backup indexes its packs within seconds; it checks that
        // it did within UNINDEXED_MIN_AGE, whatever grace prune is given.
        let min_age = grace.max(UNINDEXED_MIN_AGE_NS);
        let age = now.zip(*modified).map(|(now, m)| now.saturating_sub(m));
        if age.is_some_and(|age| age >= min_age) {
            stats.packs_unindexed += 1;
            stats.bytes_unindexed += size;
            delete.push(*id);
        } else {
            stats.packs_unindexed_young += 1;
        }
    }

    let (mut used_data, mut used_trees, snapshots_marked) = mark_used(repo, snapshots)?;
    stats.snapshots = snapshots_marked.len();
    stats.blobs_used = (used_data.len() + used_trees.len()) as u64;

    // A condemned pack holding a blob no live pack has is needed again.
    let live_blobs: HashSet<(BlobKind, Id)> = packs
        .values()
        .flat_map(|p| p.blobs.iter().map(|b| (b.kind, b.id)))
        .collect();
    let mut revived = Vec::new();
    for (id, c) in &condemned {
        let needed = c.pack.blobs.iter().any(|b| {
            let used = match b.kind {
                BlobKind::Data => &used_data,
                BlobKind::Tree => &used_trees,
            };
            used.contains(&b.id) && !live_blobs.contains(&(b.kind, b.id))
        });
        if needed {
            revived.push(*id);
        }
    }
    for id in revived {
        let c = condemned.remove(&id).expect("listed");
        stats.packs_revived += 1;
        packs.insert(id, c.pack);
    }

    // Claim each used blob in one pack; packs in id order, so a re-run of the
    // plan on the same repository decides the same.
    let mut ids: Vec<Id> = packs.keys().copied().collect();
    ids.sort();
    let mut keep = Vec::new();
    let mut condemn: Vec<CondemnedPack> = Vec::new();
    let mut partial: Vec<(IndexedPack, Vec<PackedBlob>, u64)> = Vec::new();
    for id in ids {
        let pack = packs.remove(&id).expect("listed");
        stats.packs += 1;
        stats.bytes += pack.size;
        stats.blobs += pack.blobs.len() as u64;
        let mut claimed = Vec::new();
        let mut unused_bytes = 0u64;
        for b in &pack.blobs {
            let used = match b.kind {
                BlobKind::Data => &mut used_data,
                BlobKind::Tree => &mut used_trees,
            };
            if used.remove(&b.id) {
                stats.bytes_used += u64::from(b.length);
                claimed.push(*b);
            } else {
                // unreachable, or a copy of a blob an earlier pack claimed
                unused_bytes += u64::from(b.length);
            }
        }
        if claimed.is_empty() {
            stats.packs_unused += 1;
            stats.bytes_unused_packs += pack.size;
            condemn.push(CondemnedPack {
                pack,
                since_ns: None,
                grace_ns: grace,
            });
        } else if unused_bytes == 0 {
            keep.push(pack);
        } else {
            partial.push((pack, claimed, unused_bytes));
        }
    }
    if let Some(missing) = used_data
        .iter()
        .map(|id| ("data", id))
        .chain(used_trees.iter().map(|id| ("tree", id)))
        .next()
    {
        return Err(anyhow!(
            "{} blobs that snapshots need are in no pack (e.g. {} blob {}); prune changes \
             nothing while the repository is damaged: run `cairn check`",
            used_data.len() + used_trees.len(),
            missing.0,
            missing.1.short()
        ));
    }

    // Condemned packs nothing needs: deleted once their grace (and at least
    // the grace they were condemned with) has passed in storage time.
    let mut delete_blobs = HashMap::new();
    let mut delete_packs = HashMap::new();
    let mut condemned: Vec<CondemnedPack> = condemned.into_values().collect();
    condemned.sort_by_key(|c| c.pack.id);
    for c in condemned {
        let wait = c.grace_ns.max(grace);
        let expired = now
            .zip(c.since_ns)
            .is_some_and(|(now, since)| now >= since.saturating_add(wait));
        if expired {
            stats.packs_expired += 1;
            stats.bytes_expired += c.pack.size;
            for b in &c.pack.blobs {
                delete_blobs.insert((b.kind, b.id), c.pack.id);
            }
            delete.push(c.pack.id);
            delete_packs.insert(c.pack.id, c.pack);
        } else {
            stats.packs_waiting += 1;
            stats.bytes_waiting += c.pack.size;
            condemn.push(c);
        }
    }

    // Repack the emptiest packs first until what stays unused is tolerable.
    // Partly used tree packs are always repacked: they are small and every
    // listing and restore reads them.
    partial.sort_by(|a, b| {
        let share = |p: &(IndexedPack, Vec<PackedBlob>, u64)| p.2 as f64 / p.0.size.max(1) as f64;
        share(b).total_cmp(&share(a)).then(a.0.id.cmp(&b.0.id))
    });
    let used_total: u64 = stats.bytes_used;
    let p = opts.max_unused_percent.clamp(0.0, 99.9);
    let tolerated = (p / (100.0 - p) * used_total as f64) as u64;
    let mut unused_left: u64 = partial.iter().map(|(_, _, u)| *u).sum();
    let mut budget = opts.max_repack_bytes.unwrap_or(u64::MAX);
    let mut repack = Vec::new();
    for (pack, claimed, unused) in partial {
        let is_tree = pack.blobs.first().is_some_and(|b| b.kind == BlobKind::Tree);
        if (is_tree || unused_left > tolerated) && pack.size <= budget {
            budget -= pack.size;
            unused_left -= unused;
            stats.packs_repack += 1;
            stats.bytes_repack += pack.size;
            stats.bytes_repack_used += claimed.iter().map(|b| u64::from(b.length)).sum::<u64>();
            repack.push(Repack {
                id: pack.id,
                size: pack.size,
                keep: claimed,
                pack,
            });
        } else {
            keep.push(pack);
        }
    }
    stats.bytes_unused_left = unused_left;
    stats.bytes_freed = stats.bytes_expired + stats.bytes_unindexed;
    stats.bytes_freed_later =
        stats.bytes_unused_packs + stats.bytes_repack - stats.bytes_repack_used;
    delete.sort();
    Ok(PrunePlan {
        old_index_files,
        keep,
        repack,
        condemn,
        delete,
        delete_blobs,
        delete_packs,
        snapshots_marked,
        grace_ns: grace,
        stats,
    })
}

/// Every data and tree blob reachable from a snapshot, and the snapshots.
fn mark_used(
    repo: &Repository,
    snapshots: Vec<(Id, crate::tree::snapshot::Snapshot)>,
) -> Result<(HashSet<Id>, HashSet<Id>, HashSet<Id>)> {
    let mut data = HashSet::new();
    let mut trees = HashSet::new();
    let roots: Vec<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
    mark_from(repo, roots, &mut data, &mut trees)?;
    Ok((
        data,
        trees,
        snapshots.into_iter().map(|(id, _)| id).collect(),
    ))
}

/// Adds every blob reachable from `roots` to `data` and `trees`.
fn mark_from(
    repo: &Repository,
    roots: Vec<Id>,
    data: &mut HashSet<Id>,
    trees: &mut HashSet<Id>,
) -> Result<()> {
    let mut stack = roots;
    while let Some(id) = stack.pop() {
        if !trees.insert(id) {
            continue;
        }
        let tree = repo.load_tree(&id).with_context(|| {
            format!(
                "tree {}: prune changes nothing while a snapshot cannot be read \
                 (run `cairn check`)",
                id.short()
            )
        })?;
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir { subtree } => stack.push(subtree),
                NodeKind::File { content } => data.extend(content),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Packs read at once while repacking (bounds memory: up to ~16 MiB each;
/// cairn writes 8 MiB packs, older repositories have 16 MiB ones).
const REPACK_READ_BATCH: usize = 4;

/// Carries out a plan. Needs the maintenance lock.
pub fn execute_prune(
    repo: &Repository,
    plan: PrunePlan,
    progress: &Progress,
) -> Result<PruneResult> {
    // (what shows: packs repacked and deleted; bytes of packs repacked)
    progress
        .total_files
        .store((plan.repack.len() + plan.delete.len()) as u64, Relaxed);
    progress.total_bytes.store(
        plan.repack
            .iter()
            .fold(0u64, |n, r| n.saturating_add(r.size)),
        Relaxed,
    );
    progress.scan_done.store(true, Relaxed);
    crash_point("prune-planned");
    repo.ensure_lock(LockKind::Exclusive, "the pruned index")?;
    let mut result = PruneResult::default();
    let mut live = plan.keep;
    let written = repack(repo, &plan.repack, progress)?;
    result.packs_written = written.len();
    result.bytes_written = written.iter().map(|p| p.size).sum();
    live.extend(written);
    let mut condemn = plan.condemn;
    condemn.extend(plan.repack.into_iter().map(|r| CondemnedPack {
        pack: r.pack,
        since_ns: None,
        grace_ns: plan.grace_ns,
    }));
    result.packs_condemned = condemn.iter().filter(|c| c.since_ns.is_none()).count();

    let mut ours: HashSet<Id> = plan.old_index_files.iter().copied().collect();
    let rewrite = repo.replace_index(live, condemn, &plan.old_index_files, &mut ours)?;
    result.index_files_written = rewrite.index_files_written;
    result.index_files_deleted = rewrite.index_files_deleted;

    let spared = packs_needed_since_plan(
        repo,
        &ours,
        &plan.snapshots_marked,
        &plan.delete_blobs,
        &plan.delete_packs,
    )?;
    result.packs_spared = spared.len();
    repo.ensure_lock(LockKind::Exclusive, "(deleting) packs")?;
    for id in plan.delete.iter().filter(|id| !spared.contains(id)) {
        repo.storage.delete(&layout::pack(id))?;
        result.packs_deleted += 1;
        progress.file_done(0);
        crash_point("pack-deleted");
    }
    result.temp_files_removed = remove_temp_leftovers(repo);
    repo.sync_index()?;
    Ok(result)
}

/// The packs about to be deleted that something written since the plan
/// needs: listed live by an index file a backup wrote meanwhile (a revival),
/// or holding blobs of a snapshot written meanwhile. The latter are listed
/// live again in a new index file, so they stay.
fn packs_needed_since_plan(
    repo: &Repository,
    known_index_files: &HashSet<Id>,
    snapshots_marked: &HashSet<Id>,
    delete_blobs: &HashMap<(BlobKind, Id), Id>,
    delete_packs: &HashMap<Id, IndexedPack>,
) -> Result<HashSet<Id>> {
    let mut spared = HashSet::new();
    let new_files: Vec<Id> = repo
        .list_ids(layout::INDEX_DIR)?
        .into_iter()
        .filter(|id| !known_index_files.contains(id))
        .collect();
    for id in &new_files {
        let file = repo.read_index_file(id)?;
        spared.extend(file.packs.iter().map(|p| p.id));
    }
    crash_point("prune-rechecked-index");
    let new_snapshots: Vec<Id> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(id, _)| !snapshots_marked.contains(id))
        .map(|(_, s)| s.tree)
        .collect();
    if !new_snapshots.is_empty() {
        // The trees of new snapshots are in packs of index files we have
        // not ingested yet.
        repo.sync_index()?;
        let (mut data, mut trees) = (HashSet::new(), HashSet::new());
        mark_from(repo, new_snapshots, &mut data, &mut trees)?;
        let needed = data
            .iter()
            .map(|id| (BlobKind::Data, *id))
            .chain(trees.iter().map(|id| (BlobKind::Tree, *id)));
        let mut relist = Vec::new();
        for key in needed {
            if let Some(pack) = delete_blobs.get(&key) {
                if !spared.contains(pack) {
                    relist.push(delete_packs[pack].clone());
                    spared.insert(*pack);
                }
            }
        }
        if !relist.is_empty() {
            repo.save_index_file(&IndexFile {
                packs: relist,
                ..Default::default()
            })?;
        }
    }
    Ok(spared)
}

/// Copies the claimed blobs of the repacked packs into new packs. Every blob
/// is verified first: prune never copies (and then deletes the source of)
/// damaged data.
fn repack(repo: &Repository, packs: &[Repack], progress: &Progress) -> Result<Vec<IndexedPack>> {
    let mut out = Vec::new();
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    let cipher = repo.keys.cipher();
    let upload = |b: PackBuilder, out: &mut Vec<IndexedPack>| -> Result<()> {
        let pack = b.finish(&cipher);
        let size = pack.bytes.len() as u64;
        repo.storage.write(&layout::pack(&pack.id), pack.bytes)?;
        crash_point("repack-uploaded");
        out.push(IndexedPack {
            id: pack.id,
            size,
            blobs: pack.blobs,
        });
        Ok(())
    };
    for batch in packs.chunks(REPACK_READ_BATCH) {
        let read: Vec<Vec<EncodedBlob>> = batch
            .par_iter()
            .map(|r| {
                let claimed = read_claimed(repo, r);
                progress.file_done(r.size);
                claimed
            })
            .collect::<Result<_>>()?;
        for blob in read.into_iter().flatten() {
            let builder = builders
                .entry(blob.kind)
                .or_insert_with(|| PackBuilder::new(blob.kind));
            builder.push(blob);
            if builder.is_full() {
                let kind = builder.kind();
                let full = std::mem::replace(builder, PackBuilder::new(kind));
                upload(full, &mut out)?;
            }
        }
    }
    for (_, b) in builders {
        if !b.is_empty() {
            upload(b, &mut out)?;
        }
    }
    Ok(out)
}

fn read_claimed(repo: &Repository, r: &Repack) -> Result<Vec<EncodedBlob>> {
    let path = layout::pack(&r.id);
    let bytes = repo.storage.read(&path, layout::max_size::PACK)?;
    if bytes.len() as u64 != r.size {
        return Err(anyhow!(
            "{path}: {} bytes, the index says {}; prune stops before deleting anything",
            bytes.len(),
            r.size
        ));
    }
    r.keep
        .iter()
        .map(|b| {
            let sealed = &bytes[b.offset as usize..(b.offset + u64::from(b.length)) as usize];
            decode_blob(
                &repo.keys,
                b.kind,
                &b.id,
                b.raw_length,
                b.compression,
                sealed,
            )
            .map_err(|e| {
                anyhow!(
                    "{} blob {} in {path} is damaged ({e}); prune stops before deleting \
                         anything: run `cairn check --read-data`",
                    b.kind.name(),
                    b.id.short()
                )
            })?;
            Ok(EncodedBlob {
                kind: b.kind,
                id: b.id,
                sealed: sealed.to_vec(),
                raw_length: b.raw_length,
                compression: b.compression,
            })
        })
        .collect()
}

/// Half-written objects of killed processes (local repositories write each
/// object to `.tmp/` first, then rename it). Only old ones: a process waiting
/// for the lock may be writing its lock object right now.
fn remove_temp_leftovers(repo: &Repository) -> usize {
    let Some(root) = repo.storage.local_root() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(root.join(".tmp")) else {
        return 0;
    };
    let old = std::time::Duration::from_secs(600);
    entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > old))
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::parse_max_unused;

    #[test]
    fn max_unused_is_a_percentage_below_100() {
        assert_eq!(parse_max_unused("5%").unwrap(), 5.0);
        assert_eq!(parse_max_unused("0").unwrap(), 0.0);
        assert_eq!(parse_max_unused(" 12.5% ").unwrap(), 12.5);
        for bad in ["100%", "-1%", "NaN%", "x", ""] {
            let e = parse_max_unused(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{bad:?}")), "{e}");
        }
    }
}
