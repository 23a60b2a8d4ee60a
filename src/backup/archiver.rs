//! The read half of the backup: walks the sources, chunks and hashes file
//! content, skips blobs the repository already has, and builds one tree blob
//! per directory. Files unchanged since the parent snapshot are not read,
//! unless the index no longer holds their content: then they are read again,
//! so one lost pack does not spread into every later snapshot.

use super::progress::{FileOutcome, Progress};
use super::read_ahead::{unchanged, Entry, ParentTree, Prefetched, ReadAhead, Scan, WalkRules};
use super::saver::{BlobSaver, InFlight};
use crate::chunker::Chunker;
use crate::filter::BlobKind;
use crate::id::Id;
use crate::repo::Repository;
use crate::source::exclude::Excludes;
use crate::source::fs::{node_from_stat, read_xattrs, special_kind, OwnerNames};
use crate::source::stat::{lstat, EntryType, Stat};
use crate::tree::snapshot::BackupSummary;
use crate::tree::{Node, NodeKind, Tree, Xattr};
use anyhow::{Context, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How files are compared with the parent snapshot's nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangeDetection {
    pub ignore_inode: bool,
    pub ignore_ctime: bool,
}

/// The backup paths, as a tree of path components. Leaves are backed up
/// whole; inner nodes become directories holding only the chosen children.
#[derive(Default)]
pub struct PathTrie {
    children: BTreeMap<Vec<u8>, PathTrie>,
    leaf: bool,
}

impl PathTrie {
    /// `paths` must be absolute and normalised. A path inside another one is
    /// already covered by it.
    /// Names of the entries the trie puts at the root directory.
    pub fn root_names(&self) -> impl Iterator<Item = &[u8]> {
        self.children.keys().map(Vec::as_slice)
    }

    pub fn new(paths: &[PathBuf]) -> PathTrie {
        let mut root = PathTrie::default();
        for p in paths {
            let mut node = &mut root;
            for c in p.components().skip(1) {
                if node.leaf {
                    break;
                }
                node = node
                    .children
                    .entry(c.as_os_str().as_bytes().to_vec())
                    .or_default();
            }
            node.leaf = true;
            node.children.clear();
        }
        root
    }
}

/// The most of the chunker's read window carried from one file to the next.
/// A window grows to up to 9 MiB for a large file; shrunk back to this
/// after it, the next large file starts with pages already in place.
const KEPT_READ_WINDOW: usize = 2 << 20;

pub struct Archiver<'a, 's> {
    pub repo: &'a Repository,
    /// None in a dry run: blobs are counted, not stored.
    pub saver: Option<&'a BlobSaver<'s>>,
    pub chunker: Chunker,
    pub excludes: Arc<Excludes>,
    pub one_file_system: bool,
    pub detection: ChangeDetection,
    pub interrupted: &'a AtomicBool,
    pub progress: &'a Progress,
    pub summary: BackupSummary,
    owners: OwnerNames,
    /// Blobs handed to the saver in this run and not yet in the index.
    in_flight: &'a InFlight,
    /// The chunker's read window, reused from file to file.
    read_window: Vec<u8>,
    /// The cache epoch the backup started in (see `ParentTree`).
    epoch: u64,
    /// Every tree this run produced, to record as verified once committed.
    pub trees: Vec<Id>,
    /// Unchanged files read again because the index lacks their content.
    pub files_reread: u64,
}

impl<'a, 's> Archiver<'a, 's> {
    pub fn new(
        repo: &'a Repository,
        saver: Option<&'a BlobSaver<'s>>,
        excludes: Excludes,
        one_file_system: bool,
        detection: ChangeDetection,
        in_flight: &'a InFlight,
        interrupted: &'a AtomicBool,
        progress: &'a Progress,
        epoch: u64,
    ) -> Self {
        Archiver {
            repo,
            saver,
            chunker: repo.chunker(),
            excludes: Arc::new(excludes),
            one_file_system,
            detection,
            interrupted,
            progress,
            summary: BackupSummary::default(),
            owners: OwnerNames::default(),
            in_flight,
            read_window: Vec::new(),
            epoch,
            trees: Vec::new(),
            files_reread: 0,
        }
    }

    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(crate::fail::Fail::Interrupted.into());
        }
        Ok(())
    }

    /// Stores a blob unless the repository (or this run) already has it.
    pub fn save_blob(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<Id> {
        let id = self.repo.keys.blob_id(&data);
        self.save_if_new(kind, id, Cow::Owned(data))?;
        Ok(id)
    }

    /// Queues `data` (already hashed to `id`) unless the repository or this
    /// run has it. Borrowed data is copied only when it is new.
    fn save_if_new(&mut self, kind: BlobKind, id: Id, data: Cow<'_, [u8]>) -> Result<()> {
        // In-flight first: the saver drops a blob from it only after its index
        // file is in the cache, so this order never misses a blob.
        if self.in_flight.contains(kind, &id) || self.repo.index.contains(kind, &id)? {
            return Ok(());
        }
        self.in_flight.insert(kind, id);
        self.summary.blobs_added += 1;
        self.summary.data_added += data.len() as u64;
        if let Some(saver) = self.saver {
            saver.save(kind, id, data.into_owned())?;
        }
        Ok(())
    }

    fn save_tree(&mut self, mut nodes: Vec<Node>) -> Result<Id> {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let plain = Tree { nodes }.encode();
        let id = self.repo.keys.blob_id(&plain);
        if self.saver.is_some() {
            // The next backup compares against this tree: from the cache it
            // costs no request (on S3, one GET per directory otherwise).
            self.repo.index.put_tree(&id, &plain)?;
        }
        self.save_if_new(BlobKind::Tree, id, Cow::Owned(plain))?;
        self.trees.push(id);
        Ok(id)
    }

    /// Whether the repository (or this run) holds every one of these blobs
    /// in a live pack.
    fn all_live(&self, kind: BlobKind, ids: &[Id]) -> Result<bool> {
        for id in ids {
            if !self.in_flight.contains(kind, id) && !self.repo.index.contains(kind, id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Chunks a stream into data blobs; returns the ids and the byte count.
    pub fn save_stream(&mut self, reader: impl Read) -> Result<(Vec<Id>, u64)> {
        let chunker = self.chunker.clone();
        let mut ids = Vec::new();
        let mut total = 0u64;
        let counted = CountingReader {
            inner: reader,
            progress: self.progress,
        };
        let mut stream = chunker.stream_reusing(counted, std::mem::take(&mut self.read_window));
        while let Some(chunk) = stream.next_chunk()? {
            total += chunk.len() as u64;
            // copied out of the read window only if it is new
            ids.push(self.save_chunk(Cow::Borrowed(chunk))?);
        }
        let mut window = stream.into_buffer();
        if window.len() > KEPT_READ_WINDOW {
            window.truncate(KEPT_READ_WINDOW);
            window.shrink_to(KEPT_READ_WINDOW);
        }
        self.read_window = window;
        self.summary.bytes_processed += total;
        Ok((ids, total))
    }

    /// Chunks content already in memory (a file read ahead), with the same
    /// cuts as `save_stream`. Content that is one chunk, as a small file
    /// is, goes to the saver without a copy.
    fn save_buffer(&mut self, data: Vec<u8>) -> Result<(Vec<Id>, u64)> {
        let total = data.len() as u64;
        self.progress.bytes_read(total);
        let lengths = self.chunker.chunk_lengths(&data);
        let ids = if lengths.len() == 1 {
            vec![self.save_chunk(Cow::Owned(data))?]
        } else {
            let mut ids = Vec::with_capacity(lengths.len());
            let mut rest = &data[..];
            for n in lengths {
                let (chunk, after) = rest.split_at(n);
                ids.push(self.save_chunk(Cow::Borrowed(chunk))?);
                rest = after;
            }
            ids
        };
        self.summary.bytes_processed += total;
        Ok((ids, total))
    }

    /// Hashes one chunk of file content and stores it unless present.
    fn save_chunk(&mut self, chunk: Cow<'_, [u8]>) -> Result<Id> {
        self.check_interrupted()?;
        let id = self.repo.keys.blob_id(&chunk);
        self.save_if_new(BlobKind::Data, id, chunk)?;
        Ok(id)
    }

    fn warn(&mut self, message: String) {
        self.progress.warn(&message);
        self.summary.errors.push(message);
    }

    /// Backs up the trie rooted at `/` and returns the root tree id.
    /// `extra` nodes (named streams) join the root directory.
    pub fn archive_root(
        &mut self,
        trie: &PathTrie,
        parent_root: Option<Id>,
        extra: Vec<Node>,
    ) -> Result<Id> {
        let parent = ParentTree::load(self.repo, parent_root, false, self.epoch);
        let mut nodes = self.archive_trie_nodes(Path::new("/"), trie, parent.as_ref())?;
        nodes.extend(extra);
        self.save_tree(nodes)
    }

    /// Chunks a stream and returns the file node `name` that holds it.
    pub fn archive_stream(&mut self, name: &str, reader: impl Read) -> Result<Node> {
        let (content, size) = self.save_stream(reader)?;
        self.summary.files_new += 1;
        Ok(stream_node(name, content, size))
    }

    /// The directory `name` holding `nodes` (the streams of a data service).
    pub fn stream_directory(&mut self, name: &str, nodes: Vec<Node>) -> Result<Node> {
        let subtree = self.save_tree(nodes)?;
        Ok(Node {
            kind: NodeKind::Dir { subtree },
            mode: 0o755,
            ..stream_node(name, Vec::new(), 0)
        })
    }

    fn archive_trie(
        &mut self,
        dir: &Path,
        trie: &PathTrie,
        parent: Option<&ParentTree>,
    ) -> Result<Id> {
        let nodes = self.archive_trie_nodes(dir, trie, parent)?;
        self.save_tree(nodes)
    }

    fn archive_trie_nodes(
        &mut self,
        dir: &Path,
        trie: &PathTrie,
        parent: Option<&ParentTree>,
    ) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        let verified = parent.is_some_and(|p| p.verified);
        for (name, child) in &trie.children {
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            let parent_node = parent.and_then(|t| t.tree.find(name));
            if child.leaf {
                let stat = lstat(&path)
                    .with_context(|| format!("backup path {} cannot be read", path.display()))?;
                let entry = Entry::looked_up(name.clone(), path, stat);
                let parent_node = parent_node.cloned();
                if let Some(node) = self.archive_entry(entry, parent_node, verified, None)? {
                    nodes.push(node);
                }
            } else {
                let stat = lstat(&path).with_context(|| format!("reading {}", path.display()))?;
                let sub_parent = ParentTree::subtree(self.repo, parent_node, verified, self.epoch);
                let subtree = self.archive_trie(&path, child, sub_parent.as_ref())?;
                let xattrs = read_xattrs(&path);
                let kind = NodeKind::Dir { subtree };
                let owners = &mut self.owners;
                nodes.push(node_from_stat(
                    name.clone(),
                    &stat,
                    kind,
                    xattrs,
                    owners,
                    None,
                ));
            }
        }
        Ok(nodes)
    }

    /// One entry of any kind. `None`: skipped (unreadable, vanished), already
    /// warned. `parent`: the entry in the parent snapshot, taken apart for
    /// the new node. `ahead`: the walk the entry came from (none for a
    /// backup path).
    fn archive_entry(
        &mut self,
        entry: Entry,
        mut parent: Option<Node>,
        parent_verified: bool,
        ahead: Option<&ReadAhead>,
    ) -> Result<Option<Node>> {
        self.check_interrupted()?;
        let Entry {
            name,
            path,
            stat,
            mut xattrs,
            other_fs,
            content,
        } = entry;
        let mut file_size = None;
        let kind = if stat.kind == EntryType::File {
            let parent_file = parent.as_mut();
            match self.archive_file(
                &path,
                &stat,
                content,
                &mut xattrs,
                parent_file,
                parent_verified,
            ) {
                Ok((content, size)) => {
                    file_size = Some(size);
                    NodeKind::File { content }
                }
                Err(e) => {
                    self.warn(format!("{}: {e:#} (not backed up)", path.display()));
                    return Ok(None);
                }
            }
        } else if stat.kind == EntryType::Dir {
            self.summary.dirs += 1;
            let subtree = if other_fs {
                self.save_tree(Vec::new())?
            } else if let Some(ahead) = ahead {
                self.archive_scanned(ahead, &path)?
            } else {
                let sub_parent =
                    ParentTree::subtree(self.repo, parent.as_ref(), parent_verified, self.epoch);
                self.archive_dir(&path, sub_parent, stat.device)?
            };
            NodeKind::Dir { subtree }
        } else {
            match special_kind(&path, &stat) {
                Ok(Some(kind)) => {
                    self.summary.other_entries += 1;
                    kind
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.warn(format!("{}: {e} (not backed up)", path.display()));
                    return Ok(None);
                }
            }
        };
        let mut node = node_from_stat(name, &stat, kind, xattrs, &mut self.owners, parent);
        if let Some(size) = file_size {
            // what was stored, even if the file changed while being read
            node.size = size;
        }
        Ok(Some(node))
    }

    /// Backs up the directory tree at `dir` (a backup path), with a walk
    /// reading ahead of it.
    fn archive_dir(&mut self, dir: &Path, parent: Option<ParentTree>, root_dev: u64) -> Result<Id> {
        let excludes = Arc::clone(&self.excludes);
        let rules = WalkRules {
            repo: self.repo,
            excludes: &excludes,
            one_file_system: self.one_file_system,
            detection: self.detection,
            epoch: self.epoch,
        };
        std::thread::scope(|scope| {
            let ahead = ReadAhead::start(scope, rules, dir.to_path_buf(), parent, root_dev);
            let tree = self.archive_scanned(&ahead, dir);
            drop(ahead); // stops the walk, which the scope then waits for
            tree
        })
    }

    /// The directory `dir`, as the walk listed it.
    fn archive_scanned(&mut self, ahead: &ReadAhead, dir: &Path) -> Result<Id> {
        let Scan {
            parent,
            entries,
            warnings,
            ..
        } = ahead.next_scan(dir)?;
        for w in warnings {
            self.warn(w);
        }
        let verified = parent.as_ref().is_some_and(|p| p.verified);
        // The walk has let go of the parent tree (it is only cloned if not),
        // so its nodes are taken apart for the new ones. Both lists are
        // sorted by name: one pass pairs them.
        let mut parent_nodes = parent
            .map(|p| Arc::unwrap_or_clone(p).tree.nodes)
            .unwrap_or_default()
            .into_iter()
            .peekable();
        let mut nodes = Vec::with_capacity(entries.len());
        for entry in entries {
            while parent_nodes.next_if(|n| n.name < entry.name).is_some() {}
            let parent_node = parent_nodes.next_if(|n| n.name == entry.name);
            if let Some(node) = self.archive_entry(entry, parent_node, verified, Some(ahead))? {
                nodes.push(node);
            }
        }
        self.save_tree(nodes)
    }

    /// The file's content ids and size, reused from the parent when
    /// unchanged and the index still holds the content (`parent_verified`:
    /// known without asking). A file whose content the repository lost is
    /// read again, and counted. A file read ahead comes with its extended
    /// attributes: they replace `xattrs`.
    fn archive_file(
        &mut self,
        path: &Path,
        stat: &Stat,
        prefetched: Option<Prefetched>,
        xattrs: &mut Vec<Xattr>,
        parent: Option<&mut Node>,
        parent_verified: bool,
    ) -> Result<(Vec<Id>, u64)> {
        let had_parent = parent.is_some();
        if let Some(p) = parent.filter(|p| unchanged(self.detection, stat, p)) {
            if let NodeKind::File { content } = &mut p.kind {
                if parent_verified || self.all_live(BlobKind::Data, content)? {
                    self.summary.files_unmodified += 1;
                    // processed, as restic counts it, though not read
                    self.summary.bytes_processed += p.size;
                    self.progress.file_done(p.size);
                    self.progress.file(FileOutcome::Unchanged, path);
                    return Ok((std::mem::take(content), p.size));
                }
                self.files_reread += 1;
            }
        }
        let (content, read, after) = match prefetched {
            Some(ahead) => {
                let file = ahead.wait()?;
                *xattrs = file.xattrs;
                let (content, read) = self.save_buffer(file.data)?;
                (content, read, file.stat)
            }
            None => {
                let file = File::open(path)?;
                // Read no further than the size stat reported: that saves,
                // per file, the read() that only confirms the end, and a file
                // that grew fails the size check below anyway. A size of 0
                // may be a pseudo-file with content (procfs): that one is
                // read to its end.
                let (content, read) = match stat.size {
                    0 => self.save_stream(&file)?,
                    size => self.save_stream((&file).take(size))?,
                };
                (content, read, Stat::from(&file.metadata()?))
            }
        };
        if read != after.size || after.mtime_ns != stat.mtime_ns {
            self.warn(format!(
                "{}: changed while being read (stored {read} bytes as read; back it up again for a consistent copy)",
                path.display()
            ));
        }
        self.progress.file_done(0);
        if had_parent {
            self.summary.files_changed += 1;
            self.progress.file(FileOutcome::Modified, path);
        } else {
            self.summary.files_new += 1;
            self.progress.file(FileOutcome::New, path);
        }
        Ok((content, read))
    }
}

/// Counts bytes into the progress as they are read (the chunker holds up to
/// a maximum chunk before it emits anything, so counting chunks would lag).
struct CountingReader<'p, R> {
    inner: R,
    progress: &'p Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes_read(n as u64);
        Ok(n)
    }
}

/// A stream is stored as a plain file owned by whoever ran the backup, dated
/// now: it has no metadata of its own.
fn stream_node(name: &str, content: Vec<Id>, size: u64) -> Node {
    let now = crate::repo::now_ns();
    let gid = nix::unistd::getgid();
    let group = nix::unistd::Group::from_gid(gid).ok().flatten();
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File { content },
        mode: 0o644,
        uid: nix::unistd::getuid().as_raw(),
        gid: gid.as_raw(),
        user: crate::repo::username(),
        group: group.map(|g| g.name).unwrap_or_default(),
        mtime_ns: now,
        ctime_ns: now,
        size,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: Vec::new(),
    }
}
