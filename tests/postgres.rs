//! A real PostgreSQL (scripts/postgres.sh starts a throw-away cluster on a
//! unix socket): `pg_dump` streamed through `--stdin-from-command`, restored
//! with `dump | psql` and `restore --to-command` into fresh databases, and
//! the same query gives the same answer on all of them. A failing `pg_dump`
//! leaves no snapshot.
//!
//! Needs PGHOST/PGPORT/PGUSER and CAIRN_TEST_PG_BIN; without them the tests
//! say so and pass, unless CAIRN_TEST_REQUIRE_POSTGRES=1 (scripts/test.sh).

mod common;

use common::Env;
use std::path::PathBuf;
use std::process::Command;

/// Held by every test that creates or drops databases: a backup of every
/// database of the cluster must not meet one that another test is
/// dropping.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock_cluster() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|e| e.into_inner())
}

fn pg_bin() -> Option<PathBuf> {
    let vars = ["PGHOST", "PGUSER", "CAIRN_TEST_PG_BIN"];
    if vars.iter().all(|v| std::env::var_os(v).is_some()) {
        return std::env::var_os("CAIRN_TEST_PG_BIN").map(PathBuf::from);
    }
    assert!(
        std::env::var("CAIRN_TEST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "CAIRN_TEST_REQUIRE_POSTGRES=1 but PGHOST/PGUSER/CAIRN_TEST_PG_BIN are not set"
    );
    eprintln!("skipped: no PostgreSQL (run scripts/postgres.sh start DIR and eval its output)");
    None
}

/// The PG* variables cairn's children need (Env clears the environment).
fn pg_env() -> Vec<(String, String)> {
    ["PGHOST", "PGPORT", "PGUSER"]
        .iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect()
}

fn tool(bin: &PathBuf, name: &str) -> String {
    bin.join(name).to_str().unwrap().to_string()
}

fn psql(bin: &PathBuf, db: &str, sql: &str) -> String {
    let out = Command::new(tool(bin, "psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A database of a few shapes of data: numbers, text with odd characters,
/// json, bytea, nulls, an index and a view.
fn create_database(bin: &PathBuf, db: &str) {
    psql(bin, "postgres", &format!("drop database if exists {db}"));
    psql(bin, "postgres", &format!("create database {db}"));
    psql(
        bin,
        db,
        "create table orders (id bigint primary key, customer text, note text, \
             amount numeric(12,2), payload jsonb, blob bytea, created timestamptz);
         insert into orders select g, 'customer ' || (g % 997),
             case when g % 7 = 0 then null else E'line\\ttab ''quote'' ü ' || md5(g::text) end,
             (g * 37 % 100000) / 100.0, jsonb_build_object('g', g, 'sq', g::bigint * g),
             decode(md5(g::text), 'hex'), timestamptz '2024-01-01' + g * interval '1 minute'
           from generate_series(1, 200000) g;
         create index on orders (customer);
         create view big_orders as select * from orders where amount > 900;",
    );
}

const FINGERPRINT: &str =
    "select count(*) || ':' || md5(string_agg(id || '|' || customer || '|' || \
    coalesce(note, 'NULL') || '|' || amount || '|' || payload::text || '|' || encode(blob, 'hex') \
    || '|' || created, ',' order by id)) || ':' || (select count(*) from big_orders) from orders";

#[test]
fn pg_dump_streams_in_and_restores_into_a_fresh_database() {
    let Some(bin) = pg_bin() else { return };
    let _cluster = lock_cluster();
    let env = Env::new();
    env.init();
    create_database(&bin, "cairn_src");
    let expected = psql(&bin, "cairn_src", FINGERPRINT);
    assert!(expected.starts_with("200000:"), "{expected}");

    let out = env
        .cairn()
        .envs(pg_env())
        .args([
            "--json",
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "app.sql",
        ])
        .args([
            "--",
            &tool(&bin, "pg_dump"),
            "--no-owner",
            "-d",
            "cairn_src",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);

    // dump | psql into a fresh database.
    psql(&bin, "postgres", "drop database if exists cairn_dst1");
    psql(&bin, "postgres", "create database cairn_dst1");
    let mut dump = env
        .process()
        .args(["dump", "latest", "app.sql"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new(tool(&bin, "psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "cairn_dst1"])
        .stdin(dump.stdout.take().unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(dump.wait().unwrap().success());
    assert!(load.success());
    assert_eq!(psql(&bin, "cairn_dst1", FINGERPRINT), expected);

    // restore --to-command psql into another.
    psql(&bin, "postgres", "drop database if exists cairn_dst2");
    psql(&bin, "postgres", "create database cairn_dst2");
    let out = env
        .cairn()
        .envs(pg_env())
        .args(["restore", "latest:/app.sql", "--to-command", "--"])
        .args([
            &tool(&bin, "psql"),
            "-X",
            "-q",
            "-o",
            "/dev/null",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-d", "cairn_dst2"])
        .output()
        .unwrap();
    common::assert_success(&out);
    assert_eq!(psql(&bin, "cairn_dst2", FINGERPRINT), expected);
}

#[test]
fn a_failing_pg_dump_saves_no_snapshot() {
    let Some(bin) = pg_bin() else { return };
    let _cluster = lock_cluster();
    let env = Env::new();
    env.init();
    let out = env
        .cairn()
        .envs(pg_env())
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "app.sql",
            "--",
        ])
        .args([&tool(&bin, "pg_dump"), "-d", "no_such_database"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exited with status 1"), "{stderr}");
    assert!(
        stderr.contains("no_such_database"),
        "the stderr tail names it: {stderr}"
    );
    assert!(env.snapshot_ids().is_empty());
}

// ---- `type = "postgres"` sources: backup of the cluster, recovery into a
// new database.

/// A settings file with source `pg` of type postgres (`extra` lines added
/// to it); the repository comes from the environment (CAIRN_REPOSITORY).
fn pg_source(env: &Env, extra: &str) -> PathBuf {
    let bin = std::env::var("CAIRN_TEST_PG_BIN").unwrap();
    let text = format!(
        "[repositories.main]\nurl = \"/from-the-environment\"\n\n\
         [sources.pg]\nrepository = \"main\"\ntype = \"postgres\"\ntools_dir = {bin:?}\n{extra}\n"
    );
    let path = env.path("cairn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn cairn_with(env: &Env, config: &PathBuf, args: &[&str]) -> std::process::Output {
    let mut c = env.cairn();
    c.envs(pg_env()).args(args).arg("--config").arg(config);
    c.output().unwrap()
}

/// The pgbench invariant: every transaction adds its delta to one account,
/// one teller, one branch and the history, so the four sums agree in any
/// consistent copy.
const PGBENCH_SUMS: &str = "select (select sum(abalance) from pgbench_accounts) || ' ' || \
    (select sum(bbalance) from pgbench_branches) || ' ' || \
    (select sum(tbalance) from pgbench_tellers) || ' ' || \
    (select coalesce(sum(delta), 0) from pgbench_history)";

#[test]
fn a_postgres_source_backs_up_consistently_while_pgbench_writes() {
    let Some(bin) = pg_bin() else { return };
    let _cluster = lock_cluster();
    let env = Env::new();
    env.init();
    let db = "svc_bench";
    psql(&bin, "postgres", &format!("drop database if exists {db}"));
    psql(
        &bin,
        "postgres",
        &format!("drop database if exists {db}_copy"),
    );
    psql(&bin, "postgres", &format!("create database {db}"));
    let init = Command::new(tool(&bin, "pgbench"))
        .args(["-i", "-q", "-s", "3", db])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut load = Command::new(tool(&bin, "pgbench"))
        .args(["-n", "-c", "2", "-T", "600", db])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let history = || {
        psql(&bin, db, "select count(*) from pgbench_history")
            .parse::<u64>()
            .unwrap()
    };
    while history() < 200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = history();
    let config = pg_source(&env, &format!("databases = [\"{db}\"]"));
    let out = cairn_with(&env, &config, &["backup", "--source", "pg"]);
    let after = history();
    let _ = load.kill();
    let _ = load.wait();
    common::assert_success(&out);
    assert!(
        after > before,
        "pgbench kept writing during the backup ({before} → {after})"
    );

    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("/postgres/svc_bench.dump"), "{listing}");
    assert!(listing.contains("/postgres/globals.sql"), "{listing}");
    let copy = format!("{db}_copy");
    let out = cairn_with(
        &env,
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "pg",
            "--target-database",
            &copy,
        ],
    );
    common::assert_success(&out);
    let sums = psql(&bin, &copy, PGBENCH_SUMS);
    let parts: Vec<&str> = sums.split(' ').collect();
    assert!(
        parts.iter().all(|p| *p == parts[0]),
        "inconsistent copy: {sums}"
    );
    let copied = psql(&bin, &copy, "select count(*) from pgbench_history")
        .parse::<u64>()
        .unwrap();
    assert!(
        (before..=after).contains(&copied),
        "the copy holds {copied} transactions, taken between {before} and {after}"
    );
    assert_eq!(
        psql(&bin, &copy, "select count(*) from pgbench_accounts"),
        "300000"
    );
}

#[test]
fn a_postgres_backup_is_recovered_into_new_databases_tables_and_another_cluster() {
    let Some(bin) = pg_bin() else { return };
    let _cluster = lock_cluster();
    let env = Env::new();
    env.init();
    for db in ["svc_app", "svc_app_new", "svc_app_tables"] {
        psql(&bin, "postgres", &format!("drop database if exists {db}"));
    }
    psql(&bin, "postgres", "drop role if exists svc_owner");
    psql(&bin, "postgres", "create role svc_owner");
    create_database(&bin, "svc_app");
    psql(
        &bin,
        "svc_app",
        "create table notes (id int primary key, body text); \
         insert into notes select g, 'note ' || g from generate_series(1, 1000) g; \
         alter table notes owner to svc_owner;",
    );
    let expected = psql(&bin, "svc_app", FINGERPRINT);
    let config = pg_source(&env, "");
    common::assert_success(&cairn_with(&env, &config, &["backup", "--source", "pg"]));
    // every database of the cluster, the test's own among them
    let listing = env.ok(&["ls", "latest"]);
    for file in [
        "/postgres/svc_app.dump",
        "/postgres/cairn.dump",
        "/postgres/globals.sql",
    ] {
        assert!(listing.contains(file), "{file} in {listing}");
    }

    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "latest",
            "--source",
            "pg",
            "--database",
            "svc_app",
        ];
        args.extend(extra);
        cairn_with(&env, &config, &args)
    };
    common::assert_success(&restore(&["--target-database", "svc_app_new"]));
    assert_eq!(psql(&bin, "svc_app_new", FINGERPRINT), expected);
    assert_eq!(
        psql(
            &bin,
            "svc_app_new",
            "select tableowner from pg_tables where tablename = 'notes'"
        ),
        "svc_owner"
    );

    // an existing database is refused, and left as it was
    psql(
        &bin,
        "svc_app_new",
        "insert into notes values (5000, 'changed since')",
    );
    let out = restore(&["--target-database", "svc_app_new"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"svc_app_new\" exists: give --overwrite always"),
        "{stderr}"
    );
    assert_eq!(
        psql(&bin, "svc_app_new", "select count(*) from notes"),
        "1001"
    );
    common::assert_success(&restore(&[
        "--target-database",
        "svc_app_new",
        "--overwrite",
        "always",
    ]));
    assert_eq!(
        psql(&bin, "svc_app_new", "select count(*) from notes"),
        "1000"
    );

    // one table only
    common::assert_success(&restore(&[
        "--target-database",
        "svc_app_tables",
        "--table",
        "public.notes",
    ]));
    let tables = psql(
        &bin,
        "svc_app_tables",
        "select string_agg(tablename, ',' order by tablename) from pg_tables \
         where schemaname = 'public'",
    );
    assert_eq!(tables, "notes");
    assert_eq!(
        psql(&bin, "svc_app_tables", "select count(*) from notes"),
        "1000"
    );

    // the same database rebuilt on another cluster, which has not got the
    // role that owns a table: refused until the roles are restored first
    let other = OtherCluster::start();
    let connection = other.connection();
    let out = restore(&["--connection", &connection]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("svc_owner"),
        "pg_restore's own message: {stderr}"
    );
    assert!(stderr.contains("was dropped again"), "{stderr}");
    assert!(stderr.contains("--globals"), "the hint: {stderr}");
    assert_eq!(
        other.psql("select count(*) from pg_database where datname = 'svc_app'"),
        "0"
    );
    common::assert_success(&restore(&["--connection", &connection, "--globals"]));
    assert_eq!(other.psql_in("svc_app", FINGERPRINT), expected);
    assert_eq!(
        other.psql("select count(*) from pg_roles where rolname = 'svc_owner'"),
        "1"
    );
}

#[test]
fn a_postgres_source_that_cannot_be_reached_saves_no_snapshot() {
    let Some(_) = pg_bin() else { return };
    let _cluster = lock_cluster();
    let env = Env::new();
    env.init();
    let cases = [
        // the server is down (no socket there)
        (
            "connection = \"host=/nonexistent/socket/dir\"",
            "No such file or directory",
        ),
        // wrong credentials
        (
            "connection = \"user=svc_no_such_role\"",
            "role \"svc_no_such_role\" does not exist",
        ),
        // a database that is not there: pg_dump itself fails
        (
            "databases = [\"svc_no_such_db\"]",
            "database \"svc_no_such_db\" does not exist",
        ),
    ];
    for (setting, message) in cases {
        let config = pg_source(&env, setting);
        let out = cairn_with(&env, &config, &["backup", "--source", "pg"]);
        assert_eq!(out.status.code(), Some(1), "{setting}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(message),
            "{setting}: the service's message in {stderr}"
        );
        assert!(env.snapshot_ids().is_empty(), "{setting}: no snapshot");
    }
}

/// A second, throw-away cluster (scripts/postgres.sh on another port),
/// stopped when dropped.
struct OtherCluster {
    dir: PathBuf,
    port: &'static str,
    // postgres.sh wants a directory whose parents everyone can search
    _holder: tempfile::TempDir,
}

impl OtherCluster {
    fn start() -> OtherCluster {
        let holder = tempfile::Builder::new()
            .prefix("cairn-pg-other-")
            .tempdir()
            .unwrap();
        let dir = holder.path().to_path_buf();
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh"))
            .args(["start"])
            .arg(&dir)
            .env("CAIRN_PG_PORT", "5499")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        OtherCluster {
            dir,
            port: "5499",
            _holder: holder,
        }
    }

    fn connection(&self) -> String {
        format!(
            "host={}/sock port={} user=cairn",
            self.dir.display(),
            self.port
        )
    }

    fn psql_in(&self, db: &str, sql: &str) -> String {
        let bin = PathBuf::from(std::env::var("CAIRN_TEST_PG_BIN").unwrap());
        let out = Command::new(tool(&bin, "psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg("-d")
            .arg(format!("{} dbname={db}", self.connection()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }
}

impl Drop for OtherCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

#[test]
fn a_postgres_drill_recovers_into_a_scratch_database_and_drops_it() {
    let Some(bin) = pg_bin() else { return };
    let _cluster = lock_cluster();
    let env = Env::new();
    env.init();
    psql(&bin, "postgres", "drop database if exists svc_drill");
    psql(&bin, "postgres", "create database svc_drill");
    psql(
        &bin,
        "svc_drill",
        "create table t (v int); insert into t select generate_series(1, 100)",
    );
    let psql_tool = tool(&bin, "psql");
    let config = pg_source(
        &env,
        &format!(
            "databases = [\"svc_drill\"]\n\n[drills.d]\nsource = \"pg\"\n\
             verify = [\"sh\", \"-c\", \"test $({psql_tool} -X -At -d \\\"$CAIRN_DRILL_DATABASE\\\" -c 'select sum(v) from t') = 5050\"]\n"
        ),
    );
    common::assert_success(&cairn_with(&env, &config, &["backup", "--source", "pg"]));
    let out = cairn_with(&env, &config, &["--json", "drill", "d"]);
    common::assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let into = report["restored"][0]["into"].as_str().unwrap().to_string();
    assert!(into.starts_with("cairn_drill_"), "{report}");
    let left = psql(
        &bin,
        "postgres",
        "select count(*) from pg_database where datname like 'cairn_drill_%'",
    );
    assert_eq!(left, "0", "the scratch database is dropped");

    // a verify that fails: the drill fails, and the scratch database goes too
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("= 5050", "= 1");
    std::fs::write(&config, text).unwrap();
    let out = cairn_with(&env, &config, &["drill", "d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recovering database \"svc_drill\""));
    let left = psql(
        &bin,
        "postgres",
        "select count(*) from pg_database where datname like 'cairn_drill_%'",
    );
    assert_eq!(left, "0");
}
