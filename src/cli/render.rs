//! Shared rendering: times, sizes, modes, node JSON.

use anyhow::{anyhow, Result};
use cairn::tree::{Node, NodeKind};
use jiff::tz::TimeZone;
use jiff::Timestamp;

pub use cairn::time_text::{local_time, rfc3339};

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

/// `drwxr-xr-x` style.
pub fn mode_string(node: &Node) -> String {
    let t = match node.kind {
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
        NodeKind::BlockDevice { .. } => 'b',
        NodeKind::CharDevice { .. } => 'c',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::File { .. } => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (node.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

pub fn node_json(node: &Node, path: &str) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": node.name_lossy(),
        "type": node.kind.type_name(),
        "path": path,
        "size": node.size,
        "mode": node.mode,
        "permissions": mode_string(node),
        "uid": node.uid,
        "gid": node.gid,
        "user": node.user,
        "group": node.group,
        "mtime": rfc3339(node.mtime_ns),
        "ctime": rfc3339(node.ctime_ns),
        "inode": node.inode,
        "links": node.links,
        "struct_type": "node",
    });
    if let NodeKind::Symlink { target } = &node.kind {
        v["link_target"] = String::from_utf8_lossy(target).into();
    }
    v
}
