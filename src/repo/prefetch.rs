//! Trees in bulk. A walk over a snapshot (restore's plan, `ls`, `find`)
//! loads one directory's tree at a time; with a cold cache each load is a
//! storage round trip, so a snapshot of 3,000 directories on an object
//! store 40 ms away costs two minutes of waiting. Prefetching walks the
//! same trees first, several at a time, and leaves them in the local
//! cache, where the real walk then finds them.
//!
//! A tree missing from the cache brings its whole pack: tree packs hold
//! only trees, and those of one backup are written together, so one GET
//! usually brings most of a snapshot's trees (restic caches tree packs
//! whole for the same reason). Each pack is fetched once; trees that wait
//! for a pack another worker is fetching are parked until it is in.
//!
//! It is only an optimisation: a tree that cannot be loaded is skipped
//! here and reported by the walk that needs it. A root whose every tree was
//! found is marked in the cache, and later prefetches of it (a `find` over
//! a hundred snapshots, run again) cost one cache read.

use super::Repository;
use crate::filter::{decode_blob, BlobKind};
use crate::id::Id;
use crate::tree::{Node, Tree};
use anyhow::Result;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex};

/// Workers, and so whole tree packs in memory at once.
const WORKERS: usize = 8;
/// The largest pack fetched whole. Tree packs are closed near 8 MiB; a
/// larger one (a huge directory's tree, or a hostile repository) is left to
/// the walk's own reads of single trees, so prefetching holds at most
/// `WORKERS` times this.
const WHOLE_PACK_MAX: u64 = 64 << 20;

/// What a prefetch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prefetched {
    /// Trees walked (from the cache or storage).
    pub trees: u64,
    /// Trees that could not be loaded (and their subtrees, not walked).
    pub failed: u64,
}

struct Work {
    queue: VecDeque<Id>,
    seen: HashSet<Id>,
    busy: usize,
    done: Prefetched,
    /// Trees that could not be loaded.
    failed: Vec<Id>,
    /// Packs fetched, or being fetched (with the trees waiting for them).
    packs: HashMap<Id, PackState>,
}

enum PackState {
    Fetching { waiting: Vec<Id> },
    Fetched,
}

impl Repository {
    /// Loads every tree below `roots` into the local cache, many at once.
    /// A warm cache costs one cache read per tree.
    pub fn prefetch_trees(&self, roots: &[Id]) -> Prefetched {
        self.prefetch_new_trees(roots, &mut HashSet::new())
    }

    /// As [`Self::prefetch_trees`], but trees in `seen` (and so, from an
    /// earlier call, everything below them) are left out; the trees walked
    /// are added to it. For walks over many snapshots, which share most
    /// trees.
    pub fn prefetch_new_trees(&self, roots: &[Id], seen: &mut HashSet<Id>) -> Prefetched {
        let mut seen_before = std::mem::take(seen);
        let queue: VecDeque<Id> = roots
            .iter()
            .copied()
            .filter(|r| !self.index.all_trees_cached(r).unwrap_or(false))
            .filter(|r| seen_before.insert(*r))
            .collect();
        let walked: Vec<Id> = queue.iter().copied().collect();
        let work = Mutex::new(Work {
            queue,
            seen: seen_before,
            busy: 0,
            done: Prefetched::default(),
            failed: Vec::new(),
            packs: HashMap::new(),
        });
        let changed = Condvar::new();
        std::thread::scope(|scope| {
            for _ in 0..WORKERS {
                scope.spawn(|| self.prefetch_worker(&work, &changed));
            }
        });
        let mut work = work.into_inner().unwrap_or_else(|e| e.into_inner());
        // A tree that failed is forgotten, so that a later call (which
        // reaches it from another root) tries it again rather than marking
        // that root complete.
        for id in &work.failed {
            work.seen.remove(id);
        }
        if work.failed.is_empty() {
            let _ = self.index.mark_all_trees_cached(&walked);
        }
        *seen = work.seen;
        work.done
    }

    fn prefetch_worker(&self, work: &Mutex<Work>, changed: &Condvar) {
        let lock = || work.lock().unwrap_or_else(|e| e.into_inner());
        let mut w = lock();
        loop {
            let Some(id) = w.queue.pop_front() else {
                if w.busy == 0 {
                    changed.notify_all();
                    return;
                }
                w = changed.wait(w).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            w.busy += 1;
            drop(w);
            let step = self.prefetch_step(&id);
            w = lock();
            w.busy -= 1;
            match step {
                Step::Loaded(subtrees) => {
                    w.done.trees += 1;
                    for subtree in subtrees {
                        if w.seen.insert(subtree) {
                            w.queue.push_back(subtree);
                        }
                    }
                }
                Step::InPack(pack) => match w.packs.get_mut(&pack) {
                    Some(PackState::Fetching { waiting }) => waiting.push(id),
                    // fetched, yet the tree is not in the cache: the pack
                    // lacks it; a read of the blob alone says why
                    Some(PackState::Fetched) => match self.load_tree(&id) {
                        Ok(tree) => {
                            w.done.trees += 1;
                            for subtree in subtrees_of(&tree) {
                                if w.seen.insert(subtree) {
                                    w.queue.push_back(subtree);
                                }
                            }
                        }
                        Err(_) => {
                            w.done.failed += 1;
                            w.failed.push(id);
                        }
                    },
                    None => {
                        w.packs
                            .insert(pack, PackState::Fetching { waiting: vec![id] });
                        w.busy += 1;
                        drop(w);
                        // failures are the walk's to report
                        let _ = self.cache_tree_pack(&pack);
                        w = lock();
                        w.busy -= 1;
                        if let Some(PackState::Fetching { waiting }) =
                            w.packs.insert(pack, PackState::Fetched)
                        {
                            w.queue.extend(waiting);
                        }
                    }
                },
                Step::Failed => {
                    w.done.failed += 1;
                    w.failed.push(id);
                }
            }
            changed.notify_all();
        }
    }

    /// A tree from the cache, or where to fetch it.
    fn prefetch_step(&self, id: &Id) -> Step {
        match self.index.tree(id) {
            Ok(Some(plain)) => match Tree::decode(&plain) {
                Ok(tree) => Step::Loaded(subtrees_of(&tree)),
                Err(_) => Step::Failed,
            },
            Ok(None) => match self.index.lookup_any(BlobKind::Tree, id) {
                Ok(Some(loc)) => Step::InPack(loc.pack),
                _ => Step::Failed,
            },
            Err(_) => Step::Failed,
        }
    }

    /// Fetches tree pack `pack` whole and puts every tree it holds in the
    /// cache (each checked against its id as it is opened).
    fn cache_tree_pack(&self, pack: &Id) -> Result<()> {
        let bytes = self
            .storage
            .read(&super::layout::pack(pack), WHOLE_PACK_MAX)?;
        for b in self.pack_contents(pack, &bytes)? {
            if b.kind != BlobKind::Tree {
                continue;
            }
            let start = b.offset as usize;
            let sealed = &bytes[start..start + b.length as usize];
            let plain = decode_blob(
                &self.keys,
                b.kind,
                &b.id,
                b.raw_length,
                b.compression,
                sealed,
            )?;
            self.index.put_tree(&b.id, &plain)?;
        }
        Ok(())
    }
}

enum Step {
    /// In the cache: its subtrees.
    Loaded(Vec<Id>),
    /// Not cached: it lies in this pack.
    InPack(Id),
    Failed,
}

fn subtrees_of(tree: &Tree) -> Vec<Id> {
    tree.nodes.iter().filter_map(Node::subtree).collect()
}
