//! Notifications: jobs starting, succeeding and failing, and sources gone
//! stale, told to webhooks, healthchecks-style ping URLs and ntfy topics
//! (`[[notifications]]` in the settings file).
//!
//! Delivery never holds up or fails a job: each message goes out on a
//! thread of its own, is retried with growing pauses, and one that cannot
//! be delivered is logged (without the URL's path or query, which often
//! hold a secret) and dropped.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// Pauses before the second, third, … attempt.
const RETRY_PAUSES: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(10),
    Duration::from_secs(30),
];
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Start,
    Success,
    Failure,
    /// A source has had no successful backup for longer than its
    /// `stale_after`.
    Stale,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Start,
        EventKind::Success,
        EventKind::Failure,
        EventKind::Stale,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Success => "success",
            EventKind::Failure => "failure",
            EventKind::Stale => "stale",
        }
    }
}

/// How a notification is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// The event as JSON, POSTed to the URL.
    #[default]
    Webhook,
    /// healthchecks.io-style pings: `URL/start`, `URL` (success),
    /// `URL/fail` (failure, stale), the message as the body.
    Healthchecks,
    /// An ntfy topic URL: the message as text, with a title and priority.
    Ntfy,
}

/// One `[[notifications]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    pub url: String,
    #[serde(default)]
    pub kind: Channel,
    /// Which events (default: all of them).
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
    /// Only events of these sources (default: every event, those of no
    /// source, such as a repository's prune, included).
    #[serde(default)]
    pub sources: Vec<String>,
}

fn all_events() -> Vec<EventKind> {
    EventKind::ALL.to_vec()
}

impl NotificationSettings {
    /// The checks a settings file gets: a URL reqwest can send to.
    pub fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("url {:?}: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "url {:?}: give an http:// or https:// URL",
                self.url
            ));
        }
        if self.events.is_empty() {
            return Err("`events` is empty: leave it out for all of them".into());
        }
        Ok(())
    }

    fn wants(&self, event: &Event) -> bool {
        self.events.contains(&event.event)
            && (self.sources.is_empty()
                || event
                    .source
                    .as_ref()
                    .is_some_and(|s| self.sources.contains(s)))
    }
}

/// What happened, as a webhook receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    /// The job's id (jobs of `cairn serve`).
    pub job: Option<String>,
    /// `backup`, `restore`, `forget`, `prune`, `check`, `drill`.
    pub kind: String,
    pub source: Option<String>,
    pub repository: Option<String>,
    pub snapshot_id: Option<String>,
    pub error: Option<String>,
    /// RFC 3339.
    pub time: String,
}

impl Event {
    pub fn new(event: EventKind, kind: &str) -> Event {
        Event {
            event,
            job: None,
            kind: kind.to_string(),
            source: None,
            repository: None,
            snapshot_id: None,
            error: None,
            time: jiff::Timestamp::now().to_string(),
        }
    }

    /// One line for a person (ntfy's message, healthchecks' body).
    pub fn message(&self) -> String {
        let what = match &self.source {
            Some(s) => format!("{} of source {s}", self.kind),
            None => match &self.repository {
                Some(r) => format!("{} of repository {r}", self.kind),
                None => self.kind.clone(),
            },
        };
        let mut line = match self.event {
            EventKind::Start => format!("cairn: {what} started"),
            EventKind::Success => format!("cairn: {what} succeeded"),
            EventKind::Failure => format!("cairn: {what} failed"),
            EventKind::Stale => format!("cairn: {what} is stale"),
        };
        if let Some(id) = &self.snapshot_id {
            line.push_str(&format!(" (snapshot {})", &id[..id.len().min(8)]));
        }
        if let Some(e) = &self.error {
            line.push_str(": ");
            line.push_str(e);
        }
        line
    }
}

/// Sends events to the configured notifications.
#[derive(Default)]
pub struct Notifier {
    targets: Vec<NotificationSettings>,
    deliveries: Mutex<Vec<JoinHandle<()>>>,
}

impl Notifier {
    pub fn new(targets: Vec<NotificationSettings>) -> Notifier {
        Notifier {
            targets,
            deliveries: Mutex::default(),
        }
    }

    /// Sends `event` to every notification that wants it, in the
    /// background.
    pub fn send(&self, event: &Event) {
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        deliveries.retain(|d| !d.is_finished());
        for target in self.targets.iter().filter(|t| t.wants(event)) {
            let target = target.clone();
            let event = event.clone();
            let spawned = std::thread::Builder::new()
                .name("cairn-notify".into())
                .spawn(move || deliver(&target, &event));
            match spawned {
                Ok(handle) => deliveries.push(handle),
                Err(e) => log::warn!(target: "cairn::server", "notification not sent: {e}"),
            }
        }
    }

    /// Runs `work` (a source's backup, a drill, run by hand) between a
    /// `start` and a `success` or `failure` event made from `template`,
    /// then waits up to `limit` for them to go out. `snapshot` names the
    /// snapshot a result saved.
    pub fn around<T>(
        &self,
        template: &Event,
        limit: Duration,
        work: impl FnOnce() -> anyhow::Result<T>,
        snapshot: impl Fn(&T) -> Option<String>,
    ) -> anyhow::Result<T> {
        let event = |kind: EventKind| Event {
            event: kind,
            time: jiff::Timestamp::now().to_string(),
            ..template.clone()
        };
        self.send(&event(EventKind::Start));
        let outcome = work();
        self.send(&match &outcome {
            Ok(value) => Event {
                snapshot_id: snapshot(value),
                ..event(EventKind::Success)
            },
            Err(e) => Event {
                error: Some(format!("{e:#}")),
                ..event(EventKind::Failure)
            },
        });
        self.wait(limit);
        outcome
    }

    /// Waits up to `limit` for deliveries under way (a command run by hand
    /// would otherwise end before they are out).
    pub fn wait(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let pending: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in pending {
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                log::warn!(target: "cairn::server", "gave up waiting for a notification to be delivered");
            }
        }
    }
}

/// Tries, pausing between attempts, until one is answered with success.
fn deliver(target: &NotificationSettings, event: &Event) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log::warn!(target: "cairn::server", "notification not sent: {e}");
            return;
        }
    };
    let client = reqwest::Client::new();
    let mut last_error = String::new();
    for attempt in 0..=RETRY_PAUSES.len() {
        if attempt > 0 {
            std::thread::sleep(RETRY_PAUSES[attempt - 1]);
        }
        match runtime.block_on(attempt_once(&client, target, event)) {
            Ok(()) => return,
            Err(e) => last_error = e,
        }
    }
    log::warn!(
        target: "cairn::server",
        "notification ({} {}) to {} not delivered after {} attempts: {last_error}",
        event.kind,
        event.event.as_str(),
        shown_url(&target.url),
        RETRY_PAUSES.len() + 1
    );
}

async fn attempt_once(
    client: &reqwest::Client,
    target: &NotificationSettings,
    event: &Event,
) -> Result<(), String> {
    let request = match target.kind {
        Channel::Webhook => {
            let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
            client
                .post(&target.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        }
        Channel::Healthchecks => {
            let base = target.url.trim_end_matches('/');
            let url = match event.event {
                EventKind::Start => format!("{base}/start"),
                EventKind::Success => base.to_string(),
                EventKind::Failure | EventKind::Stale => format!("{base}/fail"),
            };
            client.post(url).body(event.message())
        }
        Channel::Ntfy => {
            let (priority, tag) = match event.event {
                EventKind::Failure | EventKind::Stale => ("high", "warning"),
                EventKind::Success => ("default", "white_check_mark"),
                EventKind::Start => ("low", "arrow_forward"),
            };
            client
                .post(&target.url)
                .header(
                    "Title",
                    format!("cairn {} {}", event.kind, event.event.as_str()),
                )
                .header("Priority", priority)
                .header("Tags", tag)
                .body(event.message())
        }
    };
    let response = request
        .timeout(ATTEMPT_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("cannot reach it ({e})"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("it answered {}", response.status()))
    }
}

/// A URL as logs may show it: scheme and host, not the path or query that
/// often carry a token (a healthchecks UUID, a webhook secret).
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "an unparsable URL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(events: &[EventKind], sources: &[&str]) -> NotificationSettings {
        NotificationSettings {
            url: "http://127.0.0.1:1/hook".into(),
            kind: Channel::Webhook,
            events: events.to_vec(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn events_and_sources_select_what_is_sent() {
        let mut e = Event::new(EventKind::Failure, "backup");
        e.source = Some("db".into());
        assert!(target(&EventKind::ALL, &[]).wants(&e));
        assert!(target(&[EventKind::Failure], &["db"]).wants(&e));
        assert!(!target(&[EventKind::Success], &[]).wants(&e));
        assert!(!target(&EventKind::ALL, &["files"]).wants(&e));
        e.source = None;
        assert!(
            !target(&EventKind::ALL, &["db"]).wants(&e),
            "a source filter wants sources"
        );
    }

    #[test]
    fn messages_say_what_happened() {
        let mut e = Event::new(EventKind::Failure, "backup");
        e.source = Some("pg".into());
        e.error = Some("pg_dump exited with status 1".into());
        assert_eq!(
            e.message(),
            "cairn: backup of source pg failed: pg_dump exited with status 1"
        );
        let mut e = Event::new(EventKind::Success, "prune");
        e.repository = Some("main".into());
        assert_eq!(e.message(), "cairn: prune of repository main succeeded");
    }

    #[test]
    fn logs_never_show_a_urls_path() {
        assert_eq!(
            shown_url("https://hc-ping.com/0a1b-secret"),
            "https://hc-ping.com/…"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        let mut t = target(&EventKind::ALL, &[]);
        t.url = "ftp://x/y".into();
        assert!(t.check().unwrap_err().contains("http://"));
        t.url = "not a url".into();
        assert!(t.check().is_err());
        t.url = "https://x/y".into();
        t.events.clear();
        assert!(t.check().unwrap_err().contains("events"));
    }
}
