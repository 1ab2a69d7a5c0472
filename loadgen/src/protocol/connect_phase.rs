//! The connect phase: connections opened before the measured phases.
//!
//! A protocol with a connection per client (Nacos 2.x) opens and handshakes every
//! client's connection before the first registration is sent, so that the registration
//! figures do not include handshakes. [`ConnectReport`] is what that phase measured; the
//! run prints it after the summary table and writes it to `connect.json`.

use std::time::Duration;

use serde::Serialize;

use crate::measure::latency::{LatencyStats, micros, new_histogram};

/// Handshakes in progress at once during the connect phase: the ramp. A listen backlog
/// drops SYNs beyond ~1,000 half-open connections, and every handshake costs the nodes a
/// few round trips; 256 keeps the connect rate near its peak on loopback without drops.
pub const CONNECT_PARALLEL: usize = 256;

/// What the connect phase measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectReport {
    /// Connections attempted.
    pub attempted: u64,
    /// Connections that failed (their clients connect on first use instead).
    pub failed: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Wall-clock seconds of the whole phase.
    pub took_s: f64,
    /// Handshakes in progress at once.
    pub parallel: usize,
    /// Latency of each successful connection (TCP connect and protocol handshake), µs.
    pub latency: Option<LatencyStats>,
}

impl ConnectReport {
    /// Connections opened per second.
    pub fn rate(&self) -> f64 {
        (self.attempted - self.failed) as f64 / self.took_s.max(1e-9)
    }

    /// One line for the end of a run.
    pub fn line(&self) -> String {
        let mut s = format!(
            "connect phase: {} connections in {:.2} s ({:.0}/s, {} handshakes at a time), {} failed",
            self.attempted - self.failed,
            self.took_s,
            self.rate(),
            self.parallel,
            self.failed
        );
        if let Some(l) = &self.latency {
            s.push_str(&format!(
                "; handshake latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                l.p50_us as f64 / 1e3,
                l.p99_us as f64 / 1e3,
                l.max_us as f64 / 1e3
            ));
        }
        if let Some(e) = &self.first_error {
            s.push_str(&format!(" (first failure: {e})"));
        }
        s.push('\n');
        s
    }
}

/// Collects connection latencies into a [`ConnectReport`].
pub struct ConnectMeter {
    histogram: hdrhistogram::Histogram<u64>,
    attempted: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Default for ConnectMeter {
    fn default() -> Self {
        Self {
            histogram: new_histogram(),
            attempted: 0,
            failed: 0,
            first_error: None,
        }
    }
}

impl ConnectMeter {
    /// One connection: its latency, or why it failed.
    pub fn record(&mut self, result: Result<Duration, String>) {
        self.attempted += 1;
        match result {
            Ok(d) => {
                let _ = self
                    .histogram
                    .record(micros(d).clamp(1, crate::measure::latency::HIGHEST_US));
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// The report of a phase that took `took` with `parallel` handshakes at a time.
    pub fn finish(self, took: Duration, parallel: usize) -> ConnectReport {
        ConnectReport {
            attempted: self.attempted,
            failed: self.failed,
            first_error: self.first_error,
            took_s: took.as_secs_f64(),
            parallel,
            latency: LatencyStats::of(&self.histogram),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_reports_rate_latency_and_failures() {
        let mut m = ConnectMeter::default();
        for ms in 1..=100 {
            m.record(Ok(Duration::from_millis(ms)));
        }
        m.record(Err("refused".into()));
        m.record(Err("later".into()));
        let r = m.finish(Duration::from_secs(2), 8);
        assert_eq!((r.attempted, r.failed), (102, 2));
        assert_eq!(r.first_error.as_deref(), Some("refused"));
        assert!((r.rate() - 50.0).abs() < 1e-9);
        let l = r.latency.expect("samples");
        assert_eq!(l.count, 100);
        assert!((49_000..=51_000).contains(&l.p50_us), "{l:?}");
        let line = r.line();
        assert!(
            line.starts_with("connect phase: 100 connections in 2.00 s (50/s"),
            "{line}"
        );
        assert!(
            line.contains("2 failed") && line.contains("refused"),
            "{line}"
        );
    }
}
