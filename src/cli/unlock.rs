use super::GlobalArgs;
use anyhow::Result;
use cairn::repo::lock::remove_locks;

#[derive(clap::Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no cairn process uses the repository)
    #[arg(long)]
    remove_all: bool,
}

pub fn run(g: &GlobalArgs, a: &UnlockArgs) -> Result<i32> {
    let repo = g.open()?;
    let removed = remove_locks(&repo.storage, &repo.keys, a.remove_all)?;
    if g.json {
        let ids: Vec<String> = removed.iter().map(|l| l.id.to_hex()).collect();
        println!(
            "{}",
            serde_json::json!({"message_type": "unlock", "removed": ids})
        );
    } else if !g.quiet {
        for l in &removed {
            println!("removed {}", l.describe());
        }
        println!("removed {} locks", removed.len());
    }
    Ok(0)
}
