//! A repository crafted to attack restore: tree entries named `..` or with a
//! `/` must be refused, and nothing may be written outside the target.

mod common;
use cairn::filter::{BlobEncoder, BlobKind};
use cairn::index::file::{IndexFile, IndexedPack};
use cairn::pack::PackBuilder;
use cairn::repo::lock::{LockKind, LockOptions};
use cairn::repo::{layout, CacheLocation, Repository};
use cairn::storage::Storage;
use cairn::tree::snapshot::Snapshot;
use cairn::tree::{Node, NodeKind, Tree};
use common::*;

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        mtime_ns: 0,
        ctime_ns: 0,
        size: 5,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: vec![],
    }
}

/// Writes a snapshot whose root tree holds `evil` (a file with content "owned").
fn plant(env: &Env, evil: &[u8]) {
    let storage = Storage::open(env.repo.to_str().unwrap()).unwrap();
    let repo = Repository::open(
        storage,
        PASSWORD.as_bytes(),
        &CacheLocation::Dir(env.cache.clone()),
    )
    .unwrap();
    repo.lock(
        LockKind::Shared,
        &LockOptions {
            retry: std::time::Duration::ZERO,
            command: "test".into(),
        },
    )
    .unwrap();
    let mut enc = BlobEncoder::new(repo.keys.clone(), 0);
    let data = b"owned".to_vec();
    let data_id = repo.keys.blob_id(&data);
    // encode() does not validate: the decoder must
    let tree = Tree {
        nodes: vec![node(
            evil,
            NodeKind::File {
                content: vec![data_id],
            },
        )],
    }
    .encode();
    let tree_id = repo.keys.blob_id(&tree);
    let mut packs = Vec::new();
    for (kind, id, bytes) in [
        (BlobKind::Data, data_id, data),
        (BlobKind::Tree, tree_id, tree),
    ] {
        let mut b = PackBuilder::new(kind);
        b.push(enc.encode(kind, id, &bytes));
        let p = b.finish(&repo.keys.cipher());
        repo.storage
            .write(&layout::pack(&p.id), p.bytes.clone())
            .unwrap();
        packs.push(IndexedPack {
            id: p.id,
            size: p.bytes.len() as u64,
            blobs: p.blobs,
        });
    }
    repo.save_index_file(&IndexFile {
        packs,
        ..Default::default()
    })
    .unwrap();
    repo.save_snapshot(&Snapshot {
        tree: tree_id,
        paths: vec!["/x".into()],
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn dot_dot_and_slash_entries_are_refused() {
    for evil in [&b".."[..], b"../../escaped", b"a/b", b"."] {
        let env = Env::new();
        env.init();
        plant(&env, evil);
        let target = env.path("deep/target");
        let (code, err) = env.restore_into(&target, &["latest"]);
        assert_eq!(code, Some(1), "{evil:?} restored: {err}");
        assert!(err.contains("unsafe entry name"), "{err}");
        // nothing anywhere in the scratch dir outside the repository and cache holds the payload
        for f in walk_files(env.dir.path()) {
            if !f.starts_with(&env.repo) && !f.starts_with(&env.cache) {
                assert_ne!(
                    std::fs::read(&f).unwrap(),
                    b"owned",
                    "payload written to {}",
                    f.display()
                );
            }
        }
        let ls = env.cairn().args(["ls", "latest"]).output().unwrap();
        assert_eq!(ls.status.code(), Some(1));
    }
}
