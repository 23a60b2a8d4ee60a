use super::render::{local_time, rfc3339};
use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::id::Id;
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
    let repo = g.open()?;
    let filter = a.filter.filter();
    let mut list: Vec<(Id, Snapshot)> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    if let Some(n) = a.latest {
        let mut seen: std::collections::HashMap<(String, Vec<String>), usize> = Default::default();
        let mut keep = vec![false; list.len()];
        for (i, (_, s)) in list.iter().enumerate().rev() {
            let count = seen
                .entry((s.hostname.clone(), s.paths.clone()))
                .or_default();
            if *count < n {
                *count += 1;
                keep[i] = true;
            }
        }
        let mut k = keep.into_iter();
        list.retain(|_| k.next().unwrap_or(false));
    }
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

pub fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    let m = &s.summary;
    serde_json::json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": rfc3339(s.time_ns),
        "tree": s.tree.to_hex(),
        "paths": s.paths,
        "hostname": s.hostname,
        "username": s.username,
        "uid": s.uid,
        "gid": s.gid,
        "tags": s.tags,
        "parent": s.parent.map(|p| p.to_hex()),
        "excludes": s.excludes,
        "program_version": s.program_version,
        "summary": {
            "backup_start": rfc3339(m.start_ns),
            "backup_end": rfc3339(m.end_ns),
            "files_new": m.files_new,
            "files_changed": m.files_changed,
            "files_unmodified": m.files_unmodified,
            "dirs": m.dirs,
            "data_blobs_added": m.blobs_added,
            "data_added": m.data_added,
            "data_added_packed": m.data_added_packed,
            "total_bytes_processed": m.bytes_processed,
            "errors": m.errors,
        },
    })
}
