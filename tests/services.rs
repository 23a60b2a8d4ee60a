//! Data-service sources against real servers: MariaDB and Redis started by
//! scripts/services.sh (sockets in CAIRN_TEST_MYSQL_SOCKET and
//! CAIRN_TEST_REDIS_SOCKET), SQLite through the sqlite3 shell. Writers keep
//! writing while cairn backs up; the copies restored into new databases
//! satisfy the writers' invariants. PostgreSQL's are in tests/postgres.rs.
//!
//! Without the servers the tests say so and pass, unless
//! CAIRN_TEST_REQUIRE_SERVICES=1 (scripts/test.sh).

mod common;

use common::Env;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn service_var(name: &str) -> Option<String> {
    if let Ok(v) = std::env::var(name) {
        return Some(v);
    }
    assert!(
        std::env::var("CAIRN_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "CAIRN_TEST_REQUIRE_SERVICES=1 but {name} is not set"
    );
    eprintln!("skipped: no {name} (eval \"$(scripts/services.sh start DIR)\")");
    None
}

fn sqlite3_present() -> bool {
    let found = Command::new("sqlite3").arg("-version").output().is_ok();
    assert!(
        found || std::env::var("CAIRN_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "CAIRN_TEST_REQUIRE_SERVICES=1 but there is no sqlite3"
    );
    found
}

/// A settings file with one source `s` (`body`: its type and settings).
fn settings(env: &Env, body: &str) -> PathBuf {
    let text = format!(
        "[repositories.main]\nurl = \"/from-the-environment\"\n\n\
         [sources.s]\nrepository = \"main\"\n{body}\n"
    );
    let path = env.path("cairn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn cairn(env: &Env, config: &Path, args: &[&str]) -> std::process::Output {
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

/// Runs `program args` with `input` on stdin to its end; its stdout.
fn run(program: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Money moving between accounts, one transaction at a time, forever (until
/// killed): the total never changes, and every move is logged.
fn transfers(count: usize, accounts: usize) -> String {
    let mut script = String::new();
    for i in 0..count {
        let from = (i * 7919) % accounts + 1;
        let to = (i * 104_729 + 1) % accounts + 1;
        script.push_str(&format!(
            "BEGIN; UPDATE account SET balance = balance - 3 WHERE id = {from}; \
             UPDATE account SET balance = balance + 3 WHERE id = {to}; \
             INSERT INTO moves (amount) VALUES (3); COMMIT;\n"
        ));
    }
    script
}

/// A writer process fed `script`; killed when dropped.
struct Writer(Child);

impl Writer {
    fn start(program: &str, args: &[&str], script: String) -> Writer {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(script.as_bytes());
        });
        Writer(child)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("gave up waiting");
}

// ---------------------------------------------------------------- MariaDB

fn mysql_user() -> String {
    if common::is_root() {
        "root".into()
    } else {
        run("id", &["-un"], "")
    }
}

fn mysql(socket: &str, sql: &str) -> String {
    let user = format!("--user={}", mysql_user());
    run(
        "mariadb",
        &[
            "--no-defaults",
            "--socket",
            socket,
            &user,
            "--batch",
            "--skip-column-names",
        ],
        sql,
    )
}

#[test]
fn a_mysql_source_backs_up_consistently_while_writers_write_and_restores_users() {
    let Some(socket) = service_var("CAIRN_TEST_MYSQL_SOCKET") else {
        return;
    };
    let env = Env::new();
    env.init();
    let accounts = 50_000;
    mysql(
        &socket,
        &format!(
            "DROP DATABASE IF EXISTS svc_bank; DROP DATABASE IF EXISTS svc_bank_copy;
             DROP USER IF EXISTS 'svc_teller'@'localhost';
             CREATE DATABASE svc_bank;
             CREATE TABLE svc_bank.account (id INT PRIMARY KEY, balance BIGINT NOT NULL,
               owner VARCHAR(64)) ENGINE=InnoDB;
             CREATE TABLE svc_bank.moves (id BIGINT AUTO_INCREMENT PRIMARY KEY,
               amount INT NOT NULL) ENGINE=InnoDB;
             INSERT INTO svc_bank.account
               SELECT seq, 1000, CONCAT('owner ', seq) FROM svc_bank.seq_1_to_{accounts};
             CREATE PROCEDURE svc_bank.total() SELECT SUM(balance) FROM account;
             CREATE USER 'svc_teller'@'localhost' IDENTIFIED BY 'a-password';
             GRANT SELECT, UPDATE ON svc_bank.* TO 'svc_teller'@'localhost';"
        ),
    );
    let user = mysql_user();
    let client_args = [
        "--no-defaults".to_string(),
        format!("--socket={socket}"),
        format!("--user={user}"),
        "--database=svc_bank".to_string(),
    ];
    let client_args: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let _writer = Writer::start("mariadb", &client_args, transfers(200_000, accounts));
    let moves = || {
        mysql(&socket, "SELECT COUNT(*) FROM svc_bank.moves")
            .parse::<u64>()
            .unwrap()
    };
    wait_until(|| moves() >= 100);
    let before = moves();
    let config = settings(
        &env,
        &format!(
            "type = \"mysql\"\nconnection = \"no-defaults socket={socket} user={user}\"\n\
             databases = [\"svc_bank\"]"
        ),
    );
    let out = cairn(&env, &config, &["backup", "--source", "s"]);
    let after = moves();
    drop(_writer);
    let stopped = moves();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        after > before,
        "the writer wrote during the backup ({before} → {after})"
    );
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("/mysql/svc_bank.sql"), "{listing}");
    assert!(listing.contains("/mysql/users.sql"), "{listing}");

    // the user is gone, as on a rebuilt server; --globals brings it back
    mysql(&socket, "DROP USER 'svc_teller'@'localhost'");
    let out = cairn(
        &env,
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "s",
            "--target-database",
            "svc_bank_copy",
            "--globals",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let total = mysql(
        &socket,
        "SELECT SUM(balance), COUNT(*) FROM svc_bank_copy.account",
    );
    assert_eq!(
        total,
        format!("{}\t{accounts}", 1000 * accounts),
        "money was made or lost"
    );
    let copied = mysql(&socket, "SELECT COUNT(*) FROM svc_bank_copy.moves")
        .parse::<u64>()
        .unwrap();
    assert!(
        (before..=after).contains(&copied),
        "{copied} moves, taken between {before} and {after}"
    );
    let routine = mysql(
        &socket,
        "SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'svc_bank_copy'",
    );
    assert_eq!(routine, "1", "the stored procedure came along");
    let grants = mysql(&socket, "SHOW GRANTS FOR 'svc_teller'@'localhost'");
    assert!(
        grants.contains("GRANT SELECT, UPDATE ON `svc_bank`.*"),
        "{grants}"
    );

    // an existing database is refused and left alone
    let out = cairn(
        &env,
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "s",
            "--target-database",
            "svc_bank",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("\"svc_bank\" exists: give --overwrite always"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(moves(), stopped, "svc_bank untouched");
}

#[test]
fn a_mysql_source_whose_server_is_down_saves_no_snapshot() {
    let Some(_) = service_var("CAIRN_TEST_MYSQL_SOCKET") else {
        return;
    };
    let env = Env::new();
    env.init();
    let config = settings(
        &env,
        "type = \"mysql\"\nconnection = \"no-defaults socket=/nonexistent/mysqld.sock\"",
    );
    let out = cairn(&env, &config, &["backup", "--source", "s"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("Can't connect to local server through socket '/nonexistent/mysqld.sock'"),
        "{stderr}"
    );
    assert!(env.snapshot_ids().is_empty());
}

// ---------------------------------------------------------------- SQLite

#[test]
fn a_sqlite_source_backs_up_a_live_database_consistently() {
    if !sqlite3_present() {
        return;
    }
    let env = Env::new();
    env.init();
    let db = env.path("live.db");
    let db_text = db.to_str().unwrap();
    let accounts = 20_000;
    run(
        "sqlite3",
        &[db_text],
        &format!(
            "PRAGMA journal_mode=wal; PRAGMA user_version=42; PRAGMA application_id=7;
             CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, owner TEXT, pic BLOB);
             CREATE TABLE moves (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {accounts})
             INSERT INTO account SELECT i, 1000, 'owner ' || i, randomblob(64) FROM n;
             CREATE INDEX by_owner ON account (owner);"
        ),
    );
    let _writer = Writer::start(
        "sqlite3",
        &["-cmd", ".timeout 10000", db_text],
        transfers(500_000, accounts),
    );
    let moves = || {
        run(
            "sqlite3",
            &["-cmd", ".timeout 10000", db_text],
            "SELECT COUNT(*) FROM moves;",
        )
        .parse::<u64>()
        .unwrap()
    };
    wait_until(|| moves() >= 100);
    let before = moves();
    let config = settings(
        &env,
        &format!("type = \"sqlite\"\ndatabases = [{db_text:?}]"),
    );
    let out = cairn(&env, &config, &["backup", "--source", "s"]);
    let after = moves();
    drop(_writer);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        after > before,
        "the writer wrote during the backup ({before} → {after})"
    );
    assert!(env.ok(&["ls", "latest"]).contains("/sqlite/live.db.sql"));

    let copy = env.path("restored/copy.db");
    let copy_text = copy.to_str().unwrap();
    let out = cairn(
        &env,
        &config,
        &["restore", "latest", "--source", "s", "--target", copy_text],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let check = run(
        "sqlite3",
        &[copy_text],
        "SELECT SUM(balance), COUNT(*), SUM(LENGTH(pic)) FROM account; \
         PRAGMA user_version; PRAGMA application_id; PRAGMA journal_mode; PRAGMA integrity_check;",
    );
    assert_eq!(
        check,
        format!(
            "{}|{accounts}|{}\n42\n7\nwal\nok",
            1000 * accounts,
            64 * accounts
        )
    );
    let copied = run("sqlite3", &[copy_text], "SELECT COUNT(*) FROM moves;")
        .parse::<u64>()
        .unwrap();
    assert!(
        (before..=after).contains(&copied),
        "{copied} moves, taken between {before} and {after}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(copy.metadata().unwrap().permissions().mode() & 0o777, 0o600);

    // an existing file is refused and kept; --overwrite always replaces it
    std::fs::write(&copy, b"precious").unwrap();
    let out = cairn(
        &env,
        &config,
        &["restore", "latest", "--source", "s", "--target", copy_text],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("exists: give --overwrite always"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(std::fs::read(&copy).unwrap(), b"precious");
    let out = cairn(
        &env,
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "s",
            "--target",
            copy_text,
            "--overwrite",
            "always",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        run("sqlite3", &[copy_text], "SELECT COUNT(*) FROM account;"),
        accounts.to_string()
    );
}

#[test]
fn a_missing_sqlite_database_saves_no_snapshot_and_is_not_created() {
    if !sqlite3_present() {
        return;
    }
    let env = Env::new();
    env.init();
    let db = env.path("gone.db");
    let config = settings(
        &env,
        &format!(
            "type = \"sqlite\"\ndatabases = [{:?}]",
            db.to_str().unwrap()
        ),
    );
    let out = cairn(&env, &config, &["backup", "--source", "s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("gone.db: No such file or directory"),
        "{}",
        stderr_of(&out)
    );
    assert!(!db.exists());
    assert!(env.snapshot_ids().is_empty());
}

// ---------------------------------------------------------------- Redis

fn redis(socket: &str, args: &[&str]) -> String {
    let mut all = vec!["-s", socket];
    all.extend(args);
    run("redis-cli", &all, "")
}

#[test]
fn a_redis_source_is_restored_as_an_rdb_file_a_new_server_loads() {
    let Some(socket) = service_var("CAIRN_TEST_REDIS_SOCKET") else {
        return;
    };
    let env = Env::new();
    env.init();
    let mut script = String::from("DEL svc:list svc:hash\n");
    for i in 0..5000 {
        script.push_str(&format!(
            "SET svc:key:{i} value-{i}-{}\n",
            "x".repeat(i % 300)
        ));
    }
    script.push_str("RPUSH svc:list a b c\nHSET svc:hash f1 v1 f2 v2\n");
    run("redis-cli", &["-s", &socket], &script);
    let config = settings(&env, &format!("type = \"redis\"\nconnection = {socket:?}"));
    let out = cairn(&env, &config, &["backup", "--source", "s"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(env.ok(&["ls", "latest"]).contains("/redis/dump.rdb"));

    let new_dir = env.path("new-redis");
    let rdb = new_dir.join("dump.rdb");
    let out = cairn(
        &env,
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "s",
            "--target",
            rdb.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let new_socket = new_dir.join("r.sock");
    let new_socket = new_socket.to_str().unwrap();
    let status = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--unixsocket",
            new_socket,
            "--daemonize",
            "yes",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&new_dir)
        .arg("--logfile")
        .arg(new_dir.join("log"))
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(|| {
        Command::new("redis-cli")
            .args(["-s", new_socket, "ping"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    });
    let got = (
        redis(new_socket, &["GET", "svc:key:4321"]),
        redis(new_socket, &["LRANGE", "svc:list", "0", "-1"]),
        redis(new_socket, &["HGET", "svc:hash", "f2"]),
        redis(
            new_socket,
            &["EVAL", "return #redis.call('keys', 'svc:key:*')", "0"],
        ),
    );
    let _ = redis(new_socket, &["SHUTDOWN", "NOSAVE"]);
    assert_eq!(got.0, format!("value-4321-{}", "x".repeat(4321 % 300)));
    assert_eq!(got.1, "a\nb\nc");
    assert_eq!(got.2, "v2");
    assert_eq!(got.3, "5000");
}

#[test]
fn a_redis_source_whose_server_is_down_saves_no_snapshot() {
    let Some(_) = service_var("CAIRN_TEST_REDIS_SOCKET") else {
        return;
    };
    let env = Env::new();
    env.init();
    let config = settings(
        &env,
        "type = \"redis\"\nconnection = \"/nonexistent/redis.sock\"",
    );
    let out = cairn(&env, &config, &["backup", "--source", "s"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("redis-cli"), "{stderr}");
    assert!(
        stderr.contains("No such file or directory"),
        "redis-cli's own message: {stderr}"
    );
    assert!(env.snapshot_ids().is_empty());
}
