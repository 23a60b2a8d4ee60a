//! Snapshot objects (`snapshots/<id>`): the commit point of a backup.

use crate::error::FormatResult;
use crate::id::Id;
use crate::wire;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// Root tree. It mirrors absolute paths: `/data/x` is `data` → `x`.
    pub tree: Id,
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub tags: Vec<String>,
    pub parent: Option<Id>,
    pub excludes: Vec<String>,
    pub program_version: String,
    pub summary: BackupSummary,
}

/// What the backup that made the snapshot did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub start_ns: i64,
    pub end_ns: i64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes_processed: u64,
    pub blobs_added: u64,
    /// Plaintext bytes of blobs this backup added to the repository.
    pub data_added: u64,
    /// Stored bytes (packs) this backup added.
    pub data_added_packed: u64,
    /// Entries that could not be read; they are missing from the snapshot.
    pub errors: Vec<String>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    pub fn decode(plain: &[u8]) -> FormatResult<Snapshot> {
        wire::decode("snapshot", plain)
    }
}
