//! The last restore steps: hard links, symlinks and special files, then
//! metadata (ownership, mode, xattrs, times) with directories deepest first.

use super::plan::{Overwrite, Plan};
use crate::tree::{Node, NodeKind};
use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

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
/// outside the target) is replaced.
pub fn ensure_dir(path: &Path) -> std::io::Result<()> {
    let private = || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(path)
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
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

/// Makes hard links and special entries, then applies metadata, deepest
/// directories last. Files in `left_alone` (kept by `--overwrite`) and, with
/// `--overwrite never`, any existing link or special entry are not touched.
pub fn finish(plan: &Plan, left_alone: &[bool], errors: &mut Vec<String>) {
    let mut report = |path: &Path, what: &str, e: &dyn std::fmt::Display| {
        errors.push(format!("{}: {what}: {e}", path.display()));
    };
    let keep =
        |path: &Path| plan.overwrite == Overwrite::Never && std::fs::symlink_metadata(path).is_ok();
    let mut untouched = std::collections::HashSet::new();
    for f in &plan.files {
        if let Some(first) = &f.link_to {
            let path = plan.file_path(f);
            if keep(&path) {
                untouched.insert(path);
                continue;
            }
            if let Err(e) = remove_any(&path).and_then(|_| std::fs::hard_link(first, &path)) {
                report(&path, "cannot create hard link", &e);
            }
        }
    }
    for (path, node) in &plan.others {
        if keep(path) {
            untouched.insert(path.clone());
            continue;
        }
        if let Err(e) = remove_any(path).and_then(|_| create_special(path, node)) {
            report(path, "cannot create", &e);
        }
    }
    let is_root = nix::unistd::geteuid().is_root();
    for (f, _) in plan
        .files
        .iter()
        .zip(left_alone)
        .filter(|(f, alone)| f.link_to.is_none() && !**alone)
    {
        let path = plan.file_path(f);
        if let Err(e) = apply(&path, &f.node, is_root) {
            report(&path, "cannot set metadata", &e);
        }
    }
    for (path, node) in plan.others.iter().filter(|(p, _)| !untouched.contains(p)) {
        if let Err(e) = apply(path, node, is_root) {
            report(path, "cannot set metadata", &e);
        }
    }
    for (path, node) in plan.dirs.iter().rev() {
        if let Err(e) = apply(path, node, is_root) {
            report(path, "cannot set metadata", &e);
        }
    }
}

fn create_special(path: &Path, node: &Node) -> std::io::Result<()> {
    let mode = Mode::from_bits_truncate(node.mode as libc::mode_t);
    let (kind, rdev) = match &node.kind {
        NodeKind::Symlink { target } => {
            return std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
        }
        NodeKind::Fifo => return nix::unistd::mkfifo(path, mode).map_err(std::io::Error::from),
        NodeKind::BlockDevice { rdev } => (SFlag::S_IFBLK, *rdev),
        NodeKind::CharDevice { rdev } => (SFlag::S_IFCHR, *rdev),
        // A socket cannot be re-created meaningfully; restic skips them too.
        NodeKind::Socket => return Ok(()),
        NodeKind::File { .. } | NodeKind::Dir { .. } => return Ok(()),
    };
    nix::sys::stat::mknod(path, kind, mode, rdev as libc::dev_t).map_err(std::io::Error::from)
}

fn apply(path: &Path, node: &Node, is_root: bool) -> std::io::Result<()> {
    if matches!(node.kind, NodeKind::Socket) {
        return Ok(());
    }
    let symlink = matches!(node.kind, NodeKind::Symlink { .. });
    if is_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    for x in &node.xattrs {
        // Best effort: the target file system may not support them.
        let _ = xattr::set(path, OsStr::from_bytes(&x.name), &x.value);
    }
    if !symlink {
        // after chown: chown clears setuid/setgid bits
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode))?;
    }
    let ts = |ns: i64| TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts(node.mtime_ns),
        &ts(node.mtime_ns),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}
