//! Backup: sources → archiver → saver → index → snapshot (written last: it is
//! the commit point). See format-spec/invariants.md.

pub mod archiver;
pub mod progress;
mod read_ahead;
pub mod saver;

use crate::fail::Fail;
use crate::id::Id;
use crate::repo::snapshots::{normalize_path_text, SnapshotFilter};
use crate::repo::{hostname, now_ns, username, Repository};
use crate::source::command::CommandStream;
use crate::source::exclude::{ExcludeOptions, Excludes};
use crate::source::pipe::ReadAhead;
use crate::storage::RequestTally;
use crate::tree::snapshot::{BackupSummary, Snapshot};
use crate::tree::{is_valid_name, Node};
use anyhow::{anyhow, Context, Result};
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

/// Where a named stream comes from.
#[derive(Debug, Clone)]
pub enum StreamInput {
    /// This process's standard input.
    Stdin,
    /// A command's standard output (argv); it must exit with status 0.
    Command(Vec<String>),
}

/// A stream stored as the file `/NAME` at the root of the snapshot, or
/// `/DIR/NAME` when its name is `DIR/NAME` (the streams of a data service).
#[derive(Debug, Clone)]
pub struct StreamSource {
    pub name: String,
    pub input: StreamInput,
}

/// One snapshot of any mix of file-system paths and named streams: all of
/// them are stored, or (if any stream's command fails) no snapshot at all.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub streams: Vec<StreamSource>,
    pub excludes: ExcludeOptions,
    pub one_file_system: bool,
    pub parent: ParentChoice,
    pub detection: ChangeDetection,
    pub snapshot: SnapshotOptions,
    /// For a backup with no parent snapshot, walk the paths a second time,
    /// alongside, to count what there is, so progress can show a percentage
    /// (with a parent, its totals are the estimate). Only worth it when
    /// someone watches: the walk costs a `stat` per entry (5% of a first
    /// backup's CPU, as much again as the whole of an unchanged one).
    pub count_totals: bool,
    /// What stream commands may see of cairn's environment.
    pub child_env: crate::child_env::ChildEnv,
}

impl BackupOptions {
    /// A backup of a configured source: its paths, command streams,
    /// excludes, tags and host, everything else the default (the CLI adds
    /// its arguments to these). For a data service, the streams of its
    /// dump tools: this asks the server for its databases, so call it when
    /// the backup starts (after the `before` hook).
    pub fn of_source(source: &crate::settings::SourceSettings) -> Result<BackupOptions> {
        let mut streams: Vec<StreamSource> = source
            .commands
            .iter()
            .map(|c| StreamSource {
                name: c.name.clone(),
                input: StreamInput::Command(c.command.clone()),
            })
            .collect();
        if let Some(service) = source.service() {
            streams.extend(service.dump_streams()?);
        }
        Ok(BackupOptions {
            paths: source.paths.clone(),
            streams,
            excludes: source.exclude_options()?,
            one_file_system: source.one_file_system,
            snapshot: SnapshotOptions {
                tags: source.tags.clone(),
                host: source.host.clone(),
                ..Default::default()
            },
            child_env: source.child_env(),
            ..Default::default()
        })
    }
}

#[derive(Debug)]
pub struct BackupOutcome {
    /// None in a dry run.
    pub snapshot_id: Option<Id>,
    pub snapshot: Snapshot,
    pub packs_written: u64,
    /// Files unchanged since the parent whose content the index no longer
    /// held: read and stored again.
    pub files_reread: u64,
}

impl BackupOutcome {
    /// Some entries could not be read: the snapshot is saved without them.
    pub fn is_incomplete(&self) -> bool {
        !self.snapshot.summary.errors.is_empty()
    }

    /// What the backup did, as `backup --json` and the server's jobs report
    /// it (restic's field names where restic has them).
    pub fn report(&self, requests: RequestTally) -> BackupReport {
        let s = &self.snapshot.summary;
        BackupReport {
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unmodified,
            files_reread: self.files_reread,
            dirs: s.dirs,
            other_entries: s.other_entries,
            data_blobs_added: s.blobs_added,
            data_added: s.data_added,
            data_added_packed: s.data_added_packed,
            packs_written: self.packs_written,
            total_files_processed: s.files_new + s.files_changed + s.files_unmodified,
            total_bytes_processed: s.bytes_processed,
            total_duration: s.end_ns.saturating_sub(s.start_ns) as f64 / 1e9,
            snapshot_id: self.snapshot_id.map(|id| id.to_hex()),
            dry_run: self.snapshot_id.is_none(),
            errors: s.errors.clone(),
            requests,
        }
    }
}

/// See [`BackupOutcome::report`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupReport {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Unchanged files read again because the repository had lost their
    /// content.
    pub files_reread: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub data_blobs_added: u64,
    pub data_added: u64,
    pub data_added_packed: u64,
    pub packs_written: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    /// Seconds.
    pub total_duration: f64,
    /// None in a dry run.
    pub snapshot_id: Option<String>,
    pub dry_run: bool,
    /// Entries that could not be read (missing from the snapshot).
    pub errors: Vec<String>,
    pub requests: RequestTally,
}

/// Backs up file-system paths and named streams into one snapshot.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<BackupOutcome> {
    if opts.paths.is_empty() && opts.streams.is_empty() {
        return Err(anyhow!(
            "nothing to back up: give at least one path, --stdin or --stdin-from-command"
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
    let roots: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let trie = PathTrie::new(&roots);
    check_stream_names(&opts.streams, &trie)?;
    // a stream is recorded by its top-level entry (`/postgres` for
    // `postgres/app.dump`), so a service's snapshots keep their paths as its
    // databases come and go
    paths.extend(
        opts.streams
            .iter()
            .map(|s| format!("/{}", stream_place(&s.name).0)),
    );
    paths.sort();
    paths.dedup();
    let host = opts.snapshot.host.clone().unwrap_or_else(hostname);
    // A parent named on the command line is checked before anything is read.
    let mut explicit_parent = match &opts.parent {
        ParentChoice::Explicit(spec) => Some(repo.find_snapshot(spec, &SnapshotFilter::default())?),
        _ => None,
    };
    let excludes = Excludes::new(&opts.excludes)?;
    let scan_excludes = Excludes::new(&opts.excludes)?;
    let scan_stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let outcome = run(repo, &opts.snapshot, interrupted, progress, |archiver| {
            archiver.excludes = std::sync::Arc::new(excludes);
            archiver.one_file_system = opts.one_file_system;
            archiver.detection = opts.detection;
            let mut stream_nodes = Vec::new();
            for stream in &opts.streams {
                stream_nodes.push(archive_stream_source(archiver, stream, &opts.child_env)?);
            }
            let stream_nodes = nest_streams(archiver, &opts.streams, stream_nodes)?;
            // Looked up after the streams: listing every snapshot first
            // would keep a producer such as pg_dump waiting on a full pipe.
            let parent = match &opts.parent {
                ParentChoice::None => None,
                ParentChoice::Explicit(_) => explicit_parent.take(),
                ParentChoice::Auto => latest_snapshot_of(repo, &host, &paths)?,
            };
            match &parent {
                Some((_, s)) => {
                    let s = &s.summary;
                    let files = s.files_new + s.files_changed + s.files_unmodified;
                    progress.expect(files, s.bytes_processed);
                }
                None if opts.count_totals => {
                    scope.spawn(|| {
                        progress::scan(
                            &roots,
                            &scan_excludes,
                            opts.one_file_system,
                            progress,
                            &scan_stop,
                        )
                    });
                }
                None => {}
            }
            let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
            // A parent whose root is not in the local cache (a new host, a
            // cleared cache) is loaded directory by directory as the walk
            // meets it, a round trip each: fetch its trees alongside, many
            // at a time. On the host that made it, its trees are cached.
            if let Some(root) = parent_tree {
                if repo.index.tree(&root)?.is_none() {
                    scope.spawn(move || repo.prefetch_trees(&[root]));
                }
            }
            let tree = archiver.archive_root(&trie, parent_tree, stream_nodes)?;
            Ok(Snapshot {
                tree,
                paths,
                hostname: host,
                parent: parent.map(|(id, _)| id),
                excludes: opts.excludes.recorded(),
                ..Default::default()
            })
        });
        scan_stop.store(true, Relaxed);
        outcome
    })
}

/// How far in the future a snapshot may be dated and still be a parent
/// (clocks of hosts that share a host name, e.g. a restored VM, drift).
const PARENT_FUTURE_TOLERANCE_NS: i64 = 3600 * 1_000_000_000;

/// The latest snapshot of `host` with exactly these `paths`, dated no later
/// than an hour from now. A snapshot from the future would otherwise be
/// every later backup's parent: anyone who can write the repository could
/// then decide what unchanged files contain.
fn latest_snapshot_of(
    repo: &Repository,
    host: &str,
    paths: &[String],
) -> Result<Option<(Id, Snapshot)>> {
    let filter = SnapshotFilter {
        hosts: vec![host.to_string()],
        ..Default::default()
    };
    let latest_allowed = now_ns().saturating_add(PARENT_FUTURE_TOLERANCE_NS);
    let candidates = repo
        .list_snapshots()?
        .into_iter()
        .rev()
        .filter(|(_, s)| filter.matches(s) && s.paths == paths);
    for (id, s) in candidates {
        if s.time_ns <= latest_allowed {
            return Ok(Some((id, s)));
        }
        eprintln!(
            "note: snapshot {} is dated {}, in the future: not used as the parent",
            id.short(),
            crate::time_text::rfc3339(s.time_ns)
        );
    }
    Ok(None)
}

/// Where stream `name` goes: (top-level entry, file name in it). A name
/// `DIR/FILE` puts the file in directory `DIR`; a plain name is both.
fn stream_place(name: &str) -> (&str, &str) {
    name.split_once('/').unwrap_or((name, name))
}

/// Stream names are `FILE` or `DIR/FILE`, each part a plain file name;
/// distinct from each other and from the top-level entries of the
/// backed-up paths (`/data` takes `data`); a top-level name is a file or a
/// directory of streams, not both.
fn check_stream_names(streams: &[StreamSource], trie: &PathTrie) -> Result<()> {
    let path_roots: Vec<&[u8]> = trie.root_names().collect();
    // top-level name → whether it is a directory
    let mut tops: Vec<(&str, bool)> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for s in streams {
        let (top, file) = stream_place(&s.name);
        let is_dir = top.len() != s.name.len();
        if !is_valid_name(top.as_bytes()) || !is_valid_name(file.as_bytes()) {
            return Err(anyhow!(
                "stream name {:?} must be a plain file name (no '/')",
                s.name
            ));
        }
        let clash = path_roots.contains(&top.as_bytes())
            || names.contains(&s.name.as_str())
            || tops
                .iter()
                .any(|(t, d)| *t == top && (*d != is_dir || !is_dir));
        if clash {
            return Err(anyhow!(
                "stream name {:?} is used twice in this snapshot (by a stream or a \
                 top-level backup path); give each stream its own --stdin-filename",
                s.name
            ));
        }
        names.push(&s.name);
        tops.push((top, is_dir));
    }
    Ok(())
}

/// The root entries of archived streams (`nodes`, one per stream): plain
/// ones as they are, those named `DIR/FILE` gathered into directory `DIR`.
fn nest_streams(
    archiver: &mut Archiver,
    streams: &[StreamSource],
    nodes: Vec<Node>,
) -> Result<Vec<Node>> {
    let mut root = Vec::new();
    let mut dirs: std::collections::BTreeMap<&str, Vec<Node>> = Default::default();
    for (stream, node) in streams.iter().zip(nodes) {
        match stream.name.split_once('/') {
            Some((dir, _)) => dirs.entry(dir).or_default().push(node),
            None => root.push(node),
        }
    }
    for (dir, files) in dirs {
        root.push(archiver.stream_directory(dir, files)?);
    }
    Ok(root)
}

fn archive_stream_source(
    archiver: &mut Archiver,
    stream: &StreamSource,
    child_env: &crate::child_env::ChildEnv,
) -> Result<Node> {
    let (_, file) = stream_place(&stream.name);
    match &stream.input {
        // (the CLI enlarged a stdin pipe before the key derivation)
        StreamInput::Stdin => {
            let stdin = ReadAhead::spawn(std::io::stdin()).context("cannot start reading stdin")?;
            archiver.archive_stream(file, stdin)
        }
        StreamInput::Command(argv) => {
            let mut command = CommandStream::spawn(argv, child_env)?;
            match archiver.archive_stream(file, command.reader()) {
                Ok(node) => {
                    command.finish()?;
                    Ok(node)
                }
                Err(e) => {
                    let display = command.display().to_string();
                    command.abort();
                    Err(e.context(format!("backing up the output of `{display}`")))
                }
            }
        }
    }
}

/// Backs up one stream read from `reader` as the file `name` at the root of
/// the snapshot (the library form of `--stdin`).
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
            "stream name {name:?} must be a plain file name (no '/')"
        ));
    }
    let host = opts.host.clone().unwrap_or_else(hostname);
    run(repo, opts, interrupted, progress, |archiver| {
        let node = archiver.archive_stream(name, reader)?;
        let tree = archiver.archive_root(&PathTrie::default(), None, vec![node])?;
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
    // Everything this backup finds in the index from here on it may rely on
    // only if the commit check says it is still there.
    let window = repo.open_commit_window()?;
    let level = opts
        .compression_level
        .unwrap_or(repo.config.compression_level);
    let stats = SaverStats::default();
    let pending: Mutex<saver::PendingIndex> = Mutex::default();
    let in_flight = InFlight::default();
    let (archived, summary, trees, files_reread, saved) = std::thread::scope(|scope| {
        let saver = (!opts.dry_run)
            .then(|| BlobSaver::start(scope, repo, level, &stats, &pending, &in_flight));
        let mut archiver = Archiver::new(
            repo,
            saver.as_ref(),
            Excludes::new(&ExcludeOptions::default())?,
            false,
            ChangeDetection::default(),
            &in_flight,
            interrupted,
            progress,
            window.epoch(),
        );
        let archived = archive(&mut archiver);
        let summary = std::mem::take(&mut archiver.summary);
        let trees = std::mem::take(&mut archiver.trees);
        let files_reread = archiver.files_reread;
        drop(archiver);
        let saved = saver.map_or(Ok(()), |s| s.finish());
        Ok::<_, anyhow::Error>((archived, summary, trees, files_reread, saved))
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
        Some(commit(repo, &snapshot, window, trees)?)
    };
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
        packs_written: stats.packs.load(Relaxed),
        files_reread,
    })
}

/// Writes the snapshot once the commit check passed, then checks again: a
/// process that stood still between the two (stopped, suspended) for longer
/// than a prune's grace could otherwise have committed a snapshot whose data
/// a prune deleted meanwhile (format-spec §15).
pub(crate) fn commit(
    repo: &Repository,
    snapshot: &Snapshot,
    window: crate::repo::CommitWindow,
    trees: Vec<Id>,
) -> Result<Id> {
    let window = repo.ensure_committable(&snapshot.tree, window)?;
    crate::crash_point::crash_point("before-snapshot");
    let id = repo.save_snapshot(snapshot)?;
    crate::crash_point::crash_point("snapshot-written");
    let window = repo
        .ensure_committable(&snapshot.tree, window)
        .map_err(|e| {
            e.context(format!(
                "snapshot {} was written, but data it references was removed while this process \
             stood still before writing it; it cannot be restored whole: remove it with \
             `cairn forget {}` and run the backup (or copy) again",
                id.short(),
                id.short()
            ))
        })?;
    // Every tree is recorded, so that below a verified tree nothing needs
    // looking up; an unchanged snapshot (same root) has nothing to add.
    let epoch = window.epoch();
    if !repo.index.is_verified(&snapshot.tree, epoch)? {
        repo.index.mark_verified(trees, epoch)?;
    }
    Ok(id)
}
