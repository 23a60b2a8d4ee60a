//! 32-byte identifiers: blob ids (keyed BLAKE3 of content) and object ids
//! (plain BLAKE3 of the stored bytes).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Length of a shortened id as shown in listings (in hex digits).
pub const SHORT_ID_HEX_LEN: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The plain (unkeyed) BLAKE3 hash of stored bytes: names of packs,
    /// index files, snapshots and key files.
    pub fn of_stored_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        self.to_hex()[..SHORT_ID_HEX_LEN].to_string()
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// Human-readable formats (JSON) see a hex string; binary formats (postcard)
/// see 32 raw bytes with no length prefix.
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Id::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid hex id"))
        } else {
            Ok(Id(<[u8; 32]>::deserialize(d)?))
        }
    }
}
