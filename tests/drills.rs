//! Restore drills (`cairn drill`, `[drills.NAME]`): the latest backup of a
//! source recovered into scratch space, checked, and the scratch space
//! removed; a damaged backup or a failing `verify` fails the drill and
//! alerts. PostgreSQL drills are in tests/postgres.rs, serve's in
//! tests/serve.rs.

mod common;

use common::{Env, Receiver};
use std::path::{Path, PathBuf};

fn settings(env: &Env, body: &str) -> PathBuf {
    let text = format!("[repositories.main]\nurl = \"/from-the-environment\"\n\n{body}\n");
    let path = env.path("cairn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn cairn(env: &Env, args: &[&str], config: &Path) -> std::process::Output {
    env.cairn()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Overwrites every data pack of the (local) repository with junk.
fn damage_data_packs(env: &Env) {
    let mut damaged = 0;
    for dir in std::fs::read_dir(env.repo.join("data")).unwrap().flatten() {
        for pack in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let len = pack.metadata().unwrap().len() as usize;
            std::fs::write(pack.path(), common::noise(len, 99)).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
}

#[test]
fn a_files_drill_recovers_verifies_and_cleans_up_and_a_damaged_backup_fails_it() {
    let env = Env::new();
    if env.remote.is_some() {
        return; // damages pack files on local disk
    }
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/a.txt"), b"drill me").unwrap();
    std::fs::write(data.join("big.bin"), common::noise(3 << 20, 4)).unwrap();
    let scratch = env.path("scratch");
    let hook = Receiver::start();
    let config = settings(
        &env,
        &format!(
            "[sources.files]\nrepository = \"main\"\npaths = [{data:?}]\n\n\
             [drills.nightly]\nsource = \"files\"\n\
             verify = [\"sh\", \"-c\", \"grep -q 'drill me' \\\"$CAIRN_DRILL_TARGET\\\"{sub}\"]\n\n\
             [[notifications]]\nurl = \"{url}\"\nevents = [\"failure\"]\n",
            data = data.to_str().unwrap(),
            sub = data.join("sub/a.txt").display(),
            url = hook.url("/hook"),
        ),
    );
    // nothing backed up yet: nothing to recover
    let out = cairn(
        &env,
        &[
            "drill",
            "nightly",
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
        &config,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("no snapshot of source \"files\" to recover"),
        "{}",
        stderr_of(&out)
    );

    let out = cairn(&env, &["backup", "--source", "files"], &config);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = cairn(
        &env,
        &[
            "--json",
            "drill",
            "nightly",
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
        &config,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified_by_command"], true, "{report}");
    assert_eq!(report["bytes"], (3 << 20) + 8, "{report}");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch space removed"
    );

    damage_data_packs(&env);
    let out = cairn(
        &env,
        &[
            "drill",
            "nightly",
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
        &config,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a damaged backup fails the drill"
    );
    let alert = hook.wait_for(10, |r| r.json()["event"] == "failure");
    assert_eq!(alert.json()["kind"], "drill");
    assert_eq!(alert.json()["source"], "files");
    assert!(!alert.json()["error"].as_str().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch space removed"
    );
}

#[test]
fn a_sqlite_drill_restores_the_file_and_runs_verify() {
    if std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_err()
    {
        assert!(std::env::var("CAIRN_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"));
        return;
    }
    let env = Env::new();
    env.init();
    let db = env.path("app.db");
    let status = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE t (v); INSERT INTO t VALUES (1), (2), (3);")
        .status()
        .unwrap();
    assert!(status.success());
    let scratch = env.path("scratch");
    let config = settings(
        &env,
        &format!(
            "[sources.lite]\nrepository = \"main\"\ntype = \"sqlite\"\ndatabases = [{db:?}]\n\n\
             [drills.good]\nsource = \"lite\"\n\
             verify = [\"sh\", \"-c\", \"test $(sqlite3 \\\"$CAIRN_DRILL_TARGET\\\" 'select sum(v) from t') = 6 && test \\\"$CAIRN_DRILL_SOURCE_DATABASE\\\" = app.db\"]\n\n\
             [drills.strict]\nsource = \"lite\"\nverify = [\"sh\", \"-c\", \"echo 'row count is off' >&2; exit 4\"]\n",
            db = db.to_str().unwrap()
        ),
    );
    let out = cairn(&env, &["backup", "--source", "lite"], &config);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let scratch_arg = scratch.to_str().unwrap();
    let out = cairn(
        &env,
        &["drill", "good", "--scratch-dir", scratch_arg],
        &config,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("recovered /sqlite/app.db.sql"), "{stdout}");
    let out = cairn(
        &env,
        &["drill", "strict", "--scratch-dir", scratch_arg],
        &config,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("exited with status 4"), "{stderr}");
    assert!(
        stderr.contains("row count is off"),
        "the command's own words: {stderr}"
    );
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn a_drill_of_an_unknown_source_is_refused_with_the_settings() {
    let env = Env::new();
    env.init();
    let config = settings(&env, "[drills.d]\nsource = \"nope\"\n");
    let out = cairn(&env, &["drill", "d"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("[drills.d]: source \"nope\" is not defined"),
        "{}",
        stderr_of(&out)
    );
}
