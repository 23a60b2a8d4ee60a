//! Lock objects (`locks/<id>`): who holds the repository, how, and since when.
//! The rules that use them are in format-spec/README.md ("Locks").

use crate::error::{FormatError, FormatResult};
use crate::wire;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Exclusive locks (prune, forget, repair) exclude every other lock;
    /// shared ones (backup, check, restore) exclude only exclusive ones.
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    /// The command holding it, for the message of whoever has to wait.
    pub command: String,
    /// Nanoseconds since the Unix epoch.
    pub created_ns: i64,
    /// Rewritten while held; a lock not refreshed for [`STALE_AFTER_NS`] is stale.
    pub refreshed_ns: i64,
}

/// How often a holder rewrites its lock.
pub const REFRESH_EVERY_NS: i64 = 5 * 60 * 1_000_000_000;
/// A lock not refreshed for this long is stale: its holder is gone.
pub const STALE_AFTER_NS: i64 = 30 * 60 * 1_000_000_000;
/// A holder writes index files and snapshots only while its last refresh is
/// younger than this: the margin to [`STALE_AFTER_NS`] covers clock skew and
/// the duration of one write, so no one can think the lock stale meanwhile.
pub const VALID_FOR_NS: i64 = 25 * 60 * 1_000_000_000;

impl LockRecord {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    pub fn decode(plain: &[u8]) -> FormatResult<LockRecord> {
        let lock: LockRecord = wire::decode("lock", plain)?;
        if lock.refreshed_ns < lock.created_ns {
            return Err(FormatError::Malformed {
                what: "lock",
                detail: "refreshed before it was created".into(),
            });
        }
        Ok(lock)
    }

    /// Stale by age alone (for a lock of another host, this is the only test).
    pub fn is_expired(&self, now_ns: i64) -> bool {
        now_ns.saturating_sub(self.refreshed_ns) > STALE_AFTER_NS
    }

    pub fn kind(&self) -> &'static str {
        if self.exclusive {
            "exclusive"
        } else {
            "shared"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(refreshed_ns: i64) -> LockRecord {
        LockRecord {
            exclusive: false,
            hostname: "h".into(),
            username: "u".into(),
            pid: 1,
            command: "backup".into(),
            created_ns: 0,
            refreshed_ns,
        }
    }

    #[test]
    fn a_lock_expires_only_after_the_stale_age() {
        let l = lock(1_000);
        assert!(!l.is_expired(1_000 + STALE_AFTER_NS));
        assert!(l.is_expired(1_001 + STALE_AFTER_NS));
        // a clock behind the writer's never makes a lock stale
        assert!(!l.is_expired(0));
    }

    #[test]
    fn round_trip_and_inconsistent_times_rejected() {
        let l = lock(5);
        assert_eq!(LockRecord::decode(&l.encode()).unwrap(), l);
        let mut bad = l.clone();
        bad.created_ns = 10;
        assert!(LockRecord::decode(&bad.encode()).is_err());
    }
}
