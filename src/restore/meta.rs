//! The last restore steps: hard links and special files, the metadata
//! (ownership, xattrs, mode, times) of files and special files, then
//! symbolic links, then directories' metadata, deepest first.
//!
//! Everything here goes through descriptors of directories opened one
//! component at a time without following links ([`Beneath`]), and files are
//! changed through their own descriptors, opened `O_NOFOLLOW`. Symbolic
//! links are made only after every file's metadata is set: on a
//! case-folding file system a snapshot's link `A -> /etc` replaces its
//! directory `a`, and a path-based `chown a/passwd` would then change
//! `/etc/passwd`. Through descriptors, such a path fails instead (and is
//! reported), and nothing outside the target is touched.

use super::plan::{Overwrite, Plan};
use crate::tree::{Node, NodeKind};
use anyhow::{anyhow, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use rayon::prelude::*;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Owner-only modes every restored directory and file has until the restore
/// has finished writing: an interrupted or failed restore leaves nothing
/// readable by others (`.ssh` and its keys among them). The real modes come
/// last, in [`finish`].
pub const PRIVATE_DIR_MODE: u32 = 0o700;
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Makes `path` a real directory, created private (see
/// [`PRIVATE_DIR_MODE`]); one that exists keeps its mode, since tightening
/// e.g. `/` or `/home` while a restore runs would lock others out of them.
/// Anything else there (a file, or a symlink that could redirect writes
/// outside the target) is replaced. Whether it was made now, and so holds
/// nothing but what the restore puts there.
pub fn ensure_dir(path: &Path) -> std::io::Result<bool> {
    let private = || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(path)
            .map(|()| true)
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => {
            std::fs::remove_file(path)?;
            private()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => private(),
        Err(e) => Err(e),
    }
}

/// Removes whatever is at `path` unless it is a regular file (which is then
/// overwritten in place).
pub fn remove_if_not_regular(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Which metadata a restore applies beyond modes and times (`--no-owner`,
/// `--no-special`, `--no-xattrs`, `--xattr-include`): a root restore of
/// someone else's snapshot need not create device nodes or take its owners.
#[derive(Debug, Clone)]
pub struct MetadataChoices {
    /// Give entries the snapshot's owner and group (only as root).
    pub owner: bool,
    /// Create fifos and device nodes.
    pub special: bool,
    pub xattrs: XattrChoice,
}

impl Default for MetadataChoices {
    fn default() -> Self {
        MetadataChoices {
            owner: true,
            special: true,
            xattrs: XattrChoice::All,
        }
    }
}

/// Which extended attributes are restored.
#[derive(Debug, Clone, Default)]
pub enum XattrChoice {
    #[default]
    All,
    Nothing,
    /// Those whose name matches one of these globs (e.g. `user.*`).
    Matching(globset::GlobSet),
}

impl XattrChoice {
    /// From `--no-xattrs` and `--xattr-include PATTERN...` (globs over
    /// whole names, e.g. `user.*`).
    pub fn chosen(none: bool, include: &[String]) -> Result<XattrChoice> {
        match (none, include.is_empty()) {
            (false, true) => Ok(XattrChoice::All),
            (true, true) => Ok(XattrChoice::Nothing),
            (true, false) => Err(anyhow!(
                "--no-xattrs and --xattr-include contradict each other: give one"
            )),
            (false, false) => XattrChoice::matching(include),
        }
    }

    fn matching(patterns: &[String]) -> Result<XattrChoice> {
        let mut set = globset::GlobSetBuilder::new();
        for p in patterns {
            set.add(
                globset::Glob::new(p)
                    .map_err(|e| anyhow!("--xattr-include {p:?} is not a valid pattern: {e}"))?,
            );
        }
        Ok(XattrChoice::Matching(set.build()?))
    }

    fn allows(&self, name: &[u8]) -> bool {
        match self {
            XattrChoice::All => true,
            XattrChoice::Nothing => false,
            XattrChoice::Matching(set) => set.is_match(Path::new(OsStr::from_bytes(name))),
        }
    }
}

/// Directories below the restore target, opened one component at a time
/// with `O_NOFOLLOW`: no symbolic link, the snapshot's own or one already in
/// the target, can lead an operation outside. The last directory opened is
/// kept, since entries come in tree order and neighbours share it; only two
/// descriptors are open at a time whatever the depth.
struct Beneath {
    root: PathBuf,
    root_fd: Arc<OwnedFd>,
    last: Option<(PathBuf, Arc<OwnedFd>)>,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Beneath {
    fn new(root: &Path) -> std::io::Result<Beneath> {
        // The target itself is the user's choice, a link to it included.
        let fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath {
            root: root.to_path_buf(),
            root_fd: Arc::new(fd),
            last: None,
        })
    }

    /// Another walker below the same target (for another thread).
    fn sharing_root(&self) -> Beneath {
        Beneath {
            root: self.root.clone(),
            root_fd: self.root_fd.clone(),
            last: None,
        }
    }

    /// The directory holding `path` (below the target) and its last name.
    fn parent_of<'p>(&mut self, path: &'p Path) -> std::io::Result<(Arc<OwnedFd>, &'p OsStr)> {
        let invalid = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a path below the restore target",
            )
        };
        let rel = path.strip_prefix(&self.root).map_err(|_| invalid())?;
        let name = rel.file_name().ok_or_else(invalid)?;
        let dir = rel.parent().unwrap_or(Path::new(""));
        // descend from the directory opened last when `dir` is below it
        let (mut fd, rest) = match &self.last {
            Some((last, fd)) if last == dir => return Ok((fd.clone(), name)),
            Some((last, fd)) if !last.as_os_str().is_empty() && dir.starts_with(last) => {
                (fd.clone(), dir.strip_prefix(last).map_err(|_| invalid())?)
            }
            _ => (self.root_fd.clone(), dir),
        };
        for c in rest.components() {
            let Component::Normal(c) = c else {
                return Err(invalid());
            };
            fd = Arc::new(nix::fcntl::openat(&*fd, c, DIR_FLAGS, Mode::empty())?);
        }
        self.last = Some((dir.to_path_buf(), fd.clone()));
        Ok((fd, name))
    }
}

/// Whether something exists at `name` in `dir` (a link is not followed).
fn exists_at(dir: &OwnedFd, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

/// `name` in `dir` as a path other calls can take: the kernel resolves
/// `/proc/self/fd/N` to the directory itself, so only `name` is looked up.
fn path_at(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// Removes whatever is at `name` in `dir`; a link is removed as a link.
fn remove_at(dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            std::fs::remove_dir_all(path_at(dir, name))
        }
        Ok(_) => nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(Into::into),
    }
}

/// Makes hard links and special entries, then applies metadata, symbolic
/// links and directories last (see the module's comment for why). Files in
/// `left_alone` (kept by `--overwrite`) and, with `--overwrite never`, any
/// existing link or special entry are not touched.
pub fn finish(
    plan: &Plan,
    left_alone: &[bool],
    choices: &MetadataChoices,
    errors: &mut Vec<String>,
) {
    crate::crash_point::crash_point("restore-metadata");
    let mut beneath = match Beneath::new(&plan.target) {
        Ok(b) => b,
        Err(e) => {
            errors.push(format!(
                "{}: cannot open the restore target to set metadata: {e}",
                plan.target.display()
            ));
            return;
        }
    };
    let apply = Apply {
        chown: choices.owner && nix::unistd::geteuid().is_root(),
        choices,
    };
    let never = plan.overwrite == Overwrite::Never;
    let mut untouched: HashSet<&Path> = HashSet::new();

    for f in &plan.files {
        let Some(first) = &f.link_to else { continue };
        let path = plan.file_path(f);
        let result = beneath.parent_of(&path).and_then(|(dir, name)| {
            if never && exists_at(&dir, name) {
                return Ok(());
            }
            let (first_dir, first_name) = beneath.parent_of(first)?;
            remove_at(&dir, name)?;
            nix::unistd::linkat(&*first_dir, first_name, &*dir, name, AtFlags::empty())
                .map_err(Into::into)
        });
        if let Err(e) = result {
            errors.push(problem(&path, "cannot create hard link", &e));
        }
    }

    let (links, specials): (Vec<_>, Vec<_>) = plan
        .others
        .iter()
        .filter(|(_, n)| !matches!(n.kind, NodeKind::Socket))
        .partition(|(_, n)| matches!(n.kind, NodeKind::Symlink { .. }));
    let specials: Vec<_> = specials.into_iter().filter(|_| choices.special).collect();
    for (path, node) in &specials {
        let result = beneath.parent_of(path).and_then(|(dir, name)| {
            if never && exists_at(&dir, name) {
                untouched.insert(path);
                return Ok(());
            }
            remove_at(&dir, name)?;
            create_special_at(&dir, name, node)
        });
        if let Err(e) = result {
            errors.push(problem(path, "cannot create", &e));
        }
    }

    // files are independent of each other: spread over the cores, in runs
    // of neighbours that share their directory's descriptor
    let file_errors: Vec<Vec<String>> = plan
        .files
        .par_chunks(FILES_PER_TASK)
        .zip(left_alone.par_chunks(FILES_PER_TASK))
        .map(|(files, alone)| {
            let mut beneath = beneath.sharing_root();
            let mut errors = Vec::new();
            for (f, _) in files
                .iter()
                .zip(alone)
                .filter(|(f, alone)| f.link_to.is_none() && !**alone)
            {
                let path = plan.file_path(f);
                let result = beneath
                    .parent_of(&path)
                    .and_then(|(dir, name)| apply.to_file_at(&dir, name, &f.node));
                if let Err(e) = result {
                    errors.push(problem(&path, "cannot set metadata", &e));
                }
            }
            errors
        })
        .collect();
    errors.extend(file_errors.into_iter().flatten());
    for (path, node) in specials
        .iter()
        .filter(|(p, _)| !untouched.contains(p.as_path()))
    {
        let result = beneath
            .parent_of(path)
            .and_then(|(dir, name)| apply.by_name(&dir, name, node, false));
        if let Err(e) = result {
            errors.push(problem(path, "cannot set metadata", &e));
        }
    }

    for (path, node) in &links {
        let NodeKind::Symlink { target } = &node.kind else {
            continue;
        };
        let result = beneath.parent_of(path).and_then(|(dir, name)| {
            if never && exists_at(&dir, name) {
                return Ok(());
            }
            remove_at(&dir, name)?;
            nix::unistd::symlinkat(OsStr::from_bytes(target), &*dir, name)?;
            apply.by_name(&dir, name, node, true)
        });
        if let Err(e) = result {
            errors.push(problem(path, "cannot create symbolic link", &e));
        }
    }

    for (path, node) in plan.dirs.iter().rev() {
        let result = beneath.parent_of(path).and_then(|(dir, name)| {
            let fd = nix::fcntl::openat(&*dir, name, DIR_FLAGS, Mode::empty())?;
            apply.to_open(&File::from(fd), node)
        });
        if let Err(e) = result {
            errors.push(problem(path, "cannot set metadata", &e));
        }
    }
}

fn problem(path: &Path, what: &str, e: &dyn std::fmt::Display) -> String {
    format!("{}: {what}: {e}", path.display())
}

/// Files whose metadata one task sets.
const FILES_PER_TASK: usize = 256;

fn create_special_at(dir: &OwnedFd, name: &OsStr, node: &Node) -> std::io::Result<()> {
    let mode = Mode::from_bits_truncate(node.mode as libc::mode_t);
    let (kind, rdev) = match &node.kind {
        NodeKind::Fifo => return nix::unistd::mkfifoat(dir, name, mode).map_err(Into::into),
        NodeKind::BlockDevice { rdev } => (SFlag::S_IFBLK, *rdev),
        NodeKind::CharDevice { rdev } => (SFlag::S_IFCHR, *rdev),
        _ => return Ok(()),
    };
    nix::sys::stat::mknodat(dir, name, kind, mode, rdev as libc::dev_t).map_err(Into::into)
}

/// Applies a node's metadata to what a restore made of it.
struct Apply<'a> {
    /// Ownership is restored (root, and not `--no-owner`).
    chown: bool,
    choices: &'a MetadataChoices,
}

impl Apply<'_> {
    /// A regular file, through its own descriptor. One its owner cannot
    /// read (kept by `--overwrite if-changed`, mode 0200) is changed by
    /// name in its (link-free) directory instead.
    fn to_file_at(&self, dir: &OwnedFd, name: &OsStr, node: &Node) -> std::io::Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => self.to_open(&File::from(fd), node),
            Err(Errno::EACCES) => self.by_name(dir, name, node, false),
            Err(e) => Err(e.into()),
        }
    }

    /// A file or directory open as `file`.
    fn to_open(&self, file: &File, node: &Node) -> std::io::Result<()> {
        use xattr::FileExt;
        if self.chown {
            nix::unistd::fchown(
                file,
                Some(Uid::from_raw(node.uid)),
                Some(Gid::from_raw(node.gid)),
            )?;
        }
        for x in node
            .xattrs
            .iter()
            .filter(|x| self.choices.xattrs.allows(&x.name))
        {
            // Best effort: the target file system may not support them.
            let _ = file.set_xattr(OsStr::from_bytes(&x.name), &x.value);
        }
        // after chown, which clears setuid and setgid; only those bits
        // depend on who owns the file now
        let mode = if node.mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
            let now = file.metadata()?;
            restored_mode(node, now.uid(), now.gid())
        } else {
            restored_mode(node, node.uid, node.gid)
        };
        nix::sys::stat::fchmod(file, mode)?;
        let t = times(node);
        nix::sys::stat::futimens(file, &t, &t).map_err(Into::into)
    }

    /// An entry by its name in `dir`: special files, symbolic links (which
    /// have no mode of their own) and unreadable files.
    fn by_name(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        node: &Node,
        symlink: bool,
    ) -> std::io::Result<()> {
        let nofollow = AtFlags::AT_SYMLINK_NOFOLLOW;
        if self.chown {
            let (uid, gid) = (Uid::from_raw(node.uid), Gid::from_raw(node.gid));
            nix::unistd::fchownat(dir, name, Some(uid), Some(gid), nofollow)?;
        }
        for x in node
            .xattrs
            .iter()
            .filter(|x| self.choices.xattrs.allows(&x.name))
        {
            // (lsetxattr: a link itself, never what it points to)
            let _ = xattr::set(path_at(dir, name), OsStr::from_bytes(&x.name), &x.value);
        }
        if !symlink {
            let now = nix::sys::stat::fstatat(dir, name, nofollow)?;
            if now.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(std::io::Error::other("a symbolic link took its place"));
            }
            let mode = restored_mode(node, now.st_uid, now.st_gid);
            nix::sys::stat::fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink)?;
        }
        let t = times(node);
        nix::sys::stat::utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(Into::into)
    }
}

/// The snapshot's mode, except that a setuid (setgid) bit is kept only
/// when the entry has the snapshot's owner (group): restored with another
/// owner, such a program would run with the rights of whoever restored it.
/// A directory keeps setgid, which only passes its group on to new entries.
fn restored_mode(node: &Node, uid: u32, gid: u32) -> Mode {
    let mut mode = node.mode & 0o7777;
    if uid != node.uid {
        mode &= !libc::S_ISUID;
    }
    if gid != node.gid && !matches!(node.kind, NodeKind::Dir { .. }) {
        mode &= !libc::S_ISGID;
    }
    Mode::from_bits_truncate(mode as libc::mode_t)
}

fn times(node: &Node) -> TimeSpec {
    let ns = node.mtime_ns;
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}
