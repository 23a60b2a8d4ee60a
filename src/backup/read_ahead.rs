//! Reading ahead of the archiver. One file at a time, a disk whose data is
//! not in the page cache sees one request at a time: on a tree of many small
//! files the backup waits on every open, stat and read in turn. (Reading the
//! 400k files of scripts/bench-small-files.sh cold with `cat` on the
//! project's test machine: 32 s with one reader, 10.4 s with 8, 9.5 s with 32.)
//!
//! A walker thread visits directories in exactly the order the archiver
//! will ask for them (depth first, entries sorted by name), lists each one,
//! `lstat`s its entries and reads their extended attributes (itself while
//! the metadata is cached, through a pool of workers when the disk must be
//! read), and hands the archiver the result with the parent snapshot's tree
//! for the directory, which workers load a few subdirectories ahead. Small
//! files the archiver will have to read (new or changed since the parent)
//! are read into memory by the same pool, many at once, in the order the
//! archiver consumes them. The archiver still makes every
//! decision and builds every tree in the same order as before, so the same
//! input gives the same snapshot.
//!
//! Memory is bounded: at most `AHEAD_DIRS` listed directories wait for the
//! archiver, and at most `AHEAD_BYTES` of file content (one file beyond that
//! when nothing else is held, so a file larger than the budget still moves).
//! Open descriptors are bounded too, both numbers chosen from RLIMIT_NOFILE:
//! the files the workers have open, and the directories read jobs keep
//! open to open their files relative to (see `DirLeases`).

use super::archiver::ChangeDetection;
use crate::id::Id;
use crate::repo::Repository;
use crate::source::exclude::Excludes;
use crate::source::stat::{EntryType, Stat};
use crate::tree::{Node, NodeKind, Tree, Xattr};
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

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
/// What the walker stats itself first in each directory, to tell whether
/// the metadata is cached (see `Walker::stat_all`).
const PROBE_BATCH: usize = 4;
/// A stat slower than this on average was a read from the disk. (A cached
/// one takes 1-3 µs; one from this project's test disk 80 µs or more.)
const CACHED_STAT: Duration = Duration::from_micros(20);
/// The most workers: 8 to 32 readers keep that disk about equally busy (see
/// the module comment), and every thread more costs wake-ups and memory.
const MAX_WORKERS: usize = 16;
/// The most directories kept open for read jobs: the walker is at most
/// `AHEAD_DIRS` directories ahead of the archiver, plus the directories
/// above the two of them, so this covers any tree a few dozen levels deep.
const MAX_READ_DIRS: usize = 96;

/// A tree of the parent snapshot, and whether every blob below it was found
/// live in the cache's current epoch (then its unchanged files need no
/// index lookups).
#[derive(Clone)]
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
pub fn unchanged(detection: ChangeDetection, stat: &Stat, parent: &Node) -> bool {
    matches!(parent.kind, NodeKind::File { .. })
        && parent.size == stat.size
        && parent.mtime_ns == stat.mtime_ns
        && (detection.ignore_ctime || parent.ctime_ns == stat.ctime_ns)
        && (detection.ignore_inode || parent.inode == stat.inode)
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
    pub stat: Stat,
    /// Empty for a file read ahead: its attributes come with its content
    /// (`ReadFile`), read from the open file.
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
    pub fn looked_up(name: Vec<u8>, path: PathBuf, stat: Stat) -> Entry {
        let xattrs = crate::source::fs::read_xattrs(&path);
        Entry::stated(name, path, stat, xattrs)
    }

    /// An entry as `lstat` and its extended attributes give it.
    fn stated(name: Vec<u8>, path: PathBuf, stat: Stat, xattrs: Vec<Xattr>) -> Entry {
        Entry {
            name,
            path,
            stat,
            xattrs,
            other_fs: false,
            content: None,
        }
    }
}

/// A file as read ahead.
pub struct ReadFile {
    pub data: Vec<u8>,
    /// Its metadata right after reading (to tell whether it changed meanwhile).
    pub stat: Stat,
    pub xattrs: Vec<Xattr>,
}

pub type ReadResult = std::io::Result<ReadFile>;

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
    /// The files' directory, when a lease on keeping it open was free:
    /// opening a file relative to it looks up one name, not the whole path.
    dir: Option<Arc<LeasedDir>>,
    batch: Arc<Batch>,
    done: bool,
}

impl ReadJob {
    fn run(mut self) {
        let dir = self.dir.as_ref().map(|d| &d.dir.fd);
        let results = self
            .files
            .iter()
            .map(|(path, size)| Some(read_whole(dir, path, *size)))
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
/// by comparing the metadata after reading), then stats the open file and
/// reads its extended attributes. `dir`: the open directory of `path`.
fn read_whole(dir: Option<&OwnedFd>, path: &Path, size: u64) -> ReadResult {
    let file = match (dir, path.file_name()) {
        (Some(dir), Some(name)) => {
            use nix::fcntl::OFlag;
            let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
            File::from(nix::fcntl::openat(
                dir,
                name,
                flags,
                nix::sys::stat::Mode::empty(),
            )?)
        }
        _ => File::open(path)?,
    };
    let mut data = Vec::with_capacity(size as usize);
    (&file).take(size).read_to_end(&mut data)?;
    let stat = Stat::from(&file.metadata()?);
    let xattrs = crate::source::fs::read_xattrs_of(&file);
    Ok(ReadFile { data, stat, xattrs })
}

/// Leases on keeping a directory open for its read jobs, at most `max` at
/// a time: the walk can be thousands of levels deep, and every level may
/// still have files to read once its subdirectories are walked. A job
/// without a lease opens its files by their paths.
struct DirLeases {
    held: AtomicUsize,
    max: usize,
    /// The most held at once, for the tests to check the bound.
    #[cfg(test)]
    peak: AtomicUsize,
}

impl DirLeases {
    fn new(max: usize) -> Arc<DirLeases> {
        Arc::new(DirLeases {
            held: AtomicUsize::new(0),
            max,
            #[cfg(test)]
            peak: AtomicUsize::new(0),
        })
    }

    fn lease(self: &Arc<Self>, dir: Arc<OpenDir>) -> Option<Arc<LeasedDir>> {
        let held = self.held.fetch_add(1, Ordering::Relaxed) + 1;
        if held > self.max {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        #[cfg(test)]
        self.peak.fetch_max(held, Ordering::Relaxed);
        Some(Arc::new(LeasedDir {
            dir,
            leases: Arc::clone(self),
        }))
    }
}

/// A directory kept open under a lease, given back when the last read job
/// holding it is done.
struct LeasedDir {
    dir: Arc<OpenDir>,
    leases: Arc<DirLeases>,
}

impl Drop for LeasedDir {
    fn drop(&mut self) {
        self.leases.held.fetch_sub(1, Ordering::Relaxed);
    }
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

/// A directory being listed: its entries are `lstat`ed relative to its
/// descriptor (see `source::stat`).
struct OpenDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl OpenDir {
    /// Opens `path` (not through a symlink: the walk only descends into
    /// what `lstat` called a directory) and lists its entries' names,
    /// unsorted. A listing that fails part way returns what it read and
    /// the error.
    fn list(path: PathBuf) -> std::io::Result<Listing> {
        use nix::fcntl::OFlag;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(&path, flags, nix::sys::stat::Mode::empty())?;
        // the listing moves the descriptor's offset and owns what it is given
        let mut listing = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        let mut names = Vec::new();
        let mut failed = None;
        for entry in listing.iter() {
            match entry {
                Ok(e) => {
                    let name = e.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        names.push(name.to_vec());
                    }
                }
                Err(e) => {
                    failed = Some(e.into());
                    break;
                }
            }
        }
        Ok(Listing {
            dir: OpenDir { path, fd },
            names,
            failed,
        })
    }

    /// The path of the entry `name`, allocated once.
    fn child(&self, name: &[u8]) -> PathBuf {
        let mut path = PathBuf::with_capacity(self.path.as_os_str().len() + 1 + name.len());
        path.push(&self.path);
        path.push(std::ffi::OsStr::from_bytes(name));
        path
    }
}

/// What the walker waits on: a worker takes these before any read.
enum UrgentJob {
    Stat(StatJob),
    Tree(TreeJob),
}

impl UrgentJob {
    fn run(self, rules: &WalkRules) {
        match self {
            UrgentJob::Stat(job) => job.run(rules),
            UrgentJob::Tree(job) => job.run(rules),
        }
    }
}

/// The parent snapshot's tree for a subdirectory, loaded (and decoded) by
/// a worker while the walker is still busy with the directories before it:
/// on an unchanged tree of small files, loading parent trees was a fifth
/// of the walker's work, and the walker is what the backup waits for.
struct TreeJob {
    id: Id,
    verified: bool,
    reply: Sender<Option<ParentTree>>,
}

impl TreeJob {
    fn run(self, rules: &WalkRules) {
        let tree = ParentTree::load(rules.repo, Some(self.id), self.verified, rules.epoch);
        let _ = self.reply.send(tree);
    }
}

/// Parent trees of subdirectories loaded at once, ahead of the walk.
const TREES_AHEAD: usize = 4;

/// A directory's entries' names, unsorted, and the error that cut the
/// listing short, if one did.
struct Listing {
    dir: OpenDir,
    names: Vec<Vec<u8>>,
    failed: Option<std::io::Error>,
}

/// `lstat` (and extended attributes) of a batch of a directory's entries.
struct StatJob {
    names: Vec<Vec<u8>>,
    dir: Arc<OpenDir>,
    parent: Option<Arc<ParentTree>>,
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
    #[cfg(test)]
    read_dirs: Arc<DirLeases>,
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
        ReadAhead::start_with(scope, rules, root, parent, root_dev, Limits::from_rlimit())
    }

    /// `start` within `limits` (tests set the extremes).
    fn start_with<'scope, 'env: 'scope>(
        scope: &'scope Scope<'scope, 'env>,
        rules: WalkRules<'env>,
        root: PathBuf,
        parent: Option<ParentTree>,
        root_dev: u64,
        limits: Limits,
    ) -> ReadAhead {
        let (scan_tx, scans) = bounded(AHEAD_DIRS);
        let (stat_tx, stat_rx) = unbounded::<UrgentJob>();
        let (read_tx, read_rx) = unbounded::<ReadJob>();
        let budget = Arc::new(Budget {
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
        });
        for _ in 0..limits.workers {
            let (stat_rx, read_rx) = (stat_rx.clone(), read_rx.clone());
            let worker = std::thread::Builder::new()
                .name("cairn-read".into())
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || work(&rules, &stat_rx, &read_rx));
            if worker.is_err() {
                break; // fewer workers; the walker does their jobs if none start
            }
        }
        drop((stat_rx, read_rx));
        let read_dirs = DirLeases::new(limits.read_dirs);
        let walker = Walker {
            rules,
            scans: scan_tx,
            urgent: stat_tx,
            reads: read_tx,
            budget: Arc::clone(&budget),
            read_dirs: Arc::clone(&read_dirs),
            root_dev,
            cached_stat: limits.cached_stat,
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
        ReadAhead {
            scans,
            budget,
            #[cfg(test)]
            read_dirs,
        }
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

/// How far the read-ahead goes.
struct Limits {
    /// Workers: files open at once.
    workers: usize,
    /// Directories kept open for their read jobs (see `DirLeases`).
    read_dirs: usize,
    /// A stat slower than this was a read from the disk (see `CACHED_STAT`).
    cached_stat: Duration,
}

impl Limits {
    /// Enough workers to keep a disk busy; workers and leased directories
    /// each take no more than a quarter of the descriptors still free (the
    /// index cache and the upload pipeline need theirs).
    fn from_rlimit() -> Limits {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let open = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(64);
        let quarter = (limit.saturating_sub(open) / 4) as usize;
        Limits {
            workers: quarter.clamp(1, MAX_WORKERS),
            read_dirs: quarter.min(MAX_READ_DIRS),
            cached_stat: CACHED_STAT,
        }
    }
}

/// A worker: what the walker waits on comes first, reads after.
fn work(rules: &WalkRules, urgent: &Receiver<UrgentJob>, reads: &Receiver<ReadJob>) {
    loop {
        if let Ok(job) = urgent.try_recv() {
            job.run(rules);
            continue;
        }
        // the walker drops both senders together when it ends; reads it
        // queued before that are still done
        select! {
            recv(urgent) -> job => match job {
                Ok(job) => job.run(rules),
                Err(_) => return reads.iter().for_each(ReadJob::run),
            },
            recv(reads) -> job => match job {
                Ok(job) => job.run(),
                Err(_) => return urgent.iter().for_each(|job| job.run(rules)),
            },
        }
    }
}

impl StatJob {
    fn run(self, rules: &WalkRules) {
        let out = stat_batch(rules, &self.dir, self.names, self.parent.as_deref());
        // The archiver takes the parent tree apart once it has the
        // directory; no worker may still hold it by then.
        drop(self.parent);
        let _ = self.reply.send(out);
    }
}

fn stat_batch(
    rules: &WalkRules,
    dir: &OpenDir,
    names: Vec<Vec<u8>>,
    parent: Option<&ParentTree>,
) -> Vec<Stated> {
    names
        .into_iter()
        .map(|name| stat_entry(rules.excludes, dir, name, parent, rules.detection))
        .collect()
}

fn stat_entry(
    excludes: &Excludes,
    dir: &OpenDir,
    name: Vec<u8>,
    parent: Option<&ParentTree>,
    detection: ChangeDetection,
) -> Stated {
    let path = dir.child(&name);
    let stat = match Stat::at(&dir.fd, &name) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stated::Skipped,
        Err(e) => return Stated::Failed(format!("{}: {e} (not backed up)", path.display())),
    };
    if excludes.excludes(&path, &stat) {
        return Stated::Skipped;
    }
    // Setting or removing an extended attribute changes the ctime, so a
    // file whose ctime (and the rest `unchanged` compares) is the
    // parent's still has the parent's attributes: no listxattr call, one
    // of the few system calls an unchanged file costs.
    let parent_node = parent.and_then(|p| p.tree.find(&name));
    let xattrs = match parent_node {
        Some(node) if !detection.ignore_ctime && unchanged(detection, &stat, node) => {
            node.xattrs.clone()
        }
        _ if read_ahead(detection, &stat, parent_node) => Vec::new(),
        _ => crate::source::fs::read_xattrs(&path),
    };
    Stated::Entry(Entry::stated(name, path, stat, xattrs))
}

/// Whether the walk reads the file ahead: a small regular file the
/// archiver will read, new or changed since `parent`.
fn read_ahead(detection: ChangeDetection, stat: &Stat, parent: Option<&Node>) -> bool {
    stat.kind == EntryType::File
        && (1..=SMALL_FILE).contains(&stat.size)
        && !parent.is_some_and(|p| unchanged(detection, stat, p))
}

struct Walker<'a> {
    rules: WalkRules<'a>,
    scans: Sender<Scan>,
    urgent: Sender<UrgentJob>,
    reads: Sender<ReadJob>,
    budget: Arc<Budget>,
    read_dirs: Arc<DirLeases>,
    root_dev: u64,
    /// See `CACHED_STAT`.
    cached_stat: Duration,
}

/// What the walker does after handing a directory over, in the archiver's order.
enum Next {
    Read(ReadJob),
    /// A subdirectory, with its tree in the parent snapshot (loaded a few
    /// subdirectories ahead of the walk) and whether that is known verified.
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
        let mut trees: std::collections::VecDeque<_> = next
            .iter()
            .filter_map(|step| match step {
                Next::Descend(_, subtree, verified) => Some((*subtree, *verified)),
                Next::Read(_) => None,
            })
            .collect();
        let mut loading = std::collections::VecDeque::new();
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
                Next::Descend(sub, ..) => {
                    while loading.len() < TREES_AHEAD {
                        let Some((subtree, verified)) = trees.pop_front() else {
                            break;
                        };
                        loading.push_back(self.load_ahead(subtree, verified));
                    }
                    let parent = loading.pop_front().flatten().and_then(|rx| rx.recv().ok());
                    if !self.walk(sub, parent.flatten()) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Has a worker load the parent tree `id`; `None` if there is none.
    fn load_ahead(&self, id: Option<Id>, verified: bool) -> Option<Receiver<Option<ParentTree>>> {
        let (reply, rx) = bounded(1);
        let job = TreeJob {
            id: id?,
            verified,
            reply,
        };
        // no worker left (none started): load it here
        if let Err(e) = self.urgent.send(UrgentJob::Tree(job)) {
            e.0.run(&self.rules);
        }
        Some(rx)
    }

    fn scan(&self, dir: PathBuf, parent: Option<ParentTree>) -> (Scan, Vec<Next>) {
        let parent = parent.map(Arc::new);
        let mut warnings = Vec::new();
        let mut entries = Vec::new();
        let mut read_dir = None;
        match OpenDir::list(dir.clone()) {
            Ok(Listing {
                dir: open,
                mut names,
                failed,
            }) => {
                if let Some(e) = failed {
                    warnings.push(format!("{}: {e} (listing incomplete)", dir.display()));
                }
                names.sort();
                let marker = self.rules.excludes.marker_in(&dir);
                names.retain(|n| !Excludes::left_out_beside(marker.as_deref(), n));
                entries.reserve_exact(names.len());
                let open = Arc::new(open);
                read_dir = self.read_dirs.lease(Arc::clone(&open));
                for stated in self.stat_all(open, names, parent.as_ref()) {
                    match stated {
                        Stated::Entry(e) => entries.push(e),
                        Stated::Skipped => {}
                        Stated::Failed(w) => warnings.push(w),
                    }
                }
            }
            Err(e) => warnings.push(format!(
                "{}: {e} (directory contents not backed up)",
                dir.display()
            )),
        }
        let verified = parent.as_ref().is_some_and(|p| p.verified);
        let mut next = Vec::new();
        let mut batch: Vec<&mut Entry> = Vec::new();
        for entry in &mut entries {
            let parent_node = parent.as_ref().and_then(|p| p.tree.find(&entry.name));
            if entry.stat.kind == EntryType::Dir {
                entry.other_fs = self.rules.one_file_system && entry.stat.device != self.root_dev;
                if !entry.other_fs {
                    // a batch never spans a subdirectory: the archiver
                    // consumes the subdirectory's files in between, and
                    // budget must be granted in the order files are consumed
                    self.close_batch(&mut batch, &mut next, read_dir.as_ref());
                    let subtree = parent_node.and_then(Node::subtree);
                    next.push(Next::Descend(entry.path.clone(), subtree, verified));
                }
            } else if read_ahead(self.rules.detection, &entry.stat, parent_node) {
                batch.push(entry);
            }
        }
        self.close_batch(&mut batch, &mut next, read_dir.as_ref());
        let scan = Scan {
            dir,
            parent,
            entries,
            warnings,
        };
        (scan, next)
    }

    /// Has the files of `batch` read ahead together, in batches of at most
    /// BATCH_FILES files or BATCH_BYTES, relative to `dir` when leased.
    fn close_batch(
        &self,
        batch: &mut Vec<&mut Entry>,
        next: &mut Vec<Next>,
        dir: Option<&Arc<LeasedDir>>,
    ) {
        let mut rest = std::mem::take(batch);
        while !rest.is_empty() {
            let mut take = 0;
            let mut size = 0;
            while take < rest.len()
                && take < BATCH_FILES
                && (take == 0 || size + rest[take].stat.size <= BATCH_BYTES)
            {
                size += rest[take].stat.size;
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
                    (entry.path.clone(), entry.stat.size)
                })
                .collect();
            next.push(Next::Read(ReadJob {
                files,
                dir: dir.cloned(),
                batch: shared,
                done: false,
            }));
        }
    }

    /// Stats `names`, in order. While their metadata is in the page cache a
    /// stat costs a microsecond or two and handing a batch to a worker about
    /// as much as ten of them (a wake-up each way), so the walker stats a
    /// few entries itself to find out: if they were quick it goes on alone
    /// (sharing the rest with a worker was measured no faster on an
    /// unchanged tree of 400k files, and cost 8% more CPU); if the disk was
    /// read, it spreads small batches over the workers to keep many
    /// requests in flight.
    fn stat_all(
        &self,
        dir: Arc<OpenDir>,
        names: Vec<Vec<u8>>,
        parent: Option<&Arc<ParentTree>>,
    ) -> Vec<Stated> {
        let mut out = Vec::with_capacity(names.len());
        let mut names = names.into_iter();
        let mut batch_len = PROBE_BATCH;
        while names.len() > 0 {
            let batch: Vec<Vec<u8>> = names.by_ref().take(batch_len).collect();
            let count = batch.len() as u32;
            let started = Instant::now();
            out.extend(stat_batch(&self.rules, &dir, batch, parent.map(|p| &**p)));
            if started.elapsed() > self.cached_stat * count {
                self.spread(&dir, names, parent, &mut out);
                break;
            }
            batch_len = STAT_BATCH;
        }
        out
    }

    /// Has the workers stat `names` in batches, and adds what they found
    /// to `out` in order.
    fn spread(
        &self,
        dir: &Arc<OpenDir>,
        mut names: std::vec::IntoIter<Vec<u8>>,
        parent: Option<&Arc<ParentTree>>,
        out: &mut Vec<Stated>,
    ) {
        let mut replies = Vec::new();
        while names.len() > 0 {
            let (reply, rx) = bounded(1);
            let job = StatJob {
                names: names.by_ref().take(STAT_BATCH).collect(),
                dir: Arc::clone(dir),
                parent: parent.cloned(),
                reply,
            };
            // no worker left (none started): stat here
            if let Err(e) = self.urgent.send(UrgentJob::Stat(job)) {
                e.0.run(&self.rules);
            }
            replies.push(rx);
        }
        for rx in replies {
            match rx.recv() {
                Ok(batch) => out.extend(batch),
                Err(_) => out.push(Stated::Failed(format!(
                    "{}: some entries were not read (a read-ahead worker stopped)",
                    dir.path.display()
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyfile::KdfParams;
    use crate::repo::{init, CacheLocation, InitOptions, OpenedRepository};
    use crate::storage::Storage;

    fn repository() -> Repository {
        let storage = Storage::open("memory://").unwrap();
        let kdf = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        init(
            &storage,
            b"pw",
            &InitOptions {
                kdf,
                ..Default::default()
            },
        )
        .unwrap();
        let opened = OpenedRepository::open(storage, b"pw").unwrap();
        opened.load_index(&CacheLocation::None).unwrap()
    }

    fn limits(cached_stat: Duration, read_dirs: usize) -> Limits {
        Limits {
            workers: 4,
            read_dirs,
            cached_stat,
        }
    }

    /// An entry as the walk hands it over: path, size, content and extended
    /// attributes of a file read ahead.
    type Walked = (PathBuf, u64, Option<(Vec<u8>, Vec<Xattr>)>);

    /// Every entry below `root` as the walk hands it over, in the
    /// archiver's order (a subdirectory's entries before the files after
    /// it), and the most directories leased at once.
    fn walk_all(repo: &Repository, root: &Path, limits: Limits) -> (Vec<Walked>, usize) {
        fn consume(ahead: &ReadAhead, dir: &Path, out: &mut Vec<Walked>) {
            let scan = ahead.next_scan(dir).unwrap();
            assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
            for entry in scan.entries {
                let read = entry.content.map(|c| c.wait().unwrap());
                let read = read.map(|r| (r.data, r.xattrs));
                let is_dir = entry.stat.is_dir();
                out.push((entry.path.clone(), entry.stat.size, read));
                if is_dir {
                    consume(ahead, &entry.path, out);
                }
            }
        }
        let excludes = Excludes::new(&Default::default()).unwrap();
        let rules = WalkRules {
            repo,
            excludes: &excludes,
            one_file_system: false,
            detection: ChangeDetection::default(),
            epoch: 0,
        };
        let mut out = Vec::new();
        let mut peak = 0;
        std::thread::scope(|scope| {
            let ahead = ReadAhead::start_with(scope, rules, root.into(), None, 0, limits);
            consume(&ahead, root, &mut out);
            peak = ahead.read_dirs.peak.load(Ordering::Relaxed);
        });
        (out, peak)
    }

    /// Whether the walker stats a directory alone (its metadata cached) or
    /// spreads it over the workers (read from the disk), it hands over the
    /// same entries in the same order, with their content.
    #[test]
    fn stats_alone_or_spread_give_the_same_walk() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..3 {
            let sub = dir.path().join(format!("d{d}"));
            std::fs::create_dir(&sub).unwrap();
            for f in 0..150 {
                let data = format!("{d}-{f},").repeat(f % 7);
                std::fs::write(sub.join(format!("f{f:03}")), data).unwrap();
            }
        }
        let repo = repository();
        let (alone, _) = walk_all(&repo, dir.path(), limits(Duration::from_secs(3600), 8));
        let (spread, _) = walk_all(&repo, dir.path(), limits(Duration::ZERO, 8));
        assert_eq!(alone, spread);
        assert_eq!(alone.len(), 3 + 3 * 150);
        for (path, size, read) in alone {
            if path.is_file() {
                let data = std::fs::read(&path).unwrap();
                assert_eq!(size, data.len() as u64);
                let content = read.map(|(data, _)| data);
                let expected = (size > 0).then_some(&data[..]);
                assert_eq!(content.as_deref(), expected, "{}", path.display());
            }
        }
    }

    /// Every level of a deep tree still has files to read after its
    /// subdirectory: no more directories stay open for them than the
    /// limit, and files read by path (no lease left) or relative to their
    /// directory come out the same, with their extended attributes.
    #[test]
    fn read_jobs_keep_no_more_directories_open_than_leased() {
        let root = tempfile::tempdir().unwrap();
        let mut dir = root.path().to_path_buf();
        let mut tagged = 0;
        for level in 0..40 {
            dir.push("a");
            std::fs::create_dir(&dir).unwrap();
            let file = dir.join("b");
            std::fs::write(&file, format!("level {level}")).unwrap();
            tagged +=
                xattr::set(&file, "user.level", level.to_string().as_bytes()).is_ok() as usize;
        }
        let repo = repository();
        let (few, peak) = walk_all(&repo, root.path(), limits(Duration::ZERO, 3));
        assert!(peak <= 3, "{peak} directories held open");
        let (many, peak) = walk_all(&repo, root.path(), limits(Duration::ZERO, 100));
        assert!(
            peak > 3,
            "the deep walk held only {peak} directories: it tests nothing"
        );
        assert_eq!(few, many);
        assert_eq!(few.len(), 80);
        // the deepest file comes first: each level's file after its subdirectory
        let files = few.iter().filter(|(path, ..)| path.ends_with("b")).rev();
        for (level, (_, _, read)) in files.enumerate() {
            let (data, xattrs) = read.as_ref().expect("read ahead");
            assert_eq!(data, format!("level {level}").as_bytes());
            // tmpfs before Linux 6.6 keeps no user attributes: then none
            if tagged == 40 {
                assert_eq!(xattrs.len(), 1);
                assert_eq!(xattrs[0].value, level.to_string().as_bytes());
            }
        }
    }
}
