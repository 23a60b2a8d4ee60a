//! Reading, writing and naming snapshots.

use super::{layout, Repository};
use crate::crypto::ad;
use crate::id::Id;
use crate::tree::snapshot::Snapshot;
use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;

/// Narrows `latest` and listings (CLI: `--host`, `--tag`, `--path`).
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    /// Each entry is a comma-separated set of tags that must all be present;
    /// a snapshot matches if any entry matches.
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host_ok = self.hosts.is_empty() || self.hosts.contains(&s.hostname);
        let tags_ok = self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|set| set.split(',').all(|t| s.tags.iter().any(|x| x == t)));
        let paths_ok = self.paths.is_empty() || {
            let want: Vec<String> = self.paths.iter().map(|p| normalize_path_text(p)).collect();
            want.iter().all(|p| s.paths.contains(p))
        };
        host_ok && tags_ok && paths_ok
    }
}

/// The absolute, lexically normalised form of a path as recorded in snapshots.
pub fn normalize_path_text(p: &str) -> String {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.into());
    let mut parts: Vec<&str> = Vec::new();
    for c in abs.to_str().unwrap_or(p).split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Repository {
    /// Writes a snapshot object. Backups write without a lock (the commit
    /// check keeps them safe); a process that holds one checks it first.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        if self.holds_lock() {
            self.ensure_lock(super::lock::LockKind::Shared, "the snapshot")?;
        }
        self.write_object(ad::SNAPSHOT, &snap.encode(), layout::snapshot)
    }

    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let path = layout::snapshot(id);
        let plain = self.read_object(&path, id, "snapshot", ad::SNAPSHOT)?;
        Snapshot::decode(&plain).with_context(|| path)
    }

    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        self.list_ids(layout::SNAPSHOTS_DIR)
    }

    /// All snapshots, oldest first.
    /// A snapshot that vanishes between listing and reading was removed by
    /// a `forget` running meanwhile (readers take no lock): it is skipped.
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let ids = self.snapshot_ids()?;
        let mut all = ids
            .par_iter()
            .filter_map(|id| match self.load_snapshot(id) {
                Ok(s) => Some(Ok((*id, s))),
                Err(e) if crate::storage::is_not_found(&e) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
        Ok(all)
    }

    /// Resolves `latest`, a full id, or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return self
                .list_snapshots()?
                .into_iter()
                .rfind(|(_, s)| filter.matches(s))
                .ok_or_else(|| {
                    anyhow!("no snapshot matches `latest` with the given --host/--tag/--path")
                });
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(anyhow!(
                "{spec:?} is not a snapshot id: give an id, a unique id prefix, or `latest`"
            ));
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<Id> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec))
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(anyhow!(
                "no snapshot with id {spec}: `cairn snapshots` lists them"
            )),
            _ => Err(anyhow!(
                "snapshot id prefix {spec} is ambiguous ({} matches): give more digits",
                matches.len()
            )),
        }
    }
}
