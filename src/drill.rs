//! Restore drills (`[drills.NAME]`): proof that a source's latest backup
//! can be recovered, not only read. A drill restores the latest snapshot of
//! its source into scratch space, checks it, and removes the scratch space:
//!
//! - a files source into a scratch directory, every restored byte read back
//!   and compared with the snapshot;
//! - a database service into a scratch database per database backed up
//!   (`cairn_drill_…`, dropped afterwards), a SQLite or Redis backup into a
//!   scratch file: the service's own restore tool must succeed;
//! - then the drill's `verify` command, if any, must exit 0. It sees
//!   `CAIRN_DRILL_TARGET` (the scratch directory or file) or
//!   `CAIRN_DRILL_DATABASE` (the scratch database), and
//!   `CAIRN_DRILL_SOURCE_DATABASE` (the database it was restored from).

use crate::backup::progress::Progress;
use crate::hooks::run_hook;
use crate::id::Id;
use crate::repo::Repository;
use crate::restore::RestoreOptions;
use crate::service::{Service, ServiceRestoreOptions};
use crate::settings::SourceSettings;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// One `[drills.NAME]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSettings {
    /// The source whose latest snapshot is recovered.
    pub source: String,
    /// A cron expression (as a source's `schedule`), under `serve`.
    pub schedule: Option<String>,
    /// A command that checks the recovered copy (see the module comment).
    pub verify: Option<Vec<String>>,
}

/// What a drill recovered and checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub drill: String,
    pub source: String,
    pub snapshot_id: String,
    /// Each restore: what, into which scratch directory, file or database.
    pub restored: Vec<DrillRestore>,
    /// Bytes restored.
    pub bytes: u64,
    /// A `verify` command ran (once per restore) and passed.
    pub verified_by_command: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRestore {
    pub from: String,
    pub into: String,
}

/// What a drill runs on.
pub struct DrillRun<'a> {
    /// Scratch directories and files are made below this (owner-only).
    pub scratch_parent: &'a Path,
    pub cancel: &'a AtomicBool,
    pub progress: &'a Progress,
}

/// Runs drill `name` on the latest snapshot of `source` (named
/// `source_name`); an error says what failed.
pub fn drill(
    repo: &Repository,
    name: &str,
    settings: &DrillSettings,
    source: &SourceSettings,
    run: &DrillRun,
) -> Result<DrillReport> {
    let filter = crate::ops::source_filter(source);
    let (snapshot, snap) = repo
        .find_snapshot("latest", &filter)
        .with_context(|| format!("no snapshot of source {:?} to recover", settings.source))?;
    let scratch = Scratch::create(run.scratch_parent, name)?;
    let mut report = DrillReport {
        drill: name.to_string(),
        source: settings.source.clone(),
        snapshot_id: snapshot.to_hex(),
        restored: Vec::new(),
        bytes: 0,
        verified_by_command: false,
    };
    let verify = |env: &[(&str, String)]| -> Result<()> {
        match &settings.verify {
            Some(argv) => run_hook("drill's verify", argv, env, &source.child_env()),
            None => Ok(()),
        }
    };
    match source.service() {
        None => drill_files(
            repo,
            (snapshot, snap.tree),
            &scratch,
            run,
            &mut report,
            verify,
        )?,
        Some(service) => drill_service(repo, snap.tree, &service, &scratch, &mut report, verify)?,
    }
    report.verified_by_command = settings.verify.is_some();
    Ok(report)
}

fn drill_files(
    repo: &Repository,
    snapshot: (Id, Id),
    scratch: &Scratch,
    run: &DrillRun,
    report: &mut DrillReport,
    verify: impl Fn(&[(&str, String)]) -> Result<()>,
) -> Result<()> {
    let target = scratch.path.join("files");
    let opts = RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    let restored = crate::ops::restore(repo, snapshot, &opts, true, (run.cancel, run.progress))?;
    let errors = &restored.outcome.errors;
    if let Some(first) = errors.first() {
        return Err(anyhow!(
            "the recovered copy has {} problems; the first: {first}",
            errors.len()
        ));
    }
    report.bytes = restored.outcome.bytes_written;
    report.restored.push(DrillRestore {
        from: "/".into(),
        into: target.display().to_string(),
    });
    verify(&[("CAIRN_DRILL_TARGET", target.display().to_string())])
}

fn drill_service(
    repo: &Repository,
    tree: Id,
    service: &Service,
    scratch: &Scratch,
    report: &mut DrillReport,
    verify: impl Fn(&[(&str, String)]) -> Result<()>,
) -> Result<()> {
    let mut databases: Vec<Option<String>> = service
        .databases_in(repo, tree)?
        .into_iter()
        .map(Some)
        .collect();
    if databases.is_empty() {
        databases.push(None); // Redis: the one RDB file
    }
    for (i, database) in databases.iter().enumerate() {
        let source_db = database.clone().unwrap_or_default();
        if service.restores_into_a_database() {
            let target = format!("cairn_drill_{}_{i}", scratch.tag);
            let opts = ServiceRestoreOptions {
                database: database.clone(),
                target_database: Some(target.clone()),
                ..Default::default()
            };
            let checked = service.restore(repo, tree, &opts).and_then(|r| {
                verify(&[
                    ("CAIRN_DRILL_DATABASE", target.clone()),
                    ("CAIRN_DRILL_SOURCE_DATABASE", source_db.clone()),
                ])
                .map(|()| r)
            });
            // whatever happened, the scratch database goes
            let dropped = service.drop_database(&target);
            let r = checked.with_context(|| format!("recovering database {source_db:?}"))?;
            dropped.with_context(|| format!("dropping the scratch database {target:?}"))?;
            report.bytes += r.bytes;
            report.restored.push(DrillRestore {
                from: r.from,
                into: target,
            });
        } else {
            let file = scratch
                .path
                .join(database.as_deref().unwrap_or("dump.rdb").replace('/', "_"));
            let opts = ServiceRestoreOptions {
                database: database.clone(),
                target: Some(file.clone()),
                ..Default::default()
            };
            let r = service.restore(repo, tree, &opts)?;
            verify(&[
                ("CAIRN_DRILL_TARGET", file.display().to_string()),
                ("CAIRN_DRILL_SOURCE_DATABASE", source_db),
            ])?;
            report.bytes += r.bytes;
            report.restored.push(DrillRestore {
                from: r.from,
                into: file.display().to_string(),
            });
        }
    }
    Ok(())
}

/// An owner-only scratch directory, removed with what it holds when
/// dropped; `tag` names its scratch databases.
struct Scratch {
    path: PathBuf,
    tag: String,
}

impl Scratch {
    fn create(parent: &Path, drill: &str) -> Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|e| anyhow!("no randomness: {e}"))?;
        let tag = hex::encode(random);
        let plain: String = drill
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow!("cannot create {}: {e}", parent.display()))?;
        let path = parent.join(format!("cairn-drill-{plain}-{tag}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                anyhow!(
                    "cannot create the scratch directory {}: {e}",
                    path.display()
                )
            })?;
        Ok(Scratch { path, tag })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            log::warn!(target: "cairn::server", "cannot remove the drill's scratch directory {}: {e}", self.path.display());
        }
    }
}
