//! Sizes as people write them: `500M`, `10G`, `4096` (binary units).

use anyhow::{anyhow, Result};

/// `500M`, `10G`, `4096`, `1.5`-free: whole numbers of B, K, M, G or T
/// (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        Some('B') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| anyhow!("{s:?} is not a size: use e.g. 500M or 10G"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size(" 10G ").unwrap(), 10 << 30);
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("99999999T").is_err(), "overflow");
        assert!(parse_size("").is_err());
    }
}
