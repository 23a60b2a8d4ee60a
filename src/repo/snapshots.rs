//! Reading, writing and naming snapshots.

use super::{layout, OpenedRepository, Repository};
use crate::crypto::ad;
use crate::id::Id;
use crate::tree::snapshot::Snapshot;
use anyhow::{Context, Result};
use rayon::prelude::*;

/// A snapshot as listings show it (`snapshots --json`, the REST API):
/// restic's field names where restic has them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SnapshotListing {
    pub id: String,
    pub short_id: String,
    /// RFC 3339, local offset.
    pub time: String,
    pub tree: String,
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub tags: Vec<String>,
    pub parent: Option<String>,
    pub excludes: Vec<String>,
    pub program_version: String,
    pub summary: SummaryListing,
}

/// What the backup that made a snapshot did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SummaryListing {
    /// RFC 3339.
    pub backup_start: String,
    pub backup_end: String,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub data_blobs_added: u64,
    pub data_added: u64,
    pub data_added_packed: u64,
    pub total_bytes_processed: u64,
    pub errors: Vec<String>,
}

impl SnapshotListing {
    pub fn new(id: &Id, s: &Snapshot) -> SnapshotListing {
        use crate::time_text::rfc3339;
        let m = &s.summary;
        SnapshotListing {
            id: id.to_hex(),
            short_id: id.short(),
            time: rfc3339(s.time_ns),
            tree: s.tree.to_hex(),
            paths: s.paths.clone(),
            hostname: s.hostname.clone(),
            username: s.username.clone(),
            uid: s.uid,
            gid: s.gid,
            tags: s.tags.clone(),
            parent: s.parent.map(|p| p.to_hex()),
            excludes: s.excludes.clone(),
            program_version: s.program_version.clone(),
            summary: SummaryListing {
                backup_start: rfc3339(m.start_ns),
                backup_end: rfc3339(m.end_ns),
                files_new: m.files_new,
                files_changed: m.files_changed,
                files_unmodified: m.files_unmodified,
                dirs: m.dirs,
                data_blobs_added: m.blobs_added,
                data_added: m.data_added,
                data_added_packed: m.data_added_packed,
                total_bytes_processed: m.bytes_processed,
                errors: m.errors.clone(),
            },
        }
    }
}

/// Why a snapshot name resolved to no single snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotLookupError {
    #[error("{0:?} is not a snapshot id: give an id, a unique id prefix, or `latest`")]
    NotAnId(String),
    #[error("no snapshot matches `latest` with the given host/tag/path")]
    NoLatest,
    #[error("no snapshot with id {0}: `cairn snapshots` lists them")]
    NotFound(String),
    #[error("snapshot id prefix {0} is ambiguous ({1} matches): give more digits")]
    Ambiguous(String, usize),
}

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
}

impl OpenedRepository {
    /// Reads a snapshot (once: snapshots never change).
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        if let Some(s) = self.known_snapshots().get(id) {
            return Ok(s.clone());
        }
        let path = layout::snapshot(id);
        let plain = self.read_object(
            &path,
            id,
            "snapshot",
            ad::SNAPSHOT,
            layout::max_size::SNAPSHOT,
        )?;
        let snapshot = Snapshot::decode(&plain).with_context(|| path)?;
        self.known_snapshots().insert(*id, snapshot.clone());
        Ok(snapshot)
    }

    fn known_snapshots(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Id, Snapshot>> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
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
        // forgotten ones need not stay in memory
        let listed: std::collections::HashSet<Id> = ids.into_iter().collect();
        self.known_snapshots().retain(|id, _| listed.contains(id));
        Ok(all)
    }

    /// The snapshots `specs` name (ids, prefixes, `latest`, by the rules of
    /// [`Self::find_snapshot`]), or with none named every snapshot `filter`
    /// selects: what `find`, `tag` and `stats` work on.
    pub fn named_or_selected(
        &self,
        specs: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<(Id, Snapshot)>> {
        if specs.is_empty() {
            return self.select_snapshots(filter, None);
        }
        specs
            .iter()
            .map(|spec| self.find_snapshot(spec, filter))
            .collect()
    }

    /// The snapshots that match `filter`, oldest first; with `latest`, only
    /// the newest N of each host and path set (`snapshots --latest N`).
    pub fn select_snapshots(
        &self,
        filter: &SnapshotFilter,
        latest: Option<usize>,
    ) -> Result<Vec<(Id, Snapshot)>> {
        let mut list: Vec<(Id, Snapshot)> = self
            .list_snapshots()?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect();
        if let Some(n) = latest {
            let mut seen: std::collections::HashMap<(String, Vec<String>), usize> =
                Default::default();
            let mut keep = vec![false; list.len()];
            for (i, (_, s)) in list.iter().enumerate().rev() {
                let count = seen
                    .entry((s.hostname.clone(), s.paths.clone()))
                    .or_default();
                if *count < n {
                    *count += 1;
                    keep[i] = true;
                }
            }
            let mut k = keep.into_iter();
            list.retain(|_| k.next().unwrap_or(false));
        }
        Ok(list)
    }

    /// Resolves `latest`, a full id, or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return Ok(self
                .list_snapshots()?
                .into_iter()
                .rfind(|(_, s)| filter.matches(s))
                .ok_or(SnapshotLookupError::NoLatest)?);
        }
        if spec.is_empty() || spec.len() > 64 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SnapshotLookupError::NotAnId(spec.to_string()).into());
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<Id> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec))
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(SnapshotLookupError::NotFound(spec).into()),
            many => Err(SnapshotLookupError::Ambiguous(spec, many.len()).into()),
        }
    }
}
