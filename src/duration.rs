//! Durations given by people (`--retry-lock`, `--keep-delete`): `30s`, `5m`,
//! `1h30m`, `2d`, `1w`. One parser, range-checked, so an absurd value is an
//! error that says so instead of an overflow.

use anyhow::{anyhow, Result};
use std::time::Duration;

/// Ten years: longer than any wait or grace anyone means, and far from
/// any overflow.
pub const MAX: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

pub fn parse(s: &str) -> Result<Duration> {
    let bad = || anyhow!("{s:?} is not a duration: use e.g. 30s, 5m, 1h30m or 2d");
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let too_long = || anyhow!("{s:?} is out of range: at most 10 years (3660d)");
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit_secs: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| too_long())?;
        digits.clear();
        total = n
            .checked_mul(unit_secs)
            .and_then(|part| total.checked_add(part))
            .filter(|t| *t <= MAX.as_secs())
            .ok_or_else(too_long)?;
    }
    if !digits.is_empty() {
        // a bare number is seconds only when it is all there is ("0")
        if total != 0 || digits.parse::<u64>().map_err(|_| bad())? != 0 {
            return Err(bad());
        }
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse("1w1d").unwrap(), Duration::from_secs(8 * 86_400));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_and_absurd_values_are_errors() {
        for bad in ["", "5", "3x", "d", "1.5d", "-1h", "h1"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for absurd in [
            "8000000d",
            "99999999999999999999s",
            "3661d",
            "18446744073709551615w",
        ] {
            let e = parse(absurd).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{absurd}: {e}");
        }
    }
}
