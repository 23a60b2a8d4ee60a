//! `prune`: give back the space of blobs no snapshot reaches.
//!
//! Plan (reads only): mark every blob reachable from the snapshots; each
//! reachable blob is claimed by one pack (duplicates left by concurrent
//! backups count as unused); packs with nothing claimed are deleted, packs
//! with a small claimed share are repacked until the unused share left is at
//! most `--max-unused`. Packs on storage that no index lists are leftovers of
//! interrupted backups and are deleted.
//!
//! Execute (under the exclusive lock), in an order where a crash at any point
//! leaves a valid repository (format-spec/README.md, "Prune"):
//! 1. repacked blobs are verified and written into new packs;
//! 2. the new index is written; its last file supersedes every index file
//!    that existed when prune started, so readers ignore the old ones from
//!    then on;
//! 3. only then the old index files, and then the packs, are deleted.

use crate::crash_point::crash_point;
use crate::filter::{decode_blob, BlobKind, EncodedBlob};
use crate::id::Id;
use crate::index::file::{IndexFile, IndexedPack};
use crate::pack::{PackBuilder, PackedBlob, TARGET_PACK_SIZE};
use crate::repo::lock::LockKind;
use crate::repo::{layout, Repository};
use crate::tree::NodeKind;
use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Unused data tolerated afterwards, as a percentage of the repository.
    pub max_unused_percent: f64,
    /// Repack at most this many bytes of packs in one run.
    pub max_repack_bytes: Option<u64>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            max_repack_bytes: None,
        }
    }
}

/// A pack some of whose blobs move to new packs.
struct Repack {
    id: Id,
    size: u64,
    /// The blobs claimed from this pack: these are copied.
    keep: Vec<PackedBlob>,
}

/// What prune will do; `stats` says it in numbers.
pub struct PrunePlan {
    /// Every index file on storage when planning: the new index supersedes all.
    old_index_files: Vec<Id>,
    /// Packs kept as they are.
    keep: Vec<IndexedPack>,
    repack: Vec<Repack>,
    /// Packs deleted outright: nothing in them is used, or no index lists them.
    delete: Vec<Id>,
    pub stats: PruneStats,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneStats {
    pub snapshots: usize,
    pub packs: usize,
    pub bytes: u64,
    pub blobs: u64,
    pub blobs_used: u64,
    pub bytes_used: u64,
    pub packs_unused: usize,
    pub bytes_unused_packs: u64,
    pub packs_unindexed: usize,
    pub bytes_unindexed: u64,
    pub packs_repack: usize,
    pub bytes_repack: u64,
    /// Of the repacked bytes, what is copied into new packs.
    pub bytes_repack_used: u64,
    /// Unused bytes left in kept packs (what `--max-unused` tolerates).
    pub bytes_unused_left: u64,
    /// Roughly what the repository frees.
    pub bytes_freed: u64,
    pub index_files_old: usize,
}

/// What executing the plan did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneResult {
    pub packs_written: usize,
    pub bytes_written: u64,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    pub packs_deleted: usize,
    pub temp_files_removed: usize,
}

/// Reads the repository and decides; changes nothing.
pub fn plan_prune(repo: &Repository, opts: &PruneOptions) -> Result<PrunePlan> {
    let mut stats = PruneStats::default();
    let old_index_files = repo.list_ids(layout::INDEX_DIR)?;
    stats.index_files_old = old_index_files.len();
    let files = old_index_files
        .par_iter()
        .map(|id| Ok((*id, repo.read_index_file(id)?)))
        .collect::<Result<Vec<(Id, IndexFile)>>>()
        .context("reading the index (prune changes nothing while it cannot)")?;
    let superseded: HashSet<Id> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut packs: HashMap<Id, IndexedPack> = HashMap::new();
    for (_, file) in files.into_iter().filter(|(id, _)| !superseded.contains(id)) {
        for p in file.packs {
            packs.entry(p.id).or_insert(p);
        }
    }

    let on_storage: HashMap<Id, u64> = repo.list_packs()?.into_iter().collect();
    for p in packs.values() {
        match on_storage.get(&p.id) {
            Some(size) if *size == p.size => {}
            found => {
                return Err(anyhow!(
                    "pack {} is in the index but {} on storage; prune changes nothing while the \
                     repository is damaged: run `cairn check`, then `cairn repair index`",
                    p.id.short(),
                    match found {
                        None => "missing".to_string(),
                        Some(s) => format!("{s} bytes instead of {}", p.size),
                    }
                ))
            }
        }
    }
    let mut delete: Vec<Id> = on_storage
        .iter()
        .filter(|(id, _)| !packs.contains_key(id))
        .map(|(id, size)| {
            stats.packs_unindexed += 1;
            stats.bytes_unindexed += size;
            *id
        })
        .collect();

    let (mut used_data, mut used_trees, snapshots) = mark_used(repo)?;
    stats.snapshots = snapshots;
    stats.blobs_used = (used_data.len() + used_trees.len()) as u64;

    // Claim each used blob in one pack; packs in id order, so a re-run of the
    // plan on the same repository decides the same.
    let mut ids: Vec<Id> = packs.keys().copied().collect();
    ids.sort();
    let mut keep = Vec::new();
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
            delete.push(pack.id);
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
            });
        } else {
            keep.push(pack);
        }
    }
    stats.bytes_unused_left = unused_left;
    stats.bytes_freed = stats.bytes_unused_packs + stats.bytes_unindexed + stats.bytes_repack
        - stats.bytes_repack_used;
    delete.sort();
    Ok(PrunePlan {
        old_index_files,
        keep,
        repack,
        delete,
        stats,
    })
}

/// Every data and tree blob reachable from a snapshot, and the snapshot count.
fn mark_used(repo: &Repository) -> Result<(HashSet<Id>, HashSet<Id>, usize)> {
    let snapshots = repo.list_snapshots()?;
    let mut data = HashSet::new();
    let mut trees = HashSet::new();
    let mut stack: Vec<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
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
    Ok((data, trees, snapshots.len()))
}

/// Packs read at once while repacking (bounds memory: up to ~16 MiB each;
/// cairn writes 8 MiB packs, older repositories have 16 MiB ones).
const REPACK_READ_BATCH: usize = 4;

/// Carries out a plan. Needs the exclusive lock.
pub fn execute_prune(repo: &Repository, plan: PrunePlan) -> Result<PruneResult> {
    repo.ensure_lock(LockKind::Exclusive, "the pruned index")?;
    let mut result = PruneResult::default();
    let mut new_packs = plan.keep;
    let written = repack(repo, &plan.repack)?;
    result.packs_written = written.len();
    result.bytes_written = written.iter().map(|p| p.size).sum();
    new_packs.extend(written);

    let rewrite = repo.replace_index(new_packs, &plan.old_index_files)?;
    result.index_files_written = rewrite.index_files_written;
    result.index_files_deleted = rewrite.index_files_deleted;
    // Nothing live refers to these any more.
    for id in plan.delete.iter().chain(plan.repack.iter().map(|r| &r.id)) {
        repo.storage.delete(&layout::pack(id))?;
        result.packs_deleted += 1;
        crash_point("pack-deleted");
    }
    result.temp_files_removed = remove_temp_leftovers(repo);
    repo.sync_index()?;
    Ok(result)
}

/// Copies the claimed blobs of the repacked packs into new packs. Every blob
/// is verified first: prune never copies (and then deletes the source of)
/// damaged data.
fn repack(repo: &Repository, packs: &[Repack]) -> Result<Vec<IndexedPack>> {
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
            .map(|r| read_claimed(repo, r))
            .collect::<Result<_>>()?;
        for blob in read.into_iter().flatten() {
            let builder = builders
                .entry(blob.kind)
                .or_insert_with(|| PackBuilder::new(blob.kind));
            builder.push(blob);
            if builder.size() >= TARGET_PACK_SIZE {
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
    let bytes = repo.storage.read(&path)?;
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
