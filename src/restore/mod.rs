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
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
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
    meta::ensure_dir(&opts.target)
        .with_context(|| format!("cannot create the restore target {}", opts.target.display()))?;
    for (path, _) in &plan.dirs {
        if let Err(e) = meta::ensure_dir(path) {
            out.errors
                .push(format!("{}: cannot create directory: {e}", path.display()));
        }
    }
    let errors = Mutex::new(Vec::new());
    let fates = prepare_files(repo, &plan, &errors);
    let skipped: Vec<bool> = fates.iter().map(|f| *f != Fate::Write).collect();
    count_totals(&plan, &skipped, progress);
    let work = group_by_pack(repo, &plan, &skipped, &errors)?;
    out.packs_read = work.len() as u64;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(repo.pack_readers())
        .thread_name(|i| format!("cairn-restore-{i}"))
        .build()
        .context("cannot start the restore's threads")?;
    out.bytes_written = pool.install(|| {
        work.par_iter()
            .map(|(pack, blobs)| {
                if cancel.load(Relaxed) {
                    return 0;
                }
                restore_pack(repo, pack, blobs, &plan, &errors, progress)
            })
            .sum()
    });
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
    /// Its content is written.
    Write,
    /// Made later, as a hard link to an earlier file.
    Linked,
    /// It exists with the snapshot's content already.
    Unchanged,
    /// It exists and `--overwrite` says to keep it as it is.
    LeftAlone,
    /// It could not be created (the error is recorded).
    Failed,
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

/// Creates (or truncates) every file that needs content and sizes it, so
/// holes stay holes; what becomes of each file.
fn prepare_files(repo: &Repository, plan: &Plan, errors: &Mutex<Vec<String>>) -> Vec<Fate> {
    plan.files
        .par_iter()
        .map(|f| {
            if f.link_to.is_some() {
                return Fate::Linked;
            }
            let path = plan.file_path(f);
            match existing_fate(repo, plan.overwrite, &path, f) {
                Some(fate) => return fate,
                None => {}
            }
            if let Err(e) = create_sized(&path, f.node.size) {
                errors
                    .lock()
                    .expect("errors lock")
                    .push(format!("{}: cannot create file: {e}", path.display()));
                return Fate::Failed;
            }
            Fate::Write
        })
        .collect()
}

/// What `--overwrite` makes of a file already at `path` (None: write it).
fn existing_fate(
    repo: &Repository,
    overwrite: Overwrite,
    path: &Path,
    f: &FilePlan,
) -> Option<Fate> {
    let existing = std::fs::symlink_metadata(path).ok()?;
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

fn create_sized(path: &Path, size: u64) -> std::io::Result<()> {
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
    f.set_len(size)
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
    for (id, len) in f.content.iter().zip(&f.lengths) {
        buf.resize(*len as usize, 0);
        file.read_exact(&mut buf)?;
        if repo.keys.blob_id(&buf) != *id {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where a blob goes: (file index, offset in file).
type Targets = Vec<(usize, u64)>;

struct PackWork {
    blob: crate::pack::PackedBlob,
    targets: Targets,
}

fn group_by_pack(
    repo: &Repository,
    plan: &Plan,
    skipped: &[bool],
    errors: &Mutex<Vec<String>>,
) -> Result<Vec<(Id, Vec<PackWork>)>> {
    let mut packs: HashMap<Id, Vec<PackWork>> = HashMap::new();
    let mut where_is: HashMap<Id, (Id, usize)> = HashMap::new();
    for (i, f) in plan.files.iter().enumerate() {
        if skipped[i] {
            continue;
        }
        let mut offset = 0u64;
        for (id, len) in f.content.iter().zip(&f.lengths) {
            if let Some(&(pack, slot)) = where_is.get(id) {
                packs.get_mut(&pack).expect("pack listed")[slot]
                    .targets
                    .push((i, offset));
            } else {
                match repo.index.lookup_any(BlobKind::Data, id)? {
                    Some(loc) => {
                        let list = packs.entry(loc.pack).or_default();
                        where_is.insert(*id, (loc.pack, list.len()));
                        list.push(PackWork {
                            blob: loc.blob,
                            targets: vec![(i, offset)],
                        });
                    }
                    None => errors.lock().expect("errors lock").push(format!(
                        "{}: data blob {} is missing from the index (run `cairn check`)",
                        plan.file_path(f).display(),
                        id.short()
                    )),
                }
            }
            offset += u64::from(*len);
        }
    }
    let mut out: Vec<(Id, Vec<PackWork>)> = packs.into_iter().collect();
    out.sort_by_key(|(id, _)| *id);
    for (_, blobs) in &mut out {
        blobs.sort_by_key(|b| b.blob.offset);
    }
    Ok(out)
}

/// Reads the needed blobs of one pack and writes them out. Returns bytes written.
fn restore_pack(
    repo: &Repository,
    pack: &Id,
    blobs: &[PackWork],
    plan: &Plan,
    errors: &Mutex<Vec<String>>,
    progress: &Progress,
) -> u64 {
    let files = &plan.files;
    let path = layout::pack(pack);
    let mut written = 0u64;
    let mut handles: HashMap<usize, File> = HashMap::new();
    let cipher = repo.keys.cipher();
    let fail = |what: String, targets: &mut dyn Iterator<Item = usize>| {
        let mut names: Vec<String> = targets
            .map(|i| plan.file_path(&files[i]).display().to_string())
            .collect();
        names.sort();
        names.dedup();
        errors
            .lock()
            .expect("errors lock")
            .push(format!("{what}; affected files: {}", names.join(", ")));
    };
    for group in crate::pack::read_runs(blobs, |w| &w.blob) {
        let start = group[0].blob.offset;
        let last = group.last().expect("non-empty group");
        let end = last.blob.offset + u64::from(last.blob.length);
        let mut bytes = match repo.storage.read_range(&path, start..end) {
            Ok(b) => b,
            Err(e) => {
                fail(
                    format!("{e:#}"),
                    &mut group.iter().flat_map(|w| w.targets.iter().map(|t| t.0)),
                );
                continue;
            }
        };
        let run: Vec<RunBlob<'_>> = group
            .iter()
            .map(|w| {
                let at = (w.blob.offset - start) as usize;
                RunBlob {
                    kind: BlobKind::Data,
                    id: &w.blob.id,
                    raw_length: w.blob.raw_length,
                    compression: w.blob.compression,
                    at: at..at + w.blob.length as usize,
                }
            })
            .collect();
        decode_run(&repo.keys, &cipher, &mut bytes, &run, |i, decoded| {
            let w = &group[i];
            let data = match decoded {
                Ok(d) => d,
                Err(e) => {
                    fail(
                        format!("pack {path}, blob {}: {e}", w.blob.id.short()),
                        &mut w.targets.iter().map(|t| t.0),
                    );
                    return;
                }
            };
            for &(fi, off) in &w.targets {
                let f = &files[fi];
                if handles.len() >= OPEN_FILES_PER_PACK && !handles.contains_key(&fi) {
                    handles.clear();
                }
                let result = match handles.entry(fi) {
                    std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
                    std::collections::hash_map::Entry::Vacant(v) => OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(plan.file_path(f))
                        .map(|h| v.insert(h)),
                }
                .and_then(|h| write_skipping_zeros(h, data, off));
                match result {
                    Ok(()) => {
                        written += data.len() as u64;
                        progress.bytes_read(data.len() as u64);
                    }
                    Err(e) => fail(
                        format!("{}: write failed: {e}", plan.file_path(f).display()),
                        &mut std::iter::once(fi),
                    ),
                }
            }
        });
    }
    crate::crash_point::crash_point("restore-pack-written");
    written
}

/// Holes are made by not writing: files are sized up front, so unwritten
/// ranges read back as zeros and take no space. Zero blocks (aligned to the
/// file offset) are skipped; runs of other blocks are written at once.
const HOLE_BLOCK: u64 = 4096;

fn write_skipping_zeros(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut pos = 0usize;
    let mut run_start: Option<usize> = None;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let end = (pos + (HOLE_BLOCK - abs % HOLE_BLOCK) as usize).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                file.write_all_at(&data[s..pos], offset + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = run_start {
        file.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
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
