//! The test vectors of format-spec/test-vectors.md, recomputed from their
//! inputs by the code. If the code's output drifts from the spec, this fails.
//! `CAIRN_WRITE_VECTORS=1 cargo test --test format_vectors` rewrites the file
//! (only after a deliberate format change, with a new format version).

use cairn::chunker::{Chunker, ChunkerParams};
use cairn::config::Config;
use cairn::crypto::keyfile::{derive_kek, KdfParams, KeyFile};
use cairn::crypto::{ad, blob_ad, Cipher, MasterKeys};
use cairn::filter::{BlobKind, Compression, EncodedBlob};
use cairn::index::file::{CondemnedPack, IndexFile, IndexedPack};
use cairn::pack::{encode_header, PackBuilder};
use cairn::tree::snapshot::{BackupSummary, Snapshot};
use cairn::tree::{Node, NodeKind, Tree, Xattr};
use cairn::{wire, Id};
use std::fmt::Write;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/format-spec/test-vectors.md");

fn seq(start: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| start.wrapping_add(i as u8)).collect()
}

fn arr32(v: Vec<u8>) -> [u8; 32] {
    v.try_into().unwrap()
}

/// The byte stream chunked in the `chunker` vector (also described in the spec).
fn xorshift_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn h(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

fn master_keys() -> MasterKeys {
    MasterKeys {
        encryption: [arr32(seq(0x00, 32)), arr32(seq(0x20, 32))],
        id_key: arr32(seq(0x40, 32)),
        chunker_seed: 0x0123_4567_89ab_cdef,
    }
}

struct Vector {
    name: &'static str,
    about: &'static str,
    fields: Vec<(&'static str, String)>,
}

fn vectors() -> Vec<Vector> {
    let keys = master_keys();
    let cipher = keys.cipher();
    let mut out = Vec::new();

    out.push(Vector {
        name: "master-keys",
        about: "The master keys every other vector uses, as postcard plaintext (the content a key file wraps).",
        fields: vec![
            ("encryption_key", h([keys.encryption[0], keys.encryption[1]].concat())),
            ("id_key", h(keys.id_key)),
            ("chunker_seed", format!("{:016x}", keys.chunker_seed)),
            ("plaintext", h(wire::encode(&keys))),
        ],
    });

    let data = b"cairn".to_vec();
    out.push(Vector {
        name: "blob-id",
        about: "Blob id = BLAKE3 in keyed mode, key = id_key, over the blob's plaintext.",
        fields: vec![("data", h(&data)), ("id", keys.blob_id(&data).to_hex())],
    });

    let nonce: [u8; 16] = seq(0xa0, 16).try_into().unwrap();
    out.push(Vector {
        name: "seal",
        about: "AES-256-SIV (RFC 5297, S2V over [ad, nonce], then plaintext) with encryption_key; stored as nonce ‖ tag ‖ ciphertext.",
        fields: vec![
            ("nonce", h(nonce)),
            ("ad", h(ad::SNAPSHOT)),
            ("plaintext", h(b"hello")),
            ("sealed", h(cipher.seal_with_nonce(nonce, ad::SNAPSHOT, b"hello"))),
        ],
    });

    let kdf = KdfParams {
        memory_kib: 256,
        iterations: 2,
        parallelism: 1,
    };
    let salt = [0x22u8; 32];
    let kek = derive_kek(b"password", &salt, kdf).unwrap();
    let key_nonce: [u8; 16] = seq(0xd0, 16).try_into().unwrap();
    let key_file = KeyFile {
        kdf,
        salt,
        created_ns: 1_700_000_000_000_000_000,
        hostname: "host".into(),
        username: "user".into(),
        wrapped_keys: Cipher::new(&kek).seal_with_nonce(key_nonce, ad::KEY, &wire::encode(&keys)),
    };
    out.push(Vector {
        name: "key-file",
        about: "argon2id v1.3 (password, salt, memory KiB, iterations, parallelism, 64-byte output) gives the key-encryption key; the key file wraps the master keys with it.",
        fields: vec![
            ("password", h(b"password")),
            ("salt", h(salt)),
            ("kek", h([kek[0], kek[1]].concat())),
            ("wrap_nonce", h(key_nonce)),
            ("key_file", h(key_file.encode())),
            ("key_id", Id::of_stored_bytes(&key_file.encode()).to_hex()),
        ],
    });

    let p = ChunkerParams::from_average(16384).unwrap();
    let stream = xorshift_bytes(1 << 20);
    let lengths = Chunker::new(p, keys.chunker_seed)
        .unwrap()
        .chunk_lengths(&stream);
    out.push(Vector {
        name: "chunker",
        about: "FastCDC 2020, normalisation level 1, min/avg/max 8192/16384/131072, gear table XOR chunker_seed (shifted table XOR seed<<1), over 1 MiB of xorshift64 bytes.",
        fields: vec![
            ("stream_blake3", blake3::hash(&stream).to_hex().to_string()),
            ("chunk_lengths", lengths.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",")),
        ],
    });

    let blob = b"hello, cairn".to_vec();
    let blob_id = keys.blob_id(&blob);
    let blob_nonce: [u8; 16] = seq(0xb0, 16).try_into().unwrap();
    let header_nonce: [u8; 16] = seq(0xc0, 16).try_into().unwrap();
    let mut builder = PackBuilder::new(BlobKind::Data);
    builder.push(EncodedBlob {
        kind: BlobKind::Data,
        id: blob_id,
        sealed: cipher.seal_with_nonce(blob_nonce, &blob_ad(0, &blob_id), &blob),
        raw_length: blob.len() as u32,
        compression: Compression::None,
    });
    let header_plain = encode_header(builder.blobs());
    let pack = builder.finish_with_sealed_header(cipher.seal_with_nonce(
        header_nonce,
        ad::PACK_HEADER,
        &header_plain,
    ));
    out.push(Vector {
        name: "pack",
        about: "A data pack with one uncompressed blob: sealed blob, sealed header, 4-byte LE header length, \"CAIRNPK\", version 1. Pack id = BLAKE3 of all its bytes.",
        fields: vec![
            ("blob", h(&blob)),
            ("blob_ad", h(blob_ad(0, &blob_id))),
            ("blob_nonce", h(blob_nonce)),
            ("header_nonce", h(header_nonce)),
            ("header_plaintext", h(&header_plain)),
            ("pack", h(&pack.bytes)),
            ("pack_id", pack.id.to_hex()),
        ],
    });

    let index = IndexFile {
        packs: vec![IndexedPack {
            id: pack.id,
            size: pack.bytes.len() as u64,
            blobs: pack.blobs.clone(),
        }],
        supersedes: vec![],
        condemned: vec![],
    };
    out.push(Vector {
        name: "index-file",
        about: "Plaintext of an index file listing the pack above.",
        fields: vec![("plaintext", h(index.encode()))],
    });
    let pruned = IndexFile {
        packs: vec![],
        supersedes: vec![Id(arr32(seq(0x40, 32)))],
        condemned: vec![CondemnedPack {
            pack: index.packs[0].clone(),
            since_ns: None,
            grace_ns: 86_400_000_000_000,
        }],
    };
    let mut carried = pruned.clone();
    carried.condemned[0].since_ns = Some(1_700_000_000_000_000_000);
    out.push(Vector {
        name: "index-file-v2",
        about: "Version 2 plaintexts, written by prune: the pack above condemned with a day of grace, superseding one index file; first condemned when the file was written (since none), then carried into a later prune's index with its time.",
        fields: vec![
            ("plaintext_new", h(pruned.encode())),
            ("plaintext_carried", h(carried.encode())),
        ],
    });

    let node = |name: &[u8], kind| Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 100,
        user: "alice".into(),
        group: "users".into(),
        mtime_ns: 1_700_000_000_123_456_789,
        ctime_ns: 1_700_000_001_000_000_000,
        size: 0,
        inode: 1234,
        device: 2049,
        links: 1,
        xattrs: vec![],
    };
    let mut file = node(
        b"hello.txt",
        NodeKind::File {
            content: vec![blob_id],
        },
    );
    file.size = blob.len() as u64;
    file.xattrs = vec![Xattr {
        name: b"user.note".to_vec(),
        value: b"hi".to_vec(),
    }];
    let mut dir = node(
        b"sub",
        NodeKind::Dir {
            subtree: Id([0xee; 32]),
        },
    );
    dir.mode = 0o755;
    let link = node(
        b"z-link\xff",
        NodeKind::Symlink {
            target: b"hello.txt".to_vec(),
        },
    );
    let tree = Tree {
        nodes: vec![file, dir, link],
    };
    out.push(Vector {
        name: "tree",
        about: "Plaintext of a tree blob: a file (with an xattr), a directory and a symlink with a non-UTF-8 name.",
        fields: vec![("plaintext", h(tree.encode())), ("id", keys.blob_id(&tree.encode()).to_hex())],
    });

    let snapshot = Snapshot {
        time_ns: 1_700_000_002_000_000_000,
        tree: keys.blob_id(&tree.encode()),
        paths: vec!["/home/alice".into()],
        hostname: "host".into(),
        username: "alice".into(),
        uid: 1000,
        gid: 100,
        tags: vec!["daily".into()],
        parent: None,
        excludes: vec!["*.tmp".into()],
        program_version: "cairn 0.1.0".into(),
        summary: BackupSummary {
            files_new: 1,
            dirs: 1,
            bytes_processed: 12,
            blobs_added: 2,
            ..Default::default()
        },
    };
    out.push(Vector {
        name: "snapshot",
        about: "Plaintext of a snapshot object.",
        fields: vec![("plaintext", h(snapshot.encode()))],
    });

    let config = Config {
        version: 1,
        id: Id([0x33; 32]),
        chunker: ChunkerParams::default(),
        compression_level: 3,
    };
    out.push(Vector {
        name: "config",
        about: "Plaintext of the config object (default chunker, zstd level 3).",
        fields: vec![("plaintext", h(config.encode()))],
    });
    out
}

fn render(vectors: &[Vector]) -> String {
    let mut s = String::from(
        "# Test vectors\n\nGenerated from fixed inputs by `tests/format_vectors.rs`, which also checks the code\n\
         against this file on every test run. Hex unless said otherwise. All vectors use the master\n\
         keys of the first one.\n",
    );
    for v in vectors {
        write!(s, "\n## {}\n\n{}\n\n", v.name, v.about).unwrap();
        for (k, val) in &v.fields {
            writeln!(s, "    {k}: {val}").unwrap();
        }
    }
    s
}

#[test]
fn spec_vectors_match_the_code() {
    let vectors = vectors();
    let expected = render(&vectors);
    if std::env::var_os("CAIRN_WRITE_VECTORS").is_some() {
        std::fs::write(SPEC, &expected).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(SPEC).expect("format-spec/test-vectors.md");
    // compare field by field for a readable failure
    let mut section = String::new();
    let mut checked = 0;
    for line in on_disk.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            section = name.to_string();
        } else if let Some((k, val)) = line.strip_prefix("    ").and_then(|l| l.split_once(": ")) {
            let v = vectors
                .iter()
                .find(|v| v.name == section)
                .unwrap_or_else(|| panic!("unknown vector {section}"));
            let (_, mine) = v
                .fields
                .iter()
                .find(|(f, _)| *f == k)
                .unwrap_or_else(|| panic!("{section}.{k} not computed"));
            assert_eq!(val, mine, "format drift in {section}.{k}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        vectors.iter().map(|v| v.fields.len()).sum::<usize>(),
        "the spec lacks some vectors"
    );
    // the key file in the spec opens with its password and yields the master keys
    let kf = vectors.iter().find(|v| v.name == "key-file").unwrap();
    let bytes = hex::decode(&kf.fields.iter().find(|f| f.0 == "key_file").unwrap().1).unwrap();
    assert_eq!(
        KeyFile::decode(&bytes)
            .unwrap()
            .unlock(b"password")
            .unwrap(),
        master_keys()
    );
}

/// Where the fuzz targets' seed corpus lives: one directory per target.
const FUZZ_CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");

/// Valid encodings the fuzzers start from, so mutations reach past the
/// first length check: (fuzz target, seed name, bytes). Most are the spec's
/// vectors; the pack and the sealed blob are sealed with the fixed keys
/// their targets decrypt with (fuzz/fuzz_targets/{pack,sealed_blob}.rs).
fn fuzz_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let vectors = vectors();
    let field = |vector: &str, field: &str| {
        let v = vectors.iter().find(|v| v.name == vector).unwrap();
        hex::decode(&v.fields.iter().find(|f| f.0 == field).unwrap().1).unwrap()
    };
    let mut seeds = vec![
        ("config", "config".to_string(), field("config", "plaintext")),
        (
            "key_file",
            "key-file".to_string(),
            field("key-file", "key_file"),
        ),
        ("tree", "tree".to_string(), field("tree", "plaintext")),
        (
            "snapshot",
            "snapshot".to_string(),
            field("snapshot", "plaintext"),
        ),
        (
            "index_file",
            "v1".to_string(),
            field("index-file", "plaintext"),
        ),
        (
            "index_file",
            "v2-new".to_string(),
            field("index-file-v2", "plaintext_new"),
        ),
        (
            "index_file",
            "v2-carried".to_string(),
            field("index-file-v2", "plaintext_carried"),
        ),
    ];
    let lock = cairn::lock_record::LockRecord {
        exclusive: false,
        hostname: "host".into(),
        username: "alice".into(),
        pid: 4242,
        command: "backup".into(),
        created_ns: 1_700_000_000_000_000_000,
        refreshed_ns: 1_700_000_300_000_000_000,
    };
    seeds.push(("lock", "shared".to_string(), lock.encode()));

    // the pack target's header key
    let pack_cipher = Cipher::new(&[[7; 32], [9; 32]]);
    for (name, kind, blobs) in [
        (
            "data-one-blob",
            BlobKind::Data,
            vec![b"hello, cairn".to_vec()],
        ),
        (
            "tree-three-blobs",
            BlobKind::Tree,
            vec![b"a".to_vec(), vec![0u8; 300], field("tree", "plaintext")],
        ),
    ] {
        let mut builder = PackBuilder::new(kind);
        for (i, blob) in blobs.iter().enumerate() {
            let id = Id([i as u8; 32]);
            builder.push(EncodedBlob {
                kind,
                id,
                sealed: pack_cipher.seal_with_nonce(
                    [i as u8; 16],
                    &blob_ad(kind.code(), &id),
                    blob,
                ),
                raw_length: blob.len() as u32,
                compression: Compression::None,
            });
        }
        let header = encode_header(builder.blobs());
        let pack = builder.finish_with_sealed_header(pack_cipher.seal_with_nonce(
            [0xc0; 16],
            ad::PACK_HEADER,
            &header,
        ));
        seeds.push(("pack", name.to_string(), pack.bytes));
    }

    // the sealed_blob target's keys and blob id
    let blob_keys = MasterKeys {
        encryption: [[1; 32], [2; 32]],
        id_key: [3; 32],
        chunker_seed: 4,
    };
    let blob_id = Id([5; 32]);
    let plain = b"hello, cairn hello, cairn hello, cairn".to_vec();
    let zstd = zstd::bulk::compress(&plain, 3).unwrap();
    for (name, nonce, payload) in [("plain", 0xb0, plain), ("zstd", 0xb1, zstd)] {
        let ad = blob_ad(BlobKind::Data.code(), &blob_id);
        let sealed = blob_keys
            .cipher()
            .seal_with_nonce([nonce; 16], &ad, &payload);
        seeds.push(("sealed_blob", name.to_string(), sealed));
    }
    seeds
}

/// The checked-in seed corpus is exactly what the encoders produce now:
/// a format change that leaves it stale would have the fuzzers start from
/// bytes the decoders reject at once. `CAIRN_WRITE_FUZZ_SEEDS=1` rewrites it.
#[test]
fn fuzz_seed_corpus_is_current() {
    let write = std::env::var_os("CAIRN_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in fuzz_seeds() {
        let path = std::path::Path::new(FUZZ_CORPUS)
            .join(target)
            .join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (CAIRN_WRITE_FUZZ_SEEDS=1 writes it)",
                path.display()
            )
        });
        assert!(
            on_disk == bytes,
            "{} is stale: CAIRN_WRITE_FUZZ_SEEDS=1 rewrites it",
            path.display()
        );
    }
}
