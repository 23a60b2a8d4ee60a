//! Trees (one blob per directory, nodes sorted by name) and snapshots.

pub mod snapshot;

use crate::error::{FormatError, FormatResult};
use crate::id::Id;
use crate::wire;
use serde::{Deserialize, Serialize};

/// What a node is, with what only that kind carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file: its content as an ordered list of data blob ids.
    File {
        content: Vec<Id>,
    },
    Dir {
        subtree: Id,
    },
    /// Target as raw bytes (it may not be valid UTF-8, and may dangle).
    Symlink {
        target: Vec<u8>,
    },
    BlockDevice {
        rdev: u64,
    },
    CharDevice {
        rdev: u64,
    },
    Fifo,
    Socket,
}

impl NodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::File { .. } => "file",
            NodeKind::Dir { .. } => "dir",
            NodeKind::Symlink { .. } => "symlink",
            NodeKind::BlockDevice { .. } => "blockdev",
            NodeKind::CharDevice { .. } => "chardev",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
        }
    }

    /// The letter `ls -l` shows for this kind.
    pub fn type_char(&self) -> char {
        match self {
            NodeKind::File { .. } => '-',
            NodeKind::Dir { .. } => 'd',
            NodeKind::Symlink { .. } => 'l',
            NodeKind::BlockDevice { .. } => 'b',
            NodeKind::CharDevice { .. } => 'c',
            NodeKind::Fifo => 'p',
            NodeKind::Socket => 's',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// One path component, raw bytes (non-UTF-8 names survive).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits with setuid/setgid/sticky (the low 12 bits of st_mode).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime_ns: i64,
    // No atime: backing up reads files and so changes it, which would make
    // every tree differ from its parent's. Restore sets atime = mtime.
    pub ctime_ns: i64,
    /// Content size for files; 0 otherwise.
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    /// Hard link count at backup time; >1 lets restore rebuild link groups.
    pub links: u64,
    pub xattrs: Vec<Xattr>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The tree of a directory's entries; None for anything else.
    pub fn subtree(&self) -> Option<Id> {
        match self.kind {
            NodeKind::Dir { subtree } => Some(subtree),
            _ => None,
        }
    }
}

/// Whether `name` is a single safe path component. Anything else in a tree is
/// refused: a hostile repository must not make restore write outside its target.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// How deep a snapshot's directories may nest. A backup reads directories
/// by absolute path, which the kernel limits to 4096 bytes, so no backup
/// nests deeper than 2048 levels. A deeper tree comes from a damaged or
/// hostile repository, and the walks over trees (which recurse) refuse it
/// rather than exhaust their stack.
pub const MAX_DEPTH: usize = 2048;

/// The nesting depth of a snapshot path (`/a/b` is 2): names hold no `/`.
pub fn depth_of(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and validates: names are safe components, strictly sorted.
    pub fn decode(plain: &[u8]) -> FormatResult<Tree> {
        const WHAT: &str = "tree";
        let tree: Tree = wire::decode(WHAT, plain)?;
        for (i, node) in tree.nodes.iter().enumerate() {
            if !is_valid_name(&node.name) {
                return Err(FormatError::Malformed {
                    what: WHAT,
                    detail: format!("unsafe entry name {:?}", node.name_lossy()),
                });
            }
            if i > 0 && tree.nodes[i - 1].name >= node.name {
                return Err(FormatError::Malformed {
                    what: WHAT,
                    detail: format!(
                        "entries not sorted or duplicated at {:?}",
                        node.name_lossy()
                    ),
                });
            }
        }
        Ok(tree)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::Fifo,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            ctime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            xattrs: vec![],
        }
    }

    #[test]
    fn hostile_names_and_order_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            let t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?} accepted");
        }
        let unsorted = Tree {
            nodes: vec![node(b"b"), node(b"a")],
        };
        assert!(Tree::decode(&unsorted.encode()).is_err());
        let ok = Tree {
            nodes: vec![node(b"a"), node(b"b\xff")],
        };
        assert_eq!(Tree::decode(&ok.encode()).unwrap(), ok);
    }
}
