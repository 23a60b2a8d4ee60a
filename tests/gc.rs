//! Garbage collection beside live backups (format-spec §14, §15): prune
//! never makes a saved snapshot unrestorable, whatever it overlaps, whatever
//! the hosts' clocks say, and however long a backup stands still; a lost
//! pack does not spread into later snapshots; backups delete nothing.

mod common;

use common::*;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A stream backup whose producer writes `first`, then waits for the test.
struct StalledBackup {
    child: Child,
}

impl StalledBackup {
    fn start(env: &Env, name: &str, first: &[u8], extra_env: &[(&str, &str)]) -> StalledBackup {
        let mut child = env
            .process()
            .envs(extra_env.iter().copied())
            .args(["--json", "backup", "--stdin", "--stdin-filename", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.as_mut().unwrap().write_all(first).unwrap();
        StalledBackup { child }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Writes the rest and waits: the exit code, stdout and stderr.
    fn finish(mut self, rest: &[u8]) -> (Option<i32>, String, String) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(rest).unwrap();
        drop(stdin);
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Backs up `data` as the stream `/s.bin`; it must succeed.
fn back_up_stream(env: &Env, data: &[u8]) {
    let out = env
        .cairn()
        .args(["backup", "--stdin", "--stdin-filename", "s.bin"])
        .write_stdin(data.to_vec())
        .output()
        .unwrap();
    assert_success(&out);
}

/// The bytes of `/NAME` in snapshot `id`.
fn dump(env: &Env, id: &str, name: &str) -> Vec<u8> {
    let out = env.cairn().args(["dump", id, name]).output().unwrap();
    assert_success(&out);
    out.stdout
}

/// After any race: the repository is whole and every snapshot restores.
fn assert_whole(env: &Env) {
    let out = env.cairn().args(["check", "--read-data"]).output().unwrap();
    assert_success(&out);
    for id in env.snapshot_ids() {
        let out = env.cairn().args(["ls", &id]).output().unwrap();
        assert_success(&out);
    }
}

/// libfaketime (from Debian's faketime, installed by scripts/test.sh) gives
/// a process a skewed clock, as a host whose clock is off would have.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The real binary with its clock moved by `offset` (e.g. "+3d", "-2h"),
/// as its own process (not a child of a wrapper), so tests can signal it.
/// Object stores refuse requests signed with a skewed clock (S3 allows 15
/// minutes), so a skewed host could not reach them at all: there the clock
/// stays right.
fn skewed_cairn(env: &Env, offset: &str) -> std::process::Command {
    let mut cmd = env.process();
    if remote_backend() {
        return cmd;
    }
    if std::path::Path::new(LIBFAKETIME).exists() {
        cmd.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", offset);
    } else {
        assert!(
            std::env::var_os("CAIRN_TEST_REQUIRE_FAKETIME").is_none(),
            "faketime is required (scripts/test.sh installs it)"
        );
    }
    cmd
}

/// A prune whose host clock is `offset` away from the storage's.
fn prune_skewed(env: &Env, offset: &str, args: &[&str]) -> std::process::Output {
    skewed_cairn(env, offset)
        .arg("prune")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_backup_relying_on_data_a_prune_condemns_commits_a_whole_snapshot() {
    // The reported loss: a 20 MB stream backed up and forgotten, the same
    // bytes backed up again by a backup that keeps its pipe open, and a
    // prune from a host whose clock is ahead (31 minutes, 3 days) or behind.
    for (round, offset) in ["+31m", "+3d", "-2h"].into_iter().enumerate() {
        let env = Env::new();
        env.init();
        let data = noise(20_000_000, 40 + round as u64);
        back_up_stream(&env, &data);
        let first = env.snapshot_ids().pop().unwrap();
        env.ok(&["forget", &first]);

        let (head, tail) = data.split_at(19_000_000);
        let backup = StalledBackup::start(&env, "s.bin", head, &[]);
        // SIGSTOP in one round: a suspended machine, not a slow pipe
        let stopped = round == 1;
        std::thread::sleep(Duration::from_millis(1500));
        if stopped {
            signal(backup.pid(), nix::sys::signal::Signal::SIGSTOP);
        }
        let out = prune_skewed(&env, offset, &[]);
        assert_success(&out);
        if stopped {
            signal(backup.pid(), nix::sys::signal::Signal::SIGCONT);
        }
        let (code, stdout, stderr) = backup.finish(tail);
        assert_eq!(code, Some(0), "{offset}: {stderr}");
        let summary: serde_json::Value = last_json(&stdout);
        assert_eq!(
            summary["requests"]["delete"], 0,
            "{offset}: a backup deleted"
        );
        let id = summary["snapshot_id"].as_str().unwrap().to_string();
        assert_eq!(dump(&env, &id, "/s.bin"), data, "{offset}");
        // a later prune, with no grace left on either side, keeps it whole
        env.prune_fully(&[]);
        assert_eq!(dump(&env, &id, "/s.bin"), data, "{offset}");
        assert_whole(&env);
    }
}

#[test]
fn a_backup_killed_in_its_commit_check_leaves_no_damage() {
    // kill -9 after the backup revived condemned packs, and after it wrote
    // its snapshot but before the second check: the repository stays whole
    for point in ["revival-written:1", "snapshot-written:1"] {
        let env = Env::new();
        env.init();
        let data = noise(6_000_000, 77);
        back_up_stream(&env, &data);
        let first = env.snapshot_ids().pop().unwrap();
        env.ok(&["forget", &first]);
        // the backup dedups against the forgotten data, then a prune
        // condemns it: the commit check must revive it
        let (head, tail) = data.split_at(5_500_000);
        let backup = StalledBackup::start(&env, "s.bin", head, &[("CAIRN_CRASH_AT", point)]);
        std::thread::sleep(Duration::from_millis(1500));
        env.ok(&["prune"]);
        let (code, _, stderr) = backup.finish(tail);
        assert_eq!(code, None, "{point}: not killed: {stderr}");
        let saved = env.snapshot_ids();
        match point {
            "revival-written:1" => assert!(saved.is_empty(), "{point}: {saved:?}"),
            _ => assert_eq!(dump(&env, &saved[0], "/s.bin"), data, "{point}"),
        }
        env.check_clean(&["--read-data"]);
        // the next backup and a prune with no grace left keep everything whole
        back_up_stream(&env, &data);
        env.prune_fully(&[]);
        for id in env.snapshot_ids() {
            assert_eq!(dump(&env, &id, "/s.bin"), data, "{point}");
        }
        assert_whole(&env);
    }
}

/// One randomized round: data partly from a forgotten snapshot, partly
/// new; the backup stalls (or is stopped) at a random point while prune
/// runs to completion `prunes` times with no grace. The backup either saves
/// a snapshot that restores byte for byte, or fails without one.
fn race_round(seed: u64, stop: bool, prunes: usize) {
    let env = Env::new();
    env.init();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let old = noise(4_000_000 + next(12_000_000) as usize, seed);
    let out = env
        .cairn()
        .args(["backup", "--stdin", "--stdin-filename", "old.bin"])
        .write_stdin(old.clone())
        .output()
        .unwrap();
    assert_success(&out);
    let old_id = env.snapshot_ids().pop().unwrap();
    env.ok(&["forget", &old_id]);
    let mut data = old.clone();
    data.extend(noise(next(20_000_000) as usize, seed + 1000));
    let cut = next(data.len() as u64) as usize;
    let (head, tail) = data.split_at(cut);
    let backup = StalledBackup::start(&env, "s.bin", head, &[]);
    std::thread::sleep(Duration::from_millis(200 + next(1500)));
    if stop {
        signal(backup.pid(), nix::sys::signal::Signal::SIGSTOP);
    }
    for _ in 0..prunes {
        env.ok(&["prune", "--keep-delete", "0s"]);
    }
    if stop {
        signal(backup.pid(), nix::sys::signal::Signal::SIGCONT);
    }
    let (code, stdout, stderr) = backup.finish(tail);
    match code {
        Some(0) => {
            let summary: serde_json::Value = last_json(&stdout);
            let id = summary["snapshot_id"].as_str().unwrap().to_string();
            assert_eq!(dump(&env, &id, "/s.bin"), data, "seed {seed}");
        }
        Some(1) => {
            assert!(
                stderr.contains("no snapshot was written"),
                "seed {seed}: {stderr}"
            );
            assert!(env.snapshot_ids().is_empty(), "seed {seed}: {stderr}");
            // the next run stores again what was lost
            back_up_stream(&env, &data);
            let id = env.snapshot_ids().pop().unwrap();
            assert_eq!(dump(&env, &id, "/s.bin"), data, "seed {seed}");
        }
        other => panic!("seed {seed}: backup exited {other:?}: {stderr}"),
    }
    assert_whole(&env);
    // and garbage collection runs to the end over whatever the race left
    env.prune_fully(&[]);
    assert_whole(&env);
    for id in env.snapshot_ids() {
        assert_eq!(dump(&env, &id, "/s.bin"), data, "seed {seed}");
    }
}

#[test]
fn backups_racing_prunes_with_no_grace_never_commit_damage() {
    if remote_backend() {
        return; // prune_fully ages packs on local disk
    }
    for seed in 0..6 {
        race_round(seed, seed % 2 == 1, 1 + (seed as usize % 3));
    }
}

#[test]
fn a_backup_that_stood_still_between_its_check_and_its_snapshot_says_so() {
    if remote_backend() {
        return;
    }
    let env = Env::new();
    env.init();
    let data = noise(6_000_000, 77);
    let old = env
        .cairn()
        .args(["backup", "--stdin", "--stdin-filename", "old.bin"])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    assert_success(&old);
    let old_id = env.snapshot_ids().pop().unwrap();
    env.ok(&["forget", &old_id]);
    // The backup passes its commit check (nothing was condemned yet), then
    // stands still right before writing the snapshot, while two prunes
    // with no grace condemn and delete what it relied on.
    let backup = StalledBackup::start(
        &env,
        "s.bin",
        &data,
        &[("CAIRN_STOP_AT", "before-snapshot:1")],
    );
    let pid = backup.pid();
    let mut backup = backup;
    drop(backup.child.stdin.take());
    wait_stopped(pid);
    env.prune_fully(&[]);
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let out = backup.child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was written, but") && stderr.contains("cairn forget"),
        "{stderr}"
    );
}

#[test]
fn a_lost_pack_does_not_spread_into_the_next_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 10, 1_500_000, 5);
    let s = src.to_str().unwrap();
    env.ok(&["backup", s]);
    let damaged = env.snapshot_ids().pop().unwrap();
    // the largest pack holds data (the tree pack is small)
    let victim = env
        .objects("data/")
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .unwrap()
        .0;
    env.delete_object(&victim);
    env.ok(&["repair", "index"]);
    // unchanged files whose content went with the pack are read again
    let out = env.ok(&["--json", "backup", s]);
    let summary = last_json(&out);
    assert!(summary["files_reread"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(summary["requests"]["delete"], 0);
    let healed = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&healed, &src, &src);
    // the next backup trusts what it verified: nothing is read again
    let out = env.ok(&["--json", "backup", s]);
    let summary = last_json(&out);
    assert_eq!(summary["files_reread"], 0, "{out}");
    assert_eq!(summary["files_unmodified"], 10, "{out}");
    // once the damaged snapshot is gone, the repository is whole again
    env.ok(&["forget", &damaged]);
    env.prune_fully(&[]);
    assert!(env.check_clean(&["--read-data"]).is_empty());
    let last = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&last, &src, &src);
}

#[test]
fn condemned_packs_wait_their_grace_and_young_leftovers_stay() {
    if remote_backend() {
        return; // ages packs on local disk
    }
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    noise_files(&a, 4, 3_000_000, 1);
    noise_files(&b, 4, 3_000_000, 2);
    env.ok(&["backup", a.to_str().unwrap()]);
    let a_id = env.snapshot_ids().pop().unwrap();
    env.ok(&["backup", b.to_str().unwrap()]);
    // a pack no index lists: a backup still uploading, as prune sees it
    let stray = noise(100_000, 9);
    let stray_id = blake3::hash(&stray).to_hex().to_string();
    let stray_path = env.repo.join("data").join(&stray_id[..2]).join(&stray_id);
    std::fs::create_dir_all(stray_path.parent().unwrap()).unwrap();
    std::fs::write(&stray_path, &stray).unwrap();
    env.ok(&["forget", &a_id]);
    let before = env.objects("data/");

    // phase one: a's packs are condemned for 10 s, nothing is deleted, and
    // the pack no index lists is too young to be anyone's leftover
    let plan = env.ok(&["--json", "prune", "--keep-delete", "10s"]);
    let plan = json_message(&plan, "prune_plan");
    assert!(
        plan["plan"]["packs_unused"].as_u64().unwrap() >= 1,
        "{plan}"
    );
    assert_eq!(plan["plan"]["packs_unindexed_young"], 1, "{plan}");
    assert_eq!(
        env.objects("data/"),
        before,
        "the first phase deleted something"
    );
    let notes = env.check_clean(&["--read-data"]);
    assert!(notes.iter().any(|n| n.contains("condemned")), "{notes:?}");
    // the stray is now old by the storage's clock; the condemned packs are
    // still within their grace, even for a prune that asks for none
    set_mtime(&stray_path, 1_000_000_000, 0);
    let plan = env.ok(&["--json", "prune", "--keep-delete", "0s"]);
    let plan = json_message(&plan, "prune_plan");
    assert!(
        plan["plan"]["packs_waiting"].as_u64().unwrap() >= 1,
        "{plan}"
    );
    assert!(!stray_path.exists(), "an old unindexed pack stayed");
    let mut without_stray = before.clone();
    without_stray.retain(|k, _| !k.ends_with(&stray_id));
    assert_eq!(
        env.objects("data/"),
        without_stray,
        "condemned packs went before their grace"
    );
    let b_id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&b_id, &b, &b);
    // once the grace is over, they go
    std::thread::sleep(Duration::from_secs(11));
    let plan = env.ok(&["--json", "prune", "--keep-delete", "10s"]);
    let plan = json_message(&plan, "prune_plan");
    assert_eq!(plan["plan"]["packs_waiting"], 0, "{plan}");
    assert!(
        plan["plan"]["packs_expired"].as_u64().unwrap() >= 1,
        "{plan}"
    );
    assert!(env.repo_bytes() < before.values().sum::<u64>() - 10_000_000);
    assert!(env.check_clean(&["--read-data"]).is_empty());
    env.assert_restores(&b_id, &b, &b);
}

/// What a backup host does with rights to add but not to delete: all of it
/// works and sends no DELETE; the maintenance commands fail, saying why, and
/// lose nothing.
fn append_only_host_works(env: &Env, src: &std::path::Path) {
    let s = src.to_str().unwrap();
    std::fs::write(src.join("f0"), noise(1_000_000, 99)).unwrap();
    let out = env.ok(&["--json", "backup", s]);
    let summary = last_json(&out);
    assert_eq!(summary["requests"]["delete"], 0, "{out}");
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, src, src);
    env.ok(&["snapshots"]);
    env.ok(&["ls", &id]);
    assert!(env.check_clean(&["--read-data"]).is_empty());
    let out = env.cairn().args(["dump", &id, "/"]).output().unwrap();
    assert_success(&out);
    // maintenance needs delete rights: it fails, says so, and loses nothing
    for args in [&["prune", "--keep-delete", "0s"][..], &["forget", &id]] {
        let out = env.cairn().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("need credentials with delete rights"),
            "{args:?}: {err}"
        );
    }
    assert!(env.snapshot_ids().contains(&id));
    env.assert_restores(&id, src, src);
}

#[test]
fn backups_work_on_append_only_storage_and_delete_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 6, 1_000_000, 3);
    env.ok(&["backup", src.to_str().unwrap()]);
    if env.use_append_only_user(true) {
        // object storage: the store refuses this user's DELETE requests
        let before = env.objects("");
        append_only_host_works(&env, &src);
        env.use_append_only_user(false);
        let after = env.objects("");
        let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        assert!(gone.is_empty(), "deleted: {gone:?}");
        // with delete rights, maintenance works again
        env.prune_fully(&[]);
        assert!(env.check_clean(&["--read-data"]).is_empty());
        return;
    }
    if remote_backend() || !is_root() {
        return; // chattr needs root and a local file system
    }
    // every directory but the temporary one (whose files are renamed away)
    // may only grow; subdirectories of data/ made later are plain, so make
    // all 256 now
    for i in 0..256 {
        std::fs::create_dir_all(env.repo.join("data").join(format!("{i:02x}"))).unwrap();
    }
    let mut dirs: Vec<std::path::PathBuf> = vec![env.repo.clone()];
    for top in ["data", "index", "snapshots", "keys", "locks"] {
        let d = env.repo.join(top);
        std::fs::create_dir_all(&d).unwrap();
        dirs.push(d.clone());
        if top == "data" {
            for e in std::fs::read_dir(&d).unwrap() {
                dirs.push(e.unwrap().path());
            }
        }
    }
    let chattr = |flag: &str| {
        for d in &dirs {
            let ok = std::process::Command::new("chattr")
                .arg(flag)
                .arg(d)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chattr {flag} {}", d.display());
        }
    };
    chattr("+a");
    let outcome = std::panic::catch_unwind(|| {
        // a deletion really is refused
        let probe = walk_files(&env.repo.join("snapshots")).pop().unwrap();
        assert!(
            std::fs::remove_file(&probe).is_err(),
            "chattr +a had no effect"
        );
        append_only_host_works(&env, &src);
    });
    chattr("-a");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
    env.prune_fully(&[]);
    assert!(env.check_clean(&["--read-data"]).is_empty());
}

#[test]
fn maintenance_commands_exclude_each_other_but_never_a_backup() {
    if remote_backend() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 3, 1_000_000, 4);
    env.ok(&["backup", src.to_str().unwrap()]);
    // a prune stopped after planning, from a host whose clock is two hours
    // behind: its lock is live by the storage's clock, whatever its record says
    let (prune, pid) = stopped_at(skewed_cairn(&env, "-2h"), "prune-planned:1", &["prune"]);
    let out = env
        .cairn()
        .args(["forget", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("prune"));
    let out = env.cairn().args(["prune"]).output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    // a backup neither waits nor takes a lock
    std::fs::write(src.join("f0"), noise(1_000_000, 44)).unwrap();
    let out = env
        .cairn()
        .args(["backup", src.to_str().unwrap()])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_success(&out);
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let out = prune.wait_with_output().unwrap();
    assert_success(&out);
    assert!(
        walk_files(&env.repo.join("locks")).is_empty(),
        "locks left behind"
    );
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &src, &src);
    assert_whole(&env);
}

#[test]
fn a_prune_whose_lock_was_removed_deletes_nothing() {
    if remote_backend() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 3, 1_000_000, 6);
    env.ok(&["backup", src.to_str().unwrap()]);
    let id = env.snapshot_ids().pop().unwrap();
    env.ok(&["forget", &id]);
    env.prune_fully(&[]);
    env.ok(&["backup", src.to_str().unwrap()]);
    let id = env.snapshot_ids().pop().unwrap();
    env.ok(&["forget", &id]);
    env.ok(&["prune", "--keep-delete", "0s"]);
    let before = env.objects("");
    let (prune, pid) = stopped_at(
        env.process(),
        "prune-planned:1",
        &["prune", "--keep-delete", "0s"],
    );
    // a live lock is not stale: plain unlock leaves it
    assert!(env.ok(&["unlock"]).contains("removed 0 locks"));
    env.ok(&["unlock", "--remove-all"]);
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let out = prune.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("was removed"));
    assert_eq!(
        env.objects(""),
        before,
        "a prune without its lock changed the repository"
    );
}

#[test]
fn three_hosts_backing_up_while_forget_and_prune_loop_lose_nothing() {
    let env = Env::new();
    env.init();
    // a minute by default; CAIRN_TEST_SOAK_SECS sets it (e.g. 600 by hand)
    let soak = Duration::from_secs(
        std::env::var("CAIRN_TEST_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let until = Instant::now() + soak;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let dirs: Vec<std::path::PathBuf> = (0..3).map(|h| env.path(&format!("host{h}"))).collect();
    for (h, d) in dirs.iter().enumerate() {
        noise_files(d, 3, 1_500_000, 500 + h as u64);
    }
    let backup = |h: usize, dir: &std::path::Path| {
        env.cairn()
            .env("CAIRN_CACHE_DIR", env.path(&format!("cache-host{h}")))
            .args(["backup", "--host", &format!("host{h}")])
            .arg(dir)
            .output()
            .unwrap()
    };
    std::thread::scope(|scope| {
        let hosts: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(h, dir)| {
                let backup = &backup;
                scope.spawn(move || {
                    let (mut round, mut refused) = (0, 0);
                    while round < 3 || Instant::now() < until {
                        // changing data: one file added each round, and one
                        // replaced by the content it had three rounds ago,
                        // which the forgets have just dropped: a backup may
                        // rely on packs a prune condemns or deletes meanwhile
                        let seed = 1000 * (h as u64 + 1) + round;
                        let cycled = 1000 * (h as u64 + 1) + round % 3;
                        std::fs::write(dir.join("f0"), noise(1_500_000, cycled)).unwrap();
                        std::fs::write(dir.join(format!("r{round}")), noise(700_000, seed + 7))
                            .unwrap();
                        let out = backup(h, dir);
                        if !out.status.success() {
                            // a prune with no grace deleted data this backup
                            // relied on: it may fail, but only that way
                            let err = String::from_utf8_lossy(&out.stderr);
                            assert!(err.contains("no snapshot was written"), "{err}");
                            refused += 1;
                        }
                        round += 1;
                    }
                    (round, refused)
                })
            })
            .collect();
        let maintenance = scope.spawn(|| {
            let mut runs = 0;
            let deadline = until + Duration::from_secs(300);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                // every other prune has no grace and repacks every partly
                // used pack: it deletes what it and the one before
                // condemned, under the backups' feet
                let prune: &[&str] = match runs % 2 {
                    0 => &["prune"],
                    _ => &["prune", "--keep-delete", "0s", "--max-unused", "0"],
                };
                for args in [&["forget", "--keep-last", "2"][..], prune] {
                    let out = env
                        .cairn()
                        .env("CAIRN_CACHE_DIR", env.path("cache-admin"))
                        .args(args)
                        .output()
                        .unwrap();
                    assert_success(&out);
                }
                runs += 1;
            }
            runs
        });
        // every host finishes (or fails) before the loop is told to stop,
        // and only then is a failure passed on
        let results: Vec<_> = hosts.into_iter().map(|h| h.join()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let runs = maintenance.join();
        let (mut backups, mut refused) = (0, 0);
        for r in results {
            let (b, f) = r.unwrap_or_else(|e| std::panic::resume_unwind(e));
            backups += b;
            refused += f;
        }
        let runs = runs.unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert!(runs >= 2, "the prune loop ran {runs} times");
        assert!(
            refused * 2 < backups,
            "{refused} of {backups} backups failed"
        );
        eprintln!(
            "{backups} backups ({refused} refused to commit) beside {runs} forget + prune runs \
             in {soak:?}"
        );
    });
    // one more backup of each host, alone: it commits
    for (h, dir) in dirs.iter().enumerate() {
        assert_success(&backup(h, dir));
    }
    // every snapshot left is whole, and the newest of each host is its data
    let out = env.cairn().args(["check", "--read-data"]).output().unwrap();
    assert_success(&out);
    for (h, dir) in dirs.iter().enumerate() {
        let target = env.path(&format!("out{h}"));
        let (code, err) = env.restore_into(&target, &["latest", "--host", &format!("host{h}")]);
        assert_eq!(code, Some(0), "{err}");
        assert_same_tree(dir, &target.join(dir.strip_prefix("/").unwrap()));
    }
    for id in env.snapshot_ids() {
        let out = env.cairn().args(["dump", &id, "/"]).output().unwrap();
        assert_success(&out);
    }
}

#[test]
fn a_snapshot_committed_as_a_prune_condemns_its_packs_restores_and_is_revived() {
    if remote_backend() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 4, 2_000_000, 21);
    let s = src.to_str().unwrap();
    // the backup has uploaded and indexed everything and passed its check
    let (backup, backup_pid) = stopped_at(env.process(), "before-snapshot:1", &["backup", s]);
    // a prune plans while no snapshot needs those packs...
    let (prune, prune_pid) = stopped_at(env.process(), "prune-planned:1", &["prune"]);
    // ...the backup commits before the prune writes its index...
    signal(backup_pid, nix::sys::signal::Signal::SIGCONT);
    assert_success(&backup.wait_with_output().unwrap());
    // ...and then the prune condemns them: the snapshot reaches condemned packs
    signal(prune_pid, nix::sys::signal::Signal::SIGCONT);
    assert_success(&prune.wait_with_output().unwrap());
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &src, &src);
    // the next prune sees the snapshot and revives what it needs
    let out = env.ok(&["--json", "prune", "--keep-delete", "0s"]);
    let plan = json_message(&out, "prune_plan");
    assert!(
        plan["plan"]["packs_revived"].as_u64().unwrap() >= 1,
        "{plan}"
    );
    env.prune_fully(&[]);
    assert!(env.check_clean(&["--read-data"]).is_empty());
    env.assert_restores(&id, &src, &src);
}
