//! Backup: sources → archiver → saver → index → snapshot (written last: it is
//! the commit point). See format-spec/invariants.md.

pub mod archiver;
pub mod progress;
pub mod saver;

use crate::fail::Fail;
use crate::id::Id;
use crate::repo::snapshots::{normalize_path_text, SnapshotFilter};
use crate::repo::{hostname, now_ns, username, Repository};
use crate::source::exclude::Excludes;
use crate::tree::snapshot::{BackupSummary, Snapshot};
use crate::tree::{is_valid_name, Node, NodeKind};
use anyhow::{anyhow, Result};
use archiver::{Archiver, ChangeDetection, PathTrie};
use progress::Progress;
use saver::{BlobSaver, InFlight, SaverStats};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// Which snapshot a backup compares files with.
#[derive(Debug, Clone, Default)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Auto,
    /// Read every file (`--force`).
    None,
    Explicit(String),
}

/// What every backup shares, whatever its source.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub time_ns: Option<i64>,
    pub dry_run: bool,
    pub compression_level: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub parent: ParentChoice,
    pub detection: ChangeDetection,
    pub snapshot: SnapshotOptions,
}

#[derive(Debug)]
pub struct BackupOutcome {
    /// None in a dry run.
    pub snapshot_id: Option<Id>,
    pub snapshot: Snapshot,
    pub packs_written: u64,
}

impl BackupOutcome {
    /// Some entries could not be read: the snapshot is saved without them.
    pub fn is_incomplete(&self) -> bool {
        !self.snapshot.summary.errors.is_empty()
    }
}

/// Backs up file-system paths.
pub fn backup_paths(
    repo: &Repository,
    opts: &BackupOptions,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<BackupOutcome> {
    if opts.paths.is_empty() {
        return Err(anyhow!(
            "nothing to back up: give at least one path (or --stdin)"
        ));
    }
    let mut paths: Vec<String> = Vec::new();
    for p in &opts.paths {
        let text = p
            .to_str()
            .ok_or_else(|| anyhow!("backup path {} is not valid UTF-8", p.display()))?;
        let norm = normalize_path_text(text);
        std::fs::symlink_metadata(&norm).map_err(|e| anyhow!("backup path {norm}: {e}"))?;
        paths.push(norm);
    }
    paths.sort();
    paths.dedup();
    let host = opts.snapshot.host.clone().unwrap_or_else(hostname);
    let parent = match &opts.parent {
        ParentChoice::None => None,
        ParentChoice::Explicit(spec) => Some(repo.find_snapshot(spec, &SnapshotFilter::default())?),
        ParentChoice::Auto => {
            let filter = SnapshotFilter {
                hosts: vec![host.clone()],
                ..Default::default()
            };
            repo.list_snapshots()?
                .into_iter()
                .rev()
                .find(|(_, s)| filter.matches(s) && s.paths == paths)
        }
    };
    let excludes = Excludes::new(&opts.excludes)?;
    let scan_excludes = Excludes::new(&opts.excludes)?;
    let roots: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let trie = PathTrie::new(&roots);
    let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
    let scan_stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            progress::scan(
                &roots,
                &scan_excludes,
                opts.one_file_system,
                progress,
                &scan_stop,
            )
        });
        let outcome = run(repo, &opts.snapshot, interrupted, progress, |archiver| {
            archiver.excludes = excludes;
            archiver.one_file_system = opts.one_file_system;
            archiver.detection = opts.detection;
            let tree = archiver.archive_root(&trie, parent_tree)?;
            Ok(Snapshot {
                tree,
                paths,
                hostname: host,
                parent: parent.map(|(id, _)| id),
                excludes: opts.excludes.clone(),
                ..Default::default()
            })
        });
        scan_stop.store(true, Relaxed);
        outcome
    })
}

/// Backs up a stream as one file named `name` at the root of the snapshot.
pub fn backup_stream(
    repo: &Repository,
    name: &str,
    reader: impl Read,
    opts: &SnapshotOptions,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<BackupOutcome> {
    if !is_valid_name(name.as_bytes()) {
        return Err(anyhow!(
            "--stdin-filename {name:?} must be a plain file name (no '/')"
        ));
    }
    let host = opts.host.clone().unwrap_or_else(hostname);
    run(repo, opts, interrupted, progress, |archiver| {
        let (content, size) = archiver.save_stream(reader)?;
        archiver.summary.files_new += 1;
        let now = now_ns();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let node = Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File { content },
            mode: 0o644,
            uid,
            gid,
            user: username(),
            group: String::new(),
            mtime_ns: now,
            ctime_ns: now,
            size,
            inode: 0,
            device: 0,
            links: 1,
            xattrs: Vec::new(),
        };
        let tree = archiver.save_blob(
            crate::filter::BlobKind::Tree,
            crate::tree::Tree { nodes: vec![node] }.encode(),
        )?;
        Ok(Snapshot {
            tree,
            paths: vec![format!("/{name}")],
            hostname: host,
            ..Default::default()
        })
    })
}

/// Runs `archive` with a saver attached, then commits: packs, index, snapshot.
fn run(
    repo: &Repository,
    opts: &SnapshotOptions,
    interrupted: &AtomicBool,
    progress: &Progress,
    archive: impl FnOnce(&mut Archiver) -> Result<Snapshot>,
) -> Result<BackupOutcome> {
    let start = now_ns();
    let level = opts
        .compression_level
        .unwrap_or(repo.config.compression_level);
    let stats = SaverStats::default();
    let pending: Mutex<saver::PendingIndex> = Mutex::default();
    let in_flight = InFlight::default();
    let (archived, summary, saved) = std::thread::scope(|scope| {
        let saver = (!opts.dry_run)
            .then(|| BlobSaver::start(scope, repo, level, &stats, &pending, &in_flight));
        let mut archiver = Archiver::new(
            repo,
            saver.as_ref(),
            Excludes::new(&[])?,
            false,
            ChangeDetection::default(),
            &in_flight,
            interrupted,
            progress,
        );
        let archived = archive(&mut archiver);
        let summary = std::mem::take(&mut archiver.summary);
        drop(archiver);
        let saved = saver.map_or(Ok(()), |s| s.finish());
        Ok::<_, anyhow::Error>((archived, summary, saved))
    })?;
    // Whatever was uploaded gets indexed, even when the backup failed, so the
    // next run re-uses it instead of uploading it again.
    let flushed = saver::flush_index(repo, &pending, &stats, &in_flight);
    let mut snapshot = match (archived, saved) {
        (Err(e), _) if e.downcast_ref::<Fail>().is_some() => return Err(e),
        (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
        (Ok(s), Ok(())) => s,
    };
    flushed?;
    snapshot.time_ns = opts.time_ns.unwrap_or(start);
    snapshot.username = username();
    snapshot.uid = nix::unistd::getuid().as_raw();
    snapshot.gid = nix::unistd::getgid().as_raw();
    snapshot.tags = opts.tags.clone();
    snapshot.program_version = format!("cairn {}", env!("CARGO_PKG_VERSION"));
    snapshot.summary = BackupSummary {
        start_ns: start,
        end_ns: now_ns(),
        data_added_packed: stats.packed_bytes.load(Relaxed),
        ..summary
    };
    if interrupted.load(Relaxed) {
        return Err(Fail::Interrupted.into());
    }
    let snapshot_id = if opts.dry_run {
        None
    } else {
        crate::crash_point::crash_point("before-snapshot");
        Some(repo.save_snapshot(&snapshot)?)
    };
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
        packs_written: stats.packs.load(Relaxed),
    })
}
