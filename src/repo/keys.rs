//! A repository's keys (`cairn key`): every key file wraps the same master
//! keys under its own password, so a repository can have several passwords
//! (one per person or host) and a password changes by adding a key and
//! removing the old one. New keys are written before any is removed.

use super::{layout, now_ns, OpenedRepository};
use crate::crypto::keyfile::{KdfParams, KeyFile};
use crate::crypto::MasterKeys;
use crate::id::Id;
use crate::storage::Storage;
use anyhow::{anyhow, Result};

/// One key of a repository, as `key list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyListing {
    pub id: String,
    /// The key this command was opened with.
    pub current: bool,
    /// RFC 3339.
    pub created: String,
    #[serde(rename = "hostName")]
    pub hostname: String,
    #[serde(rename = "userName")]
    pub username: String,
}

/// Every new password, whoever sets it, passes this.
pub fn check_new_password(password: &[u8]) -> Result<()> {
    if password.is_empty() {
        return Err(anyhow!(
            "an empty password protects nothing: choose one (the data cannot be recovered \
             without it)"
        ));
    }
    Ok(())
}

/// Wraps `keys` under `password` in a new key file; its id.
pub fn store_key(
    storage: &Storage,
    keys: &MasterKeys,
    password: &[u8],
    kdf: KdfParams,
) -> Result<Id> {
    check_new_password(password)?;
    let key = KeyFile::create(
        password,
        keys,
        kdf,
        now_ns(),
        super::hostname(),
        super::username(),
    )?;
    let bytes = key.encode();
    let id = Id::of_stored_bytes(&bytes);
    storage.write(&layout::key(&id), bytes)?;
    Ok(id)
}

impl OpenedRepository {
    /// The repository's keys, oldest first. Files under `keys/` that are not
    /// key files are left out (the warning is `unlock`'s).
    pub fn list_keys(&self) -> Result<Vec<KeyListing>> {
        let mut keys = Vec::new();
        for obj in self.storage.list(layout::KEYS_DIR)? {
            let Some(id) = layout::id_of(&obj.path) else {
                continue;
            };
            if obj.size > layout::max_size::KEY {
                continue;
            }
            let bytes = match self.storage.read(&obj.path, layout::max_size::KEY) {
                Ok(b) => b,
                Err(e) if crate::storage::is_not_found(&e) => continue,
                Err(e) => return Err(e),
            };
            let Ok(key) = KeyFile::decode(&bytes) else {
                continue;
            };
            keys.push((
                key.created_ns,
                KeyListing {
                    id: id.to_hex(),
                    current: id == self.key_id,
                    created: crate::time_text::rfc3339(key.created_ns),
                    hostname: key.hostname,
                    username: key.username,
                },
            ));
        }
        keys.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        Ok(keys.into_iter().map(|(_, k)| k).collect())
    }

    /// Adds a key opened by `password`; its id.
    pub fn add_key(&self, password: &[u8]) -> Result<Id> {
        store_key(&self.storage, &self.keys, password, KdfParams::default())
    }

    /// Removes the key `spec` names (an id or unique prefix). The key this
    /// command was opened with is refused: it may be the last one anybody
    /// knows the password of (use `key passwd` to replace it).
    pub fn remove_key(&self, spec: &str) -> Result<Id> {
        let id = self.find_key(spec)?;
        if id == self.key_id {
            return Err(anyhow!(
                "key {} is the one this command was opened with: open with another key's \
                 password to remove it, or use `cairn key passwd` to change its password",
                id.short()
            ));
        }
        self.storage.delete(&layout::key(&id))?;
        Ok(id)
    }

    /// Replaces the current key by one opened by `password` (the new key is
    /// written before the old one is removed); the new key's id.
    pub fn change_password(&self, password: &[u8]) -> Result<Id> {
        let new = self.add_key(password)?;
        self.storage.delete(&layout::key(&self.key_id))?;
        Ok(new)
    }

    fn find_key(&self, spec: &str) -> Result<Id> {
        let spec = spec.trim().to_ascii_lowercase();
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(anyhow!("{spec:?} is not a key id (see `cairn key list`)"));
        }
        let matching: Vec<Id> = self
            .list_keys()?
            .iter()
            .filter(|k| k.id.starts_with(&spec))
            .filter_map(|k| Id::from_hex(&k.id))
            .collect();
        match matching.as_slice() {
            [id] => Ok(*id),
            [] => Err(anyhow!(
                "no key {spec} in this repository (see `cairn key list`)"
            )),
            _ => Err(anyhow!(
                "{spec} matches {} keys: give more of the id",
                matching.len()
            )),
        }
    }
}
