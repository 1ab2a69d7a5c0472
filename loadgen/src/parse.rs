//! Parsers for command-line values: shards (`0/4`) and target lists. Counts (`100k`),
//! durations (`30s`, `500ms`; a unit is required) and rates come from
//! [`distro_core::units`], shared with `distro-server`.

pub use distro_core::units::{parse_count, parse_duration, parse_rate};

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
