//! Values with units, as both binaries' command lines take them: durations (`250ms`,
//! `5s`, `3m`, `1h`), counts (`5000`, `100k`, `1m`), sizes (`512KiB`, `1MiB`) and rates
//! per second (`2.5k`).
//!
//! One parser per kind, shared by `distro-server` and `loadgen`, so a value means the same
//! thing to both. A duration or a size without a unit is refused rather than guessed at
//! (`5` could be 5 ms or 5 s); the message lists the accepted units. The flag's name is
//! added by the caller (clap prefixes it to the message).

use std::time::Duration;

/// The units a duration accepts, for messages.
pub const DURATION_UNITS: &str = "ms, s, m or h (e.g. 250ms, 5s, 3m)";
/// The units a size accepts, for messages.
pub const SIZE_UNITS: &str = "B, KiB, MiB or GiB (e.g. 512KiB, 1MiB)";

/// Splits `"12.5ms"` into `("12.5", "ms")`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a non-negative decimal number with optional `_` separators.
fn number(digits: &str) -> Option<f64> {
    let t: String = digits.chars().filter(|c| *c != '_').collect();
    if t.is_empty() || t.starts_with('.') && t.len() == 1 {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Parses a duration: a non-negative number and a unit, one of `ms`, `s`, `m` (or
/// `min`) and `h`: `250ms`, `1.5s`, `3m`. A bare number is an error naming the units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = split_number(t);
    let Some(v) = number(num) else {
        return Err(format!(
            "{s:?} is not a duration: use a number and a unit, {DURATION_UNITS}"
        ));
    };
    let secs = match unit.trim() {
        "ms" => v / 1e3,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        "" => {
            return Err(format!(
                "{s:?} has no unit: a duration needs one of {DURATION_UNITS}"
            ));
        }
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} for a duration, use {DURATION_UNITS}"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

/// Parses a duration as whole milliseconds (what the core's configuration holds).
pub fn parse_millis(s: &str) -> Result<u64, String> {
    let d = parse_duration(s)?;
    u64::try_from(d.as_millis()).map_err(|_| format!("{s:?} is too long"))
}

/// Parses a count: a whole number with an optional suffix `k` (×1,000), `m` (×1,000,000)
/// or `g` (×1,000,000,000), case-insensitive, `_` allowed as a separator: `100000`,
/// `100k`, `2.5k`, `1m`, `1_000`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, suffix) = split_number(t);
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} is not a count: use a whole number with an optional k, m or g \
                 (e.g. 5000, 100k, 1m)"
            ));
        }
    };
    let Some(v) = number(num) else {
        return Err(format!(
            "{s:?} is not a count: use a whole number with an optional k, m or g \
             (e.g. 5000, 100k, 1m)"
        ));
    };
    let total = v * mult as f64;
    if total.fract() != 0.0 || total > u64::MAX as f64 {
        return Err(format!("{s:?} is not a whole count"));
    }
    Ok(total as u64)
}

/// Parses a count that must fit a `usize`.
pub fn parse_count_usize(s: &str) -> Result<usize, String> {
    let n = parse_count(s)?;
    usize::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

/// Parses a size in bytes: a whole number and a unit, `B`, `KiB`, `MiB` or `GiB`
/// (binary multiples; `KB`/`MB`/`GB` and `k`/`m`/`g` are read the same way, since
/// message and buffer limits are binary), case-insensitive. A bare number is an error.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, unit) = split_number(t);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "" => {
            return Err(format!(
                "{s:?} has no unit: a size needs one of {SIZE_UNITS}"
            ));
        }
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} for a size, use {SIZE_UNITS}"
            ));
        }
    };
    let Some(v) = number(num) else {
        return Err(format!(
            "{s:?} is not a size: use a number and a unit, {SIZE_UNITS}"
        ));
    };
    let total = v * mult as f64;
    if total.fract() != 0.0 || total > usize::MAX as f64 {
        return Err(format!("{s:?} is not a whole number of bytes"));
    }
    Ok(total as usize)
}

/// Parses a rate per second: a non-negative number with an optional `k` or `m` suffix
/// (`500`, `2.5k`, `1m`).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{s:?} is not a rate per second: a rate cannot be negative"
        ));
    }
    let (num, suffix) = split_number(t);
    let mult = match suffix.trim().to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        _ => {
            return Err(format!(
                "{s:?} is not a rate per second: use a number >= 0 with an optional k or m \
                 (e.g. 500, 2.5k, 1m)"
            ));
        }
    };
    match number(num) {
        Some(v) => Ok(v * mult),
        None => Err(format!(
            "{s:?} is not a rate per second: use a number >= 0 with an optional k or m \
             (e.g. 500, 2.5k, 1m)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        let bare = parse_duration("5").expect_err("a bare number is refused");
        assert!(
            bare.contains("no unit") && bare.contains("ms, s, m or h"),
            "{bare}"
        );
        let unknown = parse_duration("5x").expect_err("unknown unit");
        assert!(unknown.contains("unknown unit \"x\""), "{unknown}");
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_millis("2s"), Ok(2000));
    }

    #[test]
    fn counts_take_suffixes() {
        assert_eq!(parse_count("100000"), Ok(100_000));
        assert_eq!(parse_count("100k"), Ok(100_000));
        assert_eq!(parse_count("1m"), Ok(1_000_000));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert_eq!(parse_count("2.5k"), Ok(2_500));
        assert_eq!(parse_count("1_000"), Ok(1_000));
        assert_eq!(parse_count("1g"), Ok(1_000_000_000));
        assert!(parse_count("ten").is_err());
        assert!(parse_count("-1").is_err());
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("5s").is_err());
        assert!(parse_count("").is_err());
        assert_eq!(parse_count_usize("10k"), Ok(10_000));
    }

    #[test]
    fn sizes_need_a_unit() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        let bare = parse_size("1024").expect_err("a bare number is refused");
        assert!(bare.contains("no unit") && bare.contains("KiB"), "{bare}");
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("0.3B").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2.5k"), Ok(2500.0));
        assert_eq!(parse_rate("500"), Ok(500.0));
        assert_eq!(parse_rate("1m"), Ok(1e6));
        let neg = parse_rate("-5").expect_err("negative");
        assert!(neg.contains("cannot be negative"), "{neg}");
        assert!(parse_rate("fast").is_err());
    }
}
