//! `cairn serve` as a real process, driven over HTTP: backups, restores,
//! forget, the scheduler, cancelling, job history across restarts, and the
//! errors the API promises (400, 401, 404, 409).

mod common;

use common::{assert_same_tree, assert_success, noise, Env, PASSWORD};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789abcdef";

struct Server {
    child: Child,
    base: String,
    http: Client,
}

impl Server {
    fn start(env: &Env, config: &PathBuf) -> Server {
        Server::start_with(env, config, &[])
    }

    /// Starts serve with `extra` added to its environment.
    fn start_with(env: &Env, config: &PathBuf, extra: &[(&str, &str)]) -> Server {
        let port = free_port();
        let child = env
            .process()
            .envs(extra.iter().copied())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(env.path("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.http.get(server.url("/healthz")).send().is_err() {
            assert!(Instant::now() < deadline, "serve did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// The Prometheus text of /metrics.
    fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap()
    }

    /// Polls a job until it is no longer running.
    fn follow(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, job) = self.get(&format!("/jobs/{id}"));
            assert_eq!(status, 200, "{job}");
            if job["state"] != "running" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} still running: {job}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_job(&self, path: &str, body: Value) -> Value {
        let (status, job) = self.post(path, body);
        assert_eq!(status, 202, "{path}: {job}");
        self.follow(job["id"].as_str().unwrap())
    }

    /// SIGTERM, as a service manager stops it; returns the exit code.
    fn stop(mut self) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap().code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A settings file: `files` (a directory), `slow` (a stream that takes a
/// while) and `ticker` (scheduled every 2 seconds).
fn settings(env: &Env, schedule_ticker: bool) -> PathBuf {
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("report.bin"), noise(1 << 20, 5)).unwrap();
    std::fs::write(env.path("password"), PASSWORD).unwrap();
    std::fs::write(env.path("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::create_dir_all(env.path("restores")).unwrap();
    let ticker = if schedule_ticker {
        "schedule = \"*/2 * * * * *\""
    } else {
        ""
    };
    let text = format!(
        r#"
[server]
token_file = "{token}"
state_dir = "{state}"
restore_roots = ["{restores}"]

[repositories.main]
url = "{repo}"
password_file = "{password}"
cache_dir = "{cache}"

[sources.files]
repository = "main"
paths = ["{data}"]

[sources.slow]
repository = "main"
[[sources.slow.commands]]
name = "slow.txt"
command = ["sh", "-c", "echo start; sleep 20; echo end"]

[sources.ticker]
repository = "main"
{ticker}
[[sources.ticker.commands]]
name = "tick.txt"
command = ["date"]
[sources.ticker.retention]
keep_last = 1
"#,
        token = env.path("token").display(),
        state = env.path("state").display(),
        restores = env.path("restores").display(),
        repo = env.url().to_str().unwrap(),
        password = env.path("password").display(),
        cache = env.cache.display(),
        data = data.display(),
    );
    let path = env.path("cairn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn snapshots(server: &Server) -> Vec<Value> {
    let (status, list) = server.get("/repositories/main/snapshots");
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

#[test]
fn the_api_backs_up_restores_and_forgets() {
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let server = Server::start(&env, &config);

    let job = server.start_job("/sources/files/backup", json!(null));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["trigger"], "api");
    let first = job["snapshot_id"].as_str().unwrap().to_string();
    assert!(job["bytes_added"].as_u64().unwrap() >= 1 << 20, "{job}");
    let list = snapshots(&server);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], first.as_str());

    // Restore one file into an allowed directory; the bytes match.
    let source_file = env.path("data").join("report.bin");
    let target = env.path("restores").join("one");
    let job = server.start_job(
        "/repositories/main/restore",
        json!({"snapshot": &first[..8], "target": target, "include": [source_file]}),
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let restored = target.join(source_file.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&source_file).unwrap()
    );

    // A second backup, then forget by policy keeps only the newest.
    std::fs::write(env.path("data").join("new.txt"), b"more").unwrap();
    let second = server.start_job("/sources/files/backup", json!(null));
    assert_eq!(second["state"], "succeeded", "{second}");

    // what changed, where a name occurs, how much there is: in-process reads
    let (status, diff) = server.get(&format!(
        "/repositories/main/diff?from={}&to={}",
        first,
        second["snapshot_id"].as_str().unwrap()
    ));
    assert_eq!(status, 200, "{diff}");
    let added = env.path("data").join("new.txt").display().to_string();
    assert_eq!(
        diff["changes"],
        json!([{"path": added, "modifier": "+"}]),
        "{diff}"
    );
    assert_eq!(diff["statistics"]["added"]["files"], 1, "{diff}");
    let (status, found) = server.get("/repositories/main/find?pattern=new.txt");
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["snapshots"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(
        found["snapshots"][0]["snapshot"], second["snapshot_id"],
        "{found}"
    );
    let (status, stats) = server.get("/repositories/main/stats?mode=files-by-contents");
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["total_file_count"], 2, "{stats}");
    let (status, body) = server.get("/repositories/main/stats?mode=everything");
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/repositories/main/find?pattern=a%5B");
    assert_eq!(status, 400, "{body}");
    let job = server.start_job(
        "/repositories/main/forget",
        json!({"keep_last": 1, "prune": true}),
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let list = snapshots(&server);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], second["snapshot_id"]);
    let (status, snap) = server.get("/repositories/main/snapshots/latest");
    assert_eq!((status, &snap["id"]), (200, &second["snapshot_id"]));
    // `latest` follows the CLI's rules: narrowed by host, tag and path
    let host = snap["hostname"].as_str().unwrap().to_string();
    let (status, same) = server.get(&format!("/repositories/main/snapshots/latest?host={host}"));
    assert_eq!((status, &same["id"]), (200, &second["snapshot_id"]));
    let (status, body) = server.get("/repositories/main/snapshots/latest?host=elsewhere");
    assert_eq!(status, 404, "{body}");
    let short = &second["snapshot_id"].as_str().unwrap()[..2];
    let (status, one) = server.get(&format!("/repositories/main/snapshots/{short}"));
    assert_eq!((status, &one["id"]), (200, &second["snapshot_id"]));

    // Directory listings come from the cached trees, the CLI's entries.
    let data_dir = env.path("data");
    let (status, entries) = server.get(&format!(
        "/repositories/main/snapshots/latest/ls?path={}",
        data_dir.display()
    ));
    assert_eq!(status, 200, "{entries}");
    let names: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new.txt", "report.bin"], "{entries}");
    assert_eq!(entries[1]["size"], 1 << 20, "{entries}");
    assert_eq!(entries[1]["type"], "file", "{entries}");
    let cli = env.ok(&["ls", "--json", "latest", data_dir.to_str().unwrap()]);
    let cli_entry: Value = cli
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["name"] == "report.bin")
        .unwrap();
    assert_eq!(cli_entry, entries[1], "the API and `ls --json` agree");
    let (status, body) = server.get("/repositories/main/snapshots/latest/ls?path=/no/such/dir");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not found"),
        "{body}"
    );

    let job = server.start_job("/repositories/main/check", json!({"read_data": true}));
    assert_eq!(job["state"], "succeeded", "{job}");
    // the report is the operation's own, typed
    assert_eq!(job["report"]["kind"], "check", "{job}");
    assert!(job["report"]["packs_read"].as_u64().unwrap() >= 1, "{job}");
    assert_eq!(job["report"]["errors"], json!([]), "{job}");

    let metrics = server.metrics();
    assert!(metrics.contains("cairn_backup_last_success_timestamp_seconds{source=\"files\"}"));
    assert!(
        metrics.contains("cairn_jobs{kind=\"backup\",state=\"succeeded\"} 2"),
        "{metrics}"
    );
    for line in [
        "# TYPE cairn_schedule_skipped_total counter",
        "cairn_repository_up{repository=\"main\"} 1",
        "cairn_repository_snapshots{repository=\"main\"} 1",
        "cairn_repository_last_check_success{repository=\"main\"} 1",
        "cairn_build_info{version=",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("cairn_backup_last_success_added_bytes{source=\"files\"}"));
    let stored = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_repository_stored_bytes{repository=\"main\"} "))
        .unwrap();
    assert!(stored.parse::<f64>().unwrap() > 1e6, "{metrics}");

    // Neither responses nor records nor the log carry a secret.
    let (_, jobs) = server.get("/jobs");
    assert_eq!(server.stop(), Some(0));
    let mut everything = jobs.to_string();
    for entry in std::fs::read_dir(env.path("state/jobs")).unwrap() {
        everything += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    everything += &std::fs::read_to_string(env.path("serve.log")).unwrap();
    assert!(!everything.contains(TOKEN) && !everything.contains(PASSWORD));
}

/// Jobs run in-process and share each repository's index cache: two
/// backups at once never fall back to a private cache that downloads the
/// whole index again (each used to run as its own process).
#[test]
fn jobs_on_one_repository_share_its_index_cache() {
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let text = std::fs::read_to_string(&config).unwrap()
        + r#"
[sources.pause_a]
repository = "main"
[[sources.pause_a.commands]]
name = "a.txt"
command = ["sh", "-c", "sleep 2; echo a"]
[sources.pause_b]
repository = "main"
[[sources.pause_b.commands]]
name = "b.txt"
command = ["sh", "-c", "sleep 2; echo b"]
"#;
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&env, &config);
    let (status, a) = server.post("/sources/pause_a/backup", json!(null));
    assert_eq!(status, 202, "{a}");
    let (status, b) = server.post("/sources/pause_b/backup", json!(null));
    assert_eq!(status, 202, "{b}");
    let a = server.follow(a["id"].as_str().unwrap());
    let b = server.follow(b["id"].as_str().unwrap());
    assert_eq!(
        (&a["state"], &b["state"]),
        (&json!("succeeded"), &json!("succeeded"))
    );
    // they overlapped: each started before the other finished
    assert!(a["created"].as_str() < b["finished"].as_str(), "{a}\n{b}");
    assert!(b["created"].as_str() < a["finished"].as_str(), "{a}\n{b}");
    assert_eq!(server.stop(), Some(0));
    // (the note would be in serve's log, or in a child's log tail)
    let log =
        std::fs::read_to_string(env.path("serve.log")).unwrap() + &a.to_string() + &b.to_string();
    assert!(!log.contains("temporary cache"), "{log}");
}

#[test]
fn secrets_reach_no_argv_no_record_and_no_command_of_a_source() {
    const STORAGE_SECRET: &str = "storage-secret-5f1e0c";
    const AWS_SECRET: &str = "aws-secret-77a0b1";
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let hook_env = env.path("hook-env");
    // a storage option that holds a secret (a local repository ignores
    // s3.* settings, but serve must hand it on as it would to S3), and a
    // source whose stream records what its command sees: its environment
    // and its parent's argv (jobs run inside serve: serve's own)
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "cache_dir = ",
        &format!("options = {{ \"s3.secret_access_key\" = \"{STORAGE_SECRET}\" }}\ncache_dir = "),
    ) + &format!(
        r#"
[sources.spy]
repository = "main"
pass_env = ["AWS_ACCESS_KEY_ID"]
before = ["sh", "-c", "env > {hook}"]
[[sources.spy.commands]]
name = "seen.txt"
command = ["sh", "-c", "env; echo; tr '\\0' ' ' < /proc/$PPID/cmdline"]
"#,
        hook = hook_env.display()
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start_with(
        &env,
        &config,
        &[
            ("CAIRN_API_TOKEN", TOKEN),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ("AWS_ACCESS_KEY_ID", "passed-on-key-id"),
        ],
    );
    let job = server.start_job("/sources/spy/backup", json!(null));
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["snapshot_id"].as_str().unwrap();
    let seen = env.ok(&["dump", id, "/seen.txt"]);
    let hook = std::fs::read_to_string(&hook_env).unwrap();
    for text in [&seen, &hook] {
        for secret in [TOKEN, PASSWORD, STORAGE_SECRET, AWS_SECRET] {
            assert!(
                !text.contains(secret),
                "{secret} reached a command:\n{text}"
            );
        }
        // what the settings pass on explicitly does arrive
        assert!(
            text.contains("AWS_ACCESS_KEY_ID=passed-on-key-id"),
            "{text}"
        );
    }
    assert!(seen.contains("serve"), "not serve's argv: {seen}");
    let (_, jobs) = server.get("/jobs");
    let (_, repos) = server.get("/repositories");
    assert_eq!(server.stop(), Some(0));
    let mut everything = jobs.to_string() + &repos.to_string();
    for entry in std::fs::read_dir(env.path("state/jobs")).unwrap() {
        everything += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    everything += &std::fs::read_to_string(env.path("serve.log")).unwrap();
    for secret in [TOKEN, PASSWORD, STORAGE_SECRET] {
        assert!(!everything.contains(secret), "{secret} in a record or log");
    }
}

#[test]
fn the_api_says_what_is_wrong() {
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let server = Server::start(&env, &config);
    let jobs_url = server.url("/jobs");

    let r = server.http.get(&jobs_url).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = server
        .http
        .get(&jobs_url)
        .bearer_auth("wrong-token-0000000000")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );

    let (status, body) = server.post("/sources/nope/backup", json!(null));
    assert_eq!(status, 404);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("no source \"nope\""));
    assert_eq!(server.get("/repositories/nope/snapshots").0, 404);
    assert_eq!(server.get("/jobs/0123abcd").0, 404);
    assert_eq!(server.get("/repositories/main/snapshots/abcdef12").0, 404);
    // a filter no argument can carry is a bad request, not a server error
    let (status, body) = server.get("/repositories/main/snapshots?path=%2Fa%00b");
    assert_eq!(status, 400, "{body}");

    let (status, body) = server.post(
        "/repositories/main/restore",
        json!({"snapshot": "latest", "target": "/tmp/x", "colour": "red"}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{body}"
    );
    let r = server
        .http
        .post(server.url("/repositories/main/forget"))
        .bearer_auth(TOKEN)
        .body("{\"keep_last\": ")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, body) = server.post("/repositories/main/forget", json!({}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.post(
        "/repositories/main/restore",
        json!({"snapshot": "latest", "target": "/etc"}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("below one of"),
        "{body}"
    );
    let (status, _) = server.post(
        "/repositories/main/restore",
        json!({"snapshot": "--help", "target": env.path("restores")}),
    );
    assert_eq!(status, 400);
    // a link inside an allowed root does not lead out of it
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.path("restores").join("x")).unwrap();
    for target in [env.path("restores/x"), env.path("restores/x/deeper")] {
        let (status, body) = server.post(
            "/repositories/main/restore",
            json!({"snapshot": "latest", "target": target}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("is a symbolic link"),
            "{body}"
        );
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // A backup of a source that is already running: 409; then cancel it.
    let (status, slow) = server.post("/sources/slow/backup", json!(null));
    assert_eq!(status, 202);
    let (status, body) = server.post("/sources/slow/backup", json!(null));
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("already running"));
    // prune runs beside a backup (it never makes one wait), but not beside
    // another maintenance job
    let (status, prune) = server.post("/repositories/main/prune", json!({}));
    assert_eq!(status, 202, "prune beside a backup: {prune}");
    let (status, body) = server.post("/repositories/main/forget", json!({"keep_last": 5}));
    assert!(
        status == 409 || status == 202,
        "forget beside prune: {status} {body}"
    );
    if status == 409 {
        assert!(
            body["error"].as_str().unwrap().contains("one at a time"),
            "{body}"
        );
    } else {
        server.follow(body["id"].as_str().unwrap());
    }
    let pruned = server.follow(prune["id"].as_str().unwrap());
    assert_eq!(pruned["state"], "succeeded", "{pruned}");
    std::thread::sleep(Duration::from_millis(500));
    let id = slow["id"].as_str().unwrap();
    assert_eq!(
        server.post(&format!("/jobs/{id}/cancel"), json!(null)).0,
        202
    );
    let job = server.follow(id);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(
        server.post(&format!("/jobs/{id}/cancel"), json!(null)).0,
        409
    );
    assert!(
        snapshots(&server).is_empty(),
        "a cancelled stream saves nothing"
    );
}

#[test]
fn the_schedule_fires_and_history_survives_a_restart() {
    let env = Env::new();
    env.init();
    let config = settings(&env, true);
    let server = Server::start(&env, &config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let scheduled = loop {
        let (_, jobs) = server.get("/jobs?source=ticker&state=succeeded");
        if let Some(done) = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["trigger"] == "schedule")
        {
            break done.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled job succeeded: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(scheduled["snapshot_id"].is_string(), "{scheduled}");
    let (_, sources) = server.get("/sources");
    let ticker = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ticker")
        .unwrap();
    assert!(ticker["next_run"].is_string(), "{ticker}");
    assert_eq!(server.stop(), Some(0));

    // Retention (keep_last = 1) ran after each scheduled backup.
    let ids = env.snapshot_ids();
    assert!(ids.len() <= 2, "{ids:?}");

    let config = settings(&env, false);
    let server = Server::start(&env, &config);
    let id = scheduled["id"].as_str().unwrap();
    let (status, job) = server.get(&format!("/jobs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["snapshot_id"], scheduled["snapshot_id"]);
}

#[test]
fn a_bad_settings_file_stops_serve_with_file_and_line() {
    let env = Env::new();
    let config = settings(&env, false);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("paths = [", "pathz = [")).unwrap();
    let out = env
        .cairn()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("line 14"), "{stderr}");
    assert!(stderr.contains("unknown field `pathz`"), "{stderr}");

    std::fs::write(
        &config,
        text.replace("command = [\"date\"]", "command = [\"date\"]\nschedule = 5"),
    )
    .unwrap();
    let out = env
        .cairn()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_missing_source_command_fails_the_job_and_saves_nothing() {
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("command = [\"date\"]", "command = [\"/no/such/tool\"]"),
    )
    .unwrap();
    let server = Server::start(&env, &config);
    let job = server.start_job("/sources/ticker/backup", json!(null));
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("cannot run `/no/such/tool`"), "{error}");
    assert!(snapshots(&server).is_empty());
}

#[test]
fn a_scheduled_source_still_running_is_not_started_twice() {
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let text = std::fs::read_to_string(&config).unwrap();
    // `slow` takes 20 s; its schedule fires every second.
    let text = text.replace(
        "[sources.slow]\nrepository = \"main\"",
        "[sources.slow]\nrepository = \"main\"\nschedule = \"* * * * * *\"",
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&env, &config);
    std::thread::sleep(Duration::from_secs(4));
    let (_, jobs) = server.get("/jobs?source=slow");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "one job, however often the schedule fired: {jobs:?}"
    );
    assert_eq!(jobs[0]["state"], "running");
    let metrics = server.metrics();
    let skipped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_schedule_skipped_total{source=\"slow\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(skipped >= 2.0, "{metrics}");
    // Stopping serve interrupts the job cleanly and records it.
    assert_eq!(server.stop(), Some(0));
    let id = jobs[0]["id"].as_str().unwrap();
    let record: Value = serde_json::from_slice(
        &std::fs::read(env.path("state/jobs").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["state"], "cancelled", "{record}");
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn a_data_service_source_is_backed_up_and_recovered_through_the_api() {
    if std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CAIRN_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "CAIRN_TEST_REQUIRE_SERVICES=1 but there is no sqlite3"
        );
        eprintln!("skipped: no sqlite3");
        return;
    }
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let db = env.path("app.db");
    let sqlite = |file: &std::path::Path, sql: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(file)
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); \
                 INSERT INTO t VALUES (1, 'one'), (2, 'two');",
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[sources.lite]\nrepository = \"main\"\ntype = \"sqlite\"\ndatabases = [{:?}]\n\
         [drills.lite-drill]\nsource = \"lite\"\n",
        db.to_str().unwrap()
    ));
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&env, &config);
    let job = server.start_job("/sources/lite/backup", json!(null));
    assert_eq!(job["state"], "succeeded", "{job}");

    let target = env.path("restores/recovered/app.db");
    let body = json!({"snapshot": "latest", "target": target.to_str().unwrap()});
    let job = server.start_job("/sources/lite/restore", body.clone());
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "restore");
    assert_eq!(job["source"], "lite");
    assert_eq!(job["report"]["kind"], "service_restore", "{job}");
    assert_eq!(job["report"]["from"], "/sqlite/app.db.sql", "{job}");
    assert_eq!(sqlite(&target, "SELECT group_concat(v) FROM t;"), "one,two");

    // a second time the file exists: the job fails and keeps it
    sqlite(&target, "INSERT INTO t VALUES (3, 'mine');");
    let job = server.start_job("/sources/lite/restore", body);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("exists: give --overwrite always"),
        "{job}"
    );
    assert_eq!(sqlite(&target, "SELECT COUNT(*) FROM t;"), "3");
    let job = server.start_job(
        "/sources/lite/restore",
        json!({"snapshot": "latest", "target": target.to_str().unwrap(), "overwrite": "always"}),
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(sqlite(&target, "SELECT COUNT(*) FROM t;"), "2");

    // outside the restore roots, or a source that is no data service
    let (status, e) = server.post(
        "/sources/lite/restore",
        json!({"snapshot": "latest", "target": "/etc/app.db"}),
    );
    assert_eq!(status, 400, "{e}");
    let (status, e) = server.post("/sources/files/restore", json!({"snapshot": "latest"}));
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("not a data service"),
        "{e}"
    );
}

#[test]
fn jobs_and_stale_sources_are_notified() {
    let env = Env::new();
    env.init();
    let hook = common::Receiver::start();
    let config = settings(&env, false);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[sources.files]\nrepository = \"main\"\n",
        "[sources.files]\nrepository = \"main\"\nstale_after = \"3s\"\n",
    );
    text.push_str(&format!(
        "\n[[notifications]]\nurl = \"{}\"\n",
        hook.url("/hook")
    ));
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&env, &config);

    // no success within 3 s of the start: one stale alert, and the metric
    let stale = hook.wait_for(15, |r| r.json()["event"] == "stale");
    assert_eq!(stale.json()["source"], "files");
    assert!(server
        .metrics()
        .contains("cairn_source_stale{source=\"files\"} 1"));
    std::thread::sleep(Duration::from_secs(2));
    let alerts = hook
        .requests()
        .iter()
        .filter(|r| r.json()["event"] == "stale")
        .count();
    assert_eq!(alerts, 1, "alerted once until a success");

    // a job's start and end, with its id; then the source is fresh again
    let job = server.start_job("/sources/files/backup", json!(null));
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap();
    hook.wait_for(10, |r| {
        r.json()["event"] == "start" && r.json()["job"] == id
    });
    let done = hook.wait_for(10, |r| {
        r.json()["event"] == "success" && r.json()["job"] == id
    });
    assert_eq!(done.json()["snapshot_id"], job["snapshot_id"]);
    assert!(server
        .metrics()
        .contains("cairn_source_stale{source=\"files\"} 0"));

    // a failing job of a repository (check of a damaged one) says why
    for pack in std::fs::read_dir(env.repo.join("data"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(pack.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            std::fs::write(f.path(), b"damaged").unwrap();
        }
    }
    let job = server.start_job("/repositories/main/check", json!({"read_data": true}));
    assert_eq!(job["state"], "failed", "{job}");
    let failed = hook.wait_for(10, |r| {
        r.json()["event"] == "failure" && r.json()["kind"] == "check"
    });
    assert_eq!(failed.json()["repository"], "main");
    assert!(
        failed.json()["error"]
            .as_str()
            .unwrap()
            .contains("problems"),
        "{}",
        failed.body
    );
}

#[test]
fn a_configured_copy_runs_through_the_api_and_on_its_schedule() {
    let env = Env::new();
    env.init();
    let config = settings(&env, false);
    let offsite = env.path("offsite");
    env.cairn()
        .env("CAIRN_REPOSITORY", &offsite)
        .arg("init")
        .assert()
        .success();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[repositories.offsite]\nurl = {:?}\npassword_file = {:?}\n\
         [copies.nightly]\nfrom = \"main\"\nto = \"offsite\"\n\
         [copies.ticking]\nfrom = \"main\"\nto = \"offsite\"\nschedule = \"*/2 * * * * *\"\n\
         paths = [\"/nothing-backs-this-up\"]\n",
        offsite.to_str().unwrap(),
        env.path("password").to_str().unwrap()
    ));
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&env, &config);
    let backup = server.start_job("/sources/files/backup", json!(null));
    assert_eq!(backup["state"], "succeeded", "{backup}");

    let job = server.start_job("/copies/nightly/run", json!(null));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "copy");
    assert_eq!(job["copy"], "nightly");
    assert_eq!(job["repository"], "offsite");
    assert_eq!(job["report"]["kind"], "copy", "{job}");
    assert_eq!(
        job["report"]["copied"].as_array().unwrap().len(),
        1,
        "{job}"
    );
    let (status, copies) = server.get("/repositories/offsite/snapshots");
    assert_eq!(status, 200, "{copies}");
    assert_eq!(copies.as_array().unwrap().len(), 1);
    assert_eq!(copies[0]["paths"], snapshots(&server)[0]["paths"]);
    // what the copy holds restores byte for byte
    let target = env.path("restores/from-offsite");
    let out = env
        .cairn()
        .env("CAIRN_REPOSITORY", &offsite)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_success(&out);
    let data = env.path("data");
    assert_same_tree(&data, &target.join(data.strip_prefix("/").unwrap()));

    // again: nothing to do
    let again = server.start_job("/copies/nightly/run", json!(null));
    assert_eq!(
        again["report"]["copied"].as_array().unwrap().len(),
        0,
        "{again}"
    );
    assert_eq!(
        again["report"]["already_present"].as_array().unwrap().len(),
        1
    );
    let metrics = server.metrics();
    assert!(
        metrics.contains("cairn_copy_last_success_timestamp_seconds{copy=\"nightly\"}"),
        "{metrics}"
    );
    // the scheduled one fires by itself (its filter selects nothing)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, jobs) = server.get("/jobs");
        let ticked = jobs.as_array().unwrap().iter().any(|j| {
            j["copy"] == "ticking" && j["trigger"] == "schedule" && j["state"] == "succeeded"
        });
        if ticked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled copy never ran: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, e) = server.post("/copies/nowhere/run", json!(null));
    assert_eq!(status, 404, "{e}");
}
