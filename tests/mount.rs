//! `cairn mount` against the kernel's FUSE: the real binary serves the
//! repository, and the test reads it with plain file-system calls. Without
//! /dev/fuse (or as a user who may not mount) the test says so and passes,
//! unless CAIRN_TEST_REQUIRE_FUSE=1 (set by scripts/test.sh).

mod common;

use common::*;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fuse_available() -> bool {
    let usable = Path::new("/dev/fuse").exists()
        && (is_root()
            || [
                "/usr/bin/fusermount3",
                "/bin/fusermount3",
                "/usr/bin/fusermount",
            ]
            .iter()
            .any(|p| Path::new(p).exists()));
    if !usable {
        assert!(
            std::env::var("CAIRN_TEST_REQUIRE_FUSE").as_deref() != Ok("1"),
            "CAIRN_TEST_REQUIRE_FUSE=1 but FUSE cannot be used here"
        );
        eprintln!("skipped: no FUSE here (/dev/fuse, root or fusermount3)");
    }
    usable
}

fn is_mounted(path: &Path) -> bool {
    let want = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == want)
}

/// A running `cairn mount`, stopped (SIGKILL) if the test fails first.
struct Mounted {
    child: std::process::Child,
    at: PathBuf,
}

impl Mounted {
    fn start(env: &Env, at: &Path, args: &[&str]) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let child = env
            .process()
            .arg("mount")
            .arg(at)
            .args(args)
            .stderr(std::fs::File::create(env.path("mount.log")).unwrap())
            .spawn()
            .unwrap();
        let m = Mounted {
            child,
            at: at.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !at.join("snapshots").exists() {
            assert!(
                Instant::now() < deadline,
                "the mount did not come up: {}",
                std::fs::read_to_string(env.path("mount.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// SIGTERM, as a service manager stops it; the exit code.
    fn stop(mut self) -> Option<i32> {
        signal(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let code = self.child.wait().unwrap().code();
        std::mem::forget(self);
        code
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

/// Every file's bytes and every link's target under `expected` are what
/// the mount shows under `actual`, and the directories list the same names.
fn assert_same_content(expected: &Path, actual: &Path) {
    let names = |dir: &Path| {
        let mut n: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(expected), names(actual), "{}", actual.display());
    for entry in std::fs::read_dir(expected).unwrap() {
        let entry = entry.unwrap();
        let (e, a) = (entry.path(), actual.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&e).unwrap();
        let got = std::fs::symlink_metadata(&a).unwrap();
        assert_eq!(meta.file_type(), got.file_type(), "{}", a.display());
        if meta.is_dir() {
            assert_same_content(&e, &a);
        } else if meta.is_file() {
            assert_eq!(meta.len(), got.len(), "{}", a.display());
            assert!(
                std::fs::read(&e).unwrap() == std::fs::read(&a).unwrap(),
                "{}",
                a.display()
            );
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                got.permissions().mode() & 0o7777
            );
        } else if meta.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&e).unwrap(),
                std::fs::read_link(&a).unwrap()
            );
        }
    }
}

#[test]
fn a_mounted_repository_reads_back_every_byte_and_unmounts_on_sigterm() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    awkward_tree(&src);
    // large enough for many blobs: a read from its middle fetches only those
    let big = noise(24 << 20, 11);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let first = env.path("first");
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&first)
        .status()
        .unwrap();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--tag",
        "before",
        "--host",
        "alpha",
    ]);
    std::fs::write(src.join("plain.txt"), b"second version\n").unwrap();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--tag",
        "after",
        "--host",
        "beta",
    ]);

    let at = env.path("mnt");
    let m = Mounted::start(&env, &at, &[]);
    let inner = src.strip_prefix("/").unwrap();
    let snapshots: Vec<PathBuf> = {
        let mut s: Vec<PathBuf> = std::fs::read_dir(at.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != "latest")
            .collect();
        s.sort();
        s
    };
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    assert_same_content(&first, &snapshots[0].join(inner));
    assert_same_content(&src, &at.join("snapshots/latest").join(inner));
    // by host and by tag, each with its own latest
    assert_eq!(
        std::fs::read(at.join("hosts/alpha/latest").join(inner).join("plain.txt")).unwrap(),
        std::fs::read(first.join("plain.txt")).unwrap()
    );
    assert_eq!(
        std::fs::read(at.join("tags/after/latest").join(inner).join("plain.txt")).unwrap(),
        b"second version\n"
    );

    // from the middle, at an odd offset, across blob boundaries
    let mut f =
        std::fs::File::open(at.join("snapshots/latest").join(inner).join("big.bin")).unwrap();
    let mut buf = vec![0u8; 3 << 20];
    let at_offset = (13 << 20) + 12_345;
    f.seek(SeekFrom::Start(at_offset as u64)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf == big[at_offset..at_offset + buf.len()]);
    drop(f);

    // read-only
    assert!(std::fs::write(at.join("snapshots/latest").join(inner).join("new"), b"x").is_err());
    assert!(
        std::fs::remove_file(at.join("snapshots/latest").join(inner).join("plain.txt")).is_err()
    );

    assert!(is_mounted(&at));
    assert_eq!(
        m.stop(),
        Some(0),
        "{}",
        std::fs::read_to_string(env.path("mount.log")).unwrap()
    );
    assert!(!is_mounted(&at), "still mounted after SIGTERM");
    assert_eq!(
        std::fs::read_dir(&at).unwrap().count(),
        0,
        "the mount point is left empty"
    );
}

#[test]
fn mounting_on_a_missing_directory_says_so() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    env.init();
    let out = env
        .cairn()
        .arg("mount")
        .arg(env.path("does-not-exist"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot mount at"), "{err}");
}
