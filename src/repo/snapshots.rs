//! Reading, writing and naming snapshots.

use super::{layout, CacheLocation, Listings, OpenedRepository, Repository};
use crate::crypto::ad;
use crate::id::Id;
use crate::tree::snapshot::Snapshot;
use anyhow::{Context, Result};
use std::sync::Arc;

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

/// What [`OpenedRepository::read_objects`] needs to know of snapshots.
const SNAPSHOT_OBJECT: (&str, &[u8], u64) = ("snapshot", ad::SNAPSHOT, layout::max_size::SNAPSHOT);

impl OpenedRepository {
    /// Reads a snapshot (once: snapshots never change).
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        if let Some(s) = self.known_snapshots().get(id) {
            return Ok(s.clone());
        }
        let (what, ad, max_size) = SNAPSHOT_OBJECT;
        let path = layout::snapshot(id);
        let plain = self.read_object(&path, id, what, ad, max_size)?;
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

    /// The snapshots on storage now, listed (not read yet).
    pub fn listed_snapshots(&self) -> Result<ListedSnapshots<'_>> {
        Ok(ListedSnapshots {
            repo: self,
            ids: self.snapshot_ids()?,
        })
    }

    /// All snapshots, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.listed_snapshots()?.read_all()
    }

    /// See [`ListedSnapshots::named_or_selected`].
    pub fn named_or_selected(
        &self,
        specs: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<(Id, Snapshot)>> {
        self.listed_snapshots()?.named_or_selected(specs, filter)
    }

    /// See [`ListedSnapshots::select`].
    pub fn select_snapshots(
        &self,
        filter: &SnapshotFilter,
        latest: Option<usize>,
    ) -> Result<Vec<(Id, Snapshot)>> {
        self.listed_snapshots()?.select(filter, latest)
    }

    /// See [`ListedSnapshots::find`].
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<(Id, Snapshot)> {
        self.listed_snapshots()?.find(spec, filter)
    }

    /// [`Self::load_index`] while `pick` resolves snapshots from
    /// `listed`, listings taken before this call (by [`Listings::take`] or
    /// [`FoundRepository::unlock_listing`](super::FoundRepository::unlock_listing)):
    /// on a distant store reading the snapshots overlaps reading the index
    /// instead of following it.
    pub fn load_index_picking<T: Send>(
        self,
        listed: Listings,
        cache: &CacheLocation,
        pick: impl FnOnce(&ListedSnapshots) -> Result<T> + Send,
    ) -> Result<(Repository, T)> {
        let index = Arc::new(self.open_index_cache(cache)?);
        let opened = Arc::new(self);
        let (repo, picked) = std::thread::scope(|s| {
            let picked = s.spawn(|| {
                pick(&ListedSnapshots {
                    repo: &opened,
                    ids: listed.snapshots,
                })
            });
            let repo =
                Repository::with_index_listed(Arc::clone(&opened), index, Some(listed.index));
            (repo, picked.join())
        });
        let picked = picked.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok((repo?, picked))
    }
}

/// The snapshots one listing of storage showed: what `latest`, id prefixes
/// and filters resolve against.
pub struct ListedSnapshots<'r> {
    repo: &'r OpenedRepository,
    ids: Vec<Id>,
}

impl ListedSnapshots<'_> {
    /// All of them, oldest first; those not read before are read
    /// [`OBJECTS_READ_AT_ONCE`](super::OBJECTS_READ_AT_ONCE) at a time. A
    /// snapshot that vanishes between listing and reading was removed by a
    /// `forget` running meanwhile (readers take no lock): it is skipped.
    pub fn read_all(&self) -> Result<Vec<(Id, Snapshot)>> {
        let repo = self.repo;
        let unread: Vec<Id> = {
            let known = repo.known_snapshots();
            self.ids
                .iter()
                .filter(|id| !known.contains_key(id))
                .copied()
                .collect()
        };
        let read = repo.read_objects(&unread, layout::snapshot, SNAPSHOT_OBJECT, |plain| {
            Ok(Snapshot::decode(plain)?)
        });
        {
            let mut known = repo.known_snapshots();
            for (id, snapshot) in unread.iter().zip(read) {
                match snapshot {
                    Ok(s) => {
                        known.insert(*id, s);
                    }
                    Err(e) if crate::storage::is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            // forgotten ones need not stay in memory
            let listed: std::collections::HashSet<&Id> = self.ids.iter().collect();
            known.retain(|id, _| listed.contains(id));
        }
        let known = repo.known_snapshots();
        let mut all: Vec<(Id, Snapshot)> = self
            .ids
            .iter()
            .filter_map(|id| Some((*id, known.get(id)?.clone())))
            .collect();
        all.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
        Ok(all)
    }

    /// The snapshots `specs` name (ids, prefixes, `latest`, by the rules of
    /// [`Self::find`]), or with none named every snapshot `filter`
    /// selects: what `find`, `tag` and `stats` work on.
    pub fn named_or_selected(
        &self,
        specs: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<(Id, Snapshot)>> {
        if specs.is_empty() {
            return self.select(filter, None);
        }
        specs.iter().map(|spec| self.find(spec, filter)).collect()
    }

    /// The snapshots that match `filter`, oldest first; with `latest`, only
    /// the newest N of each host and path set (`snapshots --latest N`).
    pub fn select(
        &self,
        filter: &SnapshotFilter,
        latest: Option<usize>,
    ) -> Result<Vec<(Id, Snapshot)>> {
        let mut list: Vec<(Id, Snapshot)> = self
            .read_all()?
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
    pub fn find(&self, spec: &str, filter: &SnapshotFilter) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return Ok(self
                .read_all()?
                .into_iter()
                .rfind(|(_, s)| filter.matches(s))
                .ok_or(SnapshotLookupError::NoLatest)?);
        }
        if spec.is_empty() || spec.len() > 64 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SnapshotLookupError::NotAnId(spec.to_string()).into());
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<&Id> = self
            .ids
            .iter()
            .filter(|id| id.to_hex().starts_with(&spec))
            .collect();
        match matches.as_slice() {
            [id] => Ok((**id, self.repo.load_snapshot(id)?)),
            [] => Err(SnapshotLookupError::NotFound(spec).into()),
            many => Err(SnapshotLookupError::Ambiguous(spec, many.len()).into()),
        }
    }
}
