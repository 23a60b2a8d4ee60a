//! The cache directory as a whole (`cairn cache`): one subdirectory per
//! repository ever opened, named by its id. Caches of repositories not used
//! for a while can go (they are rebuilt from the repository when needed);
//! the directory carries a `CACHEDIR.TAG`, so backup tools (cairn's own
//! `--exclude-caches` included) skip it.

use anyhow::{Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by cairn.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// Marks `base` as a cache directory (once; best effort: a cache that
/// cannot be tagged still works).
pub fn tag_cache_dir(base: &Path) {
    let tag = base.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = std::fs::write(tag, TAG);
    }
}

/// One repository's cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    pub repository_id: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// RFC 3339: the newest change to any of its files.
    pub last_used: String,
    pub days_unused: u64,
    /// A process has it open now.
    pub in_use: bool,
}

/// The caches under `base`, most recently used first.
pub fn list_caches(base: &Path) -> Result<Vec<CacheEntry>> {
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", base.display())),
    };
    let now = crate::repo::now_ns();
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_repository_id = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_repository_id || !path.is_dir() {
            continue;
        }
        let (bytes, newest_ns) = usage(&path);
        out.push(CacheEntry {
            repository_id: name,
            in_use: in_use(&path),
            path,
            bytes,
            last_used: crate::time_text::rfc3339(newest_ns),
            days_unused: (now.saturating_sub(newest_ns).max(0) / 86_400_000_000_000) as u64,
        });
    }
    out.sort_by_key(|c| c.days_unused);
    Ok(out)
}

/// Removes the caches unused for at least `max_days` that no process has
/// open; the ones removed.
pub fn remove_old_caches(base: &Path, max_days: u64) -> Result<Vec<CacheEntry>> {
    let mut removed = Vec::new();
    for cache in list_caches(base)? {
        if cache.days_unused >= max_days && !cache.in_use {
            std::fs::remove_dir_all(&cache.path)
                .with_context(|| format!("removing {}", cache.path.display()))?;
            removed.push(cache);
        }
    }
    Ok(removed)
}

/// Bytes below `dir` and the newest modification time, in ns.
fn usage(dir: &Path) -> (u64, i64) {
    let mut bytes = 0;
    let mut newest = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            newest = newest.max(meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    (bytes, newest)
}

/// Whether a process holds the cache's RocksDB lock (a POSIX record lock
/// on `index/LOCK`).
fn in_use(cache: &Path) -> bool {
    use nix::fcntl::{fcntl, FcntlArg};
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(cache.join("index").join("LOCK"))
    else {
        return false;
    };
    let probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let mut answer = probe;
    // F_GETLK reports a conflicting lock without taking one
    match fcntl(&file, FcntlArg::F_GETLK(&mut answer)) {
        Ok(_) => answer.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}
