//! User-level operations as whole units: typed options in, a typed report
//! out (`Serialize + Deserialize`), one function each. The CLI maps its
//! arguments onto them and renders the reports as text or `--json`;
//! `cairn serve` runs the same functions as jobs and keeps the reports in
//! its job records. The steps they are made of (`backup`, `restore`,
//! `plan_prune`, …) live in their own modules.

use crate::backup::progress::Progress;
use crate::backup::{backup, BackupOptions, BackupReport};
use crate::hooks::around_backup;
use crate::id::Id;
use crate::repo::lock::{LockKind, LockOptions};
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::Repository;
use crate::restore::{restore_until, verify, RestoreOptions, RestoreOutcome};
use crate::retention::forget::{
    execute_forget, plan_forget, ForgetGroupReport, ForgetOptions, ForgetPlan, GroupBy,
};
use crate::retention::prune::{execute_prune, plan_prune, PruneOptions, PruneResult, PruneStats};
use crate::settings::SourceSettings;
use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// What a restore did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreReport {
    pub snapshot_id: String,
    #[serde(flatten)]
    pub outcome: RestoreOutcome,
    pub dry_run: bool,
}

/// Restores snapshot `snapshot` (whose tree is `tree`) and, with `verify`,
/// reads every restored file back. Problems with single entries are in the
/// report's `errors`; stops early once `cancel` is set.
pub fn restore(
    repo: &Repository,
    (snapshot, tree): (Id, Id),
    opts: &RestoreOptions,
    verify_after: bool,
    (cancel, progress): (&AtomicBool, &Progress),
) -> Result<RestoreReport> {
    let mut outcome = restore_until(repo, tree, opts, cancel, progress)?;
    if verify_after && !opts.dry_run {
        outcome.errors.extend(verify(repo, tree, opts)?);
    }
    Ok(RestoreReport {
        snapshot_id: snapshot.to_hex(),
        outcome,
        dry_run: opts.dry_run,
    })
}

/// What a prune planned and (unless a dry run) did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub plan: PruneStats,
    pub result: Option<PruneResult>,
}

/// Plans a prune, tells `on_plan` (so a person sees it before the long
/// part), and unless `dry_run` executes it. Needs the exclusive lock.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    dry_run: bool,
    on_plan: impl FnOnce(&PruneStats),
    progress: &Progress,
) -> Result<PruneReport> {
    let plan = plan_prune(repo, opts)?;
    let stats = plan.stats.clone();
    on_plan(&stats);
    let result = if dry_run {
        None
    } else {
        Some(execute_prune(repo, plan, progress)?)
    };
    Ok(PruneReport {
        dry_run,
        plan: stats,
        result,
    })
}

/// What a forget decided and removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub groups: Vec<ForgetGroupReport>,
    /// Removed (or, in a dry run, to be removed), ids.
    pub removed: Vec<String>,
}

/// Applies a forget: plans, tells `on_plan`, and unless `dry_run` removes
/// the snapshots. Needs the exclusive lock.
pub fn forget(
    repo: &Repository,
    opts: &ForgetOptions,
    dry_run: bool,
    on_plan: impl FnOnce(&ForgetPlan),
) -> Result<ForgetReport> {
    let plan = plan_forget(repo, opts)?;
    on_plan(&plan);
    let removed = plan.to_remove();
    if !dry_run {
        execute_forget(repo, &plan)?;
    }
    Ok(ForgetReport {
        dry_run,
        groups: plan.report(),
        removed: removed.iter().map(Id::to_hex).collect(),
    })
}

/// A configured source's backup, with its retention when it has one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceBackupReport {
    pub backup: BackupReport,
    pub forget: Option<ForgetReport>,
    pub prune: Option<PruneReport>,
}

/// What a source backup needs besides the source itself.
pub struct SourceRun<'a> {
    /// How long retention waits for another process's maintenance lock.
    pub lock_wait: Duration,
    pub cancel: &'a AtomicBool,
    pub progress: &'a Progress,
}

/// Backs up the configured source `name` between its hooks
/// ([`crate::hooks`]), then applies its retention to its own snapshots
/// (its host and paths), and prunes if the retention says so.
pub fn backup_source(
    repo: &Repository,
    name: &str,
    source: &SourceSettings,
    run: &SourceRun,
) -> Result<SourceBackupReport> {
    let report = around_backup(name, source, || {
        let opts = BackupOptions::of_source(source)?;
        let outcome = backup(repo, &opts, run.cancel, run.progress)?;
        Ok((outcome.report(repo.storage.requests()), outcome.snapshot_id))
    })?;
    let mut out = SourceBackupReport {
        backup: report,
        forget: None,
        prune: None,
    };
    let Some(retention) = &source.retention else {
        return Ok(out);
    };
    if run.cancel.load(Relaxed) {
        return Err(anyhow!(
            "cancelled after the backup: the retention of {name:?} did not run"
        ));
    }
    repo.lock(
        LockKind::Exclusive,
        &LockOptions {
            retry: run.lock_wait,
            command: format!("retention of {name}"),
        },
    )?;
    let forget_opts = ForgetOptions {
        policy: retention.policy()?,
        group_by: Some(GroupBy::default()),
        remove: Vec::new(),
        filter: source_filter(source),
    };
    out.forget = Some(forget(repo, &forget_opts, false, |_| {})?);
    if retention.prune {
        out.prune = Some(prune(
            repo,
            &PruneOptions::default(),
            false,
            |_| {},
            // (its own counters: the backup's stay as they ended)
            &Progress::default(),
        )?);
    }
    Ok(out)
}

/// A source's own snapshots: its host, and the paths its backups record
/// (a data service's: its directory, e.g. `/postgres`).
pub fn source_filter(source: &SourceSettings) -> SnapshotFilter {
    let mut paths: Vec<String> = source
        .paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    paths.extend(source.commands.iter().map(|c| format!("/{}", c.name)));
    paths.extend(source.source_type.directory().map(|d| format!("/{d}")));
    SnapshotFilter {
        hosts: vec![source.host.clone().unwrap_or_else(crate::repo::hostname)],
        tags: Vec::new(),
        paths,
    }
}
