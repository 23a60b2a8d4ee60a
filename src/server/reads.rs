//! Read-only questions about a repository's snapshots, answered in-process
//! from the shared index cache: what changed (`diff`), where a name occurs
//! (`find`), how much data there is (`stats`). The same library calls as
//! `cairn diff`, `cairn find` and `cairn stats`.

use super::api::{
    blocking, filter_of, parse_id, repository_name, resolve_snapshot, ApiError, AppState,
    ErrorBody, QueryParams,
};
use crate::repo::browse::EntryListing;
use crate::repo::diff::{Change, DiffStats};
use crate::repo::find::{FindMemo, NamePatterns};
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::stats::{SnapshotStats, StatsMode};
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// More than this many changes or matches in one answer is cut (and said).
const DEFAULT_LIMIT: usize = 10_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The first snapshot: `latest` or an id prefix.
    from: String,
    /// The second snapshot.
    to: String,
    /// Also list entries whose metadata alone changed (`U`).
    #[serde(default)]
    metadata: bool,
    /// At most this many changes (default 10000).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct DiffChange {
    path: String,
    /// `+`, `-`, `M`, `U` or `T`, as `cairn diff`.
    modifier: String,
}

#[derive(Serialize, ToSchema)]
pub struct DiffAnswer {
    source_snapshot: String,
    target_snapshot: String,
    changes: Vec<DiffChange>,
    /// More changes than `limit`: the list is cut, the statistics are whole.
    truncated: bool,
    #[schema(value_type = Object)]
    statistics: DiffStats,
}

/// What changed between two snapshots (`cairn diff`).
#[utoipa::path(get, path = "/repositories/{name}/diff", tag = "repositories",
    params(("name" = String, Path, description = "Repository name"), DiffQuery),
    responses(
        (status = 200, description = "Changes and totals", body = DiffAnswer),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such repository or snapshot", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
pub async fn diff(
    State(state): AppState,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<DiffQuery>,
) -> Result<Json<DiffAnswer>, ApiError> {
    let any = SnapshotFilter::default();
    let from = resolve_snapshot(&state, &name, &q.from, any.clone()).await?;
    let to = resolve_snapshot(&state, &name, &q.to, any).await?;
    let (a, b) = (parse_id(&from.tree)?, parse_id(&to.tree)?);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let repos = Arc::clone(&state.repos);
    let (changes, truncated, statistics) = blocking(move || {
        let repo = repos.with_index(&name)?;
        let mut changes = Vec::new();
        let mut truncated = false;
        let stats = repo.diff(a, b, q.metadata, |path, change: Change| {
            if changes.len() < limit {
                changes.push(DiffChange {
                    path: path.to_string(),
                    modifier: change.marker().to_string(),
                });
            } else {
                truncated = true;
            }
        })?;
        Ok((changes, truncated, stats))
    })
    .await?;
    Ok(Json(DiffAnswer {
        source_snapshot: from.id,
        target_snapshot: to.id,
        changes,
        truncated,
        statistics,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    /// A name pattern (`*.conf`), or a path pattern with `/`.
    pattern: String,
    #[serde(default)]
    ignore_case: bool,
    /// Only snapshots of this host.
    host: Option<String>,
    /// Only snapshots with this tag ("a,b": both).
    tag: Option<String>,
    /// Only snapshots that include this backed-up path.
    path: Option<String>,
    /// At most this many matches in all (default 10000).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotMatches {
    snapshot: String,
    matches: Vec<EntryListing>,
}

#[derive(Serialize, ToSchema)]
pub struct FindAnswer {
    snapshots: Vec<SnapshotMatches>,
    /// More matches than `limit`: the search stopped there.
    truncated: bool,
}

/// Entries whose name (or path) matches, per snapshot (`cairn find`).
#[utoipa::path(get, path = "/repositories/{name}/find", tag = "repositories",
    params(("name" = String, Path, description = "Repository name"), FindQuery),
    responses(
        (status = 200, description = "Matches per snapshot", body = FindAnswer),
        (status = 400, description = "Bad query or pattern", body = ErrorBody),
        (status = 404, description = "No such repository", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
pub async fn find(
    State(state): AppState,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<FindQuery>,
) -> Result<Json<FindAnswer>, ApiError> {
    repository_name(&state, &name)?;
    let filter = filter_of(&q.host, &q.tag, &q.path)?;
    let patterns = NamePatterns::new(std::slice::from_ref(&q.pattern), q.ignore_case)
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let repos = Arc::clone(&state.repos);
    let answer = blocking(move || {
        let repo = repos.with_index(&name)?;
        let snapshots = repo.select_snapshots(&filter, None)?;
        let roots: Vec<_> = snapshots.iter().map(|(_, s)| s.tree).collect();
        let mut memo = FindMemo::for_roots(&repo, &roots);
        let mut answer = FindAnswer {
            snapshots: Vec::new(),
            truncated: false,
        };
        let mut found = 0;
        for (id, snap) in snapshots {
            let mut matches = repo.find_entries(snap.tree, &patterns, &mut memo)?;
            if matches.is_empty() {
                continue;
            }
            if found + matches.len() > limit {
                matches.truncate(limit - found);
                answer.truncated = true;
            }
            found += matches.len();
            answer.snapshots.push(SnapshotMatches {
                snapshot: id.to_hex(),
                matches,
            });
            if answer.truncated {
                break;
            }
        }
        Ok(answer)
    })
    .await?;
    Ok(Json(answer))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// `restore-size` (default), `files-by-contents`, `raw-data` or `blobs-per-file`.
    mode: Option<String>,
    /// Only snapshots of this host.
    host: Option<String>,
    /// Only snapshots with this tag ("a,b": both).
    tag: Option<String>,
    /// Only snapshots that include this backed-up path.
    path: Option<String>,
}

/// How much data the selected snapshots hold (`cairn stats`).
#[utoipa::path(get, path = "/repositories/{name}/stats", tag = "repositories",
    params(("name" = String, Path, description = "Repository name"), StatsQuery),
    responses(
        (status = 200, description = "restic's stats fields", body = Object),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such repository", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
pub async fn stats(
    State(state): AppState,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<StatsQuery>,
) -> Result<Json<SnapshotStats>, ApiError> {
    repository_name(&state, &name)?;
    let filter = filter_of(&q.host, &q.tag, &q.path)?;
    let mode = match &q.mode {
        Some(m) => m
            .parse::<StatsMode>()
            .map_err(|e| ApiError::bad_request(format!("mode: {e}")))?,
        None => StatsMode::RestoreSize,
    };
    let repos = Arc::clone(&state.repos);
    let stats = blocking(move || {
        let repo = repos.with_index(&name)?;
        let trees: Vec<_> = repo
            .select_snapshots(&filter, None)?
            .into_iter()
            .map(|(_, s)| s.tree)
            .collect();
        repo.stats(&trees, mode)
    })
    .await?;
    Ok(Json(stats))
}
