//! The scheduler: each source with a `schedule` gets a backup job, each
//! drill with one a drill job and each copy a copy job, at every time its cron expression names
//! (local time). A source whose previous backup still runs is skipped for
//! that time, not started twice; the skip is logged and counted in /metrics.

use super::jobs::{StartError, Trigger};
use super::ServerState;
use jiff::Zoned;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// What a schedule starts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scheduled<'a> {
    Backup(&'a str),
    Drill(&'a str),
    Copy(&'a str),
}

pub async fn run(state: Arc<ServerState>) {
    let settings = &state.settings;
    let cron = |expr: &Option<String>| crate::settings::parse_schedule(expr.as_deref()?).ok();
    let schedules: BTreeMap<Scheduled, croner::Cron> = settings
        .sources
        .iter()
        .filter_map(|(name, s)| Some((Scheduled::Backup(name), cron(&s.schedule)?)))
        .chain(
            settings
                .drills
                .iter()
                .filter_map(|(name, d)| Some((Scheduled::Drill(name), cron(&d.schedule)?))),
        )
        .chain(
            settings
                .copies
                .iter()
                .filter_map(|(name, c)| Some((Scheduled::Copy(name), cron(&c.schedule)?))),
        )
        .collect();
    if schedules.is_empty() {
        return;
    }
    let mut next: BTreeMap<Scheduled, Zoned> = BTreeMap::new();
    loop {
        let now = Zoned::now();
        for (what, cron) in &schedules {
            let due = next.entry(*what).or_insert_with(|| next_time(cron, &now));
            if *due <= now {
                match what {
                    Scheduled::Backup(name) => fire(&state, name),
                    Scheduled::Drill(name) => fire_drill(&state, name),
                    Scheduled::Copy(name) => fire_copy(&state, name),
                }
                *due = next_time(cron, &now);
            }
        }
        let Some(soonest) = next.values().min() else {
            return;
        };
        let wait = soonest.timestamp().duration_since(now.timestamp());
        let wait = std::time::Duration::try_from(wait).unwrap_or_default();
        tokio::time::sleep(wait.max(std::time::Duration::from_millis(50))).await;
    }
}

fn next_time(cron: &croner::Cron, after: &Zoned) -> Zoned {
    cron.find_next_occurrence(after, false).unwrap_or_else(|_| {
        // No future time (e.g. 30 February): never.
        after
            .checked_add(jiff::SignedDuration::from_hours(24 * 365 * 100))
            .unwrap_or(after.clone())
    })
}

fn fire(state: &Arc<ServerState>, name: &str) {
    let Some(source) = state.settings.sources.get(name) else {
        return;
    };
    match state
        .jobs
        .start(super::specs::backup(name, source, Trigger::Schedule))
    {
        Ok(_) => {}
        Err(StartError::Conflict(why)) => {
            log::info!("schedule: skipping {name} this time: {why}");
            if let Some(c) = state.skipped.get(name) {
                c.fetch_add(1, Relaxed);
            }
        }
        Err(StartError::Other(e)) => log::error!("schedule: cannot start {name}: {e:#}"),
    }
}

fn fire_drill(state: &Arc<ServerState>, name: &str) {
    let Some(drill) = state.settings.drills.get(name) else {
        return;
    };
    let Some(source) = state.settings.sources.get(&drill.source) else {
        return;
    };
    let spec = super::specs::drill(name, drill, &source.repository, Trigger::Schedule);
    if let Err(e) = state.jobs.start(spec) {
        log::error!("schedule: cannot start drill {name}: {e:?}");
    }
}

fn fire_copy(state: &Arc<ServerState>, name: &str) {
    let Some(copy) = state.settings.copies.get(name) else {
        return;
    };
    match state
        .jobs
        .start(super::specs::copy(name, copy, Trigger::Schedule))
    {
        Ok(_) => {}
        Err(StartError::Conflict(why)) => log::info!("schedule: skipping copy {name}: {why}"),
        Err(StartError::Other(e)) => log::error!("schedule: cannot start copy {name}: {e:#}"),
    }
}

/// When a source's schedule fires next, for the API.
pub fn next_run(expr: &str) -> Option<String> {
    let cron = crate::settings::parse_schedule(expr).ok()?;
    cron.find_next_occurrence(&Zoned::now(), false)
        .ok()
        .map(|z| z.timestamp().to_string())
}
