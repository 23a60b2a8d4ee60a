//! Restore: plan along the selected paths only, then read each needed pack
//! once (ranged, coalesced reads), in parallel, writing blobs straight to
//! their places in the files. Metadata is applied last, directories deepest
//! first, so nothing later disturbs their times.

pub mod confine;
pub mod dump;
mod meta;
mod plan;

pub use meta::{MetadataChoices, XattrChoice};
pub use plan::{Overwrite, RestoreOptions, Selection};

use crate::backup::progress::{FileOutcome, Progress};
use crate::filter::{decode_run, BlobKind, RunBlob};
use crate::id::Id;
use crate::repo::{layout, Repository};
use anyhow::{anyhow, Context, Result};
use plan::{FilePlan, Plan};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// A pack of small blobs can feed thousands of files; keep at most this many
/// open per pack worker, well inside the usual 1024 descriptor limit.
const OPEN_FILES_PER_PACK: usize = 64;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct RestoreOutcome {
    pub files_restored: u64,
    pub files_skipped: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes_written: u64,
    pub packs_read: u64,
    /// Entries `--delete` removed.
    #[serde(default)]
    pub deleted: u64,
    /// Everything that went wrong, each naming the path (and object).
    pub errors: Vec<String>,
}

pub fn restore(repo: &Repository, root: Id, opts: &RestoreOptions) -> Result<RestoreOutcome> {
    restore_until(
        repo,
        root,
        opts,
        &AtomicBool::new(false),
        &Progress::default(),
    )
}

/// [`restore`], stopping early once `cancel` is set (packs not yet begun
/// are left, and nothing gets its real mode: what was written stays
/// owner-only, as after an interrupted restore), and counting what it has
/// done in `progress` (totals once planned, bytes as they are written).
pub fn restore_until(
    repo: &Repository,
    root: Id,
    opts: &RestoreOptions,
    cancel: &AtomicBool,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    if opts.delete && !(opts.selection.includes.is_empty() && opts.selection.excludes.is_empty()) {
        return Err(anyhow!(
            "--delete cannot be combined with --include or --exclude: what the filters leave \
             out would count as absent from the snapshot and be deleted"
        ));
    }
    let plan = plan::build(repo, root, opts)?;
    let mut out = RestoreOutcome {
        dirs: plan.dirs.len() as u64,
        other_entries: plan.others.len() as u64,
        ..Default::default()
    };
    if opts.dry_run {
        out.files_restored = plan.files.len() as u64;
        out.bytes_written = plan
            .files
            .iter()
            .fold(0, |n, f| n.saturating_add(f.node.size));
        return Ok(out);
    }
    // (created private, like every directory the restore makes)
    let target_is_new = meta::ensure_dir(&opts.target)
        .with_context(|| format!("cannot create the restore target {}", opts.target.display()))?;
    let mut new_dirs = Vec::with_capacity(plan.dirs.len());
    for (path, _) in &plan.dirs {
        new_dirs.push(meta::ensure_dir(path).unwrap_or_else(|e| {
            out.errors
                .push(format!("{}: cannot create directory: {e}", path.display()));
            false
        }));
    }
    let errors = Mutex::new(Vec::new());
    let fates = prepare_files(repo, &plan, target_is_new, &new_dirs, &errors);
    let skipped: Vec<bool> = fates.iter().map(|f| !f.gets_content()).collect();
    count_totals(&plan, &skipped, progress);
    let pieces = pieces(&plan, &skipped, &errors);
    let packs = packs_largest_first(&plan, &pieces);
    out.packs_read = packs.len() as u64;
    let created: Vec<AtomicBool> = plan.files.iter().map(|_| AtomicBool::new(false)).collect();
    let writing = Writing {
        repo,
        plan: &plan,
        fates: &fates,
        created: &created,
        errors: &errors,
        progress,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(repo.pack_readers())
        .thread_name(|i| format!("cairn-restore-{i}"))
        .build()
        .context("cannot start the restore's threads")?;
    // Each thread takes the next pack when it is done with one, largest
    // first, so the restore does not end waiting on one big pack.
    let next = AtomicUsize::new(0);
    out.bytes_written = pool
        .broadcast(|_| {
            let mut written = 0;
            let mut bytes = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= packs.len() || cancel.load(Relaxed) {
                    return written;
                }
                written += writing.pack(&pieces[packs[i].clone()], &mut bytes);
            }
        })
        .into_iter()
        .sum();
    if !cancel.load(Relaxed) {
        writing.create_unwritten();
    }
    progress.files_done.store(plan.files.len() as u64, Relaxed);
    if progress.hears_files() {
        for (f, _) in plan.files.iter().zip(&skipped).filter(|(_, s)| !**s) {
            progress.file(FileOutcome::Restored, &plan.file_path(f));
        }
    }
    if cancel.load(Relaxed) {
        return Err(anyhow!(
            "the restore was cancelled: what it wrote is in {}, readable by its owner only",
            opts.target.display()
        ));
    }
    out.errors.extend(errors.into_inner().expect("errors lock"));
    out.files_skipped = skipped.iter().filter(|s| **s).count() as u64;
    out.files_restored = plan.files.len() as u64 - out.files_skipped;
    // before the directories get their times: deleting changes them
    if opts.delete {
        out.deleted = delete_extraneous(&plan, &mut out.errors);
    }
    let left_alone: Vec<bool> = fates.iter().map(|f| *f == Fate::LeftAlone).collect();
    meta::finish(&plan, &left_alone, &opts.metadata, &mut out.errors);
    Ok(out)
}

/// The totals a progress display shows; files with nothing to write count
/// as done at once.
fn count_totals(plan: &Plan, skipped: &[bool], progress: &Progress) {
    let total = plan
        .files
        .iter()
        .fold(0u64, |n, f| n.saturating_add(f.node.size));
    progress.total_files.store(plan.files.len() as u64, Relaxed);
    progress.total_bytes.store(total, Relaxed);
    for (f, _) in plan.files.iter().zip(skipped).filter(|(_, s)| **s) {
        progress.file_done(f.node.size);
        if progress.hears_files() {
            progress.file(FileOutcome::Skipped, &plan.file_path(f));
        }
    }
    progress.scan_done.store(true, Relaxed);
}

/// What becomes of a planned file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It is created and sized beforehand; its content is written.
    Write,
    /// A new file whose content is one blob: whoever writes the blob
    /// creates it (most files of a tree are small, and this saves opening
    /// each one twice).
    Create,
    /// Made later, as a hard link to an earlier file.
    Linked,
    /// It exists with the snapshot's content already.
    Unchanged,
    /// It exists and `--overwrite` says to keep it as it is.
    LeftAlone,
    /// It could not be created (the error is recorded).
    Failed,
}

impl Fate {
    fn gets_content(self) -> bool {
        matches!(self, Fate::Write | Fate::Create)
    }
}

/// `--delete`: removes what the restored directories hold that the plan
/// does not. Only directories of the plan are read, and nothing is
/// followed: a symbolic link is removed as a link. The number removed.
fn delete_extraneous(plan: &Plan, errors: &mut Vec<String>) -> u64 {
    let mut planned: std::collections::HashSet<std::path::PathBuf> =
        plan.dirs.iter().map(|(p, _)| p.clone()).collect();
    planned.extend(plan.others.iter().map(|(p, _)| p.clone()));
    planned.extend(plan.files.iter().map(|f| plan.file_path(f)));
    let mut dirs: Vec<&Path> = plan.dirs.iter().map(|(p, _)| p.as_path()).collect();
    if plan.root_is_dir {
        dirs.push(&plan.target);
    }
    let mut deleted = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if planned.contains(&path) {
                continue;
            }
            match meta::remove_any(&path) {
                Ok(()) => deleted += 1,
                Err(e) => errors.push(format!("{}: cannot delete: {e}", path.display())),
            }
        }
    }
    deleted
}

/// Decides what becomes of each file, and creates (or truncates) and sizes
/// those that need content, so holes stay holes; a new file of one blob is
/// left to its writer ([`Fate::Create`]). Files in a directory the restore
/// has just made are known not to exist, and are not looked up.
fn prepare_files(
    repo: &Repository,
    plan: &Plan,
    target_is_new: bool,
    new_dirs: &[bool],
    errors: &Mutex<Vec<String>>,
) -> Vec<Fate> {
    plan.files
        .par_iter()
        .map(|f| {
            if f.link_to.is_some() {
                return Fate::Linked;
            }
            let path = plan.file_path(f);
            let in_new_dir = f.dir.map_or(target_is_new, |d| new_dirs[d]);
            let existing = if in_new_dir {
                None
            } else {
                std::fs::symlink_metadata(&path).ok()
            };
            let made = match existing {
                None if f.content.len() == 1 => return Fate::Create,
                None => create_new(&path, f.node.size).map(drop),
                Some(existing) => match existing_fate(repo, plan.overwrite, &existing, &path, f) {
                    Some(fate) => return fate,
                    None => create_sized(&path, f.node.size).map(drop),
                },
            };
            match made {
                Ok(()) => Fate::Write,
                Err(e) => {
                    cannot_create(errors, &path, &e);
                    Fate::Failed
                }
            }
        })
        .collect()
}

/// What `--overwrite` makes of `existing`, the file at `path` (None: write it).
fn existing_fate(
    repo: &Repository,
    overwrite: Overwrite,
    existing: &std::fs::Metadata,
    path: &Path,
    f: &FilePlan,
) -> Option<Fate> {
    match overwrite {
        Overwrite::Always => None,
        Overwrite::IfChanged => file_matches(repo, path, f)
            .unwrap_or(false)
            .then_some(Fate::Unchanged),
        Overwrite::IfNewer => {
            use std::os::unix::fs::MetadataExt;
            let mtime_ns = existing.mtime() * 1_000_000_000 + existing.mtime_nsec();
            (mtime_ns >= f.node.mtime_ns).then_some(Fate::LeftAlone)
        }
        Overwrite::Never => Some(Fate::LeftAlone),
    }
}

fn cannot_create(errors: &Mutex<Vec<String>>, path: &Path, e: &std::io::Error) {
    errors
        .lock()
        .expect("errors lock")
        .push(format!("{}: cannot create file: {e}", path.display()));
}

/// Replaces whatever is at `path` with a file of `size` bytes (all holes),
/// writable by its owner only.
fn create_sized(path: &Path, size: u64) -> std::io::Result<File> {
    meta::remove_if_not_regular(path)?;
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(meta::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // (an existing file keeps its mode on open: tighten it through the fd)
    f.set_permissions(std::fs::Permissions::from_mode(meta::PRIVATE_FILE_MODE))?;
    f.set_len(size)?;
    Ok(f)
}

/// [`create_sized`] for a path believed free: a new file gets the private
/// mode as it is made, so only something that appeared there since costs
/// more.
fn create_new(path: &Path, size: u64) -> std::io::Result<File> {
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match made {
        Ok(f) => {
            if size > 0 {
                f.set_len(size)?;
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => create_sized(path, size),
        Err(e) => Err(e),
    }
}

/// Whether an existing file already has exactly the planned content, judged
/// by hashing it at the planned blob boundaries.
pub fn file_matches(repo: &Repository, path: &Path, f: &FilePlan) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && m.len() == f.node.size => {}
        _ => return Ok(false),
    }
    let mut file = File::open(path)?;
    let mut buf = Vec::new();
    for (id, len) in f.content.iter().zip(f.lengths()) {
        buf.resize(len as usize, 0);
        file.read_exact(&mut buf)?;
        if repo.keys.blob_id(&buf) != *id {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One blob's way into one file. Sorted by pack and offset, these make
/// each pack read once, front to back, and a blob that many files share
/// read once.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// Where it is stored: [`Plan::packs`] number and offset in the pack.
    pack: u32,
    offset: u64,
    /// The file (index in [`Plan::files`]), which of its content blobs this
    /// is, and where in the file it lands.
    file: u32,
    blob: u32,
    at: u64,
}

/// Every blob to write, sorted by where it is stored; a blob missing from
/// the index is reported instead.
fn pieces(plan: &Plan, skipped: &[bool], errors: &Mutex<Vec<String>>) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        if skipped[i] {
            continue;
        }
        let mut at = 0u64;
        for (k, (stored, id)) in f.stored.iter().zip(&f.content).enumerate() {
            match stored {
                Some(s) => {
                    pieces.push(Piece {
                        pack: s.pack,
                        offset: s.offset,
                        file: i as u32,
                        blob: k as u32,
                        at,
                    });
                    at += u64::from(s.raw_length);
                }
                None => errors.lock().expect("errors lock").push(format!(
                    "{}: data blob {} is missing from the index (run `cairn check`)",
                    plan.file_path(f).display(),
                    id.short()
                )),
            }
        }
    }
    pieces.par_sort_unstable_by_key(|p| (p.pack, p.offset, p.file, p.at));
    pieces
}

/// The pieces of each pack, the packs with the most to read first.
fn packs_largest_first(plan: &Plan, pieces: &[Piece]) -> Vec<Range<usize>> {
    let mut packs: Vec<(u64, Range<usize>)> = Vec::new();
    let mut begin = 0;
    for same_pack in pieces.chunk_by(|a, b| a.pack == b.pack) {
        let bytes = same_pack
            .chunk_by(|a, b| a.offset == b.offset)
            .map(|blob| u64::from(stored(plan, &blob[0]).length))
            .sum();
        packs.push((bytes, begin..begin + same_pack.len()));
        begin += same_pack.len();
    }
    packs.sort_by_key(|(bytes, range)| (std::cmp::Reverse(*bytes), range.start));
    packs.into_iter().map(|(_, range)| range).collect()
}

fn stored(plan: &Plan, p: &Piece) -> plan::StoredBlob {
    plan.files[p.file as usize].stored[p.blob as usize].expect("pieces are made of stored blobs")
}

/// What the threads writing content share.
struct Writing<'a> {
    repo: &'a Repository,
    plan: &'a Plan,
    fates: &'a [Fate],
    /// Which [`Fate::Create`] files their writer has made.
    created: &'a [AtomicBool],
    errors: &'a Mutex<Vec<String>>,
    progress: &'a Progress,
}

impl Writing<'_> {
    /// Reads the blobs of one pack (`pieces`, all of that pack) into
    /// `bytes` and writes them out; the bytes written.
    fn pack(&self, pieces: &[Piece], bytes: &mut Vec<u8>) -> u64 {
        let plan = self.plan;
        let path = layout::pack(&plan.packs[pieces[0].pack as usize]);
        let cipher = self.repo.keys.cipher();
        let mut written = 0u64;
        let mut handles: HashMap<u32, File> = HashMap::new();
        // one entry per blob: its pieces (a damaged index may list two
        // blobs at one offset; each is then decoded on its own)
        let blobs: Vec<&[Piece]> = pieces
            .chunk_by(|a, b| a.offset == b.offset && self.id(a) == self.id(b))
            .collect();
        for run in crate::pack::read_runs(&blobs, |b| stored(plan, &b[0]).extent()) {
            let start = stored(plan, &run[0][0]).offset;
            let end = stored(plan, &run[run.len() - 1][0]).extent().end;
            if let Err(e) = self.repo.storage.read_range_into(&path, start..end, bytes) {
                self.fail(format!("{e:#}"), run.iter().flat_map(|b| b.iter()));
                continue;
            }
            let decoding: Vec<RunBlob<'_>> = run
                .iter()
                .map(|b| {
                    let s = stored(plan, &b[0]);
                    let at = (s.offset - start) as usize;
                    RunBlob {
                        kind: BlobKind::Data,
                        id: self.id(&b[0]),
                        raw_length: s.raw_length,
                        compression: s.compression,
                        at: at..at + s.length as usize,
                    }
                })
                .collect();
            decode_run(&self.repo.keys, &cipher, bytes, &decoding, |i, decoded| {
                let data = match decoded {
                    Ok(d) => d,
                    Err(e) => {
                        let id = self.id(&run[i][0]).short();
                        self.fail(format!("pack {path}, blob {id}: {e}"), run[i].iter());
                        return;
                    }
                };
                for piece in run[i] {
                    match self.write(&mut handles, piece, data) {
                        Ok(()) => {
                            written += data.len() as u64;
                            self.progress.bytes_read(data.len() as u64);
                        }
                        Err(e) => self.fail(
                            format!("{}: write failed: {e}", self.path(piece).display()),
                            std::iter::once(piece),
                        ),
                    }
                }
            });
        }
        crate::crash_point::crash_point("restore-pack-written");
        written
    }

    /// Writes one blob into its file, through `handles` (the files this
    /// pack has open; a pack of small blobs can feed thousands of files).
    fn write(
        &self,
        handles: &mut HashMap<u32, File>,
        piece: &Piece,
        data: &[u8],
    ) -> std::io::Result<()> {
        let fi = piece.file as usize;
        let create = self.fates[fi] == Fate::Create;
        if handles.len() >= OPEN_FILES_PER_PACK && !handles.contains_key(&piece.file) {
            handles.clear();
        }
        let file = match handles.entry(piece.file) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let path = self.path(piece);
                let file = if create {
                    let file = create_new(&path, 0)?;
                    self.created[fi].store(true, Relaxed);
                    file
                } else {
                    OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(path)?
                };
                v.insert(file)
            }
        };
        let end = write_skipping_zeros(file, data, piece.at)?;
        let size = self.plan.files[fi].node.size;
        if create && end < size {
            // (it ends in holes, which were not written)
            file.set_len(size)?;
        }
        Ok(())
    }

    /// Creates the [`Fate::Create`] files no writer made (their blob could
    /// not be read), as the other files are made: sized, holes only.
    fn create_unwritten(&self) {
        for (i, f) in self.plan.files.iter().enumerate() {
            if self.fates[i] == Fate::Create && !self.created[i].load(Relaxed) {
                let path = self.plan.file_path(f);
                if let Err(e) = create_new(&path, f.node.size) {
                    cannot_create(self.errors, &path, &e);
                }
            }
        }
    }

    fn id(&self, p: &Piece) -> &Id {
        &self.plan.files[p.file as usize].content[p.blob as usize]
    }

    fn path(&self, p: &Piece) -> std::path::PathBuf {
        self.plan.file_path(&self.plan.files[p.file as usize])
    }

    /// Records `what` went wrong, naming the files it leaves incomplete.
    fn fail<'p>(&self, what: String, pieces: impl Iterator<Item = &'p Piece>) {
        let mut names: Vec<String> = pieces.map(|p| self.path(p).display().to_string()).collect();
        names.sort();
        names.dedup();
        self.errors
            .lock()
            .expect("errors lock")
            .push(format!("{what}; affected files: {}", names.join(", ")));
    }
}

/// Holes are made by not writing: files are sized up front, so unwritten
/// ranges read back as zeros and take no space. Zero blocks (aligned to the
/// file offset) are skipped; runs of other blocks are written at once.
const HOLE_BLOCK: u64 = 4096;

/// Writes `data` at `offset` but for its zero blocks; where the last byte
/// written ends (`offset` if nothing was).
fn write_skipping_zeros(file: &File, data: &[u8], offset: u64) -> std::io::Result<u64> {
    let mut pos = 0usize;
    let mut run_start: Option<usize> = None;
    let mut end = offset;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let block_end = (pos + (HOLE_BLOCK - abs % HOLE_BLOCK) as usize).min(data.len());
        let zero = data[pos..block_end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                file.write_all_at(&data[s..pos], offset + s as u64)?;
                end = offset + pos as u64;
                run_start = None;
            }
            _ => {}
        }
        pos = block_end;
    }
    if let Some(s) = run_start {
        file.write_all_at(&data[s..], offset + s as u64)?;
        end = offset + data.len() as u64;
    }
    Ok(end)
}

/// Reads every restored file back and compares it with the snapshot;
/// returns one message per file that differs.
pub fn verify(repo: &Repository, root: Id, opts: &RestoreOptions) -> Result<Vec<String>> {
    let plan = plan::build(repo, root, opts)?;
    Ok(plan
        .files
        .par_iter()
        .filter_map(|f| {
            let path = plan.file_path(f);
            match file_matches(repo, &path, f) {
                Ok(true) => None,
                Ok(false) => Some(format!(
                    "{}: verification failed: content differs from the snapshot",
                    path.display()
                )),
                Err(e) => Some(format!("{}: verification failed: {e}", path.display())),
            }
        })
        .collect())
}
