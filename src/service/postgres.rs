//! PostgreSQL: the cluster's globals (`pg_dumpall --globals-only`: roles,
//! tablespaces) as `/postgres/globals.sql`, and each database in
//! `pg_dump`'s custom format with its own compression off (cairn
//! deduplicates and compresses; a compressed dump would defeat both) as
//! `/postgres/NAME.dump`. A restore creates a new database and runs
//! `pg_restore` into it, whole or for chosen tables.
//!
//! `connection` is a libpq connection string, keyword/value
//! (`host=/run/postgresql user=postgres`) or a URI; the database is set on
//! it per call.

use super::client::file_name_of;
use super::{
    command_stream, restore_into_database, DatabaseServer, Service, ServiceRestoreOptions,
    ServiceRestoreReport, ServiceStreams,
};
use crate::backup::StreamSource;
use anyhow::{anyhow, Context, Result};

const GLOBALS: &str = "globals.sql";
const DUMP: &str = ".dump";
/// The database administrative queries connect to.
const MAINTENANCE_DB: &str = "postgres";

pub(super) fn dump_streams(service: &Service) -> Result<Vec<StreamSource>> {
    let connection = service.connection.as_deref();
    let databases = service.databases_to_dump(
        || list_databases(service),
        "no database that accepts connections",
    )?;
    let tools = &service.tools;
    let mut streams = vec![command_stream(
        service,
        GLOBALS,
        tools.argv(
            "pg_dumpall",
            &[
                "--globals-only",
                "--no-password",
                "--dbname",
                &conninfo(connection, MAINTENANCE_DB),
            ],
        ),
    )];
    for db in &databases {
        let argv = tools.argv(
            "pg_dump",
            &[
                "--format=custom",
                "--compress=0",
                "--no-password",
                "--dbname",
                &conninfo(connection, db),
            ],
        );
        streams.push(command_stream(service, &file_name_of(db, DUMP), argv));
    }
    Ok(streams)
}

/// Every database that accepts connections, templates left out.
fn list_databases(service: &Service) -> Result<Vec<String>> {
    let out = psql(service, service.connection.as_deref(), &[])
        .query_sql(
            "select datname from pg_database where datallowconn and not datistemplate \
             order by datname;",
        )
        .context("listing the databases to back up")?;
    Ok(out.lines().map(str::to_string).collect())
}

pub(super) fn restore(
    service: &Service,
    streams: &ServiceStreams,
    opts: &ServiceRestoreOptions,
) -> Result<ServiceRestoreReport> {
    if opts.target.is_some() {
        return Err(anyhow!(
            "a postgres source restores into a database: give --target-database, not --target"
        ));
    }
    let (database, dump) = streams.database(opts.database.as_deref(), DUMP, &[GLOBALS])?;
    let target = opts.target_database.clone().unwrap_or(database);
    let connection = service.connection_for(opts);
    if opts.globals {
        restore_globals(service, streams, connection)?;
    }
    let server = Server {
        service,
        connection,
        restore_args: restore_args(opts)?,
        no_owner: opts.no_owner,
    };
    restore_into_database(&server, service, streams, dump, target, opts)
}

/// pg_restore's options besides the database: ownership, tables.
fn restore_args(opts: &ServiceRestoreOptions) -> Result<Vec<String>> {
    let mut args = vec!["--exit-on-error".to_string(), "--no-password".to_string()];
    if opts.no_owner {
        args.extend(["--no-owner".to_string(), "--no-acl".to_string()]);
    }
    args.extend(table_args(&opts.tables)?);
    Ok(args)
}

struct Server<'a> {
    service: &'a Service,
    connection: Option<&'a str>,
    restore_args: Vec<String>,
    no_owner: bool,
}

impl Server<'_> {
    fn admin(&self, name: &str, sql: &str) -> Result<String> {
        psql(self.service, self.connection, &[("target", name)]).query_sql(sql)
    }
}

impl DatabaseServer for Server<'_> {
    fn exists(&self, name: &str) -> Result<bool> {
        let n = self.admin(
            name,
            "select count(*) from pg_database where datname = :'target';",
        )?;
        Ok(n.trim() != "0")
    }

    fn drop_database(&self, name: &str) -> Result<()> {
        self.admin(name, "drop database if exists :\"target\" with (force);")
            .map(drop)
    }

    fn create(&self, name: &str) -> Result<()> {
        self.admin(name, "create database :\"target\" template template0;")
            .map(drop)
    }

    fn load(
        &self,
        name: &str,
        feed: &mut dyn FnMut(&mut std::process::ChildStdin) -> Result<()>,
    ) -> Result<()> {
        let mut args = self.restore_args.clone();
        args.extend(["--dbname".to_string(), conninfo(self.connection, name)]);
        let argv = self.service.tools.argv("pg_restore", &args);
        self.service.tools.feed(&argv, feed)
    }

    fn hint(&self, error: &str) -> &'static str {
        if error.contains("role") && !self.no_owner {
            "; restore the roles first (--globals), or leave ownership out (--no-owner)"
        } else {
            ""
        }
    }
}

pub(super) fn databases_in(streams: &ServiceStreams) -> Vec<String> {
    streams.names(DUMP, &[GLOBALS])
}

pub(super) fn drop_database(service: &Service, name: &str) -> Result<()> {
    let server = Server {
        service,
        connection: service.connection.as_deref(),
        restore_args: Vec::new(),
        no_owner: false,
    };
    server.drop_database(name)
}

/// Applies the snapshot's roles and tablespaces. Roles that exist already
/// (the superuser, at least) are reported by psql and left as they are.
fn restore_globals(
    service: &Service,
    streams: &ServiceStreams,
    connection: Option<&str>,
) -> Result<()> {
    let globals = streams
        .get(GLOBALS)
        .ok_or_else(|| anyhow!("the snapshot holds no /postgres/{GLOBALS}"))?;
    let argv = service.tools.argv(
        "psql",
        &[
            "-X",
            "-q",
            "--no-password",
            "--dbname",
            &conninfo(connection, MAINTENANCE_DB),
            "-f",
            "-",
        ],
    );
    service
        .tools
        .feed(&argv, |stdin| streams.write(globals, stdin))
        .context("restoring the roles (--globals)")
}

/// `SCHEMA.TABLE` or `TABLE` as pg_restore's `--schema`/`--table`.
fn table_args(tables: &[String]) -> Result<Vec<String>> {
    let mut schemas: Vec<&str> = Vec::new();
    let mut args = Vec::new();
    for t in tables {
        let (schema, table) = match t.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, t.as_str()),
        };
        if table.is_empty() || schema.is_some_and(str::is_empty) {
            return Err(anyhow!("--table {t:?}: give TABLE or SCHEMA.TABLE"));
        }
        if let Some(s) = schema {
            if !schemas.contains(&s) {
                schemas.push(s);
            }
        }
        args.push(format!("--table={table}"));
    }
    if schemas.len() > 1 {
        return Err(anyhow!(
            "--table names tables of {} schemas ({}): restore one schema at a time",
            schemas.len(),
            schemas.join(", ")
        ));
    }
    args.extend(schemas.iter().map(|s| format!("--schema={s}")));
    Ok(args)
}

/// psql on the maintenance database, with variables for `:'name'` and
/// `:"name"` quoting (psql quotes them; nothing is pasted into SQL).
struct Psql<'a> {
    service: &'a Service,
    argv: Vec<String>,
}

fn psql<'a>(service: &'a Service, connection: Option<&str>, vars: &[(&str, &str)]) -> Psql<'a> {
    let mut args: Vec<String> = [
        "-X",
        "-q",
        "-A",
        "-t",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
    ]
    .map(String::from)
    .to_vec();
    for (name, value) in vars {
        args.extend(["-v".to_string(), format!("{name}={value}")]);
    }
    args.extend([
        "--dbname".to_string(),
        conninfo(connection, MAINTENANCE_DB),
        "-f".to_string(),
        "-".to_string(),
    ]);
    Psql {
        service,
        argv: service.tools.argv("psql", &args),
    }
}

impl Psql<'_> {
    fn query_sql(&self, sql: &str) -> Result<String> {
        self.service.tools.query(&self.argv, sql)
    }
}

/// `connection` with its database set to `dbname`.
pub fn conninfo(connection: Option<&str>, dbname: &str) -> String {
    let connection = connection.map(str::trim).unwrap_or("");
    if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        return uri_with_database(connection, dbname);
    }
    let quoted = format!("'{}'", dbname.replace('\\', "\\\\").replace('\'', "\\'"));
    if connection.is_empty() {
        format!("dbname={quoted}")
    } else {
        // of a repeated keyword, libpq takes the last
        format!("{connection} dbname={quoted}")
    }
}

/// `postgresql://user@host:5432/old?sslmode=x` → `…/DBNAME?sslmode=x`.
fn uri_with_database(uri: &str, dbname: &str) -> String {
    let after_scheme = uri.find("://").map_or(0, |i| i + 3);
    let (base, query) = uri.split_at(uri.find('?').unwrap_or(uri.len()));
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let encoded: String = dbname
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{}/{encoded}{query}", &base[..authority_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_set_on_any_form_of_connection() {
        assert_eq!(conninfo(None, "app"), "dbname='app'");
        assert_eq!(
            conninfo(Some("host=/run/postgresql user=pg"), "it's"),
            r"host=/run/postgresql user=pg dbname='it\'s'"
        );
        assert_eq!(
            conninfo(Some("postgresql://u@h:5432/old?sslmode=require"), "a b"),
            "postgresql://u@h:5432/a%20b?sslmode=require"
        );
        assert_eq!(conninfo(Some("postgres://h"), "app"), "postgres://h/app");
    }

    #[test]
    fn tables_become_schema_and_table_options() {
        let t = |v: &[&str]| table_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            t(&["public.a", "b"]).unwrap(),
            ["--table=a", "--table=b", "--schema=public"]
        );
        assert!(t(&["x.a", "y.b"])
            .unwrap_err()
            .to_string()
            .contains("2 schemas"));
        assert!(t(&[".a"]).is_err() && t(&["s."]).is_err());
    }
}
