//! Restore into a target that already holds files: `--overwrite` decides
//! what happens to them, `--delete` removes what the snapshot lacks, and
//! nothing outside the target is ever touched.

mod common;

use common::*;
use std::path::Path;

struct Case {
    env: Env,
    data: std::path::PathBuf,
    target: std::path::PathBuf,
}

/// A snapshot of `data` (old.txt with mtime 2020, new.txt with mtime
/// 2024), restored once into `target`, which then gets local changes.
fn case() -> Case {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("old.txt"), b"snapshot old").unwrap();
    std::fs::write(data.join("sub/new.txt"), b"snapshot new").unwrap();
    set_mtime(&data.join("old.txt"), 1_580_000_000, 0);
    set_mtime(&data.join("sub/new.txt"), 1_710_000_000, 0);
    env.ok(&["backup", data.to_str().unwrap()]);
    let target = env.path("target");
    Case { env, data, target }
}

fn restore(c: &Case, extra: &[&str]) -> String {
    let sub = format!("latest:{}", c.data.display());
    let mut args = vec![
        "restore",
        sub.as_str(),
        "--target",
        c.target.to_str().unwrap(),
    ];
    args.extend(extra);
    c.env.ok(&args)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// The target after a first restore, with local edits: old.txt edited and
/// newer than the snapshot's, new.txt edited and older, plus an extra file
/// and an extra directory.
fn edited(c: &Case) {
    restore(c, &[]);
    std::fs::write(c.target.join("old.txt"), b"local edit").unwrap();
    set_mtime(&c.target.join("old.txt"), 1_700_000_000, 0);
    std::fs::write(c.target.join("sub/new.txt"), b"local edit").unwrap();
    set_mtime(&c.target.join("sub/new.txt"), 1_600_000_000, 0);
    std::fs::write(c.target.join("extra.txt"), b"mine").unwrap();
    std::fs::create_dir_all(c.target.join("extra-dir/deep")).unwrap();
    std::fs::write(c.target.join("extra-dir/deep/f"), b"mine").unwrap();
}

#[test]
fn overwrite_modes_decide_what_happens_to_existing_files() {
    let c = case();
    edited(&c);
    restore(&c, &["--overwrite", "never"]);
    assert_eq!(read(&c.target.join("old.txt")), "local edit");
    assert_eq!(read(&c.target.join("sub/new.txt")), "local edit");

    restore(&c, &["--overwrite", "if-newer"]);
    assert_eq!(
        read(&c.target.join("old.txt")),
        "local edit",
        "the local file is newer"
    );
    assert_eq!(
        read(&c.target.join("sub/new.txt")),
        "snapshot new",
        "the snapshot's is newer"
    );

    restore(&c, &["--overwrite", "if-changed"]);
    assert_eq!(read(&c.target.join("old.txt")), "snapshot old");
    assert_eq!(
        read(&c.target.join("extra.txt")),
        "mine",
        "without --delete extras stay"
    );

    // always: even a file whose content matches is written again
    let before = std::fs::metadata(c.target.join("old.txt")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = restore(&c, &["--overwrite", "always"]);
    assert!(out.contains("(0 skipped)"), "{out}");
    let after = std::fs::metadata(c.target.join("old.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        before.ctime_nsec() + before.ctime() * 1_000_000_000,
        after.ctime_nsec() + after.ctime() * 1_000_000_000
    );
    assert_eq!(read(&c.target.join("old.txt")), "snapshot old");

    let out = c
        .env
        .cairn()
        .args([
            "restore",
            "latest",
            "--target",
            "/tmp/x",
            "--overwrite",
            "sometimes",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("if-newer"));
}

#[test]
fn delete_removes_what_the_snapshot_lacks_and_nothing_outside() {
    let c = case();
    edited(&c);
    // a link to something outside the target: removed as a link only
    let outside = c.env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, c.target.join("sub/link-out")).unwrap();
    let out = restore(&c, &["--delete"]);
    assert!(out.contains("deleted 3 entries"), "{out}");
    assert!(!c.target.join("extra.txt").exists());
    assert!(!c.target.join("extra-dir").exists());
    assert!(std::fs::symlink_metadata(c.target.join("sub/link-out")).is_err());
    assert_eq!(read(&outside.join("precious")), "keep");
    assert_same_tree(&c.data, &c.target);
    // with filters it is refused, and nothing changes
    std::fs::write(c.target.join("extra.txt"), b"mine").unwrap();
    let sub = format!("latest:{}", c.data.display());
    let out = c
        .env
        .cairn()
        .args([
            "restore",
            &sub,
            "--target",
            c.target.to_str().unwrap(),
            "--delete",
            "--include",
            "/old.txt",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(c.target.join("extra.txt").exists());
    // restoring one file never deletes its neighbours
    let one = format!("latest:{}/old.txt", c.data.display());
    c.env.ok(&[
        "restore",
        &one,
        "--target",
        c.target.to_str().unwrap(),
        "--delete",
    ]);
    assert!(c.target.join("extra.txt").exists());
}

/// A root restore of someone else's snapshot can leave out what grants
/// privileges: `--no-owner` (and with it setuid/setgid), `--no-special`,
/// `--no-xattrs`, `--xattr-include`.
#[test]
fn privileged_metadata_can_be_left_out() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    if !is_root() {
        eprintln!("skipped: restoring ownership and device nodes needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let prog = src.join("prog");
    std::fs::write(&prog, b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&prog, Some(4321), Some(4321)).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o6755)).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let tagged = src.join("tagged");
    std::fs::write(&tagged, b"x").unwrap();
    let xattrs_work = xattr::set(&tagged, "user.keep", b"1").is_ok()
        && xattr::set(&tagged, "user.drop", b"2").is_ok();
    env.ok(&["backup", src.to_str().unwrap()]);
    let rel = src.strip_prefix("/").unwrap();
    let restore = |name: &str, args: &[&str]| {
        let target = env.path(name);
        let mut all = vec!["latest"];
        all.extend_from_slice(args);
        let (code, err) = env.restore_into(&target, &all);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        target.join(rel)
    };
    let xattr_names = |p: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = xattr::list(p)
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with("user."))
            .collect();
        v.sort();
        v
    };

    let full = restore("full", &[]);
    let m = std::fs::metadata(full.join("prog")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4321, 4321, 0o6755));
    assert!(std::fs::symlink_metadata(full.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    if xattrs_work {
        assert_eq!(
            xattr_names(&full.join("tagged")),
            ["user.drop", "user.keep"]
        );
    }

    let plain = restore("plain", &["--no-owner", "--no-special", "--no-xattrs"]);
    let m = std::fs::metadata(plain.join("prog")).unwrap();
    // owned by whoever restored, so neither setuid nor setgid survives
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o755));
    assert!(
        !plain.join("fifo").exists(),
        "--no-special created the fifo"
    );
    assert_eq!(std::fs::read(plain.join("tagged")).unwrap(), b"x");
    if xattrs_work {
        assert!(xattr_names(&plain.join("tagged")).is_empty());
        let some = restore("some", &["--xattr-include", "user.k*"]);
        assert_eq!(xattr_names(&some.join("tagged")), ["user.keep"]);
    } else {
        eprintln!("xattr part skipped: {} takes no user xattrs", src.display());
    }
    let out = env
        .cairn()
        .args([
            "restore",
            "latest",
            "--target",
            "/nonexistent-x",
            "--no-xattrs",
            "--xattr-include",
            "user.*",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses the pair");
}

/// An unchanged file keeps its extended attributes from the parent
/// snapshot without them being read again; one whose attributes changed
/// (which changes its ctime) has them read anew.
#[test]
fn extended_attributes_follow_the_file_across_incremental_backups() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let tagged = src.join("tagged");
    let plain = src.join("plain");
    std::fs::write(&tagged, b"x").unwrap();
    std::fs::write(&plain, b"y").unwrap();
    if xattr::set(&tagged, "user.a", b"1").is_err() {
        eprintln!("skipped: this file system has no user extended attributes");
        return;
    }
    let rel = src.strip_prefix("/").unwrap();
    let attrs = |target: &str| -> Vec<(String, Vec<u8>)> {
        let target = env.path(target);
        let (code, err) = env.restore_into(&target, &["latest"]);
        assert_eq!(code, Some(0), "{err}");
        let file = target.join(rel).join("tagged");
        let mut v: Vec<(String, Vec<u8>)> = xattr::list(&file)
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with("user."))
            .map(|n| {
                let value = xattr::get(&file, &n).unwrap().unwrap_or_default();
                (n, value)
            })
            .collect();
        v.sort();
        v
    };
    let one = vec![("user.a".to_string(), b"1".to_vec())];
    env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(attrs("first"), one);
    env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(
        attrs("unchanged"),
        one,
        "an unchanged file lost its attributes"
    );
    xattr::set(&tagged, "user.a", b"2").unwrap();
    xattr::set(&tagged, "user.b", b"3").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(
        attrs("changed"),
        [
            ("user.a".to_string(), b"2".to_vec()),
            ("user.b".to_string(), b"3".to_vec())
        ],
        "changed attributes were taken from the parent"
    );
}
