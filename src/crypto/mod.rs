//! Cryptography: AES-256-SIV sealing of every stored object, keyed BLAKE3
//! blob ids, and the master key set. Key files live in [`keyfile`].

pub mod keyfile;
mod siv;

use crate::error::{FormatError, FormatResult};
use crate::id::Id;
use aes_siv::aead::{AeadInOut, KeyInit};
use aes_siv::{Aes256SivAead, Nonce};
use serde::{Deserialize, Serialize};

pub const NONCE_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object has beyond its plaintext: nonce, then SIV tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Associated data binding each sealed object to its role, so a ciphertext
/// cannot be moved to another place in the repository and still open.
pub mod ad {
    pub const CONFIG: &[u8] = b"cairn/v1/config";
    pub const KEY: &[u8] = b"cairn/v1/key";
    pub const INDEX: &[u8] = b"cairn/v1/index";
    pub const SNAPSHOT: &[u8] = b"cairn/v1/snapshot";
    pub const LOCK: &[u8] = b"cairn/v1/lock";
    pub const PACK_HEADER: &[u8] = b"cairn/v1/pack-header";
    pub const BLOB_PREFIX: &[u8] = b"cairn/v1/blob";
}

/// The secrets of a repository, created at `init` and wrapped by every key file.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MasterKeys {
    /// AES-256-SIV key: first half for S2V (CMAC), second half for CTR.
    pub encryption: [[u8; 32]; 2],
    /// Key of the keyed BLAKE3 that names blobs.
    pub id_key: [u8; 32],
    /// XOR-ed into FastCDC's gear table so chunk boundaries are secret too.
    pub chunker_seed: u64,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeys(..)")
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source failed");
    out
}

/// A fresh random nonce. They are drawn from the operating system 64 at a
/// time: a backup seals one blob per chunk, and a `getrandom` call per nonce
/// was 1.5% of its CPU. (The buffer is per thread; nothing seals between a
/// fork and an exec.)
fn random_nonce() -> [u8; NONCE_LEN] {
    const NONCES: usize = 64;
    thread_local! {
        static POOL: std::cell::RefCell<(usize, [u8; NONCES * NONCE_LEN])> =
            const { std::cell::RefCell::new((NONCES, [0; NONCES * NONCE_LEN])) };
    }
    POOL.with(|pool| {
        let (next, bytes) = &mut *pool.borrow_mut();
        if *next == NONCES {
            getrandom::fill(bytes).expect("the operating system's random source failed");
            *next = 0;
        }
        let at = *next * NONCE_LEN;
        *next += 1;
        bytes[at..at + NONCE_LEN]
            .try_into()
            .expect("a nonce-sized slice")
    })
}

impl MasterKeys {
    pub fn generate() -> MasterKeys {
        let mut seed = 0u64;
        while seed == 0 {
            // fastcdc treats seed 0 as "no seed"
            seed = u64::from_le_bytes(random_bytes::<8>());
        }
        MasterKeys {
            encryption: [random_bytes(), random_bytes()],
            id_key: random_bytes(),
            chunker_seed: seed,
        }
    }

    pub fn cipher(&self) -> Cipher {
        Cipher::new(&self.encryption)
    }

    /// Blob id: BLAKE3 keyed with the repository's id key, so storage never
    /// sees plain content hashes.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }
}

/// AES-256-SIV with a random nonce. Sealed layout: nonce (16) ‖ tag (16) ‖ ciphertext.
pub struct Cipher {
    /// Opens (and checks tags in constant time).
    aead: Aes256SivAead,
    key: [[u8; 32]; 2],
    /// Seals, many objects at a time where the caller has many. Its keys
    /// are expanded on the first seal: a cipher made to open one blob
    /// (most are) never pays for them.
    sealer: std::sync::OnceLock<siv::SivSealer>,
}

impl Cipher {
    pub fn new(key: &[[u8; 32]; 2]) -> Cipher {
        let mut joined = [0u8; 64];
        joined[..32].copy_from_slice(&key[0]);
        joined[32..].copy_from_slice(&key[1]);
        let aead = Aes256SivAead::new_from_slice(&joined).expect("64-byte AES-SIV key");
        Cipher {
            aead,
            key: *key,
            sealer: std::sync::OnceLock::new(),
        }
    }

    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with_nonce(random_nonce(), ad, plaintext)
    }

    /// Sealing with a chosen nonce exists for test vectors; real writes use
    /// [`Cipher::seal`].
    pub fn seal_with_nonce(&self, nonce: [u8; NONCE_LEN], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&[0u8; SEAL_OVERHEAD]);
        out.extend_from_slice(plaintext);
        self.seal_in_place_with_nonce(nonce, ad, &mut out);
        out
    }

    /// Seals `buf[SEAL_OVERHEAD..]` where it lies and fills the first
    /// [`SEAL_OVERHEAD`] bytes with nonce and tag: the blob encoder compresses
    /// straight into such a buffer, so sealing needs no allocation or copy.
    pub fn seal_in_place(&self, ad: &[u8], buf: &mut [u8]) {
        self.seal_in_place_with_nonce(random_nonce(), ad, buf)
    }

    fn seal_in_place_with_nonce(&self, nonce: [u8; NONCE_LEN], ad: &[u8], buf: &mut [u8]) {
        self.seal_all_in_place_with_nonces(&mut [(ad, buf)], |_| nonce)
    }

    /// As [`Cipher::seal_in_place`] for each `(associated data, buffer)`,
    /// all at once: sealing many small objects together is several times
    /// faster than one by one (see `siv`).
    pub fn seal_all_in_place(&self, objects: &mut [(&[u8], &mut [u8])]) {
        self.seal_all_in_place_with_nonces(objects, |_| random_nonce())
    }

    fn seal_all_in_place_with_nonces(
        &self,
        objects: &mut [(&[u8], &mut [u8])],
        mut nonce: impl FnMut(usize) -> [u8; NONCE_LEN],
    ) {
        let mut heads = Vec::with_capacity(objects.len());
        let mut jobs: Vec<siv::SivJob<'_>> = objects
            .iter_mut()
            .enumerate()
            .map(|(i, (ad, buf))| {
                assert!(buf.len() >= SEAL_OVERHEAD, "no room for nonce and tag");
                let (head, body) = buf.split_at_mut(SEAL_OVERHEAD);
                heads.push(head);
                siv::SivJob {
                    ad,
                    nonce: nonce(i),
                    body,
                }
            })
            .collect();
        let tags = self.sealer().seal_all(&mut jobs);
        for ((head, job), tag) in heads.into_iter().zip(&jobs).zip(tags) {
            head[..NONCE_LEN].copy_from_slice(&job.nonce);
            head[NONCE_LEN..].copy_from_slice(&tag);
        }
    }

    /// Opens sealed objects where they lie, all at once, as
    /// [`Cipher::open_in_place`] does one: each result says whether its
    /// object opened, and then its plaintext is `buf[SEAL_OVERHEAD..]`.
    pub fn open_all_in_place(
        &self,
        what: &'static str,
        objects: &mut [(&[u8], &mut [u8])],
    ) -> Vec<FormatResult<()>> {
        let mut results: Vec<FormatResult<()>> = Vec::with_capacity(objects.len());
        let mut tags = Vec::new();
        let mut jobs = Vec::new();
        for (ad, buf) in objects.iter_mut() {
            match sealed_header(what, buf) {
                Ok((nonce, tag)) => {
                    results.push(Ok(()));
                    tags.push(tag.0);
                    jobs.push(siv::SivJob {
                        ad,
                        nonce: nonce.0,
                        body: &mut buf[SEAL_OVERHEAD..],
                    });
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let sealer = self.sealer();
        let mut opened = sealer.open_all(&mut jobs, &tags).into_iter();
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            if opened.next() != Some(true) {
                *result = Err(FormatError::Authentication { what });
            }
        }
        results
    }

    fn sealer(&self) -> &siv::SivSealer {
        self.sealer
            .get_or_init(|| siv::SivSealer::new(&self.key[0], &self.key[1]))
    }

    /// Opens a sealed object; `what` names it in the error.
    pub fn open(&self, what: &'static str, ad: &[u8], sealed: &[u8]) -> FormatResult<Vec<u8>> {
        let (nonce, tag) = sealed_header(what, sealed)?;
        let mut plain = sealed[SEAL_OVERHEAD..].to_vec();
        self.decrypt(what, ad, nonce, tag, &mut plain)?;
        Ok(plain)
    }

    /// Opens a sealed object where it lies (a buffer the caller owns and
    /// will not use sealed again): no allocation, no copy. Returns the
    /// plaintext, the part of `sealed` after nonce and tag.
    pub fn open_in_place<'a>(
        &self,
        what: &'static str,
        ad: &[u8],
        sealed: &'a mut [u8],
    ) -> FormatResult<&'a [u8]> {
        let (nonce, tag) = sealed_header(what, sealed)?;
        let body = &mut sealed[SEAL_OVERHEAD..];
        self.decrypt(what, ad, nonce, tag, body)?;
        Ok(body)
    }

    fn decrypt(
        &self,
        what: &'static str,
        ad: &[u8],
        nonce: Nonce,
        tag: aes_siv::Tag,
        body: &mut [u8],
    ) -> FormatResult<()> {
        self.aead
            .decrypt_inout_detached(&nonce, ad, body.into(), &tag)
            .map_err(|_| FormatError::Authentication { what })
    }
}

/// The nonce and tag in front of a sealed object.
fn sealed_header(what: &'static str, sealed: &[u8]) -> FormatResult<(Nonce, aes_siv::Tag)> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(FormatError::Truncated {
            what,
            len: sealed.len(),
        });
    }
    let nonce = Nonce::try_from(&sealed[..NONCE_LEN]).expect("16-byte nonce");
    let tag = aes_siv::Tag::try_from(&sealed[NONCE_LEN..SEAL_OVERHEAD]).expect("16-byte tag");
    Ok((nonce, tag))
}

/// Associated data of a blob: prefix ‖ kind byte ‖ blob id.
pub fn blob_ad(kind: u8, id: &Id) -> Vec<u8> {
    let mut ad = Vec::with_capacity(ad::BLOB_PREFIX.len() + 33);
    ad.extend_from_slice(ad::BLOB_PREFIX);
    ad.push(kind);
    ad.extend_from_slice(&id.0);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper_detection() {
        let keys = MasterKeys::generate();
        let c = keys.cipher();
        let sealed = c.seal(b"ad", b"hello world");
        assert_eq!(sealed.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(c.open("x", b"ad", &sealed).unwrap(), b"hello world");
        assert!(c.open("x", b"other", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[40] ^= 1;
        assert!(matches!(
            c.open("x", b"ad", &bad),
            Err(FormatError::Authentication { .. })
        ));
        assert!(matches!(
            c.open("x", b"ad", &sealed[..10]),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn nonces_do_not_repeat_across_refills() {
        let nonces: std::collections::HashSet<[u8; NONCE_LEN]> =
            (0..1000).map(|_| random_nonce()).collect();
        assert_eq!(nonces.len(), 1000);
        let c = MasterKeys::generate().cipher();
        assert_ne!(c.seal(b"ad", b"same"), c.seal(b"ad", b"same"));
    }
}
