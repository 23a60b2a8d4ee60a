//! Every decoder of stored bytes meets truncated and bit-flipped input with
//! an error, never a panic (the fuzz targets explore further).

use cairn::chunker::ChunkerParams;
use cairn::config::Config;
use cairn::crypto::keyfile::{KdfParams, KeyFile};
use cairn::crypto::{ad, MasterKeys};
use cairn::filter::{decode_blob, BlobEncoder, BlobKind};
use cairn::index::file::{IndexFile, IndexedPack};
use cairn::pack::{read_pack_header, PackBuilder};
use cairn::tree::snapshot::Snapshot;
use cairn::tree::{Node, NodeKind, Tree, Xattr};
use cairn::Id;

fn keys() -> MasterKeys {
    MasterKeys {
        encryption: [[1; 32], [2; 32]],
        id_key: [3; 32],
        chunker_seed: 4,
    }
}

fn sample_tree() -> Tree {
    let node = |name: &[u8], kind| Node {
        name: name.to_vec(),
        kind,
        mode: 0o755,
        uid: 1000,
        gid: 1000,
        user: "u".into(),
        group: "g".into(),
        mtime_ns: -5,
        ctime_ns: 1 << 60,
        size: 3,
        inode: 42,
        device: 7,
        links: 2,
        xattrs: vec![Xattr {
            name: b"user.a".to_vec(),
            value: vec![0, 1],
        }],
    };
    Tree {
        nodes: vec![
            node(
                b"a",
                NodeKind::File {
                    content: vec![Id([9; 32]), Id([8; 32])],
                },
            ),
            node(
                b"b",
                NodeKind::Dir {
                    subtree: Id([7; 32]),
                },
            ),
            node(
                b"c",
                NodeKind::Symlink {
                    target: b"../x".to_vec(),
                },
            ),
            node(b"d", NodeKind::CharDevice { rdev: 0x0501 }),
        ],
    }
}

/// Feeds every prefix and every single-bit flip of `valid` to `decode`.
/// Truncations must fail; flips must not panic (some flips stay valid).
fn torture(name: &str, valid: &[u8], decode: impl Fn(&[u8]) -> bool) {
    assert!(decode(valid), "{name}: the valid encoding does not decode");
    for len in 0..valid.len() {
        assert!(
            !decode(&valid[..len]),
            "{name}: truncation to {len} bytes accepted"
        );
    }
    let mut buf = valid.to_vec();
    for i in 0..valid.len() {
        for bit in 0..8 {
            buf[i] ^= 1 << bit;
            let _ = decode(&buf);
            buf[i] ^= 1 << bit;
        }
    }
    // appended garbage is refused too
    let mut longer = valid.to_vec();
    longer.push(0);
    assert!(!decode(&longer), "{name}: trailing garbage accepted");
}

#[test]
fn plaintext_decoders_survive_damage() {
    torture("tree", &sample_tree().encode(), |b| Tree::decode(b).is_ok());
    let snap = Snapshot {
        tree: Id([1; 32]),
        paths: vec!["/x".into()],
        tags: vec!["t".into()],
        ..Default::default()
    };
    torture("snapshot", &snap.encode(), |b| Snapshot::decode(b).is_ok());
    let config = Config {
        version: 1,
        id: Id([2; 32]),
        chunker: ChunkerParams::default(),
        compression_level: 3,
    };
    torture("config", &config.encode(), |b| Config::decode(b).is_ok());
    let mut enc = BlobEncoder::new(keys(), 3);
    let mut pb = PackBuilder::new(BlobKind::Data);
    pb.push(enc.encode(BlobKind::Data, keys().blob_id(b"abc"), b"abc"));
    let pack = pb.finish(&keys().cipher());
    let index = IndexFile {
        packs: vec![IndexedPack {
            id: pack.id,
            size: pack.bytes.len() as u64,
            blobs: pack.blobs.clone(),
        }],
        supersedes: vec![Id([4; 32])],
        condemned: vec![],
    };
    torture("index file", &index.encode(), |b| {
        IndexFile::decode(b).is_ok()
    });
    let pruned = IndexFile {
        condemned: vec![cairn::index::file::CondemnedPack {
            pack: index.packs[0].clone(),
            since_ns: Some(1_700_000_000_000_000_000),
            grace_ns: 86_400_000_000_000,
        }],
        ..index.clone()
    };
    torture("index file v2", &pruned.encode(), |b| {
        IndexFile::decode(b).is_ok()
    });
    let cheap = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
    let key = KeyFile::create(b"pw", &keys(), cheap, 0, "h".into(), "u".into()).unwrap();
    torture("key file", &key.encode(), |b| KeyFile::decode(b).is_ok());
    let lock = cairn::lock_record::LockRecord {
        exclusive: true,
        hostname: "h".into(),
        username: "u".into(),
        pid: 7,
        command: "prune".into(),
        created_ns: 1,
        refreshed_ns: 2,
    };
    torture("lock", &lock.encode(), |b| {
        cairn::lock_record::LockRecord::decode(b).is_ok()
    });
}

#[test]
fn sealed_objects_reject_any_damage() {
    let k = keys();
    let mut enc = BlobEncoder::new(k.clone(), 3);
    let data = b"some blob content, some blob content, some blob content".to_vec();
    let id = k.blob_id(&data);
    let blob = enc.encode(BlobKind::Data, id, &data);
    let ok = |b: &[u8]| {
        decode_blob(
            &k,
            BlobKind::Data,
            &id,
            blob.raw_length,
            blob.compression,
            b,
        )
        .is_ok()
    };
    assert!(ok(&blob.sealed));
    let mut buf = blob.sealed.clone();
    for i in 0..buf.len() {
        buf[i] ^= 0x10;
        assert!(!ok(&buf), "flipped byte {i} of a sealed blob accepted");
        buf[i] ^= 0x10;
    }
    for len in 0..buf.len() {
        assert!(!ok(&buf[..len]));
    }
    let mut pb = PackBuilder::new(BlobKind::Data);
    pb.push(blob);
    let pack = pb.finish(&k.cipher());
    torture("pack", &pack.bytes, |b| {
        read_pack_header(&k.cipher(), b).is_ok()
    });
    let sealed = k.cipher().seal(ad::SNAPSHOT, b"x");
    assert!(
        k.cipher().open("snapshot", ad::INDEX, &sealed).is_err(),
        "an object opened under another role"
    );
}
