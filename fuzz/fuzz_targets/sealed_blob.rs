//! Opening, decompressing and verifying an untrusted sealed blob.
#![no_main]
use cairn::crypto::MasterKeys;
use cairn::filter::{decode_blob, BlobKind, Compression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = MasterKeys { encryption: [[1; 32], [2; 32]], id_key: [3; 32], chunker_seed: 4 };
    let id = cairn::Id([5; 32]);
    for compression in [Compression::None, Compression::Zstd] {
        let _ = decode_blob(&keys, BlobKind::Data, &id, data.len() as u32, compression, data);
    }
});
