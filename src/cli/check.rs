use super::GlobalArgs;
use anyhow::{anyhow, Result};
use cairn::check::{check, ReadData};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Read every pack and verify every blob
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read part of the data: N/M (part N of M, by pack id) or P% (random)
    #[arg(long)]
    read_data_subset: Option<String>,
}

pub fn run(g: &GlobalArgs, a: &CheckArgs) -> Result<i32> {
    let repo = g.open()?;
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => {
            ReadData::parse_subset(s).map_err(|e| anyhow::anyhow!("--read-data-subset {e}"))?
        }
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let r = check(&repo, read)?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "clean": r.is_clean(),
                "errors": r.errors,
                "notes": r.notes,
                "index_files": r.index_files,
                "packs": r.packs,
                "packs_read": r.packs_read,
                "blobs_read": r.blobs_read,
                "snapshots": r.snapshots,
                "trees": r.trees,
            })
        );
    } else if !g.quiet {
        println!(
            "checked {} index files, {} packs ({} read whole, {} blobs verified), {} snapshots, {} trees",
            r.index_files, r.packs, r.packs_read, r.blobs_read, r.snapshots, r.trees
        );
        for n in &r.notes {
            println!("note: {n}");
        }
    }
    if r.is_clean() {
        if !g.quiet && !g.json {
            println!("no errors were found");
        }
        return Ok(0);
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    Err(anyhow!(
        "the repository has {} problems (listed above)",
        r.errors.len()
    ))
}
