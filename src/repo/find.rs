//! Finding entries by name across snapshots (`cairn find`). A pattern
//! without `/` is matched against each entry's name, one with `/` against
//! its whole path (`*` within a component, `**` across). Snapshots share
//! most of their trees, so a subtree found to hold no match is skipped in
//! every later snapshot: 100 snapshots cost little more than one.

use super::browse::EntryListing;
use super::Repository;
use crate::id::Id;
use crate::tree::{Node, NodeKind};
use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::HashSet;

/// Compiled `find` patterns.
pub struct NamePatterns {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl NamePatterns {
    pub fn new(patterns: &[String], ignore_case: bool) -> Result<NamePatterns> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(ignore_case)
                .build()
                .with_context(|| format!("invalid pattern {p:?}"))?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        Ok(NamePatterns {
            by_name: by_name.build()?,
            by_path: by_path.build()?,
        })
    }

    fn matches(&self, node: &Node, path: &str) -> bool {
        self.by_name.is_match(node.name_lossy()) || self.by_path.is_match(path)
    }

    /// Whether results depend on where a subtree lies (path patterns):
    /// then nothing can be reused by tree id.
    fn by_path_only(&self) -> bool {
        !self.by_path.is_empty()
    }
}

/// What a search remembers between snapshots: the trees that hold no
/// match (32 bytes each, however large the trees).
#[derive(Default)]
pub struct FindMemo {
    empty_trees: HashSet<Id>,
    /// Trees already prefetched for an earlier snapshot of this search.
    prefetched: HashSet<Id>,
}

impl FindMemo {
    /// A memo for a search of the snapshots at `roots`, whose trees are
    /// fetched first, all together: from a distant store, a search taking
    /// one snapshot after another would wait for each one's trees in turn.
    pub fn for_roots(repo: &Repository, roots: &[Id]) -> FindMemo {
        let mut memo = FindMemo::default();
        repo.prefetch_new_trees(roots, &mut memo.prefetched);
        memo
    }
}

impl Repository {
    /// The entries below `root` that `patterns` match, in path order.
    pub fn find_entries(
        &self,
        root: Id,
        patterns: &NamePatterns,
        memo: &mut FindMemo,
    ) -> Result<Vec<EntryListing>> {
        let mut out = Vec::new();
        self.prefetch_new_trees(&[root], &mut memo.prefetched);
        // whether a tree holds a match depends on where it lies only for
        // path patterns
        let reuse = !patterns.by_path_only();
        self.search(root, "", patterns, reuse.then_some(memo), &mut out)?;
        Ok(out)
    }

    /// Adds the matches below `tree` (at `dir`) to `out`; whether any.
    fn search(
        &self,
        tree: Id,
        dir: &str,
        patterns: &NamePatterns,
        mut memo: Option<&mut FindMemo>,
        out: &mut Vec<EntryListing>,
    ) -> Result<bool> {
        if memo.as_ref().is_some_and(|m| m.empty_trees.contains(&tree)) {
            return Ok(false);
        }
        super::check_depth(dir)?;
        let mut any = false;
        for node in self.load_tree(&tree)?.nodes {
            let path = format!("{dir}/{}", node.name_lossy());
            if patterns.matches(&node, &path) {
                out.push(EntryListing::new(&node, &path));
                any = true;
            }
            if let NodeKind::Dir { subtree } = node.kind {
                any |= self.search(subtree, &path, patterns, memo.as_deref_mut(), out)?;
            }
        }
        if let (false, Some(m)) = (any, memo) {
            m.empty_trees.insert(tree);
        }
        Ok(any)
    }
}
