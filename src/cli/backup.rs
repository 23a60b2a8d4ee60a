use super::render::{bytes, parse_time};
use super::GlobalArgs;
use anyhow::{anyhow, Context, Result};
use cairn::backup::archiver::ChangeDetection;
use cairn::backup::progress::Progress;
use cairn::backup::{
    backup_paths, backup_stream, BackupOptions, BackupOutcome, ParentChoice, SnapshotOptions,
};
use cairn::source::exclude::Excludes;
use cairn::storage::RequestTally;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Files and directories to back up
    paths: Vec<PathBuf>,
    /// Exclude entries matching this pattern (repeatable)
    #[arg(long = "exclude", short = 'e')]
    excludes: Vec<String>,
    /// Read exclude patterns from this file (repeatable)
    #[arg(long = "exclude-file")]
    exclude_files: Vec<PathBuf>,
    /// Do not cross file-system boundaries
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Tag the snapshot (repeatable; "a,b" adds both)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's)
    #[arg(long, short = 'H')]
    host: Option<String>,
    /// Compare with this snapshot instead of the latest of the same host and paths
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    force: bool,
    /// Treat a changed inode number as unchanged (btrfs/LVM snapshots)
    #[arg(long)]
    ignore_inode: bool,
    /// Treat a changed ctime as unchanged
    #[arg(long)]
    ignore_ctime: bool,
    /// Show what would be added, store nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Snapshot time: "YYYY-MM-DD HH:MM:SS" (local) or RFC 3339
    #[arg(long)]
    time: Option<String>,
    /// zstd level for this backup (default: the repository's)
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression: Option<i32>,
    /// Back up standard input as one file
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// Name of the file holding standard input in the snapshot
    #[arg(long, default_value = "stdin")]
    stdin_filename: String,
}

pub fn run(g: &GlobalArgs, a: &BackupArgs) -> Result<i32> {
    let repo = g.open_locked(cairn::repo::lock::LockKind::Shared, "backup")?;
    let interrupted = install_interrupt_flag()?;
    let snapshot = SnapshotOptions {
        tags: a
            .tags
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        host: a.host.clone(),
        time_ns: a.time.as_deref().map(parse_time).transpose()?,
        dry_run: a.dry_run,
        compression_level: a.compression,
    };
    let progress = Progress::default();
    let stop_display = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        let _display = super::progress::show(scope, g, &progress, &stop_display);
        run_backup(a, &repo, snapshot, &interrupted, &progress)
    })?;
    render(g, &outcome, repo.storage.requests());
    Ok(if outcome.is_incomplete() { 3 } else { 0 })
}

fn run_backup(
    a: &BackupArgs,
    repo: &cairn::repo::Repository,
    snapshot: SnapshotOptions,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<BackupOutcome> {
    Ok(if a.stdin {
        backup_stream(
            repo,
            &a.stdin_filename,
            std::io::stdin().lock(),
            &snapshot,
            interrupted,
            progress,
        )?
    } else {
        let mut excludes = a.excludes.clone();
        for f in &a.exclude_files {
            excludes.extend(Excludes::read_pattern_file(f)?);
        }
        let parent = match (&a.parent, a.force) {
            (_, true) => ParentChoice::None,
            (Some(p), false) => ParentChoice::Explicit(p.clone()),
            (None, false) => ParentChoice::Auto,
        };
        if a.paths.is_empty() {
            return Err(anyhow!(
                "nothing to back up: give at least one path, or --stdin"
            ));
        }
        let opts = BackupOptions {
            paths: a.paths.clone(),
            excludes,
            one_file_system: a.one_file_system,
            parent,
            detection: ChangeDetection {
                ignore_inode: a.ignore_inode,
                ignore_ctime: a.ignore_ctime,
            },
            snapshot,
        };
        backup_paths(repo, &opts, interrupted, progress).context("backup failed")?
    })
}

/// Ctrl-C / SIGTERM set a flag the backup checks; a second Ctrl-C exits at once.
fn install_interrupt_flag() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

fn render(g: &GlobalArgs, o: &BackupOutcome, requests: RequestTally) {
    let s = &o.snapshot.summary;
    let secs = (s.end_ns - s.start_ns) as f64 / 1e9;
    if g.json {
        let v = serde_json::json!({
            "message_type": "summary",
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified,
            "dirs": s.dirs,
            "other_entries": s.other_entries,
            "data_blobs_added": s.blobs_added,
            "data_added": s.data_added,
            "data_added_packed": s.data_added_packed,
            "total_files_processed": s.files_new + s.files_changed + s.files_unmodified,
            "total_bytes_processed": s.bytes_processed,
            "total_duration": secs,
            "snapshot_id": o.snapshot_id.map(|id| id.to_hex()),
            "dry_run": o.snapshot_id.is_none(),
            "errors": s.errors,
            "requests": requests,
        });
        println!("{v}");
        return;
    }
    if g.quiet {
        return;
    }
    println!(
        "files: {} new, {} changed, {} unmodified; {} dirs",
        s.files_new, s.files_changed, s.files_unmodified, s.dirs
    );
    println!(
        "added to the repository: {} ({} stored) in {} blobs, {} packs; processed {} in {:.2}s",
        bytes(s.data_added),
        bytes(s.data_added_packed),
        s.blobs_added,
        o.packs_written,
        bytes(s.bytes_processed),
        secs
    );
    println!(
        "storage requests: {} PUT, {} GET, {} LIST, {} HEAD, {} DELETE",
        requests.put, requests.get, requests.list, requests.head, requests.delete
    );
    match o.snapshot_id {
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was stored"),
    }
    if !s.errors.is_empty() {
        eprintln!(
            "{} entries could not be read and are missing from the snapshot (see warnings above)",
            s.errors.len()
        );
    }
}
