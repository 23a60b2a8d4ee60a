//! Locks keep maintenance commands (prune, forget, repair index) apart and
//! nothing else: a running backup takes none and blocks nothing; waiting
//! works; a killed holder's lock is stale and `unlock` removes it.

mod common;

use common::*;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A `cairn backup --stdin` that runs until its stdin closes.
fn running_backup(env: &Env) -> Child {
    let mut child = env
        .process()
        .args(["backup", "--stdin", "--stdin-filename", "held.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&noise(100_000, 5))
        .unwrap();
    child
}

fn finish(mut child: Child) -> std::process::Output {
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_running_backup_takes_no_lock_and_blocks_no_maintenance() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 2, 200_000, 1);
    env.ok(&["backup", src.to_str().unwrap()]);
    let holder = running_backup(&env);
    std::thread::sleep(Duration::from_millis(800));
    assert!(no_locks(&env), "a backup took a lock");
    for args in [
        &["prune"][..],
        &["forget", "--keep-last", "2"],
        &["repair", "index"],
    ] {
        env.ok(args);
    }
    // backups beside backups, too
    env.ok(&["backup", src.to_str().unwrap()]);
    let out = finish(holder);
    common::assert_success(&out);
    assert!(env.check_clean(&[]).iter().all(|n| !n.contains("missing")));
    let dumped = env
        .cairn()
        .args(["dump", "latest", "/held.bin", "--path", "/held.bin"])
        .output()
        .unwrap();
    assert!(dumped.status.success());
    assert!(
        dumped.stdout == noise(100_000, 5),
        "the held stream did not restore"
    );
    assert!(no_locks(&env), "locks left behind");
}

fn no_locks(env: &Env) -> bool {
    let dir = env.repo.join("locks");
    !dir.exists() || walk_files(&dir).is_empty()
}

#[test]
fn a_killed_holders_lock_is_stale_and_unlock_removes_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 2, 200_000, 2);
    env.ok(&["backup", src.to_str().unwrap()]);
    // a prune killed with its lock held (right after writing its new index)
    let out = env
        .process()
        .env("CAIRN_CRASH_AT", "new-index-written:1")
        .args(["prune"])
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9)
    );
    assert_eq!(walk_files(&env.repo.join("locks")).len(), 1);
    // the holder's process is gone: its lock does not block
    env.ok(&["prune"]);
    let out = env.ok(&["unlock"]);
    assert!(out.contains("removed 1 locks"), "{out}");
    assert!(walk_files(&env.repo.join("locks")).is_empty());
    assert!(env.check_clean(&[]).is_empty());
}

#[test]
fn two_backups_at_once_and_a_prune_meanwhile_lose_nothing() {
    let env = Env::new();
    env.init();
    let (a, b, gone) = (env.path("a"), env.path("b"), env.path("gone"));
    noise_files(&a, 6, 3_000_000, 1);
    noise_files(&b, 6, 3_000_000, 2);
    noise_files(&gone, 2, 3_000_000, 3);
    // garbage for the prune to collect
    env.ok(&["backup", gone.to_str().unwrap()]);
    let gone_id = env.snapshot_ids().pop().unwrap();
    env.ok(&["forget", &gone_id]);

    let spawn = |args: &[&str]| {
        env.process()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // paced to ~1 s each, so they surely overlap each other and the prune
    let paced = |dir: &std::path::Path| {
        spawn(&["--limit-upload", "20000", "backup", dir.to_str().unwrap()])
    };
    let backup_a = paced(&a);
    let backup_b = paced(&b);
    std::thread::sleep(Duration::from_millis(300));
    // no --retry-lock: nothing holds a lock
    let prune = spawn(&["prune"]);
    for (what, child) in [
        ("backup a", backup_a),
        ("backup b", backup_b),
        ("prune", prune),
    ] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(env
        .check_clean(&["--read-data"])
        .iter()
        .all(|n| !n.contains("missing")));
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    for s in snaps.as_array().unwrap() {
        let path = std::path::PathBuf::from(s["paths"][0].as_str().unwrap());
        env.assert_restores(s["id"].as_str().unwrap(), &path, &path);
    }
    // the forgotten 6 MB are condemned with a day's grace, not yet deleted
    // (a later prune's shorter grace does not cut it short); a and b's 36 MB
    // are live
    env.prune_fully(&[]);
    let notes = env.check_clean(&["--read-data"]);
    assert!(
        notes.len() == 1 && notes[0].contains("condemned"),
        "{notes:?}"
    );
    let size = repo_size(&env.repo);
    assert!(
        (42_000_000..47_000_000).contains(&size),
        "repository is {size} bytes"
    );
    for s in snaps.as_array().unwrap() {
        let path = std::path::PathBuf::from(s["paths"][0].as_str().unwrap());
        env.assert_restores(s["id"].as_str().unwrap(), &path, &path);
    }
}
