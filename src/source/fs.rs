//! Reading file-system entries into tree nodes (metadata only; content is
//! chunked by the backup).

use super::stat::{EntryType, Stat};
use crate::tree::{Node, NodeKind, Xattr};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// uid/gid → name lookups, cached (NSS lookups are slow).
#[derive(Default)]
pub struct OwnerNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl OwnerNames {
    /// Makes `out` the name of user `uid` ("" if it has none), keeping its
    /// allocation when it already is.
    pub fn write_user(&mut self, uid: u32, out: &mut String) {
        let name = self.users.entry(uid).or_insert_with(|| {
            let user = nix::unistd::User::from_uid(uid.into());
            user.ok().flatten().map(|u| u.name).unwrap_or_default()
        });
        assign(out, name);
    }

    /// Makes `out` the name of group `gid`, as `write_user` does.
    pub fn write_group(&mut self, gid: u32, out: &mut String) {
        let name = self.groups.entry(gid).or_insert_with(|| {
            let group = nix::unistd::Group::from_gid(gid.into());
            group.ok().flatten().map(|g| g.name).unwrap_or_default()
        });
        assign(out, name);
    }
}

fn assign(out: &mut String, value: &str) {
    if out != value {
        out.clear();
        out.push_str(value);
    }
}

/// A node with the given kind and extended attributes; everything else
/// comes from `stat` (an `lstat`). `previous`, the parent snapshot's node
/// for the entry, lends its owner names: they rarely change, and not
/// allocating them again per file is measurable on an unchanged tree.
pub fn node_from_stat(
    name: Vec<u8>,
    stat: &Stat,
    kind: NodeKind,
    xattrs: Vec<Xattr>,
    owners: &mut OwnerNames,
    previous: Option<Node>,
) -> Node {
    let (mut user, mut group) = previous.map(|p| (p.user, p.group)).unwrap_or_default();
    owners.write_user(stat.uid, &mut user);
    owners.write_group(stat.gid, &mut group);
    Node {
        name,
        mode: stat.permissions,
        uid: stat.uid,
        gid: stat.gid,
        user,
        group,
        mtime_ns: stat.mtime_ns,
        ctime_ns: stat.ctime_ns,
        size: if matches!(kind, NodeKind::File { .. }) {
            stat.size
        } else {
            0
        },
        inode: stat.inode,
        device: stat.device,
        links: stat.links,
        xattrs,
        kind,
    }
}

/// Extended attributes of the entry itself (not a symlink's target). Failures
/// (unsupported file system, no permission) yield none.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    match xattr::list(path) {
        Ok(names) => collect_xattrs(names, |name| xattr::get(path, name)),
        Err(_) => Vec::new(),
    }
}

/// `read_xattrs` of a file already open: no path to look up again, which
/// was a tenth of the system time of a backup of many small files.
pub fn read_xattrs_of(file: &std::fs::File) -> Vec<Xattr> {
    use xattr::FileExt;
    match file.list_xattr() {
        Ok(names) => collect_xattrs(names, |name| file.get_xattr(name)),
        Err(_) => Vec::new(),
    }
}

/// The attributes `names` with their values, sorted by name; one that
/// vanished or cannot be read is left out.
fn collect_xattrs(
    names: xattr::XAttrs,
    get: impl Fn(&std::ffi::OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> Vec<Xattr> {
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = get(&name).ok().flatten()?;
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
pub fn special_kind(path: &Path, stat: &Stat) -> std::io::Result<Option<NodeKind>> {
    Ok(Some(match stat.kind {
        EntryType::Symlink => NodeKind::Symlink {
            target: std::fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
        },
        EntryType::BlockDevice => NodeKind::BlockDevice { rdev: stat.rdev },
        EntryType::CharDevice => NodeKind::CharDevice { rdev: stat.rdev },
        EntryType::Fifo => NodeKind::Fifo,
        EntryType::Socket => NodeKind::Socket,
        EntryType::File | EntryType::Dir | EntryType::Other => return Ok(None),
    }))
}
