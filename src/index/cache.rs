//! The local index cache (RocksDB): blob id → location, the set of ingested
//! index files, and decoded trees. Never the source of truth: deleting it
//! loses nothing, it is rebuilt from the repository's index files.
//!
//! Blobs of condemned packs are kept apart from live ones: deduplication
//! sees only live packs, reads find both. The cache's *epoch* grows each
//! time its locations are rebuilt, which is the only way a blob can leave
//! the live index (prune and `repair index` supersede index files); a tree
//! whose blobs were all found live in epoch E needs no new lookups while
//! the epoch is still E.

use crate::filter::{BlobKind, Compression};
use crate::id::Id;
use crate::index::file::IndexFile;
use crate::pack::PackedBlob;
use anyhow::{anyhow, Context, Result};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBatch, DB};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

const CF_BLOBS: &str = "blobs";
const CF_INDEX_FILES: &str = "index_files";
const CF_TREES: &str = "trees";
/// Blob id → location in a condemned pack (for reads only).
const CF_CONDEMNED: &str = "condemned_blobs";
/// Tree id → the epoch in which every blob below it was found live.
const CF_VERIFIED: &str = "verified_trees";
/// Schema, epoch, and condemned packs (`p` ‖ pack id → since ‖ grace).
const CF_META: &str = "meta";
/// `copy`'s record of which blob a source repository's blob became here.
const CF_COPIED: &str = "copied_ids";
const ALL_CFS: [&str; 7] = [
    CF_BLOBS,
    CF_INDEX_FILES,
    CF_TREES,
    CF_CONDEMNED,
    CF_VERIFIED,
    CF_META,
    CF_COPIED,
];

const META_SCHEMA: &[u8] = b"schema";
const META_EPOCH: &[u8] = b"epoch";
const META_PACK_PREFIX: u8 = b'p';
/// Bumped when what the cache records changes; an older cache is rebuilt.
/// 2: index files record what they supersede; condemned packs apart.
const SCHEMA: u64 = 2;

/// A condemned pack as the cache knows it (format-spec §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CondemnedInfo {
    /// When it was condemned, storage time; `None` when the storage did not
    /// say (then nothing may rely on it staying).
    pub since_ns: Option<i64>,
    pub grace_ns: i64,
}

fn pack_meta_key(pack: &Id) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = META_PACK_PREFIX;
    k[1..].copy_from_slice(&pack.0);
    k
}

/// Each memtable; a backup writes blob locations and trees at a few MB per
/// 100k files, so a larger memtable only adds to its peak RSS.
const WRITE_BUFFER_SIZE: usize = 4 << 20;
const BLOCK_CACHE_SIZE: usize = 16 << 20;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub blob: PackedBlob,
}

/// One process may share a cache between threads (a server's jobs and
/// requests on one repository): RocksDB is safe for that, and two locks
/// keep the cache's own invariants.
pub struct IndexCache {
    db: DB,
    /// Held by whoever brings the cache up to date, so two threads never
    /// ingest or rebuild at once.
    syncing: Mutex<()>,
    /// Written while the locations are rebuilt, read by every location
    /// lookup: nobody sees the cache half empty (a blob missing there is
    /// "not in the repository" to a restore).
    rebuilding: RwLock<()>,
    /// A throw-away cache's directory, removed after the database closes
    /// (fields drop in declaration order).
    _temp_dir: Option<TempDir>,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Memtables are written out when the cache closes. RocksDB keeps them only
/// in its write-ahead log otherwise, and the next command would replay that
/// log into memory at open: up to the memtable budget in time and RSS, or
/// far more after ingesting a large index file in one batch.
impl Drop for IndexCache {
    fn drop(&mut self) {
        for name in ALL_CFS {
            // a failed flush loses nothing: the log still holds the writes
            let _ = self.db.flush_cf(self.cf(name));
        }
    }
}

/// Value layout in `blobs` (fixed 50 bytes): pack id (32) ‖ offset u64 LE ‖
/// length u32 LE ‖ raw length u32 LE ‖ compression u8 ‖ reserved u8.
/// Key: kind u8 ‖ blob id (32).
/// Tree ids are 32-byte keys; the mark that all trees below one are cached
/// is that id and a suffix, so it never meets a tree.
fn all_cached_key(root: &Id) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..32].copy_from_slice(&root.0);
    key[32..].copy_from_slice(b"+all");
    key
}

fn blob_key(kind: BlobKind, id: &Id) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = kind.code();
    k[1..].copy_from_slice(&id.0);
    k
}

fn encode_location(pack: &Id, b: &PackedBlob) -> [u8; 50] {
    let mut v = [0u8; 50];
    v[..32].copy_from_slice(&pack.0);
    v[32..40].copy_from_slice(&b.offset.to_le_bytes());
    v[40..44].copy_from_slice(&b.length.to_le_bytes());
    v[44..48].copy_from_slice(&b.raw_length.to_le_bytes());
    v[48] = match b.compression {
        Compression::None => 0,
        Compression::Zstd => 1,
    };
    v
}

fn decode_location(kind: BlobKind, id: Id, v: &[u8]) -> Result<BlobLocation> {
    if v.len() != 50 {
        return Err(anyhow!(
            "index cache entry of {} bytes: the cache is damaged (delete it)",
            v.len()
        ));
    }
    let compression = match v[48] {
        0 => Compression::None,
        1 => Compression::Zstd,
        c => {
            return Err(anyhow!(
                "index cache entry with compression {c}: the cache is damaged"
            ))
        }
    };
    Ok(BlobLocation {
        pack: Id(v[..32].try_into().expect("32 bytes")),
        blob: PackedBlob {
            kind,
            id,
            offset: u64::from_le_bytes(v[32..40].try_into().expect("8 bytes")),
            length: u32::from_le_bytes(v[40..44].try_into().expect("4 bytes")),
            raw_length: u32::from_le_bytes(v[44..48].try_into().expect("4 bytes")),
            compression,
        },
    })
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheOpenError {
    /// Another process holds the cache (RocksDB allows one writer).
    #[error("the index cache at {0} is in use by another cairn process")]
    Busy(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl IndexCache {
    pub fn open(dir: &Path) -> Result<IndexCache, CacheOpenError> {
        // Owner-only: it holds decrypted trees (names, xattrs, link targets).
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating cache directory {}", dir.display()))?;
        // One made before (or by another user, who alone may change it) is
        // tightened where we may.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        opts.set_max_open_files(256);
        // Memory stays flat however large the repository grows: small
        // memtables and one block cache shared by every column family (the
        // defaults are 64 MiB per memtable and a cache per table factory).
        opts.set_write_buffer_size(WRITE_BUFFER_SIZE);
        opts.set_max_write_buffer_number(2);
        // ... and one memtable budget for all column families together (a
        // backup fills two: blob locations and the trees it writes).
        opts.set_db_write_buffer_size(WRITE_BUFFER_SIZE);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_SIZE);
        let mut plain_table = BlockBasedOptions::default();
        plain_table.set_block_cache(&cache);
        // The in-memory filter of known blob ids: a bloom filter (10 bits per
        // id, ~1% false positives) answers the common dedup case, a new blob,
        // without reading a block. Filter and index blocks are pinned for the
        // newest files and charged to the shared cache for the rest.
        let mut blob_table = BlockBasedOptions::default();
        blob_table.set_block_cache(&cache);
        blob_table.set_bloom_filter(10.0, false);
        blob_table.set_cache_index_and_filter_blocks(true);
        blob_table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Partitioned into 4 KiB pieces behind a small pinned top level: a
        // lookup loads the one piece it needs. Whole filter and index blocks
        // of a multi-million-blob cache are MiBs each; they did not stay in
        // the small cache, and re-reading one per lookup made a backup into
        // a 5M-blob repository 12× slower than into an empty one.
        blob_table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        blob_table.set_partition_filters(true);
        blob_table.set_metadata_block_size(4096);
        blob_table.set_pin_top_level_index_and_filter(true);
        blob_table.set_cache_index_and_filter_blocks_with_high_priority(true);
        let with_table = |table: &BlockBasedOptions| {
            let mut o = opts.clone();
            o.set_block_based_table_factory(table);
            o
        };
        let cfs = ALL_CFS
            .iter()
            .map(|name| {
                let table = if *name == CF_BLOBS {
                    &blob_table
                } else {
                    &plain_table
                };
                ColumnFamilyDescriptor::new(*name, with_table(table))
            })
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            // (another process, or this one: copy opens two repositories)
            let held = ["lock file", "lock hold by current process"];
            if e.kind() == rocksdb::ErrorKind::IOError && held.iter().any(|h| e.as_ref().contains(h)) {
                CacheOpenError::Busy(dir.display().to_string())
            } else {
                CacheOpenError::Other(anyhow!(
                    "opening the index cache at {}: {e} (deleting the directory is safe: it is rebuilt)",
                    dir.display()
                ))
            }
        })?;
        let cache = IndexCache {
            db,
            syncing: Mutex::new(()),
            rebuilding: RwLock::new(()),
            _temp_dir: None,
        };
        if cache.meta_u64(META_SCHEMA)? != Some(SCHEMA) {
            cache.clear_locations()?;
            cache
                .db
                .put_cf(cache.cf(CF_META), META_SCHEMA, SCHEMA.to_le_bytes())
                .context("writing the index cache")?;
        }
        Ok(cache)
    }

    /// A cache in a new directory under the system's temporary one, removed
    /// when the cache is dropped (`--no-cache`, or the one in use is busy).
    pub fn open_temporary() -> Result<IndexCache> {
        let dir = std::env::temp_dir().join(format!(
            "cairn-cache-{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        let guard = TempDir(dir.clone());
        let mut cache = IndexCache::open(&dir).map_err(|e| anyhow!("{e}"))?;
        cache._temp_dir = Some(guard);
        Ok(cache)
    }

    /// Held while bringing the cache up to date (see `syncing`).
    pub fn sync_guard(&self) -> MutexGuard<'_, ()> {
        self.syncing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.rebuilding.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Empties the locations and refills them with `refill` (which may only
    /// ingest), while no lookup can see the cache in between.
    pub fn rebuild(&self, refill: impl FnOnce() -> Result<()>) -> Result<()> {
        let _writing = self.rebuilding.write().unwrap_or_else(|e| e.into_inner());
        self.clear_locations()?;
        refill()
    }

    fn meta_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_META), key)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(u64::from_le_bytes))
    }

    /// Grows each time the locations are rebuilt (see the module comment).
    pub fn epoch(&self) -> Result<u64> {
        let _reading = self.reading();
        self.stored_epoch()
    }

    fn stored_epoch(&self) -> Result<u64> {
        Ok(self.meta_u64(META_EPOCH)?.unwrap_or(0))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    pub fn lookup(&self, kind: BlobKind, id: &Id) -> Result<Option<BlobLocation>> {
        let _reading = self.reading();
        self.stored_location(kind, id)
    }

    /// `lookup` for those who already exclude a rebuild (ingesting).
    fn stored_location(&self, kind: BlobKind, id: &Id) -> Result<Option<BlobLocation>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_BLOBS), blob_key(kind, id))?
        {
            Some(v) => Ok(Some(decode_location(kind, *id, &v)?)),
            None => Ok(None),
        }
    }

    /// Where a blob is, in a live pack or else in a condemned one: for
    /// readers, who may read what is not yet deleted.
    pub fn lookup_any(&self, kind: BlobKind, id: &Id) -> Result<Option<BlobLocation>> {
        if let Some(found) = self.lookup(kind, id)? {
            return Ok(Some(found));
        }
        let _reading = self.reading();
        match self
            .db
            .get_pinned_cf(self.cf(CF_CONDEMNED), blob_key(kind, id))?
        {
            Some(v) => Ok(Some(decode_location(kind, *id, &v)?)),
            None => Ok(None),
        }
    }

    /// [`Self::lookup_any`] of many blobs, each result in its id's place.
    /// RocksDB reads a batch of keys together, which costs a fraction of
    /// one lookup each (a restore plan makes one per file).
    pub fn lookup_any_many(&self, kind: BlobKind, ids: &[Id]) -> Result<Vec<Option<BlobLocation>>> {
        let _reading = self.reading();
        let mut found = self.locations_in(CF_BLOBS, kind, ids)?;
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let ids: Vec<Id> = missing.iter().map(|&i| ids[i]).collect();
            let condemned = self.locations_in(CF_CONDEMNED, kind, &ids)?;
            for (i, location) in missing.into_iter().zip(condemned) {
                found[i] = location;
            }
        }
        Ok(found)
    }

    /// Where the column family `cf` says each of `ids` is.
    fn locations_in(
        &self,
        cf: &str,
        kind: BlobKind,
        ids: &[Id],
    ) -> Result<Vec<Option<BlobLocation>>> {
        let keys: Vec<[u8; 33]> = ids.iter().map(|id| blob_key(kind, id)).collect();
        self.db
            .batched_multi_get_cf(self.cf(cf), keys.iter(), false)
            .into_iter()
            .zip(ids)
            .map(|(value, id)| match value? {
                Some(v) => Ok(Some(decode_location(kind, *id, &v)?)),
                None => Ok(None),
            })
            .collect()
    }

    /// The condemnation of a pack, if it is condemned and not live.
    pub fn condemned(&self, pack: &Id) -> Result<Option<CondemnedInfo>> {
        let _reading = self.reading();
        let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_META), pack_meta_key(pack))?
        else {
            return Ok(None);
        };
        if v.len() != 17 {
            return Err(anyhow!(
                "index cache: damaged condemned-pack entry (delete the cache)"
            ));
        }
        let since = i64::from_le_bytes(v[1..9].try_into().expect("8 bytes"));
        let grace = i64::from_le_bytes(v[9..17].try_into().expect("8 bytes"));
        Ok(Some(CondemnedInfo {
            since_ns: (v[0] == 1).then_some(since),
            grace_ns: grace,
        }))
    }

    /// Whether a live pack holds this blob: what deduplication may rely on.
    pub fn contains(&self, kind: BlobKind, id: &Id) -> Result<bool> {
        let key = blob_key(kind, id);
        let cf = self.cf(CF_BLOBS);
        let _reading = self.reading();
        if !self.db.key_may_exist_cf(cf, key) {
            return Ok(false);
        }
        Ok(self.db.get_pinned_cf(cf, key)?.is_some())
    }

    /// Adds one index file's entries, and records it as ingested (with the
    /// files it supersedes), atomically. `written_ns` is the file's storage
    /// modification time: the condemnation time of packs it condemned
    /// without a number. A pack that is live in any file stays live.
    pub fn ingest(&self, index_id: &Id, index: &IndexFile, written_ns: Option<i64>) -> Result<()> {
        let mut batch = WriteBatch::default();
        let blobs = self.cf(CF_BLOBS);
        let meta = self.cf(CF_META);
        for pack in &index.packs {
            for b in &pack.blobs {
                batch.put_cf(blobs, blob_key(b.kind, &b.id), encode_location(&pack.id, b));
            }
            batch.delete_cf(meta, pack_meta_key(&pack.id));
        }
        let condemned_blobs = self.cf(CF_CONDEMNED);
        for c in &index.condemned {
            let pack = &c.pack;
            for b in &pack.blobs {
                batch.put_cf(
                    condemned_blobs,
                    blob_key(b.kind, &b.id),
                    encode_location(&pack.id, b),
                );
            }
            if self.is_live_pack(pack)? || index.packs.iter().any(|p| p.id == pack.id) {
                continue;
            }
            let since = c.since_ns.or(written_ns);
            let mut v = [0u8; 17];
            v[0] = u8::from(since.is_some());
            v[1..9].copy_from_slice(&since.unwrap_or(0).to_le_bytes());
            v[9..17].copy_from_slice(&c.grace_ns.to_le_bytes());
            batch.put_cf(meta, pack_meta_key(&pack.id), v);
        }
        let supersedes: Vec<u8> = index.supersedes.iter().flat_map(|id| id.0).collect();
        batch.put_cf(self.cf(CF_INDEX_FILES), index_id.0, supersedes);
        self.db.write(batch).context("writing the index cache")?;
        Ok(())
    }

    /// Whether an ingested file lists this pack as live: its first blob
    /// points at it. (A pack holds at least one blob.)
    fn is_live_pack(&self, pack: &crate::index::file::IndexedPack) -> Result<bool> {
        let Some(b) = pack.blobs.first() else {
            return Ok(false);
        };
        Ok(self
            .stored_location(b.kind, &b.id)?
            .is_some_and(|loc| loc.pack == pack.id))
    }

    /// The ingested index files, and every file any of them supersedes.
    pub fn ingested_index_files(&self) -> Result<(HashSet<Id>, HashSet<Id>)> {
        let mut ingested = HashSet::new();
        let mut superseded = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_INDEX_FILES), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            if let Ok(id) = <[u8; 32]>::try_from(&k[..]) {
                ingested.insert(Id(id));
            }
            for s in v.chunks_exact(32) {
                superseded.insert(Id(s.try_into().expect("32 bytes")));
            }
        }
        Ok((ingested, superseded))
    }

    /// Forgets all blob locations and condemnations, and starts a new epoch
    /// (trees stay: they are content-addressed and valid whatever the index
    /// says).
    fn clear_locations(&self) -> Result<()> {
        for name in [CF_BLOBS, CF_INDEX_FILES, CF_CONDEMNED, CF_VERIFIED] {
            let cf = self.cf(name);
            self.db.delete_range_cf(cf, &[][..], &[0xffu8; 34][..])?;
        }
        let meta = self.cf(CF_META);
        let mut from = [0u8; 33];
        from[0] = META_PACK_PREFIX;
        let mut to = [0xffu8; 34];
        to[0] = META_PACK_PREFIX;
        self.db.delete_range_cf(meta, &from[..], &to[..])?;
        let next = self.stored_epoch()? + 1;
        self.db
            .put_cf(meta, META_EPOCH, next.to_le_bytes())
            .context("writing the index cache")?;
        Ok(())
    }

    /// Whether every blob below `tree` was found live in `epoch`.
    pub fn is_verified(&self, tree: &Id, epoch: u64) -> Result<bool> {
        let _reading = self.reading();
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_VERIFIED), tree.0)?
            .is_some_and(|v| v[..] == epoch.to_le_bytes()))
    }

    /// Records that every blob below these trees was found live in `epoch`.
    pub fn mark_verified(&self, trees: impl IntoIterator<Item = Id>, epoch: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_VERIFIED);
        for t in trees {
            batch.put_cf(cf, t.0, epoch.to_le_bytes());
        }
        self.db.write(batch).context("writing the index cache")?;
        Ok(())
    }

    pub fn tree(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_TREES), id.0)?)
    }

    pub fn put_tree(&self, id: &Id, plain: &[u8]) -> Result<()> {
        self.db.put_cf(self.cf(CF_TREES), id.0, plain)?;
        Ok(())
    }

    /// Whether a prefetch found every tree below `root` in the cache (or
    /// put it there). Kept beside the trees, and only ever a hint: a tree
    /// missing after all is fetched by the walk that needs it.
    pub fn all_trees_cached(&self, root: &Id) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_TREES), all_cached_key(root))?
            .is_some())
    }

    pub fn mark_all_trees_cached(&self, roots: &[Id]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for root in roots {
            batch.put_cf(self.cf(CF_TREES), all_cached_key(root), []);
        }
        self.db.write(batch).context("writing the index cache")?;
        Ok(())
    }

    /// What `copy` recorded under `key` (its format is copy's business).
    pub fn copied(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_COPIED), key)?)
    }

    pub fn put_copied(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put_cf(self.cf(CF_COPIED), key, value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::file::IndexedPack;

    fn one_blob_index() -> (IndexFile, Id) {
        let blob = Id([7; 32]);
        let file = IndexFile {
            packs: vec![IndexedPack {
                id: Id([1; 32]),
                size: 100,
                blobs: vec![PackedBlob {
                    kind: BlobKind::Data,
                    id: blob,
                    offset: 0,
                    length: 50,
                    raw_length: 50,
                    compression: Compression::None,
                }],
            }],
            supersedes: vec![],
            condemned: vec![],
        };
        (file, blob)
    }

    /// Threads sharing a cache never see a blob vanish while another
    /// rebuilds the locations (a restore would call it missing).
    #[test]
    fn lookups_never_see_a_rebuild_half_done() {
        let cache = IndexCache::open_temporary().unwrap();
        let (file, blob) = one_blob_index();
        let file_id = Id([2; 32]);
        cache.ingest(&file_id, &file, None).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..300 {
                    cache
                        .rebuild(|| cache.ingest(&file_id, &file, None))
                        .unwrap();
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut lookups = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(
                    cache.lookup(BlobKind::Data, &blob).unwrap().is_some(),
                    "blob missing after {lookups} lookups"
                );
                assert!(cache.contains(BlobKind::Data, &blob).unwrap());
                lookups += 1;
            }
        });
        assert_eq!(
            cache.epoch().unwrap(),
            301,
            "one epoch per rebuild (and one at creation)"
        );
    }

    /// Looked up together, blobs are found where one lookup each finds
    /// them: live first, else condemned, else nowhere; in the order asked,
    /// repeats included, and only of the kind asked for.
    #[test]
    fn many_lookups_at_once_agree_with_one_at_a_time() {
        use crate::index::file::CondemnedPack;
        let cache = IndexCache::open_temporary().unwrap();
        let packed = |n: u8, kind: BlobKind| PackedBlob {
            kind,
            id: Id([n; 32]),
            offset: u64::from(n) * 100,
            length: 60 + u32::from(n),
            raw_length: 50 + u32::from(n),
            compression: Compression::None,
        };
        let live = IndexedPack {
            id: Id([1; 32]),
            size: 2000,
            blobs: (10..20).map(|n| packed(n, BlobKind::Data)).collect(),
        };
        let condemned = IndexedPack {
            id: Id([2; 32]),
            size: 2000,
            // 15..20 are live as well (in pack 1): the live place wins
            blobs: (15..25).map(|n| packed(n, BlobKind::Data)).collect(),
        };
        let trees = IndexedPack {
            id: Id([3; 32]),
            size: 2000,
            blobs: vec![packed(30, BlobKind::Tree)],
        };
        let file = IndexFile {
            packs: vec![live, trees],
            supersedes: vec![],
            condemned: vec![CondemnedPack {
                pack: condemned,
                since_ns: Some(1),
                grace_ns: 0,
            }],
        };
        cache.ingest(&Id([9; 32]), &file, None).unwrap();
        let ids: Vec<Id> = [24, 10, 99, 17, 30, 10, 21, 0, 19]
            .iter()
            .map(|&n| Id([n; 32]))
            .collect();
        let many = cache.lookup_any_many(BlobKind::Data, &ids).unwrap();
        let each: Vec<_> = ids
            .iter()
            .map(|id| cache.lookup_any(BlobKind::Data, id).unwrap())
            .collect();
        let place =
            |l: &Option<BlobLocation>| l.as_ref().map(|l| (l.pack, l.blob.id, l.blob.offset));
        assert_eq!(
            many.iter().map(place).collect::<Vec<_>>(),
            each.iter().map(place).collect::<Vec<_>>()
        );
        let packs: Vec<Option<u8>> = many
            .iter()
            .map(|l| l.as_ref().map(|l| l.pack.0[0]))
            .collect();
        assert_eq!(
            packs,
            [
                Some(2),
                Some(1),
                None,
                Some(1),
                None,
                Some(1),
                Some(2),
                None,
                Some(1)
            ]
        );
        assert!(cache
            .lookup_any_many(BlobKind::Data, &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_temporary_cache_is_removed_when_dropped() {
        let cache = IndexCache::open_temporary().unwrap();
        let dir = cache._temp_dir.as_ref().unwrap().0.clone();
        assert!(dir.is_dir());
        drop(cache);
        assert!(!dir.exists());
    }
}
