//! Reading file-system entries into tree nodes (metadata only; content is
//! chunked by the backup).

use crate::tree::{Node, NodeKind, Xattr};
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// uid/gid → name lookups, cached (NSS lookups are slow).
#[derive(Default)]
pub struct OwnerNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl OwnerNames {
    pub fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

pub fn ns(secs: i64, nanos: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// A node with the given kind and extended attributes; everything else
/// comes from `meta` (an `lstat`).
pub fn node_from_metadata(
    name: Vec<u8>,
    meta: &Metadata,
    kind: NodeKind,
    xattrs: Vec<Xattr>,
    owners: &mut OwnerNames,
) -> Node {
    Node {
        name,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: owners.user(meta.uid()),
        group: owners.group(meta.gid()),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        size: if matches!(kind, NodeKind::File { .. }) {
            meta.size()
        } else {
            0
        },
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        xattrs,
        kind,
    }
}

/// Extended attributes of the entry itself (not a symlink's target). Failures
/// (unsupported file system, no permission) yield none.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok().flatten()?;
            Some(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The kind of a special (non-file, non-dir) entry, with what it carries.
pub fn special_kind(path: &Path, meta: &Metadata) -> std::io::Result<Option<NodeKind>> {
    let ft = meta.file_type();
    Ok(Some(if ft.is_symlink() {
        NodeKind::Symlink {
            target: std::fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
        }
    } else if ft.is_block_device() {
        NodeKind::BlockDevice { rdev: meta.rdev() }
    } else if ft.is_char_device() {
        NodeKind::CharDevice { rdev: meta.rdev() }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        return Ok(None);
    }))
}
