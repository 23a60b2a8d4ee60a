//! A repository: storage plus keys, config and the index cache. Every
//! operation starts from [`Repository::open`].

pub mod access;
pub mod browse;
pub mod caches;
mod commit_check;
pub mod diff;
pub mod find;
mod found;
pub mod keys;
pub mod layout;
pub mod lock;
mod prefetch;
mod rewrite_index;
pub mod snapshots;
pub mod stats;
pub mod tags;

pub use commit_check::{revival_allowed, CommitWindow, UNINDEXED_MIN_AGE_NS};
pub use found::{FoundRepository, Listings};
pub use rewrite_index::IndexRewrite;

use crate::chunker::{Chunker, ChunkerParams};
use crate::config::{Config, REPO_VERSION};
use crate::crypto::keyfile::KdfParams;
use crate::crypto::{ad, random_bytes, MasterKeys};
use crate::fail::Fail;
use crate::filter::{decode_blob, BlobKind};
use crate::id::Id;
use crate::index::cache::{BlobLocation, CacheOpenError, IndexCache};
use crate::index::file::IndexFile;
use crate::pack::{decode_header, parse_trailer, PackedBlob, TRAILER_LEN};
use crate::storage::Storage;
use crate::tree::Tree;
use anyhow::{anyhow, Context, Result};
use lock::{LockKind, LockOptions, RepoLock};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Small objects (index files, snapshots) read at once by
/// [`OpenedRepository::read_objects`]: enough to fill the storage's requests
/// in flight; each is at most its kind's `layout::max_size`.
const OBJECTS_READ_AT_ONCE: usize = 16;

/// What [`OpenedRepository::read_objects`] needs to know of index files.
const INDEX_OBJECT: (&str, &[u8], u64) = ("index file", ad::INDEX, layout::max_size::INDEX);

/// How often a reader lists the index again when files vanish under it
/// (with a growing pause: a prune deleting many old files takes a while).
const INDEX_RELIST_ATTEMPTS: u32 = 10;

/// The index files one listing shows, read (see `read_listed_index_files`).
pub struct ListedIndexFiles {
    /// The last listing, with storage modification times.
    pub present: Vec<(Id, Option<i64>)>,
    /// Each file read, or why it could not be; files that vanished between
    /// LIST and GET are left out.
    pub read: Vec<(Id, Option<i64>, Result<IndexFile>)>,
}

/// Every index file on `storage`, with its storage modification time.
fn list_index_files(storage: &Storage) -> Result<Vec<(Id, Option<i64>)>> {
    Ok(storage
        .list(layout::INDEX_DIR)?
        .iter()
        .filter_map(|o| Some((layout::id_of(&o.path)?, o.modified_ns)))
        .collect())
}

/// The files read, or the first failure.
fn all_read(
    read: Vec<(Id, Option<i64>, Result<IndexFile>)>,
) -> Result<Vec<(Id, Option<i64>, IndexFile)>> {
    read.into_iter()
        .map(|(id, written, file)| Ok((id, written, file?)))
        .collect()
}

/// A repository whose key is unlocked but whose index is not loaded: enough
/// to list, read and resolve snapshots (a server keeps one per repository
/// and answers listings from it). [`OpenedRepository::load_index`] makes it
/// a [`Repository`], which everything that reads or writes data needs.
pub struct OpenedRepository {
    pub storage: Storage,
    pub keys: MasterKeys,
    /// The key file the password opened.
    pub key_id: Id,
    pub config: Config,
    /// Snapshots read so far: they never change (their name is their hash),
    /// so a listing reads only the new ones.
    snapshots: std::sync::Mutex<std::collections::HashMap<Id, crate::tree::snapshot::Snapshot>>,
}

/// What a monitoring system watches of a repository.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RepositorySummary {
    pub snapshots: usize,
    pub stored_bytes: u64,
}

/// A repository with its index cache: what every operation on data uses.
/// It dereferences to the [`OpenedRepository`] it was made from. Several
/// may share one opened repository and one cache (a server's jobs): each
/// holds its own lock.
pub struct Repository {
    opened: Arc<OpenedRepository>,
    pub index: Arc<IndexCache>,
    /// The lock this process holds, if it took one.
    held_lock: OnceLock<RepoLock>,
}

/// Where the index cache lives.
#[derive(Debug, Clone)]
pub enum CacheLocation {
    /// `<dir>/<repository id>/`
    Dir(PathBuf),
    /// A throw-away cache, deleted when the command ends.
    None,
}

impl CacheLocation {
    pub fn default_dir() -> CacheLocation {
        CacheLocation::dir_or_default(None)
    }

    /// `dir` if one is given, else the user's cache directory.
    pub fn dir_or_default(dir: Option<&std::path::Path>) -> CacheLocation {
        CacheLocation::Dir(CacheLocation::base_dir(dir))
    }

    /// The directory holding every repository's cache: `dir`, else
    /// `cairn` in the user's cache directory.
    pub fn base_dir(dir: Option<&std::path::Path>) -> PathBuf {
        dir.map_or_else(
            || {
                dirs::cache_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("cairn")
            },
            std::path::Path::to_path_buf,
        )
    }
}

pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub kdf: KdfParams,
    /// Name blobs and cut chunks as this repository does (`init --from-repo
    /// --copy-chunker-params`; give its chunker too): copies between the
    /// two then carry blob ids over and deduplicate. Encryption keys stay
    /// the new repository's own.
    pub ids_of: Option<MasterKeys>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: crate::config::DEFAULT_COMPRESSION_LEVEL,
            kdf: KdfParams::default(),
            ids_of: None,
        }
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

pub fn username() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Seals `plain` and stores it under `path_of(BLAKE3 of the sealed bytes)`;
/// for writers that hold storage and keys but no [`Repository`] (the lock
/// refresher).
pub(crate) fn store_sealed(
    storage: &Storage,
    keys: &MasterKeys,
    ad: &[u8],
    plain: &[u8],
    path_of: fn(&Id) -> String,
) -> Result<Id> {
    let sealed = keys.cipher().seal(ad, plain);
    let id = Id::of_stored_bytes(&sealed);
    storage.write(&path_of(&id), sealed)?;
    Ok(id)
}

/// Creates a repository: a key file, then the config (written last: it is
/// what makes the location a repository).
pub fn init(storage: &Storage, password: &[u8], opts: &InitOptions) -> Result<Config> {
    keys::check_new_password(password)?;
    if storage.exists(layout::CONFIG)? {
        return Err(Fail::RepoExists(storage.location().to_string()).into());
    }
    if let Some(root) = storage.local_root() {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    }
    opts.chunker.validate()?;
    let mut keys = MasterKeys::generate();
    if let Some(source) = &opts.ids_of {
        keys.id_key = source.id_key;
        keys.chunker_seed = source.chunker_seed;
    }
    keys::store_key(storage, &keys, password, opts.kdf)?;
    let config = Config {
        version: REPO_VERSION,
        id: Id(random_bytes()),
        chunker: opts.chunker,
        compression_level: opts.compression_level,
    };
    storage.write(
        layout::CONFIG,
        keys.cipher().seal(ad::CONFIG, &config.encode()),
    )?;
    Ok(config)
}

/// The ids of the objects in `dir`.
fn list_ids(storage: &Storage, dir: &str) -> Result<Vec<Id>> {
    Ok(storage
        .list(dir)?
        .iter()
        .filter_map(|o| layout::id_of(&o.path))
        .collect())
}

impl std::ops::Deref for Repository {
    type Target = OpenedRepository;

    fn deref(&self) -> &OpenedRepository {
        &self.opened
    }
}

impl OpenedRepository {
    /// Finds the repository on `storage` and unlocks it with `password`.
    pub fn open(storage: Storage, password: &[u8]) -> Result<OpenedRepository> {
        FoundRepository::find(storage)?.unlock(password)
    }

    /// Opens the index cache in `cache` and brings it up to date.
    pub fn load_index(self, cache: &CacheLocation) -> Result<Repository> {
        let index = self.open_index_cache(cache)?;
        Repository::with_index(Arc::new(self), Arc::new(index))
    }

    /// This repository's index cache in `cache`, not yet brought up to date.
    pub fn open_index_cache(&self, cache: &CacheLocation) -> Result<IndexCache> {
        let CacheLocation::Dir(d) = cache else {
            return IndexCache::open_temporary();
        };
        match IndexCache::open(&d.join(self.config.id.to_hex()).join("index")) {
            Ok(index) => {
                caches::tag_cache_dir(d);
                Ok(index)
            }
            // The cache is never the truth: when another process holds it,
            // this one works from a private cache instead of failing.
            Err(CacheOpenError::Busy(path)) => {
                eprintln!(
                    "note: the index cache {path} is in use by another cairn process; \
                     using a temporary cache (slower)"
                );
                IndexCache::open_temporary()
            }
            Err(CacheOpenError::Other(e)) => Err(e),
        }
    }

    /// How many snapshots, and how many bytes the repository's objects
    /// take on storage (two listings).
    pub fn summary(&self) -> Result<RepositorySummary> {
        Ok(RepositorySummary {
            snapshots: self.list_ids(layout::SNAPSHOTS_DIR)?.len(),
            stored_bytes: self.storage.list("")?.iter().map(|o| o.size).sum(),
        })
    }

    /// The ids of the objects stored under `dir` (e.g. `index/`).
    pub fn list_ids(&self, dir: &str) -> Result<Vec<Id>> {
        list_ids(&self.storage, dir)
    }

    /// Reads a sealed object named by the BLAKE3 of its bytes, checks the
    /// name, and opens it. `what` names the object kind in errors.
    pub fn read_object(
        &self,
        path: &str,
        id: &Id,
        what: &'static str,
        ad: &[u8],
        max_size: u64,
    ) -> Result<Vec<u8>> {
        let sealed = self.storage.read(path, max_size)?;
        self.open_object(path, id, what, ad, &sealed)
    }

    /// Reads objects of one kind, [`OBJECTS_READ_AT_ONCE`] at a time, and
    /// decodes each: from a distant store a round trip per batch, not per
    /// object, and never more than one batch of stored bytes in memory.
    /// Each result in its id's place.
    pub fn read_objects<T: Send>(
        &self,
        ids: &[Id],
        path_of: fn(&Id) -> String,
        (what, ad, max_size): (&'static str, &[u8], u64),
        decode: impl Fn(&[u8]) -> Result<T> + Sync,
    ) -> Vec<Result<T>> {
        let mut all = Vec::with_capacity(ids.len());
        for batch in ids.chunks(OBJECTS_READ_AT_ONCE) {
            let paths: Vec<String> = batch.iter().map(path_of).collect();
            let sealed = self.storage.read_each(&paths, max_size);
            let decoded: Vec<Result<T>> = (batch, &paths, sealed)
                .into_par_iter()
                .map(|(id, path, sealed)| {
                    let plain = self.open_object(path, id, what, ad, &sealed?)?;
                    decode(&plain).with_context(|| path.clone())
                })
                .collect();
            all.extend(decoded);
        }
        all
    }

    /// Checks an object's bytes against its name, then opens them.
    fn open_object(
        &self,
        path: &str,
        id: &Id,
        what: &'static str,
        ad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        if Id::of_stored_bytes(sealed) != *id {
            return Err(anyhow!(
                "{path}: content does not match its name: the {what} is damaged"
            ));
        }
        self.keys
            .cipher()
            .open(what, ad, sealed)
            .with_context(|| path.to_string())
    }

    /// Seals `plain` and stores it under `path_of(BLAKE3 of the sealed bytes)`.
    pub fn write_object(&self, ad: &[u8], plain: &[u8], path_of: fn(&Id) -> String) -> Result<Id> {
        store_sealed(&self.storage, &self.keys, ad, plain, path_of)
    }
}

impl Repository {
    /// Opens the repository and loads its index (see [`OpenedRepository`]).
    pub fn open(storage: Storage, password: &[u8], cache: &CacheLocation) -> Result<Repository> {
        OpenedRepository::open(storage, password)?.load_index(cache)
    }

    /// A repository on `opened` working with `index` (which others may be
    /// using at the same time), brought up to date.
    pub fn with_index(opened: Arc<OpenedRepository>, index: Arc<IndexCache>) -> Result<Repository> {
        Self::with_index_listed(opened, index, None)
    }

    /// [`Self::with_index`], from `index_listing` if it is given (a listing
    /// of the index files taken just before).
    pub fn with_index_listed(
        opened: Arc<OpenedRepository>,
        index: Arc<IndexCache>,
        index_listing: Option<Vec<(Id, Option<i64>)>>,
    ) -> Result<Repository> {
        let repo = Repository {
            opened,
            index,
            held_lock: OnceLock::new(),
        };
        repo.sync_index_from(index_listing)?;
        Ok(repo)
    }

    /// Takes the repository lock (held until the repository is dropped),
    /// then re-reads the index: what a command relies on must be read under
    /// its lock, or a prune that finished meanwhile could have removed it.
    pub fn lock(&self, kind: LockKind, opts: &LockOptions) -> Result<()> {
        let lock = RepoLock::acquire(&self.storage, &self.keys, kind, opts)?;
        if self.held_lock.set(lock).is_err() {
            return Err(anyhow!(
                "the repository lock is already held by this process"
            ));
        }
        self.sync_index()
    }

    pub fn holds_lock(&self) -> bool {
        self.held_lock.get().is_some()
    }

    /// Fails unless this process holds a lock of at least `kind` that is
    /// still in force. Called before every write that commits something.
    pub fn ensure_lock(&self, kind: LockKind, before: &str) -> Result<()> {
        let lock = self.held_lock.get().ok_or_else(|| {
            anyhow!(
                "writing {before} needs a repository lock, and this command runs without one \
                 (drop --no-lock)"
            )
        })?;
        if kind == LockKind::Exclusive && lock.kind() != LockKind::Exclusive {
            return Err(anyhow!("writing {before} needs an exclusive lock"));
        }
        lock.ensure_valid(before)
    }

    /// "Now" by the storage's own clock: the modification time of the lock
    /// this process holds (written at most a refresh interval ago, so this
    /// errs early, which only ever makes prune keep more). Garbage
    /// collection judges every age by this clock, never by a host's.
    /// `None` on storage without modification times.
    pub fn storage_now_ns(&self) -> Result<Option<i64>> {
        let lock = self.held_lock.get().ok_or_else(|| {
            anyhow!("judging ages on storage needs the repository lock (drop --no-lock)")
        })?;
        self.storage.modified_ns(&layout::lock(&lock.id()))
    }

    /// Packs read at once by restore and copy. From an object store each
    /// read waits a round trip, which more reads in flight hide; from a
    /// local disk more only cost memory (each holds up to
    /// [`crate::pack::MAX_READ`] and its decoded blobs), so one per core.
    /// One run on 2 cores, 20 ms one-way: 2 → 4.8 s and 100 MB, 4 → 4.1 s
    /// and 137 MB, 8 → 4.0 s and 200 MB.
    pub fn pack_readers(&self) -> usize {
        const REMOTE_PACKS_IN_FLIGHT: usize = 4;
        let cores = rayon::current_num_threads();
        if self.storage.is_remote() {
            REMOTE_PACKS_IN_FLIGHT.max(cores)
        } else {
            cores
        }
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.keys.chunker_seed).expect("validated at open")
    }

    /// Brings the cache up to date with the index files on storage: ingests
    /// new ones; if any ingested one disappeared or was superseded, rebuilds
    /// (a new epoch: blobs may have left the live index). An index file that
    /// vanishes between listing and reading was superseded by a prune that
    /// is finishing: the listing is taken again.
    pub fn sync_index(&self) -> Result<()> {
        self.sync_index_from(None)
    }

    /// [`Self::sync_index`], starting from `listing` if it is given.
    fn sync_index_from(&self, listing: Option<Vec<(Id, Option<i64>)>>) -> Result<()> {
        let _syncing = self.index.sync_guard();
        let (ingested, mut superseded) = self.index.ingested_index_files()?;
        let listed = self.read_listed_index_files_from(&ingested, listing)?;
        let present: std::collections::HashSet<Id> = listed.present.iter().map(|f| f.0).collect();
        let files = all_read(listed.read)?;
        superseded.extend(
            files
                .iter()
                .flat_map(|(_, _, f)| f.supersedes.iter().copied()),
        );
        let rebuild =
            !ingested.is_subset(&present) || ingested.iter().any(|id| superseded.contains(id));
        if rebuild {
            // add the files ingested before (read none twice), then swap
            // the locations while lookups wait
            let read: std::collections::HashSet<Id> = files.iter().map(|f| f.0).collect();
            let mut all = files;
            all.extend(all_read(self.read_listed_index_files(&read)?.read)?);
            return self
                .index
                .rebuild(|| self.ingest_all(&all, &std::collections::HashSet::new()));
        }
        // A file superseded by one ingested earlier (still on storage while
        // its prune finishes) must not bring its entries back.
        self.ingest_all(&files, &superseded)
    }

    /// Reads the index files a listing shows, but those in `skip`. Readers
    /// take no lock, so a prune may replace the index meanwhile. A file that
    /// vanishes between LIST and GET was deleted by a maintenance command
    /// after it wrote the file superseding it (they write before they
    /// delete), so a LIST made after the vanishing shows that successor:
    /// list again and read what is new, until a round sees nothing vanish.
    pub fn read_listed_index_files(
        &self,
        skip: &std::collections::HashSet<Id>,
    ) -> Result<ListedIndexFiles> {
        self.read_listed_index_files_from(skip, None)
    }

    /// [`Self::read_listed_index_files`], from `listing` (if given) the
    /// first time.
    fn read_listed_index_files_from(
        &self,
        skip: &std::collections::HashSet<Id>,
        mut listing: Option<Vec<(Id, Option<i64>)>>,
    ) -> Result<ListedIndexFiles> {
        let mut seen = skip.clone();
        let mut read = Vec::new();
        let mut attempt = 0;
        loop {
            let present = match listing.take() {
                Some(listed) => listed,
                None => self.list_index_files()?,
            };
            let todo: Vec<(Id, Option<i64>)> = present
                .iter()
                .filter(|(id, _)| seen.insert(*id))
                .copied()
                .collect();
            let ids: Vec<Id> = todo.iter().map(|(id, _)| *id).collect();
            let files = self.read_objects(&ids, layout::index, INDEX_OBJECT, |plain| {
                Ok(IndexFile::decode(plain)?)
            });
            let mut vanished = false;
            for ((id, written), file) in todo.into_iter().zip(files) {
                match file {
                    Err(e) if crate::storage::is_not_found(&e) => vanished = true,
                    file => read.push((id, written, file)),
                }
            }
            if !vanished {
                return Ok(ListedIndexFiles { present, read });
            }
            attempt += 1;
            if attempt > INDEX_RELIST_ATTEMPTS {
                return Err(anyhow!(
                    "index files kept vanishing while being read ({INDEX_RELIST_ATTEMPTS} \
                     listings): another process keeps rewriting the index; try again once \
                     it is done"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20 << attempt.min(5)));
        }
    }

    /// Every index file on storage, with its storage modification time.
    pub fn list_index_files(&self) -> Result<Vec<(Id, Option<i64>)>> {
        list_index_files(&self.storage)
    }

    /// Ingests `files`, leaving out those superseded by one of them or
    /// listed in `also_superseded`.
    fn ingest_all(
        &self,
        files: &[(Id, Option<i64>, IndexFile)],
        also_superseded: &std::collections::HashSet<Id>,
    ) -> Result<()> {
        let mut superseded = also_superseded.clone();
        superseded.extend(
            files
                .iter()
                .flat_map(|(_, _, f)| f.supersedes.iter().copied()),
        );
        for (id, written, file) in files.iter().filter(|(id, _, _)| !superseded.contains(id)) {
            self.index.ingest(id, file, *written)?;
        }
        Ok(())
    }

    /// Every pack on storage with its size (`data/`).
    pub fn list_packs(&self) -> Result<Vec<(Id, u64)>> {
        Ok(self
            .storage
            .list(layout::DATA_DIR)?
            .into_iter()
            .filter_map(|o| Some((layout::id_of(&o.path)?, o.size)))
            .collect())
    }

    pub fn read_index_file(&self, id: &Id) -> Result<IndexFile> {
        let (what, ad, max_size) = INDEX_OBJECT;
        let path = layout::index(id);
        let plain = self.read_object(&path, id, what, ad, max_size)?;
        IndexFile::decode(&plain).with_context(|| path)
    }

    /// Writes an index file and records it in the cache. An index file that
    /// only adds (a backup's) needs no lock: it can invalidate nothing. One
    /// that supersedes others is prune's or repair's, under their lock.
    pub fn save_index_file(&self, index: &IndexFile) -> Result<Id> {
        if !index.supersedes.is_empty() {
            self.ensure_lock(LockKind::Exclusive, "an index file that replaces others")?;
        } else if self.holds_lock() {
            self.ensure_lock(LockKind::Shared, "an index file")?;
        }
        let id = self.write_object(ad::INDEX, &index.encode(), layout::index)?;
        // Its condemnations get their time when a later sync reads the
        // file's storage time; until then nothing may rely on them.
        self.index.ingest(&id, index, None)?;
        Ok(id)
    }

    /// Where to read a blob: a live pack, or else a condemned one that is
    /// not deleted yet.
    pub fn locate(&self, kind: BlobKind, id: &Id) -> Result<BlobLocation> {
        self.index.lookup_any(kind, id)?.ok_or_else(|| {
            anyhow!(
                "{} blob {} is not in the index: the repository is missing data \
                 (run `cairn check`)",
                kind.name(),
                id.short()
            )
        })
    }

    /// Reads, decrypts, decompresses and verifies one blob.
    pub fn read_blob(&self, kind: BlobKind, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(kind, id)?;
        let path = layout::pack(&loc.pack);
        let b = &loc.blob;
        let sealed = self.storage.read_range(&path, b.extent())?;
        decode_blob(&self.keys, kind, id, b.raw_length, b.compression, &sealed)
            .with_context(|| format!("{} blob {} in pack {}", kind.name(), id.short(), path))
    }

    /// Reads a pack's header from storage alone (trailer, then header: two
    /// ranged reads), without the index.
    pub fn read_pack_header(&self, id: &Id, size: u64) -> Result<Vec<PackedBlob>> {
        let path = layout::pack(id);
        if size < TRAILER_LEN as u64 {
            return Err(anyhow!("{path}: too short to be a pack"));
        }
        let header_end = size - TRAILER_LEN as u64;
        let trailer = self.storage.read_range(&path, header_end..size)?;
        let header_len = u64::from(parse_trailer(&trailer).with_context(|| path.clone())?);
        let header_start = header_end
            .checked_sub(header_len)
            .ok_or_else(|| anyhow!("{path}: header longer than the pack"))?;
        let sealed = self.storage.read_range(&path, header_start..header_end)?;
        self.open_pack_header(&path, &sealed, header_start)
    }

    /// The blobs a whole pack's bytes hold, from its own header.
    pub fn pack_contents(&self, id: &Id, bytes: &[u8]) -> Result<Vec<PackedBlob>> {
        let path = layout::pack(id);
        let size = bytes.len() as u64;
        if size < TRAILER_LEN as u64 {
            return Err(anyhow!("{path}: too short to be a pack"));
        }
        let header_end = size - TRAILER_LEN as u64;
        let header_len =
            u64::from(parse_trailer(&bytes[header_end as usize..]).with_context(|| path.clone())?);
        let header_start = header_end
            .checked_sub(header_len)
            .ok_or_else(|| anyhow!("{path}: header longer than the pack"))?;
        let sealed = &bytes[header_start as usize..header_end as usize];
        self.open_pack_header(&path, sealed, header_start)
    }

    fn open_pack_header(
        &self,
        path: &str,
        sealed: &[u8],
        header_start: u64,
    ) -> Result<Vec<PackedBlob>> {
        let plain = self
            .keys
            .cipher()
            .open("pack header", ad::PACK_HEADER, sealed)
            .with_context(|| path.to_string())?;
        Ok(decode_header(&plain, header_start).with_context(|| path.to_string())?)
    }

    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        let plain = self.tree_plaintext(id)?;
        Ok(Tree::decode(&plain).with_context(|| format!("tree {}", id.short()))?)
    }

    /// A tree's encoded bytes, from the local cache or else from storage
    /// (and then cached). The cache holds plaintext outside the
    /// repository's protection: a cached tree is used only while it still
    /// hashes to its id (one keyed BLAKE3 of a few KiB), else it is
    /// fetched and cached anew.
    pub fn tree_plaintext(&self, id: &Id) -> Result<Vec<u8>> {
        if let Some(plain) = self.index.tree(id)? {
            if self.keys.blob_id(&plain) == *id {
                return Ok(plain);
            }
        }
        let plain = self.read_blob(BlobKind::Tree, id)?;
        self.index.put_tree(id, &plain)?;
        Ok(plain)
    }
}

/// What a path inside a snapshot names.
/// Why a path inside a snapshot names nothing.
#[derive(Debug, thiserror::Error)]
pub enum PathLookupError {
    #[error("{0}: not found in this snapshot (`cairn ls` shows what is there)")]
    NotFound(String),
    #[error("{0}: a path component is not a directory in this snapshot")]
    NotADirectory(String),
}

pub enum PathTarget {
    /// `/` or a directory: its tree (and the node, except for the root).
    Dir {
        tree: Id,
        node: Option<crate::tree::Node>,
    },
    /// Any other entry.
    Entry(crate::tree::Node),
}

/// Refuses a walk into `dir` (a snapshot path) deeper than
/// [`crate::tree::MAX_DEPTH`] levels, with an error that says why.
pub fn check_depth(dir: &str) -> Result<()> {
    check_level(crate::tree::depth_of(dir), || dir.to_string())
}

/// [`check_depth`] for a walk that counts its `depth` itself; `place`
/// names where it is, built only for the error (walks call this per tree).
pub fn check_level(depth: usize, place: impl FnOnce() -> String) -> Result<()> {
    if depth > crate::tree::MAX_DEPTH {
        let shown: String = place().chars().take(60).collect();
        return Err(anyhow!(
            "{shown}…: directories nest more than {} levels deep, more than any backup can \
             make: the snapshot is damaged or hostile (`cairn check` reports it)",
            crate::tree::MAX_DEPTH
        ));
    }
    Ok(())
}

impl Repository {
    /// Follows `path` (absolute, `/`-separated) from a snapshot's root tree.
    pub fn resolve_path(&self, root: Id, path: &str) -> Result<PathTarget> {
        let mut current = PathTarget::Dir {
            tree: root,
            node: None,
        };
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let PathTarget::Dir { tree, .. } = &current else {
                return Err(PathLookupError::NotADirectory(path.to_string()).into());
            };
            let tree = self.load_tree(tree)?;
            let node = tree
                .find(comp.as_bytes())
                .cloned()
                .ok_or_else(|| PathLookupError::NotFound(path.to_string()))?;
            current = match node.kind {
                crate::tree::NodeKind::Dir { subtree } => PathTarget::Dir {
                    tree: subtree,
                    node: Some(node),
                },
                _ => PathTarget::Entry(node),
            };
        }
        Ok(current)
    }
}
