//! The repositories of the settings file as `serve` holds them: each opened
//! on first use (the key derivation runs once, the key stays in memory
//! while serve runs), and one index cache per repository shared by every
//! job and request on it. The cache is closed again after a while unused,
//! so a person running `cairn` by hand on the same host gets it back.
//!
//! Everything here blocks (storage, key derivation, RocksDB): call it off
//! the async threads.

use crate::index::cache::IndexCache;
use crate::repo::access::RepoAccess;
use crate::repo::{CacheLocation, OpenedRepository, Repository};
use crate::settings::{RepositorySettings, Settings};
use anyhow::{anyhow, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct OpenRepositories {
    entries: HashMap<String, Entry>,
}

struct Entry {
    settings: RepositorySettings,
    opened: Mutex<Option<Arc<OpenedRepository>>>,
    index: Mutex<Option<KeptIndex>>,
}

struct KeptIndex {
    cache: Arc<IndexCache>,
    last_used: Instant,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OpenRepositories {
    pub fn new(settings: &Settings) -> OpenRepositories {
        let entries = settings
            .repositories
            .iter()
            .map(|(name, r)| {
                let entry = Entry {
                    settings: r.clone(),
                    opened: Mutex::new(None),
                    index: Mutex::new(None),
                };
                (name.clone(), entry)
            })
            .collect();
        OpenRepositories { entries }
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| anyhow!("no repository {name:?} in the settings file"))
    }

    /// Repository `name`, its key unlocked (the first call derives it;
    /// concurrent first calls wait for that one).
    pub fn opened(&self, name: &str) -> Result<Arc<OpenedRepository>> {
        let entry = self.entry(name)?;
        let mut slot = locked(&entry.opened);
        if let Some(repo) = &*slot {
            return Ok(Arc::clone(repo));
        }
        let repo = RepoAccess::from_settings(&entry.settings)?
            .open_without_index()
            .map(Arc::new)
            .map_err(|e| e.context(format!("opening repository {name:?}")))?;
        *slot = Some(Arc::clone(&repo));
        Ok(repo)
    }

    /// Repository `name` with the shared index cache, brought up to date.
    /// Each caller gets its own [`Repository`] (and so its own lock).
    pub fn with_index(&self, name: &str) -> Result<Repository> {
        let opened = self.opened(name)?;
        let entry = self.entry(name)?;
        let cache = {
            let mut slot = locked(&entry.index);
            let kept = match slot.take() {
                Some(kept) => kept,
                None => KeptIndex {
                    cache: Arc::new(opened.open_index_cache(&CacheLocation::dir_or_default(
                        entry.settings.cache_dir.as_deref(),
                    ))?),
                    last_used: Instant::now(),
                },
            };
            let cache = Arc::clone(&kept.cache);
            *slot = Some(KeptIndex {
                last_used: Instant::now(),
                ..kept
            });
            cache
        };
        Repository::with_index(opened, cache)
    }

    /// Closes index caches nobody has used for `idle` (their last user
    /// gone), so RocksDB releases them.
    pub fn release_idle(&self, idle: Duration) {
        for entry in self.entries.values() {
            let mut slot = locked(&entry.index);
            let Some(kept) = slot.as_mut() else {
                continue;
            };
            if Arc::strong_count(&kept.cache) > 1 {
                kept.last_used = Instant::now(); // in use: idle from now on
            } else if kept.last_used.elapsed() >= idle {
                // dropped here: flushes and closes the database
                *slot = None;
            }
        }
    }
}
