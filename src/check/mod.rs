//! Verification. Structure: every index file opens, every indexed pack
//! exists with the indexed size and a header that agrees with the index,
//! every snapshot's trees decode and every blob they reach is indexed. With
//! `--read-data`: every (selected) pack is read whole, its name checked
//! against its BLAKE3, and every blob decrypted and verified. Damage is
//! reported with the snapshots and files it affects.

pub mod repair;

use crate::backup::progress::Progress;
use crate::filter::{decode_blob, decode_blob_in_place, BlobKind};
use crate::id::Id;
use crate::index::file::IndexFile;
use crate::pack::{read_pack_header, PackedBlob};
use crate::repo::{layout, Repository};
use crate::tree::{NodeKind, Tree};
use anyhow::{anyhow, Result};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Part `n` of `m` (1-based), chosen by pack id, so running 1/m … m/m
    /// reads every pack once.
    Subset {
        n: u32,
        m: u32,
    },
    /// About this percentage of packs, chosen at random.
    Percent(f64),
}

impl ReadData {
    /// Parses `N/M` or `P%`, for the CLI, the API and the settings alike;
    /// the error starts with the value, for the caller to name its field.
    pub fn parse_subset(s: &str) -> Result<ReadData> {
        let bad = || {
            anyhow!("{s:?}: give N/M with 1 ≤ N ≤ M (e.g. 1/5) or a percentage above 0 up to 100 (e.g. 10%)")
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            // (NaN fails this too)
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (Ok(n), Ok(m)) = (n.trim().parse::<u32>(), m.trim().parse::<u32>()) else {
            return Err(bad());
        };
        if m == 0 || n == 0 || n > m {
            return Err(bad());
        }
        Ok(ReadData::Subset { n, m })
    }

    fn selects(&self, pack: &Id) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, m } => {
                u32::from_be_bytes(pack.0[..4].try_into().expect("4 bytes")) % m == n - 1
            }
            ReadData::Percent(p) => {
                let r = u32::from_le_bytes(crate::crypto::random_bytes::<4>());
                f64::from(r) / f64::from(u32::MAX) * 100.0 < p
            }
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    pub errors: Vec<String>,
    /// Not damage: e.g. packs no index lists (left by an interrupted backup).
    pub notes: Vec<String>,
    pub index_files: usize,
    pub packs: usize,
    /// Of `packs`, those prune condemned (unused, waiting for deletion).
    pub packs_condemned: usize,
    pub packs_read: usize,
    pub snapshots: usize,
    pub trees: usize,
    pub blobs_read: u64,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

struct IndexedBlob {
    pack: Id,
    entry: PackedBlob,
}

/// The index in force, read from storage.
struct ReadIndex {
    files: usize,
    errors: Vec<String>,
    blobs: HashMap<(BlobKind, Id), IndexedBlob>,
    packs: HashMap<Id, (u64, Vec<PackedBlob>)>,
    /// Condemned packs that no file lists live.
    condemned: HashMap<Id, (u64, Vec<PackedBlob>)>,
}

/// Reads every index file in force (a prune may replace the index
/// meanwhile: see `Repository::read_listed_index_files`); a file that cannot
/// be read is an error of the report, not the end of the check.
fn read_index(repo: &Repository) -> Result<ReadIndex> {
    let listed = repo.read_listed_index_files(&HashSet::new())?;
    let mut errors = Vec::new();
    let mut files: Vec<(Id, IndexFile)> = Vec::new();
    for (id, _, file) in listed.read {
        match file {
            Ok(f) => files.push((id, f)),
            Err(e) => errors.push(format!("index file {}: {e:#}", id.short())),
        }
    }
    let superseded: HashSet<Id> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut index = ReadIndex {
        files: listed.present.len(),
        errors,
        blobs: HashMap::new(),
        packs: HashMap::new(),
        condemned: HashMap::new(),
    };
    for (_, file) in files.into_iter().filter(|(id, _)| !superseded.contains(id)) {
        for p in file.packs {
            for b in &p.blobs {
                index.blobs.insert(
                    (b.kind, b.id),
                    IndexedBlob {
                        pack: p.id,
                        entry: *b,
                    },
                );
            }
            index.packs.insert(p.id, (p.size, p.blobs));
        }
        for c in file.condemned {
            index
                .condemned
                .insert(c.pack.id, (c.pack.size, c.pack.blobs));
        }
    }
    index
        .condemned
        .retain(|id, _| !index.packs.contains_key(id));
    Ok(index)
}

pub fn check(repo: &Repository, read_data: ReadData) -> Result<CheckReport> {
    check_with_progress(repo, read_data, &Progress::default())
}

/// [`check`], counting packs (and with `read_data` their bytes) into
/// `progress` as they are checked.
pub fn check_with_progress(
    repo: &Repository,
    read_data: ReadData,
    progress: &Progress,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let errors = Mutex::new(Vec::new());
    let err = |e: String| errors.lock().expect("errors lock").push(e);

    // Snapshots are listed before the index is read: backups run beside
    // check, and write their index files before their snapshot, so every
    // snapshot listed here finds its blobs in the index read next.
    let snapshot_ids = repo.snapshot_ids()?;
    // 1. index files, straight from storage (the cache is not the truth)
    let index = read_index(repo)?;
    report.index_files = index.files;
    for e in index.errors {
        err(e);
    }
    let mut blobs = index.blobs;
    let mut packs = index.packs;

    // 2. packs: present, right size, header agrees with the index
    let on_storage: HashMap<Id, u64> = repo
        .storage
        .list(layout::DATA_DIR)?
        .into_iter()
        .filter_map(|o| {
            let id = layout::id_of(&o.path)?;
            if o.path != layout::pack(&id) {
                err(format!("{}: pack stored under the wrong directory", o.path));
            }
            Some((id, o.size))
        })
        .collect();
    report.packs = on_storage.len();
    // Condemned packs (§14) are checked like live ones while they exist;
    // one that is gone was deleted by a prune, which is no damage unless a
    // snapshot needs its blobs (the tree walk tells).
    let mut condemned_gone = 0;
    for (id, (size, listed)) in index.condemned {
        if !on_storage.contains_key(&id) {
            condemned_gone += 1;
            continue;
        }
        for b in &listed {
            blobs.entry((b.kind, b.id)).or_insert(IndexedBlob {
                pack: id,
                entry: *b,
            });
        }
        report.packs_condemned += 1;
        packs.insert(id, (size, listed));
    }
    if report.packs_condemned > 0 || condemned_gone > 0 {
        report.notes.push(format!(
            "{} packs are condemned by prune (unused; deleted once their grace is over); \
             {condemned_gone} more already deleted",
            report.packs_condemned
        ));
    }
    let mut unreferenced: Vec<&Id> = on_storage
        .keys()
        .filter(|id| !packs.contains_key(id))
        .collect();
    unreferenced.sort();
    if !unreferenced.is_empty() {
        report.notes.push(format!(
            "{} packs are in no index (left by an interrupted backup; prune removes them): {}",
            unreferenced.len(),
            unreferenced
                .iter()
                .map(|id| id.short())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let damaged: Mutex<HashSet<Id>> = Mutex::new(HashSet::new());
    let read_blobs = std::sync::atomic::AtomicU64::new(0);
    let mut pack_list: Vec<(&Id, &(u64, Vec<PackedBlob>))> = packs.iter().collect();
    pack_list.sort_by_key(|(id, _)| **id);
    let selected: Vec<bool> = pack_list
        .iter()
        .map(|(id, _)| read_data.selects(id))
        .collect();
    report.packs_read = selected.iter().filter(|s| **s).count();
    progress.total_files.store(pack_list.len() as u64, Relaxed);
    let to_read = pack_list
        .iter()
        .zip(&selected)
        .filter(|(_, read)| **read)
        .fold(0u64, |n, ((_, (size, _)), _)| n.saturating_add(*size));
    progress.total_bytes.store(to_read, Relaxed);
    progress.scan_done.store(true, Relaxed);
    pack_list.par_iter().zip(selected.par_iter()).for_each(|((id, (size, listed)), read_all)| {
        let path = layout::pack(id);
        let mark = |blobs: &[PackedBlob]| damaged.lock().expect("damaged lock").extend(blobs.iter().map(|b| b.id));
        match on_storage.get(id) {
            None => {
                err(format!("pack {path} is missing"));
                mark(listed);
                return;
            }
            Some(actual) if actual != size => {
                err(format!("pack {path} is {actual} bytes, the index says {size}: truncated or damaged"));
                mark(listed);
                return;
            }
            _ => {}
        }
        let result = if *read_all {
            read_whole_pack(repo, id, listed, &read_blobs)
        } else {
            check_pack_header(repo, id, *size, listed)
        };
        progress.file_done(if *read_all { *size } else { 0 });
        if let Err((e, bad)) = result {
            err(format!("pack {path}: {e}"));
            mark(&bad);
        }
    });
    report.blobs_read = read_blobs.into_inner();

    // 3. snapshots: every tree decodes, every reachable blob is indexed
    let damaged = damaged.into_inner().expect("damaged lock");
    let mut walker = TreeWalker {
        repo,
        blobs: &blobs,
        damaged: &damaged,
        seen: HashMap::new(),
        errors: Vec::new(),
    };
    report.snapshots = snapshot_ids.len();
    for sid in snapshot_ids {
        match repo.load_snapshot(&sid) {
            Ok(s) => {
                walker.walk(&sid, s.tree, "");
            }
            // removed by a `forget` running meanwhile
            Err(e) if crate::storage::is_not_found(&e) => report.snapshots -= 1,
            Err(e) => walker
                .errors
                .push(format!("snapshot {}: {e:#}", sid.short())),
        }
    }
    report.trees = walker.seen.len();
    let mut all = errors.into_inner().expect("errors lock");
    all.extend(walker.errors);
    report.errors = all;
    Ok(report)
}

type PackFault = (String, Vec<PackedBlob>);

fn check_pack_header(
    repo: &Repository,
    id: &Id,
    size: u64,
    listed: &[PackedBlob],
) -> Result<(), PackFault> {
    let fault = |e: String| (e, listed.to_vec());
    let header = repo
        .read_pack_header(id, size)
        .map_err(|e| fault(format!("{e:#}")))?;
    compare_with_index(&header, listed).map_err(fault)
}

fn compare_with_index(header: &[PackedBlob], listed: &[PackedBlob]) -> Result<(), String> {
    let in_header: HashSet<&PackedBlob> = header.iter().collect();
    let missing = listed.iter().filter(|b| !in_header.contains(b)).count();
    if missing > 0 {
        return Err(format!(
            "{missing} blobs listed in the index are not in the pack's header"
        ));
    }
    Ok(())
}

fn read_whole_pack(
    repo: &Repository,
    id: &Id,
    listed: &[PackedBlob],
    read_blobs: &std::sync::atomic::AtomicU64,
) -> Result<(), PackFault> {
    let bytes = repo
        .storage
        .read(&layout::pack(id), layout::max_size::PACK)
        .map_err(|e| (format!("{e:#}"), listed.to_vec()))?;
    let mut problems = Vec::new();
    if Id::of_stored_bytes(&bytes) != *id {
        problems.push("content does not match its name (BLAKE3): the pack is damaged".to_string());
    }
    let mut bad = Vec::new();
    match read_pack_header(&repo.keys.cipher(), &bytes) {
        Ok(header) => {
            if let Err(e) = compare_with_index(&header, listed) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(format!("header: {e}")),
    }
    // Each blob is copied out before it is opened in place: a damaged index
    // may list one range twice, which must not fail the second time. Both
    // buffers are kept from blob to blob (fresh ones of 1 MiB and up are
    // fresh mappings, every page faulted in and zeroed).
    let (mut sealed, mut plain) = (Vec::new(), Vec::new());
    for b in listed {
        read_blobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let end = b.offset + u64::from(b.length);
        let ok = end <= bytes.len() as u64 && {
            sealed.clear();
            sealed.extend_from_slice(&bytes[b.offset as usize..end as usize]);
            decode_blob_in_place(
                &repo.keys,
                b.kind,
                &b.id,
                b.raw_length,
                b.compression,
                &mut sealed,
                &mut plain,
            )
            .is_ok()
        };
        if !ok {
            bad.push(*b);
        }
    }
    if !bad.is_empty() {
        problems.push(format!(
            "{} blobs fail to decrypt or verify: {}",
            bad.len(),
            bad.iter()
                .map(|b| format!("{} {}", b.kind.name(), b.id.short()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err((problems.join("; "), bad))
    }
}

/// Walks every snapshot's trees once, reporting unindexed or damaged blobs
/// with the snapshot and path that reach them.
struct TreeWalker<'a> {
    repo: &'a Repository,
    blobs: &'a HashMap<(BlobKind, Id), IndexedBlob>,
    damaged: &'a HashSet<Id>,
    /// Trees walked, with how many directory levels they hold below them.
    seen: HashMap<Id, usize>,
    errors: Vec<String>,
}

impl TreeWalker<'_> {
    /// Checks the tree `tree_id` at `dir`; how many directory levels it
    /// holds below it.
    fn walk(&mut self, snapshot: &Id, tree_id: Id, dir: &str) -> usize {
        let where_ = |path: &str| {
            format!(
                "snapshot {}, {}",
                snapshot.short(),
                if path.is_empty() { "/" } else { path }
            )
        };
        if !self.blobs.contains_key(&(BlobKind::Tree, tree_id)) {
            self.errors.push(format!(
                "{}: tree {} is not in any index",
                where_(dir),
                tree_id.short()
            ));
            return 0;
        }
        if self.damaged.contains(&tree_id) {
            self.errors.push(format!(
                "{}: tree {} is in a damaged pack",
                where_(dir),
                tree_id.short()
            ));
            return 0;
        }
        // A tree reached again (shared by snapshots) was checked already;
        // its files are reported under the first snapshot that reached it.
        // Only its depth here is new: restores walk it from this place too.
        let depth = crate::tree::depth_of(dir);
        if let Some(&below) = self.seen.get(&tree_id) {
            if let Err(e) = crate::repo::check_level(depth + below, || dir.to_string()) {
                self.errors.push(format!("{}: {e:#}", where_(dir)));
            }
            return below;
        }
        if let Err(e) = crate::repo::check_level(depth, || dir.to_string()) {
            self.errors.push(format!("{}: {e:#}", where_(dir)));
            return 0;
        }
        self.seen.insert(tree_id, 0);
        let tree: Tree = match self.load(&tree_id) {
            Ok(t) => t,
            Err(e) => {
                self.errors
                    .push(format!("{}: tree {}: {e:#}", where_(dir), tree_id.short()));
                return 0;
            }
        };
        let mut below = 0;
        for node in tree.nodes {
            let path = format!("{dir}/{}", node.name_lossy());
            match node.kind {
                NodeKind::Dir { subtree } => {
                    below = below.max(1 + self.walk(snapshot, subtree, &path));
                }
                NodeKind::File { content } => {
                    let missing = content
                        .iter()
                        .filter(|id| !self.blobs.contains_key(&(BlobKind::Data, **id)))
                        .count();
                    let bad = content
                        .iter()
                        .filter(|id| self.damaged.contains(id))
                        .count();
                    if missing > 0 {
                        self.errors.push(format!(
                            "{}: {missing} data blobs are not in any index",
                            where_(&path)
                        ));
                    }
                    if bad > 0 {
                        self.errors.push(format!(
                            "{}: {bad} data blobs are in damaged or missing packs",
                            where_(&path)
                        ));
                    }
                }
                _ => {}
            }
        }
        self.seen.insert(tree_id, below);
        below
    }

    /// Reads a tree from its pack as indexed (not from the cache).
    fn load(&self, id: &Id) -> Result<Tree> {
        let b = &self.blobs[&(BlobKind::Tree, *id)];
        let e = &b.entry;
        let sealed = self.repo.storage.read_range(
            &layout::pack(&b.pack),
            e.offset..e.offset + u64::from(e.length),
        )?;
        let plain = decode_blob(
            &self.repo.keys,
            BlobKind::Tree,
            id,
            e.raw_length,
            e.compression,
            &sealed,
        )?;
        Ok(Tree::decode(&plain)?)
    }
}

#[cfg(test)]
mod tests {
    use super::ReadData;

    #[test]
    fn subsets_are_n_of_m_or_a_percentage_above_zero() {
        assert!(matches!(
            ReadData::parse_subset("1/5"),
            Ok(ReadData::Subset { n: 1, m: 5 })
        ));
        assert!(matches!(ReadData::parse_subset("10%"), Ok(ReadData::Percent(p)) if p == 10.0));
        for bad in ["0/5", "6/5", "1/0", "0%", "101%", "NaN%", "--x", "a/b", ""] {
            let e = ReadData::parse_subset(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{bad:?}")), "{e}");
        }
    }
}
