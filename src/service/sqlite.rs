//! SQLite: each database file as SQL text (`/sqlite/FILE.sql`), dumped by
//! the `sqlite3` shell inside one read transaction, so it is consistent
//! while writers go on (in WAL mode they are not even held up; with a
//! rollback journal they wait, up to their busy timeout). Nothing is copied
//! to disk first. The header settings a dump leaves out (`user_version`,
//! `application_id`, the journal mode) are appended as pragmas. A restore
//! builds a new file from the SQL and renames it into place.

use super::client::file_name_of;
use super::{command_stream, Service, ServiceRestoreOptions, ServiceRestoreReport, ServiceStreams};
use crate::backup::StreamSource;
use anyhow::{anyhow, Result};
use std::path::Path;

const DUMP: &str = ".sql";
/// How long the dump waits for a writer's lock before giving up.
const BUSY_TIMEOUT_MS: u32 = 30_000;

pub(super) fn dump_streams(service: &Service) -> Result<Vec<StreamSource>> {
    if service.databases.is_empty() {
        return Err(anyhow!(
            "a sqlite source needs `databases`: the database files"
        ));
    }
    let mut streams = Vec::new();
    for db in &service.databases {
        let path = Path::new(db);
        // the shell would create a missing file and dump it, empty
        std::fs::metadata(path).map_err(|e| anyhow!("sqlite database {db}: {e}"))?;
        let argv = service.tools.argv(
            "sqlite3",
            &[
                "-bail",
                "-batch",
                "-init",
                "/dev/null",
                db,
                &format!(".timeout {BUSY_TIMEOUT_MS}"),
                "BEGIN;",
                ".dump",
                "SELECT 'PRAGMA user_version=' || user_version || ';' FROM pragma_user_version;",
                "SELECT 'PRAGMA application_id=' || application_id || ';' \
                 FROM pragma_application_id;",
                "SELECT 'PRAGMA journal_mode=' || journal_mode || ';' FROM pragma_journal_mode;",
                "COMMIT;",
            ],
        );
        streams.push(command_stream(service, &stream_file(db)?, argv));
    }
    Ok(streams)
}

/// A database's stream: its file name plus `.sql`.
pub(super) fn stream_file(db: &str) -> Result<String> {
    let name = Path::new(db)
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("sqlite database {db:?} names no file"))?;
    Ok(file_name_of(name, DUMP))
}

pub(super) fn databases_in(streams: &ServiceStreams) -> Vec<String> {
    streams.names(DUMP, &[])
}

pub(super) fn restore(
    service: &Service,
    streams: &ServiceStreams,
    opts: &ServiceRestoreOptions,
) -> Result<ServiceRestoreReport> {
    if opts.target_database.is_some() || !opts.tables.is_empty() || opts.globals {
        return Err(anyhow!(
            "a sqlite source restores into a file: give --target FILE (and --database when the \
             snapshot holds several)"
        ));
    }
    let target = opts
        .target
        .as_deref()
        .ok_or_else(|| anyhow!("a sqlite restore needs --target FILE: the database to create"))?;
    // `--database` may be the file name or the configured path
    let wanted = opts.database.as_deref().map(|d| {
        Path::new(d)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(d)
            .to_string()
    });
    let (_, dump) = streams.database(wanted.as_deref(), DUMP, &[])?;
    let replaced = super::write_file_atomically(target, opts.replace, |temp| {
        let temp = temp
            .to_str()
            .ok_or_else(|| anyhow!("--target {} is not UTF-8", target.display()))?;
        let argv = service
            .tools
            .argv("sqlite3", &["-bail", "-batch", "-init", "/dev/null", temp]);
        service
            .tools
            .feed(&argv, |stdin| streams.write(dump, stdin))
    })?;
    // a journal of the file replaced would be applied to the new one
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut leftover = target.as_os_str().to_os_string();
        leftover.push(suffix);
        let _ = std::fs::remove_file(leftover);
    }
    Ok(ServiceRestoreReport {
        source_type: service.kind,
        from: streams.path_of(dump),
        into: target.display().to_string(),
        replaced,
        globals: false,
        bytes: dump.size,
    })
}
