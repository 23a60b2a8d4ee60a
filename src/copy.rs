//! `copy`: snapshots from one repository into another, carrying only the
//! blobs the destination lacks. The destination is written the way a
//! backup writes it (the same saver, index files and commit check, no
//! lock), so a copy can run beside backups and prunes of either side.
//!
//! Blob ids are keyed per repository (format-spec §6). When the
//! destination shares the source's id key (`init --from-repo
//! --copy-chunker-params`), ids carry over: a tree the destination already
//! has is skipped whole, blobs are copied by id and trees byte for byte.
//! Otherwise each copied blob is hashed again under the destination's key
//! and trees are rewritten with the new ids. Which blob a source blob
//! became is kept in the destination's local cache ([`CopyMap`]), so a
//! later copy of a grown snapshot reads only its new data; within a run a
//! map in memory (about 100 bytes per blob of the snapshot) serves the
//! tree rewrite.
//!
//! Per snapshot: walk its trees (prefetched for all snapshots first) for
//! the data blobs missing at the destination, read them pack by pack in
//! coalesced ranges with several packs in flight, store them, then store
//! the trees bottom-up and commit the snapshot. A snapshot is written only
//! once everything it references is indexed, so an interrupted copy leaves
//! the snapshots it finished and reuses its uploads on the next run.

use crate::backup::progress::Progress;
use crate::backup::saver::{self, BlobSaver, InFlight, PendingIndex, SaverStats};
use crate::fail::Fail;
use crate::filter::{open_blob, BlobKind, Payload};
use crate::id::Id;
use crate::pack::PackedBlob;
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::{check_level, layout, OpenedRepository, Repository};
use crate::tree::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{bounded, unbounded};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// `[copies.NAME]` of the settings file: snapshots copied from one of its
/// repositories to another, by `serve` on a schedule or through the API.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySettings {
    /// The repository copied from (a name under `[repositories]`).
    pub from: String,
    /// The repository copied to.
    pub to: String,
    /// A cron expression (as a source's `schedule`), under `serve`.
    pub schedule: Option<String>,
    /// Only snapshots of these hosts, with these tags, of these paths
    /// (as `--host`, `--tag`, `--path`).
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
}

impl CopySettings {
    pub fn options(&self) -> CopyOptions {
        CopyOptions {
            snapshots: Vec::new(),
            filter: SnapshotFilter {
                hosts: self.hosts.clone(),
                tags: self.tags.clone(),
                paths: self.paths.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Snapshots to copy (ids, prefixes, `latest`); none: every snapshot
    /// `filter` selects.
    pub snapshots: Vec<String>,
    pub filter: SnapshotFilter,
}

/// One snapshot copied: its id in each repository.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CopiedSnapshot {
    pub source: Id,
    pub destination: Id,
    pub time_ns: i64,
    pub hostname: String,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CopyReport {
    pub copied: Vec<CopiedSnapshot>,
    /// Selected snapshots the destination already had.
    pub already_present: Vec<Id>,
    /// Whether both repositories name blobs alike (one id key), so copies
    /// deduplicate against everything the destination holds.
    pub ids_shared: bool,
    /// Blobs (data and trees) stored at the destination, and their
    /// plaintext bytes.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Plaintext bytes of data read from the source.
    pub bytes_read: u64,
    /// Packs written at the destination, and their stored bytes.
    pub packs_written: u64,
    pub bytes_uploaded: u64,
}

/// Copies the selected snapshots from `src` into `dst`, oldest first,
/// skipping those `dst` already has (same time, host, user, paths and tags,
/// and the same root tree where ids are shared: restic's rule).
pub fn copy(
    src: &Repository,
    dst: &Repository,
    opts: &CopyOptions,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<CopyReport> {
    refuse_same(src, dst)?;
    let ids_shared = src.keys.id_key == dst.keys.id_key;
    let mut selected = src.named_or_selected(&opts.snapshots, &opts.filter)?;
    selected.sort_by_key(|(id, s)| (s.time_ns, *id));
    selected.dedup_by_key(|(id, _)| *id);
    let present = dst.list_snapshots()?;
    let mut report = CopyReport {
        ids_shared,
        ..Default::default()
    };
    let mut todo = Vec::new();
    for (id, snap) in selected {
        if present
            .iter()
            .any(|(_, p)| same_snapshot(&snap, p, ids_shared))
        {
            report.already_present.push(id);
        } else {
            todo.push((id, snap));
        }
    }
    progress.total_files.store(todo.len() as u64, Relaxed);
    if todo.is_empty() {
        progress.scan_done.store(true, Relaxed);
        return Ok(report);
    }
    // Tree by tree, a cold cache costs a round trip per directory.
    let roots: Vec<Id> = todo.iter().map(|(_, s)| s.tree).collect();
    src.prefetch_trees(&roots);
    let mut copier = Copier {
        src,
        dst,
        ids_shared,
        trees: HashMap::new(),
        data: HashMap::new(),
        map: CopyMap::new(src, dst),
        epoch: 0,
    };
    let count = todo.len();
    let mut copied_ids: HashMap<Id, Id> = HashMap::new();
    for (i, (id, snap)) in todo.into_iter().enumerate() {
        if interrupted.load(Relaxed) {
            return Err(Fail::Interrupted.into());
        }
        let last = i + 1 == count;
        let (new_id, stats) = copier
            .copy_snapshot(&snap, &copied_ids, last, interrupted, progress)
            .with_context(|| format!("copying snapshot {}", id.short()))?;
        progress.files_done.fetch_add(1, Relaxed);
        report.bytes_read += stats.read;
        report.blobs_copied += stats.saved.blobs.load(Relaxed);
        report.bytes_copied += stats.saved.raw_bytes.load(Relaxed);
        report.packs_written += stats.saved.packs.load(Relaxed);
        report.bytes_uploaded += stats.saved.packed_bytes.load(Relaxed);
        copied_ids.insert(id, new_id);
        report.copied.push(CopiedSnapshot {
            source: id,
            destination: new_id,
            time_ns: snap.time_ns,
            hostname: snap.hostname,
            paths: snap.paths,
        });
    }
    Ok(report)
}

/// Refuses copying a repository into itself (checked before either index
/// is opened: both would be the same cache).
pub fn refuse_same(src: &OpenedRepository, dst: &OpenedRepository) -> Result<()> {
    if src.config.id == dst.config.id {
        return Err(anyhow!(
            "the source and the destination are the same repository ({}): nothing to copy",
            src.storage.location()
        ));
    }
    Ok(())
}

/// Whether `dst_snap` is a copy of `src_snap` (restic's rule: everything
/// but the parent; the root tree only where ids carry over).
fn same_snapshot(src_snap: &Snapshot, dst_snap: &Snapshot, ids_shared: bool) -> bool {
    let sorted = |tags: &[String]| {
        let mut t = tags.to_vec();
        t.sort();
        t
    };
    src_snap.time_ns == dst_snap.time_ns
        && src_snap.hostname == dst_snap.hostname
        && src_snap.username == dst_snap.username
        && src_snap.paths == dst_snap.paths
        && sorted(&src_snap.tags) == sorted(&dst_snap.tags)
        && (!ids_shared || src_snap.tree == dst_snap.tree)
}

struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    ids_shared: bool,
    /// Source tree → destination tree, for trees this run stored (with
    /// their content) or found whole.
    trees: HashMap<Id, Id>,
    /// Source data blob → destination id (ids not shared).
    data: HashMap<Id, Id>,
    map: CopyMap<'a>,
    /// The destination's cache epoch when this snapshot's copy began.
    epoch: u64,
}

/// Which blob each source blob became at the destination, recorded in the
/// destination's local cache across runs (ids not shared). The cache lies
/// outside the repository's protection, so each entry carries a tag keyed
/// by the destination's secrets: an entry the destination's keys did not
/// make is ignored, and one whose blob has left the destination is read
/// again. Losing the cache costs reading the data again, never a wrong id.
struct CopyMap<'a> {
    dst: &'a Repository,
    from: Id,
    tag_key: [u8; 32],
}

impl<'a> CopyMap<'a> {
    fn new(src: &Repository, dst: &'a Repository) -> CopyMap<'a> {
        CopyMap {
            dst,
            from: src.config.id,
            tag_key: blake3::derive_key("cairn copy map v1", &dst.keys.id_key),
        }
    }

    fn key(&self, src_id: &Id) -> [u8; 64] {
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&self.from.0);
        key[32..].copy_from_slice(&src_id.0);
        key
    }

    fn tag(&self, key: &[u8; 64], dst_id: &Id) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.tag_key);
        h.update(key);
        h.update(&dst_id.0);
        *h.finalize().as_bytes()
    }

    /// The destination blob `src_id` became, if the destination still has it.
    fn get(&self, src_id: &Id, in_flight: &InFlight) -> Result<Option<Id>> {
        let key = self.key(src_id);
        let Some(value) = self.dst.index.copied(&key)? else {
            return Ok(None);
        };
        let Some((id, tag)) = value.split_first_chunk::<32>() else {
            return Ok(None);
        };
        let id = Id(*id);
        if tag != self.tag(&key, &id) {
            return Ok(None);
        }
        let here = in_flight.contains(BlobKind::Data, &id)
            || self.dst.index.contains(BlobKind::Data, &id)?;
        Ok(here.then_some(id))
    }

    fn put(&self, src_id: &Id, dst_id: &Id) -> Result<()> {
        let key = self.key(src_id);
        let mut value = [0u8; 64];
        value[..32].copy_from_slice(&dst_id.0);
        value[32..].copy_from_slice(&self.tag(&key, dst_id));
        self.dst.index.put_copied(&key, &value)
    }
}

/// What copying one snapshot did.
struct SnapshotCopied {
    saved: SaverStats,
    /// Plaintext bytes read from the source.
    read: u64,
}

/// A data blob to read from the source.
struct Wanted {
    blob: PackedBlob,
}

impl Copier<'_> {
    fn copy_snapshot(
        &mut self,
        snap: &Snapshot,
        copied_ids: &HashMap<Id, Id>,
        last: bool,
        interrupted: &AtomicBool,
        progress: &Progress,
    ) -> Result<(Id, SnapshotCopied)> {
        let dst = self.dst;
        // Everything found at the destination from here on is relied on only
        // if the commit check says it is still there.
        let window = dst.open_commit_window()?;
        self.epoch = window.epoch();
        let stats = SaverStats::default();
        let pending: Mutex<PendingIndex> = Mutex::default();
        let in_flight = InFlight::default();
        let mut written_trees = Vec::new();
        let mut read = 0u64;
        let stored = std::thread::scope(|scope| {
            let saver = BlobSaver::start(
                scope,
                dst,
                dst.config.compression_level,
                &stats,
                &pending,
                &in_flight,
            );
            let copied = (|| {
                let wanted = self.wanted_data(snap.tree, &in_flight)?;
                read = wanted
                    .iter()
                    .flat_map(|(_, w)| w)
                    .map(|w| u64::from(w.blob.raw_length))
                    .sum();
                progress.total_bytes.fetch_add(read, Relaxed);
                if last {
                    progress.scan_done.store(true, Relaxed);
                }
                self.copy_data(wanted, &saver, &in_flight, interrupted, progress)?;
                if interrupted.load(Relaxed) {
                    return Err(Fail::Interrupted.into());
                }
                self.copy_tree(snap.tree, 0, &saver, &in_flight, &mut written_trees)
            })();
            let saved = saver.finish();
            match (copied, saved) {
                (Err(e), _) if e.downcast_ref::<Fail>().is_some() => Err(e),
                (_, Err(e)) | (Err(e), Ok(())) => Err(e),
                (Ok(root), Ok(())) => Ok(root),
            }
        });
        // Whatever was uploaded gets indexed, even when the copy failed, so
        // the next run reuses it.
        let flushed = saver::flush_index(dst, &pending, &stats, &in_flight);
        let root = stored?;
        flushed?;
        let copy = Snapshot {
            tree: root,
            parent: snap.parent.and_then(|p| copied_ids.get(&p).copied()),
            ..snap.clone()
        };
        let id = crate::backup::commit(dst, &copy, window, written_trees)?;
        Ok((id, SnapshotCopied { saved: stats, read }))
    }

    /// The data blobs below `root` the destination lacks, by source pack,
    /// each pack's sorted by offset.
    fn wanted_data(&mut self, root: Id, in_flight: &InFlight) -> Result<Vec<(Id, Vec<Wanted>)>> {
        let mut by_pack: HashMap<Id, Vec<Wanted>> = HashMap::new();
        let mut seen_blobs: HashSet<Id> = HashSet::new();
        let mut seen_trees: HashSet<Id> = HashSet::new();
        let mut stack = vec![(root, 0usize)];
        while let Some((tree_id, depth)) = stack.pop() {
            if !seen_trees.insert(tree_id) || self.tree_done(&tree_id, in_flight)?.is_some() {
                continue;
            }
            check_level(depth, || format!("tree {}", tree_id.short()))?;
            let tree = self.src.load_tree(&tree_id)?;
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Dir { subtree } => stack.push((subtree, depth + 1)),
                    NodeKind::File { content } => {
                        for id in content {
                            if !seen_blobs.insert(id) || self.data_done(&id, in_flight)? {
                                continue;
                            }
                            let loc = self.src.locate(BlobKind::Data, &id)?;
                            by_pack
                                .entry(loc.pack)
                                .or_default()
                                .push(Wanted { blob: loc.blob });
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut packs: Vec<(Id, Vec<Wanted>)> = by_pack.into_iter().collect();
        packs.sort_by_key(|(id, _)| *id);
        for (_, blobs) in &mut packs {
            blobs.sort_by_key(|w| w.blob.offset);
        }
        Ok(packs)
    }

    /// The destination's id of a source tree whose whole content is there
    /// already (or on its way), if any. With shared ids, a tree the
    /// destination merely has is not enough: a copy that failed after
    /// uploading its trees, because a prune took data they need, leaves
    /// such trees indexed. Only a tree verified whole in this cache epoch
    /// (a commit walked it, and no prune ran since) or stored by this run
    /// after its content vouches for everything below it.
    fn tree_done(&self, id: &Id, in_flight: &InFlight) -> Result<Option<Id>> {
        if let Some(done) = self.trees.get(id) {
            return Ok(Some(*done));
        }
        if !self.ids_shared {
            return Ok(None);
        }
        let whole =
            in_flight.contains(BlobKind::Tree, id) || self.dst.index.is_verified(id, self.epoch)?;
        Ok(whole.then_some(*id))
    }

    /// Whether a source data blob needs no reading: at the destination
    /// already (by its id, or as the copy map says), or read earlier in
    /// this run.
    fn data_done(&mut self, id: &Id, in_flight: &InFlight) -> Result<bool> {
        if self.ids_shared {
            return Ok(in_flight.contains(BlobKind::Data, id)
                || self.dst.index.contains(BlobKind::Data, id)?);
        }
        if self.data.contains_key(id) {
            return Ok(true);
        }
        match self.map.get(id, in_flight)? {
            Some(dst_id) => {
                self.data.insert(*id, dst_id);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads the wanted blobs, several packs at once, and stores each one
    /// the destination does not have under its destination id.
    fn copy_data(
        &mut self,
        wanted: Vec<(Id, Vec<Wanted>)>,
        saver: &BlobSaver<'_>,
        in_flight: &InFlight,
        interrupted: &AtomicBool,
        progress: &Progress,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let src = self.src;
        // (with ids not shared, readers name each blob anew as they read it)
        let dst_keys = (!self.ids_shared).then_some(&self.dst.keys);
        let readers = src.pack_readers().min(wanted.len());
        let (job_tx, job_rx) = unbounded::<(Id, Vec<Wanted>)>();
        for job in wanted {
            job_tx.send(job).expect("receiver alive");
        }
        drop(job_tx);
        // A run's blobs at a time; a few runs queued keep the readers busy
        // while memory stays at a few MAX_READs.
        let (blob_tx, blob_rx) = bounded::<Result<Vec<ReadBlob>>>(readers);
        std::thread::scope(|scope| {
            for _ in 0..readers {
                let (jobs, blobs) = (job_rx.clone(), blob_tx.clone());
                scope.spawn(move || {
                    for (pack, wanted) in jobs {
                        for run in crate::pack::read_runs(&wanted, |w| w.blob.extent()) {
                            if interrupted.load(Relaxed) {
                                return;
                            }
                            if blobs.send(read_run(src, dst_keys, &pack, run)).is_err() {
                                return; // the consumer failed and said why
                            }
                        }
                    }
                });
            }
            drop(blob_tx);
            let stored = (|| {
                for run in &blob_rx {
                    for blob in run? {
                        progress.bytes_read(u64::from(blob.payload.raw_length()));
                        self.store_data(blob, saver, in_flight)?;
                    }
                }
                Ok(())
            })();
            // Readers blocked on a full channel see it closed and stop.
            drop(blob_rx);
            stored
        })
    }

    fn store_data(
        &mut self,
        blob: ReadBlob,
        saver: &BlobSaver<'_>,
        in_flight: &InFlight,
    ) -> Result<()> {
        let id = blob.dst_id;
        if !self.ids_shared {
            self.data.insert(blob.src_id, id);
            self.map.put(&blob.src_id, &id)?;
        }
        if in_flight.contains(BlobKind::Data, &id)
            || self.dst.index.contains(BlobKind::Data, &id)?
        {
            return Ok(());
        }
        in_flight.insert(BlobKind::Data, id);
        saver.save_payload(BlobKind::Data, id, blob.payload)
    }

    /// Stores the tree `id` of the source and everything below it not yet
    /// at the destination, children first; returns its destination id.
    fn copy_tree(
        &mut self,
        id: Id,
        depth: usize,
        saver: &BlobSaver<'_>,
        in_flight: &InFlight,
        written: &mut Vec<Id>,
    ) -> Result<Id> {
        if let Some(done) = self.tree_done(&id, in_flight)? {
            return Ok(done);
        }
        check_level(depth, || format!("tree {}", id.short()))?;
        let plain = self.src.tree_plaintext(&id)?;
        let mut tree = Tree::decode(&plain).with_context(|| format!("tree {}", id.short()))?;
        let mut changed = false;
        for node in &mut tree.nodes {
            match &mut node.kind {
                NodeKind::Dir { subtree } => {
                    let new = self.copy_tree(*subtree, depth + 1, saver, in_flight, written)?;
                    changed |= new != *subtree;
                    *subtree = new;
                }
                NodeKind::File { content } if !self.ids_shared => {
                    for blob in content.iter_mut() {
                        *blob = *self
                            .data
                            .get(blob)
                            .ok_or_else(|| anyhow!("data blob {} was not copied", blob.short()))?;
                    }
                    changed = true;
                }
                _ => {}
            }
        }
        // Shared ids keep the stored bytes exactly; otherwise the tree is
        // encoded again with its new ids, and named by the destination's key.
        let plain = if changed { tree.encode() } else { plain };
        let new_id = if self.ids_shared {
            id
        } else {
            self.dst.keys.blob_id(&plain)
        };
        self.trees.insert(id, new_id);
        if !in_flight.contains(BlobKind::Tree, &new_id)
            && !self.dst.index.contains(BlobKind::Tree, &new_id)?
        {
            in_flight.insert(BlobKind::Tree, new_id);
            // (the destination's next walk of it costs no request)
            self.dst.index.put_tree(&new_id, &plain)?;
            saver.save(BlobKind::Tree, new_id, plain)?;
        }
        written.push(new_id);
        Ok(new_id)
    }
}

/// A data blob read from the source, verified, as its seal held it.
struct ReadBlob {
    src_id: Id,
    /// Its id at the destination.
    dst_id: Id,
    /// Sealed again as it is: a copy compresses nothing a second time
    /// (a blob the source stored raw is compressed at the destination's
    /// level).
    payload: Payload,
}

/// Reads one run of blobs from a source pack and verifies each; with
/// `dst_keys`, names each under them.
fn read_run(
    src: &Repository,
    dst_keys: Option<&crate::crypto::MasterKeys>,
    pack: &Id,
    run: &[Wanted],
) -> Result<Vec<ReadBlob>> {
    let path = layout::pack(pack);
    let start = run[0].blob.offset;
    let end = run[run.len() - 1].blob.extent().end;
    let bytes = src.storage.read_range(&path, start..end)?;
    run.iter()
        .map(|w| {
            let b = &w.blob;
            let at = (b.offset - start) as usize;
            let sealed = bytes.get(at..at + b.length as usize).ok_or_else(|| {
                anyhow!(
                    "{path}: shorter than the index says (blob {})",
                    b.id.short()
                )
            })?;
            let name = |plain: &[u8]| dst_keys.map_or(b.id, |k| k.blob_id(plain));
            let (payload, dst_id) = open_blob(
                &src.keys,
                BlobKind::Data,
                &b.id,
                b.raw_length,
                b.compression,
                sealed,
                name,
            )
            .with_context(|| format!("data blob {} in pack {path}", b.id.short()))?;
            Ok(ReadBlob {
                src_id: b.id,
                dst_id,
                payload,
            })
        })
        .collect()
}
