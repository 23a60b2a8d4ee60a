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
                for (pack, why) in &r.kept_from_old_index {
                    eprintln!(
                        "warning: {pack} kept as the old index listed it, since the storage \
                         failed to deliver its header ({why}); run `cairn repair index` again \
                         once it answers"
                    );
                }
                println!(
                    "indexed {} blobs in {} packs; wrote {} index files, replaced {}",
                    r.blobs, r.packs, r.rewrite.index_files_written, r.rewrite.index_files_deleted
                );
            }
            // 3: the index was rebuilt, but not from every pack
            let partial = !r.unreadable.is_empty() || !r.kept_from_old_index.is_empty();
            Ok(if partial { 3 } else { 0 })
        }
    }
}
