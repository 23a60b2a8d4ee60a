use super::{password, GlobalArgs};
use anyhow::Result;
use cairn::chunker::ChunkerParams;
use cairn::repo::InitOptions;

#[derive(clap::Args)]
pub struct InitArgs {
    /// Average chunk size in bytes (min = avg/2, max = avg*8); default 1 MiB
    #[arg(long)]
    chunk_size_avg: Option<u32>,
    /// Default zstd level for backups (0 = no compression). 2 stores the
    /// bench tree 2.5% larger than 3 for 12% less CPU; 3+ for slow uplinks
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression: i32,
}

pub fn run(g: &GlobalArgs, a: &InitArgs) -> Result<i32> {
    let storage = g.storage()?;
    storage.probe_container()?;
    let chunker = match a.chunk_size_avg {
        Some(avg) => ChunkerParams::from_average(avg)?,
        None => ChunkerParams::default(),
    };
    let password = password::read(g, true)?;
    let opts = InitOptions {
        chunker,
        compression_level: a.compression,
        ..Default::default()
    };
    let config = cairn::repo::init(&storage, password.as_bytes(), &opts)?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "initialized", "id": config.id, "repository": storage.location()})
        );
    } else if !g.quiet {
        println!(
            "created cairn repository {} at {}",
            config.id.short(),
            storage.location()
        );
        println!("keep the password safe: without it the data cannot be recovered");
    }
    Ok(0)
}
