//! HDR histograms of latency in microseconds, and the statistics read from them.
//!
//! Every histogram loadgen keeps (per operation, per kind, per interval, and the
//! replication lag one) has the same configuration, so any two can be added exactly:
//! 1 µs to 1 hour at 3 significant digits (each reported value is within 0.1 % of a
//! recorded one). Values above an hour are clamped to an hour. This file does not decide
//! what is recorded; see `recorder.rs`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest discernible value, in microseconds.
pub(crate) const LOWEST_US: u64 = 1;
/// Highest trackable value, in microseconds (one hour); larger values are clamped.
pub(crate) const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept by every histogram.
pub(crate) const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentile ladder of `percentiles.csv` (100 is the maximum).
pub(crate) const CSV_PERCENTILES: [f64; 12] = [
    0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
];

/// A new, empty histogram with loadgen's configuration.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid: low >= 1, high >= 2 * low, sigfig <= 5")
}

/// A duration in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The value at `percentile` (0 to 100) of a non-empty histogram, in microseconds.
/// 0 is the minimum and 100 the maximum.
pub(crate) fn at_percentile(h: &Histogram<u64>, percentile: f64) -> u64 {
    if percentile <= 0.0 {
        h.min()
    } else if percentile >= 100.0 {
        h.max()
    } else {
        // `99.9 / 100.0` is 0.9990000000000001, and the library rounds the rank up: without
        // this nudge (far smaller than one sample's share) p99.9 of 1..=1000 would be 1000.
        h.value_at_quantile((percentile / 100.0 - 4.0 * f64::EPSILON).max(0.0))
    }
}

/// The headline statistics of one latency distribution, in microseconds.
///
/// Percentile values are the upper end of the histogram bucket they fall in, so they are
/// at most 0.1 % above the largest recorded value at that rank.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p99_9_us: u64,
    /// 99.99th percentile.
    pub p99_99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencyStats {
    /// The statistics of `h`, or `None` when it holds no sample.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(Self {
            count: h.len(),
            min_us: h.min(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: at_percentile(h, 50.0),
            p90_us: at_percentile(h, 90.0),
            p99_us: at_percentile(h, 99.0),
            p99_9_us: at_percentile(h, 99.9),
            p99_99_us: at_percentile(h, 99.99),
            max_us: h.max(),
        })
    }

    /// The five summary percentiles then the maximum, with their labels.
    pub(crate) fn ladder(&self) -> [(&'static str, u64); 6] {
        [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p99_9_us),
            ("p99.99", self.p99_99_us),
            ("max", self.max_us),
        ]
    }
}

/// The three figures per second of a timeline row, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl Quantiles {
    /// The quantiles of `h`, or `None` when it holds no sample.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            p50_us: at_percentile(h, 50.0),
            p99_us: at_percentile(h, 99.0),
            max_us: h.max(),
        })
    }
}

/// A latency for people: `850us`, `1.21ms`, `2.50s`.
pub(crate) fn human_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// A rate for people: `950/s`, `12.3k/s`, `1.20M/s`.
pub(crate) fn human_rate(per_s: f64) -> String {
    if per_s < 1e4 {
        format!("{per_s:.0}/s")
    } else if per_s < 1e6 {
        format!("{:.1}k/s", per_s / 1e3)
    } else {
        format!("{:.2}M/s", per_s / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand_are_exact() {
        // Below 2048 µs every value has its own bucket, so the figures are exact.
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).expect("in range");
        }
        let s = LatencyStats::of(&h).expect("non-empty");
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_us, 1);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p90_us, 900);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p99_9_us, 999);
        assert_eq!(s.p99_99_us, 1000);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1e-9, "mean {}", s.mean_us);
    }

    #[test]
    fn large_values_stay_within_a_tenth_of_a_percent_and_clamp_at_an_hour() {
        let mut h = new_histogram();
        h.saturating_record(123_456_789);
        let max = h.max();
        assert!(
            max >= 123_456_789 && max as f64 <= 123_456_789.0 * 1.001,
            "{max}"
        );
        h.saturating_record(u64::MAX);
        assert!(h.max() >= HIGHEST_US && h.max() as f64 <= HIGHEST_US as f64 * 1.001);
    }

    #[test]
    fn empty_histograms_have_no_statistics() {
        assert_eq!(LatencyStats::of(&new_histogram()), None);
        assert_eq!(Quantiles::of(&new_histogram()), None);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_us(850), "850us");
        assert_eq!(human_us(1_210), "1.21ms");
        assert_eq!(human_us(2_500_000), "2.50s");
        assert_eq!(human_rate(950.0), "950/s");
        assert_eq!(human_rate(12_345.0), "12.3k/s");
        assert_eq!(human_rate(1_200_000.0), "1.20M/s");
    }
}
