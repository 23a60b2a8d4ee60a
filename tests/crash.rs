//! kill -9 at many points of a backup and of a prune: afterwards `check`
//! passes, every earlier snapshot restores, the next run succeeds (re-using
//! what was indexed) and prune removes the leftovers.
//!
//! Named points (`CAIRN_CRASH_AT=NAME:N`, see src/crash_point.rs) make the
//! process SIGKILL itself at an exact step; timed kills hit whatever runs at
//! that moment.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

struct Scenario {
    env: Env,
    /// Backed up before any crash; must always restore.
    early: PathBuf,
    early_id: String,
    /// ~40 MB in 8 files: several packs, so there is a "during".
    big: PathBuf,
}

fn scenario() -> Scenario {
    let env = Env::new();
    env.init();
    let early = env.path("early");
    awkward_tree(&early);
    env.ok(&["backup", early.to_str().unwrap()]);
    let early_id = env.snapshot_ids().pop().unwrap();
    let big = env.path("big");
    noise_files(&big, 8, 5_000_000, 11);
    Scenario {
        env,
        early,
        early_id,
        big,
    }
}

fn backup_json(env: &Env, dir: &std::path::Path) -> serde_json::Value {
    let out = env.ok(&["backup", "--json", dir.to_str().unwrap()]);
    last_json(&out)
}

/// What must hold after any crash. Returns the bytes the next backup added.
fn recovers(s: &Scenario, what: &str) -> u64 {
    let env = &s.env;
    env.check_clean(&[]);
    env.assert_restores(&s.early_id, &s.early, &s.early);
    let summary = backup_json(env, &s.big);
    let added = summary["data_added"].as_u64().unwrap();
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &s.big, &s.big);
    env.prune_fully(&[]);
    let notes = env.check_clean(&["--read-data"]);
    assert!(notes.is_empty(), "{what}: leftovers after prune: {notes:?}");
    env.assert_restores(&s.early_id, &s.early, &s.early);
    env.assert_restores(&id, &s.big, &s.big);
    added
}

fn crash_backup_at(s: &Scenario, point: &str) -> bool {
    let out = s
        .env
        .process()
        .env("CAIRN_CRASH_AT", point)
        .args(["backup", s.big.to_str().unwrap()])
        .output()
        .unwrap();
    let killed = out.status.signal() == Some(9);
    assert!(
        killed || out.status.success(),
        "{point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    killed
}

#[test]
fn backup_killed_at_each_step_leaves_a_valid_repository() {
    for point in [
        "pack-uploaded:1",
        "pack-uploaded:3",
        "pack-uploaded:4",
        "index-written:1",
        "before-snapshot:1",
    ] {
        let s = scenario();
        assert!(crash_backup_at(&s, point), "{point} was never reached");
        assert_eq!(
            s.env.snapshot_ids().len(),
            1,
            "{point}: a snapshot appeared"
        );
        let added = recovers(&s, point);
        if point.starts_with("index-written") || point.starts_with("before-snapshot") {
            // everything was uploaded and indexed: the next backup re-uses
            // it (and adds only the tree records of changed ancestor dirs)
            assert!(
                added < 100_000,
                "{point}: the next backup uploaded {added} bytes again"
            );
        }
    }
}

#[test]
fn backup_killed_at_random_moments_leaves_a_valid_repository() {
    for delay_ms in [20, 80, 160, 260, 400, 650] {
        let s = scenario();
        let mut child = s
            .env
            .process()
            .args(["backup", s.big.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        recovers(&s, &format!("kill after {delay_ms} ms"));
    }
}

#[test]
fn prune_killed_at_each_step_loses_nothing() {
    for point in [
        "repack-uploaded:1",
        "new-index-written:1",
        "old-index-deleted:1",
        "prune-rechecked-index:1",
        "pack-deleted:1",
        "pack-deleted:3",
    ] {
        let s = scenario();
        s.env.ok(&["backup", s.big.to_str().unwrap()]);
        // replace the second half of four files: whatever the pack
        // boundaries, packs then hold live blobs (first halves) beside dead
        // ones (the old second halves), so prune repacks
        for i in 0..4 {
            let f = s.big.join(format!("f{i}"));
            let mut bytes = std::fs::read(&f).unwrap();
            let half = bytes.len() / 2;
            bytes.truncate(half);
            bytes.extend(noise(5_000_000 - half, 700 + i));
            std::fs::write(&f, bytes).unwrap();
        }
        s.env.ok(&["backup", s.big.to_str().unwrap()]);
        // drop the first backup of big: its half-replaced data becomes garbage
        let ids = s.env.snapshot_ids();
        s.env.ok(&["forget", &ids[1]]);
        // phase one (condemn and repack) runs whole; the crash hits phase
        // two, or phase one when the point is only there
        let deleting = point.starts_with("pack-deleted");
        if deleting {
            s.env
                .ok(&["prune", "--max-unused", "0", "--keep-delete", "0s"]);
        }
        let out = s
            .env
            .process()
            .env("CAIRN_CRASH_AT", point)
            // repack every partly used pack, whatever the pack boundaries
            .args(["prune", "--max-unused", "0", "--keep-delete", "0s"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point} was never reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let added = recovers(&s, point);
        // only the tree records of changed ancestor directories are new
        assert!(
            added < 100_000,
            "{point}: data of the kept snapshot was lost ({added} bytes re-added)"
        );
    }
}
