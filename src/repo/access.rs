//! How to reach a repository: its URL and storage settings, and where its
//! password comes from. The CLI and `serve` (from the settings file) both
//! open through these, so the rules are the same.

use super::{FoundRepository, OpenedRepository};
use crate::settings::RepositorySettings;
use crate::storage::{Storage, StorageOptions};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

/// Where a password comes from, other than a person at a terminal. (No
/// Debug: it may hold the password.)
#[derive(Clone)]
pub enum PasswordSource {
    /// The first line of a file.
    File(PathBuf),
    /// The first line a shell command prints (it runs without cairn's
    /// secrets in its environment).
    Command(String),
    /// Given as is (e.g. `CAIRN_PASSWORD`).
    Value(String),
}

impl PasswordSource {
    /// The source given, by precedence: a file, a command, then
    /// `CAIRN_PASSWORD`; None when there is none.
    pub fn chosen(file: Option<&Path>, command: Option<&str>) -> Option<PasswordSource> {
        Self::chosen_or_env(file, command, "CAIRN_PASSWORD")
    }

    /// As [`Self::chosen`], with the value itself in variable `env`
    /// (`CAIRN_FROM_PASSWORD` for a copy's source).
    pub fn chosen_or_env(
        file: Option<&Path>,
        command: Option<&str>,
        env: &str,
    ) -> Option<PasswordSource> {
        if let Some(path) = file {
            return Some(PasswordSource::File(path.to_path_buf()));
        }
        if let Some(cmd) = command {
            return Some(PasswordSource::Command(cmd.to_string()));
        }
        std::env::var(env).ok().map(PasswordSource::Value)
    }

    pub fn read(&self) -> Result<String> {
        match self {
            PasswordSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the password file {}", path.display()))?;
                Ok(first_line(&text))
            }
            PasswordSource::Command(cmd) => {
                let mut sh = std::process::Command::new("sh");
                crate::child_env::ChildEnv::AdHoc.apply(&mut sh);
                let out = sh
                    .arg("-c")
                    .arg(cmd)
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .with_context(|| format!("running the password command {cmd:?}"))?;
                if !out.status.success() {
                    return Err(anyhow!(
                        "the password command {cmd:?} failed ({})",
                        out.status
                    ));
                }
                Ok(first_line(&String::from_utf8_lossy(&out.stdout)))
            }
            PasswordSource::Value(p) => Ok(p.clone()),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

/// Everything needed to open one repository.
#[derive(Clone)]
pub struct RepoAccess {
    pub url: String,
    pub storage: StorageOptions,
    pub password: PasswordSource,
}

/// Finds the repository at `url`; "no repository" (exit 10) when there is
/// none, said before anyone is asked for a password it could not use.
pub fn find_repository(url: &str, opts: &StorageOptions) -> Result<FoundRepository> {
    FoundRepository::find(Storage::open_with(url, opts)?)
}

impl RepoAccess {
    /// A repository of the settings file; without a password file or
    /// command, the password is `CAIRN_PASSWORD`.
    pub fn from_settings(repo: &RepositorySettings) -> Result<RepoAccess> {
        let password = PasswordSource::chosen(
            repo.password_file.as_deref(),
            repo.password_command.as_deref(),
        )
        .ok_or_else(|| {
            anyhow!(
                "repository {}: give password_file or password_command, or set CAIRN_PASSWORD",
                repo.url
            )
        })?;
        Ok(RepoAccess {
            url: repo.url.clone(),
            storage: StorageOptions {
                options: repo.storage_options()?,
                ..Default::default()
            },
            password,
        })
    }

    /// The key unlocked, the index not loaded: enough for snapshots.
    pub fn open_without_index(&self) -> Result<OpenedRepository> {
        find_repository(&self.url, &self.storage)?.unlock(self.password.read()?.as_bytes())
    }
}
