//! The index: which blob lives in which pack. Index files in the repository
//! are the truth ([`file`]); the RocksDB cache makes lookups fast.

pub mod file;
#[cfg(feature = "full")]
pub mod cache;
