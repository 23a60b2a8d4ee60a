//! Repository locks (format-spec/README.md, "Locks"): taken before a command
//! reads what it will rely on, refreshed in the background while held,
//! released on drop. A holder checks that its lock is still valid before it
//! commits anything (index files, snapshots), so a process that lost its lock
//! (removed by `unlock`, or not refreshed while the machine slept) can never
//! commit references to data a prune has meanwhile deleted.

use crate::crypto::{ad, MasterKeys};
use crate::fail::Fail;
use crate::id::Id;
use crate::lock_record::{LockRecord, REFRESH_EVERY_NS, VALID_FOR_NS};
use crate::repo::{hostname, layout, now_ns, store_sealed, username};
use crate::storage::{is_not_found, Storage};
use anyhow::{anyhow, Result};
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Backup, check, restore: many at once.
    Shared,
    /// Prune, forget, repair: alone.
    Exclusive,
}

/// How to take a lock.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// How long to wait for a conflicting lock to go away (`--retry-lock`).
    pub retry: Duration,
    /// Shown to whoever has to wait for this lock.
    pub command: String,
}

/// A lock found on storage.
pub struct FoundLock {
    pub id: Id,
    /// `Err` when the object cannot be opened (damaged, or foreign).
    pub record: Result<LockRecord>,
}

impl FoundLock {
    /// Gone: not refreshed for the stale age, or made on this host by a
    /// process that no longer exists.
    pub fn is_stale(&self, now_ns: i64) -> bool {
        match &self.record {
            Ok(r) => r.is_expired(now_ns) || (r.hostname == hostname() && !process_exists(r.pid)),
            Err(_) => false,
        }
    }

    fn conflicts_with(&self, kind: LockKind) -> bool {
        match &self.record {
            Ok(r) => kind == LockKind::Exclusive || r.exclusive,
            Err(_) => true,
        }
    }

    pub fn describe(&self) -> String {
        match &self.record {
            Ok(r) => format!(
                "{} lock {} held by `{}` (pid {}, user {}) on host {}, taken {}",
                r.kind(),
                self.id.short(),
                r.command,
                r.pid,
                r.username,
                r.hostname,
                age(now_ns() - r.created_ns)
            ),
            Err(e) => format!("lock {} cannot be read ({e:#})", self.id.short()),
        }
    }
}

fn age(ns: i64) -> String {
    let s = (ns / 1_000_000_000).max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    // Signal 0 checks existence; EPERM means it exists under another user.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Every lock on storage. A lock deleted while being listed is skipped.
pub fn list_locks(storage: &Storage, keys: &MasterKeys) -> Result<Vec<FoundLock>> {
    let mut found = Vec::new();
    for obj in storage.list(layout::LOCKS_DIR)? {
        let Some(id) = layout::id_of(&obj.path) else {
            continue;
        };
        let sealed = match storage.read(&obj.path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let record = keys
            .cipher()
            .open("lock", ad::LOCK, &sealed)
            .map_err(anyhow::Error::from)
            .and_then(|plain| Ok(LockRecord::decode(&plain)?));
        found.push(FoundLock { id, record });
    }
    Ok(found)
}

/// A held lock. Dropping it stops the refresher and deletes the lock object.
pub struct RepoLock {
    state: Arc<State>,
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

struct State {
    storage: Storage,
    keys: MasterKeys,
    current: Mutex<Current>,
}

struct Current {
    id: Id,
    record: LockRecord,
    refreshed_at: Instant,
    /// Our object vanished from storage: someone removed the lock.
    lost: bool,
}

impl State {
    fn write(&self, record: &LockRecord) -> Result<Id> {
        store_sealed(
            &self.storage,
            &self.keys,
            ad::LOCK,
            &record.encode(),
            layout::lock,
        )
    }

    /// Writes a fresh copy of the lock, then deletes the old one.
    fn refresh(&self) {
        let mut cur = self.current.lock().expect("lock state");
        if cur.lost {
            return;
        }
        match self.storage.exists(&layout::lock(&cur.id)) {
            Ok(false) => {
                cur.lost = true;
                return;
            }
            Ok(true) => {}
            Err(e) => {
                eprintln!("warning: cannot refresh the repository lock: {e:#}");
                return;
            }
        }
        let mut record = cur.record.clone();
        record.refreshed_ns = now_ns().max(record.created_ns);
        match self.write(&record) {
            Ok(id) => {
                let _ = self.storage.delete(&layout::lock(&cur.id));
                *cur = Current {
                    id,
                    record,
                    refreshed_at: Instant::now(),
                    lost: false,
                };
            }
            Err(e) => eprintln!("warning: cannot refresh the repository lock: {e:#}"),
        }
    }
}

impl RepoLock {
    /// Takes a lock, waiting up to `opts.retry` for conflicting ones.
    pub fn acquire(
        storage: &Storage,
        keys: &MasterKeys,
        kind: LockKind,
        opts: &LockOptions,
    ) -> Result<RepoLock> {
        let deadline = Instant::now() + opts.retry;
        let mut pause = Duration::from_millis(200);
        let mut announced = false;
        loop {
            let blocker = match first_conflict(storage, keys, kind, None)? {
                Some(b) => b,
                None => {
                    let lock = RepoLock::write_new(storage, keys, kind, opts)?;
                    // Two lockers may have written at the same moment: both
                    // see the other and back off, so at most one proceeds.
                    match first_conflict(storage, keys, kind, Some(lock.id()))? {
                        None => return Ok(lock),
                        Some(b) => {
                            drop(lock);
                            b
                        }
                    }
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Fail::Locked(format!(
                    "{}. Wait for it to finish or use --retry-lock DURATION; if that process is \
                     gone, `cairn unlock` removes stale locks",
                    blocker.describe()
                ))
                .into());
            }
            if !announced {
                eprintln!(
                    "repository is locked: {}; waiting up to {} s",
                    blocker.describe(),
                    opts.retry.as_secs()
                );
                announced = true;
            }
            let jitter = Duration::from_millis(u64::from(crate::crypto::random_bytes::<1>()[0]));
            std::thread::sleep((pause + jitter).min(deadline - now));
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn write_new(
        storage: &Storage,
        keys: &MasterKeys,
        kind: LockKind,
        opts: &LockOptions,
    ) -> Result<RepoLock> {
        let now = now_ns();
        let record = LockRecord {
            exclusive: kind == LockKind::Exclusive,
            hostname: hostname(),
            username: username(),
            pid: std::process::id(),
            command: opts.command.clone(),
            created_ns: now,
            refreshed_ns: now,
        };
        let state = Arc::new(State {
            storage: storage.clone(),
            keys: keys.clone(),
            current: Mutex::new(Current {
                id: Id([0; 32]),
                record: record.clone(),
                refreshed_at: Instant::now(),
                lost: false,
            }),
        });
        let id = state.write(&record)?;
        state.current.lock().expect("lock state").id = id;
        let (stop, stopped) = bounded::<()>(0);
        let every = Duration::from_nanos(REFRESH_EVERY_NS as u64);
        let s = state.clone();
        let refresher = std::thread::spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => s.refresh(),
                _ => return,
            }
        });
        Ok(RepoLock {
            state,
            stop: Some(stop),
            refresher: Some(refresher),
        })
    }

    fn id(&self) -> Id {
        self.state.current.lock().expect("lock state").id
    }

    pub fn kind(&self) -> LockKind {
        if self
            .state
            .current
            .lock()
            .expect("lock state")
            .record
            .exclusive
        {
            LockKind::Exclusive
        } else {
            LockKind::Shared
        }
    }

    /// Succeeds only while the lock is certainly still in force: present on
    /// storage and refreshed recently enough that no one can consider it stale.
    pub fn ensure_valid(&self, before: &str) -> Result<()> {
        let mut cur = self.state.current.lock().expect("lock state");
        if !cur.lost && !self.state.storage.exists(&layout::lock(&cur.id))? {
            cur.lost = true;
        }
        let stale_soon = cur.refreshed_at.elapsed() > Duration::from_nanos(VALID_FOR_NS as u64);
        if cur.lost || stale_soon {
            let why = if cur.lost {
                "was removed from the repository (by `cairn unlock`?)"
            } else {
                "could not be refreshed for too long"
            };
            return Err(Fail::Locked(format!(
                "this process's repository lock {why}; stopping before writing {before}, so \
                 nothing is committed that a concurrent prune could invalidate. Run the command \
                 again"
            ))
            .into());
        }
        Ok(())
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let id = self.id();
        let _ = self.state.storage.delete(&layout::lock(&id));
    }
}

/// The first lock (other than `own`) that is not stale and conflicts with `kind`.
fn first_conflict(
    storage: &Storage,
    keys: &MasterKeys,
    kind: LockKind,
    own: Option<Id>,
) -> Result<Option<FoundLock>> {
    let now = now_ns();
    Ok(list_locks(storage, keys)?
        .into_iter()
        .find(|l| Some(l.id) != own && l.conflicts_with(kind) && !l.is_stale(now)))
}

/// `cairn unlock`: removes stale locks, or with `all` every lock.
pub fn remove_locks(storage: &Storage, keys: &MasterKeys, all: bool) -> Result<Vec<FoundLock>> {
    let now = now_ns();
    let mut removed = Vec::new();
    for l in list_locks(storage, keys)? {
        if all || l.is_stale(now) {
            storage
                .delete(&layout::lock(&l.id))
                .map_err(|e| anyhow!("removing lock {}: {e:#}", l.id.short()))?;
            removed.push(l);
        }
    }
    Ok(removed)
}
