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

/// A name from a repository as text output shows it: control characters
/// (terminal escapes among them, which a hostile snapshot could carry) and
/// backslashes are written as `\xNN`, so what is printed is what is there
/// and cannot drive the terminal. JSON output escapes on its own.
pub fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || c == '\\';
    if !name.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if unsafe_char(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain name.txt"), "plain name.txt");
        assert_eq!(printable("a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(printable("line\nbreak"), "line\\x0abreak");
        assert_eq!(printable("back\\slash"), "back\\x5cslash");
        assert_eq!(printable("c1\u{9b}x"), "c1\\xc2\\x9bx");
        assert_eq!(printable("héllo"), "héllo");
    }
}
