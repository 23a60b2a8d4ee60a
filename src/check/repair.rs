//! `repair index`: rebuild the index from the packs themselves (each pack's
//! header lists its blobs). Packs whose header is damaged are reported and
//! left out; a later prune deletes them. A pack whose header could not be
//! read because the storage failed keeps what the old index said of it: a
//! passing network error must not drop data from the index.

use crate::id::Id;
use crate::index::file::IndexedPack;
use crate::repo::{layout, IndexRewrite, Repository};
use crate::storage::StorageError;
use anyhow::Result;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    pub packs: usize,
    pub blobs: usize,
    /// Packs left out, with why.
    pub unreadable: Vec<(String, String)>,
    /// Packs whose header the storage failed to deliver, kept as the old
    /// index listed them, with why.
    pub kept_from_old_index: Vec<(String, String)>,
    pub rewrite: IndexRewrite,
}

/// Needs the exclusive lock.
pub fn repair_index(repo: &Repository) -> Result<RepairReport> {
    let old: Vec<Id> = repo.list_ids(layout::INDEX_DIR)?;
    let listed = repo.list_packs()?;
    let read: Vec<std::result::Result<IndexedPack, (Id, String, bool)>> = listed
        .par_iter()
        .map(|(id, size)| match repo.read_pack_header(id, *size) {
            Ok(blobs) => Ok(IndexedPack {
                id: *id,
                size: *size,
                blobs,
            }),
            Err(e) => {
                let storage_failed = e.downcast_ref::<StorageError>().is_some();
                Err((*id, format!("{e:#}"), storage_failed))
            }
        })
        .collect();
    let mut report = RepairReport::default();
    let mut packs = Vec::new();
    let mut old_entries: Option<HashMap<Id, IndexedPack>> = None;
    for r in read {
        match r {
            Ok(p) => {
                report.blobs += p.blobs.len();
                packs.push(p);
            }
            Err((id, why, true)) => {
                let old_entries = old_entries.get_or_insert_with(|| old_index_entries(repo, &old));
                match old_entries.remove(&id) {
                    Some(p) => {
                        report.blobs += p.blobs.len();
                        packs.push(p);
                        report.kept_from_old_index.push((layout::pack(&id), why));
                    }
                    None => report.unreadable.push((layout::pack(&id), why)),
                }
            }
            Err((id, why, false)) => report.unreadable.push((layout::pack(&id), why)),
        }
    }
    report.packs = packs.len();
    packs.sort_by_key(|p| p.id);
    report.rewrite = repo.replace_index(packs, Vec::new(), &old, &mut HashSet::new())?;
    repo.sync_index()?;
    Ok(report)
}

/// What the index files still in force said of each pack (live or
/// condemned); files that cannot be read are skipped, since repair exists
/// for a damaged index.
fn old_index_entries(repo: &Repository, files: &[Id]) -> HashMap<Id, IndexedPack> {
    let read: Vec<(Id, crate::index::file::IndexFile)> = files
        .par_iter()
        .filter_map(|id| Some((*id, repo.read_index_file(id).ok()?)))
        .collect();
    let superseded: HashSet<Id> = read
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut out = HashMap::new();
    for (_, file) in read.into_iter().filter(|(id, _)| !superseded.contains(id)) {
        let condemned = file.condemned.into_iter().map(|c| c.pack);
        for p in file.packs.into_iter().chain(condemned) {
            out.entry(p.id).or_insert(p);
        }
    }
    out
}
