use super::render::{bytes, message};
use super::{FilterArgs, FromRepoArgs, GlobalArgs};
use anyhow::Result;
use cairn::backup::progress::Progress;
use cairn::copy::{CopyOptions, CopyReport};
use std::sync::atomic::AtomicBool;

#[derive(clap::Args)]
pub struct CopyArgs {
    /// Snapshots of the source to copy (ids, prefixes or `latest`); default:
    /// every snapshot the --host/--tag/--path filters select
    snapshots: Vec<String>,
    #[command(flatten)]
    from: FromRepoArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: &CopyArgs) -> Result<i32> {
    let src = a.from.open_without_index(g)?;
    let dst = g.open_without_index()?;
    cairn::copy::refuse_same(&src, &dst)?;
    let src = src.load_index(&g.cache())?;
    let dst = dst.load_index(&g.cache())?;
    let opts = CopyOptions {
        snapshots: a.snapshots.clone(),
        filter: a.filter.filter(),
    };
    let interrupted = super::interrupt_flag()?;
    let progress = Progress::default();
    let stop_display = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        let _display = super::progress::show(scope, g, &progress, &stop_display, "snapshots");
        cairn::copy::copy(&src, &dst, &opts, &interrupted, &progress)
    })?;
    render(g, &report);
    Ok(0)
}

fn render(g: &GlobalArgs, r: &CopyReport) {
    if g.json {
        println!("{}", message("summary", r));
        return;
    }
    if g.quiet {
        return;
    }
    for c in &r.copied {
        println!(
            "snapshot {} of {} ({}) copied as {}",
            c.source.short(),
            cairn::time_text::rfc3339(c.time_ns),
            c.hostname,
            c.destination.short()
        );
    }
    println!(
        "{} snapshots copied, {} already there; {} blobs ({}) stored in {} packs ({})",
        r.copied.len(),
        r.already_present.len(),
        r.blobs_copied,
        bytes(r.bytes_copied),
        r.packs_written,
        bytes(r.bytes_uploaded)
    );
    if !r.ids_shared && !r.copied.is_empty() {
        println!(
            "note: the two repositories name blobs differently, so copies deduplicate only \
             against each other, not against the destination's own backups; a destination \
             made with `cairn init --from-repo SOURCE --copy-chunker-params` shares them"
        );
    }
}
