//! What changed between two snapshots (`cairn diff`): restic's markers and
//! statistics. Subtrees with equal ids are equal, so two nearly equal
//! snapshots are compared in time proportional to what changed.

use super::Repository;
use crate::id::Id;
use crate::tree::{Node, NodeKind};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// How one path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// `+`: only in the second snapshot.
    Added,
    /// `-`: only in the first.
    Removed,
    /// `M`: its content differs (a file's data, a symlink's target).
    Modified,
    /// `U`: only its metadata differs (mode, owner, times, xattrs).
    Metadata,
    /// `T`: a different kind of entry (a file became a directory, …).
    TypeChanged,
}

impl Change {
    /// restic's one-letter marker.
    pub fn marker(self) -> &'static str {
        match self {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Modified => "M",
            Change::Metadata => "U",
            Change::TypeChanged => "T",
        }
    }
}

/// Entries and file bytes on one side of a diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffCounts {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    /// Sizes of the files counted.
    pub bytes: u64,
}

impl DiffCounts {
    fn count(&mut self, node: &Node) {
        match node.kind {
            NodeKind::File { .. } => {
                self.files += 1;
                self.bytes = self.bytes.saturating_add(node.size);
            }
            NodeKind::Dir { .. } => self.dirs += 1,
            _ => self.others += 1,
        }
    }
}

/// Totals of a diff (restic's `statistics` message, without blob counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffStats {
    /// Files whose content differs.
    pub changed_files: u64,
    /// What only the second snapshot has (and, for a changed type, the new entry).
    pub added: DiffCounts,
    /// What only the first has (and, for a changed type, the old entry).
    pub removed: DiffCounts,
}

struct Differ<'a, F> {
    repo: &'a Repository,
    metadata: bool,
    report: F,
    stats: DiffStats,
}

impl Repository {
    /// Compares the trees `from` and `to`, calling `report(path, change)`
    /// for each changed path in path order (metadata-only changes when
    /// `metadata`), and returns the totals.
    pub fn diff(
        &self,
        from: Id,
        to: Id,
        metadata: bool,
        report: impl FnMut(&str, Change),
    ) -> Result<DiffStats> {
        let mut d = Differ {
            repo: self,
            metadata,
            report,
            stats: DiffStats::default(),
        };
        d.trees(from, to, "")?;
        Ok(d.stats)
    }
}

impl<F: FnMut(&str, Change)> Differ<'_, F> {
    fn trees(&mut self, from: Id, to: Id, dir: &str) -> Result<()> {
        if from == to {
            return Ok(());
        }
        super::check_depth(dir)?;
        let (a, b) = (self.repo.load_tree(&from)?, self.repo.load_tree(&to)?);
        let (mut i, mut j) = (0, 0);
        while i < a.nodes.len() || j < b.nodes.len() {
            let order = match (a.nodes.get(i), b.nodes.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => Ordering::Less,
                (None, _) => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    self.one_side(&a.nodes[i], dir, Change::Removed)?;
                    i += 1;
                }
                Ordering::Greater => {
                    self.one_side(&b.nodes[j], dir, Change::Added)?;
                    j += 1;
                }
                Ordering::Equal => {
                    self.both(&a.nodes[i], &b.nodes[j], dir)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// An entry (and all below it) on one side only.
    fn one_side(&mut self, node: &Node, dir: &str, change: Change) -> Result<()> {
        let path = format!("{dir}/{}", node.name_lossy());
        match change {
            Change::Added => self.stats.added.count(node),
            _ => self.stats.removed.count(node),
        }
        if let NodeKind::Dir { subtree } = &node.kind {
            super::check_depth(&path)?;
            (self.report)(&format!("{path}/"), change);
            for child in self.repo.load_tree(subtree)?.nodes {
                self.one_side(&child, &path, change)?;
            }
        } else {
            (self.report)(&path, change);
        }
        Ok(())
    }

    fn both(&mut self, a: &Node, b: &Node, dir: &str) -> Result<()> {
        let path = format!("{dir}/{}", a.name_lossy());
        match (&a.kind, &b.kind) {
            (NodeKind::Dir { subtree: x }, NodeKind::Dir { subtree: y }) => {
                if self.metadata && !same_metadata(a, b) {
                    (self.report)(&format!("{path}/"), Change::Metadata);
                }
                self.trees(*x, *y, &path)
            }
            (x, y) if std::mem::discriminant(x) != std::mem::discriminant(y) => {
                self.stats.removed.count(a);
                self.stats.added.count(b);
                (self.report)(&path, Change::TypeChanged);
                // what a directory on either side holds came or went with it
                for (side, change) in [(x, Change::Removed), (y, Change::Added)] {
                    if let NodeKind::Dir { subtree } = side {
                        for child in self.repo.load_tree(subtree)?.nodes {
                            self.one_side(&child, &path, change)?;
                        }
                    }
                }
                Ok(())
            }
            (x, y) => {
                if x != y {
                    if matches!(x, NodeKind::File { .. }) {
                        self.stats.changed_files += 1;
                    }
                    (self.report)(&path, Change::Modified);
                } else if self.metadata && !same_metadata(a, b) {
                    (self.report)(&path, Change::Metadata);
                }
                Ok(())
            }
        }
    }
}

/// Whether what `ls -l` and restore would set is the same (the inode
/// number and ctime follow from the file system, not the file).
fn same_metadata(a: &Node, b: &Node) -> bool {
    (
        a.mode, a.uid, a.gid, &a.user, &a.group, a.mtime_ns, a.size, &a.xattrs,
    ) == (
        b.mode, b.uid, b.gid, &b.user, &b.group, b.mtime_ns, b.size, &b.xattrs,
    )
}
