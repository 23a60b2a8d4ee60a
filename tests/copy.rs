//! `cairn copy` and `init --from-repo --copy-chunker-params` through the
//! real binary. The test's own repository is on whichever backend the
//! suite runs (`scripts/test.sh` runs this file again on S3 and on Swift);
//! the other side is a local directory, so both directions cross backends.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// `cairn copy` from `from` (a local path or the env's URL) into the env's
/// repository, or into `into` when given.
fn copy(
    env: &Env,
    from: &std::ffi::OsStr,
    into: Option<&Path>,
    args: &[&str],
) -> std::process::Output {
    let mut c = env.cairn();
    if let Some(dir) = into {
        c.env("CAIRN_REPOSITORY", dir);
    }
    c.env("CAIRN_FROM_PASSWORD", PASSWORD)
        .arg("copy")
        .arg("--from-repo")
        .arg(from)
        .args(args)
        .arg("--json")
        .output()
        .unwrap()
}

fn summary(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    let text = String::from_utf8_lossy(&out.stdout);
    last_json(&text)
}

/// `cairn ARGS` on the local repository `dir` (same password and cache).
fn local(env: &Env, dir: &Path, args: &[&str]) -> String {
    let out = env
        .cairn()
        .env("CAIRN_REPOSITORY", dir)
        .args(args)
        .output()
        .unwrap();
    assert_success(&out);
    String::from_utf8(out.stdout).unwrap()
}

fn snapshot_list(json: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Two snapshots of the awkward tree, the second after changes.
fn two_snapshots(env: &Env, repo: Option<&Path>) -> (PathBuf, PathBuf) {
    let src = env.path("src");
    let first = env.path("first");
    awkward_tree(&src);
    std::fs::write(src.join("big.bin"), noise(3 << 20, 7)).unwrap();
    let run = |args: &[&str]| match repo {
        Some(dir) => local(env, dir, args),
        None => env.ok(args),
    };
    run(&["backup", src.to_str().unwrap(), "--tag", "one"]);
    // keep what the first snapshot holds, for comparing its restore
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&first)
        .status()
        .unwrap();
    std::fs::write(src.join("plain.txt"), b"changed after the first backup\n").unwrap();
    std::fs::write(src.join("added.bin"), noise(1 << 20, 8)).unwrap();
    run(&["backup", src.to_str().unwrap(), "--tag", "two"]);
    (src, first)
}

fn restore_and_compare(env: &Env, repo: &Path, snapshot: &str, source: &Path, expected: &Path) {
    let target = tempfile::tempdir_in(env.dir.path()).unwrap();
    local(
        env,
        repo,
        &[
            "restore",
            snapshot,
            "--target",
            target.path().to_str().unwrap(),
        ],
    );
    assert_same_tree(
        expected,
        &target.path().join(source.strip_prefix("/").unwrap()),
    );
}

#[test]
fn copies_restore_byte_for_byte_and_a_second_copy_transfers_nothing() {
    let env = Env::new();
    env.init();
    let (src, first) = two_snapshots(&env, None);
    let dest = env.path("dest");
    local(&env, &dest, &["init"]);

    let s = summary(&copy(&env, &env.url(), Some(&dest), &[]));
    assert_eq!(s["copied"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["ids_shared"], false);
    assert!(s["packs_written"].as_u64().unwrap() > 0);

    // the copies keep what the originals say of themselves
    let originals = snapshot_list(&env.ok(&["snapshots", "--json"]));
    let copies = snapshot_list(&local(&env, &dest, &["snapshots", "--json"]));
    assert_eq!(copies.len(), 2);
    for (o, c) in originals.iter().zip(&copies) {
        for field in ["time", "hostname", "username", "paths", "tags"] {
            assert_eq!(o[field], c[field], "{field}");
        }
        // (another id key names the trees differently)
        assert_ne!(o["tree"], c["tree"]);
    }
    restore_and_compare(&env, &dest, copies[0]["id"].as_str().unwrap(), &src, &first);
    restore_and_compare(&env, &dest, copies[1]["id"].as_str().unwrap(), &src, &src);
    let checked = local(&env, &dest, &["check", "--read-data"]);
    assert!(checked.contains("no errors"), "{checked}");

    // again: nothing new to send, nothing written
    let before = std::fs::read_dir(dest.join("data")).unwrap().count();
    let again = summary(&copy(&env, &env.url(), Some(&dest), &[]));
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["already_present"].as_array().unwrap().len(), 2);
    assert_eq!(again["blobs_copied"], 0);
    assert_eq!(
        std::fs::read_dir(dest.join("data")).unwrap().count(),
        before
    );

    // a third snapshot: only what it adds travels
    std::fs::write(src.join("third.bin"), noise(1 << 20, 9)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let third = summary(&copy(&env, &env.url(), Some(&dest), &["latest"]));
    assert_eq!(third["copied"].as_array().unwrap().len(), 1, "{third}");
    let copied = third["bytes_copied"].as_u64().unwrap();
    assert!(
        copied >= 1 << 20 && copied < (1 << 20) + (256 << 10),
        "the new file and its trees only, not {copied} bytes"
    );
    // and only the new file is read: the destination's cache remembers
    // which blob each source blob became
    let read = third["bytes_read"].as_u64().unwrap();
    assert!(
        (1 << 20..(1 << 20) + (64 << 10)).contains(&read),
        "read {read} bytes from the source, not just the new file"
    );
}

#[test]
fn a_destination_with_the_sources_chunker_shares_its_ids_and_deduplicates() {
    let env = Env::new();
    // the source is local here, the destination on the suite's backend
    let source = env.path("source");
    local(&env, &source, &["init", "--chunk-size-avg", "65536"]);
    let (src, _) = two_snapshots(&env, Some(&source));
    let init = env
        .cairn()
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .args(["init", "--copy-chunker-params", "--from-repo"])
        .arg(&source)
        .output()
        .unwrap();
    assert_success(&init);

    let s = summary(&copy(&env, source.as_os_str(), None, &["--tag", "two"]));
    assert_eq!(s["ids_shared"], true, "{s}");
    assert_eq!(s["copied"].as_array().unwrap().len(), 1);
    let originals = snapshot_list(&local(&env, &source, &["snapshots", "--json"]));
    let copies = snapshot_list(&env.ok(&["snapshots", "--json"]));
    assert_eq!(copies.len(), 1);
    // the same tree ids: trees travel byte for byte
    assert_eq!(originals[1]["tree"], copies[0]["tree"]);
    env.assert_restores(copies[0]["id"].as_str().unwrap(), &src, &src);

    // a backup of the same files at the destination finds every chunk
    // there: it adds what the same backup adds at the source (the awkward
    // tree's entries that change by being read), not the files again
    let added = |out: String| -> serde_json::Value { last_json(&out)["data_added"].clone() };
    let here = added(env.ok(&["backup", src.to_str().unwrap(), "--json", "--force"]));
    let there = added(local(
        &env,
        &source,
        &["backup", src.to_str().unwrap(), "--json", "--force"],
    ));
    assert_eq!(here, there);
    assert!(here.as_u64().unwrap() < 4096, "{here}");

    // the first snapshot (and the source's new one) now need only the
    // blobs they do not share
    let first = summary(&copy(&env, source.as_os_str(), None, &[]));
    assert_eq!(first["copied"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(first["already_present"].as_array().unwrap().len(), 1);
    let moved = first["bytes_copied"].as_u64().unwrap();
    assert!(
        moved < 64 << 10,
        "only the old plain.txt and trees, not {moved} bytes"
    );
    let checked = env.ok(&["check", "--read-data"]);
    assert!(checked.contains("no errors"), "{checked}");
}

#[test]
fn a_killed_copy_loses_nothing_and_the_next_run_finishes() {
    let env = Env::new();
    env.init();
    let (src, _) = two_snapshots(&env, None);
    let dest = env.path("dest");
    local(&env, &dest, &["init"]);
    let out = env
        .cairn()
        .env("CAIRN_REPOSITORY", &dest)
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .env("CAIRN_CRASH_AT", "pack-uploaded:1")
        .args(["copy", "--from-repo"])
        .arg(env.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed by the crash point");
    let s = summary(&copy(&env, &env.url(), Some(&dest), &[]));
    assert_eq!(
        s["copied"].as_array().unwrap().len() + s["already_present"].as_array().unwrap().len(),
        2,
        "{s}"
    );
    let checked = local(&env, &dest, &["check", "--read-data"]);
    assert!(checked.contains("no errors"), "{checked}");
    let copies = snapshot_list(&local(&env, &dest, &["snapshots", "--json"]));
    restore_and_compare(&env, &dest, copies[1]["id"].as_str().unwrap(), &src, &src);
}

#[test]
fn bad_copy_requests_are_refused_with_the_reason() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    awkward_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    let dest = env.path("dest");
    local(&env, &dest, &["init"]);

    let wrong = env
        .cairn()
        .env("CAIRN_REPOSITORY", &dest)
        .env("CAIRN_FROM_PASSWORD", "not the password")
        .args(["copy", "--from-repo"])
        .arg(env.url())
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(12), "wrong source password");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("source repository"));

    let none = env.cairn().arg("copy").output().unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--from-repo"));

    let itself = copy(&env, &env.url(), None, &[]);
    assert_eq!(itself.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&itself.stderr).contains("same repository"));

    let missing = copy(&env, env.path("nowhere").as_os_str(), Some(&dest), &[]);
    assert_eq!(missing.status.code(), Some(10), "no source repository");

    let unknown = copy(&env, &env.url(), Some(&dest), &["deadbeef"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(snapshot_list(&local(&env, &dest, &["snapshots", "--json"])).is_empty());
}

/// One randomized round of a copy racing prunes at its destination: the
/// destination (sharing the source's ids) holds the data of a forgotten
/// snapshot that the copy relies on instead of sending it again; the copy
/// stands still at a random step while prune runs with no grace. It either
/// commits a snapshot that restores byte for byte, or fails without one
/// and the next copy succeeds.
fn copy_race_round(env: &Env, seed: u64) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let source = env.path(&format!("source-{seed}"));
    local(env, &source, &["init"]);
    let dest = env.path(&format!("dest-{seed}"));
    let init = env
        .cairn()
        .env("CAIRN_REPOSITORY", &dest)
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .args(["init", "--copy-chunker-params", "--from-repo"])
        .arg(&source)
        .output()
        .unwrap();
    assert_success(&init);
    let stream = |repo: &Path, data: &[u8]| {
        let out = env
            .cairn()
            .env("CAIRN_REPOSITORY", repo)
            .args(["backup", "--stdin", "--stdin-filename", "s.bin"])
            .write_stdin(data.to_vec())
            .output()
            .unwrap();
        assert_success(&out);
    };
    let old = noise(3_000_000 + next(8_000_000) as usize, seed);
    stream(&dest, &old);
    let forgotten = snapshot_list(&local(env, &dest, &["snapshots", "--json"]));
    local(
        env,
        &dest,
        &["forget", forgotten[0]["id"].as_str().unwrap()],
    );
    let mut data = old.clone();
    data.extend(noise(next(12_000_000) as usize, seed + 1000));
    stream(&source, &data);

    let points = ["pack-uploaded:1", "index-written:1", "before-snapshot:1"];
    let point = points[next(points.len() as u64) as usize];
    let mut cmd = env.process();
    cmd.env("CAIRN_REPOSITORY", &dest)
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .arg("copy")
        .arg("--from-repo")
        .arg(&source);
    let (child, pid) = stopped_at(cmd, point, &[]);
    for _ in 0..1 + next(2) {
        local(env, &dest, &["prune", "--keep-delete", "0s"]);
    }
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(1) if stderr.contains("was written, but") => {
            // it stood still between its check and its snapshot, longer
            // than the grace: it says so, and which snapshot to forget
            assert!(
                stderr.contains("cairn forget"),
                "seed {seed} at {point}: {stderr}"
            );
            for s in snapshot_list(&local(env, &dest, &["snapshots", "--json"])) {
                local(env, &dest, &["forget", s["id"].as_str().unwrap()]);
            }
            summary(&copy(env, source.as_os_str(), Some(&dest), &[]));
        }
        Some(1) => {
            assert!(
                stderr.contains("no snapshot was written"),
                "seed {seed} at {point}: {stderr}"
            );
            assert!(snapshot_list(&local(env, &dest, &["snapshots", "--json"])).is_empty());
            // the next run stores again what the prune took
            summary(&copy(env, source.as_os_str(), Some(&dest), &[]));
        }
        other => panic!("seed {seed} at {point}: copy exited {other:?}: {stderr}"),
    }
    let copies = snapshot_list(&local(env, &dest, &["snapshots", "--json"]));
    assert_eq!(copies.len(), 1, "seed {seed} at {point}");
    let dumped = env
        .cairn()
        .env("CAIRN_REPOSITORY", &dest)
        .args(["dump", copies[0]["id"].as_str().unwrap(), "/s.bin"])
        .output()
        .unwrap();
    assert_success(&dumped);
    assert!(
        dumped.stdout == data,
        "seed {seed} at {point}: restored bytes differ"
    );
    let checked = local(env, &dest, &["check", "--read-data"]);
    assert!(
        checked.contains("no errors"),
        "seed {seed} at {point}: {checked}"
    );
}

#[test]
fn copies_racing_prunes_at_the_destination_never_commit_damage() {
    let env = Env::new();
    let rounds: u64 = std::env::var("CAIRN_TEST_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    for seed in 0..rounds {
        copy_race_round(&env, seed);
    }
}
