//! Live counters of a running backup, for whoever shows them (the CLI's bar
//! or JSON lines, the API). The archiver counts what it has done. What there
//! is comes from the snapshot the backup follows (the same paths, the last
//! time: an estimate that costs nothing), or, for a first backup, from a
//! scanner walking the same paths alongside, which gives the percentage and
//! the ETA once it finishes (usually long before the backup).

use crate::source::exclude::Excludes;
use crate::source::stat::{lstat, Stat};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

#[derive(Debug, Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    /// The totals will not change.
    pub scan_done: AtomicBool,
    /// The totals are the last snapshot's, not counted.
    pub estimated: AtomicBool,
    /// Who hears of warnings and of each file as the work runs.
    listener: OnceLock<Listener>,
}

/// What happened to one file (a `-v` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOutcome {
    /// Backed up, not in the parent snapshot.
    New,
    /// Backed up again: changed since the parent.
    Modified,
    /// Taken from the parent without reading it.
    Unchanged,
    /// Written by a restore.
    Restored,
    /// Left as it was by a restore (it already matched, or --overwrite).
    Skipped,
}

/// Something to tell a person while the work runs.
pub enum Notice<'a> {
    /// A problem the work goes on after (it is in the report too).
    Warning(&'a str),
    File(FileOutcome, &'a Path),
}

struct Listener {
    /// Whether it wants [`Notice::File`] (`-v`): restore then makes each
    /// file's path for it, which costs an allocation per file otherwise.
    files: bool,
    tell: Box<dyn Fn(Notice<'_>) + Send + Sync>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Listener(..)")
    }
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProgressView {
    pub files_done: u64,
    pub bytes_done: u64,
    pub total_files: u64,
    pub total_bytes: u64,
    pub scan_done: bool,
    pub estimated: bool,
}

impl Progress {
    pub fn view(&self) -> ProgressView {
        ProgressView {
            files_done: self.files_done.load(Relaxed),
            bytes_done: self.bytes_done.load(Relaxed),
            total_files: self.total_files.load(Relaxed),
            total_bytes: self.total_bytes.load(Relaxed),
            scan_done: self.scan_done.load(Relaxed),
            estimated: self.estimated.load(Relaxed),
        }
    }

    /// Takes the totals of the snapshot this backup follows as the estimate
    /// of what there is: an incremental backup, the frequent kind, then needs
    /// no second walk of its tree just to count it.
    pub(crate) fn expect(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Relaxed);
        self.total_bytes.store(bytes, Relaxed);
        self.estimated.store(true, Relaxed);
        self.scan_done.store(true, Relaxed);
    }

    pub(crate) fn file_done(&self, bytes_not_streamed: u64) {
        self.files_done.fetch_add(1, Relaxed);
        self.bytes_done.fetch_add(bytes_not_streamed, Relaxed);
    }

    pub(crate) fn bytes_read(&self, n: u64) {
        self.bytes_done.fetch_add(n, Relaxed);
    }

    /// Sends notices to `listen` from now on (once: a later call is
    /// ignored). A display prints them around its bar, so they never tear it.
    /// With `files` false only warnings are sent.
    pub fn listen(&self, files: bool, listen: impl Fn(Notice<'_>) + Send + Sync + 'static) {
        let _ = self.listener.set(Listener {
            files,
            tell: Box::new(listen),
        });
    }

    /// Whether someone wants to hear of each file.
    pub(crate) fn hears_files(&self) -> bool {
        self.listener.get().is_some_and(|l| l.files)
    }

    /// A warning: to the listener, else to stderr.
    pub(crate) fn warn(&self, message: &str) {
        match self.listener.get() {
            Some(l) => (l.tell)(Notice::Warning(message)),
            None => eprintln!("warning: {message}"),
        }
    }

    /// What became of one file, for a listener that wants to know.
    pub(crate) fn file(&self, outcome: FileOutcome, path: &Path) {
        if let Some(l) = self.listener.get().filter(|l| l.files) {
            (l.tell)(Notice::File(outcome, path));
        }
    }
}

impl ProgressView {
    /// 0..=1, or None while the totals are still growing.
    pub fn fraction(&self) -> Option<f64> {
        (self.scan_done && self.total_bytes > 0)
            .then(|| (self.bytes_done as f64 / self.total_bytes as f64).min(1.0))
    }
}

/// Counts the regular files and bytes under `paths` as the archiver will
/// see them (same excludes, same file-system boundary rule). Stops early
/// when `stop` is set; an unreadable entry is skipped (the archiver reports it).
pub fn scan(
    paths: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    progress: &Progress,
    stop: &AtomicBool,
) {
    for root in paths {
        let Ok(stat) = lstat(root) else {
            continue;
        };
        let mut stack = vec![(root.clone(), stat)];
        let root_dev = stat.device;
        while let Some((path, stat)) = stack.pop() {
            if stop.load(Relaxed) {
                return;
            }
            if stat.is_file() {
                progress.total_files.fetch_add(1, Relaxed);
                progress.total_bytes.fetch_add(stat.size, Relaxed);
            } else if stat.is_dir() && !(one_file_system && stat.device != root_dev) {
                push_children(&path, excludes, &mut stack);
            }
        }
    }
    progress.scan_done.store(true, Relaxed);
}

fn push_children(dir: &Path, excludes: &Excludes, stack: &mut Vec<(PathBuf, Stat)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let marker = excludes.marker_in(dir);
    for e in entries.flatten() {
        if Excludes::left_out_beside(marker.as_deref(), e.file_name().as_bytes()) {
            continue;
        }
        let path = e.path();
        if let Ok(stat) = lstat(&path) {
            if !excludes.excludes(&path, &stat) {
                stack.push((path, stat));
            }
        }
    }
}
