use super::{FilterArgs, GlobalArgs};
use anyhow::{anyhow, Result};
use cairn::repo::{PathTarget, Repository};
use cairn::restore::dump::{dump_file, dump_tar};
use cairn::tree::snapshot::Snapshot;
use cairn::tree::NodeKind;
use std::io::Write;
use std::path::Path;

#[derive(clap::Args)]
pub struct DumpArgs {
    /// Snapshot id, unique prefix, or `latest`
    snapshot: String,
    /// Path inside the snapshot: a file is written as is, a directory as tar
    path: String,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: &DumpArgs) -> Result<i32> {
    let (repo, (_, snap)) =
        g.open_picking(|listed| listed.find(&a.snapshot, &a.filter.filter()))?;
    let stdout = std::io::stdout();
    write_dump(&repo, &snap, &a.path, &mut stdout.lock())?;
    Ok(0)
}

/// Writes `path` of the snapshot: a file as is, a directory as tar.
pub fn write_dump(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    out: &mut impl Write,
) -> Result<()> {
    let path = format!("/{}", path.trim_matches('/'));
    match repo.resolve_path(snap.tree, &path)? {
        PathTarget::Entry(node) => match &node.kind {
            NodeKind::File { content } => dump_file(repo, content, out)?,
            other => {
                return Err(anyhow!(
                    "{path} is a {}: dump writes files and directories",
                    other.type_name()
                ))
            }
        },
        PathTarget::Dir { tree, node } => {
            let name = node.map(|n| n.name_lossy()).unwrap_or_default();
            dump_tar(repo, tree, Path::new(&name), out)?;
        }
    }
    Ok(())
}
