//! Parsers for command-line values: counts with suffixes (`100k`, `1m`), durations
//! (`30s`, `500ms`, `2m`), shards (`0/4`) and target lists.

/// Parses a count: digits with an optional suffix `k` (×1,000), `m` (×1,000,000) or `g`
/// (×1,000,000,000), case-insensitive, and `_` separators: `100000`, `100k`, `1m`, `1_000`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t: String = s.trim().chars().filter(|c| *c != '_').collect();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000u64),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        Some((i, 'g' | 'G')) => (&t[..i], 1_000_000_000),
        _ => (t.as_str(), 1),
    };
    let n: f64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a count (examples: 5000, 100k, 1m)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?} is not a count (examples: 5000, 100k, 1m)"));
    }
    let v = n * mult as f64;
    if v.fract() != 0.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?} is not a whole count"));
    }
    Ok(v as u64)
}

/// Parses a rate per second: a number with an optional `k`/`m` suffix (`2500`, `10k`).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a rate per second (examples: 500, 2.5k, 1m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a rate per second: must be >= 0"));
    }
    Ok(v * mult)
}

/// Parses a duration: a number with a unit `ms`, `s`, `m` or `h` (`500ms`, `30s`, `2m`);
/// a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 30s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "" | "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)"));
        }
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// A slice `index/count` of the client id space (`--shard 0/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    /// The ids of `0..total` this shard runs: a contiguous slice.
    pub fn range(&self, total: u32) -> std::ops::Range<u32> {
        let (i, n, t) = (
            u64::from(self.index),
            u64::from(self.count),
            u64::from(total),
        );
        // Both ends are at most `total`, so they fit in u32.
        let lo = u32::try_from(t * i / n).unwrap_or(total);
        let hi = u32::try_from(t * (i + 1) / n).unwrap_or(total);
        lo..hi
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parses `i/n` with `0 <= i < n`.
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a shard: use i/n, e.g. 0/4"))?;
    let index: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: shard index {i:?} is not a number"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: shard count {n:?} is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("{s:?}: need 0 <= index < count"));
    }
    if count > 16 {
        return Err(format!("{s:?}: at most 16 shards"));
    }
    Ok(Shard { index, count })
}

/// Parses a `host:port` target (a main port, as Nacos clients take it).
pub fn parse_target(s: &str) -> Result<String, String> {
    let t = s.trim();
    let (host, port) = t.rsplit_once(':').ok_or_else(|| {
        format!("target {s:?}: use host:port (the main port, e.g. 127.0.0.1:8848)")
    })?;
    if host.is_empty() {
        return Err(format!("target {s:?}: the host is empty"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("target {s:?}: port {port:?} is not in 1..=65535"))?;
    if port == 0 || port > u16::MAX - 1000 {
        return Err(format!(
            "target {s:?}: port {port} leaves no room for the SDK port (main + 1000)"
        ));
    }
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts() {
        assert_eq!(parse_count("100000"), Ok(100_000));
        assert_eq!(parse_count("100k"), Ok(100_000));
        assert_eq!(parse_count("1m"), Ok(1_000_000));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert_eq!(parse_count("2.5k"), Ok(2_500));
        assert_eq!(parse_count("1_000"), Ok(1_000));
        assert!(parse_count("ten").is_err());
        assert!(parse_count("-1").is_err());
        assert!(parse_count("1.5").is_err());
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_rate("2.5k"), Ok(2500.0));
        assert!(parse_rate("-3").is_err());
    }

    #[test]
    fn shards_cover_the_id_space() {
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("x").is_err());
        let total = 1001;
        let mut next = 0;
        for i in 0..3 {
            let r = parse_shard(&format!("{i}/3")).map(|s| s.range(total));
            let r = r.expect("valid shard");
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, total);
    }

    #[test]
    fn targets() {
        assert_eq!(parse_target("127.0.0.1:8848"), Ok("127.0.0.1:8848".into()));
        assert!(parse_target("127.0.0.1").is_err());
        assert!(parse_target("h:65000").is_err());
    }
}
