//! The index: which blob lives in which pack. Index files in the repository
//! are the truth ([`file`]); the RocksDB cache makes lookups fast.

#[cfg(feature = "full")]
pub mod cache;
pub mod file;
