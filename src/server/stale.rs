//! Sources gone stale: no successful backup for longer than their
//! `stale_after`. Each becomes one `stale` notification (again only after a
//! success) and `cairn_source_stale` 1 in /metrics. A source that has not
//! succeeded since serve started (and has no success in the job history)
//! counts from the start.

use super::jobs::{last_successful_backup, Job};
use super::ServerState;
use crate::notify::{Event, EventKind};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How often staleness is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Each source with a `stale_after`, and whether it is stale now; `jobs`
/// newest first.
pub fn stale_sources(state: &ServerState, jobs: &[Job]) -> Vec<(String, bool)> {
    let now = jiff::Timestamp::now();
    state
        .settings
        .sources
        .iter()
        .filter_map(|(name, source)| {
            let limit = source.stale_after().ok().flatten()?;
            let since = last_successful_backup(jobs, name)
                .and_then(Job::finished_at)
                .unwrap_or(state.started);
            let age = now.duration_since(since);
            let stale = Duration::try_from(age).is_ok_and(|age| age > limit);
            Some((name.clone(), stale))
        })
        .collect()
}

/// Sends a `stale` notification when a source turns stale.
pub async fn watch(state: Arc<ServerState>) {
    if state
        .settings
        .sources
        .values()
        .all(|s| s.stale_after.is_none())
    {
        return;
    }
    let mut alerted: BTreeSet<String> = BTreeSet::new();
    loop {
        let jobs = state.jobs.list();
        for (name, stale) in stale_sources(&state, &jobs) {
            if !stale {
                alerted.remove(&name);
                continue;
            }
            if alerted.insert(name.clone()) {
                let source = &state.settings.sources[&name];
                log::warn!(
                    "source {name} is stale: no successful backup for {:?}",
                    source.stale_after.as_deref().unwrap_or("")
                );
                let mut event = Event::new(EventKind::Stale, "backup");
                event.source = Some(name.clone());
                event.repository = Some(source.repository.clone());
                event.error = Some(format!(
                    "no successful backup for longer than {}",
                    source.stale_after.as_deref().unwrap_or("")
                ));
                state.notifier.send(&event);
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}
