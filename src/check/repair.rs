//! `repair index`: rebuild the index from the packs themselves (each pack's
//! header lists its blobs). Packs whose header cannot be read are reported
//! and left out; a later prune deletes them.

use crate::id::Id;
use crate::index::file::IndexedPack;
use crate::repo::{layout, IndexRewrite, Repository};
use anyhow::Result;
use rayon::prelude::*;

#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    pub packs: usize,
    pub blobs: usize,
    /// Packs left out, with why.
    pub unreadable: Vec<(String, String)>,
    pub rewrite: IndexRewrite,
}

/// Needs the exclusive lock.
pub fn repair_index(repo: &Repository) -> Result<RepairReport> {
    let old: Vec<Id> = repo.list_ids(layout::INDEX_DIR)?;
    let listed = repo.list_packs()?;
    let read: Vec<std::result::Result<IndexedPack, (Id, String)>> = listed
        .par_iter()
        .map(|(id, size)| match repo.read_pack_header(id, *size) {
            Ok(blobs) => Ok(IndexedPack {
                id: *id,
                size: *size,
                blobs,
            }),
            Err(e) => Err((*id, format!("{e:#}"))),
        })
        .collect();
    let mut report = RepairReport::default();
    let mut packs = Vec::new();
    for r in read {
        match r {
            Ok(p) => {
                report.blobs += p.blobs.len();
                packs.push(p);
            }
            Err((id, why)) => report.unreadable.push((layout::pack(&id), why)),
        }
    }
    report.packs = packs.len();
    packs.sort_by_key(|p| p.id);
    report.rewrite = repo.replace_index(packs, &old)?;
    repo.sync_index()?;
    Ok(report)
}
