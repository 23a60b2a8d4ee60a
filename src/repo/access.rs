//! How to reach a repository: its URL and storage settings, where its
//! password comes from, where its index cache lives. The CLI fills this from
//! flags and environment, `serve` from the settings file; both open through
//! it, so the rules are the same.

use super::{CacheLocation, OpenedRepository, Repository};
use crate::fail::Fail;
use crate::settings::RepositorySettings;
use crate::storage::{Storage, StorageOptions};
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;

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
    pub cache: CacheLocation,
}

/// Opens the storage at `url`; "no repository" (exit 10) when it holds
/// none, said before anyone is asked for a password it could not use.
pub fn open_storage(url: &str, opts: &StorageOptions) -> Result<Storage> {
    let storage = Storage::open_with(url, opts)?;
    if !storage.exists(super::layout::CONFIG)? {
        storage.probe_container()?;
        return Err(Fail::RepoNotFound(storage.location().to_string()).into());
    }
    Ok(storage)
}

impl RepoAccess {
    /// A repository of the settings file; without a password file or
    /// command, the password is `CAIRN_PASSWORD`.
    pub fn from_settings(repo: &RepositorySettings) -> Result<RepoAccess> {
        let password = match (&repo.password_file, &repo.password_command) {
            (Some(f), _) => PasswordSource::File(f.clone()),
            (None, Some(c)) => PasswordSource::Command(c.clone()),
            (None, None) => PasswordSource::Value(std::env::var("CAIRN_PASSWORD").map_err(
                |_| anyhow!("repository {}: give password_file or password_command, or set CAIRN_PASSWORD", repo.url),
            )?),
        };
        Ok(RepoAccess {
            url: repo.url.clone(),
            storage: StorageOptions {
                options: repo.storage_options()?,
                ..Default::default()
            },
            password,
            cache: repo
                .cache_dir
                .clone()
                .map_or_else(CacheLocation::default_dir, CacheLocation::Dir),
        })
    }

    /// The key unlocked, the index not loaded: enough for snapshots.
    pub fn open_without_index(&self) -> Result<OpenedRepository> {
        let storage = open_storage(&self.url, &self.storage)?;
        OpenedRepository::open(storage, self.password.read()?.as_bytes())
    }

    pub fn open(&self) -> Result<Repository> {
        self.open_without_index()?.load_index(&self.cache)
    }
}
