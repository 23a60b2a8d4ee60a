//! How much data snapshots hold (`cairn stats`), in restic's modes and
//! field names. Trees shared between snapshots are read once: totals of a
//! subtree are remembered by its id (restore size), and a tree or blob
//! already counted is not counted again (the deduplicated modes).

use super::Repository;
use crate::filter::BlobKind;
use crate::id::Id;
use crate::tree::NodeKind;
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// What `stats` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsMode {
    /// What a restore of each snapshot would write: every file of every
    /// snapshot, duplicates included.
    RestoreSize,
    /// Files with distinct content, each once.
    FilesByContents,
    /// The blobs (data and trees) the snapshots need, each once, as stored.
    RawData,
    /// The data blobs of the snapshots' files, each once, unpacked.
    BlobsPerFile,
}

impl std::str::FromStr for StatsMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<StatsMode> {
        Ok(match s {
            "restore-size" => StatsMode::RestoreSize,
            "files-by-contents" => StatsMode::FilesByContents,
            "raw-data" => StatsMode::RawData,
            "blobs-per-file" => StatsMode::BlobsPerFile,
            _ => {
                return Err(anyhow::anyhow!(
                    "unknown mode {s:?}: use restore-size, files-by-contents, raw-data or \
                     blobs-per-file"
                ))
            }
        })
    }
}

/// restic's `stats --json` fields (those a mode does not fill are left out).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SnapshotStats {
    pub total_size: u64,
    pub total_file_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_blob_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_uncompressed_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_ratio: Option<f64>,
    pub snapshots_count: u64,
}

#[derive(Default)]
struct Counter {
    /// Restore size: (files, bytes) below each tree.
    tree_totals: HashMap<Id, (u64, u64)>,
    seen_trees: HashSet<Id>,
    seen_blobs: HashSet<Id>,
    seen_contents: HashSet<Id>,
    stats: SnapshotStats,
}

impl Repository {
    /// Counts the snapshot trees `roots` by `mode`.
    pub fn stats(&self, roots: &[Id], mode: StatsMode) -> Result<SnapshotStats> {
        let mut c = Counter::default();
        c.stats.snapshots_count = roots.len() as u64;
        if matches!(mode, StatsMode::RawData | StatsMode::BlobsPerFile) {
            c.stats.total_blob_count = Some(0);
        }
        if mode == StatsMode::RawData {
            c.stats.total_uncompressed_size = Some(0);
        }
        for root in roots {
            match mode {
                StatsMode::RestoreSize => {
                    let (files, bytes) = self.restore_totals(*root, 0, &mut c)?;
                    c.stats.total_file_count = c.stats.total_file_count.saturating_add(files);
                    c.stats.total_size = c.stats.total_size.saturating_add(bytes);
                }
                _ => self.count_unique(*root, 0, mode, &mut c)?,
            }
        }
        if let Some(raw) = c.stats.total_uncompressed_size {
            if c.stats.total_size > 0 {
                c.stats.compression_ratio = Some(raw as f64 / c.stats.total_size as f64);
            }
        }
        Ok(c.stats)
    }

    /// Files and bytes below `tree`, `depth` levels down; each tree is
    /// counted once however often it recurs. Sums saturate: sizes come from
    /// stored trees, and shared subtrees multiply them.
    fn restore_totals(&self, tree: Id, depth: usize, c: &mut Counter) -> Result<(u64, u64)> {
        if let Some(t) = c.tree_totals.get(&tree) {
            return Ok(*t);
        }
        super::check_level(depth, || format!("tree {}", tree.short()))?;
        let mut totals = (0u64, 0u64);
        for node in self.load_tree(&tree)?.nodes {
            match node.kind {
                NodeKind::File { .. } => {
                    totals.0 += 1;
                    totals.1 = totals.1.saturating_add(node.size);
                }
                NodeKind::Dir { subtree } => {
                    let (files, bytes) = self.restore_totals(subtree, depth + 1, c)?;
                    totals.0 = totals.0.saturating_add(files);
                    totals.1 = totals.1.saturating_add(bytes);
                }
                _ => {}
            }
        }
        c.tree_totals.insert(tree, totals);
        Ok(totals)
    }

    fn count_unique(&self, tree: Id, depth: usize, mode: StatsMode, c: &mut Counter) -> Result<()> {
        if !c.seen_trees.insert(tree) {
            return Ok(());
        }
        super::check_level(depth, || format!("tree {}", tree.short()))?;
        if mode == StatsMode::RawData {
            self.count_blob(BlobKind::Tree, &tree, c)?;
        }
        for node in self.load_tree(&tree)?.nodes {
            match &node.kind {
                NodeKind::Dir { subtree } => self.count_unique(*subtree, depth + 1, mode, c)?,
                NodeKind::File { content } => {
                    let list: Vec<u8> = content.iter().flat_map(|b| b.0).collect();
                    let content_id = Id::of_stored_bytes(&list);
                    if c.seen_contents.insert(content_id) {
                        c.stats.total_file_count += 1;
                        if mode == StatsMode::FilesByContents {
                            c.stats.total_size = c.stats.total_size.saturating_add(node.size);
                        }
                        if mode != StatsMode::FilesByContents {
                            for blob in content {
                                self.count_blob(BlobKind::Data, blob, c)?;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn count_blob(&self, kind: BlobKind, id: &Id, c: &mut Counter) -> Result<()> {
        if !c.seen_blobs.insert(*id) {
            return Ok(());
        }
        let loc = self.locate(kind, id)?;
        *c.stats.total_blob_count.get_or_insert(0) += 1;
        match c.stats.total_uncompressed_size.as_mut() {
            // raw data: as stored, and unpacked beside it
            Some(raw) => {
                c.stats.total_size += u64::from(loc.blob.length);
                *raw += u64::from(loc.blob.raw_length);
            }
            None => c.stats.total_size += u64::from(loc.blob.raw_length),
        }
        Ok(())
    }
}
