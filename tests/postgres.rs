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
