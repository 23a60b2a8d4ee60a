//! `/metrics` in Prometheus text format, computed from the job records.

use super::jobs::{Job, JobKind, JobState};
use super::ServerState;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

pub fn render(state: &ServerState) -> String {
    let jobs = state.jobs.list(); // newest first
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
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
    let last_success =
        |s: &str| -> Option<&Job> { backups(&jobs, s).find(|j| j.state == JobState::Succeeded) };
    gauge(
        "cairn_backup_last_success_timestamp_seconds",
        "When the last successful backup of the source finished (Unix time).",
        per_source(&|s| last_success(s).and_then(finished_unix)),
    );
    gauge(
        "cairn_backup_last_success_duration_seconds",
        "How long the last successful backup of the source took.",
        per_source(&|s| last_success(s).and_then(|j| j.duration_seconds)),
    );
    gauge(
        "cairn_backup_last_success_bytes_added",
        "Bytes of new data the last successful backup of the source added (before compression).",
        per_source(&|s| {
            last_success(s)
                .and_then(|j| j.bytes_added)
                .map(|b| b as f64)
        }),
    );
    gauge(
        "cairn_backup_last_failed",
        "1 if the last finished backup of the source failed or was cancelled.",
        per_source(&|s| {
            backups(&jobs, s)
                .find(|j| !j.is_running())
                .map(|j| f64::from(u8::from(j.state != JobState::Succeeded)))
        }),
    );
    gauge(
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
        "cairn_jobs",
        "Jobs in the history, by kind and state.",
        counts
            .into_iter()
            .map(|((k, s), n)| (format!("{{kind=\"{k}\",state=\"{s}\"}}"), n as f64))
            .collect(),
    );
    gauge(
        "cairn_jobs_running",
        "Jobs running now.",
        vec![(String::new(), state.jobs.running_count() as f64)],
    );
    out
}

fn finished_unix(job: &Job) -> Option<f64> {
    let t: jiff::Timestamp = job.finished.as_deref()?.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1000.0)
}

fn escape(label: &str) -> String {
    label
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}
