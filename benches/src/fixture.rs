//! Deterministic fixtures shared by the criterion suites and the instruction-count benches.
//!
//! Everything here is a pure function of an index (no randomness, no clock): realistic
//! `ip:port` keys, service names and connection ids, and registries, nodes and small
//! clusters populated with `n` clients. The criterion suites build their 1 M-client fixtures
//! once per process (behind a `LazyLock`), in parallel with rayon; the size comes from
//! [`clients`], which honours `DISTRO_BENCH_CLIENTS` and criterion's `--test` mode.
//!
//! The fixtures bypass the sync scheduler (owners write through [`Registry::publish`],
//! replicas take the owner's records through the peer codec and `Node::handle_sync`) so
//! that building them leaves no pending work behind that a measured operation would then
//! pay for.

use distro_core::hash::mix64;
use distro_core::message::SyncBatch;
use distro_core::model::Metadata;
use distro_core::{
    ClientChange, ClientId, Config, Instance, InstanceSpec, MemberId, MemberList, Node,
    Publication, Registry, Service, ServiceSpec,
};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Clients in the large fixtures of a real run.
pub const DEFAULT_CLIENTS: usize = 1_000_000;
/// Clients in the large fixtures when criterion runs in `--test` mode (CI).
pub const TEST_MODE_CLIENTS: usize = 2_000;
/// Environment variable overriding the fixture size: `250000`, `100k` or `1m`.
pub const CLIENTS_ENV: &str = "DISTRO_BENCH_CLIENTS";
/// Instances per service in the fixtures (Nacos deployments typically have tens to
/// hundreds of instances per service).
pub const INSTANCES_PER_SERVICE: usize = 100;
/// The wall-clock start time every fixture node is built with.
pub const INCARNATION_MS: u64 = 1_717_000_000_000;
/// The `now` of fixture writes (one minute after the incarnation).
pub const NOW_MS: u64 = INCARNATION_MS + 60_000;

/// Whether the benchmark binary runs in test mode (`cargo bench -- --test`), where every
/// benchmark runs once to prove it works.
pub fn is_test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Parses a client count: a plain number, or one with a `k` / `m` suffix
/// ([`distro_core::units::parse_count`]).
pub fn parse_count(s: &str) -> Option<usize> {
    distro_core::units::parse_count_usize(s).ok()
}

/// The number of clients of the large fixtures: `DISTRO_BENCH_CLIENTS` if set, else
/// [`TEST_MODE_CLIENTS`] in test mode, else [`DEFAULT_CLIENTS`].
pub fn clients() -> usize {
    static CLIENTS: OnceLock<usize> = OnceLock::new();
    *CLIENTS.get_or_init(|| {
        let n = match std::env::var(CLIENTS_ENV) {
            Ok(v) => parse_count(&v)
                .unwrap_or_else(|| panic!("{CLIENTS_ENV}={v:?} is not a count like 1m or 100k")),
            Err(_) if is_test_mode() => TEST_MODE_CLIENTS,
            Err(_) => DEFAULT_CLIENTS,
        };
        assert!(n >= 100, "{CLIENTS_ENV} must be at least 100");
        n
    })
}

/// A short label of a count for benchmark ids: `1m`, `100k`, `2000`.
pub fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// The IP address of client `i`: consecutive clients fill consecutive addresses of
/// `10.0.0.0/8`, as instances of a data centre do.
pub fn ip(i: usize) -> String {
    let i = i as u32;
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

/// The port of client `i`: a typical service port or an ephemeral one.
pub fn port(i: usize) -> u16 {
    const COMMON: [u16; 4] = [8080, 8443, 9090, 20880];
    let x = mix64(i as u64);
    if x & 1 == 0 {
        COMMON[(x >> 1) as usize % COMMON.len()]
    } else {
        1024 + ((x >> 8) % 60_000) as u16
    }
}

/// The routing key `ip:port` of client `i`.
pub fn ip_port_key(i: usize) -> String {
    format!("{}:{}", ip(i), port(i))
}

/// The id of ip:port client `i`: `ip:port#true`.
pub fn ip_port_client(i: usize) -> ClientId {
    ClientId::ip_port(&ip(i), port(i))
}

/// The id of connection client `i`: `<millis>_<ip>_<port>`, as Nacos 2.x names a gRPC
/// connection.
pub fn connection_client(i: usize) -> ClientId {
    let millis = INCARNATION_MS + (mix64(i as u64 ^ 0xc0ffee) % 86_400_000);
    ClientId::connection(millis, &ip(i), 32_768 + (i % 28_000) as u16)
}

const SERVICE_WORDS: [&str; 8] = [
    "order",
    "payment",
    "inventory",
    "user",
    "gateway",
    "search",
    "catalog",
    "shipping",
];

/// The name (without group) of service `s`: `payment-service-00042`.
pub fn service_name(s: usize) -> String {
    format!("{}-service-{s:05}", SERVICE_WORDS[s % SERVICE_WORDS.len()])
}

/// The grouped name `DEFAULT_GROUP@@payment-service-00042`, as Nacos routes 1.x services.
pub fn grouped_service_name(s: usize) -> String {
    format!("DEFAULT_GROUP@@{}", service_name(s))
}

/// Number of services in a fixture of `clients` clients.
pub fn services_for(clients: usize) -> usize {
    clients.div_ceil(INSTANCES_PER_SERVICE)
}

/// The service client `i` publishes to, among `services`.
pub fn service_of(i: usize, services: usize) -> usize {
    i % services
}

/// The request form of service `s` (as an API handler would decode it).
pub fn service_spec(s: usize) -> ServiceSpec {
    ServiceSpec::new("", "DEFAULT_GROUP", &service_name(s))
}

/// The request form of client `i`'s instance: weight 1, healthy, enabled, cluster
/// `DEFAULT`, and two metadata entries.
pub fn instance_spec(i: usize) -> InstanceSpec {
    let mut spec = InstanceSpec::new(&ip(i), port(i));
    spec.metadata = vec![
        ("version".to_string(), format!("1.{}.0", i % 7)),
        ("zone".to_string(), format!("az-{}", i % 3)),
    ];
    spec
}

/// The instance of client `i` in `service`, as stored (see [`instance_spec`]).
pub fn instance(registry: &Registry, i: usize, service: &Service) -> Instance {
    instance_spec(i)
        .to_instance(registry.interner(), service)
        .expect("fixture instances are valid")
}

/// A register request of client `i`, as an API handler would decode it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The client.
    pub client: ClientId,
    /// The service it publishes to.
    pub service: ServiceSpec,
    /// Its instance.
    pub instance: InstanceSpec,
}

impl Request {
    /// The request of client `i` of `kind` in a fixture of `n` clients.
    pub fn new(kind: Kind, i: usize, n: usize) -> Self {
        Self {
            client: kind.client(i),
            service: service_spec(service_of(i, services_for(n))),
            instance: instance_spec(i),
        }
    }

    /// Flips the weight between 1 and 2, so that registering again is a real change.
    pub fn change(&mut self) {
        self.instance.weight = if self.instance.weight == 1.0 {
            2.0
        } else {
            1.0
        };
    }
}

/// `count` register requests of clients spread over a fixture of `n` clients.
pub fn requests(kind: Kind, n: usize, count: usize) -> Vec<Request> {
    spread(n, count)
        .into_iter()
        .map(|i| Request::new(kind, i, n))
        .collect()
}

/// A stored instance built without a registry (checksum benches).
pub fn bare_instance(interner: &distro_core::name::Interner, i: usize) -> Instance {
    Instance {
        ip: ip(i).into(),
        ipv4: distro_core::model::Ipv4Bits::of(&ip(i)),
        port: port(i),
        weight: 1.0,
        healthy: !i.is_multiple_of(10),
        enabled: true,
        cluster: interner.intern("DEFAULT"),
        metadata: Metadata::from_pairs(
            interner,
            [
                ("version", "1.4.2"),
                ("zone", if i.is_multiple_of(2) { "az-1" } else { "az-2" }),
            ],
        ),
        custom_id: None,
    }
}

/// Which kind of client ids a fixture holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ip:port#true` clients (HTTP API, routed by `distro_hash`).
    IpPort,
    /// `<millis>_<ip>_<port>` clients (SDK gRPC connections, owned by their node).
    Connection,
}

impl Kind {
    /// The id of client `i` of this kind.
    pub fn client(self, i: usize) -> ClientId {
        match self {
            Kind::IpPort => ip_port_client(i),
            Kind::Connection => connection_client(i),
        }
    }
}

/// Publishes clients `0..n` of `kind` into `registry`, each with one instance in service
/// `i % services_for(n)`, attributed to `owner(i)`. Runs in parallel.
pub fn populate(
    registry: &Registry,
    n: usize,
    kind: Kind,
    owner: impl Fn(usize, &ClientId) -> MemberId + Sync,
) {
    let services = services_for(n);
    let svc: Vec<Service> = (0..services)
        .map(|s| registry.service("public", "DEFAULT_GROUP", &service_name(s)))
        .collect();
    let publish = |i: usize| {
        let id = kind.client(i);
        let service = &svc[service_of(i, services)];
        let p = Publication::single(service.clone(), instance(registry, i, service));
        registry
            .publish(&id, p, owner(i, &id), NOW_MS)
            .expect("fixture publications are valid");
    };
    if n >= PARALLEL_FROM {
        (0..n).into_par_iter().for_each(publish);
    } else {
        (0..n).for_each(publish);
    }
}

/// Fixtures of at least this many clients are built in parallel. Smaller ones (those of
/// the instruction-count benches) are built sequentially, so that the maps' layout, and
/// with it every count, does not depend on thread scheduling.
pub const PARALLEL_FROM: usize = 50_000;

/// The addresses of a cluster of `n` members: `10.0.0.1:8848`, ...
pub fn member_addrs(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("10.0.0.{i}:8848")).collect()
}

/// A member list of `n` members, seen from member `me`.
pub fn member_list(n: usize, me: usize) -> MemberList {
    let addrs = member_addrs(n);
    MemberList::new(&addrs[me], &addrs).expect("fixture member list is valid")
}

/// Node `me` of a cluster of `members` members, empty.
/// The in-memory maps get a fixed hash seed, so iteration orders and probe lengths, and
/// with them instruction counts, are the same in every run.
pub fn node(members: usize, me: usize, mut config: Config) -> Node {
    config.hash_seed.get_or_insert(0x5eed);
    Node::new(config, member_list(members, me), INCARNATION_MS).expect("valid config")
}

/// Clients per batch when a replica's copy is built.
const COPY_BATCH: usize = 1_000;

/// A cluster of nodes in which node 0 owns `n` connection clients and every other node
/// holds a replica of them, except the clients `skip(node, i)` returns true for.
pub struct Cluster {
    /// The nodes; node `k` is member `MemberId(k)`.
    pub nodes: Vec<std::sync::Arc<Node>>,
    /// Clients held by node 0.
    pub clients: usize,
}

impl Cluster {
    /// Builds the cluster (in parallel) with `config` on every node.
    pub fn new(
        members: usize,
        n: usize,
        config: &Config,
        skip: impl Fn(usize, usize) -> bool + Sync,
    ) -> Self {
        let nodes: Vec<std::sync::Arc<Node>> = (0..members)
            .map(|k| std::sync::Arc::new(node(members, k, config.clone())))
            .collect();
        let owner = &nodes[0];
        populate(owner.registry(), n, Kind::Connection, |_, _| owner.me());
        // Each replica gets its copy as a real one does: the owner's records encoded by
        // the peer codec and decoded into the replica's registry, so the replica holds its
        // own services and names (copying the records themselves shared the owner's, and
        // every compare of a decoded service or name with a held one then went to the text).
        for replica in &nodes[1..] {
            let k = replica.me().index();
            let copy = |chunk: &[usize]| {
                let changes = chunk
                    .iter()
                    .filter(|&&i| !skip(k, i))
                    .map(|&i| {
                        let record = owner
                            .registry()
                            .get(connection_client(i).as_str())
                            .expect("populated above")
                            .to_record();
                        ClientChange::Upsert(record)
                    })
                    .collect();
                let encoded = crate::codec::encode(
                    owner,
                    &SyncBatch {
                        changes,
                        lowest: None,
                        encoding: None,
                    },
                );
                crate::codec::apply(replica, owner.me(), &encoded, NOW_MS);
            };
            let all: Vec<usize> = (0..n).collect();
            if n >= PARALLEL_FROM {
                all.par_chunks(COPY_BATCH).for_each(copy);
            } else {
                all.chunks(COPY_BATCH).for_each(copy);
            }
        }
        Self { nodes, clients: n }
    }
}

/// `count` distinct client indices spread over `0..n` (a fixed stride walk), so that a pool
/// of requests touches the whole registry rather than one corner of it.
pub fn spread(n: usize, count: usize) -> Vec<usize> {
    let count = count.min(n);
    // A stride coprime with n visits distinct indices.
    let mut stride = (n / 2 + 1) | 1;
    while gcd(stride, n) != 1 {
        stride += 2;
    }
    (0..count).map(|k| (k * stride + 7) % n).collect()
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Two nodes over `clients` clients with `changed` of the owner's clients changed and due
/// at once: the cluster and the owner's first sync batch (codec comparisons).
pub fn changed_batch(clients: usize, changed: usize) -> (Cluster, distro_core::message::SyncBatch) {
    let config = Config {
        sync_delay: 0,
        batch_max_entries: changed,
        ..Config::default()
    };
    let cluster = Cluster::new(2, clients, &config, |_, _| false);
    for mut r in requests(Kind::Connection, clients, changed) {
        r.change();
        cluster.nodes[0]
            .register(&r.client, &r.service, &r.instance, NOW_MS)
            .expect("valid request");
    }
    let batch = cluster.nodes[0]
        .tick(NOW_MS)
        .into_iter()
        .find_map(distro_core::Command::into_sync_batch)
        .expect("the changed clients are due");
    (cluster, batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_suffixes() {
        assert_eq!(parse_count("1m"), Some(1_000_000));
        assert_eq!(parse_count("100k"), Some(100_000));
        assert_eq!(parse_count("250_000"), Some(250_000));
        assert_eq!(parse_count("x"), None);
        assert_eq!(count_label(1_000_000), "1m");
        assert_eq!(count_label(2_000), "2k");
        assert_eq!(count_label(1_234), "1234");
    }

    #[test]
    fn keys_are_unique_and_realistic() {
        let keys: std::collections::HashSet<String> = (0..100_000).map(ip_port_key).collect();
        assert_eq!(keys.len(), 100_000);
        assert_eq!(ip(258), "10.0.1.2");
        assert!(connection_client(3).as_str().ends_with("_10.0.0.3_32771"));
        assert_eq!(
            grouped_service_name(42),
            "DEFAULT_GROUP@@inventory-service-00042"
        );
    }

    #[test]
    fn spread_visits_distinct_indices() {
        for n in [100, 1_000, 1_000_000, 999_983] {
            let v = spread(n, 1_000);
            let set: std::collections::HashSet<usize> = v.iter().copied().collect();
            assert_eq!(set.len(), v.len());
            assert!(v.iter().all(|&i| i < n));
        }
    }

    #[test]
    fn cluster_replicas_match_the_owner_except_skipped() {
        let cfg = Config {
            shards: 64,
            ..Config::default()
        };
        let c = Cluster::new(3, 500, &cfg, |node, i| node == 2 && i % 100 == 0);
        let (a, b, d) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
        let me = a.me();
        assert_eq!(a.registry().owner_count(me), 500);
        assert_eq!(
            b.registry().owner_digests(me),
            a.registry().owner_digests(me)
        );
        assert_eq!(d.registry().owner_count(me), 495);
    }
}
