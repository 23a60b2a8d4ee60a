//! Index files (`index/<id>`): for each pack written, the blobs it holds.

use crate::error::{FormatError, FormatResult};
use crate::id::Id;
use crate::pack::PackedBlob;
use crate::wire;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    pub id: Id,
    /// The pack's size as stored, in bytes.
    pub size: u64,
    pub blobs: Vec<PackedBlob>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
    /// Index files this one replaces (written by prune and `repair index`);
    /// readers ignore the listed files.
    pub supersedes: Vec<Id>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    pub fn decode(plain: &[u8]) -> FormatResult<IndexFile> {
        let index: IndexFile = wire::decode("index file", plain)?;
        for pack in &index.packs {
            let mut end = 0u64;
            for b in &pack.blobs {
                end = end.max(b.offset.saturating_add(u64::from(b.length)));
            }
            if end > pack.size {
                return Err(FormatError::Malformed {
                    what: "index file",
                    detail: format!(
                        "pack {} lists blobs beyond its size {}",
                        pack.id.short(),
                        pack.size
                    ),
                });
            }
        }
        Ok(index)
    }

    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }
}
