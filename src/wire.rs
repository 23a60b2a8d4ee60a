//! The binary encoding shared by every structured object: one version byte,
//! then the value in postcard's wire format (see format-spec/encoding.md).

use crate::error::{FormatError, FormatResult};
use serde::{de::DeserializeOwned, Serialize};

/// The only encoding version this code writes and reads.
pub const WIRE_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_version(WIRE_VERSION, value)
}

/// Encodes under another version byte: for an object whose newer form has
/// its own version (index files with condemned packs are version 2).
pub fn encode_version<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Serialising plain structs into a Vec cannot fail.
    let body = postcard::to_allocvec(value).expect("postcard encoding into a Vec");
    out.extend_from_slice(&body);
    out
}

/// Decodes a versioned value. Trailing bytes are an error: an object is
/// exactly one value, so garbage after it means corruption.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> FormatResult<T> {
    decode_version(what, WIRE_VERSION, bytes)
}

/// Decodes a value that must carry version byte `expected`.
pub fn decode_version<T: DeserializeOwned>(
    what: &'static str,
    expected: u8,
    bytes: &[u8],
) -> FormatResult<T> {
    let (&version, body) = bytes
        .split_first()
        .ok_or(FormatError::Truncated { what, len: 0 })?;
    if version != expected {
        return Err(FormatError::UnsupportedVersion {
            what,
            version,
            supported: expected,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| FormatError::Malformed {
            what,
            detail: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(FormatError::Malformed {
            what,
            detail: format!("{} unexpected trailing bytes", rest.len()),
        });
    }
    Ok(value)
}
