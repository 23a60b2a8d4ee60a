//! Shows a running backup's or restore's progress: a bar on a terminal
//! (stderr), JSON status lines on stdout with --json, nothing otherwise
//! (cron mails stay short).

use super::GlobalArgs;
use cairn::backup::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

/// Stops the display when dropped.
pub struct Display<'scope> {
    stop: &'scope AtomicBool,
    thread: Option<ScopedJoinHandle<'scope, ()>>,
}

impl Display<'_> {
    /// Whether progress is shown at all (a bar on a terminal, or JSON lines).
    pub fn is_shown(&self) -> bool {
        self.thread.is_some()
    }
}

impl Drop for Display<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn show<'scope>(
    scope: &'scope Scope<'scope, '_>,
    g: &GlobalArgs,
    progress: &'scope Progress,
    stop: &'scope AtomicBool,
) -> Display<'scope> {
    let thread = if g.json {
        Some(scope.spawn(move || json_lines(progress, stop)))
    } else if !g.quiet && std::io::stderr().is_terminal() {
        Some(scope.spawn(move || bar(progress, stop)))
    } else {
        None
    };
    Display { stop, thread }
}

/// Sleeps `period` in small steps; false once `stop` is set.
fn wait(stop: &AtomicBool, period: Duration) -> bool {
    let until = Instant::now() + period;
    while Instant::now() < until {
        if stop.load(Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !stop.load(Relaxed)
}

fn json_lines(progress: &Progress, stop: &AtomicBool) {
    let start = Instant::now();
    while wait(stop, Duration::from_secs(1)) {
        let v = progress.view();
        println!(
            "{}",
            serde_json::json!({
                "message_type": "status",
                "seconds_elapsed": start.elapsed().as_secs(),
                "percent_done": v.fraction(),
                "total_files": v.total_files,
                "files_done": v.files_done,
                "total_bytes": v.total_bytes,
                "bytes_done": v.bytes_done,
                "scan_done": v.scan_done,
            })
        );
    }
}

fn bar(progress: &Progress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    while wait(stop, Duration::from_millis(100)) {
        let v = progress.view();
        bar.set_length(v.total_bytes.max(v.bytes_done));
        bar.set_position(v.bytes_done);
        let scanning = if v.scan_done { "" } else { " (counting)" };
        bar.set_message(format!(
            "{}/{} files{scanning}",
            v.files_done, v.total_files
        ));
    }
    bar.finish_and_clear();
}
