use super::render::{local_time, parse_time, printable};
use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::repo::browse::EntryListing;
use cairn::repo::find::{FindMemo, NamePatterns};

#[derive(clap::Args)]
pub struct FindArgs {
    /// Name patterns (`*.conf`), or patterns with `/` matched against the
    /// whole path (`/etc/**/*.conf`)
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Search only these snapshots (repeatable; default: every snapshot
    /// the --host/--tag/--path filters select)
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    snapshots: Vec<String>,
    /// Only entries modified at or after this time ("YYYY-MM-DD HH:MM:SS" or RFC 3339)
    #[arg(long, value_name = "TIME")]
    oldest: Option<String>,
    /// Only entries modified at or before this time
    #[arg(long, value_name = "TIME")]
    newest: Option<String>,
    /// Match patterns ignoring case
    #[arg(long, short = 'i')]
    ignore_case: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// restic's `find --json` element.
#[derive(serde::Serialize)]
struct SnapshotMatches {
    matches: Vec<EntryListing>,
    hits: usize,
    snapshot: String,
}

pub fn run(g: &GlobalArgs, a: &FindArgs) -> Result<i32> {
    let patterns = NamePatterns::new(&a.patterns, a.ignore_case)?;
    let oldest = a.oldest.as_deref().map(parse_time).transpose()?;
    let newest = a.newest.as_deref().map(parse_time).transpose()?;
    let filter = a.filter.filter();
    let (repo, snapshots) =
        g.open_picking(|listed| listed.named_or_selected(&a.snapshots, &filter))?;
    let roots: Vec<_> = snapshots.iter().map(|(_, s)| s.tree).collect();
    let mut memo = FindMemo::for_roots(&repo, &roots);
    let mut all = Vec::new();
    for (id, snap) in &snapshots {
        let mut matches = repo.find_entries(snap.tree, &patterns, &mut memo)?;
        matches.retain(|e| {
            let t = e.mtime_ns;
            oldest.is_none_or(|o| t >= o) && newest.is_none_or(|n| t <= n)
        });
        if matches.is_empty() {
            continue;
        }
        if g.json {
            all.push(SnapshotMatches {
                hits: matches.len(),
                matches,
                snapshot: id.to_hex(),
            });
            continue;
        }
        println!(
            "Found matching entries in snapshot {} from {}",
            id.short(),
            local_time(snap.time_ns)
        );
        for m in &matches {
            println!("{}", printable(&m.path));
        }
        println!();
    }
    if g.json {
        println!("{}", serde_json::to_string(&all)?);
    }
    Ok(0)
}
