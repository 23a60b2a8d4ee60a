//! cairn: a content-addressed, deduplicating, encrypted snapshot store.
//!
//! The format layer (always built, no RocksDB or OpenDAL): [`id`], [`wire`],
//! [`crypto`], [`chunker`], [`filter`], [`pack`], [`index::file`], [`tree`],
//! [`config`], [`lock_record`]. Everything that touches storage, the cache or the file system
//! is behind the `full` feature (on by default).

pub mod chunker;
pub mod config;
pub mod crypto;
pub mod error;
pub mod filter;
pub mod id;
pub mod index;
pub mod lock_record;
pub mod pack;
pub mod tree;
pub mod wire;

#[cfg(feature = "full")]
pub mod backup;
#[cfg(feature = "full")]
pub mod check;
#[cfg(feature = "full")]
pub mod child_env;
#[cfg(feature = "full")]
pub mod copy;
#[cfg(feature = "full")]
pub mod crash_point;
#[cfg(feature = "full")]
pub mod drill;
#[cfg(feature = "full")]
pub mod duration;
#[cfg(feature = "full")]
pub mod fail;
#[cfg(feature = "full")]
pub mod hooks;
#[cfg(feature = "full")]
pub mod mount;
#[cfg(feature = "full")]
pub mod notify;
#[cfg(feature = "full")]
pub mod ops;
#[cfg(feature = "full")]
pub mod repo;
#[cfg(feature = "full")]
pub mod restore;
#[cfg(feature = "full")]
pub mod retention;
#[cfg(feature = "full")]
pub mod server;
#[cfg(feature = "full")]
pub mod service;
#[cfg(feature = "full")]
pub mod settings;
#[cfg(feature = "full")]
pub mod size;
#[cfg(feature = "full")]
pub mod source;
#[cfg(feature = "full")]
pub mod storage;
#[cfg(feature = "full")]
pub mod time_text;

pub use error::{FormatError, FormatResult};
pub use id::Id;
