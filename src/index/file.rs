//! Index files (`index/<id>`): for each pack written, the blobs it holds;
//! and, in files written by prune, the packs it condemned (format-spec §8).

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

/// A pack that no snapshot needed when a prune looked: it still exists, but
/// counts as absent for deduplication, and a later prune deletes it once it
/// has been condemned for its grace period and still nothing needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CondemnedPack {
    pub pack: IndexedPack,
    /// When it was condemned, in the storage's own time (Unix ns). `None`:
    /// when this index file was written (the storage's modification time of
    /// the file), which a later prune turns into a number when it rewrites
    /// the index.
    pub since_ns: Option<i64>,
    /// How long it stays condemned before it may be deleted (`--keep-delete`
    /// of the prune that condemned it).
    pub grace_ns: i64,
}

/// Serialises (for `cairn cat index`) as JSON, not as the stored form:
/// [`IndexFile::encode`] picks the version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
    /// Index files this one replaces (written by prune and `repair index`);
    /// readers ignore the listed files.
    pub supersedes: Vec<Id>,
    pub condemned: Vec<CondemnedPack>,
}

/// Version 1: index files without condemned packs. Backups still write
/// this form, so older readers keep reading what backups write.
#[derive(Serialize, Deserialize)]
struct IndexFileV1 {
    packs: Vec<IndexedPack>,
    supersedes: Vec<Id>,
}

/// Version 2: with the packs prune condemned.
#[derive(Serialize, Deserialize)]
struct IndexFileV2 {
    packs: Vec<IndexedPack>,
    supersedes: Vec<Id>,
    condemned: Vec<CondemnedPack>,
}

const WHAT: &str = "index file";

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        if self.condemned.is_empty() {
            wire::encode(&IndexFileV1 {
                packs: self.packs.clone(),
                supersedes: self.supersedes.clone(),
            })
        } else {
            wire::encode_version(
                2,
                &IndexFileV2 {
                    packs: self.packs.clone(),
                    supersedes: self.supersedes.clone(),
                    condemned: self.condemned.clone(),
                },
            )
        }
    }

    pub fn decode(plain: &[u8]) -> FormatResult<IndexFile> {
        let index = match plain.first() {
            Some(2) => {
                let v: IndexFileV2 = wire::decode_version(WHAT, 2, plain)?;
                IndexFile {
                    packs: v.packs,
                    supersedes: v.supersedes,
                    condemned: v.condemned,
                }
            }
            _ => {
                let v: IndexFileV1 = wire::decode(WHAT, plain)?;
                IndexFile {
                    packs: v.packs,
                    supersedes: v.supersedes,
                    condemned: Vec::new(),
                }
            }
        };
        let condemned = index.condemned.iter().map(|c| &c.pack);
        for pack in index.packs.iter().chain(condemned) {
            let mut end = 0u64;
            for b in &pack.blobs {
                b.check_lengths()
                    .map_err(|detail| FormatError::Malformed { what: WHAT, detail })?;
                end = end.max(b.offset.saturating_add(u64::from(b.length)));
            }
            if end > pack.size {
                return Err(FormatError::Malformed {
                    what: WHAT,
                    detail: format!(
                        "pack {} lists blobs beyond its size {}",
                        pack.id.short(),
                        pack.size
                    ),
                });
            }
        }
        if let Some(c) = index.condemned.iter().find(|c| c.grace_ns < 0) {
            return Err(FormatError::Malformed {
                what: WHAT,
                detail: format!("condemned pack {} has a negative grace", c.pack.id.short()),
            });
        }
        Ok(index)
    }

    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }
}
