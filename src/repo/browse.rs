//! Entries of a snapshot as listings show them (`ls --json`, the REST API).

use super::{PathTarget, Repository};
use crate::id::Id;
use crate::time_text::rfc3339;
use crate::tree::{Node, NodeKind};
use anyhow::Result;

/// One entry of a snapshot: restic's `ls --json` field names.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct EntryListing {
    pub name: String,
    /// file, dir, symlink, blockdev, chardev, fifo or socket.
    #[serde(rename = "type")]
    pub kind: String,
    /// Absolute, inside the snapshot.
    pub path: String,
    pub size: u64,
    pub mode: u32,
    /// `drwxr-xr-x` style.
    pub permissions: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    /// RFC 3339.
    pub mtime: String,
    pub ctime: String,
    pub inode: u64,
    pub links: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// Always "node" (restic's marker for entries in a JSON listing).
    pub struct_type: String,
    /// `mtime` as a number, for filters.
    #[serde(skip)]
    pub mtime_ns: i64,
}

impl EntryListing {
    pub fn new(node: &Node, path: &str) -> EntryListing {
        EntryListing {
            name: node.name_lossy(),
            kind: node.kind.type_name().to_string(),
            path: path.to_string(),
            size: node.size,
            mode: node.mode,
            permissions: mode_string(node),
            uid: node.uid,
            gid: node.gid,
            user: node.user.clone(),
            group: node.group.clone(),
            mtime: rfc3339(node.mtime_ns),
            ctime: rfc3339(node.ctime_ns),
            inode: node.inode,
            links: node.links,
            link_target: match &node.kind {
                NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
                _ => None,
            },
            struct_type: "node".to_string(),
            mtime_ns: node.mtime_ns,
        }
    }
}

/// `drwxr-xr-x` style.
pub fn mode_string(node: &Node) -> String {
    let mut s = String::from(node.kind.type_char());
    for shift in [6, 3, 0] {
        let bits = (node.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

impl Repository {
    /// What `path` of the snapshot tree `root` holds: a directory's
    /// entries, or the one entry a path to anything else names.
    pub fn list_path(&self, root: Id, path: &str) -> Result<Vec<EntryListing>> {
        let base = format!("/{}", path.trim_matches('/'));
        let dir = base.trim_end_matches('/');
        Ok(match self.resolve_path(root, &base)? {
            PathTarget::Dir { tree, .. } => self
                .load_tree(&tree)?
                .nodes
                .iter()
                .map(|n| EntryListing::new(n, &format!("{dir}/{}", n.name_lossy())))
                .collect(),
            PathTarget::Entry(node) => vec![EntryListing::new(&node, &base)],
        })
    }
}
