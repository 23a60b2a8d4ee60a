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

/// A blob's content as its seal holds it: what `copy` seals again under
/// another repository's keys without compressing it a second time.
pub enum Payload {
    /// Plaintext (stored raw, or not stored yet).
    Plain(Vec<u8>),
    /// One zstd frame of `raw_length` bytes of plaintext.
    Zstd { frame: Vec<u8>, raw_length: u32 },
}

impl Payload {
    pub fn raw_length(&self) -> u32 {
        match self {
            Payload::Plain(data) => data.len() as u32,
            Payload::Zstd { raw_length, .. } => *raw_length,
        }
    }

    /// Bytes held in memory.
    pub fn held(&self) -> usize {
        match self {
            Payload::Plain(data) => data.len(),
            Payload::Zstd { frame, .. } => frame.len(),
        }
    }
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
        let unsealed = self.unsealed(kind, id, data, None);
        self.seal_all(vec![unsealed]).remove(0)
    }

    /// Seals a payload: plaintext is compressed as by [`Self::encode`], a
    /// zstd frame is sealed as it is.
    pub fn encode_payload(&mut self, kind: BlobKind, id: Id, payload: &Payload) -> EncodedBlob {
        self.encode_all([(kind, id, payload)]).remove(0)
    }

    /// [`Self::encode_payload`] for many blobs, sealed together (several
    /// times faster than one by one for small blobs: see `Cipher::seal_all_in_place`).
    pub fn encode_all<'p>(
        &mut self,
        blobs: impl IntoIterator<Item = (BlobKind, Id, &'p Payload)>,
    ) -> Vec<EncodedBlob> {
        let unsealed = blobs
            .into_iter()
            .map(|(kind, id, payload)| match payload {
                Payload::Plain(data) => self.unsealed(kind, id, data, None),
                Payload::Zstd { frame, raw_length } => {
                    self.unsealed(kind, id, frame, Some(*raw_length))
                }
            })
            .collect();
        self.seal_all(unsealed)
    }

    /// The blob's stored form before sealing, behind room for nonce and
    /// tag: `data` compressed, or as it is when that does not shrink it or
    /// when it is already a zstd frame of `frame_of` bytes.
    fn unsealed(&mut self, kind: BlobKind, id: Id, data: &[u8], frame_of: Option<u32>) -> Unsealed {
        let room = match (&self.compressor, frame_of) {
            (Some(_), None) => zstd::zstd_safe::compress_bound(data.len()),
            _ => data.len(),
        };
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + room);
        out.resize(SEAL_OVERHEAD, 0);
        let mut compression = Compression::None;
        if frame_of.is_some() {
            compression = Compression::Zstd;
        } else if let Some(compressor) = self.compressor.as_mut() {
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
        if frame_of.is_some() || compression == Compression::None {
            out.extend_from_slice(data);
        }
        Unsealed {
            ad: blob_ad(kind.code(), &id),
            blob: EncodedBlob {
                kind,
                id,
                sealed: out,
                raw_length: frame_of.unwrap_or(data.len() as u32),
                compression,
            },
        }
    }

    fn seal_all(&self, mut blobs: Vec<Unsealed>) -> Vec<EncodedBlob> {
        let mut objects: Vec<(&[u8], &mut [u8])> = blobs
            .iter_mut()
            .map(|b| (b.ad.as_slice(), b.blob.sealed.as_mut_slice()))
            .collect();
        self.cipher.seal_all_in_place(&mut objects);
        blobs.into_iter().map(|b| b.blob).collect()
    }
}

/// A blob ready to seal, with its associated data.
struct Unsealed {
    ad: Vec<u8>,
    blob: EncodedBlob,
}

/// Opens and verifies one stored blob as [`decode_blob`] does, but hands
/// back its payload as stored, and what `with_plain` made of the
/// plaintext (a copy names the blob under its destination's key there).
pub fn open_blob<T>(
    keys: &MasterKeys,
    kind: BlobKind,
    id: &Id,
    raw_length: u32,
    compression: Compression,
    sealed: &[u8],
    with_plain: impl FnOnce(&[u8]) -> T,
) -> FormatResult<(Payload, T)> {
    check_raw_length(raw_length)?;
    let payload = keys
        .cipher()
        .open("blob", &blob_ad(kind.code(), id), sealed)?;
    match compression {
        Compression::None => {
            verify_plain(keys, id, raw_length, &payload)?;
            let made = with_plain(&payload);
            Ok((Payload::Plain(payload), made))
        }
        Compression::Zstd => {
            let data = decompress(&payload, raw_length)?;
            verify_plain(keys, id, raw_length, &data)?;
            let made = with_plain(&data);
            Ok((
                Payload::Zstd {
                    frame: payload,
                    raw_length,
                },
                made,
            ))
        }
    }
}

fn decompress(frame: &[u8], raw_length: u32) -> FormatResult<Vec<u8>> {
    let mut out = Vec::new();
    decompress_into(frame, raw_length, &mut out)?;
    Ok(out)
}

/// A zstd frame's `raw_length` bytes (checked against the limit by the
/// caller) into `out`, through a context kept per thread: making one per
/// blob (as `zstd::bulk::decompress` does) was 2% of a restore's CPU. Every
/// call starts the context afresh, so a frame that failed leaves nothing
/// behind for the next, and a frame longer than `raw_length` fails.
fn decompress_into(frame: &[u8], raw_length: u32, out: &mut Vec<u8>) -> FormatResult<()> {
    use std::cell::RefCell;
    use zstd::bulk::Decompressor;
    thread_local! {
        static CONTEXT: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    }
    let failed = |e: std::io::Error| FormatError::Decompress(e.to_string());
    CONTEXT.with(|cell| {
        let mut cell = cell.borrow_mut();
        let context = match &mut *cell {
            Some(context) => context,
            None => cell.insert(Decompressor::new().map_err(failed)?),
        };
        out.clear();
        out.reserve(raw_length as usize);
        context.decompress_to_buffer(frame, out).map_err(failed)?;
        Ok(())
    })
}

fn check_raw_length(raw_length: u32) -> FormatResult<()> {
    if raw_length > MAX_BLOB_SIZE {
        return Err(FormatError::Malformed {
            what: "blob",
            detail: format!("length {raw_length} exceeds the limit {MAX_BLOB_SIZE}"),
        });
    }
    Ok(())
}

/// The plaintext has the length the index gives and hashes to its id.
fn verify_plain(keys: &MasterKeys, id: &Id, raw_length: u32, data: &[u8]) -> FormatResult<()> {
    if data.len() != raw_length as usize {
        return Err(FormatError::Malformed {
            what: "blob",
            detail: format!("{} bytes, index says {raw_length}", data.len()),
        });
    }
    let actual = keys.blob_id(data);
    if actual != *id {
        return Err(FormatError::IdMismatch {
            expected: id.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(())
}

/// [`decode_blob`] without allocating: opens `sealed` where it lies (the
/// caller's buffer, read from a pack) and decompresses into `out`, a buffer
/// kept from blob to blob. Allocating both per blob made a restore's
/// buffers fresh mappings (1 MiB and up), each page faulted in and zeroed.
pub fn decode_blob_in_place<'a>(
    keys: &MasterKeys,
    kind: BlobKind,
    id: &Id,
    raw_length: u32,
    compression: Compression,
    sealed: &'a mut [u8],
    out: &'a mut Vec<u8>,
) -> FormatResult<&'a [u8]> {
    check_raw_length(raw_length)?;
    let payload = keys
        .cipher()
        .open_in_place("blob", &blob_ad(kind.code(), id), sealed)?;
    finish_blob(keys, id, raw_length, compression, payload, out)
}

/// An opened blob's plaintext: decompressed into `out` if it was
/// compressed, and checked against its id.
fn finish_blob<'a>(
    keys: &MasterKeys,
    id: &Id,
    raw_length: u32,
    compression: Compression,
    payload: &'a [u8],
    out: &'a mut Vec<u8>,
) -> FormatResult<&'a [u8]> {
    check_raw_length(raw_length)?;
    let data = match compression {
        Compression::None => payload,
        Compression::Zstd => {
            decompress_into(payload, raw_length, out)?;
            &out[..]
        }
    };
    verify_plain(keys, id, raw_length, data)?;
    Ok(data)
}

/// A blob of one read of a pack: its index entry, and where its sealed
/// bytes lie in the read.
pub struct RunBlob<'a> {
    pub kind: BlobKind,
    pub id: &'a Id,
    pub raw_length: u32,
    pub compression: Compression,
    pub at: std::ops::Range<usize>,
}

/// Decodes the blobs of one read of a pack as [`decode_blob_in_place`]
/// does each, but opens them together (several times faster for small
/// blobs: see `Cipher::open_all_in_place`), and hands each result to
/// `each` in order. A blob whose bytes overlap an earlier one's (only a
/// damaged index lists such) is opened from a copy; one beyond the read is
/// an error.
pub fn decode_run(
    keys: &MasterKeys,
    cipher: &Cipher,
    bytes: &mut [u8],
    blobs: &[RunBlob<'_>],
    mut each: impl FnMut(usize, FormatResult<&[u8]>),
) {
    enum Place {
        Together(usize),
        Copy(Vec<u8>),
        Outside,
    }
    let read_len = bytes.len();
    let mut places = Vec::with_capacity(blobs.len());
    let mut together = Vec::new();
    let mut end = 0;
    for b in blobs {
        places.push(if b.at.end > bytes.len() || b.at.start > b.at.end {
            Place::Outside
        } else if b.at.start < end {
            Place::Copy(bytes[b.at.clone()].to_vec())
        } else {
            end = b.at.end;
            together.push(b);
            Place::Together(together.len() - 1)
        });
    }
    let ads: Vec<Vec<u8>> = together
        .iter()
        .map(|b| blob_ad(b.kind.code(), b.id))
        .collect();
    let mut objects: Vec<(&[u8], &mut [u8])> = Vec::with_capacity(together.len());
    let mut rest = &mut bytes[..];
    let mut consumed = 0;
    for (b, ad) in together.iter().zip(&ads) {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(b.at.start - consumed);
        let (sealed, tail) = tail.split_at_mut(b.at.len());
        objects.push((ad.as_slice(), sealed));
        rest = tail;
        consumed = b.at.end;
    }
    let mut opened = cipher.open_all_in_place("blob", &mut objects);
    let mut plain = Vec::new();
    for (i, (b, place)) in blobs.iter().zip(places.iter_mut()).enumerate() {
        let result = match place {
            Place::Together(k) => match std::mem::replace(&mut opened[*k], Ok(())) {
                Ok(()) => finish_blob(
                    keys,
                    b.id,
                    b.raw_length,
                    b.compression,
                    &objects[*k].1[SEAL_OVERHEAD..],
                    &mut plain,
                ),
                Err(e) => Err(e),
            },
            Place::Copy(sealed) => check_raw_length(b.raw_length).and_then(|()| {
                let payload =
                    cipher.open_in_place("blob", &blob_ad(b.kind.code(), b.id), sealed)?;
                finish_blob(keys, b.id, b.raw_length, b.compression, payload, &mut plain)
            }),
            Place::Outside => Err(FormatError::Truncated {
                what: "blob (its index entry reaches past what was read of the pack)",
                len: read_len,
            }),
        };
        each(i, result);
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
    check_raw_length(raw_length)?;
    let payload = keys
        .cipher()
        .open("blob", &blob_ad(kind.code(), id), sealed)?;
    let data = match compression {
        Compression::None => payload,
        Compression::Zstd => decompress(&payload, raw_length)?,
    };
    verify_plain(keys, id, raw_length, &data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_sealed_again_under_other_keys_opens_there_unchanged() {
        let (from, to) = (MasterKeys::generate(), MasterKeys::generate());
        let mut source = BlobEncoder::new(from.clone(), 3);
        let mut dest = BlobEncoder::new(to.clone(), 3);
        for data in [
            vec![7u8; 100_000],
            crate::crypto::random_bytes::<1000>().to_vec(),
        ] {
            let id = from.blob_id(&data);
            let stored = source.encode(BlobKind::Data, id, &data);
            let (payload, new_id) = open_blob(
                &from,
                BlobKind::Data,
                &id,
                stored.raw_length,
                stored.compression,
                &stored.sealed,
                |plain| to.blob_id(plain),
            )
            .unwrap();
            assert_eq!(payload.raw_length() as usize, data.len());
            let again = dest.encode_payload(BlobKind::Data, new_id, &payload);
            // the zstd frame travels as it is
            assert_eq!(again.compression, stored.compression);
            assert_eq!(again.sealed.len(), stored.sealed.len());
            let back = decode_blob(
                &to,
                BlobKind::Data,
                &new_id,
                again.raw_length,
                again.compression,
                &again.sealed,
            )
            .unwrap();
            assert_eq!(back, data);
            // nor does it open under another id
            assert!(open_blob(
                &from,
                BlobKind::Data,
                &new_id,
                stored.raw_length,
                stored.compression,
                &stored.sealed,
                |_| ()
            )
            .is_err());
        }
    }

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

    /// Decoding in place, with one output buffer for many blobs, gives what
    /// `decode_blob` gives and refuses what it refuses: a tampered byte, a
    /// frame longer than its stated length, a length beyond the limit.
    #[test]
    fn in_place_decoding_matches_and_refuses_the_same() {
        let keys = MasterKeys::generate();
        let mut enc = BlobEncoder::new(keys.clone(), 3);
        let mut out = Vec::new();
        let blobs = [
            vec![3u8; 300_000],
            crate::crypto::random_bytes::<1000>().to_vec(),
            vec![9u8; 10],
        ];
        for data in &blobs {
            let id = keys.blob_id(data);
            let b = enc.encode(BlobKind::Data, id, data);
            let decode = |sealed: &mut [u8], raw_length: u32, out: &mut Vec<u8>| {
                decode_blob_in_place(
                    &keys,
                    BlobKind::Data,
                    &id,
                    raw_length,
                    b.compression,
                    sealed,
                    out,
                )
                .map(<[u8]>::to_vec)
            };
            let mut sealed = b.sealed.clone();
            assert_eq!(&decode(&mut sealed, b.raw_length, &mut out).unwrap(), data);
            let mut tampered = b.sealed.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            assert!(matches!(
                decode(&mut tampered, b.raw_length, &mut out),
                Err(FormatError::Authentication { .. })
            ));
            let mut sealed = b.sealed.clone();
            assert!(decode(&mut sealed, b.raw_length - 1, &mut out).is_err());
            let mut sealed = b.sealed.clone();
            assert!(decode(&mut sealed, MAX_BLOB_SIZE + 1, &mut out).is_err());
        }
    }

    #[test]
    fn a_run_opens_together_and_refuses_blob_by_blob() {
        let keys = MasterKeys::generate();
        let mut enc = BlobEncoder::new(keys.clone(), 3);
        let datas: Vec<Vec<u8>> = vec![
            vec![3u8; 300_000],
            crate::crypto::random_bytes::<1000>().to_vec(),
            vec![9u8; 10],
            crate::crypto::random_bytes::<40>().to_vec(),
        ];
        let ids: Vec<Id> = datas.iter().map(|d| keys.blob_id(d)).collect();
        let mut read = Vec::new();
        let mut blobs = Vec::new();
        for (data, id) in datas.iter().zip(&ids) {
            let b = enc.encode(BlobKind::Data, *id, data);
            let at = read.len()..read.len() + b.sealed.len();
            read.extend_from_slice(&b.sealed);
            blobs.push(RunBlob {
                kind: BlobKind::Data,
                id,
                raw_length: b.raw_length,
                compression: b.compression,
                at,
            });
        }
        // the third blob is damaged; the second is listed twice (overlap,
        // opened from a copy); one entry reaches past the read
        read[blobs[2].at.end - 1] ^= 1;
        let again = RunBlob {
            at: blobs[1].at.clone(),
            ..blobs[1]
        };
        let beyond = RunBlob {
            at: blobs[3].at.start..read.len() + 1,
            ..blobs[3]
        };
        blobs.insert(2, again);
        blobs.push(beyond);
        let expected: Vec<Option<&Vec<u8>>> = vec![
            Some(&datas[0]),
            Some(&datas[1]),
            Some(&datas[1]),
            None,
            Some(&datas[3]),
            None,
        ];
        let mut seen = Vec::new();
        decode_run(&keys, &keys.cipher(), &mut read, &blobs, |i, result| {
            seen.push((i, result.map(<[u8]>::to_vec)));
        });
        assert_eq!(seen.len(), expected.len());
        for ((i, result), want) in seen.into_iter().zip(expected) {
            match want {
                Some(data) => assert_eq!(result.as_ref().ok(), Some(data), "blob {i}"),
                None => assert!(result.is_err(), "blob {i} accepted"),
            }
        }
    }
}
