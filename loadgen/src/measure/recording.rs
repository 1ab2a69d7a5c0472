//! A finished run's measurements: whole-run histograms and counts per operation, the
//! replication lag histogram, the timeline and the markers.
//!
//! Produced by [`Recorder::finish`](crate::Recorder::finish) or by merging shard runs
//! ([`merge_runs`](crate::merge_runs)); consumed by [`write_report`](crate::write_report).
//! Immutable once made; it holds no per-request data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

use super::latency::new_histogram;
use super::op::{LatencyKind, Op};
use super::timeline::{Marker, TimelineRow};

/// Whole-run figures of one operation.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTotals {
    /// Corrected latency of every successful request, microseconds.
    pub corrected: Histogram<u64>,
    /// Uncorrected latency (service time) of every successful request, microseconds.
    pub uncorrected: Histogram<u64>,
    /// Send lateness of every successful request: from its intended instant to its send,
    /// microseconds (the load generator's own delay, part of the corrected latency; 0
    /// throughout in a closed model).
    pub lateness: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Requests sent later than the late threshold after their intended time.
    pub late: u64,
    /// Requests intended by the schedule but never sent.
    pub dropped: u64,
    /// Failed requests by error code.
    pub errors: BTreeMap<String, u64>,
    /// The target rate averaged over the time a target was set (above 0), per second.
    pub target_per_s: f64,
    /// The operation's active spans, as times since the run's start, in time order and
    /// disjoint: together they run from the earliest intended send of a request that
    /// completed (ok or failed) to the latest response, less the idle gaps: stretches of
    /// at least [`IDLE_GAP`] with no request of the operation intended or in flight and no
    /// target rate set. Its rates are over these spans. Empty when no request completed.
    pub spans: Vec<(Duration, Duration)>,
    /// Closed model: no schedule, a request is sent when a client is free, so there is no
    /// intended time to correct from and the latency is service time.
    pub closed: bool,
}

impl Default for OpTotals {
    fn default() -> Self {
        Self {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            lateness: new_histogram(),
            ok: 0,
            late: 0,
            dropped: 0,
            errors: BTreeMap::new(),
            target_per_s: 0.0,
            spans: Vec::new(),
            closed: false,
        }
    }
}

impl OpTotals {
    /// Failed requests, all codes together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Requests the schedule called for: successful, failed and dropped.
    pub fn scheduled(&self) -> u64 {
        self.ok + self.error_count() + self.dropped
    }

    /// Whether the operation was used at all in the run.
    pub fn is_used(&self) -> bool {
        self.scheduled() > 0 || self.target_per_s > 0.0
    }

    /// The first intended send and the last response (`None` when no request completed).
    pub fn window(&self) -> Option<(Duration, Duration)> {
        Some((self.spans.first()?.0, self.spans.last()?.1))
    }

    /// The active time: the length of the active spans, idle gaps left out (zero when no
    /// request completed).
    pub fn active(&self) -> Duration {
        self.spans
            .iter()
            .map(|(from, to)| to.saturating_sub(*from))
            .sum()
    }

    /// The latency histogram of one kind.
    pub fn histogram(&self, kind: LatencyKind) -> &Histogram<u64> {
        match kind {
            LatencyKind::Corrected => &self.corrected,
            LatencyKind::Uncorrected => &self.uncorrected,
        }
    }
}

/// Everything measured in one run (or in several shard runs merged).
#[derive(Clone, Debug)]
pub struct Recording {
    /// Wall-clock time the measurement started.
    pub started_at: SystemTime,
    /// Length of the measured run.
    pub duration: Duration,
    /// The timeline's nominal interval.
    pub interval: Duration,
    /// Sends starting later than this after their intended time counted as late.
    pub late_threshold: Duration,
    /// Figures per operation, in the order of [`Op::ALL`].
    pub ops: [OpTotals; 5],
    /// Time from the owner's acknowledgement of a probe registration to its visibility on
    /// another node, microseconds; one sample per probe and non-owner node.
    pub replication_lag: Histogram<u64>,
    /// Probe registrations that never became visible on some node before the driver's
    /// deadline (one per probe and node).
    pub unreplicated: u64,
    /// Probe sightings on another node that arrived before the acknowledgement (no lag
    /// sample; see [`Recorder::record_visible_before_ack`](crate::measure::recorder::Recorder::record_visible_before_ack)).
    pub visible_before_ack: u64,
    /// One row per interval.
    pub timeline: Vec<TimelineRow>,
    /// The markers, in time order.
    pub markers: Vec<Marker>,
    /// The interval log the run streamed, if any.
    pub interval_log: Option<PathBuf>,
}

impl Recording {
    /// The figures of `op`.
    pub fn op(&self, op: Op) -> &OpTotals {
        &self.ops[op.index()]
    }

    /// Successful requests per second of `op` over its active window (not the whole
    /// run: registrations that ran for 2 s of a 60 s run are a rate over those 2 s).
    pub fn throughput_per_s(&self, op: Op) -> f64 {
        let o = self.op(op);
        per_second(o.ok, o.active())
    }

    /// The span from the first intended send of any operation to the last response.
    pub fn active_span(&self) -> Duration {
        let from = self
            .ops
            .iter()
            .filter_map(OpTotals::window)
            .map(|w| w.0)
            .min();
        let to = self
            .ops
            .iter()
            .filter_map(OpTotals::window)
            .map(|w| w.1)
            .max();
        match (from, to) {
            (Some(from), Some(to)) => to.saturating_sub(from),
            _ => Duration::ZERO,
        }
    }

    /// Operations used in the run, in [`Op::ALL`] order.
    pub fn used_ops(&self) -> Vec<Op> {
        Op::ALL
            .into_iter()
            .filter(|op| self.op(*op).is_used())
            .collect()
    }

    /// Failed requests of every operation by code.
    pub fn errors_by_code(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for o in &self.ops {
            for (code, n) in &o.errors {
                *all.entry(code.clone()).or_insert(0) += n;
            }
        }
        all
    }

    /// Names of every gauge in the timeline, sorted.
    pub fn gauge_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .timeline
            .iter()
            .flat_map(|r| r.gauges.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The shortest pause in an operation's activity that is left out of its active time: a
/// stretch this long or longer with nothing of the operation intended or in flight and no
/// target rate set. Shorter pauses (between two beats of a small population, between
/// two ticks) count as active.
pub const IDLE_GAP: Duration = Duration::from_secs(1);

/// The union of `spans` with every gap shorter than [`IDLE_GAP`] filled, clipped to
/// `within`: disjoint spans in time order.
pub(crate) fn active_spans<T>(mut spans: Vec<(T, T)>, within: (T, T)) -> Vec<(T, T)>
where
    T: Copy + Ord + std::ops::Add<Duration, Output = T>,
{
    spans.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(spans.len().min(16));
    for (from, to) in spans {
        let (from, to) = (from.max(within.0), to.min(within.1));
        if from > to {
            continue;
        }
        match out.last_mut() {
            Some(last) if from < last.1 + IDLE_GAP => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

/// `count / duration`, 0 for an empty duration.
pub(crate) fn per_second(count: u64, duration: Duration) -> f64 {
    let s = duration.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn gaps_shorter_than_the_idle_gap_count_as_active_and_longer_ones_do_not() {
        let spans = vec![
            (ms(5_000), ms(5_200)),
            (ms(0), ms(400)),
            (ms(300), ms(900)),
            (ms(1_800), ms(2_000)),
            (ms(3_000), ms(3_100)),
        ];
        // 0-900 and 1,800-2,000 are 900 ms apart: one span. 2,000-3,000 is a whole second:
        // idle. 5,000-5,200 is clipped to the window's end at 5,100.
        let got = active_spans(spans, (ms(0), ms(5_100)));
        assert_eq!(
            got,
            vec![
                (ms(0), ms(2_000)),
                (ms(3_000), ms(3_100)),
                (ms(5_000), ms(5_100))
            ]
        );
        assert!(active_spans::<Duration>(Vec::new(), (ms(0), ms(1))).is_empty());
    }
}
