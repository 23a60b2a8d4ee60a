//! Named crash points for the kill -9 and race tests. With
//! `CAIRN_CRASH_AT=NAME:N` in the environment, the N-th pass through the
//! point `NAME` kills the process with SIGKILL, exactly as `kill -9` from
//! outside would, but at a chosen step instead of a random moment. With
//! `CAIRN_STOP_AT=NAME:N` the process stops itself there (SIGSTOP), as a
//! suspended laptop or a paused container would, until a SIGCONT; a test
//! runs a prune meanwhile. Unset (always, outside tests), a point costs one
//! check of an already-parsed value.

use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Point {
    name: String,
    pass: u64,
    passes: AtomicU64,
}

fn parse(var: &str) -> Option<Point> {
    let spec = std::env::var(var).ok()?;
    let (name, n) = spec.rsplit_once(':')?;
    Some(Point {
        name: name.to_string(),
        pass: n.parse().ok()?,
        passes: AtomicU64::new(0),
    })
}

static CRASH: OnceLock<Option<Point>> = OnceLock::new();
static STOP: OnceLock<Option<Point>> = OnceLock::new();

fn reached(point: &Option<Point>, name: &str) -> bool {
    point
        .as_ref()
        .is_some_and(|p| p.name == name && p.passes.fetch_add(1, Ordering::SeqCst) + 1 == p.pass)
}

/// Marks a step after which a crash (or a long stop) must leave the
/// repository valid.
pub fn crash_point(name: &str) {
    if reached(CRASH.get_or_init(|| parse("CAIRN_CRASH_AT")), name) {
        let _ = nix::sys::signal::raise(Signal::SIGKILL);
    }
    if reached(STOP.get_or_init(|| parse("CAIRN_STOP_AT")), name) {
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
    }
}
