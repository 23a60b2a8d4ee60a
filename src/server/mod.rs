//! `cairn serve`: the scheduler and the REST API in one process, driven by
//! the settings file ([`crate::settings`]). Jobs run library operations
//! in-process ([`jobs`]) on the repositories serve holds open ([`repos`]);
//! their records persist in the state directory ([`store`]).

pub mod api;
pub mod jobs;
mod metrics;
mod reads;
pub mod repos;
mod schedule;
mod specs;
mod stale;
pub mod store;

use crate::settings::{Settings, DEFAULT_LISTEN};
use anyhow::{anyhow, Result};
use jobs::Jobs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Tokens shorter than this are refused: the API can restore and delete.
const MIN_TOKEN_LEN: usize = 16;
/// An index cache unused this long is closed (a person may want it).
const CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(120);
const CACHE_RELEASE_CHECK: std::time::Duration = std::time::Duration::from_secs(15);
/// After the grace, how long stopping waits for job threads still running.
const ABANDON_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a stopping serve waits for notifications still being sent.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long `serve` waits for interrupted jobs to stop when it is stopped.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

pub struct ServerState {
    pub settings: Settings,
    pub token: String,
    pub jobs: Arc<Jobs>,
    /// Scheduled runs skipped because the source was still busy.
    pub skipped: HashMap<String, AtomicU64>,
    /// Where job records live (no restore may write there).
    pub state_dir: PathBuf,
    /// Each repository opened on first use, its key unlocked once and held
    /// while serve runs, with one index cache for all its jobs.
    pub repos: Arc<repos::OpenRepositories>,
    /// Where job and staleness events go.
    pub notifier: Arc<crate::notify::Notifier>,
    /// When serve started: a source with no success yet is stale counted
    /// from here.
    pub started: jiff::Timestamp,
}

pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: Option<String>,
}

/// Runs until SIGINT/SIGTERM; then interrupts running jobs and waits for
/// them (they index what they uploaded), so nothing is left half-done.
pub fn serve(opts: &ServeOptions) -> Result<()> {
    let config_path = std::path::absolute(&opts.config)?;
    let settings = Settings::load(&config_path)?;
    let token = read_token(&settings)?;
    let state_dir = settings
        .server
        .state_dir
        .clone()
        .unwrap_or_else(default_state_dir);
    let store = store::JobStore::open(&state_dir, settings.server.job_history.unwrap_or(1000))?;
    // what job records and logs never show: the token, and every
    // secret-bearing storage setting
    let mut secrets = vec![token.clone()];
    for repo in settings.repositories.values() {
        secrets.extend(
            repo.options
                .iter()
                .filter(|(k, _)| crate::child_env::is_secret_option(k))
                .map(|(_, v)| v.clone()),
        );
    }
    let repos = Arc::new(repos::OpenRepositories::new(&settings));
    let notifier = Arc::new(crate::notify::Notifier::new(settings.notifications.clone()));
    let jobs = Arc::new(Jobs::open(
        store,
        Arc::clone(&repos),
        &settings,
        state_dir.join("drills"),
        secrets,
        Arc::clone(&notifier),
    )?);
    let listen = opts
        .listen
        .clone()
        .or_else(|| settings.server.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let skipped = settings
        .sources
        .keys()
        .map(|k| (k.clone(), AtomicU64::new(0)))
        .collect();
    let state = Arc::new(ServerState {
        settings,
        token,
        jobs,
        skipped,
        state_dir: state_dir.clone(),
        repos,
        notifier,
        started: jiff::Timestamp::now(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // as much stack as the CLI's main thread: the walks over trees
        // recurse once per directory level (down to tree::MAX_DEPTH)
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(Arc::clone(&state), &listen, &state_dir));
    // A job that ignored the stop for the whole grace (forget, prune and
    // check run to their end) is abandoned, not waited for without bound:
    // the process ends, which those commands are built to survive. The open
    // repositories own I/O runtimes, which may not be dropped from within
    // this one: the last reference goes here, after it.
    runtime.shutdown_timeout(ABANDON_AFTER);
    state.notifier.wait(NOTIFY_GRACE);
    drop(state);
    result
}

async fn run(state: Arc<ServerState>, listen: &str, state_dir: &Path) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow!("cannot listen on {listen}: {e}; pick another --listen ADDR:PORT"))?;
    log::info!(
        "listening on http://{}, {} sources ({} scheduled), job history in {}",
        listener.local_addr()?,
        state.settings.sources.len(),
        state
            .settings
            .sources
            .values()
            .filter(|s| s.schedule.is_some())
            .count(),
        state_dir.display()
    );
    let scheduler = tokio::spawn(schedule::run(Arc::clone(&state)));
    let releaser = tokio::spawn(release_idle_caches(Arc::clone(&state.repos)));
    let staleness = tokio::spawn(stale::watch(Arc::clone(&state)));
    let app = api::router(Arc::clone(&state));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await?;
    scheduler.abort();
    releaser.abort();
    staleness.abort();
    if state.jobs.cancel_all() {
        log::info!("stopping; waiting for running jobs to stop cleanly");
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while state.jobs.running_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    log::info!("stopped");
    Ok(())
}

/// Closes index caches no job or request has used for a while.
async fn release_idle_caches(repos: Arc<repos::OpenRepositories>) {
    loop {
        tokio::time::sleep(CACHE_RELEASE_CHECK).await;
        let repos = Arc::clone(&repos);
        let _ = tokio::task::spawn_blocking(move || repos.release_idle(CACHE_IDLE)).await;
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn read_token(settings: &Settings) -> Result<String> {
    let token = match &settings.server.token_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| anyhow!("cannot read server.token_file {}: {e}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var("CAIRN_API_TOKEN").map_err(|_| {
            anyhow!("no API token: set server.token_file in the config file, or CAIRN_API_TOKEN")
        })?,
    };
    if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
        return Err(anyhow!(
            "the API token must be at least {MIN_TOKEN_LEN} characters without spaces \
             (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(token)
}

fn default_state_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(dirs::cache_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("cairn")
        .join("serve")
}
