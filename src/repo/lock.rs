//! Repository locks (format-spec/README.md, "Locks"): keep maintenance
//! commands (prune, forget, repair index) apart. Backups take none. Taken
//! before a command reads what it will rely on, refreshed in the background
//! while held, released on drop. Ages are judged by the storage's own
//! modification times, so neither clock skew between hosts nor a process
//! that stood still (SIGSTOP, a suspended machine) can make a live lock look
//! stale, or a stale one look live to its holder: before anything that
//! matters, a holder refreshes its lock and checks that no one could have
//! judged it stale in between.

use crate::crypto::{ad, MasterKeys};
use crate::fail::Fail;
use crate::id::Id;
use crate::lock_record::{LockRecord, REFRESH_EVERY_NS, STALE_AFTER_NS, VALID_FOR_NS};
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
    /// The storage's modification time of the object: when it was written
    /// or last refreshed, by the one clock every host shares.
    pub modified_ns: Option<i64>,
}

impl FoundLock {
    /// Gone: not refreshed for the stale age (by the storage's clock, with
    /// `storage_now_ns` from the same clock), or made on this host by a
    /// process that no longer exists. Where the storage gives no times, the
    /// record's own refresh time is compared with this host's clock.
    pub fn is_stale(&self, storage_now_ns: Option<i64>) -> bool {
        match &self.record {
            Ok(r) => {
                let expired = match (self.modified_ns, storage_now_ns) {
                    (Some(m), Some(now)) => now.saturating_sub(m) > STALE_AFTER_NS,
                    _ => r.is_expired(now_ns()),
                };
                expired || (r.hostname == hostname() && !process_exists(r.pid))
            }
            Err(_) => false,
        }
    }

    fn conflicts_with(&self, kind: LockKind) -> bool {
        match &self.record {
            Ok(r) => kind == LockKind::Exclusive || r.exclusive,
            Err(_) => true,
        }
    }

    /// What whoever meets this lock in their way can do about it.
    pub fn what_to_do(&self) -> &'static str {
        match &self.record {
            Ok(_) => {
                "Wait for it to finish or use --retry-lock DURATION; if that process is gone, \
                 `cairn unlock` removes stale locks"
            }
            // an unreadable lock has no age or holder to judge it stale by
            Err(_) => {
                "A lock that cannot be read never counts as stale: once no cairn process uses \
                 this repository, `cairn unlock --remove-all` removes it"
            }
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
        // an oversized lock is as unreadable as a damaged one: reported
        // with the rest, not an end to every command
        let record = match storage.read(&obj.path, layout::max_size::LOCK) {
            Err(e) if is_not_found(&e) => continue,
            Err(e) if !crate::storage::is_too_large(&e) => return Err(e),
            read => read.and_then(|sealed| {
                let plain = keys.cipher().open("lock", ad::LOCK, &sealed)?;
                Ok(LockRecord::decode(&plain)?)
            }),
        };
        found.push(FoundLock {
            id,
            record,
            modified_ns: obj.modified_ns,
        });
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
    /// The storage's modification time of our current object.
    modified_ns: Option<i64>,
    /// Our object vanished from storage (someone removed the lock), or a
    /// refresh came so late that someone may have judged it stale.
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

    /// Writes a fresh copy of the lock, then deletes the old one. A copy
    /// that lands more than `VALID_FOR_NS` after the previous one (storage
    /// time) does not revive the lock: someone may have judged it stale and
    /// acted in between, so the lock counts as lost.
    fn refresh(&self) -> Result<()> {
        let mut cur = self.current.lock().expect("lock state");
        if cur.lost {
            return Ok(());
        }
        if !self.storage.exists(&layout::lock(&cur.id))? {
            cur.lost = true;
            return Ok(());
        }
        let mut record = cur.record.clone();
        record.refreshed_ns = now_ns().max(record.created_ns);
        let id = self.write(&record)?;
        let modified_ns = self.storage.modified_ns(&layout::lock(&id)).ok().flatten();
        let late = match (cur.modified_ns, modified_ns) {
            (Some(before), Some(now)) => now.saturating_sub(before) > VALID_FOR_NS,
            _ => false,
        };
        let _ = self.storage.delete(&layout::lock(&cur.id));
        *cur = Current {
            id,
            record,
            modified_ns,
            lost: late,
        };
        if late {
            let _ = self.storage.delete(&layout::lock(&id));
        }
        Ok(())
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
            // Ours first: its storage time is the "now" that the others'
            // ages are judged by. Two lockers that write at the same moment
            // both see the other and back off, so at most one proceeds.
            let lock = RepoLock::write_new(storage, keys, kind, opts)?;
            let now = lock.state.current.lock().expect("lock state").modified_ns;
            let blocker = match first_conflict(storage, keys, kind, lock.id(), now)? {
                None => return Ok(lock),
                Some(b) => {
                    drop(lock);
                    b
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Fail::Locked(format!(
                    "{}. {}",
                    blocker.describe(),
                    blocker.what_to_do()
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
                modified_ns: None,
                lost: false,
            }),
        });
        let id = state.write(&record)?;
        let modified_ns = storage.modified_ns(&layout::lock(&id)).ok().flatten();
        {
            let mut cur = state.current.lock().expect("lock state");
            cur.id = id;
            cur.modified_ns = modified_ns;
        }
        let (stop, stopped) = bounded::<()>(0);
        let every = Duration::from_nanos(REFRESH_EVERY_NS as u64);
        let s = state.clone();
        let refresher = std::thread::spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = s.refresh() {
                        eprintln!("warning: cannot refresh the repository lock: {e:#}");
                    }
                }
                _ => return,
            }
        });
        Ok(RepoLock {
            state,
            stop: Some(stop),
            refresher: Some(refresher),
        })
    }

    /// The lock object's current id (a refresh writes a new one).
    pub fn id(&self) -> Id {
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

    /// Succeeds only while the lock is certainly still in force: it is
    /// refreshed now, and the new copy must land on storage less than
    /// `VALID_FOR_NS` after the previous one, so no one can have judged it
    /// stale in between, however long this process stood still.
    pub fn ensure_valid(&self, before: &str) -> Result<()> {
        self.state.refresh()?;
        let cur = self.state.current.lock().expect("lock state");
        if cur.lost {
            let why = "was removed from the repository (by `cairn unlock`), or went unrefreshed \
                       long enough to count as stale";
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

/// The first lock (other than `own`) that is not stale and conflicts with
/// `kind`; `storage_now_ns` is the storage time of `own`.
fn first_conflict(
    storage: &Storage,
    keys: &MasterKeys,
    kind: LockKind,
    own: Id,
    storage_now_ns: Option<i64>,
) -> Result<Option<FoundLock>> {
    Ok(list_locks(storage, keys)?
        .into_iter()
        .find(|l| l.id != own && l.conflicts_with(kind) && !l.is_stale(storage_now_ns)))
}

/// `cairn unlock`: removes stale locks, or with `all` every lock. "Now" is
/// the storage time of a probe lock written (and removed) for the purpose.
pub fn remove_locks(storage: &Storage, keys: &MasterKeys, all: bool) -> Result<Vec<FoundLock>> {
    let probe = RepoLock::write_new(
        storage,
        keys,
        LockKind::Shared,
        &LockOptions {
            retry: Duration::ZERO,
            command: "unlock (judging lock ages)".into(),
        },
    )?;
    let (probe_id, now) = {
        let cur = probe.state.current.lock().expect("lock state");
        (cur.id, cur.modified_ns)
    };
    let found: Vec<FoundLock> = list_locks(storage, keys)?
        .into_iter()
        .filter(|l| l.id != probe_id)
        .collect();
    drop(probe);
    let mut removed = Vec::new();
    for l in found {
        if all || l.is_stale(now) {
            storage
                .delete(&layout::lock(&l.id))
                .map_err(|e| anyhow!("removing lock {}: {e:#}", l.id.short()))?;
            removed.push(l);
        }
    }
    Ok(removed)
}
