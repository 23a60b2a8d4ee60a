//! Pack trailer and header: parsed from untrusted bytes, both as plaintext
//! and through the sealed path with a fixed key.
#![no_main]
use cairn::crypto::Cipher;
use cairn::pack::{decode_header, parse_trailer, read_pack_header, TRAILER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= TRAILER_LEN {
        let _ = parse_trailer(&data[data.len() - TRAILER_LEN..]);
    }
    let _ = decode_header(data, data.len() as u64);
    let _ = read_pack_header(&Cipher::new(&[[7; 32], [9; 32]]), data);
});
