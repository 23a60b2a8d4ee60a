//! Notifications of sources run by hand (`cairn backup --config F --source
//! NAME`): webhook bodies, healthchecks paths, ntfy headers, and retries
//! while the receiver is down, against a local HTTP receiver. Those of
//! `serve` (jobs, staleness) are in tests/serve.rs.

mod common;

use common::{Env, Receiver};
use std::path::PathBuf;

/// A settings file: source `ok` (a stream), `broken` (a sqlite database
/// that is not there), and `notifications` as given.
fn settings(env: &Env, notifications: &str) -> PathBuf {
    let text = format!(
        "[repositories.main]\nurl = \"/from-the-environment\"\n\n\
         [sources.ok]\nrepository = \"main\"\n\
         [[sources.ok.commands]]\nname = \"hello.txt\"\ncommand = [\"echo\", \"hello\"]\n\n\
         [sources.broken]\nrepository = \"main\"\ntype = \"sqlite\"\n\
         databases = [\"/nonexistent/app.db\"]\n\n{notifications}\n"
    );
    let path = env.path("cairn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn backup(env: &Env, config: &PathBuf, source: &str) -> std::process::Output {
    env.cairn()
        .args(["backup", "--source", source, "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn a_backup_by_hand_notifies_webhooks_healthchecks_and_ntfy() {
    let env = Env::new();
    env.init();
    let hook = Receiver::start();
    let config = settings(
        &env,
        &format!(
            "[[notifications]]\nurl = \"{}\"\n\n\
             [[notifications]]\nurl = \"{}\"\nkind = \"healthchecks\"\n\n\
             [[notifications]]\nurl = \"{}\"\nkind = \"ntfy\"\nevents = [\"failure\"]\nsources = [\"broken\"]\n",
            hook.url("/hook"),
            hook.url("/ping/abc-123"),
            hook.url("/ntfy/cairn")
        ),
    );
    let out = backup(&env, &config, "ok");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = env.snapshot_ids().pop().unwrap();
    let start = hook.wait_for(10, |r| r.path == "/hook" && r.json()["event"] == "start");
    assert_eq!(start.json()["source"], "ok");
    assert_eq!(start.json()["kind"], "backup");
    assert_eq!(start.header("content-type"), Some("application/json"));
    let success = hook.wait_for(10, |r| r.path == "/hook" && r.json()["event"] == "success");
    assert_eq!(success.json()["snapshot_id"], snapshot.as_str());
    assert_eq!(success.json()["repository"], "main");
    assert!(success.json()["time"].as_str().unwrap().ends_with('Z'));
    hook.wait_for(10, |r| r.path == "/ping/abc-123/start");
    hook.wait_for(10, |r| r.path == "/ping/abc-123" && r.method == "POST");

    let out = backup(&env, &config, "broken");
    assert_eq!(out.status.code(), Some(1));
    let failure = hook.wait_for(10, |r| r.path == "/hook" && r.json()["event"] == "failure");
    let error = failure.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("/nonexistent/app.db: No such file or directory"),
        "{error}"
    );
    assert_eq!(failure.json()["source"], "broken");
    let fail_ping = hook.wait_for(10, |r| r.path == "/ping/abc-123/fail");
    assert!(
        fail_ping.body.contains("backup of source broken failed"),
        "{}",
        fail_ping.body
    );
    let ntfy = hook.wait_for(10, |r| r.path == "/ntfy/cairn");
    assert_eq!(ntfy.header("priority"), Some("high"));
    assert!(
        ntfy.body
            .starts_with("cairn: backup of source broken failed"),
        "{}",
        ntfy.body
    );
    // ntfy wants failures of `broken` only
    let to_ntfy = hook
        .requests()
        .iter()
        .filter(|r| r.path == "/ntfy/cairn")
        .count();
    assert_eq!(to_ntfy, 1);
}

#[test]
fn a_receiver_that_is_down_for_a_while_still_gets_the_notification() {
    let env = Env::new();
    env.init();
    let hook = Receiver::start_after(std::time::Duration::from_secs(2));
    let config = settings(
        &env,
        &format!(
            "[[notifications]]\nurl = \"{}\"\nevents = [\"success\"]\n",
            hook.url("/hook")
        ),
    );
    let started = std::time::Instant::now();
    let out = backup(&env, &config, "ok");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = hook.requests();
    assert_eq!(got.len(), 1, "delivered once, by a retry: {got:#?}");
    assert!(got[0].at.duration_since(started) >= std::time::Duration::from_secs(2));
    assert_eq!(got[0].json()["event"], "success");
}

#[test]
fn a_receiver_that_never_answers_does_not_fail_the_backup() {
    let env = Env::new();
    env.init();
    // a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = settings(
        &env,
        &format!(
            "[[notifications]]\nurl = \"http://127.0.0.1:{port}/hook\"\nevents = [\"success\"]\n"
        ),
    );
    let out = backup(&env, &config, "ok");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.snapshot_ids().len(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gave up waiting for a notification"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("/hook"),
        "the URL's path stays out of messages: {stderr}"
    );
}

#[test]
fn a_bad_notification_url_is_refused_with_the_settings() {
    let env = Env::new();
    env.init();
    let config = settings(&env, "[[notifications]]\nurl = \"ftp://example.org/x\"\n");
    let out = backup(&env, &config, "ok");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[[notifications]] number 1"), "{stderr}");
    assert!(env.snapshot_ids().is_empty());
}
