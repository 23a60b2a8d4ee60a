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
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
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
