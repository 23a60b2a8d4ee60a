//! Decoding untrusted plaintext as `KeyFile`: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn::crypto::keyfile::KeyFile::decode(data);
});
