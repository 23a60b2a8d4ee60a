use super::GlobalArgs;
use anyhow::Result;
use cairn::server::{serve, ServeOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The settings file (TOML): repositories, sources, schedules, retention
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// ADDR:PORT to listen on (default: server.listen, else 127.0.0.1:8411)
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

pub fn run(_g: &GlobalArgs, a: &ServeArgs) -> Result<i32> {
    serve(&ServeOptions {
        config: a.config.clone(),
        listen: a.listen.clone(),
    })?;
    Ok(0)
}
