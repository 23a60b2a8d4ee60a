use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::mount::MountOptions;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct MountArgs {
    /// An empty directory to mount the repository on (read-only)
    mountpoint: PathBuf,
    /// Let other users in (non-root users need user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    allow_other: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: &MountArgs) -> Result<i32> {
    let repo = g.open()?;
    let stop = super::interrupt_flag()?;
    let opts = MountOptions {
        filter: a.filter.filter(),
        allow_other: a.allow_other,
    };
    if !g.quiet && !g.json {
        eprintln!(
            "serving the repository at {} until Ctrl-C (or `umount {}`)",
            a.mountpoint.display(),
            a.mountpoint.display()
        );
    }
    cairn::mount::mount(repo, &a.mountpoint, &opts, &stop)?;
    Ok(0)
}
