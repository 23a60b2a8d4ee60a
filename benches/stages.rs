//! Per-stage throughput on one core: chunking, keyed hashing, compression,
//! sealing, and the whole per-blob encoder. These are the machine's stage
//! limits the pipeline is measured against.

use cairn::chunker::{Chunker, ChunkerParams};
use cairn::crypto::MasterKeys;
use cairn::filter::{BlobEncoder, BlobKind};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

/// 8 MiB of mixed data: half text-like (compressible), half noise.
fn mixed_data() -> Vec<u8> {
    let mut out = Vec::with_capacity(8 << 20);
    let words = [
        "backup ",
        "snapshot ",
        "chunk ",
        "restore ",
        "pack ",
        "index ",
        "tree ",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while out.len() < 4 << 20 {
        out.extend_from_slice(words[(next() % 7) as usize].as_bytes());
    }
    while out.len() < 8 << 20 {
        out.push((next() >> 24) as u8);
    }
    out
}

fn stages(c: &mut Criterion) {
    let data = mixed_data();
    let keys = MasterKeys::generate();
    let chunk = &data[(3 << 20)..(4 << 20) + (1 << 19)]; // 1.5 MiB straddling both halves
    let mut g = c.benchmark_group("stage");
    g.sample_size(10);

    g.throughput(Throughput::Bytes(data.len() as u64));
    let chunker = Chunker::new(ChunkerParams::default(), keys.chunker_seed).unwrap();
    g.bench_function("fastcdc_chunk_lengths", |b| {
        b.iter(|| chunker.chunk_lengths(black_box(&data)))
    });
    g.bench_function("fastcdc_stream", |b| {
        b.iter(|| chunker.stream(black_box(&data[..])).count())
    });
    g.bench_function("blake3_keyed", |b| {
        b.iter(|| keys.blob_id(black_box(&data)))
    });

    g.throughput(Throughput::Bytes(chunk.len() as u64));
    for level in [1, 2, 3, 6] {
        g.bench_with_input(BenchmarkId::new("zstd", level), &level, |b, &level| {
            let mut z = zstd::bulk::Compressor::new(level).unwrap();
            b.iter(|| z.compress(black_box(chunk)).unwrap())
        });
    }
    let cipher = keys.cipher();
    g.bench_function("aes_siv_seal", |b| {
        b.iter(|| cipher.seal(b"ad", black_box(chunk)))
    });
    let sealed = cipher.seal(b"ad", chunk);
    g.bench_function("aes_siv_open", |b| {
        b.iter(|| cipher.open("x", b"ad", black_box(&sealed)).unwrap())
    });
    // a restore opens a pack's run of blobs together (CMAC chains side by side)
    let small: Vec<Vec<u8>> = data
        .chunks(16 << 10)
        .take(128)
        .map(|c| cipher.seal(b"ad", c))
        .collect();
    g.throughput(Throughput::Bytes(128 << 14));
    g.bench_function("aes_siv_open_128_of_16k", |b| {
        b.iter_batched(
            || small.clone(),
            |mut sealed| {
                let mut objects: Vec<(&[u8], &mut [u8])> = sealed
                    .iter_mut()
                    .map(|s| (&b"ad"[..], s.as_mut_slice()))
                    .collect();
                cipher.open_all_in_place("blob", &mut objects)
            },
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    // the whole per-blob step at the repository default level (zstd-2)
    let level = cairn::config::DEFAULT_COMPRESSION_LEVEL;
    let mut enc = BlobEncoder::new(keys.clone(), level);
    let id = keys.blob_id(chunk);
    g.bench_function(BenchmarkId::new("blob_encode_zstd", level), |b| {
        b.iter(|| enc.encode(BlobKind::Data, id, black_box(chunk)))
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
