//! Command streams: `backup --stdin-from-command`, paths and streams in one
//! snapshot, configured sources with hooks, and `restore --to-command`.

mod common;

use common::{last_json, noise, Env};
use std::path::Path;

/// `sh -c SCRIPT` as the command after `--`.
fn backup_command(env: &Env, name: &str, script: &str) -> std::process::Output {
    env.cairn()
        .args([
            "--json",
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            name,
        ])
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

/// `restore latest:/db.sql --to-command -- sh -c SCRIPT`
fn restore_to_sh(env: &Env, script: &str) -> std::process::Output {
    env.cairn()
        .args([
            "restore",
            "latest:/db.sql",
            "--to-command",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

fn dump(env: &Env, path: &str) -> Vec<u8> {
    let out = env.cairn().args(["dump", "latest", path]).output().unwrap();
    common::assert_success(&out);
    out.stdout
}

#[test]
fn a_command_stream_and_paths_make_one_snapshot() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"file content").unwrap();
    let blob = env.path("blob");
    std::fs::write(&blob, noise(3 << 20, 7)).unwrap();
    let script = format!("cat '{}'", blob.display());
    let out = env
        .cairn()
        .arg("backup")
        .arg(&data)
        .args([
            "--stdin-from-command",
            "--stdin-filename",
            "db.sql",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .output()
        .unwrap();
    common::assert_success(&out);
    assert_eq!(dump(&env, "db.sql"), std::fs::read(&blob).unwrap());
    let a = format!("{}/a.txt", data.display());
    assert_eq!(dump(&env, &a), b"file content");
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    let paths = snaps[0]["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 2);
    assert!(paths.iter().any(|p| p == "/db.sql"));
}

#[test]
fn a_failing_command_saves_no_snapshot_and_its_data_is_reused() {
    let env = Env::new();
    env.init();
    let blob = env.path("blob");
    std::fs::write(&blob, noise(8 << 20, 11)).unwrap();
    let cat = format!("cat '{}'", blob.display());
    let out = backup_command(
        &env,
        "dump.bin",
        &format!("{cat}; echo 'disk on fire' >&2; exit 3"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    assert!(stderr.contains("no snapshot was saved"), "{stderr}");
    assert!(
        stderr.contains("  disk on fire"),
        "the stderr tail: {stderr}"
    );
    assert!(env.snapshot_ids().is_empty());

    // What the failed run uploaded was indexed: the next run adds (almost) nothing.
    let out = backup_command(&env, "dump.bin", &cat);
    common::assert_success(&out);
    let summary = last_json(&String::from_utf8_lossy(&out.stdout));
    let added = summary["data_added"].as_u64().unwrap();
    assert!(added < (1 << 20), "{added} bytes added again of 8 MiB");
    assert_eq!(dump(&env, "dump.bin"), std::fs::read(&blob).unwrap());
}

#[test]
fn a_killed_or_missing_command_saves_no_snapshot() {
    let env = Env::new();
    env.init();
    let out = backup_command(&env, "x", "echo partial; kill -9 $$");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("killed by signal 9 (SIGKILL)"), "{stderr}");

    let out = env
        .cairn()
        .args([
            "backup",
            "--stdin-from-command",
            "--",
            "/no/such/dumper",
            "--all",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot run `/no/such/dumper --all`"),
        "{stderr}"
    );
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn stream_names_must_not_collide() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir(&data).unwrap();
    // `/tmp/...` puts `tmp` at the root of the snapshot.
    let top = data
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap()
        .to_string();
    let out = env
        .cairn()
        .arg("backup")
        .arg(&data)
        .args([
            "--stdin-from-command",
            "--stdin-filename",
            &top,
            "--",
            "echo",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is used twice"));
}

#[test]
fn restore_to_command_feeds_the_stream_and_reports_its_failure() {
    let env = Env::new();
    env.init();
    let blob = env.path("blob");
    std::fs::write(&blob, noise(2 << 20, 3)).unwrap();
    let out = backup_command(&env, "db.sql", &format!("cat '{}'", blob.display()));
    assert!(out.status.success());

    let copy = env.path("copy");
    let out = restore_to_sh(&env, &format!("cat > '{}'", copy.display()));
    common::assert_success(&out);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&blob).unwrap());

    let out = restore_to_sh(&env, "exit 7");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited with status 7"));

    let out = env
        .cairn()
        .args(["restore", "latest", "--to-command", "--", "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SNAPSHOT:PATH"));
}

/// A settings file with one source: a directory, two command streams and
/// hooks that record what they saw.
fn write_settings(env: &Env, second_stream: &str, before: &str) -> std::path::PathBuf {
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"in the directory").unwrap();
    let log = env.path("hooks.log");
    let config = env.path("cairn.toml");
    let text = format!(
        r#"
[repositories.main]
url = "{repo}"

[sources.app]
repository = "main"
paths = ["{data}"]
tags = ["app"]
before = ["sh", "-c", "{before}"]
after = ["sh", "-c", "echo after $CAIRN_SOURCE $CAIRN_BACKUP_STATUS $CAIRN_SNAPSHOT_ID >> {log}"]

[[sources.app.commands]]
name = "db.sql"
command = ["echo", "the database"]

[[sources.app.commands]]
name = "cache.rdb"
command = ["sh", "-c", "{second_stream}"]
"#,
        repo = env.url().to_str().unwrap(),
        data = data.display(),
        log = log.display(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn backup_source(env: &Env, config: &Path, source: &str) -> std::process::Output {
    env.cairn()
        .arg("backup")
        .arg("--config")
        .arg(config)
        .args(["--source", source])
        .output()
        .unwrap()
}

fn hook_log(env: &Env) -> String {
    std::fs::read_to_string(env.path("hooks.log")).unwrap_or_default()
}

#[test]
fn a_configured_source_is_one_atomic_snapshot_with_hooks() {
    let env = Env::new();
    env.init();
    let log = env.path("hooks.log");
    let before = format!("echo before >> {}", log.display());
    let config = write_settings(&env, "echo the cache", &before);
    let out = backup_source(&env, &config, "app");
    common::assert_success(&out);
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 1);
    let log_text = hook_log(&env);
    assert_eq!(log_text, format!("before\nafter app success {}\n", ids[0]));
    assert_eq!(dump(&env, "db.sql"), b"the database\n");
    assert_eq!(dump(&env, "cache.rdb"), b"the cache\n");
    let f = format!("{}/f", env.path("data").display());
    assert_eq!(dump(&env, &f), b"in the directory");
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps[0]["tags"], serde_json::json!(["app"]));
    assert_eq!(snaps[0]["paths"].as_array().unwrap().len(), 3);
}

#[test]
fn one_failing_stream_fails_the_whole_source_and_the_after_hook_hears_it() {
    let env = Env::new();
    env.init();
    let config = write_settings(&env, "echo half; exit 2", "true");
    let out = backup_source(&env, &config, "app");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited with status 2"));
    assert!(env.snapshot_ids().is_empty(), "all or nothing");
    assert_eq!(hook_log(&env), "after app failure\n");
}

#[test]
fn a_failing_before_hook_stops_the_backup() {
    let env = Env::new();
    env.init();
    let config = write_settings(&env, "echo c", "exit 9");
    let out = backup_source(&env, &config, "app");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the before hook"), "{stderr}");
    assert!(stderr.contains("did not run"), "{stderr}");
    assert!(env.snapshot_ids().is_empty());
    assert_eq!(
        hook_log(&env),
        "",
        "after runs only once before has succeeded"
    );
}

#[test]
fn an_unknown_source_lists_the_known_ones() {
    let env = Env::new();
    let config = write_settings(&env, "true", "true");
    let out = backup_source(&env, &config, "nope");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source \"nope\" is not in the config file (it has: app)"),
        "{stderr}"
    );
    assert!(!Path::new(&env.repo).join("config").exists());
}
