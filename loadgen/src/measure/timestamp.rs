//! Wall-clock timestamps as text: RFC 3339 for files, a compact form for directory names.
//!
//! Only formatting of UTC; no time zones, no parsing beyond what the merge needs (it reads
//! the Unix milliseconds of `summary.json`, never these strings).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`unix_ms`].
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let ms = unix_ms(t);
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    let small64 = |v: u64| u32::try_from(v).unwrap_or(0);
    (
        year,
        small(month),
        small(day),
        small64(rem / 3600),
        small64(rem % 3600 / 60),
        small64(rem % 60),
        small64(ms % 1000),
    )
}

/// `2026-01-02T15:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// The default name of a run's output directory: `20260102T150405Z-<scenario>`, which
/// sorts by time. Characters of `scenario` other than ASCII letters, digits, `-`, `_` and
/// `.` become `_`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_767_366_245);
/// assert_eq!(loadgen::run_dir_name(t, "register 3 nodes"), "20260102T150405Z-register_3_nodes");
/// ```
pub fn run_dir_name(started_at: SystemTime, scenario: &str) -> String {
    let (y, mo, d, h, mi, s, _) = civil(started_at);
    let scenario: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z-{scenario}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(rfc3339(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_366_245);
        assert_eq!(rfc3339(t), "2026-01-02T15:04:05.000Z");
        assert_eq!(from_unix_ms(unix_ms(t)), t);
    }
}
