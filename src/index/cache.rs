//! The local index cache (RocksDB): blob id → location, the set of ingested
//! index files, and decoded trees. Never the source of truth: deleting it
//! loses nothing, it is rebuilt from the repository's index files.

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
        for name in [CF_BLOBS, CF_INDEX_FILES, CF_TREES] {
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
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache directory {}", dir.display()))?;
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
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_BLOBS, with_table(&blob_table)),
            ColumnFamilyDescriptor::new(CF_INDEX_FILES, with_table(&plain_table)),
            ColumnFamilyDescriptor::new(CF_TREES, with_table(&plain_table)),
        ];
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
        Ok(IndexCache { db })
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

    pub fn contains(&self, kind: BlobKind, id: &Id) -> Result<bool> {
        let key = blob_key(kind, id);
        let cf = self.cf(CF_BLOBS);
        if !self.db.key_may_exist_cf(cf, key) {
            return Ok(false);
        }
        Ok(self.db.get_pinned_cf(cf, key)?.is_some())
    }

    /// Adds one index file's entries, and records it as ingested, atomically.
    pub fn ingest(&self, index_id: &Id, index: &IndexFile) -> Result<()> {
        let mut batch = WriteBatch::default();
        let blobs = self.cf(CF_BLOBS);
        for pack in &index.packs {
            for b in &pack.blobs {
                batch.put_cf(blobs, blob_key(b.kind, &b.id), encode_location(&pack.id, b));
            }
        }
        batch.put_cf(self.cf(CF_INDEX_FILES), index_id.0, []);
        self.db.write(batch).context("writing the index cache")?;
        Ok(())
    }

    pub fn ingested_index_files(&self) -> Result<HashSet<Id>> {
        let mut out = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_INDEX_FILES), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item?;
            if let Ok(id) = <[u8; 32]>::try_from(&k[..]) {
                out.insert(Id(id));
            }
        }
        Ok(out)
    }

    /// Forgets all blob locations (trees stay: they are content-addressed and
    /// valid whatever the index says).
    pub fn clear_locations(&self) -> Result<()> {
        for name in [CF_BLOBS, CF_INDEX_FILES] {
            let cf = self.cf(name);
            self.db.delete_range_cf(cf, &[][..], &[0xffu8; 34][..])?;
        }
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
