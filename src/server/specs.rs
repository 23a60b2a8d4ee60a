//! What each job runs: cairn's arguments and environment, built from the
//! settings file. Secrets stay out of arguments (which `ps` shows and job
//! records keep): the password source and the storage settings travel in
//! the environment.

use super::jobs::{JobKind, JobSpec, Trigger};
use crate::child_env::STORAGE_OPTIONS_VAR;
use crate::settings::{RepositorySettings, RetentionSettings, Settings, SourceSettings};
use std::path::Path;

/// How long a scheduled step waits for another process's lock.
const SCHEDULED_LOCK_WAIT: &str = "1h";

/// The environment that names a repository and how to get its password.
pub fn repository_env(repo: &RepositorySettings) -> Vec<(String, String)> {
    let mut env = vec![("CAIRN_REPOSITORY".to_string(), repo.url.clone())];
    let path = |p: &Path| p.to_string_lossy().into_owned();
    if let Some(f) = &repo.password_file {
        env.push(("CAIRN_PASSWORD_FILE".into(), path(f)));
    }
    if let Some(c) = &repo.password_command {
        env.push(("CAIRN_PASSWORD_COMMAND".into(), c.clone()));
    }
    if let Some(d) = &repo.cache_dir {
        env.push(("CAIRN_CACHE_DIR".into(), path(d)));
    }
    if !repo.options.is_empty() {
        let lines: Vec<String> = repo
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push((STORAGE_OPTIONS_VAR.into(), lines.join("\n")));
    }
    env
}

fn spec(
    settings: &Settings,
    kind: JobKind,
    repository: &str,
    source: Option<&str>,
    trigger: Trigger,
    steps: Vec<Vec<String>>,
) -> JobSpec {
    JobSpec {
        kind,
        repository: repository.to_string(),
        source: source.map(String::from),
        trigger,
        steps,
        env: repository_env(&settings.repositories[repository]),
    }
}

/// A backup of a configured source, then its retention (forget, prune).
pub fn backup(
    settings: &Settings,
    config_path: &Path,
    name: &str,
    source: &SourceSettings,
    trigger: Trigger,
) -> JobSpec {
    let mut backup = vec![
        "backup".to_string(),
        "--config".into(),
        config_path.to_string_lossy().into_owned(),
        "--source".into(),
        name.to_string(),
    ];
    if trigger == Trigger::Schedule {
        backup.extend(["--retry-lock".to_string(), SCHEDULED_LOCK_WAIT.into()]);
    }
    let mut steps = vec![backup];
    if let Some(retention) = &source.retention {
        steps.push(retention_step(source, retention));
    }
    spec(
        settings,
        JobKind::Backup,
        &source.repository,
        Some(name),
        trigger,
        steps,
    )
}

/// `forget` scoped to the source's own snapshots: its host and paths.
fn retention_step(source: &SourceSettings, r: &RetentionSettings) -> Vec<String> {
    let mut args = vec![
        "forget".to_string(),
        "--retry-lock".into(),
        SCHEDULED_LOCK_WAIT.into(),
    ];
    args.extend(r.forget_args());
    let host = source.host.clone().unwrap_or_else(crate::repo::hostname);
    args.extend(["--host".to_string(), host]);
    for p in &source.paths {
        args.extend(["--path".to_string(), p.to_string_lossy().into_owned()]);
    }
    for c in &source.commands {
        args.extend(["--path".to_string(), format!("/{}", c.name)]);
    }
    args
}

pub fn repository_job(
    settings: &Settings,
    kind: JobKind,
    repository: &str,
    args: Vec<String>,
) -> JobSpec {
    spec(settings, kind, repository, None, Trigger::Api, vec![args])
}
