use super::render::bytes;
use super::GlobalArgs;
use anyhow::{anyhow, Result};
use cairn::repo::caches::{list_caches, remove_old_caches};
use cairn::repo::CacheLocation;

#[derive(clap::Args)]
pub struct CacheArgs {
    /// Remove caches not used for --max-age days (never one in use)
    #[arg(long)]
    cleanup: bool,
    /// How many days unused make a cache old
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    max_age: u64,
}

pub fn run(g: &GlobalArgs, a: &CacheArgs) -> Result<i32> {
    if g.no_cache {
        return Err(anyhow!(
            "--no-cache: there is no cache directory to look at"
        ));
    }
    let base = CacheLocation::base_dir(g.cache_dir.as_deref());
    if a.cleanup {
        let removed = remove_old_caches(&base, a.max_age)?;
        if g.json {
            println!("{}", serde_json::to_string(&removed)?);
        } else if !g.quiet {
            for c in &removed {
                println!(
                    "removed {} ({}, unused for {} days)",
                    c.path.display(),
                    bytes(c.bytes),
                    c.days_unused
                );
            }
            println!("{} caches removed", removed.len());
        }
        return Ok(0);
    }
    let caches = list_caches(&base)?;
    if g.json {
        println!("{}", serde_json::to_string(&caches)?);
        return Ok(0);
    }
    println!("caches in {}:", base.display());
    for c in &caches {
        println!(
            "  {}  {:>10}  last used {} ({} days){}",
            &c.repository_id[..8],
            bytes(c.bytes),
            c.last_used,
            c.days_unused,
            if c.in_use { ", in use" } else { "" }
        );
    }
    Ok(0)
}
