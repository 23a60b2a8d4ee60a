//! The repository config (`config`), sealed with the master keys.

use crate::chunker::ChunkerParams;
use crate::error::{FormatError, FormatResult};
use crate::id::Id;
use crate::wire;
use serde::{Deserialize, Serialize};

/// Repository format version this code writes and reads.
pub const REPO_VERSION: u32 = 1;

/// zstd level of new repositories: on the bench's tree, level 2 costs 12%
/// less CPU than 3 for a 2.5% larger repository.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// Random; names the local cache directory.
    pub id: Id,
    pub chunker: ChunkerParams,
    /// zstd level used when a backup does not choose one (0: store raw).
    pub compression_level: i32,
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    pub fn decode(plain: &[u8]) -> FormatResult<Config> {
        let c: Config = wire::decode("config", plain)?;
        if c.version != REPO_VERSION {
            return Err(FormatError::Malformed {
                what: "config",
                detail: format!(
                    "repository version {} is not supported (this cairn reads {REPO_VERSION})",
                    c.version
                ),
            });
        }
        c.chunker.validate()?;
        if !(0..=22).contains(&c.compression_level) {
            return Err(FormatError::Malformed {
                what: "config",
                detail: format!("compression level {} outside 0..=22", c.compression_level),
            });
        }
        Ok(c)
    }
}
