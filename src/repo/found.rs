//! Finding a repository and unlocking it: the config and the key files
//! are read before anyone is asked for a password, then the password opens
//! one of the keys.

use super::{layout, list_ids, OpenedRepository, OBJECTS_READ_AT_ONCE};
use crate::config::Config;
use crate::crypto::ad;
use crate::crypto::keyfile::KeyFile;
use crate::fail::Fail;
use crate::id::Id;
use crate::storage::Storage;
use anyhow::{anyhow, Context, Result};

/// What [`FoundRepository::unlock_listing`] lists while the key is derived.
pub struct Listings {
    pub snapshots: Vec<Id>,
    /// The index files, with their storage modification times.
    pub index: Vec<(Id, Option<i64>)>,
}

impl Listings {
    pub fn take(storage: &Storage) -> Result<Listings> {
        // in this order: a backup indexes its blobs before it writes its
        // snapshot, so an index listed after the snapshots covers every
        // snapshot that listing shows
        let snapshots = list_ids(storage, layout::SNAPSHOTS_DIR)?;
        let index = super::list_index_files(storage)?;
        Ok(Listings { snapshots, index })
    }
}

/// A repository found on storage: what opening it reads before anyone is
/// asked for a password (so "no repository" comes before a prompt). The
/// config and the key files are read at the same time: on a distant store
/// that is two round trips, not four.
pub struct FoundRepository {
    storage: Storage,
    sealed_config: Vec<u8>,
    /// The files under `keys/` that may be key files, in listing order.
    key_paths: Vec<(String, Id)>,
    /// The first [`OBJECTS_READ_AT_ONCE`] of them, read (the rest are read
    /// only if none of these opens: a junk-filled `keys/` may not decide how
    /// much memory opening takes).
    first_keys: Vec<Result<Vec<u8>>>,
}

impl FoundRepository {
    /// Reads the config and the key files; "no repository" (exit 10) when
    /// there is no config.
    pub fn find(storage: Storage) -> Result<FoundRepository> {
        let (config, keys) = std::thread::scope(|s| {
            let keys = s.spawn(|| -> Result<_> {
                let paths = list_key_files(&storage)?;
                let first =
                    read_key_files(&storage, &paths[..paths.len().min(OBJECTS_READ_AT_ONCE)]);
                Ok((paths, first))
            });
            let config = storage.read(layout::CONFIG, layout::max_size::CONFIG);
            let keys = keys
                .join()
                .unwrap_or_else(|_| Err(anyhow!("reading the key files panicked")));
            (config, keys)
        });
        let sealed_config = match config {
            Ok(sealed) => sealed,
            // (the key listing's error, if any, only echoes this one)
            Err(e) => {
                // a missing bucket is said plainly, not as the service's
                // error for reading from it
                storage.probe_container()?;
                if crate::storage::is_not_found(&e) {
                    return Err(Fail::RepoNotFound(storage.location().to_string()).into());
                }
                return Err(e);
            }
        };
        let (key_paths, first_keys) = keys?;
        Ok(FoundRepository {
            storage,
            sealed_config,
            key_paths,
            first_keys,
        })
    }

    /// [`Self::unlock`] while the snapshots, then the index files, are
    /// listed (a listing needs no key): what
    /// [`OpenedRepository::load_index_picking`] starts from, two round trips
    /// sooner than listing after the key derivation.
    pub fn unlock_listing(self, password: &[u8]) -> Result<(OpenedRepository, Listings)> {
        let storage = self.storage.clone();
        let (opened, listed) = std::thread::scope(|s| {
            let listed = s.spawn(|| Listings::take(&storage));
            let opened = self.unlock(password);
            let listed = listed
                .join()
                .unwrap_or_else(|_| Err(anyhow!("listing the snapshots panicked")));
            (opened, listed)
        });
        Ok((opened?, listed?))
    }

    /// Unlocks a key with `password` and opens the config. A file under
    /// `keys/` that is not a key file (damaged, foreign, hostile parameters)
    /// is skipped with a warning naming it: one junk file must not lock
    /// everyone out.
    pub fn unlock(self, password: &[u8]) -> Result<OpenedRepository> {
        let mut read = Some(self.first_keys);
        let mut unlocked = None;
        'batches: for batch in self.key_paths.chunks(OBJECTS_READ_AT_ONCE) {
            let files = read
                .take()
                .unwrap_or_else(|| read_key_files(&self.storage, batch));
            for ((path, id), bytes) in batch.iter().zip(files) {
                let bytes = match bytes {
                    Ok(bytes) => bytes,
                    Err(e) if crate::storage::is_not_found(&e) => continue, // removed meanwhile
                    Err(e) => return Err(e),
                };
                let key = match KeyFile::decode(&bytes) {
                    Ok(key) => key,
                    Err(e) => {
                        eprintln!("warning: {path} is not a usable key file ({e}): skipped");
                        continue;
                    }
                };
                if let Ok(keys) = key.unlock(password) {
                    unlocked = Some((*id, keys));
                    break 'batches;
                }
            }
        }
        let Some((key_id, keys)) = unlocked else {
            return Err(Fail::WrongPassword(self.storage.location().to_string()).into());
        };
        let plain = keys
            .cipher()
            .open("config", ad::CONFIG, &self.sealed_config)
            .context("repository config")?;
        let config = Config::decode(&plain).context("repository config")?;
        Ok(OpenedRepository {
            storage: self.storage,
            keys,
            key_id,
            config,
            snapshots: Default::default(),
        })
    }
}

/// The files under `keys/` that could be key files.
fn list_key_files(storage: &Storage) -> Result<Vec<(String, Id)>> {
    let mut listed = Vec::new();
    for obj in storage.list(layout::KEYS_DIR)? {
        let Some(id) = layout::id_of(&obj.path) else {
            continue;
        };
        // (a key file is a few hundred bytes: a far larger one is not read)
        if obj.size > layout::max_size::KEY {
            eprintln!(
                "warning: {} is {} bytes, too large for a key file: skipped",
                obj.path, obj.size
            );
            continue;
        }
        listed.push((obj.path, id));
    }
    Ok(listed)
}

fn read_key_files(storage: &Storage, listed: &[(String, Id)]) -> Vec<Result<Vec<u8>>> {
    let paths: Vec<String> = listed.iter().map(|(path, _)| path.clone()).collect();
    storage.read_each(&paths, layout::max_size::KEY)
}
