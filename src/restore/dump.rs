//! `dump`: one file's content as a stream, or a directory as a tar stream.

use crate::filter::BlobKind;
use crate::id::Id;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Reads a file's content blob by blob (memory: one blob).
pub struct ContentReader<'a> {
    repo: &'a Repository,
    ids: std::slice::Iter<'a, Id>,
    current: Vec<u8>,
    pos: usize,
}

impl<'a> ContentReader<'a> {
    pub fn new(repo: &'a Repository, ids: &'a [Id]) -> Self {
        ContentReader {
            repo,
            ids: ids.iter(),
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            self.current = self
                .repo
                .read_blob(BlobKind::Data, id)
                .map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A file's content for a tar entry whose header already says its size.
/// Content that runs longer than that is refused: its extra bytes would be
/// read as further entries of the archive (a hostile tree could inject any
/// file). Content that runs short is refused too, as a truncated entry.
struct ExactLength<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(
                    "the stored content is longer than the size its entry records: \
                     the snapshot is damaged or hostile, so the archive stops here",
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "the stored content ends {} bytes short of the size its entry records: \
                 the snapshot is damaged",
                self.left
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

pub fn dump_file(repo: &Repository, content: &[Id], out: &mut impl Write) -> Result<()> {
    std::io::copy(&mut ContentReader::new(repo, content), out)?;
    out.flush()?;
    Ok(())
}

/// Writes the directory `tree` as a tar stream, entries named below `prefix`.
pub fn dump_tar(repo: &Repository, tree: Id, prefix: &Path, out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    add_tree(repo, &mut tar, tree, prefix)?;
    tar.into_inner()?.flush()?;
    Ok(())
}

fn add_tree<W: Write>(
    repo: &Repository,
    tar: &mut tar::Builder<W>,
    tree: Id,
    dir: &Path,
) -> Result<()> {
    let depth = dir
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    crate::repo::check_level(depth, || dir.to_string_lossy().into_owned())?;
    for node in repo.load_tree(&tree)?.nodes {
        let path: PathBuf = dir.join(std::ffi::OsStr::from_bytes(&node.name));
        let mut h = header_for(&node);
        match &node.kind {
            NodeKind::File { content } => {
                h.set_size(node.size);
                let content = ExactLength {
                    inner: ContentReader::new(repo, content),
                    left: node.size,
                };
                tar.append_data(&mut h, &path, content)
                    .with_context(|| format!("adding {} to the tar stream", path.display()))?;
            }
            NodeKind::Dir { subtree } => {
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, &path, std::io::empty())?;
                add_tree(repo, tar, *subtree, &path)?;
            }
            NodeKind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut h, &path, std::ffi::OsStr::from_bytes(target))?;
            }
            NodeKind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                tar.append_data(&mut h, &path, std::io::empty())?;
            }
            NodeKind::BlockDevice { rdev } | NodeKind::CharDevice { rdev } => {
                let block = matches!(node.kind, NodeKind::BlockDevice { .. });
                h.set_entry_type(if block {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Char
                });
                h.set_device_major(nix::sys::stat::major(*rdev) as u32)?;
                h.set_device_minor(nix::sys::stat::minor(*rdev) as u32)?;
                tar.append_data(&mut h, &path, std::io::empty())?;
            }
            NodeKind::Socket => {}
        }
    }
    Ok(())
}

fn header_for(node: &Node) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(node.mode);
    h.set_uid(u64::from(node.uid));
    h.set_gid(u64::from(node.gid));
    let _ = h.set_username(&node.user);
    let _ = h.set_groupname(&node.group);
    h.set_mtime(node.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    h.set_size(0);
    h
}
