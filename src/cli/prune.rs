use super::render::bytes;
use super::GlobalArgs;
use anyhow::{anyhow, Result};
use cairn::backup::progress::Progress;
use cairn::repo::lock::LockKind;
use cairn::repo::Repository;
use cairn::retention::prune::{PruneOptions, PruneResult, PruneStats};
use std::sync::atomic::AtomicBool;

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Unused space tolerated afterwards, in percent of the repository
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    max_unused: String,
    /// Repack at most this much per run (e.g. 500M, 10G)
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
    /// How long unused packs stay condemned before a later prune deletes
    /// them (and how old a pack no index lists must be), by the storage's
    /// clock; running backups can still use them meanwhile (e.g. 1d, 12h, 0s)
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = super::parse_duration)]
    keep_delete: std::time::Duration,
}

impl PruneArgs {
    pub fn options(&self) -> Result<PruneOptions> {
        let max_unused_percent = cairn::retention::prune::parse_max_unused(&self.max_unused)
            .map_err(|e| anyhow!("--max-unused {e}"))?;
        let max_repack_bytes = self
            .max_repack_size
            .as_deref()
            .map(cairn::size::parse_size)
            .transpose()?;
        Ok(PruneOptions {
            max_unused_percent,
            max_repack_bytes,
            keep_delete_ns: i64::try_from(self.keep_delete.as_nanos())
                .expect("parse_duration bounds it"),
        })
    }
}

#[derive(clap::Args)]
pub struct PruneCommand {
    #[command(flatten)]
    args: PruneArgs,
    /// Show what would be done, change nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
}

pub fn run(g: &GlobalArgs, a: &PruneCommand) -> Result<i32> {
    let repo = g.open_locked(LockKind::Exclusive, "prune")?;
    prune(g, &repo, &a.args, a.dry_run)?;
    Ok(0)
}

/// Plans, shows the plan, and (unless a dry run) executes and reports.
/// Also the tail of `forget --prune`.
pub fn prune(g: &GlobalArgs, repo: &Repository, args: &PruneArgs, dry_run: bool) -> Result<()> {
    let progress = Progress::default();
    let stop_display = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        let _display = super::progress::show(scope, g, &progress, &stop_display, "packs");
        cairn::ops::prune(
            repo,
            &args.options()?,
            dry_run,
            |plan| print_plan(g, plan, dry_run),
            &progress,
        )
    })?;
    if let Some(r) = &report.result {
        print_result(g, r);
    }
    Ok(())
}

fn print_plan(g: &GlobalArgs, s: &PruneStats, dry_run: bool) {
    if g.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "prune_plan", "dry_run": dry_run, "plan": s})
        );
        return;
    }
    if g.quiet {
        return;
    }
    println!(
        "{} snapshots use {} of {} blobs ({} of {} in {} packs)",
        s.snapshots,
        s.blobs_used,
        s.blobs,
        bytes(s.bytes_used),
        bytes(s.bytes),
        s.packs
    );
    let would = if dry_run { "would " } else { "" };
    println!(
        "{would}condemn {} unused packs ({}): deleted by a later prune once --keep-delete has passed",
        s.packs_unused,
        bytes(s.bytes_unused_packs),
    );
    println!(
        "{would}delete {} condemned packs whose grace is over ({}) and {} old packs no index lists ({})",
        s.packs_expired,
        bytes(s.bytes_expired),
        s.packs_unindexed,
        bytes(s.bytes_unindexed)
    );
    if s.packs_waiting + s.packs_unindexed_young + s.packs_revived > 0 {
        println!(
            "{} condemned packs ({}) wait for their grace; {} packs no index lists are too young \
             to delete; {} condemned packs are needed again and {}revived",
            s.packs_waiting,
            bytes(s.bytes_waiting),
            s.packs_unindexed_young,
            s.packs_revived,
            if dry_run { "would be " } else { "" }
        );
    }
    println!(
        "{}repack {} packs ({}, of which {} is still used)",
        if dry_run { "would " } else { "" },
        s.packs_repack,
        bytes(s.bytes_repack),
        bytes(s.bytes_repack_used)
    );
    println!(
        "frees {} now and about {} later; {} unused stays in kept packs",
        bytes(s.bytes_freed),
        bytes(s.bytes_freed_later),
        bytes(s.bytes_unused_left)
    );
}

fn print_result(g: &GlobalArgs, r: &PruneResult) {
    if g.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "prune_result", "result": r})
        );
    } else if !g.quiet {
        println!(
            "wrote {} packs ({}) and {} index files; condemned {} packs; deleted {} packs and {} \
             old index files",
            r.packs_written,
            bytes(r.bytes_written),
            r.index_files_written,
            r.packs_condemned,
            r.packs_deleted,
            r.index_files_deleted
        );
        if r.packs_spared > 0 {
            println!(
                "kept {} packs a backup or snapshot written during this prune needs",
                r.packs_spared
            );
        }
    }
}
