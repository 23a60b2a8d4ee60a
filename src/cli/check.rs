use super::GlobalArgs;
use anyhow::{anyhow, Result};
use cairn::backup::progress::Progress;
use cairn::check::{check_with_progress, ReadData};
use std::sync::atomic::AtomicBool;

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
    let progress = Progress::default();
    let stop_display = AtomicBool::new(false);
    let r = std::thread::scope(|scope| {
        let _display = super::progress::show(scope, g, &progress, &stop_display, "packs");
        check_with_progress(&repo, read, &progress)
    })?;
    if g.json {
        #[derive(serde::Serialize)]
        struct Summary<'a> {
            clean: bool,
            #[serde(flatten)]
            report: &'a cairn::check::CheckReport,
        }
        let summary = Summary {
            clean: r.is_clean(),
            report: &r,
        };
        println!("{}", super::render::message("summary", &summary));
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
