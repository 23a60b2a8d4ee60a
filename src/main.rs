//! The `cairn` binary: parse arguments, run the command, map failures to
//! exit codes (CLI.md).

mod cli;

fn main() {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`cairn ls latest | head`) instead of panicking on a closed pipe.
    // Everything already stored stays valid, as after any kill.
    // SAFETY: restoring the default disposition, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tune_allocator();
    // CAIRN_LOG=debug logs every storage request; errors and retries are
    // shown anyway. By default only `serve` logs (requests, jobs, schedule).
    env_logger::Builder::from_env(
        env_logger::Env::new().filter_or("CAIRN_LOG", "cairn::server=info"),
    )
    // The request signer's debug lines print the storage credentials
    // (the secret key among them): a log must not hold them.
    .filter_module("reqsign", log::LevelFilter::Warn)
    .format(|out, record| {
        use std::io::Write;
        let now = jiff::Timestamp::now();
        let now = now.round(jiff::Unit::Millisecond).unwrap_or(now);
        writeln!(out, "{now} {:<5} {}", record.level(), record.args())
    })
    .init();
    std::process::exit(cli::run());
}

/// glibc's malloc raises its mmap threshold after the first large free, so
/// later pack and chunk buffers (MiBs each, freed from other threads) land in
/// per-thread arenas and stay resident after they are freed. A fixed
/// threshold keeps them in their own mappings, returned to the system on
/// free (page faults cost some CPU, less than the RSS they save). At 1 MiB
/// the backup of the bench's tree peaked at ~78 MB (151 MB with the dynamic
/// threshold; restore 177 → ~146 MB); 256 KiB, which also takes chunks and
/// compressed blobs of a quarter to one MiB out of the arenas, lowered that
/// peak by about 3 MB (CPU +2%, within noise), while small files (≤ 30 KB)
/// still come from the arenas. Arenas are capped at 8: with the backup's readers (up to
/// 16 threads) on 2 arenas, contention cost 10% of the wall time of a
/// 400k-small-file backup; 8 cost 10 MiB of peak on the tree dataset.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: plain allocator settings, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 8);
    }
}
