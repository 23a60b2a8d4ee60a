//! What `lstat` says of a file-system entry, in one type whether it came
//! from a path, an open file, or a name relative to an open directory.
//!
//! The backup's walk stats entries with `fstatat` on the descriptor of the
//! directory it listed, so what it stats is what it listed even if a
//! directory on the way is renamed or replaced by a symlink meanwhile (it
//! opens directories without following one). std's `Metadata` cannot be
//! built from that, so the walk carries this instead. (It is not faster:
//! on an unchanged tree of 400k small files the kernel's time goes to
//! finding each entry's own name in the dentry cache, not to the path.)

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The type of an entry, as the mode bits give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
    /// A type this system does not name; such entries are skipped.
    Other,
}

impl EntryType {
    /// The type `st_mode`'s type bits name.
    fn of_mode(mode: u32) -> EntryType {
        match mode & libc::S_IFMT {
            libc::S_IFREG => EntryType::File,
            libc::S_IFDIR => EntryType::Dir,
            libc::S_IFLNK => EntryType::Symlink,
            libc::S_IFBLK => EntryType::BlockDevice,
            libc::S_IFCHR => EntryType::CharDevice,
            libc::S_IFIFO => EntryType::Fifo,
            libc::S_IFSOCK => EntryType::Socket,
            _ => EntryType::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: EntryType,
    /// Permission bits with setuid/setgid/sticky (the low 12 bits of st_mode).
    pub permissions: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// The device a block or character device entry stands for.
    pub rdev: u64,
}

/// Nanoseconds since the epoch, saturating far beyond any real timestamp.
fn ns(secs: i64, nanos: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

impl Stat {
    /// The entry `name` of the directory open as `dir`, not following a
    /// symlink.
    pub fn at(dir: impl AsFd, name: &[u8]) -> std::io::Result<Stat> {
        let name = std::ffi::OsStr::from_bytes(name);
        let st = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
        // the casts only widen, or reinterpret a size the kernel never
        // reports negative; their types differ between architectures
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok(Stat {
            kind: EntryType::of_mode(u32::from(st.st_mode)),
            permissions: u32::from(st.st_mode) & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            inode: st.st_ino as u64,
            device: st.st_dev as u64,
            links: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        })
    }

    pub fn is_file(&self) -> bool {
        self.kind == EntryType::File
    }

    pub fn is_dir(&self) -> bool {
        self.kind == EntryType::Dir
    }
}

impl From<&std::fs::Metadata> for Stat {
    fn from(meta: &std::fs::Metadata) -> Stat {
        Stat {
            kind: EntryType::of_mode(meta.mode()),
            permissions: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
            links: meta.nlink(),
            rdev: meta.rdev(),
        }
    }
}

/// `lstat` of a path.
pub fn lstat(path: &std::path::Path) -> std::io::Result<Stat> {
    std::fs::symlink_metadata(path).map(|m| Stat::from(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative to a directory or by path, the same entry reads the same.
    #[test]
    fn at_a_directory_equals_by_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"12345").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        for (name, kind) in [
            ("f", EntryType::File),
            ("l", EntryType::Symlink),
            ("d", EntryType::Dir),
            ("p", EntryType::Fifo),
        ] {
            let at = Stat::at(&fd, name.as_bytes()).unwrap();
            assert_eq!(at, lstat(&dir.path().join(name)).unwrap(), "{name}");
            assert_eq!(at.kind, kind, "{name}");
        }
        let f = Stat::at(&fd, b"f").unwrap();
        assert_eq!(f.size, 5);
        assert!(f.is_file() && !f.is_dir());
        let err = Stat::at(&fd, std::ffi::OsStr::new("missing").as_bytes()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
