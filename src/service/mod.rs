//! Data services as sources: PostgreSQL, MySQL/MariaDB, SQLite and Redis.
//!
//! A service source is backed up as named streams under one directory of
//! the snapshot (`/postgres/app.dump`, `/postgres/globals.sql`, …), each
//! the output of the service's own dump tool, all of them in one snapshot
//! or none (the stream rules of [`crate::backup`]). Each service module
//! says which streams a backup has and how one is put back into a new
//! instance: a new database, or a file for SQLite and Redis.

pub mod client;
mod mysql;
mod postgres;
mod redis;
mod sqlite;

use crate::backup::StreamSource;
use crate::id::Id;
use crate::repo::{PathTarget, Repository};
use crate::tree::{Node, NodeKind};
use anyhow::{anyhow, Result};
use client::Tools;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a configured source backs up (`type` in the settings file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    /// Paths and command streams.
    #[default]
    Files,
    Postgres,
    Mysql,
    Sqlite,
    Redis,
}

impl SourceType {
    /// The snapshot's top-level directory holding a service's streams, and
    /// so the path its snapshots are recorded (and found) by.
    pub fn directory(self) -> Option<&'static str> {
        match self {
            SourceType::Files => None,
            SourceType::Postgres => Some("postgres"),
            SourceType::Mysql => Some("mysql"),
            SourceType::Sqlite => Some("sqlite"),
            SourceType::Redis => Some("redis"),
        }
    }
}

/// A data service as a source's settings describe it.
#[derive(Debug, Clone)]
pub struct Service {
    /// Never [`SourceType::Files`].
    pub kind: SourceType,
    /// In the service's own syntax (see the README); `None`: its clients'
    /// defaults and environment (PGHOST, …).
    pub connection: Option<String>,
    /// Databases to back up (SQLite: file paths); empty: every one.
    pub databases: Vec<String>,
    pub tools: Tools,
}

/// How a service restore puts a backup back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceRestoreOptions {
    /// Which database of the snapshot (PostgreSQL, MySQL; SQLite: its file
    /// name); may be left out when the snapshot holds one.
    pub database: Option<String>,
    /// The database to create (PostgreSQL, MySQL); default: `database`.
    pub target_database: Option<String>,
    /// The file to write (SQLite, Redis).
    pub target: Option<PathBuf>,
    /// Only these tables, `SCHEMA.TABLE` or `TABLE` (PostgreSQL).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Another server than the source's (rebuilding a failed instance).
    pub connection: Option<String>,
    /// Replace a database or file that exists (`--overwrite always`).
    #[serde(default)]
    pub replace: bool,
    /// Restore the roles (PostgreSQL) or users and grants (MariaDB) first.
    #[serde(default)]
    pub globals: bool,
    /// Leave ownership and privileges out (PostgreSQL), for a server
    /// without the source's roles.
    #[serde(default)]
    pub no_owner: bool,
}

/// What a service restore did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRestoreReport {
    pub source_type: SourceType,
    /// The stream restored, e.g. `/postgres/app.dump`.
    pub from: String,
    /// The database or file written.
    pub into: String,
    /// An existing database or file was replaced.
    pub replaced: bool,
    /// Roles or users were restored first.
    pub globals: bool,
    /// Bytes of the stream fed to the service.
    pub bytes: u64,
}

impl Service {
    /// The streams one backup of the service consists of, with the
    /// databases listed on the server when none are configured. Run inside
    /// the backup (after its `before` hook), so a service started by the
    /// hook is found.
    pub fn dump_streams(&self) -> Result<Vec<StreamSource>> {
        match self.kind {
            SourceType::Postgres => postgres::dump_streams(self),
            SourceType::Mysql => mysql::dump_streams(self),
            SourceType::Sqlite => sqlite::dump_streams(self),
            SourceType::Redis => Ok(redis::dump_streams(self)),
            SourceType::Files => Err(anyhow!("a files source is not a service")),
        }
    }

    /// Puts the service's backup in snapshot tree `tree` back into a new
    /// database or file, refusing to replace one unless `opts.replace`.
    pub fn restore(
        &self,
        repo: &Repository,
        tree: Id,
        opts: &ServiceRestoreOptions,
    ) -> Result<ServiceRestoreReport> {
        let streams = ServiceStreams::load(repo, tree, self.kind)?;
        match self.kind {
            SourceType::Postgres => postgres::restore(self, &streams, opts),
            SourceType::Mysql => mysql::restore(self, &streams, opts),
            SourceType::Sqlite => sqlite::restore(self, &streams, opts),
            SourceType::Redis => redis::restore(self, &streams, opts),
            SourceType::Files => Err(anyhow!(
                "a files source is restored with `cairn restore SNAPSHOT --target DIR`"
            )),
        }
    }

    /// The databases (SQLite: file names) a snapshot holds a backup of;
    /// for Redis the one RDB file.
    pub fn databases_in(&self, repo: &Repository, tree: Id) -> Result<Vec<String>> {
        let streams = ServiceStreams::load(repo, tree, self.kind)?;
        Ok(match self.kind {
            SourceType::Postgres => postgres::databases_in(&streams),
            SourceType::Mysql => mysql::databases_in(&streams),
            SourceType::Sqlite => sqlite::databases_in(&streams),
            SourceType::Redis | SourceType::Files => Vec::new(),
        })
    }

    /// Whether a restore of this service writes a database on the server
    /// (PostgreSQL, MySQL) rather than a file.
    pub fn restores_into_a_database(&self) -> bool {
        matches!(self.kind, SourceType::Postgres | SourceType::Mysql)
    }

    /// Drops database `name` (a drill's scratch database).
    pub fn drop_database(&self, name: &str) -> Result<()> {
        match self.kind {
            SourceType::Postgres => postgres::drop_database(self, name),
            SourceType::Mysql => mysql::drop_database(self, name),
            _ => Err(anyhow!(
                "a {} source has no databases on a server",
                self.directory()
            )),
        }
    }

    /// The configured databases or, none configured, those `list` finds on
    /// the server; an error when that is none ("the server has `lacking`").
    fn databases_to_dump(
        &self,
        list: impl FnOnce() -> Result<Vec<String>>,
        lacking: &str,
    ) -> Result<Vec<String>> {
        let databases = if self.databases.is_empty() {
            list()?
        } else {
            self.databases.clone()
        };
        if databases.is_empty() {
            return Err(anyhow!("the server has {lacking}: nothing to back up"));
        }
        Ok(databases)
    }

    /// The connection a restore uses: the one asked for, else the source's.
    fn connection_for<'a>(&'a self, opts: &'a ServiceRestoreOptions) -> Option<&'a str> {
        opts.connection.as_deref().or(self.connection.as_deref())
    }

    fn directory(&self) -> &'static str {
        self.kind.directory().unwrap_or("files")
    }
}

/// A stream named `file` in the service's directory, read from `argv`.
fn command_stream(service: &Service, file: &str, argv: Vec<String>) -> StreamSource {
    StreamSource {
        name: format!("{}/{file}", service.directory()),
        input: crate::backup::StreamInput::Command(argv),
    }
}

/// The streams a snapshot holds for a service: the files of its directory.
struct ServiceStreams<'a> {
    repo: &'a Repository,
    directory: &'static str,
    files: Vec<Node>,
}

impl<'a> ServiceStreams<'a> {
    fn load(repo: &'a Repository, tree: Id, kind: SourceType) -> Result<ServiceStreams<'a>> {
        let directory = kind
            .directory()
            .ok_or_else(|| anyhow!("a files source has no service streams"))?;
        let listing = match repo.resolve_path(tree, directory) {
            Ok(PathTarget::Dir { tree, .. }) => repo.load_tree(&tree)?,
            _ => {
                return Err(anyhow!(
                    "the snapshot holds no /{directory}: it is not a backup of a {directory} source"
                ))
            }
        };
        let files = listing
            .nodes
            .into_iter()
            .filter(|n| matches!(n.kind, NodeKind::File { .. }))
            .collect();
        Ok(ServiceStreams {
            repo,
            directory,
            files,
        })
    }

    /// The stream `file`, if the snapshot has it.
    fn get(&self, file: &str) -> Option<&Node> {
        self.files.iter().find(|n| n.name == file.as_bytes())
    }

    /// The names (unescaped) of the streams whose file names end in
    /// `extension`, except those in `others`.
    fn names(&self, extension: &str, others: &[&str]) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|n| {
                let file = std::str::from_utf8(&n.name).ok()?;
                if others.contains(&file) {
                    return None;
                }
                client::name_of_file(file, extension)
            })
            .collect()
    }

    /// The stream of database `wanted` (or of the only one there is).
    fn database(
        &self,
        wanted: Option<&str>,
        extension: &str,
        others: &[&str],
    ) -> Result<(String, &Node)> {
        let names = self.names(extension, others);
        let name = match wanted {
            Some(w) => w.to_string(),
            None if names.len() == 1 => names[0].clone(),
            None => {
                return Err(anyhow!(
                    "the snapshot holds {} databases ({}): say which with --database",
                    names.len(),
                    names.join(", ")
                ))
            }
        };
        let file = client::file_name_of(&name, extension);
        let node = self.get(&file).ok_or_else(|| {
            anyhow!(
                "the snapshot holds no database {name:?} (it has: {})",
                names.join(", ")
            )
        })?;
        Ok((name, node))
    }

    /// The snapshot path of a stream, for messages and reports.
    fn path_of(&self, node: &Node) -> String {
        format!("/{}/{}", self.directory, node.name_lossy())
    }

    /// Writes the content of stream `node` to `out`.
    fn write(&self, node: &Node, out: &mut impl std::io::Write) -> Result<()> {
        let NodeKind::File { content } = &node.kind else {
            return Err(anyhow!("{} is not a file", self.path_of(node)));
        };
        crate::restore::dump::dump_file(self.repo, content, out)
    }
}

/// A database server a restore creates a database on (PostgreSQL, MySQL):
/// the steps differ, the rules ([`restore_into_database`]) do not.
trait DatabaseServer {
    fn exists(&self, name: &str) -> Result<bool>;
    fn drop_database(&self, name: &str) -> Result<()>;
    fn create(&self, name: &str) -> Result<()>;
    /// Runs the service's restore tool into database `name`, its input
    /// written by `feed`.
    fn load(
        &self,
        name: &str,
        feed: &mut dyn FnMut(&mut std::process::ChildStdin) -> Result<()>,
    ) -> Result<()>;
    /// What to add to the message of a load that failed with `error`.
    fn hint(&self, _error: &str) -> &'static str {
        ""
    }
}

/// Restores `dump` into a new database `target`: one that exists is
/// refused unless `opts.replace` (then dropped first); a load that fails
/// drops the database again, so nothing half restored passes for a
/// recovered one.
fn restore_into_database(
    server: &dyn DatabaseServer,
    service: &Service,
    streams: &ServiceStreams,
    dump: &Node,
    target: String,
    opts: &ServiceRestoreOptions,
) -> Result<ServiceRestoreReport> {
    let replaced = server.exists(&target)?;
    if replaced && !opts.replace {
        return Err(anyhow!(
            "database {target:?} exists: give --overwrite always to replace it, or another \
             --target-database"
        ));
    }
    if replaced {
        server.drop_database(&target)?;
    }
    server.create(&target)?;
    if let Err(e) = server.load(&target, &mut |stdin| streams.write(dump, stdin)) {
        let what = match server.drop_database(&target) {
            Ok(()) => format!("database {target:?} was dropped again"),
            Err(d) => format!("database {target:?} is left half restored ({d:#})"),
        };
        let hint = server.hint(&format!("{e:#}"));
        return Err(e.context(format!(
            "restoring {} into {target:?} failed: {what}{hint}",
            streams.path_of(dump)
        )));
    }
    Ok(ServiceRestoreReport {
        source_type: service.kind,
        from: streams.path_of(dump),
        into: target,
        replaced,
        globals: opts.globals,
        bytes: dump.size,
    })
}

/// Writes a restored file as a service reads it: into `target`'s directory
/// under a temporary name, owner-only, then renamed over `target` once
/// `fill` succeeded, so neither a half-written file nor a reader of the
/// temporary name ever sees part of it. Refuses an existing `target`
/// unless `replace`; says whether it replaced one.
fn write_file_atomically(
    target: &Path,
    replace: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<bool> {
    let existed = target.symlink_metadata().is_ok();
    if existed && !replace {
        return Err(anyhow!(
            "{} exists: give --overwrite always to replace it, or another --target",
            target.display()
        ));
    }
    let name = target
        .file_name()
        .ok_or_else(|| anyhow!("--target {} names no file", target.display()))?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| anyhow!("cannot create the directory {}: {e}", parent.display()))?;
    }
    let mut temp_name = name.to_os_string();
    temp_name.push(".cairn-restore");
    let temp = target.with_file_name(temp_name);
    let _ = std::fs::remove_file(&temp);
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| anyhow!("cannot create {}: {e}", temp.display()))?;
    }
    if let Err(e) = fill(&temp) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, target).map_err(|e| {
        anyhow!(
            "cannot move {} to {}: {e}",
            temp.display(),
            target.display()
        )
    })?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_kept_unless_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        std::fs::write(&target, b"old").unwrap();
        let e = write_file_atomically(&target, false, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("give --overwrite always"), "{e}");
        let failed = write_file_atomically(&target, true, |t| {
            std::fs::write(t, b"half")?;
            Err(anyhow!("the tool failed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp left"
        );
        let replaced = write_file_atomically(&target, true, |t| Ok(std::fs::write(t, b"new")?));
        assert!(replaced.unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        use std::os::unix::fs::PermissionsExt;
        let mode = target.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
