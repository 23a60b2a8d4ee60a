//! Where each object lives on storage (format-spec/layout.md).

use crate::id::Id;

pub const CONFIG: &str = "config";
pub const KEYS_DIR: &str = "keys/";
pub const DATA_DIR: &str = "data/";
pub const INDEX_DIR: &str = "index/";
pub const SNAPSHOTS_DIR: &str = "snapshots/";
pub const LOCKS_DIR: &str = "locks/";

pub fn key(id: &Id) -> String {
    format!("keys/{id}")
}

pub fn pack(id: &Id) -> String {
    let hex = id.to_hex();
    format!("data/{}/{hex}", &hex[..2])
}

pub fn index(id: &Id) -> String {
    format!("index/{id}")
}

pub fn snapshot(id: &Id) -> String {
    format!("snapshots/{id}")
}

pub fn lock(id: &Id) -> String {
    format!("locks/{id}")
}

/// The id at the end of a listed object's path, if it is one.
pub fn id_of(path: &str) -> Option<Id> {
    Id::from_hex(path.rsplit('/').next()?)
}
