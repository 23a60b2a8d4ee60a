//! Shared rendering: times, sizes, modes, node JSON.

use anyhow::{anyhow, Result};
use cairn::repo::browse::EntryListing;
use cairn::tree::Node;
use jiff::tz::TimeZone;
use jiff::Timestamp;

pub use cairn::time_text::local_time;

/// `--time`: "YYYY-MM-DD HH:MM:SS" in local time, or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64> {
    let ts = if let Ok(t) = s.parse::<Timestamp>() {
        t
    } else {
        let dt = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", s).map_err(|_| {
            anyhow!("--time {s:?}: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339")
        })?;
        dt.to_zoned(TimeZone::system())?.timestamp()
    };
    i64::try_from(ts.as_nanosecond()).map_err(|_| anyhow!("--time {s:?} is out of range"))
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

pub use cairn::repo::browse::mode_string;

pub fn node_json(node: &Node, path: &str) -> serde_json::Value {
    serde_json::to_value(EntryListing::new(node, path)).expect("plain data")
}

/// A typed report as one `--json` line: its fields and `message_type`.
pub fn message(kind: &str, report: &impl serde::Serialize) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("reports are plain data");
    if let Some(fields) = v.as_object_mut() {
        fields.insert("message_type".into(), kind.into());
    }
    v
}
