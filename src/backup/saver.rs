//! The write half of the backup pipeline. New blobs go through bounded
//! channels: encoder threads (zstd + AES-SIV, one per core) → packer →
//! uploaders → index files. Memory is capped by the channel capacities and
//! the packs in flight, never by the input size.
//!
//! ```text
//! save() ─raw─► encoders ×N ─encoded─► packer ─packs─► uploaders ×M ─► index/<id>
//! ```
//!
//! Blobs travel in batches of about [`BATCH_BYTES`]: a tree of small files
//! would otherwise pay a channel hand-over and a thread wake-up per blob
//! (measured: 10% of the CPU of a first backup of the bench's tree).

use crate::crash_point::crash_point;
use crate::filter::{BlobEncoder, BlobKind, EncodedBlob, Payload};
use crate::id::Id;
use crate::index::file::{IndexFile, IndexedPack};
use crate::pack::{FinishedPack, PackBuilder, TARGET_PACK_SIZE};
use crate::repo::{layout, Repository, UNINDEXED_MIN_AGE_NS};
use anyhow::{anyhow, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};

/// Packs uploaded concurrently. Every pack in flight is held in memory (no
/// temp files), so this and the pack size set most of the backup's peak RSS.
const UPLOADERS: usize = 2;
/// An index file is written after this many packs, or once the oldest
/// unindexed pack is this old, so a killed backup leaves most of its uploads
/// indexed and the next run reuses them.
const PACKS_PER_INDEX_FILE: usize = 16;
/// Listings may lag; an index file must land this long before prune could
/// take its packs for leftovers.
const UNINDEXED_MARGIN_NS: i64 = 10 * 60 * 1_000_000_000;
const INDEX_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// A batch is sent once its blobs hold this many bytes: one large chunk, or
/// many small files' blobs.
const BATCH_BYTES: usize = 512 * 1024;

/// Uploaded packs no index file lists yet.
#[derive(Default)]
pub struct PendingIndex {
    packs: Vec<IndexedPack>,
    oldest: Option<std::time::Instant>,
}

impl PendingIndex {
    /// Adds a pack; returns the packs to index now, if it is time.
    fn add(&mut self, pack: IndexedPack) -> Vec<IndexedPack> {
        self.packs.push(pack);
        let oldest = *self.oldest.get_or_insert_with(std::time::Instant::now);
        if self.packs.len() >= PACKS_PER_INDEX_FILE || oldest.elapsed() >= INDEX_AT_LEAST_EVERY {
            self.take()
        } else {
            Vec::new()
        }
    }

    fn take(&mut self) -> Vec<IndexedPack> {
        self.oldest = None;
        std::mem::take(&mut self.packs)
    }
}

/// Blobs this run has handed to the saver that no ingested index file lists
/// yet. Dedup within a run needs them; once their index file is written (and
/// so ingested into the cache) they are dropped, which keeps the set at a few
/// packs' worth of ids however large the backup is.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<(BlobKind, Id)>>);

impl InFlight {
    pub fn contains(&self, kind: BlobKind, id: &Id) -> bool {
        self.0
            .lock()
            .expect("in-flight lock")
            .contains(&(kind, *id))
    }

    pub fn insert(&self, kind: BlobKind, id: Id) {
        self.0.lock().expect("in-flight lock").insert((kind, id));
    }

    /// Called only after the packs' index file is in the cache, so a blob is
    /// always findable in one of the two.
    fn indexed(&self, packs: &[IndexedPack]) {
        let mut set = self.0.lock().expect("in-flight lock");
        for b in packs.iter().flat_map(|p| &p.blobs) {
            set.remove(&(b.kind, b.id));
        }
    }
}

struct RawBlob {
    kind: BlobKind,
    id: Id,
    data: Payload,
}

/// Blobs queued by `save` and not sent yet.
#[derive(Default)]
struct RawBatch {
    blobs: Vec<RawBlob>,
    bytes: usize,
}

#[derive(Default)]
pub struct SaverStats {
    pub blobs: AtomicU64,
    pub raw_bytes: AtomicU64,
    pub packs: AtomicU64,
    pub packed_bytes: AtomicU64,
    pub index_files: AtomicU64,
}

/// Handle to a running saver; `save` feeds it, `finish` drains and joins it.
pub struct BlobSaver<'scope> {
    raw_tx: Option<Sender<Vec<RawBlob>>>,
    batch: RefCell<RawBatch>,
    threads: Vec<ScopedJoinHandle<'scope, Result<()>>>,
    stats: &'scope SaverStats,
}

impl<'scope> BlobSaver<'scope> {
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        repo: &'scope Repository,
        compression_level: i32,
        stats: &'scope SaverStats,
        pending: &'scope Mutex<PendingIndex>,
        in_flight: &'scope InFlight,
    ) -> BlobSaver<'scope> {
        let encoders = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        // One batch waiting per encoder is enough to keep them busy; every
        // batch more is up to a maximum chunk (8 MiB) held for nothing.
        let (raw_tx, raw_rx) = bounded::<Vec<RawBlob>>(encoders);
        let (enc_tx, enc_rx) = bounded::<Vec<EncodedBlob>>(encoders);
        // A rendezvous: a finished pack waits in the packer, not in a queue.
        let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
        let mut threads = Vec::new();
        for _ in 0..encoders {
            let (rx, tx) = (raw_rx.clone(), enc_tx.clone());
            let mut encoder = BlobEncoder::new(repo.keys.clone(), compression_level);
            threads.push(scope.spawn(move || {
                for batch in rx {
                    let encoded = encoder.encode_all(batch.iter().map(|b| (b.kind, b.id, &b.data)));
                    drop(batch); // the raw bytes, before waiting to send
                    tx.send(encoded).map_err(|_| stopped())?;
                }
                Ok(())
            }));
        }
        drop((raw_rx, enc_tx));
        threads.push(scope.spawn(move || run_packer(repo, enc_rx, pack_tx)));
        for _ in 0..UPLOADERS {
            let rx = pack_rx.clone();
            threads.push(scope.spawn(move || run_uploader(repo, rx, stats, pending, in_flight)));
        }
        BlobSaver {
            raw_tx: Some(raw_tx),
            batch: RefCell::default(),
            threads,
            stats,
        }
    }

    /// Queues a blob the repository does not have yet. Blocks when the
    /// pipeline is full (that is the back-pressure that bounds memory).
    pub fn save(&self, kind: BlobKind, id: Id, data: Vec<u8>) -> Result<()> {
        self.save_payload(kind, id, Payload::Plain(data))
    }

    /// As [`Self::save`]; a zstd frame is sealed as it is (copy).
    pub fn save_payload(&self, kind: BlobKind, id: Id, data: Payload) -> Result<()> {
        self.stats.blobs.fetch_add(1, Relaxed);
        self.stats
            .raw_bytes
            .fetch_add(u64::from(data.raw_length()), Relaxed);
        let full = {
            let mut batch = self.batch.borrow_mut();
            batch.bytes += data.held();
            batch.blobs.push(RawBlob { kind, id, data });
            batch.bytes >= BATCH_BYTES
        };
        if full {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.batch.borrow_mut());
        if batch.blobs.is_empty() {
            return Ok(());
        }
        let tx = self.raw_tx.as_ref().expect("save after finish");
        tx.send(batch.blobs).map_err(|_| stopped())
    }

    /// Flushes every open pack, waits for all uploads and writes the last
    /// index file. Returns the first error of any stage.
    pub fn finish(mut self) -> Result<()> {
        let sent = self.send_batch();
        self.raw_tx = None;
        let mut first_error = None;
        for t in self.threads.drain(..) {
            let result = t
                .join()
                .unwrap_or_else(|_| Err(anyhow!("a backup pipeline thread panicked")));
            if let Err(e) = result {
                // "pipeline stopped" only echoes the real failure of a later stage
                if first_error.is_none() || is_stopped(first_error.as_ref().unwrap()) {
                    first_error = Some(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => sent,
        }
    }
}

/// A stage found its neighbour gone: only an echo of the real failure,
/// which another stage reports.
#[derive(Debug, thiserror::Error)]
#[error("backup pipeline stopped")]
struct PipelineStopped;

fn stopped() -> anyhow::Error {
    PipelineStopped.into()
}

fn is_stopped(e: &anyhow::Error) -> bool {
    e.is::<PipelineStopped>()
}

fn run_packer(
    repo: &Repository,
    rx: Receiver<Vec<EncodedBlob>>,
    tx: Sender<FinishedPack>,
) -> Result<()> {
    let cipher = repo.keys.cipher();
    let new_pack = |kind| match kind {
        BlobKind::Data => PackBuilder::with_buffer(kind, data_pack_buffer()),
        BlobKind::Tree => PackBuilder::new(kind),
    };
    let mut data_pack = new_pack(BlobKind::Data);
    let mut tree_pack = new_pack(BlobKind::Tree);
    for blob in rx.into_iter().flatten() {
        let pack = match blob.kind {
            BlobKind::Data => &mut data_pack,
            BlobKind::Tree => &mut tree_pack,
        };
        pack.push(blob);
        if pack.is_full() {
            let full = std::mem::replace(pack, new_pack(pack.kind()));
            tx.send(full.finish(&cipher)).map_err(|_| stopped())?;
        }
    }
    for pack in [data_pack, tree_pack] {
        if !pack.is_empty() {
            tx.send(pack.finish(&cipher)).map_err(|_| stopped())?;
        }
    }
    Ok(())
}

/// A data pack's buffer, asking the kernel for transparent huge pages. A
/// pack buffer is above the allocator's mmap threshold, so each pack is
/// mapped anew and faults in its pages as it fills: 4 KiB at a time that
/// was three quarters of the page faults of a first backup of many small
/// files (about 2,300 per pack, ~5 µs each on the project's test machine).
/// Only the 2 MiB pages that lie wholly within the first
/// `TARGET_PACK_SIZE` bytes, which every pack but a backup's last fills,
/// are advised: a huge page is resident whole once touched, so one past
/// what a pack fills would add to the peak RSS (advising the whole buffer
/// added about 5 MiB, this about 2: the first page of a new pack).
/// Refilling written packs' buffers avoided the faults too, but kept every
/// buffer resident at its full size: 10 MiB more. Where the kernel has no
/// huge pages for us the advice is ignored.
fn data_pack_buffer() -> Vec<u8> {
    const HUGE_PAGE: usize = 2 << 20;
    // (room for the blob that takes a pack past its target)
    let buffer = Vec::<u8>::with_capacity(TARGET_PACK_SIZE + HUGE_PAGE);
    let start = buffer.as_ptr() as usize;
    let begin = start.next_multiple_of(HUGE_PAGE);
    let end = (start + TARGET_PACK_SIZE) / HUGE_PAGE * HUGE_PAGE;
    if end > begin {
        // SAFETY: advice on whole pages inside this allocation; it changes
        // no contents, and fails harmlessly where unsupported.
        unsafe {
            libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
        }
    }
    buffer
}

fn run_uploader(
    repo: &Repository,
    rx: Receiver<FinishedPack>,
    stats: &SaverStats,
    pending: &Mutex<PendingIndex>,
    in_flight: &InFlight,
) -> Result<()> {
    for pack in rx {
        let size = pack.bytes.len() as u64;
        repo.storage.write(&layout::pack(&pack.id), pack.bytes)?;
        crash_point("pack-uploaded");
        stats.packs.fetch_add(1, Relaxed);
        stats.packed_bytes.fetch_add(size, Relaxed);
        let full = pending.lock().expect("index lock").add(IndexedPack {
            id: pack.id,
            size,
            blobs: pack.blobs,
        });
        if !full.is_empty() {
            write_index(repo, full, stats, in_flight)?;
        }
    }
    Ok(())
}

/// Writes whatever uploaded packs are not yet in an index file. Called once
/// all uploaders are done.
pub fn flush_index(
    repo: &Repository,
    pending: &Mutex<PendingIndex>,
    stats: &SaverStats,
    in_flight: &InFlight,
) -> Result<()> {
    let rest = pending.lock().expect("index lock").take();
    if rest.is_empty() {
        return Ok(());
    }
    write_index(repo, rest, stats, in_flight)
}

fn write_index(
    repo: &Repository,
    packs: Vec<IndexedPack>,
    stats: &SaverStats,
    in_flight: &InFlight,
) -> Result<()> {
    let index = IndexFile {
        packs,
        ..Default::default()
    };
    let id = repo.save_index_file(&index)?;
    check_indexed_in_time(repo, &id, &index.packs)?;
    in_flight.indexed(&index.packs);
    crash_point("index-written");
    stats.index_files.fetch_add(1, Relaxed);
    Ok(())
}

/// Prune deletes a pack no index lists once it is older than
/// `UNINDEXED_MIN_AGE` by the storage's clock (format-spec §14): such a pack
/// may have been deleted if this process stood still that long between
/// uploading it and indexing it. Compared by the storage's own times of the
/// first pack and the index file (two HEADs per index file).
fn check_indexed_in_time(repo: &Repository, index: &Id, packs: &[IndexedPack]) -> Result<()> {
    let Some(first) = packs.first() else {
        return Ok(());
    };
    let uploaded = repo.storage.modified_ns(&layout::pack(&first.id))?;
    let indexed = repo.storage.modified_ns(&layout::index(index))?;
    // storage without times: prune never takes a pack for a leftover by age
    let (Some(uploaded), Some(indexed)) = (uploaded, indexed) else {
        return Ok(());
    };
    let limit = UNINDEXED_MIN_AGE_NS - UNINDEXED_MARGIN_NS;
    if indexed.saturating_sub(uploaded) >= limit {
        return Err(anyhow!(
            "this backup (or copy) stood still for over {} minutes between uploading data and indexing \
             it, so a concurrent prune may have removed that data; no snapshot was written. \
             Run it again",
            limit / 60_000_000_000
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel records the advice as the "hg" flag of the buffer's
    /// mapping (a flag, whether or not huge pages are enabled).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_data_pack_buffer_asks_for_huge_pages() {
        let buffer = data_pack_buffer();
        let inside = buffer.as_ptr() as usize + TARGET_PACK_SIZE / 2;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_mapping = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        in_mapping = (lo..hi).contains(&inside);
                        continue;
                    }
                }
            }
            if in_mapping {
                if let Some(f) = line.strip_prefix("VmFlags:") {
                    flags = Some(f.split_whitespace().map(String::from).collect::<Vec<_>>());
                }
            }
        }
        let flags = flags.expect("the buffer's mapping in /proc/self/smaps");
        assert!(flags.iter().any(|f| f == "hg"), "{flags:?}");
    }
}
