use super::render::local_time;
use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::id::Id;
use cairn::repo::snapshots::SnapshotListing;
use cairn::tree::snapshot::Snapshot;

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the latest N snapshots of each host and path set
    #[arg(long)]
    latest: Option<usize>,
}

pub fn run(g: &GlobalArgs, a: &SnapshotsArgs) -> Result<i32> {
    // listing needs the key, not the index
    let repo = g.open_without_index()?;
    let list = repo.select_snapshots(&a.filter.filter(), a.latest)?;
    if g.json {
        let arr: Vec<serde_json::Value> = list.iter().map(|(id, s)| snapshot_json(id, s)).collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(0);
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:<16}  paths",
        "ID", "Time", "Host", "Tags"
    );
    for (id, s) in &list {
        println!(
            "{:<8}  {:<19}  {:<16}  {:<16}  {}",
            id.short(),
            local_time(s.time_ns),
            s.hostname,
            s.tags.join(","),
            s.paths.join(" ")
        );
    }
    if !g.quiet {
        println!("{} snapshots", list.len());
    }
    Ok(0)
}

/// The JSON of one snapshot, as listings print it.
pub fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    serde_json::to_value(SnapshotListing::new(id, s)).expect("plain data")
}
