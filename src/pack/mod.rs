//! Packs: sealed blobs of one kind, then a sealed header listing them, then a
//! 12-byte trailer (header length, magic and version). A pack can be
//! understood alone, so the index can always be rebuilt from packs.

use crate::crypto::{ad, Cipher};
use crate::error::{FormatError, FormatResult};
use crate::filter::{BlobKind, Compression, EncodedBlob, MAX_BLOB_SIZE};
use crate::id::Id;
use crate::wire;
use serde::{Deserialize, Serialize};
use std::ops::Range;

pub const PACK_MAGIC: &[u8; 7] = b"CAIRNPK";
pub const PACK_VERSION: u8 = 1;
/// header length (u32 little-endian) ‖ "CAIRNPK" ‖ version
pub const TRAILER_LEN: usize = 12;
/// Writers close a data pack once its blobs reach this size.
pub const TARGET_PACK_SIZE: usize = 8 * 1024 * 1024;
/// ... and a tree pack at this size. Tree blobs trickle in all through a
/// backup (one per directory, the root last), so the open tree pack is held
/// in memory for most of the run: 8 MiB of trees would be resident at the
/// end of a backup of a few hundred thousand files, when every other buffer
/// is too.
pub const TARGET_TREE_PACK_SIZE: usize = 2 * 1024 * 1024;
/// Readers refuse headers above this size (a pack of tiny blobs has ~100 bytes per blob).
pub const MAX_HEADER_LEN: u32 = 64 * 1024 * 1024;

/// Where one blob sits in its pack; the same record appears in index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackedBlob {
    pub kind: BlobKind,
    pub id: Id,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
    pub compression: Compression,
}

impl PackedBlob {
    /// The bytes it takes in its pack.
    pub fn extent(&self) -> Range<u64> {
        self.offset..self.offset + u64::from(self.length)
    }

    /// The lengths a writer can produce: plaintext at most
    /// [`MAX_BLOB_SIZE`], and stored bytes at most the plaintext plus the
    /// seal (compression is kept only when it shrinks). A reader allocates
    /// what these say, so a pack header or index file claiming more is
    /// refused rather than believed.
    pub fn check_lengths(&self) -> Result<(), String> {
        let seal = crate::crypto::SEAL_OVERHEAD as u64;
        let (stored, raw) = (u64::from(self.length), u64::from(self.raw_length));
        if self.raw_length > MAX_BLOB_SIZE || stored < seal || stored > raw + seal {
            return Err(format!(
                "blob {} has impossible lengths ({stored} bytes stored for {raw})",
                self.id.short()
            ));
        }
        Ok(())
    }
}

/// Two blob reads of one pack are merged when the gap between them is at
/// most this (reading a little waste beats another request).
pub const COALESCE_GAP: u64 = 1 << 20;
/// Upper bound of one merged read. A data pack is closed once its blobs
/// pass [`TARGET_PACK_SIZE`], so it holds a little more (up to one chunk
/// more): with this bound a whole pack is one read. At 8 MiB nearly every
/// pack took a second request for its last few hundred KB, a round trip
/// each from an object store (a quarter of a cold restore's time at 20 ms).
pub const MAX_READ: u64 = 2 * TARGET_PACK_SIZE as u64;

/// Splits wanted blobs of one pack (sorted by offset; `extent` says where
/// each is) into runs, each read from storage at once: what restore and
/// copy read.
pub fn read_runs<T>(sorted: &[T], extent: impl Fn(&T) -> Range<u64>) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut begin = 0;
    for i in 1..=sorted.len() {
        let split = i == sorted.len() || {
            let prev_end = extent(&sorted[i - 1]).end;
            let next = extent(&sorted[i]);
            let first = extent(&sorted[begin]);
            next.start.saturating_sub(prev_end) > COALESCE_GAP
                || next.end.saturating_sub(first.start) > MAX_READ
        };
        if split {
            runs.push(&sorted[begin..i]);
            begin = i;
        }
    }
    runs
}

/// Collects encoded blobs into one pack.
pub struct PackBuilder {
    kind: BlobKind,
    bytes: Vec<u8>,
    blobs: Vec<PackedBlob>,
}

/// A finished pack: its stored bytes, name and contents.
pub struct FinishedPack {
    pub id: Id,
    pub kind: BlobKind,
    pub bytes: Vec<u8>,
    pub blobs: Vec<PackedBlob>,
}

impl PackBuilder {
    pub fn new(kind: BlobKind) -> PackBuilder {
        PackBuilder::with_buffer(kind, Vec::new())
    }

    /// Collects the pack's bytes in `buffer` (emptied first), whose
    /// capacity the caller chose.
    pub fn with_buffer(kind: BlobKind, mut buffer: Vec<u8>) -> PackBuilder {
        buffer.clear();
        PackBuilder {
            kind,
            bytes: buffer,
            blobs: Vec::new(),
        }
    }

    pub fn kind(&self) -> BlobKind {
        self.kind
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Whether its blobs reached the target size of its kind (writers then
    /// close it).
    pub fn is_full(&self) -> bool {
        let target = match self.kind {
            BlobKind::Data => TARGET_PACK_SIZE,
            BlobKind::Tree => TARGET_TREE_PACK_SIZE,
        };
        self.bytes.len() >= target
    }

    pub fn push(&mut self, blob: EncodedBlob) {
        debug_assert_eq!(blob.kind, self.kind);
        self.blobs.push(PackedBlob {
            kind: blob.kind,
            id: blob.id,
            offset: self.bytes.len() as u64,
            length: blob.sealed.len() as u32,
            raw_length: blob.raw_length,
            compression: blob.compression,
        });
        self.bytes.extend_from_slice(&blob.sealed);
    }

    pub fn finish(self, cipher: &Cipher) -> FinishedPack {
        let header = cipher.seal(ad::PACK_HEADER, &encode_header(&self.blobs));
        self.finish_with_sealed_header(header)
    }

    /// For test vectors: the caller seals the header with a fixed nonce.
    pub fn finish_with_sealed_header(mut self, sealed_header: Vec<u8>) -> FinishedPack {
        self.bytes.extend_from_slice(&sealed_header);
        self.bytes
            .extend_from_slice(&(sealed_header.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(PACK_MAGIC);
        self.bytes.push(PACK_VERSION);
        FinishedPack {
            id: Id::of_stored_bytes(&self.bytes),
            kind: self.kind,
            bytes: self.bytes,
            blobs: self.blobs,
        }
    }

    pub fn blobs(&self) -> &[PackedBlob] {
        &self.blobs
    }
}

pub fn encode_header(blobs: &[PackedBlob]) -> Vec<u8> {
    wire::encode(&blobs.to_vec())
}

/// Reads the trailer (the last 12 bytes of a pack) and returns the sealed
/// header's length.
pub fn parse_trailer(trailer: &[u8]) -> FormatResult<u32> {
    const WHAT: &str = "pack trailer";
    if trailer.len() != TRAILER_LEN {
        return Err(FormatError::Truncated {
            what: WHAT,
            len: trailer.len(),
        });
    }
    if &trailer[4..11] != PACK_MAGIC {
        return Err(FormatError::Malformed {
            what: WHAT,
            detail: "bad magic: not a cairn pack".into(),
        });
    }
    if trailer[11] != PACK_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            version: trailer[11],
            supported: PACK_VERSION,
        });
    }
    let len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    if len > MAX_HEADER_LEN {
        return Err(FormatError::Malformed {
            what: WHAT,
            detail: format!("header length {len} too large"),
        });
    }
    Ok(len)
}

/// Decodes a plaintext pack header and checks it is consistent with a pack
/// whose blob area is `blob_area_len` bytes long.
pub fn decode_header(plain: &[u8], blob_area_len: u64) -> FormatResult<Vec<PackedBlob>> {
    const WHAT: &str = "pack header";
    let blobs: Vec<PackedBlob> = wire::decode(WHAT, plain)?;
    let mut expected_offset = 0u64;
    for b in &blobs {
        let bad = |detail: String| Err(FormatError::Malformed { what: WHAT, detail });
        if b.offset != expected_offset {
            return bad(format!(
                "blob {} at offset {}, expected {expected_offset}",
                b.id.short(),
                b.offset
            ));
        }
        if let Err(detail) = b.check_lengths() {
            return bad(detail);
        }
        expected_offset = b.offset + u64::from(b.length);
    }
    if expected_offset != blob_area_len {
        return Err(FormatError::Malformed {
            what: WHAT,
            detail: format!(
                "blobs cover {expected_offset} bytes but the pack holds {blob_area_len}"
            ),
        });
    }
    Ok(blobs)
}

/// Parses a whole pack held in memory: trailer, header, blob list.
pub fn read_pack_header(cipher: &Cipher, pack: &[u8]) -> FormatResult<Vec<PackedBlob>> {
    if pack.len() < TRAILER_LEN {
        return Err(FormatError::Truncated {
            what: "pack",
            len: pack.len(),
        });
    }
    let header_len = parse_trailer(&pack[pack.len() - TRAILER_LEN..])? as usize;
    let header_end = pack.len() - TRAILER_LEN;
    let header_start = header_end
        .checked_sub(header_len)
        .ok_or(FormatError::Truncated {
            what: "pack",
            len: pack.len(),
        })?;
    let plain = cipher.open(
        "pack header",
        ad::PACK_HEADER,
        &pack[header_start..header_end],
    )?;
    decode_header(&plain, header_start as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKeys;
    use crate::filter::BlobEncoder;

    #[test]
    fn build_and_read_back() {
        let keys = MasterKeys::generate();
        let mut enc = BlobEncoder::new(keys.clone(), 3);
        let mut b = PackBuilder::new(BlobKind::Data);
        for i in 0..5u8 {
            let data = vec![i; 1000 + i as usize];
            b.push(enc.encode(BlobKind::Data, keys.blob_id(&data), &data));
        }
        let pack = b.finish(&keys.cipher());
        assert_eq!(pack.id, Id::of_stored_bytes(&pack.bytes));
        let blobs = read_pack_header(&keys.cipher(), &pack.bytes).unwrap();
        assert_eq!(blobs, pack.blobs);
        for (i, blob) in blobs.iter().enumerate() {
            let sealed = &pack.bytes[blob.offset as usize..][..blob.length as usize];
            let data = crate::filter::decode_blob(
                &keys,
                blob.kind,
                &blob.id,
                blob.raw_length,
                blob.compression,
                sealed,
            )
            .unwrap();
            assert_eq!(data, vec![i as u8; 1000 + i]);
        }
        let mut cut = pack.bytes.clone();
        cut.truncate(cut.len() - 3);
        assert!(read_pack_header(&keys.cipher(), &cut).is_err());
    }

    /// What a writer can produce passes; a stored length beyond the
    /// plaintext plus the seal (which a reader would allocate) does not.
    #[test]
    fn blob_lengths_beyond_what_a_writer_makes_are_refused() {
        let blob = |length: u32, raw_length: u32| PackedBlob {
            kind: BlobKind::Tree,
            id: Id([1; 32]),
            offset: 0,
            length,
            raw_length,
            compression: Compression::Zstd,
        };
        let seal = crate::crypto::SEAL_OVERHEAD as u32;
        for (length, raw) in [(seal, 0), (seal + 10, 10), (seal + 3, 1000)] {
            assert!(
                blob(length, raw).check_lengths().is_ok(),
                "{length} for {raw}"
            );
        }
        for (length, raw) in [
            (seal - 1, 0),
            (seal + 11, 10),
            (u32::MAX, 100),
            (seal, MAX_BLOB_SIZE + 1),
        ] {
            assert!(
                blob(length, raw).check_lengths().is_err(),
                "{length} for {raw}"
            );
        }
    }
}
