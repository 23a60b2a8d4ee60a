//! The per-blob filter chain: compress (zstd, kept raw when it does not
//! shrink), then seal (AES-256-SIV bound to the blob's kind and id). Reading
//! reverses it and verifies the id.

use crate::crypto::{blob_ad, Cipher, MasterKeys, SEAL_OVERHEAD};
use crate::error::{FormatError, FormatResult};
use crate::id::Id;
use serde::{Deserialize, Serialize};

/// Upper bound on a blob's plaintext size. Data blobs are at most the chunker
/// maximum (at most 16 MiB, 8 MiB by default); tree blobs of huge
/// directories can be larger.
pub const MAX_BLOB_SIZE: u32 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn code(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Compression {
    None,
    Zstd,
}

/// A blob ready for a pack.
pub struct EncodedBlob {
    pub kind: BlobKind,
    pub id: Id,
    pub sealed: Vec<u8>,
    pub raw_length: u32,
    pub compression: Compression,
}

/// Encodes blobs; one per worker thread (it keeps a zstd context and the
/// expanded cipher keys).
pub struct BlobEncoder {
    cipher: Cipher,
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl BlobEncoder {
    /// `level` 0 disables compression.
    pub fn new(keys: MasterKeys, level: i32) -> BlobEncoder {
        let compressor = (level != 0)
            .then(|| zstd::bulk::Compressor::new(level).expect("zstd compression context"));
        BlobEncoder {
            cipher: keys.cipher(),
            compressor,
        }
    }

    /// Compresses and seals `data` into one buffer: zstd writes behind the
    /// room for nonce and tag, and the cipher seals it in place. One
    /// allocation per blob, and only the bytes written are ever touched.
    pub fn encode(&mut self, kind: BlobKind, id: Id, data: &[u8]) -> EncodedBlob {
        let room = match self.compressor {
            Some(_) => zstd::zstd_safe::compress_bound(data.len()),
            None => data.len(),
        };
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + room);
        out.resize(SEAL_OVERHEAD, 0);
        let mut compression = Compression::None;
        if let Some(compressor) = self.compressor.as_mut() {
            let mut cursor = std::io::Cursor::new(out);
            cursor.set_position(SEAL_OVERHEAD as u64);
            let shrunk =
                matches!(compressor.compress_to_buffer(data, &mut cursor), Ok(n) if n < data.len());
            out = cursor.into_inner();
            if shrunk {
                compression = Compression::Zstd;
            } else {
                out.truncate(SEAL_OVERHEAD);
            }
        }
        if compression == Compression::None {
            out.extend_from_slice(data);
        }
        self.cipher
            .seal_in_place(&blob_ad(kind.code(), &id), &mut out);
        EncodedBlob {
            kind,
            id,
            sealed: out,
            raw_length: data.len() as u32,
            compression,
        }
    }
}

/// Opens, decompresses and verifies one stored blob.
pub fn decode_blob(
    keys: &MasterKeys,
    kind: BlobKind,
    id: &Id,
    raw_length: u32,
    compression: Compression,
    sealed: &[u8],
) -> FormatResult<Vec<u8>> {
    if raw_length > MAX_BLOB_SIZE {
        return Err(FormatError::Malformed {
            what: "blob",
            detail: format!("length {raw_length} exceeds the limit {MAX_BLOB_SIZE}"),
        });
    }
    let payload = keys
        .cipher()
        .open("blob", &blob_ad(kind.code(), id), sealed)?;
    let data = match compression {
        Compression::None => payload,
        Compression::Zstd => zstd::bulk::decompress(&payload, raw_length as usize)
            .map_err(|e| FormatError::Decompress(e.to_string()))?,
    };
    if data.len() != raw_length as usize {
        return Err(FormatError::Malformed {
            what: "blob",
            detail: format!("{} bytes, index says {raw_length}", data.len()),
        });
    }
    let actual = keys.blob_id(&data);
    if actual != *id {
        return Err(FormatError::IdMismatch {
            expected: id.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_compressible_and_incompressible() {
        let keys = MasterKeys::generate();
        let mut enc = BlobEncoder::new(keys.clone(), 3);
        for data in [
            vec![7u8; 100_000],
            crate::crypto::random_bytes::<1000>().to_vec(),
        ] {
            let id = keys.blob_id(&data);
            let b = enc.encode(BlobKind::Data, id, &data);
            let back = decode_blob(
                &keys,
                BlobKind::Data,
                &id,
                b.raw_length,
                b.compression,
                &b.sealed,
            )
            .unwrap();
            assert_eq!(back, data);
            // the same bytes presented as another kind or id must not open
            assert!(decode_blob(
                &keys,
                BlobKind::Tree,
                &id,
                b.raw_length,
                b.compression,
                &b.sealed
            )
            .is_err());
        }
        let zeros = vec![0u8; 100_000];
        let b = enc.encode(BlobKind::Data, keys.blob_id(&zeros), &zeros);
        assert_eq!(b.compression, Compression::Zstd);
        let noise = crate::crypto::random_bytes::<4096>();
        let b = enc.encode(BlobKind::Data, keys.blob_id(&noise), &noise);
        assert_eq!(b.compression, Compression::None);
    }
}
