use super::GlobalArgs;
use anyhow::Result;
use cairn::check::repair::repair_index;
use cairn::repo::lock::LockKind;

#[derive(clap::Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own headers
    Index,
}

pub fn run(g: &GlobalArgs, a: &RepairCommand) -> Result<i32> {
    match a {
        RepairCommand::Index => {
            let repo = g.open_locked(LockKind::Exclusive, "repair index")?;
            let r = repair_index(&repo)?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"message_type": "repair_index", "report": r})
                );
            } else if !g.quiet {
                for (pack, why) in &r.unreadable {
                    eprintln!("warning: {pack} left out of the index: {why}");
                }
                println!(
                    "indexed {} blobs in {} packs; wrote {} index files, replaced {}",
                    r.blobs, r.packs, r.rewrite.index_files_written, r.rewrite.index_files_deleted
                );
            }
            Ok(if r.unreadable.is_empty() { 0 } else { 3 })
        }
    }
}
