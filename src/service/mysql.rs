//! MySQL and MariaDB: each database as a consistent dump
//! (`--single-transaction`, with routines, events and triggers) written
//! without a `USE`, so it restores under any name, as `/mysql/NAME.sql`;
//! with MariaDB's dump tool also the users and grants (`--system=users`)
//! as `/mysql/users.sql`.
//!
//! `connection` is the client options as `KEY=VALUE` words
//! (`socket=/run/mysqld/mysqld.sock user=backup`), given to every client
//! call as `--KEY=VALUE`; a password belongs in an option file
//! (`defaults-extra-file=…`) or `MYSQL_PWD`, not in the settings file.

use super::client::file_name_of;
use super::{
    command_stream, restore_into_database, DatabaseServer, Service, ServiceRestoreOptions,
    ServiceRestoreReport, ServiceStreams,
};
use crate::backup::StreamSource;
use anyhow::{anyhow, Context, Result};

const USERS: &str = "users.sql";
const DUMP: &str = ".sql";
/// Databases of the server itself, not of its users.
const SYSTEM_DATABASES: &[&str] = &["information_schema", "performance_schema", "sys", "mysql"];

pub(super) fn dump_streams(service: &Service) -> Result<Vec<StreamSource>> {
    let connection = connection_args(service.connection.as_deref())?;
    let databases =
        service.databases_to_dump(|| list_databases(service, &connection), "no user database")?;
    let tools = &service.tools;
    let mut streams = Vec::new();
    if is_mariadb(service)? {
        let mut args = connection.clone();
        args.extend(["--system=users", "--insert-ignore"].map(String::from));
        streams.push(command_stream(
            service,
            USERS,
            tools.argv("mysqldump", &args),
        ));
    } else {
        eprintln!(
            "note: users and grants are not backed up: MySQL's mysqldump has no --system=users"
        );
    }
    for db in &databases {
        check_name(db)?;
        let mut args = connection.clone();
        args.extend(
            [
                "--single-transaction",
                "--routines",
                "--events",
                "--triggers",
                "--hex-blob",
                "--skip-dump-date",
            ]
            .map(String::from),
        );
        args.push(db.clone());
        streams.push(command_stream(
            service,
            &file_name_of(db, DUMP),
            tools.argv("mysqldump", &args),
        ));
    }
    Ok(streams)
}

fn list_databases(service: &Service, connection: &[String]) -> Result<Vec<String>> {
    let mut args = connection.to_vec();
    args.extend(["--batch", "--skip-column-names"].map(String::from));
    let out = service
        .tools
        .query(&service.tools.argv("mysql", &args), "show databases;")
        .context("listing the databases to back up")?;
    Ok(out
        .lines()
        .filter(|db| !SYSTEM_DATABASES.contains(db))
        .map(str::to_string)
        .collect())
}

fn is_mariadb(service: &Service) -> Result<bool> {
    let version = service
        .tools
        .query(&service.tools.argv("mysqldump", &["--version"]), "")?;
    Ok(version.contains("MariaDB"))
}

/// A database name the dump tool takes as a name, not an option.
fn check_name(db: &str) -> Result<()> {
    if db.is_empty() || db.starts_with('-') {
        return Err(anyhow!(
            "database name {db:?} cannot be dumped by mysqldump"
        ));
    }
    Ok(())
}

pub(super) fn restore(
    service: &Service,
    streams: &ServiceStreams,
    opts: &ServiceRestoreOptions,
) -> Result<ServiceRestoreReport> {
    if opts.target.is_some() {
        return Err(anyhow!(
            "a mysql source restores into a database: give --target-database, not --target"
        ));
    }
    if !opts.tables.is_empty() || opts.no_owner {
        return Err(anyhow!(
            "--table and --no-owner apply to postgres sources; a mysql dump is restored whole"
        ));
    }
    let (database, dump) = streams.database(opts.database.as_deref(), DUMP, &[USERS])?;
    let target = opts.target_database.clone().unwrap_or(database);
    let server = Server {
        service,
        connection: connection_args(service.connection_for(opts))?,
    };
    if opts.globals {
        let users = streams
            .get(USERS)
            .ok_or_else(|| anyhow!("the snapshot holds no /mysql/{USERS}"))?;
        let mut args = server.connection.clone();
        args.push("--force".into()); // users that exist are reported and kept
        service
            .tools
            .feed(&service.tools.argv("mysql", &args), |stdin| {
                streams.write(users, stdin)
            })
            .context("restoring the users and grants (--globals)")?;
    }
    restore_into_database(&server, service, streams, dump, target, opts)
}

struct Server<'a> {
    service: &'a Service,
    /// `--KEY=VALUE` options of every client call.
    connection: Vec<String>,
}

impl Server<'_> {
    fn sql(&self, sql: &str) -> Result<String> {
        let mut args = self.connection.clone();
        args.extend(["--batch", "--skip-column-names"].map(String::from));
        let argv = self.service.tools.argv("mysql", &args);
        self.service.tools.query(&argv, sql)
    }
}

impl DatabaseServer for Server<'_> {
    fn exists(&self, name: &str) -> Result<bool> {
        let n = self.sql(&format!(
            "select count(*) from information_schema.schemata where schema_name = {};",
            string_literal(name)
        ))?;
        Ok(n.trim() != "0")
    }

    fn drop_database(&self, name: &str) -> Result<()> {
        self.sql(&format!("drop database if exists {};", identifier(name)))
            .map(drop)
    }

    fn create(&self, name: &str) -> Result<()> {
        self.sql(&format!("create database {};", identifier(name)))
            .map(drop)
    }

    fn load(
        &self,
        name: &str,
        feed: &mut dyn FnMut(&mut std::process::ChildStdin) -> Result<()>,
    ) -> Result<()> {
        let mut args = self.connection.clone();
        args.push(format!("--database={name}"));
        let argv = self.service.tools.argv("mysql", &args);
        self.service.tools.feed(&argv, feed)
    }
}

pub(super) fn databases_in(streams: &ServiceStreams) -> Vec<String> {
    streams.names(DUMP, &[USERS])
}

pub(super) fn drop_database(service: &Service, name: &str) -> Result<()> {
    let server = Server {
        service,
        connection: connection_args(service.connection.as_deref())?,
    };
    server.drop_database(name)
}

/// `KEY=VALUE` words as `--KEY=VALUE` options.
fn connection_args(connection: Option<&str>) -> Result<Vec<String>> {
    connection
        .unwrap_or("")
        .split_whitespace()
        .map(|word| {
            let word = word.trim_start_matches('-');
            if word.is_empty() {
                return Err(anyhow!("connection: an empty option"));
            }
            Ok(format!("--{word}"))
        })
        .collect()
}

/// A MySQL string literal (backslash escapes are on by default).
fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A MySQL quoted identifier.
fn identifier(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_words_become_options() {
        assert_eq!(
            connection_args(Some("socket=/run/m.sock  --user=root")).unwrap(),
            ["--socket=/run/m.sock", "--user=root"]
        );
        assert!(connection_args(None).unwrap().is_empty());
    }

    #[test]
    fn names_are_quoted_not_pasted() {
        assert_eq!(string_literal(r"a'b\c"), r"'a''b\\c'");
        assert_eq!(identifier("a`b"), "`a``b`");
        assert!(check_name("-x").is_err() && check_name("app").is_ok());
    }
}
