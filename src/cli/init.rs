use super::{password, FromRepoArgs, GlobalArgs};
use anyhow::{anyhow, Result};
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
    /// Chunk and name data as the --from-repo repository does, so that
    /// `cairn copy` between the two deduplicates (encryption keys stay this
    /// repository's own)
    #[arg(long, requires = "from_repo", conflicts_with = "chunk_size_avg")]
    copy_chunker_params: bool,
    #[command(flatten)]
    from: FromRepoArgs,
}

pub fn run(g: &GlobalArgs, a: &InitArgs) -> Result<i32> {
    let storage = g.storage()?;
    storage.probe_container()?;
    let mut opts = InitOptions {
        chunker: match a.chunk_size_avg {
            Some(avg) => ChunkerParams::from_average(avg)?,
            None => ChunkerParams::default(),
        },
        compression_level: a.compression,
        ..Default::default()
    };
    if a.from.is_given() && !a.copy_chunker_params {
        return Err(anyhow!(
            "--from-repo is only used with --copy-chunker-params here (`cairn copy` takes the \
             source of a copy)"
        ));
    }
    if a.copy_chunker_params {
        let source = a.from.open_without_index(g)?;
        opts.chunker = source.config.chunker;
        opts.ids_of = Some(source.keys.clone());
    }
    let password = password::read(g, true)?;
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
