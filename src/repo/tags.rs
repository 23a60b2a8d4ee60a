//! Changing a snapshot's tags (`cairn tag`). A snapshot's name is the hash
//! of its content, so a new tag set is a new snapshot object: it is written
//! first, and only then is the old one removed, so a crash in between
//! leaves two copies, never none.

use super::lock::LockKind;
use super::{layout, Repository};
use crate::id::Id;
use anyhow::{anyhow, Result};

/// What to do to the tags: `set` replaces them all, then `remove` and
/// `add` apply.
#[derive(Debug, Clone, Default)]
pub struct TagChange {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagChange {
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.add.is_empty() && self.remove.is_empty()
    }

    /// The tags `tags` become (in their order, each once).
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.set.as_deref().unwrap_or(tags) {
            if !self.remove.contains(t) && !out.contains(t) {
                out.push(t.clone());
            }
        }
        // a tag both added and removed is added (said last)
        for t in &self.add {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

/// One snapshot whose tags changed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Retagged {
    pub old_id: String,
    pub new_id: String,
    pub tags: Vec<String>,
}

impl Repository {
    /// Applies `change` to the snapshots `ids`; those whose tags change are
    /// rewritten. Needs the exclusive lock (no prune may run meanwhile).
    pub fn retag(&self, ids: &[Id], change: &TagChange) -> Result<Vec<Retagged>> {
        if change.is_empty() {
            return Err(anyhow!("nothing to change: give --add, --remove or --set"));
        }
        let mut done = Vec::new();
        for id in ids {
            let mut snap = self.load_snapshot(id)?;
            let tags = change.apply(&snap.tags);
            if tags == snap.tags {
                continue;
            }
            snap.tags = tags.clone();
            let new_id = self.save_snapshot(&snap)?;
            self.ensure_lock(LockKind::Exclusive, "(replacing) a snapshot")?;
            self.storage.delete(&layout::snapshot(id))?;
            done.push(Retagged {
                old_id: id.to_hex(),
                new_id: new_id.to_hex(),
                tags,
            });
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn set_then_remove_then_add() {
        let change = TagChange {
            set: None,
            add: v(&["new", "a"]),
            remove: v(&["b"]),
        };
        assert_eq!(change.apply(&v(&["a", "b", "c"])), v(&["a", "c", "new"]));
        let change = TagChange {
            set: Some(v(&["x", "x", "y"])),
            ..Default::default()
        };
        assert_eq!(change.apply(&v(&["a"])), v(&["x", "y"]));
        let change = TagChange {
            set: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(
            change.apply(&v(&["a"])),
            Vec::<String>::new(),
            "--set '' clears"
        );
        let change = TagChange {
            add: v(&["k"]),
            remove: v(&["k"]),
            ..Default::default()
        };
        assert_eq!(change.apply(&v(&[])), v(&["k"]));
    }
}
