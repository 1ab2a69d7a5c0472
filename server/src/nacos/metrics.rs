//! Counters of the Nacos front end, and their Prometheus text rendering.
//!
//! Plain relaxed atomics bumped on the request and push paths; [`NacosStats`] is a
//! snapshot for tests and the HTTP `/metrics` page, which encodes it with
//! `prometheus-client`. Requests are counted by class and
//! outcome; pushes as sent, acknowledged or failed (a failed push is retried and counted
//! again), with a histogram of the time from sending a push to its acknowledgement.

use crate::metrics::encode::{encode_counter, encode_gauge};
use crate::nacos::codec::Kind;
use crate::nacos::error::{self, NacosError};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How a request ended, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Unregistered,
    NoHandler,
    Invalid,
    BadBody,
    Refused,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Unregistered,
        Outcome::NoHandler,
        Outcome::Invalid,
        Outcome::BadBody,
        Outcome::Refused,
        Outcome::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unregistered => "unregistered",
            Outcome::NoHandler => "no_handler",
            Outcome::Invalid => "invalid",
            Outcome::BadBody => "bad_body",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a failed request.
    pub(crate) fn of_error(e: &NacosError) -> Outcome {
        match e.error_code {
            error::UN_REGISTER => Outcome::Unregistered,
            error::NO_HANDLER => Outcome::NoHandler,
            error::INVALID_PARAM => Outcome::Invalid,
            error::BAD_GATEWAY => Outcome::BadBody,
            error::OVER_THRESHOLD | error::INVALID_SERVER_STATUS => Outcome::Refused,
            _ => Outcome::Error,
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Its bi-stream ended or failed (the client went away).
    StreamEnded,
    /// It did not answer a `ClientDetectionRequest` in time.
    DetectionFailed,
    /// It never sent its `ConnectionSetupRequest`.
    SetupTimeout,
    /// The front end shut down.
    Shutdown,
    /// It left `max_push_failures` pushes in a row unacknowledged.
    PushesUnacknowledged,
}

impl CloseReason {
    const ALL: [CloseReason; 5] = [
        CloseReason::StreamEnded,
        CloseReason::DetectionFailed,
        CloseReason::SetupTimeout,
        CloseReason::Shutdown,
        CloseReason::PushesUnacknowledged,
    ];

    fn name(self) -> &'static str {
        match self {
            CloseReason::StreamEnded => "stream_ended",
            CloseReason::DetectionFailed => "detection_failed",
            CloseReason::SetupTimeout => "setup_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::PushesUnacknowledged => "pushes_unacknowledged",
        }
    }
}

/// Upper bounds (ms) of the push acknowledgement histogram buckets.
const PUSH_ACK_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

const KINDS: usize = Kind::COUNTED.len();
const OUTCOMES: usize = Outcome::ALL.len();

/// The counters.
pub(crate) struct Metrics {
    requests: [[AtomicU64; OUTCOMES]; KINDS],
    connections_opened: AtomicU64,
    connections_refused: AtomicU64,
    connections_closed: [AtomicU64; CloseReason::ALL.len()],
    pushes_sent: AtomicU64,
    pushes_acked: AtomicU64,
    pushes_failed: AtomicU64,
    push_ack_buckets: [AtomicU64; PUSH_ACK_BUCKETS_MS.len()],
    push_ack_micros: AtomicU64,
    detections_sent: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            connections_opened: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_closed: std::array::from_fn(|_| AtomicU64::new(0)),
            pushes_sent: AtomicU64::new(0),
            pushes_acked: AtomicU64::new(0),
            pushes_failed: AtomicU64::new(0),
            push_ack_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            push_ack_micros: AtomicU64::new(0),
            detections_sent: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub(crate) fn request(&self, kind: Kind, outcome: Outcome) {
        let o = Outcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
        self.requests[kind.index()][o].fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        let i = CloseReason::ALL
            .iter()
            .position(|x| *x == reason)
            .unwrap_or(0);
        self.connections_closed[i].fetch_add(1, Relaxed);
    }
    pub(crate) fn push_sent(&self) {
        self.pushes_sent.fetch_add(1, Relaxed);
    }
    pub(crate) fn push_failed(&self) {
        self.pushes_failed.fetch_add(1, Relaxed);
    }
    pub(crate) fn push_acked(&self, rtt: Duration) {
        self.pushes_acked.fetch_add(1, Relaxed);
        self.push_ack_micros
            .fetch_add(rtt.as_micros() as u64, Relaxed);
        let ms = rtt.as_secs_f64() * 1000.0;
        if let Some(i) = PUSH_ACK_BUCKETS_MS.iter().position(|b| ms <= *b as f64) {
            self.push_ack_buckets[i].fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn detection_sent(&self) {
        self.detections_sent.fetch_add(1, Relaxed);
    }

    /// A snapshot; `connections` and `subscribed_services` are gauges read by the caller.
    pub(crate) fn snapshot(&self, connections: usize, subscribed_services: usize) -> NacosStats {
        let mut requests = Vec::new();
        for (k, kind) in Kind::COUNTED.iter().enumerate() {
            for (o, outcome) in Outcome::ALL.iter().enumerate() {
                let n = self.requests[k][o].load(Relaxed);
                if n > 0 {
                    requests.push(RequestCount {
                        kind: kind.name(),
                        outcome: outcome.name(),
                        count: n,
                    });
                }
            }
        }
        NacosStats {
            connections,
            subscribed_services,
            connections_opened: self.connections_opened.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections_closed: CloseReason::ALL
                .iter()
                .zip(&self.connections_closed)
                .map(|(r, n)| (r.name(), n.load(Relaxed)))
                .collect(),
            requests,
            pushes_sent: self.pushes_sent.load(Relaxed),
            pushes_acked: self.pushes_acked.load(Relaxed),
            pushes_failed: self.pushes_failed.load(Relaxed),
            push_ack_buckets_ms: PUSH_ACK_BUCKETS_MS
                .iter()
                .zip(&self.push_ack_buckets)
                .map(|(b, n)| (*b, n.load(Relaxed)))
                .collect(),
            push_ack_seconds_sum: self.push_ack_micros.load(Relaxed) as f64 / 1e6,
            detections_sent: self.detections_sent.load(Relaxed),
        }
    }
}

/// Requests of one class with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCount {
    /// The request class (`metadata.type`), or `unknown`.
    pub kind: &'static str,
    /// `ok`, `unregistered` (301), `no_handler` (302), `invalid` (400), `bad_body` (502),
    /// `refused` (503 over a limit, 300 shutting down) or `error` (500).
    pub outcome: &'static str,
    /// How many.
    pub count: u64,
}

/// A snapshot of the front end's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct NacosStats {
    /// Connections set up and not closed (gauge).
    pub connections: usize,
    /// Services with at least one subscriber on this node (gauge).
    pub subscribed_services: usize,
    /// Connections set up so far.
    pub connections_opened: u64,
    /// Connections refused because of `max_connections`.
    pub connections_refused: u64,
    /// Connections closed, by reason: set-up connections whose stream ended
    /// (`stream_ended`), that failed detection (`detection_failed`), that left
    /// `max_push_failures` pushes in a row unacknowledged (`pushes_unacknowledged`) or
    /// that were open at `shutdown`, and connections that never finished their setup
    /// (`setup_timeout`).
    pub connections_closed: Vec<(&'static str, u64)>,
    /// Requests by class and outcome (only non-zero counts).
    pub requests: Vec<RequestCount>,
    /// `NotifySubscriberRequest`s queued to subscribers.
    pub pushes_sent: u64,
    /// Pushes acknowledged with success.
    pub pushes_acked: u64,
    /// Pushes that could not be queued, timed out or were refused (each is retried).
    pub pushes_failed: u64,
    /// Push acknowledgement times: `(upper bound in ms, count in that bucket)`, not
    /// cumulative; slower acknowledgements are only in the sum and count.
    pub push_ack_buckets_ms: Vec<(u64, u64)>,
    /// Sum of push acknowledgement times, in seconds.
    pub push_ack_seconds_sum: f64,
    /// `ClientDetectionRequest`s sent to idle connections.
    pub detections_sent: u64,
}

impl NacosStats {
    /// The count of requests of class `kind` with `outcome` (0 if none).
    pub fn requests_of(&self, kind: &str, outcome: &str) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.kind == kind && r.outcome == outcome)
            .map(|r| r.count)
            .sum()
    }

    /// Appends the Prometheus text exposition of these counters to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        #[derive(Debug)]
        struct Stats(NacosStats);
        impl Collector for Stats {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
                self.0.encode(&mut enc)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Stats(self.clone())));
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(out, &registry);
    }
}

impl NacosStats {
    /// Encodes these counters (for the `/metrics` page).
    pub(crate) fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        encode_gauge(
            enc,
            "distro_nacos_connections",
            "Nacos SDK connections set up on this node.",
            &self.connections,
        )?;
        encode_gauge(
            enc,
            "distro_nacos_subscribed_services",
            "Services with subscribers on this node.",
            &self.subscribed_services,
        )?;
        encode_counter(
            enc,
            "distro_nacos_connections_opened",
            "Nacos SDK connections set up.",
            self.connections_opened,
        )?;
        encode_counter(
            enc,
            "distro_nacos_connections_refused",
            "Connections refused over max_connections.",
            self.connections_refused,
        )?;
        let mut m = enc.encode_descriptor(
            "distro_nacos_connections_closed",
            "Connections closed, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in &self.connections_closed {
            m.encode_family(&[("reason", *reason)])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        let mut m = enc.encode_descriptor(
            "distro_nacos_requests",
            "Nacos requests by class and outcome.",
            None,
            MetricType::Counter,
        )?;
        for r in &self.requests {
            m.encode_family(&[("type", r.kind), ("outcome", r.outcome)])?
                .encode_counter::<NoLabelSet, _, u64>(&r.count, None)?;
        }
        let mut m = enc.encode_descriptor(
            "distro_nacos_pushes",
            "NotifySubscriberRequest pushes, by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [
            ("sent", self.pushes_sent),
            ("acked", self.pushes_acked),
            ("failed", self.pushes_failed),
        ] {
            m.encode_family(&[("result", result)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        let buckets: Vec<(f64, u64)> = self
            .push_ack_buckets_ms
            .iter()
            .map(|(le, n)| (*le as f64 / 1000.0, *n))
            .collect();
        enc.encode_descriptor(
            "distro_nacos_push_ack_seconds",
            "Time from sending a push to its acknowledgement.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            self.push_ack_seconds_sum,
            self.pushes_acked,
            &buckets,
            None,
        )?;
        encode_counter(
            enc,
            "distro_nacos_detections",
            "ClientDetectionRequests sent to idle connections.",
            self.detections_sent,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        m.request(Kind::Instance, Outcome::Ok);
        m.request(Kind::Instance, Outcome::Ok);
        m.request(Kind::Unknown, Outcome::NoHandler);
        m.request(Kind::Response, Outcome::NoHandler);
        m.push_sent();
        m.push_acked(Duration::from_millis(3));
        m.connection_closed(CloseReason::DetectionFailed);
        let s = m.snapshot(4, 1);
        assert_eq!(s.requests_of("InstanceRequest", "ok"), 2);
        assert_eq!(s.requests_of("unknown", "no_handler"), 2);
        assert_eq!(s.push_ack_buckets_ms[2], (5, 1));
        let mut text = String::new();
        s.render_prometheus(&mut text);
        assert!(text.contains("distro_nacos_connections 4\n"), "{text}");
        assert!(
            text.contains(
                "distro_nacos_requests_total{type=\"InstanceRequest\",outcome=\"ok\"} 2\n"
            )
        );
        assert!(
            text.contains("distro_nacos_connections_closed_total{reason=\"detection_failed\"} 1\n")
        );
        assert!(text.contains("distro_nacos_push_ack_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("distro_nacos_push_ack_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("distro_nacos_pushes_total{result=\"acked\"} 1\n"));
        assert_eq!(
            Outcome::of_error(&NacosError::unregistered()),
            Outcome::Unregistered
        );
    }
}
