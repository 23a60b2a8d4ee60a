//! Restore planning: which entries of a snapshot land where. Only the trees
//! along the selected paths are loaded.

use crate::filter::{BlobKind, Compression};
use crate::id::Id;
use crate::repo::{PathTarget, Repository};
use crate::source::exclude::Patterns;
use crate::tree::{Node, NodeKind};
use anyhow::{anyhow, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// `SNAPSHOT:SUBPATH`: the contents of SUBPATH land directly in the target.
    pub subpath: Option<String>,
    pub selection: Selection,
    pub dry_run: bool,
    /// What happens to files that already exist in the target.
    pub overwrite: Overwrite,
    /// Remove what the restored directories hold that the snapshot does not.
    pub delete: bool,
    /// Ownership, special files and xattrs: which of them are restored.
    pub metadata: super::MetadataChoices,
}

/// `--overwrite`: what a restore does to a file that already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Write it again.
    Always,
    /// Write it unless its content already equals the snapshot's (read and
    /// hashed at the snapshot's chunk boundaries). The result is the same
    /// as `Always`, for less writing.
    #[default]
    IfChanged,
    /// Write it only if the snapshot's version is newer (mtime).
    IfNewer,
    /// Leave it (and its metadata) alone.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Overwrite> {
        Ok(match s {
            "always" => Overwrite::Always,
            "if-changed" => Overwrite::IfChanged,
            "if-newer" => Overwrite::IfNewer,
            "never" => Overwrite::Never,
            _ => {
                return Err(anyhow!(
                    "--overwrite {s:?}: use always, if-changed, if-newer or never"
                ))
            }
        })
    }
}

/// `--include` / `--exclude`: absolute paths or glob patterns of backed-up
/// paths. A selected directory brings everything below it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
}

pub struct FilePlan {
    /// The directory it lands in (see [`Plan::file_path`]).
    pub dir: Option<usize>,
    /// Its content list is moved out into `content`.
    pub node: Node,
    pub content: Vec<Id>,
    /// Where each content blob is stored (None: missing from the index,
    /// reported when the content is read).
    pub stored: Vec<Option<StoredBlob>>,
    /// Restored as a hard link to this earlier file of the same link group.
    pub link_to: Option<PathBuf>,
}

/// Where a content blob is, as the index says; the pack is a number in
/// [`Plan::packs`] (a plan of many small files holds one per file, so it is
/// kept small).
#[derive(Debug, Clone, Copy)]
pub struct StoredBlob {
    pub pack: u32,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
    pub compression: Compression,
}

impl StoredBlob {
    /// The bytes it takes in its pack.
    pub fn extent(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + u64::from(self.length)
    }
}

impl FilePlan {
    /// Plain length of each content blob (0 for one missing from the index).
    pub fn lengths(&self) -> impl Iterator<Item = u32> + '_ {
        self.stored.iter().map(|s| s.map_or(0, |s| s.raw_length))
    }
}

pub struct Plan {
    /// The restore target: where top-level entries land.
    pub target: PathBuf,
    /// The packs the files' content is in, numbered as [`StoredBlob::pack`].
    pub packs: Vec<Id>,
    /// Pre-order: parents before children.
    pub dirs: Vec<(PathBuf, Node)>,
    pub files: Vec<FilePlan>,
    pub others: Vec<(PathBuf, Node)>,
    pub overwrite: Overwrite,
    /// A directory was restored (not one file), so the target itself holds
    /// what the snapshot's directory held.
    pub root_is_dir: bool,
}

impl Plan {
    /// Where `f` is restored. Built on demand: a path held per file was the
    /// largest part of the plan of a whole snapshot (~20 MB of the ~60 MB
    /// for the bench's 95k files).
    pub fn file_path(&self, f: &FilePlan) -> PathBuf {
        file_path_in(&self.target, &self.dirs, f)
    }
}

fn file_path_in(target: &Path, dirs: &[(PathBuf, Node)], f: &FilePlan) -> PathBuf {
    let dir = f.dir.map_or(target, |d| &dirs[d].0);
    dir.join(std::ffi::OsStr::from_bytes(&f.node.name))
}

struct Walker<'a> {
    repo: &'a Repository,
    includes: Option<Patterns>,
    excludes: Patterns,
    plan: Plan,
    link_groups: HashMap<(u64, u64), PathBuf>,
}

pub fn build(repo: &Repository, root: Id, opts: &RestoreOptions) -> Result<Plan> {
    let sel = &opts.selection;
    let trimmed: Vec<String> = sel
        .includes
        .iter()
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    let includes = if trimmed.is_empty() {
        None
    } else {
        Some(Patterns::new(&trimmed)?)
    };
    let mut w = Walker {
        repo,
        includes,
        excludes: Patterns::new(&sel.excludes)?,
        plan: Plan {
            target: opts.target.clone(),
            packs: Vec::new(),
            dirs: Vec::new(),
            files: Vec::new(),
            others: Vec::new(),
            overwrite: opts.overwrite,
            root_is_dir: true,
        },
        link_groups: HashMap::new(),
    };
    let base = opts
        .subpath
        .as_deref()
        .map(|s| format!("/{}", s.trim_matches('/')))
        .unwrap_or_default();
    match repo.resolve_path(root, &base)? {
        PathTarget::Dir { tree, .. } => {
            // every tree below is walked unless includes narrow it: fetch
            // them many at a time first (a cold cache would otherwise wait
            // one round trip per directory)
            if w.includes.is_none() {
                repo.prefetch_trees(&[tree]);
            }
            w.walk(tree, &base, &opts.target, None, false)?
        }
        PathTarget::Entry(node) => {
            w.plan.root_is_dir = false;
            let dest = opts.target.join(std::ffi::OsStr::from_bytes(&node.name));
            w.add(node, &base, dest, None, true)?;
        }
    }
    let mut plan = w.plan;
    locate_content(repo, &mut plan)?;
    Ok(plan)
}

/// Looks up where every file's content is (many lookups at once: a plan of
/// a whole snapshot has one or more per file), and checks that the stored
/// lengths add up to each file's size.
fn locate_content(repo: &Repository, plan: &mut Plan) -> Result<()> {
    let packs = std::sync::RwLock::new(HashMap::<Id, u32>::new());
    let number = |pack: Id| -> u32 {
        if let Some(&n) = packs.read().expect("packs lock").get(&pack) {
            return n;
        }
        let mut packs = packs.write().expect("packs lock");
        let n = packs.len() as u32;
        *packs.entry(pack).or_insert(n)
    };
    let dirs = &plan.dirs;
    let target = &plan.target;
    plan.files
        .par_chunks_mut(FILES_LOOKED_UP_TOGETHER)
        .try_for_each(|files| -> Result<()> {
            let ids: Vec<Id> = files
                .iter()
                .flat_map(|f| f.content.iter().copied())
                .collect();
            let mut found = repo
                .index
                .lookup_any_many(BlobKind::Data, &ids)?
                .into_iter();
            for f in files {
                f.stored = found
                    .by_ref()
                    .take(f.content.len())
                    .map(|location| {
                        location.map(|loc| StoredBlob {
                            pack: number(loc.pack),
                            offset: loc.blob.offset,
                            length: loc.blob.length,
                            raw_length: loc.blob.raw_length,
                            compression: loc.blob.compression,
                        })
                    })
                    .collect();
                let total: u64 = f.lengths().map(u64::from).sum();
                if total != f.node.size && f.stored.iter().all(Option::is_some) {
                    return Err(anyhow!(
                        "{}: stored content is {total} bytes but the node says {}",
                        file_path_in(target, dirs, f).display(),
                        f.node.size
                    ));
                }
            }
            Ok(())
        })?;
    let mut numbered: Vec<(Id, u32)> = packs
        .into_inner()
        .expect("packs lock")
        .into_iter()
        .collect();
    numbered.sort_by_key(|&(_, n)| n);
    plan.packs = numbered.into_iter().map(|(id, _)| id).collect();
    Ok(())
}

/// Files whose content [`locate_content`] looks up in one batch.
const FILES_LOOKED_UP_TOGETHER: usize = 256;

fn has_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

impl Walker<'_> {
    /// Whether `abs` is selected by the includes (or there are none).
    fn included(&self, abs: &str, is_dir: bool) -> bool {
        self.includes
            .as_ref()
            .is_none_or(|inc| inc.matches(Path::new(abs), is_dir))
    }

    /// Whether a directory that is not itself included may hold included
    /// entries: a glob or a bare name can match anywhere, an absolute path
    /// only below its own ancestors.
    fn may_contain_included(&self, abs: &str) -> bool {
        self.includes.as_ref().is_none_or(|inc| {
            inc.patterns().iter().any(|p| {
                let p = p.trim_end_matches('/');
                // a pattern not anchored at the root matches at any depth
                !p.starts_with('!')
                    && (has_glob(p)
                        || !p.starts_with('/')
                        || (p.starts_with(abs) && p.as_bytes().get(abs.len()) == Some(&b'/')))
            })
        })
    }

    /// Walks a tree whose entries land under `dest`, which is `dirs[dir]`
    /// (`None`: the target). `selected`: an ancestor was included, so
    /// everything below is.
    fn walk(
        &mut self,
        tree: Id,
        abs_dir: &str,
        dest: &Path,
        dir: Option<usize>,
        selected: bool,
    ) -> Result<()> {
        crate::repo::check_depth(abs_dir)?;
        let tree = self.repo.load_tree(&tree)?;
        for node in tree.nodes {
            let abs = format!("{abs_dir}/{}", node.name_lossy());
            let path = dest.join(std::ffi::OsStr::from_bytes(&node.name));
            let is_dir = matches!(node.kind, NodeKind::Dir { .. });
            if self.excludes.matches(Path::new(&abs), is_dir) {
                continue;
            }
            let selected_here = selected || self.included(&abs, is_dir);
            if selected_here {
                self.add(node, &abs, path, dir, true)?;
            } else if let NodeKind::Dir { subtree } = node.kind {
                if self.may_contain_included(&abs) {
                    let before =
                        self.plan.dirs.len() + self.plan.files.len() + self.plan.others.len();
                    let dir_index = self.plan.dirs.len();
                    self.plan.dirs.push((path.clone(), node));
                    self.walk(subtree, &abs, &path, Some(dir_index), false)?;
                    let after =
                        self.plan.dirs.len() + self.plan.files.len() + self.plan.others.len();
                    if after == before + 1 {
                        // nothing selected inside: do not create it
                        self.plan.dirs.remove(dir_index);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds the entry `node`, restored at `path` in `dirs[dir]`.
    fn add(
        &mut self,
        mut node: Node,
        abs: &str,
        path: PathBuf,
        dir: Option<usize>,
        selected: bool,
    ) -> Result<()> {
        match &mut node.kind {
            NodeKind::Dir { subtree } => {
                let subtree = *subtree;
                self.plan.dirs.push((path.clone(), node));
                let index = self.plan.dirs.len() - 1;
                self.walk(subtree, abs, &path, Some(index), selected)
            }
            NodeKind::File { content } => {
                let content = std::mem::take(content);
                let link_to = if node.links > 1 {
                    let key = (node.device, node.inode);
                    match self.link_groups.get(&key) {
                        Some(first) => Some(first.clone()),
                        None => {
                            self.link_groups.insert(key, path.clone());
                            None
                        }
                    }
                } else {
                    None
                };
                self.plan.files.push(FilePlan {
                    dir,
                    node,
                    content,
                    stored: Vec::new(),
                    link_to,
                });
                Ok(())
            }
            _ => {
                self.plan.others.push((path, node));
                Ok(())
            }
        }
    }
}
