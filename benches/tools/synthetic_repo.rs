//! Fills a repository with many tiny distinct data blobs, to measure how a
//! backup behaves as the index grows (`scripts/bench-index-growth.sh`).
//!
//!   synthetic_repo REPOSITORY BLOBS [SEED]
//!
//! Password from CAIRN_PASSWORD, cache directory from CAIRN_CACHE_DIR (the
//! cache the later backups use, so they start warm as on a machine that
//! backs up regularly). The blobs are 64 pseudo-random bytes each and form a
//! real snapshot, `/synthetic/partNNNN/blobs` with 100,000 blobs per file,
//! so `check --read-data` and `restore` work on the result.

use anyhow::{anyhow, Context, Result};
use cairn::backup::saver::{flush_index, BlobSaver, InFlight, SaverStats};
use cairn::filter::BlobKind;
use cairn::id::Id;
use cairn::repo::lock::{LockKind, LockOptions};
use cairn::repo::{CacheLocation, Repository};
use cairn::storage::Storage;
use cairn::tree::snapshot::Snapshot;
use cairn::tree::{Node, NodeKind, Tree};
use std::path::PathBuf;
use std::sync::Mutex;

const BLOBS_PER_FILE: u64 = 100_000;
const BLOB_LEN: usize = 64;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [location, blobs, rest @ ..] = args.as_slice() else {
        return Err(anyhow!("usage: synthetic_repo REPOSITORY BLOBS [SEED]"));
    };
    let blobs: u64 = blobs.parse().context("BLOBS must be a number")?;
    let seed: u64 = rest.first().map_or(Ok(1), |s| s.parse())?;
    let password = std::env::var("CAIRN_PASSWORD").context("set CAIRN_PASSWORD")?;
    let cache = PathBuf::from(std::env::var("CAIRN_CACHE_DIR").context("set CAIRN_CACHE_DIR")?);
    let repo = Repository::open(
        Storage::open(location)?,
        password.as_bytes(),
        &CacheLocation::Dir(cache),
    )?;
    let lock = LockOptions {
        retry: std::time::Duration::ZERO,
        command: "synthetic_repo".into(),
    };
    repo.lock(LockKind::Shared, &lock)?;

    let stats = SaverStats::default();
    let pending = Mutex::default();
    let in_flight = InFlight::default();
    let root = std::thread::scope(|scope| -> Result<Id> {
        // level 0: the blobs are noise, zstd would only burn time
        let saver = BlobSaver::start(scope, &repo, 0, &stats, &pending, &in_flight);
        let mut noise = XorShift(seed.max(1));
        let mut parts = Vec::new();
        let mut made = 0;
        while made < blobs {
            let count = BLOBS_PER_FILE.min(blobs - made);
            let mut content = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let data = noise.bytes(BLOB_LEN);
                let id = repo.keys.blob_id(&data);
                saver.save(BlobKind::Data, id, data)?;
                content.push(id);
            }
            made += count;
            let file = node(
                b"blobs",
                NodeKind::File { content },
                count * BLOB_LEN as u64,
            );
            let part = save_tree(&repo, &saver, vec![file])?;
            let name = format!("part{:04}", parts.len());
            parts.push(node(name.as_bytes(), NodeKind::Dir { subtree: part }, 0));
        }
        let synthetic = save_tree(&repo, &saver, parts)?;
        let root = save_tree(
            &repo,
            &saver,
            vec![node(b"synthetic", NodeKind::Dir { subtree: synthetic }, 0)],
        )?;
        saver.finish()?;
        Ok(root)
    })?;
    flush_index(&repo, &pending, &stats, &in_flight)?;
    let snapshot = Snapshot {
        time_ns: cairn::repo::now_ns(),
        tree: root,
        paths: vec!["/synthetic".into()],
        hostname: "synthetic".into(),
        program_version: "synthetic_repo".into(),
        ..Default::default()
    };
    let id = repo.save_snapshot(&snapshot)?;
    println!(
        "{} blobs in {} packs, snapshot {}",
        stats.blobs.load(std::sync::atomic::Ordering::Relaxed),
        stats.packs.load(std::sync::atomic::Ordering::Relaxed),
        id.to_hex()
    );
    Ok(())
}

fn save_tree(repo: &Repository, saver: &BlobSaver, mut nodes: Vec<Node>) -> Result<Id> {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let plain = Tree { nodes }.encode();
    let id = repo.keys.blob_id(&plain);
    saver.save(BlobKind::Tree, id, plain)?;
    Ok(id)
}

fn node(name: &[u8], kind: NodeKind, size: u64) -> Node {
    let dir = matches!(kind, NodeKind::Dir { .. });
    Node {
        name: name.to_vec(),
        kind,
        mode: if dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        mtime_ns: 0,
        ctime_ns: 0,
        size,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: Vec::new(),
    }
}

struct XorShift(u64);

impl XorShift {
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        out
    }
}
