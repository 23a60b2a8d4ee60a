//! Times as cairn shows them: RFC 3339 with the local offset (as restic
//! prints in JSON), and `YYYY-MM-DD HH:MM:SS` local time for tables.

use jiff::tz::TimeZone;
use jiff::Timestamp;

fn timestamp(ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub fn rfc3339(ns: i64) -> String {
    let z = timestamp(ns).to_zoned(TimeZone::system());
    z.timestamp().display_with_offset(z.offset()).to_string()
}

pub fn local_time(ns: i64) -> String {
    timestamp(ns)
        .to_zoned(TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}
