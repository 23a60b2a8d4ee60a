//! Decoding untrusted plaintext as `Tree`: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn::tree::Tree::decode(data);
});
