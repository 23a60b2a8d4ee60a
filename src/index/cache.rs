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

const CF_BLOBS: &str = "blobs";
const CF_INDEX_FILES: &str = "index_files";
const CF_TREES: &str = "trees";
/// Blob id → location in a condemned pack (for reads only).
const CF_CONDEMNED: &str = "condemned_blobs";
/// Tree id → the epoch in which every blob below it was found live.
const CF_VERIFIED: &str = "verified_trees";
/// Schema, epoch, and condemned packs (`p` ‖ pack id → since ‖ grace).
const CF_META: &str = "meta";
const ALL_CFS: [&str; 6] = [
    CF_BLOBS,
    CF_INDEX_FILES,
    CF_TREES,
    CF_CONDEMNED,
    CF_VERIFIED,
    CF_META,
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
const WRITE_BUFFER_SIZE: usize = 8 << 20;
const BLOCK_CACHE_SIZE: usize = 16 << 20;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub blob: PackedBlob,
}

pub struct IndexCache {
    db: DB,
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
            if e.kind() == rocksdb::ErrorKind::IOError && e.as_ref().contains("lock file") {
                CacheOpenError::Busy(dir.display().to_string())
            } else {
                CacheOpenError::Other(anyhow!(
                    "opening the index cache at {}: {e} (deleting the directory is safe: it is rebuilt)",
                    dir.display()
                ))
            }
        })?;
        let cache = IndexCache { db };
        if cache.meta_u64(META_SCHEMA)? != Some(SCHEMA) {
            cache.clear_locations()?;
            cache
                .db
                .put_cf(cache.cf(CF_META), META_SCHEMA, SCHEMA.to_le_bytes())
                .context("writing the index cache")?;
        }
        Ok(cache)
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
        Ok(self.meta_u64(META_EPOCH)?.unwrap_or(0))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    pub fn lookup(&self, kind: BlobKind, id: &Id) -> Result<Option<BlobLocation>> {
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
        match self
            .db
            .get_pinned_cf(self.cf(CF_CONDEMNED), blob_key(kind, id))?
        {
            Some(v) => Ok(Some(decode_location(kind, *id, &v)?)),
            None => Ok(None),
        }
    }

    /// The condemnation of a pack, if it is condemned and not live.
    pub fn condemned(&self, pack: &Id) -> Result<Option<CondemnedInfo>> {
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
            .lookup(b.kind, &b.id)?
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
    pub fn clear_locations(&self) -> Result<()> {
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
        let next = self.epoch()? + 1;
        self.db
            .put_cf(meta, META_EPOCH, next.to_le_bytes())
            .context("writing the index cache")?;
        Ok(())
    }

    /// Whether every blob below `tree` was found live in `epoch`.
    pub fn is_verified(&self, tree: &Id, epoch: u64) -> Result<bool> {
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
}
