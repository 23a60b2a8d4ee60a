//! `mount`: the repository as a read-only file system (FUSE), for browsing
//! and copying out single files with everyday tools.
//!
//! ```text
//! MOUNTPOINT/snapshots/2026-12-02T05:54:33Z/…   each snapshot's tree
//! MOUNTPOINT/snapshots/latest -> …              the newest
//! MOUNTPOINT/hosts/HOST/TIME/…, …/latest        by host
//! MOUNTPOINT/tags/TAG/TIME/…, …/latest          by tag
//! ```
//!
//! Directories are loaded as they are first visited (from the local tree
//! cache, else one read each), and inode numbers are handed out then, so
//! memory follows what was browsed, not the repository's size. A file
//! read fetches only the blobs its range touches, and keeps the last few
//! decoded, so reading a large file from the middle starts at once and a
//! sequential read fetches each blob once. Snapshots are those listed at
//! mount time. Entries a hostile tree could use to escape (`..`, names
//! with `/`) are left out.

use crate::filter::BlobKind;
use crate::id::Id;
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::{check_level, Repository};
use crate::tree::snapshot::Snapshot;
use crate::tree::{is_valid_name, Node as TreeNode, NodeKind};
use anyhow::{Context, Result};
use fuser::{
    FileAttr, FileType, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    Request,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may keep what it was told: nothing changes.
const TTL: Duration = Duration::from_secs(3600);
const ROOT: u64 = 1;
/// Decoded blobs kept for reads (each up to the chunker's maximum size).
const BLOBS_KEPT: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Which snapshots to show.
    pub filter: SnapshotFilter,
    /// Let other users (and root) in (`allow_other`; needs
    /// `user_allow_other` in /etc/fuse.conf for non-root users).
    pub allow_other: bool,
}

/// Mounts the repository read-only at `mountpoint` and serves it until
/// `stop` is set (Ctrl-C, SIGTERM) or it is unmounted from outside
/// (`umount`, `fusermount -u`); then unmounts.
pub fn mount(
    repo: Repository,
    mountpoint: &Path,
    opts: &MountOptions,
    stop: &AtomicBool,
) -> Result<()> {
    let snapshots = repo.select_snapshots(&opts.filter, None)?;
    let fs = SnapshotFs::new(repo, snapshots);
    let mut options = vec![
        MountOption::RO,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        options.push(MountOption::AllowOther);
    }
    let session = fuser::spawn_mount2(fs, mountpoint, &options).with_context(|| {
        format!(
            "cannot mount at {} (it must be an empty directory, and FUSE must be \
             available: /dev/fuse and the fuse3 package's fusermount3)",
            mountpoint.display()
        )
    })?;
    while !stop.load(Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A plain unmount fails while a shell sits in the mount; detached, the
    // mount leaves the namespace now and goes once nothing uses it, instead
    // of staying behind dead when this process ends. (As root; otherwise
    // dropping the session unmounts through fusermount.)
    if nix::unistd::geteuid().is_root() {
        if let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) {
            // SAFETY: a valid C string; umount2 only reads it.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
    drop(session);
    Ok(())
}

/// One snapshot's place in the listings.
struct Listed {
    name: String,
    snapshot: Snapshot,
}

/// What a directory shows.
#[derive(Clone)]
enum DirKind {
    Root,
    /// Snapshots (all, or one host's, or one tag's), by time, with `latest`.
    Snapshots(Vec<usize>),
    Hosts,
    Tags,
    /// A directory of a snapshot's tree.
    Tree {
        id: Id,
        depth: usize,
    },
}

enum Entry {
    Dir {
        kind: DirKind,
        /// Name → inode, once listed.
        children: Option<BTreeMap<Vec<u8>, u64>>,
    },
    File {
        content: Vec<Id>,
        /// Where each blob starts, once the file was opened.
        starts: Option<Vec<u64>>,
    },
    Symlink(Vec<u8>),
    Special,
}

struct Inode {
    attr: FileAttr,
    entry: Entry,
}

pub struct SnapshotFs {
    repo: Repository,
    listed: Vec<Listed>,
    inodes: Vec<Inode>,
    /// Recently read blobs, newest last.
    blobs: VecDeque<(Id, std::sync::Arc<Vec<u8>>)>,
    uid: u32,
    gid: u32,
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_nanos(ns.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// Snapshot directory names: the time in UTC to the second, made unique
/// with `-1`, `-2` (as restic does).
fn snapshot_names(snapshots: &[(Id, Snapshot)]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    snapshots
        .iter()
        .map(|(_, s)| {
            let secs = s.time_ns.div_euclid(1_000_000_000);
            let base = jiff::Timestamp::from_second(secs)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|_| format!("t{secs}"));
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}-{}", *n - 1)
            }
        })
        .collect()
}

impl SnapshotFs {
    fn new(repo: Repository, snapshots: Vec<(Id, Snapshot)>) -> SnapshotFs {
        let names = snapshot_names(&snapshots);
        let listed = snapshots
            .into_iter()
            .zip(names)
            .map(|((_, snapshot), name)| Listed { name, snapshot })
            .collect();
        let mut fs = SnapshotFs {
            repo,
            listed,
            inodes: Vec::new(),
            blobs: VecDeque::new(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        };
        fs.inodes.push(Inode {
            attr: FileAttr {
                ino: ROOT,
                ..dir_attr(SystemTime::now())
            },
            entry: Entry::Dir {
                kind: DirKind::Root,
                children: None,
            },
        });
        fs
    }

    fn add(&mut self, attr: impl FnOnce(u64) -> FileAttr, entry: Entry) -> u64 {
        let ino = self.inodes.len() as u64 + 1;
        let attr = attr(ino);
        self.inodes.push(Inode { attr, entry });
        ino
    }

    fn inode(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    fn inode_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes
            .get_mut(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    fn add_dir(&mut self, kind: DirKind, time: SystemTime) -> u64 {
        self.add(
            |ino| FileAttr {
                ino,
                ..dir_attr(time)
            },
            Entry::Dir {
                kind,
                children: None,
            },
        )
    }

    /// The entries of directory `ino`, made on first use (a lookup in a
    /// large directory borrows them, it does not copy them).
    fn children(&mut self, ino: u64) -> Result<&BTreeMap<Vec<u8>, u64>, i32> {
        self.make_children_once(ino)?;
        self.listed(ino).ok_or(libc::EIO)
    }

    /// The entries of directory `ino`, if made.
    fn listed(&self, ino: u64) -> Option<&BTreeMap<Vec<u8>, u64>> {
        match self.inode(ino).map(|i| &i.entry) {
            Some(Entry::Dir {
                children: Some(c), ..
            }) => Some(c),
            _ => None,
        }
    }

    fn make_children_once(&mut self, ino: u64) -> Result<(), i32> {
        let kind = match self.inode(ino).map(|i| &i.entry) {
            Some(Entry::Dir {
                children: Some(_), ..
            }) => return Ok(()),
            Some(Entry::Dir { kind, .. }) => kind.clone(),
            Some(_) => return Err(libc::ENOTDIR),
            None => return Err(libc::ENOENT),
        };
        let made = self.make_children(kind).map_err(|e| {
            log::warn!("mount: {e:#}");
            libc::EIO
        })?;
        if let Some(Inode {
            entry: Entry::Dir { children, .. },
            ..
        }) = self.inode_mut(ino)
        {
            *children = Some(made);
        }
        Ok(())
    }

    fn make_children(&mut self, kind: DirKind) -> Result<BTreeMap<Vec<u8>, u64>> {
        let now = SystemTime::now();
        let mut out = BTreeMap::new();
        match kind {
            DirKind::Root => {
                let all = (0..self.listed.len()).collect();
                out.insert(
                    b"snapshots".to_vec(),
                    self.add_dir(DirKind::Snapshots(all), now),
                );
                out.insert(b"hosts".to_vec(), self.add_dir(DirKind::Hosts, now));
                out.insert(b"tags".to_vec(), self.add_dir(DirKind::Tags, now));
            }
            DirKind::Hosts | DirKind::Tags => {
                let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
                for (i, l) in self.listed.iter().enumerate() {
                    if matches!(kind, DirKind::Hosts) {
                        groups
                            .entry(l.snapshot.hostname.clone())
                            .or_default()
                            .push(i);
                    } else {
                        for t in &l.snapshot.tags {
                            groups.entry(t.clone()).or_default().push(i);
                        }
                    }
                }
                for (name, members) in groups {
                    if is_valid_name(name.as_bytes()) {
                        let dir = self.add_dir(DirKind::Snapshots(members), now);
                        out.insert(name.into_bytes(), dir);
                    }
                }
            }
            DirKind::Snapshots(members) => {
                for &i in &members {
                    let (name, time, tree) = {
                        let l = &self.listed[i];
                        (
                            l.name.clone(),
                            system_time(l.snapshot.time_ns),
                            l.snapshot.tree,
                        )
                    };
                    let dir = self.add_dir(DirKind::Tree { id: tree, depth: 0 }, time);
                    out.insert(name.into_bytes(), dir);
                }
                if let Some(&newest) = members.last() {
                    let target = self.listed[newest].name.clone().into_bytes();
                    let time = system_time(self.listed[newest].snapshot.time_ns);
                    let (uid, gid, len) = (self.uid, self.gid, target.len());
                    let link = self.add(
                        |ino| symlink_attr(ino, len, time, uid, gid),
                        Entry::Symlink(target),
                    );
                    out.insert(b"latest".to_vec(), link);
                }
            }
            DirKind::Tree { id, depth } => {
                check_level(depth, || format!("tree {}", id.short()))?;
                let tree = self.repo.load_tree(&id)?;
                for node in tree.nodes {
                    if !is_valid_name(&node.name) || out.contains_key(&node.name) {
                        continue;
                    }
                    let name = node.name.clone();
                    let ino = self.add_node(node, depth);
                    out.insert(name, ino);
                }
            }
        }
        Ok(out)
    }

    fn add_node(&mut self, node: TreeNode, depth: usize) -> u64 {
        let (kind, entry, size, rdev) = match node.kind {
            NodeKind::Dir { subtree } => (
                FileType::Directory,
                Entry::Dir {
                    kind: DirKind::Tree {
                        id: subtree,
                        depth: depth + 1,
                    },
                    children: None,
                },
                0,
                0,
            ),
            NodeKind::File { content } => (
                FileType::RegularFile,
                Entry::File {
                    content,
                    starts: None,
                },
                node.size,
                0,
            ),
            NodeKind::Symlink { target } => {
                let len = target.len() as u64;
                (FileType::Symlink, Entry::Symlink(target), len, 0)
            }
            NodeKind::BlockDevice { rdev } => (FileType::BlockDevice, Entry::Special, 0, rdev),
            NodeKind::CharDevice { rdev } => (FileType::CharDevice, Entry::Special, 0, rdev),
            NodeKind::Fifo => (FileType::NamedPipe, Entry::Special, 0, 0),
            NodeKind::Socket => (FileType::Socket, Entry::Special, 0, 0),
        };
        let mtime = system_time(node.mtime_ns);
        let ctime = system_time(node.ctime_ns);
        self.add(
            |ino| FileAttr {
                ino,
                size,
                blocks: size.div_ceil(512),
                atime: mtime,
                mtime,
                ctime,
                crtime: mtime,
                kind,
                perm: (node.mode & 0o7777) as u16,
                nlink: if kind == FileType::Directory { 2 } else { 1 },
                uid: node.uid,
                gid: node.gid,
                rdev: rdev as u32,
                blksize: 4096,
                flags: 0,
            },
            entry,
        )
    }

    /// Where each blob of file `ino` starts (and the end), from the index;
    /// made once, when the file is first opened.
    fn make_starts_once(&mut self, ino: u64) -> Result<(), i32> {
        let content = match self.inode(ino).map(|i| &i.entry) {
            Some(Entry::File {
                starts: Some(_), ..
            }) => return Ok(()),
            Some(Entry::File { content, .. }) => content.clone(),
            Some(Entry::Dir { .. }) => return Err(libc::EISDIR),
            Some(_) => return Err(libc::EINVAL),
            None => return Err(libc::ENOENT),
        };
        let mut starts = Vec::with_capacity(content.len() + 1);
        let mut at = 0u64;
        starts.push(0);
        for id in &content {
            let loc = self.repo.locate(BlobKind::Data, id).map_err(|e| {
                log::warn!("mount: {e:#}");
                libc::EIO
            })?;
            at = at.saturating_add(u64::from(loc.blob.raw_length));
            starts.push(at);
        }
        if let Some(Inode {
            entry: Entry::File { starts: s, .. },
            ..
        }) = self.inode_mut(ino)
        {
            *s = Some(starts);
        }
        Ok(())
    }

    fn blob(&mut self, id: &Id) -> Result<std::sync::Arc<Vec<u8>>> {
        if let Some(pos) = self.blobs.iter().position(|(b, _)| b == id) {
            let hit = self.blobs.remove(pos).expect("position is in range");
            self.blobs.push_back(hit.clone());
            return Ok(hit.1);
        }
        let data = std::sync::Arc::new(self.repo.read_blob(BlobKind::Data, id)?);
        if self.blobs.len() == BLOBS_KEPT {
            self.blobs.pop_front();
        }
        self.blobs.push_back((*id, data.clone()));
        Ok(data)
    }

    /// Bytes `offset..offset+size` of file `ino`.
    fn read_range(&mut self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>, i32> {
        self.make_starts_once(ino)?;
        // only the blobs the range touches: (id, where it starts)
        let (touched, end) = match self.inode(ino).map(|i| &i.entry) {
            Some(Entry::File {
                content,
                starts: Some(starts),
            }) => {
                let end = offset
                    .saturating_add(size as u64)
                    .min(*starts.last().unwrap_or(&0));
                // the blob holding `offset`: the last one starting at or before it
                let first = starts.partition_point(|&s| s <= offset).saturating_sub(1);
                let touched: Vec<(Id, u64)> = content
                    .iter()
                    .zip(starts)
                    .skip(first)
                    .take_while(|(_, &start)| start < end)
                    .map(|(id, &start)| (*id, start))
                    .collect();
                (touched, end)
            }
            _ => return Err(libc::EINVAL),
        };
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        for (id, start) in touched {
            let data = self.blob(&id).map_err(|e| {
                log::warn!("mount: {e:#}");
                libc::EIO
            })?;
            let from = offset.saturating_sub(start) as usize;
            let to = ((end - start) as usize).min(data.len());
            if from < to {
                out.extend_from_slice(&data[from..to]);
            }
        }
        Ok(out)
    }
}

/// A directory cairn makes up (root, listings): readable by the mounting
/// user, as everything is.
fn dir_attr(time: SystemTime) -> FileAttr {
    FileAttr {
        ino: 0,
        size: 0,
        blocks: 0,
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: FileType::Directory,
        perm: 0o555,
        nlink: 2,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn symlink_attr(ino: u64, len: usize, time: SystemTime, uid: u32, gid: u32) -> FileAttr {
    FileAttr {
        ino,
        size: len as u64,
        blocks: 0,
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: FileType::Symlink,
        perm: 0o777,
        nlink: 1,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl fuser::Filesystem for SnapshotFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self
            .children(parent)
            .map(|c| c.get(name.as_bytes()).copied())
        {
            Ok(found) => match found {
                Some(ino) => {
                    let attr = self.inode(ino).expect("a listed inode exists").attr;
                    reply.entry(&TTL, &attr, 0);
                }
                None => reply.error(libc::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.inode(ino) {
            Some(i) => reply.attr(&TTL, &i.attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.inode(ino).map(|i| &i.entry) {
            Some(Entry::Symlink(target)) => reply.data(target),
            Some(_) => reply.error(libc::EINVAL),
            None => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        // the blob table is made now, so reads only fetch data
        match self.make_starts_once(ino) {
            Ok(_) => reply.opened(0, fuser::consts::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        match self.read_range(ino, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if let Err(e) = self.make_children_once(ino) {
            return reply.error(e);
        }
        let Some(children) = self.listed(ino) else {
            return reply.error(libc::EIO);
        };
        let parent = ROOT; // ".." is resolved by the kernel from its dentries
        let dots = [
            (ino, FileType::Directory, &b"."[..]),
            (parent, FileType::Directory, &b".."[..]),
        ];
        let entries = dots
            .into_iter()
            .chain(children.iter().map(|(name, &child)| {
                let kind = self
                    .inode(child)
                    .map_or(FileType::RegularFile, |i| i.attr.kind);
                (child, kind, name.as_slice())
            }));
        let skip = usize::try_from(offset).unwrap_or(0);
        for (i, (child, kind, name)) in entries.enumerate().skip(skip) {
            if reply.add(child, (i + 1) as i64, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }
}
