//! Decoding untrusted plaintext as `Config`: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn::config::Config::decode(data);
});
