use super::render::{bytes, message, printable};
use super::GlobalArgs;
use anyhow::Result;
use cairn::repo::diff::DiffStats;
use cairn::repo::snapshots::SnapshotFilter;

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The first snapshot: id, unique prefix or `latest`
    from: String,
    /// The second snapshot
    to: String,
    /// Also list entries whose metadata alone changed (U)
    #[arg(long)]
    metadata: bool,
}

/// restic's `statistics` message.
#[derive(serde::Serialize)]
struct Statistics<'a> {
    source_snapshot: String,
    target_snapshot: String,
    #[serde(flatten)]
    stats: &'a DiffStats,
}

pub fn run(g: &GlobalArgs, a: &DiffArgs) -> Result<i32> {
    let any = SnapshotFilter::default();
    let (repo, ((from_id, from), (to_id, to))) =
        g.open_picking(|listed| Ok((listed.find(&a.from, &any)?, listed.find(&a.to, &any)?)))?;
    if !g.json && !g.quiet {
        println!(
            "comparing snapshot {} to {}:\n",
            from_id.short(),
            to_id.short()
        );
    }
    let stats = repo.diff(from.tree, to.tree, a.metadata, |path, change| {
        if g.json {
            let line = serde_json::json!({
                "message_type": "change",
                "path": path,
                "modifier": change.marker(),
            });
            println!("{line}");
        } else if !g.quiet {
            println!("{:<5}{}", change.marker(), printable(path));
        }
    })?;
    if g.json {
        let totals = Statistics {
            source_snapshot: from_id.to_hex(),
            target_snapshot: to_id.to_hex(),
            stats: &stats,
        };
        println!("{}", message("statistics", &totals));
    } else if !g.quiet {
        let (add, rem) = (&stats.added, &stats.removed);
        println!();
        println!(
            "Files:   {:>6} new, {:>6} removed, {:>6} changed",
            add.files, rem.files, stats.changed_files
        );
        println!("Dirs:    {:>6} new, {:>6} removed", add.dirs, rem.dirs);
        println!("Others:  {:>6} new, {:>6} removed", add.others, rem.others);
        println!("Added:   {}", bytes(add.bytes));
        println!("Removed: {}", bytes(rem.bytes));
    }
    Ok(0)
}
