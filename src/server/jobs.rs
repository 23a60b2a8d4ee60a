//! Jobs: one run of cairn's own commands on behalf of the API or the
//! scheduler, with its record (state, progress, result, log tail).
//!
//! A job runs as a child process of this binary (`cairn --json backup …`),
//! so the API does exactly what the CLI does, a job's memory goes back to the
//! system when it ends, and cancelling is the CLI's tested Ctrl-C path (what
//! was uploaded is indexed, exit 130). Children get SIGTERM if `serve` dies.
//!
//! Records live in memory and, one JSON file per job, in the state
//! directory; they are written when a job starts and when it ends.

use super::store::JobStore;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use utoipa::ToSchema;

/// Lines of a job's stderr kept in its record.
const LOG_TAIL_LINES: usize = 40;
/// JSON results (non-progress objects on stdout) kept in a record.
const MAX_RESULTS: usize = 16;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Backup,
    Restore,
    Forget,
    Prune,
    Check,
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
}

/// The record of one job, as the API shows it and the state dir keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub repository: String,
    /// The configured source, for backups (and retention) of one.
    pub source: Option<String>,
    pub trigger: Trigger,
    pub state: JobState,
    /// The cairn command lines the job runs, in order (never a secret).
    pub steps: Vec<String>,
    /// RFC 3339.
    pub created: String,
    pub finished: Option<String>,
    pub duration_seconds: Option<f64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub progress: Option<JobProgress>,
    pub snapshot_id: Option<String>,
    pub bytes_added: Option<u64>,
    /// The JSON results the commands printed (summaries, plans), as they
    /// printed them (`cairn --json …`).
    pub results: Vec<serde_json::Value>,
    /// The last lines the commands wrote to stderr.
    pub log_tail: Vec<String>,
}

impl Job {
    pub fn is_running(&self) -> bool {
        self.state == JobState::Running
    }
}

/// What to run: cairn's arguments per step, and the environment that names
/// the repository and its password source.
pub struct JobSpec {
    pub kind: JobKind,
    pub repository: String,
    pub source: Option<String>,
    pub trigger: Trigger,
    pub steps: Vec<Vec<String>>,
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum StartError {
    /// Another job holds what this one needs (HTTP 409).
    Conflict(String),
    Other(anyhow::Error),
}

/// A running job's handle: its current child, and whether cancel was asked.
#[derive(Default)]
struct Running {
    pid: Option<u32>,
    cancel_requested: bool,
}

pub struct Jobs {
    exe: PathBuf,
    store: JobStore,
    records: Mutex<Records>,
    /// Removed from every text a job record keeps (the API token).
    secrets: Vec<String>,
}

#[derive(Default)]
struct Records {
    jobs: Vec<Job>,
    running: HashMap<String, Running>,
}

impl Jobs {
    /// Loads the history; jobs that were running when `serve` last stopped
    /// are marked interrupted.
    pub fn open(exe: PathBuf, store: JobStore, secrets: Vec<String>) -> Result<Jobs> {
        let mut jobs = store.load()?;
        for job in jobs.iter_mut().filter(|j| j.is_running()) {
            job.state = JobState::Interrupted;
            job.error = Some("cairn serve stopped while this job ran".into());
            store.save(job)?;
        }
        Ok(Jobs {
            exe,
            store,
            records: Mutex::new(Records {
                jobs,
                running: HashMap::new(),
            }),
            secrets,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<Job> {
        self.lock().jobs.iter().rev().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.lock().jobs.iter().find(|j| j.id == id).cloned()
    }

    /// Records the job and starts it, unless it conflicts with a running one
    /// of this server: a second backup of one source, or two maintenance
    /// jobs (forget, prune) on the same repository. Scheduled jobs only check the
    /// first rule and otherwise wait for the repository lock (`--retry-lock`).
    pub fn start(self: &Arc<Self>, spec: JobSpec) -> Result<Job, StartError> {
        let job = {
            let mut records = self.lock();
            if let Some(why) = conflict(&records, &spec) {
                return Err(StartError::Conflict(why));
            }
            let job = Job {
                id: new_job_id(),
                kind: spec.kind,
                repository: spec.repository.clone(),
                source: spec.source.clone(),
                trigger: spec.trigger,
                state: JobState::Running,
                steps: spec
                    .steps
                    .iter()
                    .map(|s| format!("cairn {}", s.join(" ")))
                    .collect(),
                created: now_rfc3339(),
                finished: None,
                duration_seconds: None,
                exit_code: None,
                error: None,
                progress: None,
                snapshot_id: None,
                bytes_added: None,
                results: Vec::new(),
                log_tail: Vec::new(),
            };
            self.store.save(&job).map_err(StartError::Other)?;
            records.jobs.push(job.clone());
            records.running.insert(job.id.clone(), Running::default());
            job
        };
        log::info!(
            "job {} started: {} of {} ({})",
            job.id,
            job.kind.as_str(),
            job.source.as_deref().unwrap_or(&job.repository),
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

    /// Asks a running job to stop (SIGINT: the CLI's Ctrl-C path).
    pub fn cancel(&self, id: &str) -> Option<Result<Job, String>> {
        let mut records = self.lock();
        let job = records.jobs.iter().find(|j| j.id == id)?.clone();
        let Some(running) = records.running.get_mut(id) else {
            return Some(Err(format!(
                "job {id} is not running (it {})",
                job.state.as_str()
            )));
        };
        running.cancel_requested = true;
        if let Some(pid) = running.pid {
            interrupt(pid);
        }
        Some(Ok(job))
    }

    /// Interrupts every running job (serve is stopping); true if any ran.
    pub fn cancel_all(&self) -> bool {
        let mut records = self.lock();
        for running in records.running.values_mut() {
            running.cancel_requested = true;
            if let Some(pid) = running.pid {
                interrupt(pid);
            }
        }
        !records.running.is_empty()
    }

    pub fn running_count(&self) -> usize {
        self.lock().running.len()
    }

    async fn run(self: Arc<Self>, id: String, spec: JobSpec) {
        let started = std::time::Instant::now();
        let mut outcome: Result<i32, String> = Ok(0);
        for step in &spec.steps {
            if self.cancel_requested(&id) {
                break;
            }
            outcome = self.run_step(&id, step, &spec.env).await;
            if !matches!(outcome, Ok(0) | Ok(3)) {
                break;
            }
        }
        let cancelled = self.cancel_requested(&id);
        let mut records = self.lock();
        records.running.remove(&id);
        let Some(job) = records.jobs.iter_mut().find(|j| j.id == id) else {
            return;
        };
        job.finished = Some(now_rfc3339());
        job.duration_seconds = Some(started.elapsed().as_secs_f64());
        match outcome {
            Ok(code) => job.exit_code = Some(code),
            Err(e) => job.error = Some(e),
        }
        job.state = match job.exit_code {
            _ if cancelled => JobState::Cancelled,
            Some(0) => JobState::Succeeded,
            Some(3) => {
                job.error = Some("some files could not be read (see log_tail); the snapshot was saved without them".into());
                JobState::Succeeded
            }
            _ => JobState::Failed,
        };
        if job.state == JobState::Failed && job.error.is_none() {
            // the command ended without its exit_error (killed, or refused
            // its arguments before it could say)
            job.error = Some(format!(
                "the command failed with exit code {} (see log_tail)",
                job.exit_code.map_or("-".to_string(), |c| c.to_string())
            ));
        }
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

    fn cancel_requested(&self, id: &str) -> bool {
        self.lock()
            .running
            .get(id)
            .is_some_and(|r| r.cancel_requested)
    }

    /// Runs one command; Ok(exit code) or Err(why it could not run).
    async fn run_step(
        &self,
        id: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<i32, String> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--json")
            .args(args)
            // the API token is serve's alone; hooks below the job never see it
            .env_remove("CAIRN_API_TOKEN")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            cmd.pre_exec(|| {
                // Its own process group, so cancelling reaches the commands it
                // runs too (pg_dump), as Ctrl-C in a terminal would.
                libc::setpgid(0, 0);
                // A job must not outlive serve: SIGTERM is the CLI's clean stop.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        if let Some(r) = self.lock().running.get_mut(id) {
            r.pid = child.id();
            if let (true, Some(pid)) = (r.cancel_requested, r.pid) {
                interrupt(pid);
            }
        }
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let out = for_each_line(stdout, |line| self.on_stdout(id, line));
        let err = for_each_line(stderr, |line| self.on_stderr(id, line));
        let (status, (), ()) = tokio::join!(child.wait(), out, err);
        let status = status.map_err(|e| format!("waiting for the job's process: {e}"))?;
        Ok(status
            .code()
            .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)))
    }

    fn on_stdout(&self, id: &str, line: String) {
        let mut records = self.lock();
        let Some(job) = records.jobs.iter_mut().find(|j| j.id == id) else {
            return;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            push_tail(&mut job.log_tail, self.redact(line));
            return;
        };
        if value["message_type"] == "status" {
            job.progress = serde_json::from_value(value).ok();
            return;
        }
        if job.kind == JobKind::Backup && value["message_type"] == "summary" {
            job.snapshot_id = value["snapshot_id"].as_str().map(String::from);
            job.bytes_added = value["data_added"].as_u64();
        }
        if job.results.len() < MAX_RESULTS {
            job.results.push(value);
        }
    }

    /// Warnings and notes go to the log tail; the command's failure comes
    /// as its `exit_error` object (it runs with --json) and becomes the
    /// job's error.
    fn on_stderr(&self, id: &str, line: String) {
        let exit_error = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .filter(|v| v["message_type"] == "exit_error")
            .and_then(|v| v["message"].as_str().map(|m| self.redact(m.to_string())));
        let line = self.redact(line);
        let mut records = self.lock();
        if let Some(job) = records.jobs.iter_mut().find(|j| j.id == id) {
            match exit_error {
                Some(message) => {
                    push_tail(&mut job.log_tail, format!("error: {message}"));
                    job.error = Some(message);
                }
                None => push_tail(&mut job.log_tail, line),
            }
        }
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

fn conflict(records: &Records, spec: &JobSpec) -> Option<String> {
    let running = records.jobs.iter().filter(|j| j.is_running());
    for job in running {
        if spec.kind == JobKind::Backup && job.kind == JobKind::Backup && job.source == spec.source
        {
            return Some(format!(
                "a backup of source {:?} is already running (job {})",
                spec.source.as_deref().unwrap_or(""),
                job.id
            ));
        }
        let both_maintenance = spec.kind.is_maintenance() && job.kind.is_maintenance();
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

/// SIGINT to the job's process group (the job leads its own group).
fn interrupt(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
    }
}

async fn for_each_line(reader: impl AsyncRead + Unpin, mut each: impl FnMut(String)) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                each(line.trim_end_matches(['\n', '\r']).to_string());
            }
        }
    }
}

fn push_tail(tail: &mut Vec<String>, line: String) {
    if tail.len() == LOG_TAIL_LINES {
        tail.remove(0);
    }
    tail.push(line);
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
