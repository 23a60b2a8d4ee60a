//! Ctrl-C during a backup: exit 130, no snapshot, and every pack already
//! uploaded is indexed, so the next run re-uses it.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn ctrl_c_stops_cleanly_and_indexes_what_was_uploaded() {
    let env = Env::new();
    env.init();
    let big = env.path("big");
    noise_files(&big, 12, 5_000_000, 4);
    let child = env
        .process()
        .args(["backup", big.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // let it upload some packs first
    let data = env.repo.join("data");
    let start = std::time::Instant::now();
    while packs_so_far(&data) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no pack was uploaded"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(env.snapshot_ids().is_empty());
    // every uploaded pack is in an index: no leftovers for prune
    let notes = env.check_clean(&[]);
    assert!(notes.is_empty(), "unindexed packs after Ctrl-C: {notes:?}");
    let packs_before = walk_files(&data).len();
    assert!(packs_before >= 2);

    let out = env.ok(&["backup", "--json", big.to_str().unwrap()]);
    let summary = last_json(&out);
    let added = summary["data_added"].as_u64().unwrap();
    assert!(
        added < 60_000_000 - 15_000_000,
        "the next backup re-used nothing: added {added} bytes"
    );
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &big, &big);
}

/// Packs on disk now, while a backup may be creating directories.
fn packs_so_far(data: &std::path::Path) -> usize {
    std::fs::read_dir(data)
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum()
}

#[test]
fn an_interrupted_restore_leaves_nothing_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    env.init();
    let src = env.path("home");
    let ssh = src.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::write(ssh.join("id"), b"secret key").unwrap();
    std::fs::set_permissions(ssh.join("id"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
    // enough data for several packs, so the restore is killed midway
    noise_files(&src.join("public"), 6, 5_000_000, 9);
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let id = env.snapshot_ids().pop().unwrap();

    for point in ["restore-pack-written:1", "restore-pack-written:2"] {
        // a new target: the restore makes it, private like all it makes
        let target = env.path(&format!("out-{point}"));
        let out = env
            .process()
            .env("CAIRN_CRASH_AT", point)
            .args(["restore", &id, "--target", target.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            owner_only_entries(&target) > 4,
            "{point}: the restore wrote nothing before it was killed"
        );
        // run again to the end: every restored entry gets its real mode
        let (code, err) = env.restore_into(&target, &[&id]);
        assert_eq!(code, Some(0), "{err}");
        assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    }
}

/// Ctrl-C in the middle of a restore (after the first pack): what was
/// written stays owner-only, as after `kill -9`.
#[test]
fn a_restore_stopped_by_ctrl_c_leaves_nothing_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    let src = env.path("home");
    std::fs::create_dir_all(src.join(".ssh")).unwrap();
    std::fs::write(src.join(".ssh/id"), b"secret key").unwrap();
    noise_files(&src.join("public"), 6, 5_000_000, 3);
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("out");
    let (child, pid) = stopped_at(
        env.process(),
        "restore-pack-written:1",
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    signal(pid, nix::sys::signal::Signal::SIGINT);
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the restore ran to its end");
    assert!(
        owner_only_entries(&target) > 4,
        "the restore wrote nothing before Ctrl-C"
    );
}

/// Asserts that nothing under `dir` (itself included) is open to group or
/// others; how many entries there are.
fn owner_only_entries(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is open to others ({mode:o})",
            p.display()
        );
        seen += 1;
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    seen
}
