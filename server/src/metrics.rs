//! Request metrics and the Prometheus text page (`GET /metrics`).
//!
//! Counters and histograms are atomics behind a lock-free map keyed by static labels, so
//! recording costs a hash lookup and a few relaxed additions. The page also renders the
//! core's counters (registry, sync, verify, expiry, snapshot), member states, and the
//! Nacos front end's own metrics.

use distro_core::Node;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Succeeded.
    Ok,
    /// Refused: invalid input (400).
    Invalid,
    /// The thing was not found (heartbeat of an unknown instance).
    NotFound,
    /// Forwarded to a node that disagrees about ownership (divergent member views).
    Misdirected,
    /// The owner could not be reached.
    Unavailable,
    /// Refused by a limit.
    Limited,
    /// Anything else.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::NotFound,
        Outcome::Misdirected,
        Outcome::Unavailable,
        Outcome::Limited,
        Outcome::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::NotFound => "not_found",
            Outcome::Misdirected => "misdirected",
            Outcome::Unavailable => "unavailable",
            Outcome::Limited => "limited",
            Outcome::Error => "error",
        }
    }

    /// The outcome of an item result code (HTTP-like).
    pub fn of_code(code: u32) -> Self {
        match code {
            200 => Outcome::Ok,
            400 => Outcome::Invalid,
            404 => Outcome::NotFound,
            421 => Outcome::Misdirected,
            503 => Outcome::Unavailable,
            429 => Outcome::Limited,
            _ => Outcome::Error,
        }
    }
}

#[derive(Default)]
struct OpStat {
    outcomes: [AtomicU64; 7],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Server-side counters that the core does not keep.
#[derive(Default)]
pub struct Metrics {
    ops: papaya::HashMap<(&'static str, &'static str), Arc<OpStat>>,
    /// Client writes forwarded to their owner, by outcome.
    forwarded: [AtomicU64; 7],
    /// Encoded bytes of peer requests sent, by kind.
    peer_bytes: papaya::HashMap<&'static str, Arc<AtomicU64>>,
    /// Peer requests sent, by kind and success.
    peer_requests: papaya::HashMap<(&'static str, bool), Arc<AtomicU64>>,
    /// Snapshots served to peers.
    pub snapshots_served: AtomicU64,
    /// Snapshot load attempts that failed.
    pub snapshot_load_failures: AtomicU64,
    /// Peer requests refused for a wrong or missing cluster token.
    pub peer_unauthenticated: AtomicU64,
    /// Connections refused at accept because a port had too many open.
    pub connections_refused: AtomicU64,
    /// Connections closed for not sending their first request in time.
    pub connections_timed_out: AtomicU64,
}

impl Metrics {
    /// Records one request of `op` through `api`.
    pub fn observe(
        &self,
        api: &'static str,
        op: &'static str,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        let ops = self.ops.pin();
        let stat = match ops.get(&(api, op)) {
            Some(s) => s.clone(),
            None => ops
                .get_or_insert_with((api, op), || Arc::new(OpStat::default()))
                .clone(),
        };
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(6);
        stat.outcomes[i].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(b) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
            stat.buckets[b].fetch_add(1, Relaxed);
        }
        stat.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
        stat.count.fetch_add(1, Relaxed);
    }

    /// Records `n` forwarded writes with `outcome`.
    pub fn forwarded(&self, outcome: Outcome, n: u64) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(6);
        self.forwarded[i].fetch_add(n, Relaxed);
    }

    /// Number of forwarded writes with `outcome`.
    pub fn forwarded_count(&self, outcome: Outcome) -> u64 {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(6);
        self.forwarded[i].load(Relaxed)
    }

    /// Records a peer request of `kind` of `bytes` encoded bytes.
    pub fn peer_request(&self, kind: &'static str, bytes: usize, ok: bool) {
        let b = self.peer_bytes.pin();
        b.get_or_insert_with(kind, || Arc::new(AtomicU64::new(0)))
            .fetch_add(bytes as u64, Relaxed);
        let r = self.peer_requests.pin();
        r.get_or_insert_with((kind, ok), || Arc::new(AtomicU64::new(0)))
            .fetch_add(1, Relaxed);
    }

    /// Requests of `op` through `api` with `outcome` so far.
    pub fn count(&self, api: &'static str, op: &'static str, outcome: Outcome) -> u64 {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(6);
        self.ops
            .pin()
            .get(&(api, op))
            .map_or(0, |s| s.outcomes[i].load(Relaxed))
    }

    /// Renders the page: request metrics, then the node's state and counters.
    pub fn render(&self, node: &Node, out: &mut String) {
        let mut ops: Vec<((&str, &str), Arc<OpStat>)> = self
            .ops
            .pin()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str("# HELP distro_requests_total Client requests handled, by API, operation and outcome.\n");
        out.push_str("# TYPE distro_requests_total counter\n");
        for ((api, op), s) in &ops {
            for (i, o) in Outcome::ALL.iter().enumerate() {
                let n = s.outcomes[i].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "distro_requests_total{{api=\"{api}\",op=\"{op}\",outcome=\"{}\"}} {n}",
                        o.as_str()
                    );
                }
            }
        }
        out.push_str("# HELP distro_request_duration_seconds Latency of client requests, by API and operation.\n");
        out.push_str("# TYPE distro_request_duration_seconds histogram\n");
        for ((api, op), s) in &ops {
            let mut cumulative = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "distro_request_duration_seconds_bucket{{api=\"{api}\",op=\"{op}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = s.count.load(Relaxed);
            let _ = writeln!(
                out,
                "distro_request_duration_seconds_bucket{{api=\"{api}\",op=\"{op}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "distro_request_duration_seconds_sum{{api=\"{api}\",op=\"{op}\"}} {}",
                s.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "distro_request_duration_seconds_count{{api=\"{api}\",op=\"{op}\"}} {count}"
            );
        }
        out.push_str("# HELP distro_forwarded_writes_total Client writes forwarded to their owner, by outcome.\n");
        out.push_str("# TYPE distro_forwarded_writes_total counter\n");
        for (i, o) in Outcome::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "distro_forwarded_writes_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                self.forwarded[i].load(Relaxed)
            );
        }
        out.push_str("# HELP distro_peer_request_bytes_total Encoded bytes of peer requests sent, by kind.\n");
        out.push_str("# TYPE distro_peer_request_bytes_total counter\n");
        let mut bytes: Vec<(&str, u64)> = self
            .peer_bytes
            .pin()
            .iter()
            .map(|(k, v)| (*k, v.load(Relaxed)))
            .collect();
        bytes.sort();
        for (k, v) in bytes {
            let _ = writeln!(out, "distro_peer_request_bytes_total{{kind=\"{k}\"}} {v}");
        }
        out.push_str("# HELP distro_peer_requests_total Peer requests sent, by kind and result.\n");
        out.push_str("# TYPE distro_peer_requests_total counter\n");
        let mut reqs: Vec<((&str, bool), u64)> = self
            .peer_requests
            .pin()
            .iter()
            .map(|(k, v)| (*k, v.load(Relaxed)))
            .collect();
        reqs.sort();
        for ((k, ok), v) in reqs {
            let result = if ok { "ok" } else { "failed" };
            let _ = writeln!(
                out,
                "distro_peer_requests_total{{kind=\"{k}\",result=\"{result}\"}} {v}"
            );
        }
        render_node(node, self, out);
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn render_node(node: &Node, m: &Metrics, out: &mut String) {
    let r = node.registry().stats();
    let s = node.stats();
    gauge(
        out,
        "distro_clients",
        "Clients held (owned and replicas).",
        r.clients,
    );
    gauge(
        out,
        "distro_clients_owned",
        "Clients this node owns.",
        node.owned_clients(),
    );
    gauge(out, "distro_instances", "Instances held.", r.instances);
    gauge(out, "distro_services", "Services indexed.", r.services);
    gauge(
        out,
        "distro_tombstones",
        "Deletion tombstones held.",
        r.tombstones,
    );
    gauge(
        out,
        "distro_loaded",
        "1 once the startup snapshot load finished.",
        u8::from(node.is_loaded()),
    );
    counter(
        out,
        "distro_sync_batches_sent_total",
        "Sync batches sent.",
        s.sync_batches_sent,
    );
    counter(
        out,
        "distro_sync_changes_sent_total",
        "Client changes sent in sync batches.",
        s.sync_changes_sent,
    );
    counter(
        out,
        "distro_sync_batches_failed_total",
        "Sync batches that failed.",
        s.sync_batches_failed,
    );
    counter(
        out,
        "distro_sync_changes_applied_total",
        "Replicated changes applied.",
        s.sync_changes_applied,
    );
    counter(
        out,
        "distro_sync_changes_stale_total",
        "Replicated changes ignored as stale.",
        s.sync_changes_stale,
    );
    counter(
        out,
        "distro_verify_rounds_total",
        "Verify rounds sent (one per peer per interval).",
        s.verify_rounds,
    );
    counter(
        out,
        "distro_verify_shards_mismatched_total",
        "Shards peers reported as differing.",
        s.verify_shards_mismatched,
    );
    counter(
        out,
        "distro_verify_repairs_total",
        "Clients re-sent or adopted because of verify.",
        s.verify_repairs,
    );
    counter(
        out,
        "distro_verify_removed_total",
        "Replica clients dropped because their owner no longer has them.",
        s.verify_removed,
    );
    counter(
        out,
        "distro_lease_expired_total",
        "Replica clients dropped on lease expiry.",
        s.lease_expired,
    );
    counter(
        out,
        "distro_lease_preserved_total",
        "Lease expiries held back by self-preservation.",
        s.lease_preserved,
    );
    counter(
        out,
        "distro_heartbeat_unhealthy_total",
        "Instances marked unhealthy for missing heartbeats.",
        s.heartbeat_unhealthy,
    );
    counter(
        out,
        "distro_heartbeat_expired_total",
        "Publications removed for missing heartbeats.",
        s.heartbeat_expired,
    );
    counter(
        out,
        "distro_heartbeat_expiry_held_total",
        "Expiries held back while this node reached at most half of the members.",
        s.heartbeat_expiry_held,
    );
    counter(
        out,
        "distro_snapshot_loads_total",
        "Snapshot loads completed.",
        s.snapshot_loads,
    );
    counter(
        out,
        "distro_snapshot_clients_loaded_total",
        "Clients applied from snapshots.",
        s.snapshot_clients,
    );
    counter(
        out,
        "distro_snapshot_load_failures_total",
        "Snapshot load attempts that failed.",
        m.snapshot_load_failures.load(Relaxed),
    );
    counter(
        out,
        "distro_snapshots_served_total",
        "Snapshots streamed to peers.",
        m.snapshots_served.load(Relaxed),
    );
    counter(
        out,
        "distro_peer_unauthenticated_total",
        "Peer requests refused for a wrong or missing cluster token.",
        m.peer_unauthenticated.load(Relaxed),
    );
    counter(
        out,
        "distro_connections_refused_total",
        "Connections refused at accept: a port had --max-tcp-connections open.",
        m.connections_refused.load(Relaxed),
    );
    counter(
        out,
        "distro_connections_timed_out_total",
        "Connections closed for not sending their first request within --header-read-timeout.",
        m.connections_timed_out.load(Relaxed),
    );
    counter(
        out,
        "distro_probes_failed_total",
        "Member probes that failed.",
        s.probes_failed,
    );
    counter(
        out,
        "distro_clients_adopted_total",
        "ip:port clients whose ownership moved here.",
        s.clients_adopted,
    );
    counter(
        out,
        "distro_clients_released_total",
        "ip:port clients whose ownership moved away.",
        s.clients_released,
    );
    out.push_str("# HELP distro_member_state Member states as this node sees them (1 for the current state).\n");
    out.push_str("# TYPE distro_member_state gauge\n");
    for (id, state) in node.member_states() {
        let addr = node.members().addr(id);
        for st in ["up", "suspicious", "down"] {
            let v = u8::from(state.as_str() == st);
            let _ = writeln!(
                out,
                "distro_member_state{{member=\"{addr}\",state=\"{st}\"}} {v}"
            );
        }
    }
    out.push_str("# HELP distro_sync_pending Clients pending sync, by peer.\n# TYPE distro_sync_pending gauge\n");
    for p in node.members().peers() {
        let _ = writeln!(
            out,
            "distro_sync_pending{{peer=\"{}\"}} {}",
            node.members().addr(p),
            node.pending_sync(p)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe("http", "register", Outcome::Ok, Duration::from_micros(200));
        m.observe(
            "http",
            "register",
            Outcome::Invalid,
            Duration::from_millis(3),
        );
        let node = Node::new(
            distro_core::Config::default(),
            distro_core::MemberList::new("127.0.0.1:8848", &[]).unwrap(),
            0,
        )
        .unwrap();
        let mut out = String::new();
        m.render(&node, &mut out);
        assert!(
            out.contains(
                "distro_requests_total{api=\"http\",op=\"register\",outcome=\"invalid\"} 1"
            )
        );
        assert!(out.contains(
            "distro_request_duration_seconds_bucket{api=\"http\",op=\"register\",le=\"0.00025\"} 1"
        ));
        assert!(out.contains(
            "distro_request_duration_seconds_bucket{api=\"http\",op=\"register\",le=\"0.005\"} 2"
        ));
        assert!(
            out.contains("distro_request_duration_seconds_count{api=\"http\",op=\"register\"} 2")
        );
        assert!(out.contains("distro_member_state{member=\"127.0.0.1:8848\",state=\"up\"} 1"));
    }
}
