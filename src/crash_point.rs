//! Named crash points for the kill -9 tests. With `CAIRN_CRASH_AT=NAME:N`
//! in the environment, the N-th pass through the point `NAME` kills the
//! process with SIGKILL, exactly as `kill -9` from outside would, but at a
//! chosen step instead of a random moment. Unset (always, outside tests), a
//! point costs one check of an already-parsed value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let spec = std::env::var("CAIRN_CRASH_AT").ok()?;
        let (name, n) = spec.rsplit_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    })
}

/// Marks a step after which a crash must leave the repository valid.
pub fn crash_point(name: &str) {
    if let Some((want, n)) = target() {
        if want == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
