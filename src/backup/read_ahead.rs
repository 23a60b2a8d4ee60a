//! Reading ahead of the archiver. One file at a time, a disk whose data is
//! not in the page cache sees one request at a time: on a tree of many small
//! files the backup waits on every open, stat and read in turn. (Reading the
//! 400k files of scripts/bench-small-files.sh cold with `cat` on the
//! project's test machine: 32 s with one reader, 10.4 s with 8, 9.5 s with 32.)
//!
//! A walker thread visits directories in exactly the order the archiver
//! will ask for them (depth first, entries sorted by name), lists each one,
//! has its entries `lstat`ed and their extended attributes read by a pool of
//! workers, loads the parent snapshot's tree for it, and hands the archiver
//! the result. Small files the archiver will have to read (new or changed
//! since the parent) are read into memory by the same pool, many at once,
//! in the order the archiver consumes them. The archiver still makes every
//! decision and builds every tree in the same order as before, so the same
//! input gives the same snapshot.
//!
//! Memory is bounded: at most `AHEAD_DIRS` listed directories wait for the
//! archiver, and at most `AHEAD_BYTES` of file content (one file beyond that
//! when nothing else is held, so a file larger than the budget still moves).
//! Open descriptors are bounded by the number of workers, chosen from
//! RLIMIT_NOFILE.

use super::archiver::ChangeDetection;
use crate::id::Id;
use crate::repo::Repository;
use crate::source::exclude::Excludes;
use crate::tree::{Node, NodeKind, Tree, Xattr};
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;

/// Files up to this size are read ahead whole; larger ones are streamed by
/// the archiver, where the kernel's own read-ahead keeps the disk busy.
const SMALL_FILE: u64 = 1 << 20;
/// File content read but not yet consumed by the archiver. 4 MiB keeps the
/// workers busy (a cold 400k-file backup took as long as with 16 MiB) and
/// adds ~10 MB to a backup's peak; 16 MiB added ~28 MB.
const AHEAD_BYTES: u64 = 4 << 20;
/// Listed directories not yet consumed by the archiver.
const AHEAD_DIRS: usize = 32;
/// Entries `lstat`ed per worker job: enough to amortise the hand-over,
/// few enough that a directory of a hundred entries still spreads out.
const STAT_BATCH: usize = 16;
/// The most workers: 8 to 32 readers keep that disk about equally busy (see
/// the module comment), and every thread more costs wake-ups and memory.
const MAX_WORKERS: usize = 16;

/// A tree of the parent snapshot, and whether every blob below it was found
/// live in the cache's current epoch (then its unchanged files need no
/// index lookups).
pub struct ParentTree {
    pub tree: Tree,
    pub verified: bool,
}

impl ParentTree {
    /// Below a verified tree every subtree is verified too (a committed
    /// snapshot's trees are recorded together), so only the root, or a
    /// subtree of an unverified tree, is looked up. A damaged parent only
    /// costs speed: `None`, and everything is read.
    pub fn load(
        repo: &Repository,
        id: Option<Id>,
        within_verified: bool,
        epoch: u64,
    ) -> Option<ParentTree> {
        let id = id?;
        let tree = repo.load_tree(&id).ok()?;
        let verified = within_verified || repo.index.is_verified(&id, epoch).unwrap_or(false);
        Some(ParentTree { tree, verified })
    }

    /// The parent's subtree for the entry `node`, if it was a directory.
    pub fn subtree(
        repo: &Repository,
        node: Option<&Node>,
        within_verified: bool,
        epoch: u64,
    ) -> Option<ParentTree> {
        ParentTree::load(repo, node.and_then(Node::subtree), within_verified, epoch)
    }
}

/// Whether a file's metadata says it is the parent snapshot's file as it was.
pub fn unchanged(detection: ChangeDetection, meta: &Metadata, parent: &Node) -> bool {
    use crate::source::fs::ns;
    matches!(parent.kind, NodeKind::File { .. })
        && parent.size == meta.size()
        && parent.mtime_ns == ns(meta.mtime(), meta.mtime_nsec())
        && (detection.ignore_ctime || parent.ctime_ns == ns(meta.ctime(), meta.ctime_nsec()))
        && (detection.ignore_inode || parent.inode == meta.ino())
}

/// What the walker needs of the backup's settings.
#[derive(Clone, Copy)]
pub struct WalkRules<'a> {
    pub repo: &'a Repository,
    pub excludes: &'a Excludes,
    pub one_file_system: bool,
    pub detection: ChangeDetection,
    /// The cache epoch the backup started in (see `ParentTree`).
    pub epoch: u64,
}

/// One listed directory.
pub struct Scan {
    pub dir: PathBuf,
    /// The parent snapshot's tree for this directory (shared with the stat
    /// workers, which take unchanged files' extended attributes from it).
    pub parent: Option<Arc<ParentTree>>,
    /// Backed-up entries, sorted by name (excluded and vanished ones left out).
    pub entries: Vec<Entry>,
    /// Entries or listings that could not be read, for the archiver to report.
    pub warnings: Vec<String>,
}

pub struct Entry {
    pub name: Vec<u8>,
    pub path: PathBuf,
    pub meta: Metadata,
    pub xattrs: Vec<Xattr>,
    /// A directory on another file system, under --one-file-system: its
    /// contents are not walked.
    pub other_fs: bool,
    /// A small file's content, being read ahead. `None`: not read ahead
    /// (unchanged since the parent, large, empty, or not a regular file).
    pub content: Option<Prefetched>,
}

impl Entry {
    /// An entry the archiver looked up itself (a backup path): nothing read ahead.
    pub fn looked_up(name: Vec<u8>, path: PathBuf, meta: Metadata) -> Entry {
        let xattrs = crate::source::fs::read_xattrs(&path);
        Entry::stated(name, path, meta, xattrs)
    }

    /// An entry as `lstat` and its extended attributes give it.
    fn stated(name: Vec<u8>, path: PathBuf, meta: Metadata, xattrs: Vec<Xattr>) -> Entry {
        Entry {
            name,
            path,
            meta,
            xattrs,
            other_fs: false,
            content: None,
        }
    }
}

/// A file's content as read ahead, with its metadata right after reading
/// (to tell whether it changed meanwhile).
pub type ReadResult = std::io::Result<(Vec<u8>, Metadata)>;

/// The archiver's claim on one file of a batch being read ahead.
pub struct Prefetched {
    batch: Arc<Batch>,
    index: usize,
}

impl Prefetched {
    /// Waits for the content.
    pub fn wait(self) -> ReadResult {
        let mut results = self.batch.results.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = results.as_mut() {
                return r[self.index].take().unwrap_or_else(|| {
                    Err(std::io::Error::other("read-ahead content taken twice"))
                });
            }
            results = self
                .batch
                .ready
                .wait(results)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Neighbouring small files of one directory, read by one worker in one go:
/// a hand-over and a wake-up per batch, not per file. Its bytes count
/// against the budget until the archiver has let go of every file in it.
struct Batch {
    results: Mutex<Option<Vec<Option<ReadResult>>>>,
    ready: Condvar,
    size: u64,
    budget: Arc<Budget>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.budget.release(self.size);
    }
}

/// Files up to this many, or this many bytes, make one batch.
const BATCH_FILES: usize = 8;
const BATCH_BYTES: u64 = 256 << 10;

/// A batch to read. Whoever drops it undone (a worker that panicked, a
/// walk that stopped) fills it with errors, so the archiver never waits for
/// a read nobody will do.
struct ReadJob {
    files: Vec<(PathBuf, u64)>,
    batch: Arc<Batch>,
    done: bool,
}

impl ReadJob {
    fn run(mut self) {
        let results = self
            .files
            .iter()
            .map(|(path, size)| Some(read_whole(path, *size)))
            .collect();
        self.fill(results);
    }

    fn fill(&mut self, results: Vec<Option<ReadResult>>) {
        *self.batch.results.lock().unwrap_or_else(|e| e.into_inner()) = Some(results);
        self.batch.ready.notify_all();
        self.done = true;
    }
}

impl Drop for ReadJob {
    fn drop(&mut self) {
        if !self.done {
            let stopped = || {
                Some(Err(std::io::Error::other(
                    "the read-ahead stopped before reading this file",
                )))
            };
            let results = self.files.iter().map(|_| stopped()).collect();
            self.fill(results);
        }
    }
}

/// Reads no further than the size stat reported (a file that grew is caught
/// by comparing the metadata after reading), then stats the open file.
fn read_whole(path: &Path, size: u64) -> ReadResult {
    let file = File::open(path)?;
    let mut data = Vec::with_capacity(size as usize);
    (&file).take(size).read_to_end(&mut data)?;
    let after = file.metadata()?;
    Ok((data, after))
}

/// Bytes of content read ahead and not yet consumed.
struct Budget {
    state: Mutex<(u64, bool)>,
    freed: Condvar,
}

impl Budget {
    /// Waits until `size` more bytes fit (or nothing is held). False once
    /// the read-ahead is closed.
    fn acquire(&self, size: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (held, closed) = *state;
            if closed {
                return false;
            }
            if held == 0 || held + size <= AHEAD_BYTES {
                state.0 += size;
                return true;
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn release(&self, size: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_sub(size);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.freed.notify_all();
    }
}

/// `lstat` (and extended attributes) of a batch of a directory's entries.
struct StatJob {
    names: Vec<Vec<u8>>,
    dir: PathBuf,
    parent: Option<Arc<ParentTree>>,
    detection: ChangeDetection,
    reply: Sender<Vec<Stated>>,
}

enum Stated {
    Entry(Entry),
    /// Excluded by a pattern, or gone since the listing.
    Skipped,
    Failed(String),
}

/// The walk of one directory tree, running ahead of the archiver.
pub struct ReadAhead {
    scans: Receiver<Scan>,
    budget: Arc<Budget>,
}

impl ReadAhead {
    /// Starts walking `root` (a directory, with the parent snapshot's tree
    /// for it) on threads of `scope`; they stop when this is dropped.
    pub fn start<'scope, 'env: 'scope>(
        scope: &'scope Scope<'scope, 'env>,
        rules: WalkRules<'env>,
        root: PathBuf,
        parent: Option<ParentTree>,
        root_dev: u64,
    ) -> ReadAhead {
        let (scan_tx, scans) = bounded(AHEAD_DIRS);
        let (stat_tx, stat_rx) = unbounded::<StatJob>();
        let (read_tx, read_rx) = unbounded::<ReadJob>();
        let budget = Arc::new(Budget {
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
        });
        for _ in 0..workers() {
            let (stat_rx, read_rx) = (stat_rx.clone(), read_rx.clone());
            let excludes = rules.excludes;
            let worker = std::thread::Builder::new()
                .name("cairn-read".into())
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || work(excludes, &stat_rx, &read_rx));
            if worker.is_err() {
                break; // fewer workers; the walker does stats itself if none start
            }
        }
        drop((stat_rx, read_rx));
        let walker = Walker {
            rules,
            scans: scan_tx,
            stats: stat_tx,
            reads: read_tx,
            budget: Arc::clone(&budget),
            root_dev,
        };
        // depth is bounded by the 4096-byte path limit (tree::MAX_DEPTH
        // levels at most): a main thread's stack covers that recursion
        let spawned = std::thread::Builder::new()
            .name("cairn-walk".into())
            .stack_size(8 << 20)
            .spawn_scoped(scope, move || walker.walk(root, parent));
        if let Err(e) = spawned {
            // the scan channel is closed with it: next_scan reports this
            eprintln!("warning: cannot start the read-ahead: {e}");
        }
        ReadAhead { scans, budget }
    }

    /// The next directory, which must be `dir`: the archiver and the walker
    /// visit the same tree in the same order.
    pub fn next_scan(&self, dir: &Path) -> anyhow::Result<Scan> {
        let scan = self
            .scans
            .recv()
            .map_err(|_| anyhow::anyhow!("the read-ahead of {} stopped early", dir.display()))?;
        if scan.dir != dir {
            anyhow::bail!(
                "the read-ahead listed {} where the backup expected {} (a bug: please report it)",
                scan.dir.display(),
                dir.display()
            );
        }
        Ok(scan)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // a walker waiting for budget or for room in the channel stops
        self.budget.close();
    }
}

/// Workers: enough requests in flight to keep a disk busy, and no more than
/// a quarter of the descriptors still free (the index cache and the upload
/// pipeline need theirs).
fn workers() -> usize {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(64);
    let free = limit.saturating_sub(open);
    ((free / 4) as usize).clamp(1, MAX_WORKERS)
}

/// A worker: stats come first (the walker waits on them), reads after.
fn work(excludes: &Excludes, stats: &Receiver<StatJob>, reads: &Receiver<ReadJob>) {
    loop {
        if let Ok(job) = stats.try_recv() {
            job.run(excludes);
            continue;
        }
        // the walker drops both senders together when it ends; reads it
        // queued before that are still done
        select! {
            recv(stats) -> job => match job {
                Ok(job) => job.run(excludes),
                Err(_) => return reads.iter().for_each(ReadJob::run),
            },
            recv(reads) -> job => match job {
                Ok(job) => job.run(),
                Err(_) => return stats.iter().for_each(|job| job.run(excludes)),
            },
        }
    }
}

impl StatJob {
    fn run(self, excludes: &Excludes) {
        let parent = self.parent.as_deref();
        let out = self
            .names
            .into_iter()
            .map(|name| stat_entry(excludes, &self.dir, name, parent, self.detection))
            .collect();
        let _ = self.reply.send(out);
    }
}

fn stat_entry(
    excludes: &Excludes,
    dir: &Path,
    name: Vec<u8>,
    parent: Option<&ParentTree>,
    detection: ChangeDetection,
) -> Stated {
    let path = dir.join(std::ffi::OsStr::from_bytes(&name));
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stated::Skipped,
        Err(e) => return Stated::Failed(format!("{}: {e} (not backed up)", path.display())),
    };
    if excludes.excludes(&path, &meta) {
        return Stated::Skipped;
    }
    // Setting or removing an extended attribute changes the ctime, so a
    // file whose ctime (and the rest `unchanged` compares) is the
    // parent's still has the parent's attributes: no listxattr call, one
    // of the few system calls an unchanged file costs.
    let parent_node = parent.and_then(|p| p.tree.find(&name));
    let xattrs = match parent_node {
        Some(node) if !detection.ignore_ctime && unchanged(detection, &meta, node) => {
            node.xattrs.clone()
        }
        _ => crate::source::fs::read_xattrs(&path),
    };
    Stated::Entry(Entry::stated(name, path, meta, xattrs))
}

struct Walker<'a> {
    rules: WalkRules<'a>,
    scans: Sender<Scan>,
    stats: Sender<StatJob>,
    reads: Sender<ReadJob>,
    budget: Arc<Budget>,
    root_dev: u64,
}

/// What the walker does after handing a directory over, in the archiver's order.
enum Next {
    Read(ReadJob),
    /// A subdirectory, with its tree in the parent snapshot (loaded only
    /// when the walk gets there) and whether that is known verified.
    Descend(PathBuf, Option<Id>, bool),
}

impl Walker<'_> {
    /// Hands over `dir`, then reads its small files and walks its
    /// subdirectories in the order the archiver meets them. False: stop.
    fn walk(&self, dir: PathBuf, parent: Option<ParentTree>) -> bool {
        let (scan, next) = self.scan(dir, parent);
        if self.scans.send(scan).is_err() {
            return false;
        }
        for step in next {
            match step {
                Next::Read(job) => {
                    if !self.budget.acquire(job.batch.size) {
                        return false;
                    }
                    // no worker left (none started): read it here
                    if let Err(unsent) = self.reads.send(job) {
                        unsent.0.run();
                    }
                }
                Next::Descend(sub, subtree, verified) => {
                    let parent =
                        ParentTree::load(self.rules.repo, subtree, verified, self.rules.epoch);
                    if !self.walk(sub, parent) {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn scan(&self, dir: PathBuf, parent: Option<ParentTree>) -> (Scan, Vec<Next>) {
        let parent = parent.map(Arc::new);
        let mut warnings = Vec::new();
        let mut names: Vec<Vec<u8>> = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(read) => {
                for entry in read {
                    match entry {
                        Ok(e) => names.push(e.file_name().into_vec()),
                        Err(e) => {
                            warnings.push(format!("{}: {e} (listing incomplete)", dir.display()))
                        }
                    }
                }
            }
            Err(e) => warnings.push(format!(
                "{}: {e} (directory contents not backed up)",
                dir.display()
            )),
        }
        names.sort();
        let marker = self.rules.excludes.marker_in(&dir);
        names.retain(|n| !Excludes::left_out_beside(marker.as_deref(), n));
        let mut entries = Vec::with_capacity(names.len());
        for stated in self.stat_all(&dir, names, parent.as_ref()) {
            match stated {
                Stated::Entry(e) => entries.push(e),
                Stated::Skipped => {}
                Stated::Failed(w) => warnings.push(w),
            }
        }
        let verified = parent.as_ref().is_some_and(|p| p.verified);
        let mut next = Vec::new();
        let mut batch: Vec<&mut Entry> = Vec::new();
        for entry in &mut entries {
            let parent_node = parent.as_ref().and_then(|p| p.tree.find(&entry.name));
            let ft = entry.meta.file_type();
            if ft.is_dir() {
                entry.other_fs = self.rules.one_file_system && entry.meta.dev() != self.root_dev;
                if !entry.other_fs {
                    // a batch never spans a subdirectory: the archiver
                    // consumes the subdirectory's files in between, and
                    // budget must be granted in the order files are consumed
                    self.close_batch(&mut batch, &mut next);
                    let subtree = parent_node.and_then(Node::subtree);
                    next.push(Next::Descend(entry.path.clone(), subtree, verified));
                }
            } else if ft.is_file()
                && (1..=SMALL_FILE).contains(&entry.meta.len())
                && !parent_node.is_some_and(|p| unchanged(self.rules.detection, &entry.meta, p))
            {
                batch.push(entry);
            }
        }
        self.close_batch(&mut batch, &mut next);
        let scan = Scan {
            dir,
            parent,
            entries,
            warnings,
        };
        (scan, next)
    }

    /// Has the files of `batch` read ahead together, in batches of at most
    /// BATCH_FILES files or BATCH_BYTES.
    fn close_batch(&self, batch: &mut Vec<&mut Entry>, next: &mut Vec<Next>) {
        let mut rest = std::mem::take(batch);
        while !rest.is_empty() {
            let mut take = 0;
            let mut size = 0;
            while take < rest.len()
                && take < BATCH_FILES
                && (take == 0 || size + rest[take].meta.len() <= BATCH_BYTES)
            {
                size += rest[take].meta.len();
                take += 1;
            }
            let shared = Arc::new(Batch {
                results: Mutex::new(None),
                ready: Condvar::new(),
                size,
                budget: Arc::clone(&self.budget),
            });
            let files = rest
                .drain(..take)
                .enumerate()
                .map(|(index, entry)| {
                    entry.content = Some(Prefetched {
                        batch: Arc::clone(&shared),
                        index,
                    });
                    (entry.path.clone(), entry.meta.len())
                })
                .collect();
            next.push(Next::Read(ReadJob {
                files,
                batch: shared,
                done: false,
            }));
        }
    }

    /// Stats `names` in batches spread over the workers, in order.
    fn stat_all(
        &self,
        dir: &Path,
        names: Vec<Vec<u8>>,
        parent: Option<&Arc<ParentTree>>,
    ) -> Vec<Stated> {
        let mut replies = Vec::new();
        let mut names = names.into_iter().peekable();
        while names.peek().is_some() {
            let batch: Vec<Vec<u8>> = names.by_ref().take(STAT_BATCH).collect();
            let (reply, rx) = bounded(1);
            let job = StatJob {
                names: batch,
                dir: dir.to_path_buf(),
                parent: parent.cloned(),
                detection: self.rules.detection,
                reply,
            };
            // no worker left (none started): stat here
            if let Err(e) = self.stats.send(job) {
                e.0.run(self.rules.excludes);
            }
            replies.push(rx);
        }
        let mut out = Vec::new();
        for rx in replies {
            match rx.recv() {
                Ok(batch) => out.extend(batch),
                Err(_) => out.push(Stated::Failed(format!(
                    "{}: some entries were not read (a read-ahead worker stopped)",
                    dir.display()
                ))),
            }
        }
        out
    }
}
