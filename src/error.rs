//! Errors of the format layer: decoding stored bytes and cryptography.

/// What went wrong while reading stored bytes. Decoders return this instead of
/// panicking, whatever the input.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "authentication failed: the {what} was modified, corrupted, or encrypted with another key"
    )]
    Authentication { what: &'static str },
    #[error("{what} is truncated ({len} bytes)")]
    Truncated { what: &'static str, len: usize },
    #[error(
        "{what} has unsupported format version {version} (this cairn reads version {supported})"
    )]
    UnsupportedVersion {
        what: &'static str,
        version: u8,
        supported: u8,
    },
    #[error("{what} is malformed: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("blob content does not match its id {expected} (got {actual}): the data is corrupted")]
    IdMismatch { expected: String, actual: String },
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("wrong password: no key in this repository opens with it")]
    WrongPassword,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("invalid chunker parameters: {0}")]
    ChunkerParams(String),
}

pub type FormatResult<T> = Result<T, FormatError>;
