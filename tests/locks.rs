//! Locks: a backup (shared) blocks prune and forget (exclusive) but not
//! other backups; waiting works; a killed holder's lock is stale; a holder
//! whose lock was removed commits nothing.

mod common;

use common::*;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A `cairn backup --stdin` that holds its shared lock until its stdin closes.
fn holding_backup(env: &Env) -> Child {
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
    // wait until its lock is on storage (the write above may return before
    // cairn has even opened the repository: stdin is a 1 MiB pipe)
    let locks = env.repo.join("locks");
    let start = Instant::now();
    while !locks.is_dir() || walk_files(&locks).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no lock appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn finish(mut child: Child) -> std::process::Output {
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn run(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let out = env.cairn().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_running_backup_blocks_prune_and_forget_but_not_other_backups() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 2, 200_000, 1);
    env.ok(&["backup", src.to_str().unwrap()]);
    let holder = holding_backup(&env);
    let pid = holder.id();

    for args in [
        &["prune"][..],
        &["forget", "--keep-last", "1"],
        &["repair", "index"],
    ] {
        let (code, err) = run(&env, args);
        assert_eq!(code, Some(11), "{args:?}: {err}");
        assert!(
            err.contains("shared lock")
                && err.contains("`backup`")
                && err.contains(&format!("pid {pid}")),
            "{args:?}: {err}"
        );
    }
    // shared locks coexist
    env.ok(&["backup", src.to_str().unwrap()]);
    assert!(env.check_clean(&[]).is_empty());

    // a prune that may wait goes ahead once the backup is done
    let waiting = std::thread::spawn({
        let mut cmd = env.cairn();
        move || cmd.args(["prune", "--retry-lock", "60s"]).output().unwrap()
    });
    std::thread::sleep(Duration::from_millis(800));
    let out = finish(holder);
    common::assert_success(&out);
    let pruned = waiting.join().unwrap();
    common::assert_success(&pruned);
    assert!(String::from_utf8_lossy(&pruned.stderr).contains("waiting up to 60 s"));

    assert_eq!(env.snapshot_ids().len(), 3);
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
    assert!(
        walk_files(&env.repo.join("locks")).is_empty(),
        "locks left behind"
    );
}

#[test]
fn a_killed_holders_lock_is_stale_and_unlock_removes_it() {
    let env = Env::new();
    env.init();
    let mut holder = holding_backup(&env);
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    assert_eq!(walk_files(&env.repo.join("locks")).len(), 1);
    // the holder's process is gone: its lock does not block
    env.ok(&["prune"]);
    let out = env.ok(&["unlock"]);
    assert!(out.contains("removed 1 locks"), "{out}");
    assert!(walk_files(&env.repo.join("locks")).is_empty());
    assert!(env.check_clean(&[]).is_empty());
}

#[test]
fn a_holder_whose_lock_was_removed_commits_nothing() {
    let env = Env::new();
    env.init();
    let holder = holding_backup(&env);
    // a live lock is not stale: plain unlock leaves it
    assert!(env.ok(&["unlock"]).contains("removed 0 locks"));
    env.ok(&["unlock", "--remove-all"]);
    let out = finish(holder);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was removed"), "{err}");
    assert!(
        env.snapshot_ids().is_empty(),
        "a snapshot was written without a lock"
    );
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
    let mut backup_a = paced(&a);
    let mut backup_b = paced(&b);
    // prune comes once both backups hold their locks (a fixed sleep lost
    // that race on a busy machine, and a backup without --retry-lock then
    // rightly refused to start)
    let locks = env.repo.join("locks");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&locks).map_or(0, |d| d.count()) < 2 {
        let ended =
            backup_a.try_wait().unwrap().is_some() || backup_b.try_wait().unwrap().is_some();
        assert!(!ended, "a backup ended before both held their locks");
        assert!(
            std::time::Instant::now() < deadline,
            "the backups took no locks"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let prune = spawn(&["prune", "--retry-lock", "2m"]);
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
    assert!(env.check_clean(&["--read-data"]).is_empty());
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    for s in snaps.as_array().unwrap() {
        let path = std::path::PathBuf::from(s["paths"][0].as_str().unwrap());
        env.assert_restores(s["id"].as_str().unwrap(), &path, &path);
    }
    // the forgotten 6 MB are gone, the 36 MB of a and b are not
    let size = repo_size(&env.repo);
    assert!(
        (36_000_000..40_000_000).contains(&size),
        "repository is {size} bytes"
    );
}
