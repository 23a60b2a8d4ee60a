//! Object storage against the real server of `scripts/object-store.sh`
//! (OpenStack Swift with s3api: S3 and Swift on one loopback port), which
//! `scripts/test.sh` starts and describes through the environment. Run
//! without it (plain `cargo test`), these tests say so and pass, unless
//! CAIRN_TEST_REQUIRE_OBJECT_STORE=1 (set by scripts/test.sh) makes that a failure.

mod common;

use common::*;
use std::process::Command as Process;
use std::time::{Duration, Instant};

/// The server's directory, or None when no server was started.
fn server() -> Option<std::path::PathBuf> {
    match std::env::var_os("CAIRN_TEST_OBJECT_STORE_DIR") {
        Some(d) => Some(d.into()),
        None if std::env::var("CAIRN_TEST_REQUIRE_OBJECT_STORE").as_deref() == Ok("1") => {
            panic!("CAIRN_TEST_OBJECT_STORE_DIR is not set: run through scripts/test.sh")
        }
        None => {
            eprintln!("no object store (run scripts/test.sh): skipped");
            None
        }
    }
}

/// Runs `scripts/object-store.sh ACTION DIR`; returns the variables it exports.
fn object_store(action: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/object-store.sh");
    let out = Process::new("bash")
        .arg(script)
        .arg(action)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "object-store.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// A server of the test's own (stopped on drop), for tests that stop it.
struct PrivateServer {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl PrivateServer {
    fn start() -> PrivateServer {
        let dir = tempfile::tempdir().unwrap();
        let vars = object_store("start", dir.path());
        PrivateServer { dir, vars }
    }

    fn var(&self, name: &str) -> String {
        self.vars.iter().find(|(k, _)| k == name).unwrap().1.clone()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        object_store("stop", self.dir.path());
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} (scripts/object-store.sh)"))
}

/// An environment whose repository is a fresh prefix of the test bucket.
fn s3_env() -> Env {
    remote_env("s3", &var("CAIRN_TEST_S3_BUCKET"))
}

fn swift_env() -> Env {
    remote_env("swift", &var("CAIRN_TEST_SWIFT_CONTAINER"))
}

/// `SCHEME://BUCKET/<unique>`, unique per test (its temporary directory's name).
fn remote_env(scheme: &str, bucket: &str) -> Env {
    let mut env = Env::new();
    let unique = env.dir.path().file_name().unwrap().to_str().unwrap();
    env.remote = Some(format!("{scheme}://{bucket}/{unique}"));
    env
}

/// `restore latest` puts a backed-up path at TARGET/<its absolute path>.
fn assert_restores(src: &std::path::Path, target: &std::path::Path) {
    assert_same_tree(src, &target.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn s3_and_swift_keep_files_exactly_and_report_their_requests() {
    if server().is_none() {
        return;
    }
    for env in [s3_env(), swift_env()] {
        env.init();
        let src = env.path("src");
        awkward_tree(&src);
        let first = last_json(&env.ok(&["backup", "--json", src.to_str().unwrap()]));
        let put = first["requests"]["put"].as_u64().unwrap();
        assert!(
            put >= 4,
            "packs, index, snapshot and lock are PUTs: {first}"
        );
        // a normal backup never lists data/: its LISTs are keys, locks,
        // index and snapshots
        assert!(first["requests"]["list"].as_u64().unwrap() <= 8, "{first}");
        let again = last_json(&env.ok(&["backup", "--json", src.to_str().unwrap()]));
        assert_eq!(again["files_new"], 0, "{again}");
        assert!(
            again["requests"]["put"].as_u64().unwrap() <= 4,
            "an unchanged backup uploads only trees, index, snapshot and lock: {again}"
        );
        let target = env.path("out");
        let (code, err) = env.restore_into(&target, &["latest"]);
        assert_eq!(code, Some(0), "{err}");
        assert_restores(&src, &target);
        assert!(env.check_clean(&["--read-data"]).is_empty());
    }
}

/// CAIRN_LOG=debug shows every storage request, never the credentials
/// (the request signer logs them at debug level).
#[test]
fn a_debug_log_holds_no_credentials() {
    if server().is_none() {
        return;
    }
    let env = s3_env();
    env.init();
    let src = env.path("src");
    noise_files(&src, 2, 10_000, 9);
    let out = env
        .cairn()
        .env("CAIRN_LOG", "debug")
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_success(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("list started"), "no request logged: {log}");
    let secret = var("AWS_SECRET_ACCESS_KEY");
    assert!(secret.len() >= 8, "a secret too short to look for");
    assert!(!log.contains(&secret), "the secret key is in the log");
}

#[test]
fn swift_v1_auth_from_restics_variables() {
    if server().is_none() {
        return;
    }
    let env = swift_env();
    env.init();
    let src = env.path("src");
    noise_files(&src, 2, 100_000, 5);
    let out = env
        .cairn()
        .env_remove("SWIFT_ENDPOINT")
        .env_remove("SWIFT_TOKEN")
        .env("OS_AUTH_URL", var("OS_AUTH_URL"))
        .env("OS_USERNAME", var("OS_USERNAME"))
        .env("OS_PASSWORD", var("OS_PASSWORD"))
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_success(&out);
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn wrong_credentials_and_missing_buckets_get_plain_errors() {
    if server().is_none() {
        return;
    }
    let env = s3_env();
    env.init();
    let secret = "wrong-secret-7f3a9c";
    let out = env
        .cairn()
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .arg("snapshots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("SignatureDoesNotMatch") || err.contains("permission denied"),
        "{err}"
    );
    assert!(!err.contains(secret) && !err.contains("<?xml"), "{err}");

    let swift = swift_env();
    let out = swift
        .cairn()
        .env("SWIFT_TOKEN", "AUTH_tk-not-valid")
        .arg("init")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("permission denied") || err.contains("401"),
        "{err}"
    );
    assert!(!err.contains("AUTH_tk-not-valid"), "{err}");

    for url in ["s3://no-such-bucket-cairn/x", "swift://no-such-container/x"] {
        let out = env
            .cairn()
            .env("CAIRN_REPOSITORY", url)
            .arg("init")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("does not exist; create it first"),
            "{url}: {err}"
        );
        let out = env
            .cairn()
            .env("CAIRN_REPOSITORY", url)
            .arg("snapshots")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("does not exist; create it first"),
            "{url}: {err}"
        );
    }
}

#[test]
fn a_rate_limited_backup_keeps_to_the_limit_and_completes() {
    if server().is_none() {
        return;
    }
    let env = s3_env();
    env.init();
    let src = env.path("src");
    noise_files(&src, 3, 1_000_000, 8);
    let start = Instant::now();
    env.ok(&["--limit-upload", "1024", "backup", src.to_str().unwrap()]);
    // 3 MB at 1 MiB/s: at least ~2 s beyond the first second's reservation
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let target = env.path("out");
    let (code, err) = env.restore_into(&target, &["latest"]);
    assert_eq!(code, Some(0), "{err}");
    assert_restores(&src, &target);
}

#[test]
fn four_concurrent_backups_and_a_prune_lose_nothing() {
    if server().is_none() {
        return;
    }
    let env = s3_env();
    env.init();
    let first = env.path("first");
    noise_files(&first, 4, 1_000_000, 20);
    env.ok(&["backup", first.to_str().unwrap()]);
    // garbage for the prune to remove while the backups run
    let forgotten = env.snapshot_ids().pop().unwrap();
    env.ok(&["forget", &forgotten]);
    let sources: Vec<_> = (0..4)
        .map(|i| {
            let dir = env.path(&format!("host{i}"));
            noise_files(&dir, 3, 2_000_000, 100 + i);
            dir
        })
        .collect();
    let children: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            env.process()
                .args([
                    "--retry-lock",
                    "2m",
                    "backup",
                    "--host",
                    &format!("host{i}"),
                ])
                .arg(dir)
                // each host has its own cache, as separate machines would
                .env("CAIRN_CACHE_DIR", env.path(&format!("cache{i}")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // no waiting: backups hold no lock
    env.ok(&["prune"]);
    for child in children {
        let out = child.wait_with_output().unwrap();
        common::assert_success(&out);
    }
    assert_eq!(env.snapshot_ids().len(), 4);
    for (i, dir) in sources.iter().enumerate() {
        let target = env.path(&format!("out{i}"));
        let (code, err) = env.restore_into(&target, &["latest", "--host", &format!("host{i}")]);
        assert_eq!(code, Some(0), "{err}");
        assert_restores(dir, &target);
    }
    // the forgotten snapshot's packs are condemned, waiting for their grace
    let notes = env.check_clean(&["--read-data"]);
    assert!(notes.iter().all(|n| n.contains("condemned")), "{notes:?}");
}

#[test]
fn a_server_gone_mid_backup_fails_clearly_and_the_next_backup_completes() {
    if server().is_none() {
        return;
    }
    // stopping the shared server would fail the tests running beside this one
    let own = PrivateServer::start();
    let mut env = s3_env();
    let unique = env
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    env.remote = Some(format!("s3://{}/{unique}", own.var("CAIRN_TEST_S3_BUCKET")));
    let endpoint = own.var("AWS_ENDPOINT_URL");
    let secret = own.var("AWS_SECRET_ACCESS_KEY");
    let cairn = |args: &[&str]| {
        env.process()
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = cairn(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["init"]);
    let src = env.path("src");
    noise_files(&src, 6, 8_000_000, 31);
    let child = env
        .process()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .args(["--limit-upload", "8192", "backup", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    object_store("stop", own.dir.path());
    let out = child.wait_with_output().unwrap();
    object_store("start", own.dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("retry"),
        "retries are announced ({:?}): {err}",
        out.status
    );
    assert!(
        err.contains("could not be reached") || err.contains("gave up"),
        "{err}"
    );
    assert!(ok(&["snapshots", "--json"]).trim() == "[]");
    // check passes; at most it notes the packs the failed run uploaded but
    // could not index
    let check = last_json(&ok(&["check", "--json"]));
    let notes = check["notes"]
        .as_array()
        .map(Vec::clone)
        .unwrap_or_default();
    assert!(
        notes
            .iter()
            .all(|n| n.as_str().unwrap().contains("in no index")),
        "{check}"
    );
    let done = last_json(&ok(&["backup", "--json", src.to_str().unwrap()]));
    assert_eq!(done["message_type"], "summary");
    let target = env.path("out");
    ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_restores(&src, &target);
    ok(&["prune"]);
    let check: serde_json::Value = last_json(&ok(&["check", "--read-data", "--json"]));
    assert!(
        check["errors"].as_array().is_none_or(Vec::is_empty),
        "{check}"
    );
    // the failed run's uploads are younger than an hour: prune leaves them
    // (they could be a running backup's), and a later prune removes them
    assert!(
        check["notes"].as_array().is_none_or(|n| n
            .iter()
            .all(|n| n.as_str().unwrap().contains("in no index"))),
        "{check}"
    );
}

/// A proxy in front of the test server that forwards every byte both ways,
/// except that a connection on which the client asks for a key containing
/// `stall_on` forwards nothing more from then on, and stays open: a store
/// that stalls in the middle of a restore. Returns its endpoint URL.
fn stalling_proxy(upstream: &str, stall_on: String) -> String {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut client_out, mut server_in) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let stall_on = stall_on.clone().into_bytes();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                // the end of the previous read, so a key split between two
                // reads is still seen
                let mut seen: Vec<u8> = Vec::new();
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(stall_on.len()).any(|w| w == stall_on) {
                        // hold both sockets open and silent
                        let _held = (client, server);
                        loop {
                            std::thread::sleep(Duration::from_secs(60));
                        }
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    let keep = seen.len().saturating_sub(stall_on.len());
                    seen.drain(..keep);
                }
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_in, &mut client_out);
            });
        }
    });
    url
}

/// The bad-input case of a store that stops answering mid-restore: the
/// restore gives up after its retries with an error that says so, writes
/// every file whose data it could read, and the rerun completes the rest
/// and skips the files already restored.
#[test]
fn a_store_that_stalls_mid_restore_fails_clearly_and_a_rerun_completes() {
    if server().is_none() {
        return;
    }
    let env = s3_env();
    env.init();
    let src = env.path("src");
    noise_files(&src, 3, 4_000_000, 47);
    for i in 0..10 {
        std::fs::write(
            src.join(format!("small{i}.txt")),
            format!("small file {i}\n"),
        )
        .unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    // 12 MB of data make a full pack and a smaller one (read in one
    // request: each request stalls its own timeouts and retries); the
    // trees' pack is smaller still
    let packs = env.objects("data/");
    assert!(packs.len() >= 3, "{packs:?}");
    let (stalled, _) = packs
        .iter()
        .filter(|(_, size)| **size > 1_000_000)
        .min_by_key(|(_, size)| **size)
        .unwrap();
    let stalled = stalled.rsplit('/').next().unwrap().to_string();
    let proxy = stalling_proxy(&var("AWS_ENDPOINT_URL"), stalled.clone());

    let target = env.path("out");
    let started = Instant::now();
    let out = env
        .process()
        .env("AWS_ENDPOINT_URL", &proxy)
        .env("CAIRN_IO_TIMEOUT", "2s")
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a stalled pack must fail the restore: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "gave up only after {:?}",
        started.elapsed()
    );
    assert!(err.contains("retry"), "retries are announced: {err}");
    assert!(err.contains("gave up"), "{err}");
    assert!(err.contains(&stalled), "the error names the pack: {err}");
    assert!(err.contains("timeout"), "{err}");

    let rerun = last_json(&env.ok(&[
        "restore",
        "latest",
        "--json",
        "--target",
        target.to_str().unwrap(),
    ]));
    assert!(
        rerun["files_skipped"].as_u64().unwrap() >= 1,
        "files restored before the stall are not written again: {rerun}"
    );
    assert!(rerun["files_restored"].as_u64().unwrap() >= 1, "{rerun}");
    assert_restores(&src, &target);
}
