//! Replacing the whole index (prune, `repair index`) so that a crash at any
//! point leaves a valid repository: new index files first, the last of them
//! superseding every old one, and only then the old ones are deleted.

use super::lock::LockKind;
use super::{layout, Repository};
use crate::crash_point::crash_point;
use crate::id::Id;
use crate::index::file::{CondemnedPack, IndexFile, IndexedPack};
use anyhow::Result;
use std::collections::HashSet;

/// Index files hold at most this many blobs, so none grows huge.
const BLOBS_PER_INDEX_FILE: usize = 100_000;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct IndexRewrite {
    pub index_files_written: usize,
    pub index_files_deleted: usize,
}

impl Repository {
    /// Makes `packs` (live) and `condemned` the whole index, replacing the
    /// index files `old` (every index file there was when the caller read
    /// the repository; superseded ones too, or a deleted superseder would
    /// bring them back to life). The ids of the files written are added to
    /// `written`. Needs the maintenance lock.
    pub fn replace_index(
        &self,
        packs: Vec<IndexedPack>,
        condemned: Vec<CondemnedPack>,
        old: &[Id],
        written: &mut HashSet<Id>,
    ) -> Result<IndexRewrite> {
        self.ensure_lock(LockKind::Exclusive, "a new index")?;
        let mut files: Vec<IndexFile> = Vec::new();
        let mut current = IndexFile::default();
        let mut blobs = 0;
        for p in packs {
            blobs += p.blobs.len();
            current.packs.push(p);
            if blobs >= BLOBS_PER_INDEX_FILE {
                files.push(std::mem::take(&mut current));
                blobs = 0;
            }
        }
        for c in condemned {
            blobs += c.pack.blobs.len();
            current.condemned.push(c);
            if blobs >= BLOBS_PER_INDEX_FILE {
                files.push(std::mem::take(&mut current));
                blobs = 0;
            }
        }
        // An empty repository still needs the file that supersedes the old.
        if !current.packs.is_empty() || !current.condemned.is_empty() || files.is_empty() {
            files.push(current);
        }
        if let Some(last) = files.last_mut() {
            last.supersedes = old.to_vec();
        }
        let mut done = IndexRewrite::default();
        for f in &files {
            written.insert(self.save_index_file(f)?);
            done.index_files_written += 1;
            crash_point("new-index-written");
        }
        self.ensure_lock(LockKind::Exclusive, "(deleting) old index files")?;
        for id in old {
            self.storage.delete(&layout::index(id))?;
            done.index_files_deleted += 1;
            crash_point("old-index-deleted");
        }
        Ok(done)
    }
}
