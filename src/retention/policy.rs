//! Keep policies: which snapshots of a group survive `forget`. The rules are
//! restic's (current semantics), so a policy moved from restic keeps the same
//! snapshots: buckets are counted from the newest snapshot, a snapshot that
//! satisfies several rules is kept once (and lists every rule), and when a
//! bucket still has counts left at the oldest snapshot, that one is kept too.

use crate::id::Id;
use anyhow::{anyhow, Result};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// `--keep-within`: years, months, days and hours, as restic writes them
/// (`1y6m`, `7d`, `36h`; `m` is months).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Within {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

/// The longest `--keep-within` span per unit: beyond any snapshot's age,
/// and small enough that date arithmetic cannot overflow.
const WITHIN_MAX_YEARS: i32 = 10_000;

impl std::str::FromStr for Within {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Within> {
        let bad = || {
            anyhow!("{s:?} is not a duration like 1y6m7d12h (y years, m months, d days, h hours)")
        };
        let too_long = || {
            anyhow!(
                "{s:?} is out of range: each unit may count at most {WITHIN_MAX_YEARS} years \
                 (e.g. 100y keeps a century)"
            )
        };
        let mut w = Within::default();
        let mut digits = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: i32 = digits.parse().map_err(|_| too_long())?;
            digits.clear();
            let (field, limit) = match c {
                'y' => (&mut w.years, WITHIN_MAX_YEARS),
                'm' => (&mut w.months, WITHIN_MAX_YEARS * 12),
                'd' => (&mut w.days, WITHIN_MAX_YEARS * 366),
                'h' => (&mut w.hours, WITHIN_MAX_YEARS * 366 * 24),
                _ => return Err(bad()),
            };
            *field = field
                .checked_add(n)
                .filter(|total| *total <= limit)
                .ok_or_else(too_long)?;
        }
        if !digits.is_empty() || s.trim().is_empty() {
            return Err(bad());
        }
        Ok(w)
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A count of `--keep-*`: `None` is off, `Some(-1)` keeps one per bucket
/// without limit.
pub type Count = Option<i64>;

#[derive(Debug, Clone, Default)]
pub struct KeepPolicy {
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
    pub within: Option<Within>,
    /// Keep every snapshot that has all tags of any one of these sets.
    pub tags: Vec<Vec<String>>,
}

/// A keep-count out of range: which rule (`daily`, …) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCount {
    pub rule: &'static str,
    pub value: i64,
}

impl BadCount {
    /// The message, with the rule named as the caller's users know it
    /// (`--keep-daily`, `keep_daily`).
    pub fn message(&self, field: &str) -> String {
        format!(
            "{field} = {}: give a count, 0 (off) or -1 (keep one per period without limit)",
            self.value
        )
    }
}

impl KeepPolicy {
    /// `--keep-tag` values as tag sets: `a,b` keeps snapshots with both.
    pub fn tag_sets(values: &[String]) -> Vec<Vec<String>> {
        values
            .iter()
            .map(|t| {
                t.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .collect()
    }

    /// The one rule for keep-counts, whoever gives them (CLI, settings
    /// file, API): -1, 0 or a positive count.
    pub fn check_counts(&self) -> Result<(), BadCount> {
        let named = [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ];
        match named.into_iter().find(|(_, n)| n.is_some_and(|n| n < -1)) {
            Some((rule, Some(value))) => Err(BadCount { rule, value }),
            _ => Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(c, _)| !active(*c))
            && self.within.is_none_or(|w| w == Within::default())
            && self.tags.is_empty()
    }

    fn counts(&self) -> [(Count, Bucket); 6] {
        [
            (self.last, Bucket::Last),
            (self.hourly, Bucket::Hour),
            (self.daily, Bucket::Day),
            (self.weekly, Bucket::Week),
            (self.monthly, Bucket::Month),
            (self.yearly, Bucket::Year),
        ]
    }
}

fn active(c: Count) -> bool {
    matches!(c, Some(n) if n > 0 || n == -1)
}

#[derive(Debug, Clone, Copy)]
enum Bucket {
    Last,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    /// The bucket a snapshot falls in; `nr` is its position, newest first.
    fn of(self, t: &Zoned, nr: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Bucket::Last => nr as i64,
            Bucket::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Bucket::Day => (y * 100 + m) * 100 + d,
            Bucket::Week => {
                let w = t.date().iso_week_date();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Bucket::Month => y * 100 + m,
            Bucket::Year => y,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Bucket::Last => "last snapshot",
            Bucket::Hour => "hourly snapshot",
            Bucket::Day => "daily snapshot",
            Bucket::Week => "weekly snapshot",
            Bucket::Month => "monthly snapshot",
            Bucket::Year => "yearly snapshot",
        }
    }
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Id,
    pub time_ns: i64,
    pub tags: Vec<String>,
}

/// The verdict on one snapshot: kept (with every rule that kept it) or not.
#[derive(Debug, Clone)]
pub struct Decision {
    pub id: Id,
    pub time_ns: i64,
    pub keep: bool,
    pub matches: Vec<String>,
}

/// Applies `policy` to one group. Returns the decisions newest first. An
/// empty policy keeps everything.
pub fn apply(
    group: &[Candidate],
    policy: &KeepPolicy,
    now_ns: i64,
    tz: &TimeZone,
) -> Vec<Decision> {
    let mut list: Vec<&Candidate> = group.iter().collect();
    list.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then(a.id.cmp(&b.id)));
    if policy.is_empty() {
        return list
            .iter()
            .map(|c| decision(c, true, vec!["policy is empty".into()]))
            .collect();
    }
    let zoned = |ns: i64| {
        Timestamp::from_nanosecond(i128::from(ns))
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(tz.clone())
    };
    // "within" counts back from the newest snapshot that is not in the future
    let within = policy.within.filter(|w| *w != Within::default());
    let within_limit = within.map(|w| {
        list.iter()
            .map(|c| c.time_ns)
            .filter(|t| *t < now_ns)
            .max()
            .map_or(i64::MIN, |latest| go_sub(&zoned(latest), w))
    });
    let mut buckets: Vec<(i64, Bucket, Option<i64>)> = policy
        .counts()
        .into_iter()
        .filter(|(c, _)| active(*c))
        .map(|(c, b)| (c.expect("active"), b, None))
        .collect();
    let oldest = list.len().saturating_sub(1);
    let mut out = Vec::with_capacity(list.len());
    for (nr, cur) in list.iter().enumerate() {
        let mut matches = Vec::new();
        for set in &policy.tags {
            if set.iter().all(|t| cur.tags.contains(t)) {
                matches.push(format!("has tags {}", set.join(",")));
            }
        }
        if let (Some(limit), Some(w)) = (within_limit, within) {
            if cur.time_ns > limit {
                matches.push(format!("within {w}"));
            }
        }
        let t = zoned(cur.time_ns);
        for (count, bucket, last) in buckets.iter_mut() {
            if *count == 0 {
                continue;
            }
            let val = bucket.of(&t, nr);
            if Some(val) != *last || nr == oldest {
                *last = Some(val);
                if *count > 0 {
                    *count -= 1;
                }
                matches.push(bucket.reason().to_string());
            }
        }
        out.push(decision(cur, !matches.is_empty(), matches));
    }
    out
}

fn decision(c: &Candidate, keep: bool, matches: Vec<String>) -> Decision {
    Decision {
        id: c.id,
        time_ns: c.time_ns,
        keep,
        matches,
    }
}

/// `t` minus `w` the way restic computes it (Go's `AddDate`, which
/// normalises: March 31 minus one month is March 3, not February 28, then
/// hours as exact time), in nanoseconds.
fn go_sub(t: &Zoned, w: Within) -> i64 {
    let months = i64::from(t.year()) * 12 + i64::from(t.month())
        - 1
        - i64::from(w.years) * 12
        - i64::from(w.months);
    let (year, month) = (months.div_euclid(12), months.rem_euclid(12) + 1);
    let first = Date::new(year as i16, month as i8, 1).unwrap_or(Date::MIN);
    let day_offset = i64::from(t.day()) - 1 - i64::from(w.days);
    let date = first
        .checked_add(jiff::Span::new().days(day_offset))
        .unwrap_or(Date::MIN);
    let at = date
        .to_datetime(t.time())
        .to_zoned(t.time_zone().clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MIN);
    let ns = at.as_nanosecond() - i128::from(w.hours) * 3_600_000_000_000;
    i64::try_from(ns).unwrap_or(i64::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn at(s: &str) -> i64 {
        let ts: Timestamp = format!("{s}Z").parse().unwrap();
        ts.as_nanosecond() as i64
    }

    fn cands(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: Id([i as u8; 32]),
                time_ns: at(t),
                tags: vec![],
            })
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<i64> {
        d.iter().filter(|d| d.keep).map(|d| d.time_ns).collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_the_oldest_while_counts_remain() {
        let c = cands(&[
            "2024-01-01T08:00:00",
            "2024-01-01T20:00:00",
            "2024-01-02T08:00:00",
            "2024-01-03T08:00:00",
            "2024-01-03T09:00:00",
        ]);
        let p = KeepPolicy {
            daily: Some(5),
            ..Default::default()
        };
        let d = apply(&c, &p, i64::MAX, &utc());
        // three days, and the oldest snapshot because counts are left
        assert_eq!(
            kept(&d),
            vec![
                at("2024-01-03T09:00:00"),
                at("2024-01-02T08:00:00"),
                at("2024-01-01T20:00:00"),
                at("2024-01-01T08:00:00"),
            ]
        );
        let p = KeepPolicy {
            daily: Some(2),
            ..Default::default()
        };
        let d = apply(&c, &p, i64::MAX, &utc());
        assert_eq!(
            kept(&d),
            vec![at("2024-01-03T09:00:00"), at("2024-01-02T08:00:00")]
        );
    }

    #[test]
    fn a_snapshot_kept_by_several_rules_lists_them_all() {
        let c = cands(&["2024-01-01T08:00:00", "2024-02-01T08:00:00"]);
        let p = KeepPolicy {
            last: Some(1),
            monthly: Some(1),
            ..Default::default()
        };
        let d = apply(&c, &p, i64::MAX, &utc());
        assert_eq!(d[0].matches, vec!["last snapshot", "monthly snapshot"]);
        assert!(!d[1].keep);
    }

    #[test]
    fn within_counts_from_the_newest_snapshot_like_go_add_date() {
        let c = cands(&[
            "2024-03-02T12:00:00",
            "2024-03-03T12:00:00",
            "2024-03-31T12:00:00",
        ]);
        let p = KeepPolicy {
            within: Some("1m".parse().unwrap()),
            ..Default::default()
        };
        // March 31 minus one month is "February 31" = March 2 (2024 is leap)
        let d = apply(&c, &p, i64::MAX, &utc());
        assert_eq!(
            kept(&d),
            vec![at("2024-03-31T12:00:00"), at("2024-03-03T12:00:00")]
        );
    }

    #[test]
    fn within_durations_parse_like_restic() {
        let w: Within = "1y2m3d4h".parse().unwrap();
        assert_eq!((w.years, w.months, w.days, w.hours), (1, 2, 3, 4));
        assert_eq!(w.to_string(), "1y2m3d4h");
        for bad in ["", "5", "3w", "d", "1.5d"] {
            assert!(bad.parse::<Within>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn absurd_within_spans_are_refused_not_overflowed() {
        for absurd in [
            "8000000d",
            "2147483647d1d",
            "99999999999h",
            "10001y",
            "9000y9000y",
        ] {
            let e = absurd.parse::<Within>().unwrap_err().to_string();
            assert!(e.contains("out of range"), "{absurd}: {e}");
        }
        let longest: Within = "10000y".parse().unwrap();
        let now = "2026-12-01T00:00:00Z[UTC]".parse::<Zoned>().unwrap();
        assert!(go_sub(&now, longest) < 0);
    }

    #[test]
    fn tags_keep_without_counting_and_empty_policy_keeps_all() {
        let mut c = cands(&["2024-01-01T08:00:00", "2024-01-02T08:00:00"]);
        c[0].tags = vec!["keep".into(), "x".into()];
        let p = KeepPolicy {
            tags: vec![vec!["keep".into()]],
            ..Default::default()
        };
        let d = apply(&c, &p, i64::MAX, &utc());
        assert_eq!(kept(&d), vec![at("2024-01-01T08:00:00")]);
        let d = apply(&c, &KeepPolicy::default(), i64::MAX, &utc());
        assert_eq!(kept(&d).len(), 2);
    }
}
