//! Shows a running backup's, restore's or copy's progress: a bar on a
//! terminal (stderr), JSON status lines on stdout with --json, nothing
//! otherwise (cron mails stay short). Warnings, and with `-v` each file,
//! are printed above the bar, which is redrawn below them, never torn.

use super::GlobalArgs;
use cairn::backup::progress::{FileOutcome, Notice, Progress};
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

/// Shows `progress` until the display is dropped; `unit` names what the
/// counts count ("files", "packs", "snapshots").
pub fn show<'scope>(
    scope: &'scope Scope<'scope, '_>,
    g: &GlobalArgs,
    progress: &'scope Progress,
    stop: &'scope AtomicBool,
    unit: &'static str,
) -> Display<'scope> {
    let bar = (!g.json && !g.quiet && std::io::stderr().is_terminal()).then(new_bar);
    listen(g, progress, bar.clone());
    let thread = if g.json {
        Some(scope.spawn(move || json_lines(progress, stop)))
    } else {
        bar.map(|bar| scope.spawn(move || show_bar(&bar, progress, stop, unit)))
    };
    Display { stop, thread }
}

/// Which file outcomes `-v` (1) and `-vv` (2) print, as restic's levels:
/// what was stored or written, then also what was left as it was.
fn shown_at(outcome: FileOutcome, verbose: u8) -> bool {
    match outcome {
        FileOutcome::New | FileOutcome::Modified | FileOutcome::Restored => verbose >= 1,
        FileOutcome::Unchanged | FileOutcome::Skipped => verbose >= 2,
    }
}

/// Prints the work's notices: above the bar if there is one; file lines
/// on stdout (JSON lines with --json), warnings on stderr.
fn listen(g: &GlobalArgs, progress: &Progress, bar: Option<ProgressBar>) {
    let (verbose, json) = (g.verbose, g.json);
    progress.listen(verbose > 0, move |notice| {
        let print = |line: String, to_stdout: bool| {
            let emit = || {
                if to_stdout {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
            };
            match &bar {
                Some(bar) => bar.suspend(emit),
                None => emit(),
            }
        };
        match notice {
            Notice::Warning(m) => print(format!("warning: {m}"), false),
            Notice::File(outcome, path) if shown_at(outcome, verbose) => {
                let line = if json {
                    serde_json::json!({
                        "message_type": "verbose_status",
                        "action": outcome,
                        "item": path.to_string_lossy(),
                    })
                    .to_string()
                } else {
                    let path = path.to_string_lossy();
                    let name = super::render::printable(&path);
                    format!("{:<10}{name}", format!("{outcome:?}").to_lowercase())
                };
                print(line, true);
            }
            Notice::File(..) => {}
        }
    });
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
                "totals_estimated": v.estimated,
            })
        );
    }
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn show_bar(bar: &ProgressBar, progress: &Progress, stop: &AtomicBool, unit: &str) {
    while wait(stop, Duration::from_millis(100)) {
        let v = progress.view();
        bar.set_length(v.total_bytes.max(v.bytes_done));
        bar.set_position(v.bytes_done);
        let scanning = match (v.scan_done, v.estimated) {
            (false, _) => " (counting)",
            (true, true) => " (estimated)",
            (true, false) => "",
        };
        bar.set_message(format!(
            "{}/{} {unit}{scanning}",
            v.files_done, v.total_files
        ));
    }
    bar.finish_and_clear();
}
