//! Where each object lives on storage (format-spec/layout.md).

use crate::id::Id;

/// The largest stored object of each kind a reader accepts (format-spec,
/// "Object sizes"). Objects are read whole, so beyond what a writer can
/// produce they come from a damaged or hostile repository, and reading them
/// would let it choose how much memory a command takes.
pub mod max_size {
    pub const CONFIG: u64 = 64 << 10;
    pub const KEY: u64 = 64 << 10;
    pub const LOCK: u64 = 64 << 10;
    /// Paths, tags and excludes of one backup.
    pub const SNAPSHOT: u64 = 64 << 20;
    /// Writers split index files at 100,000 blobs (about 5 MiB).
    pub const INDEX: u64 = 64 << 20;
    /// A pack is closed once past its target size (8 MiB, 16 MiB before
    /// 2026-11), so it is at most that plus one largest blob (256 MiB) and
    /// its header: well under this.
    pub const PACK: u64 = 512 << 20;
}

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
