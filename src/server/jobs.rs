//! Jobs: one run of a library operation ([`crate::ops`]) on behalf of the
//! API or the scheduler, with its record (state, progress, report).
//!
//! Jobs run in-process, on blocking threads: they call the same functions
//! the CLI does with typed options, get typed reports back, and share each
//! repository's unlocked key and index cache ([`super::repos`]), so a second
//! job never reads the whole index again. Backups and restores stop when
//! cancelled (what a backup uploaded is indexed; what a restore wrote stays
//! owner-only); forget, prune and check run to their end.
//!
//! Records live in memory and, one JSON file per job, in the state
//! directory; they are written when a job starts and when it ends.

use super::repos::OpenRepositories;
use super::store::JobStore;
use crate::backup::progress::Progress;
use crate::check::{CheckReport, ReadData};
use crate::copy::{CopyReport, CopySettings};
use crate::drill::{DrillReport, DrillRun, DrillSettings};
use crate::id::Id;
use crate::notify::{Event, EventKind, Notifier};
use crate::ops::{ForgetReport, PruneReport, RestoreReport, SourceBackupReport, SourceRun};
use crate::repo::lock::{LockKind, LockOptions};
use crate::repo::Repository;
use crate::restore::RestoreOptions;
use crate::retention::forget::ForgetOptions;
use crate::retention::prune::PruneOptions;
use crate::service::{ServiceRestoreOptions, ServiceRestoreReport};
use crate::settings::{Settings, SourceSettings};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use utoipa::ToSchema;

/// Problems (entries not read or restored, check findings) kept in a record.
const LOG_TAIL_LINES: usize = 40;
/// How long a source's retention waits for another process's maintenance
/// lock (API forget and prune jobs do not wait: they say the repository is
/// busy).
pub const SCHEDULED_LOCK_WAIT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Backup,
    Restore,
    Forget,
    Prune,
    Check,
    Drill,
    Copy,
}

impl JobKind {
    /// Forget and prune exclude each other (CLI: the maintenance lock);
    /// nothing else waits for them.
    fn is_maintenance(self) -> bool {
        matches!(self, JobKind::Forget | JobKind::Prune)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Forget => "forget",
            JobKind::Prune => "prune",
            JobKind::Check => "check",
            JobKind::Drill => "drill",
            JobKind::Copy => "copy",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// `serve` stopped while the job ran.
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Api,
    Schedule,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub percent_done: f64,
    pub files_done: u64,
    pub total_files: u64,
    pub bytes_done: u64,
    pub total_bytes: u64,
    /// The totals are the last snapshot's of the same paths, not counted.
    #[serde(default)]
    pub totals_estimated: bool,
}

/// The record of one job, as the API shows it and the state dir keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub repository: String,
    /// The configured source, for backups (and retention) of one.
    pub source: Option<String>,
    /// The drill, for drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<String>,
    /// The copy (`[copies.NAME]`), for copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    pub trigger: Trigger,
    pub state: JobState,
    /// What the job does, in words (never a secret).
    #[serde(default)]
    pub description: String,
    /// RFC 3339.
    pub created: String,
    pub finished: Option<String>,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
    pub progress: Option<JobProgress>,
    pub snapshot_id: Option<String>,
    pub bytes_added: Option<u64>,
    /// The operation's report once it has finished (a failed check or
    /// restore has one too, with the problems it found).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub report: Option<JobReport>,
    /// Problems the operation met: entries that could not be read or
    /// restored, what check found.
    pub log_tail: Vec<String>,
}

impl Job {
    pub fn is_running(&self) -> bool {
        self.state == JobState::Running
    }

    /// When it finished.
    pub fn finished_at(&self) -> Option<jiff::Timestamp> {
        self.finished.as_deref()?.parse().ok()
    }
}

/// The last successful backup of `source` among `jobs` (newest first).
pub fn last_successful_backup<'a>(jobs: &'a [Job], source: &str) -> Option<&'a Job> {
    jobs.iter().find(|j| {
        j.kind == JobKind::Backup
            && j.state == JobState::Succeeded
            && j.source.as_deref() == Some(source)
    })
}

/// What a job runs, resolved and checked by whoever started it.
pub enum Operation {
    /// A configured source, then its retention.
    Backup {
        source: String,
        lock_wait: Duration,
    },
    Restore {
        snapshot: Id,
        tree: Id,
        options: RestoreOptions,
        verify: bool,
    },
    Forget {
        options: ForgetOptions,
        dry_run: bool,
        prune: bool,
    },
    Prune {
        options: PruneOptions,
        dry_run: bool,
    },
    Check {
        read_data: ReadData,
    },
    /// A restore drill: the latest backup of its source recovered into
    /// scratch space and checked.
    Drill {
        drill: String,
    },
    /// Snapshots copied from another repository of the settings file into
    /// the job's repository (`[copies.NAME]`).
    Copy {
        copy: String,
    },
    /// A data-service source's backup into a new database or file.
    ServiceRestore {
        source: String,
        tree: Id,
        options: ServiceRestoreOptions,
    },
}

impl Operation {
    fn kind(&self) -> JobKind {
        match self {
            Operation::Backup { .. } => JobKind::Backup,
            Operation::Restore { .. } | Operation::ServiceRestore { .. } => JobKind::Restore,
            Operation::Forget { .. } => JobKind::Forget,
            Operation::Prune { .. } => JobKind::Prune,
            Operation::Check { .. } => JobKind::Check,
            Operation::Drill { .. } => JobKind::Drill,
            Operation::Copy { .. } => JobKind::Copy,
        }
    }

    /// Whether the operation stops when cancelled. A service restore runs
    /// the service's own tool, which cairn does not stop halfway (the
    /// database it was filling would be left half restored).
    fn cancellable(&self) -> bool {
        matches!(
            self,
            Operation::Backup { .. } | Operation::Restore { .. } | Operation::Copy { .. }
        )
    }
}

/// A finished operation's report, by kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum JobReport {
    Backup(SourceBackupReport),
    Restore(RestoreReport),
    Forget {
        forget: ForgetReport,
        prune: Option<PruneReport>,
    },
    Prune(PruneReport),
    Check(CheckReport),
    #[serde(rename = "service_restore")]
    ServiceRestore(ServiceRestoreReport),
    Drill(DrillReport),
    Copy(CopyReport),
}

impl JobReport {
    /// What went wrong within an operation that ran to its end: entries
    /// not read or restored, damage found.
    fn problems(&self) -> Vec<String> {
        match self {
            JobReport::Backup(r) => r.backup.errors.clone(),
            JobReport::Restore(r) => r.outcome.errors.clone(),
            JobReport::Check(r) => r.errors.clone(),
            JobReport::Forget { .. }
            | JobReport::Prune(_)
            | JobReport::ServiceRestore(_)
            | JobReport::Drill(_)
            | JobReport::Copy(_) => Vec::new(),
        }
    }

    /// The job's error when the operation ran but did not do all it should;
    /// and whether that fails the job.
    fn verdict(&self) -> Option<(String, bool)> {
        let n = self.problems().len();
        if n == 0 {
            return None;
        }
        Some(match self {
            JobReport::Backup(_) => (
                format!("{n} entries could not be read (see log_tail); the snapshot was saved without them"),
                false,
            ),
            JobReport::Restore(_) => (
                format!("{n} problems during restore (see log_tail); everything else was restored"),
                true,
            ),
            _ => (format!("the repository has {n} problems (see log_tail)"), true),
        })
    }
}

/// A job to start: what it runs and on what.
pub struct JobSpec {
    pub repository: String,
    pub source: Option<String>,
    pub trigger: Trigger,
    pub operation: Operation,
    pub description: String,
}

#[derive(Debug)]
pub enum StartError {
    /// Another job holds what this one needs (HTTP 409).
    Conflict(String),
    Other(anyhow::Error),
}

/// A running job's handle: what it reads to stop, what it counts.
#[derive(Default)]
struct Running {
    cancel: Arc<AtomicBool>,
    progress: Arc<Progress>,
    cancellable: bool,
}

pub struct Jobs {
    store: JobStore,
    records: Mutex<Records>,
    repos: Arc<OpenRepositories>,
    sources: BTreeMap<String, SourceSettings>,
    drills: BTreeMap<String, DrillSettings>,
    copies: BTreeMap<String, CopySettings>,
    /// Where drills make their scratch directories.
    scratch_dir: std::path::PathBuf,
    /// Removed from every text a job record keeps (the API token, storage
    /// secrets).
    secrets: Vec<String>,
    /// Told when a job starts and ends.
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct Records {
    jobs: Vec<Job>,
    running: HashMap<String, Running>,
}

impl Jobs {
    /// Loads the history; jobs that were running when `serve` last stopped
    /// are marked interrupted.
    pub fn open(
        store: JobStore,
        repos: Arc<OpenRepositories>,
        settings: &Settings,
        scratch_dir: std::path::PathBuf,
        secrets: Vec<String>,
        notifier: Arc<Notifier>,
    ) -> Result<Jobs> {
        let mut jobs = store.load()?;
        for job in jobs.iter_mut().filter(|j| j.is_running()) {
            job.state = JobState::Interrupted;
            job.error = Some("cairn serve stopped while this job ran".into());
            store.save(job)?;
        }
        Ok(Jobs {
            store,
            records: Mutex::new(Records {
                jobs,
                running: HashMap::new(),
            }),
            repos,
            sources: settings.sources.clone(),
            drills: settings.drills.clone(),
            copies: settings.copies.clone(),
            scratch_dir,
            secrets,
            notifier,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<Job> {
        let records = self.lock();
        records
            .jobs
            .iter()
            .rev()
            .map(|j| with_progress(&records, j))
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        let records = self.lock();
        let job = records.jobs.iter().find(|j| j.id == id)?;
        Some(with_progress(&records, job))
    }

    /// Records the job and starts it, unless it conflicts with a running one
    /// of this server: a second backup of one source, or two maintenance
    /// jobs (forget, prune) on the same repository. Scheduled jobs only check the
    /// first rule and otherwise wait for the repository lock.
    pub fn start(self: &Arc<Self>, spec: JobSpec) -> Result<Job, StartError> {
        let kind = spec.operation.kind();
        let job = {
            let mut records = self.lock();
            if let Some(why) = conflict(&records, kind, &spec) {
                return Err(StartError::Conflict(why));
            }
            let job = Job {
                id: new_job_id(),
                kind,
                repository: spec.repository.clone(),
                source: spec.source.clone(),
                drill: match &spec.operation {
                    Operation::Drill { drill } => Some(drill.clone()),
                    _ => None,
                },
                copy: match &spec.operation {
                    Operation::Copy { copy } => Some(copy.clone()),
                    _ => None,
                },
                trigger: spec.trigger,
                state: JobState::Running,
                description: spec.description.clone(),
                created: now_rfc3339(),
                finished: None,
                duration_seconds: None,
                error: None,
                progress: None,
                snapshot_id: None,
                bytes_added: None,
                report: None,
                log_tail: Vec::new(),
            };
            self.store.save(&job).map_err(StartError::Other)?;
            records.jobs.push(job.clone());
            let running = Running {
                cancellable: spec.operation.cancellable(),
                ..Running::default()
            };
            records.running.insert(job.id.clone(), running);
            job
        };
        log::info!(
            "job {} started: {} ({})",
            job.id,
            job.description,
            match job.trigger {
                Trigger::Api => "through the API",
                Trigger::Schedule => "scheduled",
            }
        );
        let jobs = Arc::clone(self);
        let id = job.id.clone();
        tokio::spawn(async move { jobs.run(id, spec).await });
        Ok(job)
    }

    /// Asks a running backup or restore to stop.
    pub fn cancel(&self, id: &str) -> Option<Result<Job, String>> {
        let records = self.lock();
        let job = records.jobs.iter().find(|j| j.id == id)?.clone();
        let Some(running) = records.running.get(id) else {
            return Some(Err(format!(
                "job {id} is not running (it {})",
                job.state.as_str()
            )));
        };
        if !running.cancellable {
            return Some(Err(format!(
                "job {id} ({}) runs to its end once started",
                job.description
            )));
        }
        running.cancel.store(true, Relaxed);
        Some(Ok(job))
    }

    /// Asks every running job to stop (serve is stopping); true if any ran.
    pub fn cancel_all(&self) -> bool {
        let records = self.lock();
        for running in records.running.values() {
            running.cancel.store(true, Relaxed);
        }
        !records.running.is_empty()
    }

    pub fn running_count(&self) -> usize {
        self.lock().running.len()
    }

    async fn run(self: Arc<Self>, id: String, spec: JobSpec) {
        let started = std::time::Instant::now();
        let (cancel, progress, record) = {
            let records = self.lock();
            let (Some(r), Some(job)) = (
                records.running.get(&id),
                records.jobs.iter().find(|j| j.id == id),
            ) else {
                return;
            };
            (Arc::clone(&r.cancel), Arc::clone(&r.progress), job.clone())
        };
        self.notifier.send(&job_event(&record, EventKind::Start));
        let worker = Arc::clone(&self);
        let stop = Arc::clone(&cancel);
        let outcome = tokio::task::spawn_blocking(move || {
            let run = SourceRun {
                lock_wait: Duration::ZERO,
                cancel: &stop,
                progress: &progress,
            };
            worker.execute(&spec, &run)
        })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the job's worker failed: {e}")));
        let cancelled = cancel.load(Relaxed);
        let mut records = self.lock();
        records.running.remove(&id);
        let Some(job) = records.jobs.iter_mut().find(|j| j.id == id) else {
            return;
        };
        job.finished = Some(now_rfc3339());
        job.duration_seconds = Some(started.elapsed().as_secs_f64());
        job.state = match outcome {
            Ok(report) => {
                if let JobReport::Backup(r) = &report {
                    job.snapshot_id = r.backup.snapshot_id.clone();
                    job.bytes_added = Some(r.backup.data_added);
                }
                for p in report.problems().into_iter().take(LOG_TAIL_LINES) {
                    job.log_tail.push(self.redact(p));
                }
                let verdict = report.verdict();
                job.report = Some(report);
                match verdict {
                    _ if cancelled => JobState::Cancelled,
                    Some((error, fails)) => {
                        job.error = Some(error);
                        if fails {
                            JobState::Failed
                        } else {
                            JobState::Succeeded
                        }
                    }
                    None => JobState::Succeeded,
                }
            }
            Err(e) => {
                job.error = Some(self.redact(format!("{e:#}")));
                if cancelled {
                    JobState::Cancelled
                } else {
                    JobState::Failed
                }
            }
        };
        let ended = if job.state == JobState::Succeeded {
            EventKind::Success
        } else {
            EventKind::Failure
        };
        self.notifier.send(&job_event(job, ended));
        log::info!(
            "job {} {} after {:.1}s{}",
            job.id,
            job.state.as_str(),
            job.duration_seconds.unwrap_or(0.0),
            job.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        if let Err(e) = self.store.save(job) {
            log::warn!("job {}: {e:#}", job.id);
        }
        let keep = self.store.history;
        if records.jobs.len() > keep {
            let excess = records.jobs.len() - keep;
            let old: Vec<Job> = records.jobs.drain(..excess).collect();
            for job in old.iter().filter(|j| !j.is_running()) {
                self.store.forget(&job.id);
            }
        }
    }

    /// Runs the operation (blocking) on the shared repository.
    fn execute(&self, spec: &JobSpec, run: &SourceRun) -> Result<JobReport> {
        let repo = self.repos.with_index(&spec.repository)?;
        let maintenance_lock = |repo: &Repository, command: &str| {
            repo.lock(
                LockKind::Exclusive,
                &LockOptions {
                    retry: Duration::ZERO,
                    command: command.to_string(),
                },
            )
        };
        Ok(match &spec.operation {
            Operation::Backup { source, lock_wait } => {
                let settings = self
                    .sources
                    .get(source)
                    .ok_or_else(|| anyhow::anyhow!("no source {source:?} in the settings file"))?;
                let run = SourceRun {
                    lock_wait: *lock_wait,
                    ..*run
                };
                JobReport::Backup(crate::ops::backup_source(&repo, source, settings, &run)?)
            }
            Operation::Restore {
                snapshot,
                tree,
                options,
                verify,
            } => JobReport::Restore(crate::ops::restore(
                &repo,
                (*snapshot, *tree),
                options,
                *verify,
                (run.cancel, run.progress),
            )?),
            Operation::Forget {
                options,
                dry_run,
                prune,
            } => {
                maintenance_lock(&repo, "forget")?;
                let forget = crate::ops::forget(&repo, options, *dry_run, |_| {})?;
                let prune = if *prune {
                    let opts = PruneOptions::default();
                    Some(crate::ops::prune(
                        &repo,
                        &opts,
                        *dry_run,
                        |_| {},
                        run.progress,
                    )?)
                } else {
                    None
                };
                JobReport::Forget { forget, prune }
            }
            Operation::Prune { options, dry_run } => {
                maintenance_lock(&repo, "prune")?;
                JobReport::Prune(crate::ops::prune(
                    &repo,
                    options,
                    *dry_run,
                    |_| {},
                    run.progress,
                )?)
            }
            Operation::Check { read_data } => JobReport::Check(crate::check::check_with_progress(
                &repo,
                *read_data,
                run.progress,
            )?),
            Operation::Drill { drill } => {
                let settings = self
                    .drills
                    .get(drill)
                    .ok_or_else(|| anyhow::anyhow!("no drill {drill:?} in the settings file"))?;
                let source = self.sources.get(&settings.source).ok_or_else(|| {
                    anyhow::anyhow!("no source {:?} in the settings file", settings.source)
                })?;
                let drill_run = DrillRun {
                    scratch_parent: &self.scratch_dir,
                    cancel: run.cancel,
                    progress: run.progress,
                };
                JobReport::Drill(crate::drill::drill(
                    &repo, drill, settings, source, &drill_run,
                )?)
            }
            Operation::Copy { copy } => {
                let settings = self
                    .copies
                    .get(copy)
                    .ok_or_else(|| anyhow::anyhow!("no copy {copy:?} in the settings file"))?;
                let from = self.repos.with_index(&settings.from)?;
                JobReport::Copy(crate::copy::copy(
                    &from,
                    &repo,
                    &settings.options(),
                    run.cancel,
                    run.progress,
                )?)
            }
            Operation::ServiceRestore {
                source,
                tree,
                options,
            } => {
                let service = self
                    .sources
                    .get(source)
                    .and_then(SourceSettings::service)
                    .ok_or_else(|| anyhow::anyhow!("no data-service source {source:?}"))?;
                JobReport::ServiceRestore(service.restore(&repo, *tree, options)?)
            }
        })
    }

    fn redact(&self, mut line: String) -> String {
        for s in &self.secrets {
            if !s.is_empty() && line.contains(s.as_str()) {
                line = line.replace(s.as_str(), "***");
            }
        }
        line
    }
}

/// A job's start or end, as notifications tell it.
fn job_event(job: &Job, event: EventKind) -> Event {
    let mut e = Event::new(event, job.kind.as_str());
    e.job = Some(job.id.clone());
    e.source = job.source.clone();
    e.repository = Some(job.repository.clone());
    e.snapshot_id = job.snapshot_id.clone();
    e.error = match (&job.error, job.state) {
        (Some(error), _) => Some(error.clone()),
        (None, JobState::Cancelled) => Some("cancelled".into()),
        _ => None,
    };
    e
}

/// A record as shown: a running backup's live counters filled in.
fn with_progress(records: &Records, job: &Job) -> Job {
    let mut job = job.clone();
    if let Some(running) = records.running.get(&job.id) {
        if matches!(
            job.kind,
            JobKind::Backup | JobKind::Restore | JobKind::Copy | JobKind::Check | JobKind::Prune
        ) {
            let v = running.progress.view();
            job.progress = Some(JobProgress {
                percent_done: v.fraction().unwrap_or(0.0),
                files_done: v.files_done,
                total_files: v.total_files,
                bytes_done: v.bytes_done,
                total_bytes: v.total_bytes,
                totals_estimated: v.estimated,
            });
        }
    }
    job
}

fn conflict(records: &Records, kind: JobKind, spec: &JobSpec) -> Option<String> {
    let running = records.jobs.iter().filter(|j| j.is_running());
    for job in running {
        if kind == JobKind::Backup && job.kind == JobKind::Backup && job.source == spec.source {
            return Some(format!(
                "a backup of source {:?} is already running (job {})",
                spec.source.as_deref().unwrap_or(""),
                job.id
            ));
        }
        if let (Operation::Copy { copy }, Some(running)) = (&spec.operation, &job.copy) {
            if copy == running {
                return Some(format!("copy {copy:?} is already running (job {})", job.id));
            }
        }
        let both_maintenance = kind.is_maintenance() && job.kind.is_maintenance();
        if spec.trigger == Trigger::Api && job.repository == spec.repository && both_maintenance {
            return Some(format!(
                "repository {:?} is busy: maintenance job {} ({}) is running, and forget and \
                 prune run one at a time; try again when it has finished",
                spec.repository,
                job.id,
                job.kind.as_str(),
            ));
        }
    }
    None
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// Time-ordered and unique: milliseconds since the epoch, then randomness.
fn new_job_id() -> String {
    let ms = jiff::Timestamp::now().as_millisecond();
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).expect("system randomness");
    format!("{ms:012x}{}", hex::encode(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_sort_by_time() {
        let a = new_job_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_job_id();
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 18);
    }
}
