//! Request metrics and the Prometheus text page (`GET /metrics`).
//!
//! Counters and histograms are atomics behind a lock-free map keyed by static labels, so
//! recording costs a hash lookup and a few relaxed additions. The page ([`Page`]) reads
//! them at scrape time, with the core's counters (registry, sync, verify, expiry,
//! snapshot), member states, and the Nacos front end's own metrics, and writes them with
//! `prometheus-client`'s text encoder (escaping, `HELP`/`TYPE` lines, histogram buckets
//! and number formats are the library's; the families, names and labels are ours).

pub(crate) mod encode;

use crate::nacos::NacosStats;
use distro_core::Node;
use distro_core::hash::DIGEST_VERSION;
use encode::{encode_counter, encode_gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
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
    /// Every outcome, in declaration order ([`Outcome::index`]).
    pub const ALL: [Outcome; 7] = [
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

    /// The position of the outcome in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
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
    /// Snapshot requests refused because this node had not loaded its own yet.
    pub snapshots_refused: AtomicU64,
    /// Snapshot load attempts that failed.
    pub snapshot_load_failures: AtomicU64,
    /// Peer requests refused for a wrong or missing cluster token.
    pub peer_unauthenticated: AtomicU64,
    /// Connections refused at accept because a port had too many open.
    pub connections_refused: AtomicU64,
    /// Connections closed for not sending their first request in time.
    pub connections_timed_out: AtomicU64,
    /// Verify exchanges with a peer that computes its digests by another definition.
    pub verify_other_digests: AtomicU64,
    /// Verify reports (a replica's answer to this owner's lists) of more entries than the
    /// driver handles on the runtime's threads, handled on the blocking pool.
    pub verify_long_reports: AtomicU64,
    /// The peers (by address) whose other digest definition was logged, with the first
    /// one logged: one entry per peer, and peers are members (current or former: the
    /// callers name a member the exchange was admitted from or sent to), so it stays
    /// small whatever versions a peer sends.
    other_digests_logged: parking_lot::Mutex<Vec<(String, u32)>>,
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
        self.observe_n(api, op, outcome, elapsed, 1);
    }

    /// Records `n` requests of `op` through `api`, each with `outcome` and `elapsed` (the
    /// items of one batch: one look-up of the counters for all of them).
    pub fn observe_n(
        &self,
        api: &'static str,
        op: &'static str,
        outcome: Outcome,
        elapsed: Duration,
        n: u64,
    ) {
        if n == 0 {
            return;
        }
        let ops = self.ops.pin();
        let stat = match ops.get(&(api, op)) {
            Some(s) => s.clone(),
            None => ops
                .get_or_insert_with((api, op), || Arc::new(OpStat::default()))
                .clone(),
        };
        let i = outcome.index();
        stat.outcomes[i].fetch_add(n, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(b) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
            stat.buckets[b].fetch_add(n, Relaxed);
        }
        stat.sum_micros
            .fetch_add((elapsed.as_micros() as u64).saturating_mul(n), Relaxed);
        stat.count.fetch_add(n, Relaxed);
    }

    /// Records `n` forwarded writes with `outcome`.
    pub fn forwarded(&self, outcome: Outcome, n: u64) {
        let i = outcome.index();
        self.forwarded[i].fetch_add(n, Relaxed);
    }

    /// Number of forwarded writes with `outcome`.
    pub fn forwarded_count(&self, outcome: Outcome) -> u64 {
        let i = outcome.index();
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

    /// Notes the digest definition peer `peer` sent or answered with in a verify exchange
    /// ([`DIGEST_VERSION`]; 0 from a build before it was sent, which is taken as unknown,
    /// not as different). A different one is counted (each exchange once on each side:
    /// the sender counts the answer's, the receiver the request's, whatever the core then
    /// makes of the digests), and logged the first time a peer shows one, not again for
    /// that peer whatever it sends later (a peer cannot flood the log by changing the
    /// number): every verify round between the two finds every shard different and falls
    /// back to the owner's lists, which renew leases as matching digests do, at the cost of
    /// a walk of every client each round, until all nodes run one build.
    pub fn digest_version_of(&self, peer: &str, version: u32) {
        if version == 0 || version == DIGEST_VERSION {
            return;
        }
        self.verify_other_digests.fetch_add(1, Relaxed);
        let mut logged = self.other_digests_logged.lock();
        if logged.iter().any(|(p, _)| p == peer) {
            return;
        }
        logged.push((peer.to_string(), version));
        tracing::warn!(
            peer,
            peer_digest_version = version,
            digest_version = DIGEST_VERSION,
            "this peer computes verify digests by another definition (a build on the other \
             side of a digest change): every verify round with it falls back to lists of \
             every shard, a walk of every client, until all nodes run one build"
        );
    }

    /// Requests of `op` through `api` with `outcome` so far.
    pub fn count(&self, api: &'static str, op: &'static str, outcome: Outcome) -> u64 {
        let i = outcome.index();
        self.ops
            .pin()
            .get(&(api, op))
            .map_or(0, |s| s.outcomes[i].load(Relaxed))
    }
}

/// The `/metrics` page: a `prometheus-client` [`Collector`] over the request counters,
/// the node's state and counters and the Nacos front end's counters, encoded at scrape
/// time in the Prometheus text format 0.0.4 (counters are registered without their
/// `_total`, which the encoder appends).
pub struct Page {
    registry: Registry,
}

impl Page {
    /// The page of `node`, its request `metrics` and, when given, its Nacos front end.
    pub fn new(
        node: Arc<Node>,
        metrics: Arc<Metrics>,
        nacos: Option<Arc<crate::nacos::NacosFrontend>>,
    ) -> Self {
        Self::with_nacos_stats(node, metrics, move || nacos.as_ref().map(|n| n.stats()))
    }

    /// The page with the Nacos counters read by `nacos`.
    fn with_nacos_stats(
        node: Arc<Node>,
        metrics: Arc<Metrics>,
        nacos: impl Fn() -> Option<NacosStats> + Send + Sync + 'static,
    ) -> Self {
        let nacos = Box::new(nacos);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Sources {
            node,
            metrics,
            nacos,
        }));
        Self { registry }
    }

    /// Appends the page to `out`.
    pub fn render(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(out, &self.registry);
    }
}

type NacosSource = Box<dyn Fn() -> Option<NacosStats> + Send + Sync>;

struct Sources {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    nacos: NacosSource,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Collector for Sources {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.metrics.encode(&mut enc)?;
        encode_node(&self.node, &self.metrics, &mut enc)?;
        if let Some(n) = (self.nacos)() {
            n.encode(&mut enc)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Encodes the request metrics.
    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut ops: Vec<((&str, &str), Arc<OpStat>)> = self
            .ops
            .pin()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        let mut m = enc.encode_descriptor(
            "distro_requests",
            "Client requests handled, by API, operation and outcome.",
            None,
            MetricType::Counter,
        )?;
        for ((api, op), s) in &ops {
            for (i, o) in Outcome::ALL.iter().enumerate() {
                let n = s.outcomes[i].load(Relaxed);
                if n > 0 {
                    m.encode_family(&[("api", *api), ("op", *op), ("outcome", o.as_str())])?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "distro_request_duration_seconds",
            "Latency of client requests, by API and operation.",
            None,
            MetricType::Histogram,
        )?;
        let mut buckets = [(0.0, 0); LATENCY_BUCKETS.len()];
        for ((api, op), s) in &ops {
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                buckets[i] = (*le, s.buckets[i].load(Relaxed));
            }
            m.encode_family(&[("api", *api), ("op", *op)])?
                .encode_histogram::<NoLabelSet>(
                    s.sum_micros.load(Relaxed) as f64 / 1e6,
                    s.count.load(Relaxed),
                    &buckets,
                    None,
                )?;
        }
        let mut m = enc.encode_descriptor(
            "distro_forwarded_writes",
            "Client writes forwarded to their owner, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (i, o) in Outcome::ALL.iter().enumerate() {
            m.encode_family(&[("outcome", o.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&self.forwarded[i].load(Relaxed), None)?;
        }
        let mut bytes: Vec<(&str, u64)> = self
            .peer_bytes
            .pin()
            .iter()
            .map(|(k, v)| (*k, v.load(Relaxed)))
            .collect();
        bytes.sort();
        let mut m = enc.encode_descriptor(
            "distro_peer_request_bytes",
            "Encoded bytes of peer requests sent, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (k, v) in bytes {
            m.encode_family(&[("kind", k)])?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        let mut reqs: Vec<((&str, bool), u64)> = self
            .peer_requests
            .pin()
            .iter()
            .map(|(k, v)| (*k, v.load(Relaxed)))
            .collect();
        reqs.sort();
        let mut m = enc.encode_descriptor(
            "distro_peer_requests",
            "Peer requests sent, by kind and result.",
            None,
            MetricType::Counter,
        )?;
        for ((k, ok), v) in reqs {
            let result = if ok { "ok" } else { "failed" };
            m.encode_family(&[("kind", k), ("result", result)])?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        Ok(())
    }
}

fn encode_node(node: &Node, m: &Metrics, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let r = node.registry().stats();
    let s = node.stats();
    encode_gauge(
        enc,
        "distro_clients",
        "Clients held (owned and replicas).",
        &r.clients,
    )?;
    encode_gauge(
        enc,
        "distro_clients_owned",
        "Clients this node owns.",
        &node.owned_clients(),
    )?;
    encode_gauge(enc, "distro_instances", "Instances held.", &r.instances)?;
    encode_gauge(enc, "distro_services", "Services indexed.", &r.services)?;
    encode_gauge(
        enc,
        "distro_tombstones",
        "Deletion tombstones held.",
        &r.tombstones,
    )?;
    encode_gauge(
        enc,
        "distro_loaded",
        "1 once the startup snapshot load finished.",
        &u32::from(node.is_loaded()),
    )?;
    let counters: [(&str, &str, u64); 29] = [
        (
            "distro_sync_batches_sent",
            "Sync batches sent.",
            s.sync_batches_sent,
        ),
        (
            "distro_sync_batches_shared",
            "Sync batches sent as a copy of another peer's batch: taken and encoded once for both.",
            s.sync_batches_shared,
        ),
        (
            "distro_sync_changes_sent",
            "Client changes sent in sync batches.",
            s.sync_changes_sent,
        ),
        (
            "distro_sync_batches_failed",
            "Sync batches that failed.",
            s.sync_batches_failed,
        ),
        (
            "distro_sync_changes_applied",
            "Replicated changes applied.",
            s.sync_changes_applied,
        ),
        (
            "distro_sync_changes_stale",
            "Replicated changes ignored as stale.",
            s.sync_changes_stale,
        ),
        (
            "distro_verify_rounds",
            "Verify rounds sent (one per peer per interval).",
            s.verify_rounds,
        ),
        (
            "distro_verify_shards_mismatched",
            "Shards peers reported as differing.",
            s.verify_shards_mismatched,
        ),
        (
            "distro_verify_repairs",
            "Clients re-sent or adopted because of verify.",
            s.verify_repairs,
        ),
        (
            "distro_verify_lists_deferred",
            "Mismatches answered without lists because syncs to that peer were still on their way.",
            s.verify_lists_deferred,
        ),
        (
            "distro_verify_removed",
            "Replica clients dropped because their owner no longer has them.",
            s.verify_removed,
        ),
        (
            "distro_lease_expired",
            "Replica clients dropped on lease expiry.",
            s.lease_expired,
        ),
        (
            "distro_lease_preserved",
            "Lease expiries held back by self-preservation.",
            s.lease_preserved,
        ),
        (
            "distro_heartbeat_unhealthy",
            "Instances marked unhealthy for missing heartbeats.",
            s.heartbeat_unhealthy,
        ),
        (
            "distro_heartbeat_expired",
            "Publications removed for missing heartbeats.",
            s.heartbeat_expired,
        ),
        (
            "distro_heartbeat_expiry_held",
            "Expiries held back while this node reached at most half of the members.",
            s.heartbeat_expiry_held,
        ),
        (
            "distro_snapshot_loads",
            "Snapshot loads completed.",
            s.snapshot_loads,
        ),
        (
            "distro_snapshot_clients_loaded",
            "Clients applied from snapshots.",
            s.snapshot_clients,
        ),
        (
            "distro_snapshot_load_failures",
            "Snapshot load attempts that failed.",
            m.snapshot_load_failures.load(Relaxed),
        ),
        (
            "distro_snapshots_served",
            "Snapshots streamed to peers.",
            m.snapshots_served.load(Relaxed),
        ),
        (
            "distro_snapshots_refused",
            "Snapshot requests refused because this node had not loaded its own yet.",
            m.snapshots_refused.load(Relaxed),
        ),
        (
            "distro_verify_other_digests",
            "Verify exchanges (counted by both nodes) with a peer whose digests are of another definition (a build on the other side of a digest change): each falls back to lists.",
            m.verify_other_digests.load(Relaxed),
        ),
        (
            "distro_verify_long_reports",
            "Verify reports of more than 64 entries (clients to repair or adopt) received by this owner, handled on the blocking pool instead of the runtime's threads.",
            m.verify_long_reports.load(Relaxed),
        ),
        (
            "distro_peer_unauthenticated",
            "Peer requests refused for a wrong or missing cluster token.",
            m.peer_unauthenticated.load(Relaxed),
        ),
        (
            "distro_connections_refused",
            "Connections refused at accept: a port had --max-tcp-connections open.",
            m.connections_refused.load(Relaxed),
        ),
        (
            "distro_connections_timed_out",
            "Connections closed for not sending their first request within --header-read-timeout.",
            m.connections_timed_out.load(Relaxed),
        ),
        (
            "distro_probes_failed",
            "Member probes that failed.",
            s.probes_failed,
        ),
        (
            "distro_clients_adopted",
            "ip:port clients whose ownership moved here.",
            s.clients_adopted,
        ),
        (
            "distro_clients_released",
            "ip:port clients whose ownership moved away.",
            s.clients_released,
        ),
    ];
    for (name, help, v) in counters {
        encode_counter(enc, name, help, v)?;
    }
    let mut g = enc.encode_descriptor(
        "distro_member_state",
        "Member states as this node sees them (1 for the current state).",
        None,
        MetricType::Gauge,
    )?;
    for (id, state) in node.member_states() {
        let addr = node.member_addr(id);
        for st in ["up", "suspicious", "down"] {
            g.encode_family(&[("member", addr.as_str()), ("state", st)])?
                .encode_gauge(&u32::from(state.as_str() == st))?;
        }
    }
    let mut g = enc.encode_descriptor(
        "distro_sync_pending",
        "Clients pending sync, by peer.",
        None,
        MetricType::Gauge,
    )?;
    for p in node.members().peers() {
        g.encode_family(&[("peer", node.members().addr(p).as_str())])?
            .encode_gauge(&node.pending_sync(p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another digest definition is counted every time and logged the first time per peer
    /// (not again for other numbers); this build's and none (0: a build before the
    /// version was sent) are not.
    #[test]
    fn other_digest_definitions_are_counted_and_logged_once_per_peer() {
        let m = Metrics::default();
        m.digest_version_of("10.0.0.2:7848", DIGEST_VERSION);
        m.digest_version_of("10.0.0.2:7848", 0);
        assert_eq!(m.verify_other_digests.load(Relaxed), 0);
        for _ in 0..3 {
            m.digest_version_of("10.0.0.2:7848", DIGEST_VERSION + 1);
        }
        m.digest_version_of("10.0.0.3:7848", DIGEST_VERSION + 1);
        m.digest_version_of("10.0.0.3:7848", DIGEST_VERSION + 2);
        assert_eq!(m.verify_other_digests.load(Relaxed), 5);
        let logged = m.other_digests_logged.lock().clone();
        assert_eq!(
            logged,
            [
                ("10.0.0.2:7848".to_string(), DIGEST_VERSION + 1),
                ("10.0.0.3:7848".to_string(), DIGEST_VERSION + 1),
            ]
        );
    }

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
        let out = rendered(m);
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
        assert!(out.contains(
            "distro_request_duration_seconds_bucket{api=\"http\",op=\"register\",le=\"+Inf\"} 2"
        ));
        assert!(
            out.contains("distro_request_duration_seconds_count{api=\"http\",op=\"register\"} 2")
        );
        assert!(out.contains("distro_member_state{member=\"127.0.0.1:8848\",state=\"up\"} 1"));
        assert!(out.contains(
            "# HELP distro_requests_total Client requests handled, by API, operation and outcome.\n\
             # TYPE distro_requests_total counter\n"
        ));
        assert!(out.contains("# TYPE distro_clients gauge\ndistro_clients 0\n"));
    }

    /// The metrics page of `m` beside a standalone node.
    fn rendered(m: Metrics) -> String {
        let node = Node::new(
            distro_core::Config::default(),
            distro_core::MemberList::new("127.0.0.1:8848", &[]).unwrap(),
            0,
        )
        .unwrap();
        let mut out = String::new();
        Page::new(Arc::new(node), Arc::new(m), None).render(&mut out);
        out
    }

    #[test]
    fn an_outcomes_index_is_its_position() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i, "{}", o.as_str());
        }
    }

    #[test]
    fn observe_n_counts_as_n_observations() {
        let (one_by_one, at_once) = (Metrics::default(), Metrics::default());
        let took = Duration::from_micros(700);
        for _ in 0..3 {
            one_by_one.observe("native", "register", Outcome::Invalid, took);
        }
        at_once.observe_n("native", "register", Outcome::Invalid, took, 3);
        at_once.observe_n("native", "register", Outcome::Ok, took, 0);
        assert_eq!(at_once.count("native", "register", Outcome::Invalid), 3);
        assert_eq!(at_once.count("native", "register", Outcome::Ok), 0);
        let out = rendered(at_once);
        assert!(
            out.contains("distro_request_duration_seconds_count{api=\"native\",op=\"register\"} 3")
        );
        assert_eq!(out, rendered(one_by_one));
    }

    /// A node of three members whose request metrics, peer counters and Nacos counters
    /// have every series a busy node shows.
    fn busy() -> (Arc<Node>, Arc<Metrics>, NacosStats) {
        let node = Node::new(
            distro_core::Config::default(),
            distro_core::MemberList::new(
                "127.0.0.1:8848",
                &[
                    "127.0.0.1:8848".into(),
                    "127.0.0.2:8848".into(),
                    "127.0.0.3:8848".into(),
                ],
            )
            .unwrap(),
            0,
        )
        .unwrap();
        let m = Metrics::default();
        for (api, ops) in [
            (
                "http",
                &[
                    "register",
                    "deregister",
                    "beat",
                    "query",
                    "detail",
                    "service_list",
                ][..],
            ),
            ("native", &["register", "deregister", "beat", "query"][..]),
        ] {
            for op in ops {
                for (i, o) in [Outcome::Ok, Outcome::Invalid, Outcome::Unavailable]
                    .iter()
                    .enumerate()
                {
                    m.observe(api, op, *o, Duration::from_micros(150 * (i as u64 + 1)));
                }
            }
        }
        for o in Outcome::ALL {
            m.forwarded(o, 3);
        }
        for kind in [
            "sync",
            "verify_digests",
            "verify_list",
            "verify_clients",
            "probe",
            "forward",
        ] {
            m.peer_request(kind, 1234, true);
            m.peer_request(kind, 99, false);
        }
        let nacos = NacosStats {
            connections: 1000,
            subscribed_services: 40,
            connections_opened: 1200,
            connections_refused: 0,
            connections_closed: [
                "stream_ended",
                "detection_failed",
                "setup_timeout",
                "shutdown",
                "pushes_unacknowledged",
            ]
            .iter()
            .map(|r| (*r, 7))
            .collect(),
            requests: [
                "ConnectionSetupRequest",
                "ServerCheckRequest",
                "HealthCheckRequest",
                "InstanceRequest",
                "BatchInstanceRequest",
                "SubscribeServiceRequest",
                "ServiceQueryRequest",
                "NotifySubscriberResponse",
            ]
            .iter()
            .flat_map(|k| {
                ["ok", "invalid"].map(|o| crate::nacos::RequestCount {
                    kind: k,
                    outcome: o,
                    count: 42,
                })
            })
            .collect(),
            pushes_sent: 500,
            pushes_acked: 490,
            pushes_failed: 10,
            push_ack_buckets_ms: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
                .iter()
                .map(|b| (*b, 40))
                .collect(),
            push_ack_seconds_sum: 3.25,
            detections_sent: 12,
        };
        (Arc::new(node), Arc::new(m), nacos)
    }

    /// The CPU of one scrape of a busy node's page: `SCRAPES=n cargo test -p distro-server
    /// --release --lib scrape_cost -- --ignored --nocapture`; under `valgrind
    /// --tool=callgrind` with two values of n, the difference gives instructions per
    /// scrape (the page written by hand, replaced by this one, is at the commit that
    /// introduced `Page`).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn scrape_cost() {
        let n: u32 = std::env::var("SCRAPES").map_or(1000, |v| v.parse().expect("SCRAPES"));
        let (node, m, nacos) = busy();
        let page = Page::with_nacos_stats(node, m, move || Some(nacos.clone()));
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            let mut out = String::with_capacity(16 * 1024);
            page.render(&mut out);
            bytes = std::hint::black_box(out).len();
        }
        let e = start.elapsed();
        println!(
            "{n} scrapes, {:.0} ns per scrape, {bytes} bytes",
            e.as_nanos() as f64 / f64::from(n.max(1))
        );
    }

    #[test]
    fn a_busy_page_has_every_family() {
        let (node, m, nacos) = busy();
        let page = Page::with_nacos_stats(node, m, move || Some(nacos.clone()));
        let mut out = String::new();
        page.render(&mut out);
        let types = out.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(types, 51, "{out}");
        assert_eq!(out.lines().count(), 437, "{out}");
        assert_eq!(out.len(), 28_813, "the bytes of the page written by hand");
        assert!(out.contains("distro_sync_pending{peer=\"127.0.0.2:8848\"} 0\n"));
        assert!(out.contains("distro_nacos_push_ack_seconds_bucket{le=\"0.001\"} 40\n"));
        assert!(out.contains("distro_nacos_pushes_total{result=\"failed\"} 10\n"));
    }
}
