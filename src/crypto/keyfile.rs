//! Key files: a password, stretched by argon2id, wraps the master keys. A
//! repository may hold several key files (one per password).

use super::{ad, random_bytes, Cipher, MasterKeys};
use crate::error::{FormatError, FormatResult};
use crate::wire;
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

/// argon2id cost. The default trades memory for passes: 48 MiB × 4 passes
/// costs an attacker about what RFC 9106's 64 MiB × 3 does (the memory-time
/// product), and is well above OWASP's argon2id minimums, while keeping the
/// KDF, which runs on every command, out of the backup's peak memory. Two
/// lanes, computed on two threads, halve its wall time (~0.08 → ~0.04 s) for
/// the same memory-time cost; a command that reads a stream has its producer
/// wait that long.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 48 * 1024,
            iterations: 4,
            parallelism: 2,
        }
    }
}

/// Upper bounds accepted when reading a key file, so a hostile file cannot
/// make us allocate gigabytes or spin for hours before the password check.
/// What a reader accepts before running the KDF: far above the defaults,
/// low enough that a hostile key file costs at most about 1 GiB and some
/// seconds, not 4 GiB × 64 passes.
const MAX_KDF_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_KDF_ITERATIONS: u32 = 16;
const MAX_KDF_PARALLELISM: u32 = 16;

/// A key file as stored under `keys/<id>` (not encrypted as a whole: the KDF
/// parameters must be readable before the password is known).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyFile {
    pub kdf: KdfParams,
    pub salt: [u8; 32],
    pub created_ns: i64,
    pub hostname: String,
    pub username: String,
    /// The master keys, sealed with the 64-byte argon2id output.
    pub wrapped_keys: Vec<u8>,
}

impl KeyFile {
    pub fn create(
        password: &[u8],
        keys: &MasterKeys,
        kdf: KdfParams,
        created_ns: i64,
        hostname: String,
        username: String,
    ) -> FormatResult<KeyFile> {
        let salt = random_bytes::<32>();
        let kek = derive_kek(password, &salt, kdf)?;
        let wrapped_keys = Cipher::new(&kek).seal(ad::KEY, &wire::encode(keys));
        Ok(KeyFile {
            kdf,
            salt,
            created_ns,
            hostname,
            username,
            wrapped_keys,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> FormatResult<KeyFile> {
        let key: KeyFile = wire::decode("key file", bytes)?;
        let k = key.kdf;
        if k.memory_kib > MAX_KDF_MEMORY_KIB
            || k.iterations > MAX_KDF_ITERATIONS
            || k.parallelism > MAX_KDF_PARALLELISM
        {
            return Err(FormatError::Malformed {
                what: "key file",
                detail: format!("argon2id parameters out of range: {k:?}"),
            });
        }
        Ok(key)
    }

    /// Unwraps the master keys, or `WrongPassword`.
    pub fn unlock(&self, password: &[u8]) -> FormatResult<MasterKeys> {
        let kek = derive_kek(password, &self.salt, self.kdf)?;
        let plain = Cipher::new(&kek)
            .open("key file", ad::KEY, &self.wrapped_keys)
            .map_err(|_| FormatError::WrongPassword)?;
        wire::decode("master keys", &plain)
    }
}

/// argon2id(password, salt) → 64 bytes, used as an AES-256-SIV key.
pub fn derive_kek(password: &[u8], salt: &[u8], kdf: KdfParams) -> FormatResult<[[u8; 32]; 2]> {
    let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(64))
        .map_err(|e| FormatError::Kdf(e.to_string()))?;
    let mut out = [0u8; 64];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| FormatError::Kdf(e.to_string()))?;
    let mut key = [[0u8; 32]; 2];
    key[0].copy_from_slice(&out[..32]);
    key[1].copy_from_slice(&out[32..]);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlock_with_right_and_wrong_password() {
        let keys = MasterKeys::generate();
        let cheap = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let kf = KeyFile::create(b"pw", &keys, cheap, 0, "h".into(), "u".into()).unwrap();
        let kf = KeyFile::decode(&kf.encode()).unwrap();
        assert_eq!(kf.unlock(b"pw").unwrap(), keys);
        assert!(matches!(
            kf.unlock(b"nope"),
            Err(FormatError::WrongPassword)
        ));
    }
}
