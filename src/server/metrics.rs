//! `/metrics` in Prometheus text format, computed from the job records and
//! the repositories' listings. Names follow Prometheus' conventions: the
//! unit last (`_bytes`, `_seconds`), `_total` only on counters.

use super::jobs::{last_successful_backup, Job, JobKind, JobState};
use super::ServerState;
use crate::repo::RepositorySummary;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// `repos`: each repository's summary, None when it could not be read.
pub fn render(state: &ServerState, repos: &[(String, Option<RepositorySummary>)]) -> String {
    let jobs = state.jobs.list(); // newest first
    let mut out = String::new();
    gauge(
        &mut out,
        "cairn_build_info",
        "Always 1; the version of the running cairn.",
        vec![(
            format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
            1.0,
        )],
    );
    fn backups<'a>(jobs: &'a [Job], name: &str) -> impl Iterator<Item = &'a Job> {
        let name = name.to_string();
        jobs.iter()
            .filter(move |j| j.kind == JobKind::Backup && j.source.as_deref() == Some(&name))
    }
    let sources: Vec<&String> = state.settings.sources.keys().collect();
    let per_source = |value: &dyn Fn(&str) -> Option<f64>| -> Vec<(String, f64)> {
        sources
            .iter()
            .filter_map(|s| Some((format!("{{source=\"{}\"}}", escape(s)), value(s)?)))
            .collect()
    };
    let last_success = |s: &str| last_successful_backup(&jobs, s);
    gauge(
        &mut out,
        "cairn_backup_last_success_timestamp_seconds",
        "When the last successful backup of the source finished (Unix time).",
        per_source(&|s| last_success(s).and_then(finished_unix)),
    );
    gauge(
        &mut out,
        "cairn_backup_last_success_duration_seconds",
        "How long the last successful backup of the source took.",
        per_source(&|s| last_success(s).and_then(|j| j.duration_seconds)),
    );
    gauge(
        &mut out,
        "cairn_backup_last_success_added_bytes",
        "Bytes of new data the last successful backup of the source added (before compression).",
        per_source(&|s| {
            last_success(s)
                .and_then(|j| j.bytes_added)
                .map(|b| b as f64)
        }),
    );
    gauge(
        &mut out,
        "cairn_backup_last_failed",
        "1 if the last finished backup of the source failed or was cancelled.",
        per_source(&|s| {
            backups(&jobs, s)
                .find(|j| !j.is_running())
                .map(|j| f64::from(u8::from(j.state != JobState::Succeeded)))
        }),
    );
    gauge(
        &mut out,
        "cairn_drill_last_success_timestamp_seconds",
        "When the last successful restore drill finished (Unix time).",
        last_success_by_name(&jobs, "drill", state.settings.drills.keys(), |j| {
            (j.kind == JobKind::Drill).then_some(j.drill.as_deref()?)
        }),
    );
    gauge(
        &mut out,
        "cairn_copy_last_success_timestamp_seconds",
        "When the last successful copy finished (Unix time).",
        last_success_by_name(&jobs, "copy", state.settings.copies.keys(), |j| {
            (j.kind == JobKind::Copy).then_some(j.copy.as_deref()?)
        }),
    );
    gauge(
        &mut out,
        "cairn_source_stale",
        "1 if the source has had no successful backup for longer than its stale_after.",
        super::stale::stale_sources(state, &jobs)
            .into_iter()
            .map(|(s, stale)| {
                (
                    format!("{{source=\"{}\"}}", escape(&s)),
                    f64::from(u8::from(stale)),
                )
            })
            .collect(),
    );
    counter(
        &mut out,
        "cairn_schedule_skipped_total",
        "Scheduled runs skipped because the source's previous job was still running.",
        sources
            .iter()
            .map(|s| {
                let n = state.skipped.get(s.as_str()).map_or(0, |c| c.load(Relaxed));
                (format!("{{source=\"{}\"}}", escape(s)), n as f64)
            })
            .collect(),
    );
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for j in &jobs {
        *counts
            .entry((j.kind.as_str(), j.state.as_str()))
            .or_default() += 1;
    }
    gauge(
        &mut out,
        "cairn_jobs",
        "Jobs in the history, by kind and state.",
        counts
            .into_iter()
            .map(|((k, s), n)| (format!("{{kind=\"{k}\",state=\"{s}\"}}"), n as f64))
            .collect(),
    );
    gauge(
        &mut out,
        "cairn_jobs_running",
        "Jobs running now.",
        vec![(String::new(), state.jobs.running_count() as f64)],
    );
    let label = |name: &str| format!("{{repository=\"{}\"}}", escape(name));
    gauge(
        &mut out,
        "cairn_repository_up",
        "1 if the repository could be opened and listed for this scrape.",
        repos
            .iter()
            .map(|(name, s)| (label(name), f64::from(u8::from(s.is_some()))))
            .collect(),
    );
    gauge(
        &mut out,
        "cairn_repository_snapshots",
        "Snapshots in the repository.",
        repos
            .iter()
            .filter_map(|(name, s)| Some((label(name), s.as_ref()?.snapshots as f64)))
            .collect(),
    );
    gauge(
        &mut out,
        "cairn_repository_stored_bytes",
        "Bytes the repository's objects take on storage.",
        repos
            .iter()
            .filter_map(|(name, s)| Some((label(name), s.as_ref()?.stored_bytes as f64)))
            .collect(),
    );
    gauge(
        &mut out,
        "cairn_repository_last_check_success",
        "1 if the last finished check job of the repository passed, 0 if it failed.",
        repos
            .iter()
            .filter_map(|(name, _)| {
                let last = jobs.iter().find(|j| {
                    j.kind == JobKind::Check && &j.repository == name && !j.is_running()
                })?;
                Some((
                    label(name),
                    f64::from(u8::from(last.state == JobState::Succeeded)),
                ))
            })
            .collect(),
    );
    out
}

fn metric(out: &mut String, kind: &str, name: &str, help: &str, samples: Vec<(String, f64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn gauge(out: &mut String, name: &str, help: &str, samples: Vec<(String, f64)>) {
    metric(out, "gauge", name, help, samples);
}

fn counter(out: &mut String, name: &str, help: &str, samples: Vec<(String, f64)>) {
    metric(out, "counter", name, help, samples);
}

/// For each configured name, when its newest successful job finished,
/// labelled `{label="name"}`; `name_of` says which name a job runs (none:
/// another kind). Jobs come newest first.
fn last_success_by_name<'a>(
    jobs: &[Job],
    label: &str,
    names: impl Iterator<Item = &'a String>,
    name_of: impl Fn(&Job) -> Option<&str>,
) -> Vec<(String, f64)> {
    names
        .filter_map(|name| {
            let last = jobs
                .iter()
                .find(|j| j.state == JobState::Succeeded && name_of(j) == Some(name.as_str()))?;
            Some((
                format!("{{{label}=\"{}\"}}", escape(name)),
                finished_unix(last)?,
            ))
        })
        .collect()
}

fn finished_unix(job: &Job) -> Option<f64> {
    Some(job.finished_at()?.as_millisecond() as f64 / 1000.0)
}

fn escape(label: &str) -> String {
    label
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}
