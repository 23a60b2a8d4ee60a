//! Bad input gets a clear error, the right exit code, and loses nothing.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn wrong_password_exits_12() {
    let env = Env::new();
    env.init();
    let out = env
        .cairn()
        .env("CAIRN_PASSWORD", "not it")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    let out = env.cairn().args(["snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cairn init"));
}

#[test]
fn missing_password_is_a_clear_error() {
    let env = Env::new();
    env.init();
    let out = env
        .cairn()
        .env_remove("CAIRN_PASSWORD")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAIRN_PASSWORD"));
}

#[test]
fn password_file_and_command_work() {
    let env = Env::new();
    env.init();
    let pw = env.path("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    env.cairn()
        .env_remove("CAIRN_PASSWORD")
        .args(["snapshots", "--password-file", pw.to_str().unwrap()])
        .assert()
        .success();
    env.cairn()
        .env_remove("CAIRN_PASSWORD")
        .args([
            "snapshots",
            "--password-command",
            &format!("cat {}", pw.display()),
        ])
        .assert()
        .success();
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::new();
    env.init();
    let before = walk_files(&env.repo);
    let out = env.cairn().arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(
        walk_files(&env.repo),
        before,
        "init over a repository changed it"
    );
}

/// Runs cairn as an unprivileged user when the tests run as root (root reads
/// everything, so "unreadable" needs another user).
fn unprivileged(env: &Env) -> assert_cmd::Command {
    if !is_root() {
        return env.cairn();
    }
    let mut c = env.command(assert_cmd::Command::new("setpriv"));
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(assert_cmd::cargo::cargo_bin("cairn"));
    c
}

fn open_up(p: &std::path::Path) {
    // let the unprivileged user into the scratch directory
    std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(p)
        .status()
        .unwrap();
}

#[test]
fn unreadable_file_is_reported_and_the_rest_saved_with_exit_3() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    std::fs::write(src.join("secret"), b"nope").unwrap();
    std::fs::write(src.join("sub/ok2.txt"), b"fine too").unwrap();
    std::fs::create_dir_all(&env.cache).unwrap();
    open_up(env.dir.path());
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = unprivileged(&env)
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("secret") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    let ls = unprivileged(&env).args(["ls", "latest"]).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("ok.txt") && ls.contains("ok2.txt"), "{ls}");
    assert!(!ls.contains("secret"), "{ls}");
}

#[test]
fn a_file_growing_while_read_is_reported_and_stored_as_read() {
    use std::io::Write;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let log = src.join("app.log");
    let start = noise(32 << 20, 7);
    std::fs::write(&log, &start).unwrap();
    std::fs::write(src.join("steady.txt"), b"steady").unwrap();
    // an appender that keeps writing until the backup is over
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"another line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = env
        .cairn()
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("app.log") && stderr.contains("changed while being read"),
        "{stderr}"
    );
    // the snapshot holds what was read: the file's start, then whole lines
    let target = env.path("restored");
    let (code, err) = env.restore_into(&target, &["latest"]);
    assert_eq!(code, Some(0), "{err}");
    let restored = std::fs::read(target.join(log.strip_prefix("/").unwrap())).unwrap();
    let now = std::fs::read(&log).unwrap();
    assert!(restored.len() >= start.len() && restored.len() <= now.len());
    assert!(
        restored == now[..restored.len()],
        "not a prefix of the file"
    );
    let steady = target.join(src.join("steady.txt").strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(steady).unwrap(), b"steady");
}

#[test]
fn restore_target_that_cannot_be_written_is_a_clear_error() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let blocker = env.path("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let out = env
        .cairn()
        .args(["restore", "latest", "--target"])
        .arg(blocker.join("sub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("restore target") && err.contains("a-file"),
        "{err}"
    );
}

#[test]
fn corrupted_pack_names_the_object_and_files_and_others_still_restore() {
    let env = Env::new();
    let (src, victims) = two_backups_with_new_data_packs(&env);
    assert!(!victims.is_empty());
    for v in &victims {
        let mut bytes = std::fs::read(v).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(v, bytes).unwrap();
    }
    let target = env.path("t");
    let (code, err) = env.restore_into(&target, &["latest"]);
    assert_eq!(code, Some(1), "{err}");
    let victim_name = victims[0].file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(victim_name),
        "error does not name the pack: {err}"
    );
    assert!(
        err.contains("new.bin"),
        "error does not name the affected file: {err}"
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("old.bin")).unwrap(),
        noise(3_000_000, 1)
    );
}

#[test]
fn missing_pack_names_the_object_and_files_and_others_still_restore() {
    let env = Env::new();
    let (src, victims) = two_backups_with_new_data_packs(&env);
    for v in victims {
        std::fs::remove_file(v).unwrap();
    }
    let target = env.path("t");
    let (code, err) = env.restore_into(&target, &["latest"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("new.bin"),
        "{err}"
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("old.bin")).unwrap(),
        noise(3_000_000, 1)
    );
}

#[test]
fn a_cache_held_by_another_process_falls_back_to_a_temporary_one() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    // a backup reading a slow stdin holds the cache while we run other commands
    let mut slow = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sleep 3 | CAIRN_REPOSITORY={} CAIRN_PASSWORD='{PASSWORD}' CAIRN_CACHE_DIR={} {} backup --stdin -q",
            env.repo.display(),
            env.cache.display(),
            assert_cmd::cargo::cargo_bin("cairn").display()
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = env.cairn().args(["ls", "latest"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("in use by another cairn process"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("/f"));
    assert!(slow.wait().unwrap().success());
    assert_eq!(env.snapshot_ids().len(), 2);
}

/// A restore that runs out of disk space says so and names the file; the
/// repository is untouched and a restore with room succeeds. Needs root (to
/// mount a small tmpfs).
#[test]
fn restore_onto_a_full_disk_names_the_file_and_damages_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 1, 200_000, 1);
    std::fs::write(src.join("big.bin"), noise(6_000_000, 2)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let small = env.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // root without CAP_SYS_ADMIN (some containers) cannot mount
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let (code, err) = env.restore_into(&small, &["latest"]);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("big.bin") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(env.check_clean(&["--read-data"]).is_empty());
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &src, &src);
}

#[test]
fn absurd_durations_are_refused_with_a_reason_not_a_panic() {
    let env = Env::new();
    env.init();
    for args in [
        &["forget", "--keep-within", "8000000d"][..],
        &["forget", "--keep-within", "2147483647d1d"],
        &["prune", "--keep-delete", "8000000d"],
        &["prune", "--keep-delete", "99999999999999999999s"],
        &["--retry-lock", "3661d", "prune"],
    ] {
        let out = env.cairn().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // clap reports bad flag values with exit 2; cairn's own checks with 1
        assert!(
            matches!(out.status.code(), Some(1) | Some(2)),
            "{args:?}: {:?} {err}",
            out.status
        );
        assert!(err.contains("out of range"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn counts_subsets_and_percentages_out_of_range_name_the_flag() {
    let env = Env::new();
    env.init();
    for (args, says) in [
        (
            &["forget", "--keep-daily", "-5"][..],
            "--keep-daily = -5: give a count",
        ),
        (
            &["check", "--read-data-subset", "0%"],
            "--read-data-subset \"0%\"",
        ),
        (
            &["check", "--read-data-subset", "6/5"],
            "--read-data-subset \"6/5\"",
        ),
        (&["prune", "--max-unused", "100%"], "--max-unused \"100%\""),
    ] {
        let out = env.cairn().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn with_json_a_failure_ends_with_an_exit_error_object() {
    let env = Env::new();
    let out = env.cairn().args(["--json", "snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = last_json(&err);
    assert_eq!(last["message_type"], "exit_error", "{err}");
    assert_eq!(last["code"], 10, "{err}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("no repository at"),
        "{err}"
    );
    // without --json, the same failure is a line of text
    let out = env.cairn().args(["snapshots"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: no repository at"));
}

#[test]
fn init_refuses_an_empty_password_and_the_cache_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let out = env
        .cairn()
        .env("CAIRN_PASSWORD", "")
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty password"));
    assert!(!env.repo.join("config").exists());
    env.init();
    env.ok(&["check"]); // (opens the index cache)
                        // one directory per repository (beside the CACHEDIR.TAG file)
    let caches: Vec<_> = std::fs::read_dir(&env.cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(!caches.is_empty());
    for c in caches {
        let index = c.join("index");
        let mode = std::fs::metadata(&index).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", index.display());
    }
}

#[test]
fn junk_under_keys_is_skipped_with_a_warning_not_a_lockout() {
    let env = Env::new();
    env.init();
    if env.remote.is_some() {
        return;
    }
    let junk = env.repo.join("keys").join("ab".repeat(32));
    std::fs::write(&junk, b"not a key file at all").unwrap();
    let huge = env.repo.join("keys").join("cd".repeat(32));
    std::fs::write(&huge, vec![7u8; 1 << 20]).unwrap();
    let out = env.cairn().args(["snapshots"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a wrong password tries every file: each bad one is named
    let out = env
        .cairn()
        .env("CAIRN_PASSWORD", "wrong")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "keys/{} is not a usable key file",
            "ab".repeat(32)
        )),
        "{err}"
    );
    assert!(err.contains("too large for a key file"), "{err}");
}

#[test]
fn a_snapshot_dated_in_the_future_is_not_the_automatic_parent() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 2, 10_000, 5);
    let s = src.to_str().unwrap();
    let first = env.ok(&["--json", "backup", s]);
    let first = last_json(&first);
    env.ok(&["backup", "--time", "2099-01-01 00:00:00", s]);
    let out = env.cairn().args(["--json", "backup", s]).output().unwrap();
    assert_success(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in the future: not used as the parent"),
        "{err}"
    );
    let summary: serde_json::Value = last_json(&String::from_utf8_lossy(&out.stdout));
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    let new = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == summary["snapshot_id"])
        .unwrap();
    assert_eq!(new["parent"], first["snapshot_id"], "{list}");
}
