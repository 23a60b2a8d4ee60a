//! Decoding untrusted plaintext as `LockRecord`: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn::lock_record::LockRecord::decode(data);
});
