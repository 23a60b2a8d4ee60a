use super::render::{local_time, mode_string, node_json, printable};
use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::id::Id;
use cairn::repo::{PathTarget, Repository};
use cairn::tree::{Node, NodeKind};

#[derive(clap::Args)]
pub struct LsArgs {
    /// Snapshot id, unique prefix, or `latest`
    snapshot: String,
    /// A path inside the snapshot (default: everything)
    path: Option<String>,
    /// List directories below PATH recursively
    #[arg(long, short = 'R')]
    recursive: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: &LsArgs) -> Result<i32> {
    let (repo, (_, snap)) =
        g.open_picking(|listed| listed.find(&a.snapshot, &a.filter.filter()))?;
    let base = a
        .path
        .as_deref()
        .map(|p| format!("/{}", p.trim_matches('/')))
        .unwrap_or_default();
    let mut out = Lister {
        repo: &repo,
        json: g.json,
        recursive: a.recursive || a.path.is_none(),
    };
    match repo.resolve_path(snap.tree, &base)? {
        PathTarget::Dir { tree, node } => {
            if out.recursive {
                repo.prefetch_trees(&[tree]);
            }
            if let Some(node) = node {
                out.print(&node, &base);
            }
            out.list(tree, &base)?;
        }
        PathTarget::Entry(node) => out.print(&node, &base),
    }
    Ok(0)
}

struct Lister<'a> {
    repo: &'a Repository,
    json: bool,
    recursive: bool,
}

impl Lister<'_> {
    fn list(&mut self, tree: Id, dir: &str) -> Result<()> {
        cairn::repo::check_depth(dir)?;
        for node in self.repo.load_tree(&tree)?.nodes {
            let path = format!("{dir}/{}", node.name_lossy());
            self.print(&node, &path);
            if let (true, NodeKind::Dir { subtree }) = (self.recursive, &node.kind) {
                self.list(*subtree, &path)?;
            }
        }
        Ok(())
    }

    fn print(&self, node: &Node, path: &str) {
        if self.json {
            println!("{}", node_json(node, path));
            return;
        }
        let link = match &node.kind {
            NodeKind::Symlink { target } => {
                format!(" -> {}", printable(&String::from_utf8_lossy(target)))
            }
            _ => String::new(),
        };
        println!(
            "{} {:>8} {:>8} {:>12} {} {}{}",
            mode_string(node),
            if node.user.is_empty() {
                node.uid.to_string()
            } else {
                printable(&node.user).into_owned()
            },
            if node.group.is_empty() {
                node.gid.to_string()
            } else {
                printable(&node.group).into_owned()
            },
            node.size,
            local_time(node.mtime_ns),
            printable(path),
            link
        );
    }
}
