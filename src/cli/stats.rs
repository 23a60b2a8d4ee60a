use super::render::{bytes, message};
use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::repo::stats::StatsMode;

#[derive(clap::Args)]
pub struct StatsArgs {
    /// Snapshots to count (ids, prefixes or `latest`); default: every
    /// snapshot the --host/--tag/--path filters select
    snapshots: Vec<String>,
    /// restore-size (what restores would write), files-by-contents (distinct
    /// files), raw-data (blobs as stored, each once), blobs-per-file (file
    /// data blobs, each once)
    #[arg(long, default_value = "restore-size", value_name = "MODE")]
    mode: StatsMode,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: &StatsArgs) -> Result<i32> {
    let repo = g.open()?;
    let filter = a.filter.filter();
    let trees: Vec<cairn::Id> = repo
        .named_or_selected(&a.snapshots, &filter)?
        .into_iter()
        .map(|(_, s)| s.tree)
        .collect();
    let s = repo.stats(&trees, a.mode)?;
    if g.json {
        println!("{}", message("stats", &s));
        return Ok(0);
    }
    println!("Snapshots processed:  {}", s.snapshots_count);
    println!("   Total File Count:  {}", s.total_file_count);
    if let Some(n) = s.total_blob_count {
        println!("   Total Blob Count:  {n}");
    }
    println!("         Total Size:  {}", bytes(s.total_size));
    if let Some(raw) = s.total_uncompressed_size {
        println!("  Uncompressed Size:  {}", bytes(raw));
    }
    if let Some(r) = s.compression_ratio {
        println!("  Compression Ratio:  {r:.2}x");
    }
    Ok(0)
}
