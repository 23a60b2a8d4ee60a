//! `forget`: group the snapshots, apply the keep policy to each group, and
//! delete the snapshot objects the policy (or the user, by id) gives up.
//! Plan first, so `--dry-run` and the API show exactly what would happen.

use super::policy::{apply, Candidate, Decision, KeepPolicy};
use crate::id::Id;
use crate::repo::lock::LockKind;
use crate::repo::snapshots::{SnapshotFilter, SnapshotListing};
use crate::repo::{layout, now_ns, Repository};
use crate::tree::snapshot::Snapshot;
use anyhow::{anyhow, Result};
use jiff::tz::TimeZone;
use std::collections::BTreeMap;

/// What snapshots are grouped by before the policy is applied (`--group-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = anyhow::Error;

    /// `host,paths,tags` in any combination; empty for one group.
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(anyhow!(
                        "--group-by: unknown field {other:?} (use host, paths and/or tags)"
                    ))
                }
            }
        }
        Ok(g)
    }
}

/// The values a group shares; `None` for a field not grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub host: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl GroupBy {
    fn key(&self, s: &Snapshot) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            host: self.host.then(|| s.hostname.clone()),
            paths: self.paths.then(|| sorted(&s.paths)),
            tags: self.tags.then(|| sorted(&s.tags)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    pub policy: KeepPolicy,
    pub group_by: Option<GroupBy>,
    /// Snapshots named on the command line: the only ones considered.
    pub remove: Vec<Id>,
    /// Only snapshots matching this take part.
    pub filter: SnapshotFilter,
}

pub struct ForgetGroup {
    pub key: GroupKey,
    /// Newest first, each with its snapshot.
    pub decisions: Vec<(Decision, Snapshot)>,
}

/// One group's decisions as `forget --json` and the server's jobs report
/// them (restic's shape).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForgetGroupReport {
    pub host: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub keep: Vec<SnapshotListing>,
    pub remove: Vec<SnapshotListing>,
    pub reasons: Vec<KeepReason>,
}

/// Why a snapshot is kept: the rules it matched.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeepReason {
    pub snapshot: SnapshotListing,
    pub matches: Vec<String>,
}

pub struct ForgetPlan {
    pub groups: Vec<ForgetGroup>,
    /// Named explicitly with no policy: removed.
    pub explicit: Vec<(Id, Snapshot)>,
}

impl ForgetPlan {
    /// The decisions, group by group (see [`ForgetGroupReport`]).
    pub fn report(&self) -> Vec<ForgetGroupReport> {
        self.groups
            .iter()
            .map(|g| {
                let listed = |keep: bool| -> Vec<SnapshotListing> {
                    g.decisions
                        .iter()
                        .filter(|(d, _)| d.keep == keep)
                        .map(|(d, s)| SnapshotListing::new(&d.id, s))
                        .collect()
                };
                ForgetGroupReport {
                    host: g.key.host.clone(),
                    paths: g.key.paths.clone(),
                    tags: g.key.tags.clone(),
                    keep: listed(true),
                    remove: listed(false),
                    reasons: g
                        .decisions
                        .iter()
                        .filter(|(d, _)| d.keep)
                        .map(|(d, s)| KeepReason {
                            snapshot: SnapshotListing::new(&d.id, s),
                            matches: d.matches.clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Every snapshot to delete, once.
    pub fn to_remove(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self.explicit.iter().map(|(id, _)| *id).collect();
        for g in &self.groups {
            ids.extend(
                g.decisions
                    .iter()
                    .filter(|(d, _)| !d.keep)
                    .map(|(d, _)| d.id),
            );
        }
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Decides, touching nothing. As in restic, snapshots named by id narrow
/// the set the policy sees; named without a policy, they are removed.
pub fn plan_forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetPlan> {
    let candidates: Vec<(Id, Snapshot)> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(id, s)| {
            opts.filter.matches(s) && (opts.remove.is_empty() || opts.remove.contains(id))
        })
        .collect();
    if opts.policy.is_empty() {
        let explicit = if opts.remove.is_empty() {
            Vec::new()
        } else {
            candidates
        };
        return Ok(ForgetPlan {
            groups: Vec::new(),
            explicit,
        });
    }
    let group_by = opts.group_by.unwrap_or_default();
    let mut by_key: BTreeMap<GroupKey, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in candidates {
        by_key.entry(group_by.key(&s)).or_default().push((id, s));
    }
    let tz = TimeZone::system();
    let now = now_ns();
    let mut groups = Vec::new();
    for (key, members) in by_key {
        let policy_view: Vec<Candidate> = members
            .iter()
            .map(|(id, s)| Candidate {
                id: *id,
                time_ns: s.time_ns,
                tags: s.tags.clone(),
            })
            .collect();
        let snapshots: BTreeMap<Id, Snapshot> = members.into_iter().collect();
        let decisions = apply(&policy_view, &opts.policy, now, &tz)
            .into_iter()
            .map(|d| {
                let s = snapshots[&d.id].clone();
                (d, s)
            })
            .collect();
        groups.push(ForgetGroup { key, decisions });
    }
    Ok(ForgetPlan {
        groups,
        explicit: Vec::new(),
    })
}

/// Deletes the snapshots the plan gives up. Needs the exclusive lock.
pub fn execute_forget(repo: &Repository, plan: &ForgetPlan) -> Result<usize> {
    let ids = plan.to_remove();
    if ids.is_empty() {
        return Ok(0);
    }
    repo.ensure_lock(LockKind::Exclusive, "(deleting) snapshots")?;
    for id in &ids {
        repo.storage.delete(&layout::snapshot(id))?;
    }
    Ok(ids.len())
}
