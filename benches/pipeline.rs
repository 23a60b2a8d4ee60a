//! The whole backup pipeline and restore, end to end through the library,
//! into a memory-backed repository (so storage speed is out of the picture).
//! Compared with the one-core stage limits of `stages.rs`, these show how
//! close the pipeline comes to the machine's limit: on two cores the limit is
//! about 2 / (1/chunk + 1/hash + 1/encode) of the per-stage rates.
//!
//! Each backup sample gets a fresh repository, so nothing deduplicates.

use cairn::backup::progress::Progress;
use cairn::backup::{backup, backup_stream, BackupOptions, ParentChoice, SnapshotOptions};
use cairn::crypto::keyfile::KdfParams;
use cairn::repo::lock::{LockKind, LockOptions};
use cairn::repo::{init, CacheLocation, InitOptions, Repository};
use cairn::restore::{restore, RestoreOptions};
use cairn::storage::Storage;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::path::Path;
use std::sync::atomic::AtomicBool;

const PASSWORD: &[u8] = b"bench";

/// Pseudo-random words and noise, 3/4 compressible, never repeating at
/// chunk scale (so dedup finds nothing).
fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let words: [&[u8]; 6] = [
        b"backup ",
        b"snapshot ",
        b"chunk ",
        b"pack ",
        b"index ",
        b"tree ",
    ];
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let r = next();
        if r % 4 == 0 {
            out.extend_from_slice(&r.to_le_bytes());
        } else {
            out.extend_from_slice(words[(r >> 8) as usize % words.len()]);
        }
    }
    out.truncate(len);
    out
}

fn fresh_repository() -> Repository {
    let storage = Storage::open("memory://").unwrap();
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    };
    init(&storage, PASSWORD, &opts).unwrap();
    let repo = Repository::open(storage, PASSWORD, &CacheLocation::None).unwrap();
    let lock = LockOptions {
        retry: std::time::Duration::ZERO,
        command: "bench".into(),
    };
    repo.lock(LockKind::Shared, &lock).unwrap();
    repo
}

/// A directory of files: many small ones and a few large ones, like a
/// source tree with some build artefacts. Returns the total size.
fn write_tree(root: &Path) -> u64 {
    let mut total = 0;
    for d in 0..20 {
        let dir = root.join(format!("dir{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let len = 2_000 + (f * 337 % 30_000);
            std::fs::write(
                dir.join(format!("f{f:03}.txt")),
                mixed_data(len, (d * 1000 + f) as u64),
            )
            .unwrap();
            total += len as u64;
        }
    }
    for big in 0..4u64 {
        let len = 12 << 20;
        std::fs::write(
            root.join(format!("big{big}.bin")),
            mixed_data(len, 77 + big),
        )
        .unwrap();
        total += len as u64;
    }
    total
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    let stop = AtomicBool::new(false);

    let stream = mixed_data(64 << 20, 42);
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("backup_stream_64MiB", |b| {
        b.iter_batched(
            fresh_repository,
            |repo| {
                let progress = Progress::default();
                backup_stream(
                    &repo,
                    "s",
                    &stream[..],
                    &SnapshotOptions::default(),
                    &stop,
                    &progress,
                )
                .unwrap();
                repo // dropped outside the timing
            },
            BatchSize::PerIteration,
        )
    });

    let src = tempfile::tempdir().unwrap();
    let tree_bytes = write_tree(src.path());
    let opts = BackupOptions {
        paths: vec![src.path().to_path_buf()],
        parent: ParentChoice::None,
        ..Default::default()
    };
    g.throughput(Throughput::Bytes(tree_bytes));
    g.bench_function("backup_tree_2000_files", |b| {
        b.iter_batched(
            fresh_repository,
            |repo| {
                backup(&repo, &opts, &stop, &Progress::default()).unwrap();
                repo
            },
            BatchSize::PerIteration,
        )
    });

    let repo = fresh_repository();
    let root = backup(&repo, &opts, &stop, &Progress::default())
        .unwrap()
        .snapshot
        .tree;
    g.bench_function("restore_tree_2000_files", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |target| {
                let opts = RestoreOptions {
                    target: target.path().to_path_buf(),
                    ..Default::default()
                };
                let out = restore(&repo, root, &opts).unwrap();
                assert!(out.errors.is_empty(), "{:?}", out.errors);
                target
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
