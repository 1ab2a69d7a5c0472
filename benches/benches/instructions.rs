//! Instruction counts of the hot paths, under Callgrind (gungraun): the CI performance gate.
//!
//! The same paths as the criterion suites, on small fixtures (instruction counts are
//! deterministic, so there is no need for 1 M clients to see a regression, and Valgrind
//! runs about 50 times slower than native). Every benchmark runs once in its own process;
//! setup (building the fixture) is not counted, and fixtures are leaked so that dropping
//! them is not counted either. `.ci/perf-gate` runs this file and compares each count with
//! `results/instructions/baseline.json`.
//!
//! Counts are exact for pure functions (hashing, routing, checksums: identical every run).
//! Paths through the registry's maps vary slightly between runs, because the maps' hasher
//! (foldhash) is seeded per process from the clock, which changes probe lengths and
//! iteration orders: we saw up to 1.5 % for most of these benches and up to 3 % once
//! (`sync::build_and_encode`), above the gate's 2 % warning but well below its 5 % failure.
//! The global allocator is mimalloc, as in the server; with glibc's malloc the allocation
//! paths depended on the heap's history and one bench swung by 25 % between runs.
//!
//! A plain `cargo bench` leaves this suite out (`bench = false`). Run by hand:
//! `cargo bench -p distro-benches --bench instructions` (needs valgrind and
//! `gungraun-runner` of the same version as the `gungraun` crate; `.ci/perf-gate` installs
//! both).

use distro_benches::codec;
use distro_benches::fixture::{self, Cluster, Kind, Request};
use distro_benches::nacos;
use distro_core::hash::{client_digest_hash, distro_hash, shard_of, stable_hash64};
use distro_core::message::{SyncBatch, VerifyDigests, VerifyList};
use distro_core::name::Interner;
use distro_core::router::RoutingTable;
use distro_core::{
    ClientId, Command, Config, Instance, MemberId, MemberState, Node, PeerRequest, PeerResponse,
    Revision, Router, RouterKind, ServiceSpec, ShardDigest, SnapshotCursor,
};
use gungraun::{library_benchmark, library_benchmark_group, main};
use std::hash::BuildHasher;
use std::hint::black_box;

// The allocator of the server binary. Its per-size-class free lists also make allocation
// costs far less dependent on the heap's history than glibc's bins.
#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

/// Clients of the store, sync and verify fixtures.
const CLIENTS: usize = 10_000;
/// Keys per hashing and routing benchmark.
const KEYS: usize = 64;

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

// ----- hashing -----------------------------------------------------------------------

fn ip_port_keys() -> Vec<String> {
    fixture::spread(1 << 20, KEYS)
        .into_iter()
        .map(fixture::ip_port_key)
        .collect()
}

fn service_names() -> Vec<String> {
    (0..KEYS).map(fixture::grouped_service_name).collect()
}

fn connection_ids() -> Vec<String> {
    fixture::spread(1 << 20, KEYS)
        .into_iter()
        .map(|i| fixture::connection_client(i).as_str().to_string())
        .collect()
}

#[library_benchmark]
#[bench::ip_port(setup = ip_port_keys)]
#[bench::service(setup = service_names)]
fn distro_hash_64(keys: Vec<String>) -> u32 {
    keys.iter()
        .fold(0, |acc, k| acc ^ distro_hash(black_box(k)))
}

#[library_benchmark]
#[bench::ip_port(setup = ip_port_keys)]
#[bench::service(setup = service_names)]
fn xxh3_stable_hash64_64(keys: Vec<String>) -> u64 {
    keys.iter()
        .fold(0, |acc, k| acc ^ stable_hash64(black_box(k).as_bytes()))
}

#[library_benchmark]
#[bench::ip_port(setup = ip_port_keys)]
fn foldhash_fixed_seed_64(keys: Vec<String>) -> u64 {
    let hasher = foldhash::fast::FixedState::with_seed(7);
    keys.iter()
        .fold(0, |acc, k| acc ^ hasher.hash_one(black_box(k.as_str())))
}

#[library_benchmark]
#[bench::connection_id(setup = connection_ids)]
fn shard_of_64(keys: Vec<String>) -> u32 {
    keys.iter()
        .fold(0, |acc, k| acc ^ shard_of(black_box(k), 1024))
}

#[library_benchmark]
#[bench::connection_id(setup = connection_ids)]
fn client_digest_hash_64(keys: Vec<String>) -> u128 {
    keys.iter()
        .fold(0, |acc, k| acc ^ client_digest_hash(black_box(k), 42))
}

library_benchmark_group!(
    name = hashing;
    benchmarks = distro_hash_64, xxh3_stable_hash64_64, foldhash_fixed_seed_64, shard_of_64,
        client_digest_hash_64
);

// ----- routing -----------------------------------------------------------------------

fn table(kind: RouterKind, members: usize) -> (RoutingTable, Vec<String>) {
    let list = fixture::member_list(members, 0);
    let ids: Vec<MemberId> = list.ids().collect();
    (kind.build(&list, &ids), ip_port_keys())
}

#[library_benchmark]
#[bench::modulo_3(args = (RouterKind::NacosModulo, 3), setup = table)]
#[bench::modulo_64(args = (RouterKind::NacosModulo, 64), setup = table)]
#[bench::rendezvous_3(args = (RouterKind::Rendezvous, 3), setup = table)]
#[bench::rendezvous_16(args = (RouterKind::Rendezvous, 16), setup = table)]
#[bench::rendezvous_64(args = (RouterKind::Rendezvous, 64), setup = table)]
fn owner_64((table, keys): (RoutingTable, Vec<String>)) -> u16 {
    keys.iter().fold(0, |acc, k| {
        acc ^ table.owner(black_box(k)).map_or(0, |m| m.0)
    })
}

fn members(n: usize) -> (distro_core::MemberList, Vec<MemberId>) {
    let list = fixture::member_list(n, 0);
    let ids = list.ids().collect();
    (list, ids)
}

#[library_benchmark]
#[bench::modulo_64(args = (64), setup = members)]
fn build_modulo((list, ids): (distro_core::MemberList, Vec<MemberId>)) -> RoutingTable {
    RouterKind::NacosModulo.build(black_box(&list), black_box(&ids))
}

#[library_benchmark]
#[bench::rendezvous_64(args = (64), setup = members)]
fn build_rendezvous((list, ids): (distro_core::MemberList, Vec<MemberId>)) -> RoutingTable {
    RouterKind::Rendezvous.build(black_box(&list), black_box(&ids))
}

struct Reattribute {
    list: distro_core::MemberList,
    keys: Vec<String>,
    owners: Vec<MemberId>,
    kind: RouterKind,
}

fn reattribute_setup(kind: RouterKind) -> &'static Reattribute {
    let list = fixture::member_list(4, 0);
    let keys: Vec<String> = (0..CLIENTS).map(fixture::ip_port_key).collect();
    let three = kind.build(&list, &[MemberId(0), MemberId(1), MemberId(2)]);
    let owners = keys
        .iter()
        .map(|k| three.owner(k).expect("members"))
        .collect();
    leak(Reattribute {
        list,
        keys,
        owners,
        kind,
    })
}

// A fourth member joins: build the new table and count the keys whose owner changes.
#[library_benchmark]
#[bench::modulo_10k(args = (RouterKind::NacosModulo), setup = reattribute_setup)]
#[bench::rendezvous_10k(args = (RouterKind::Rendezvous), setup = reattribute_setup)]
fn reattribute(r: &'static Reattribute) -> usize {
    let four = [MemberId(0), MemberId(1), MemberId(2), MemberId(3)];
    let after = r.kind.build(&r.list, &four);
    r.keys
        .iter()
        .zip(&r.owners)
        .filter(|(k, o)| after.owner(k) != Some(**o))
        .count()
}

/// A node of a 3-member cluster holding 10,000 ip:port clients, attributed by `kind`'s
/// routing table.
fn rehome_node(kind: RouterKind) -> &'static Node {
    let config = Config {
        router: kind,
        ..Config::default()
    };
    let node = leak(fixture::node(3, 0, config));
    fixture::populate(node.registry(), CLIENTS, Kind::IpPort, |_, id| {
        node.owner_of(id.routing_key().expect("ip:port client"))
    });
    node
}

// Member 2 goes DOWN: the routing table is rebuilt and the re-homing pass re-attributes
// every ip:port client (its routing key's owner), moving those whose owner changed (about
// 2/3 under modulo, 1/3 under rendezvous: handed over, scheduled for sync).
#[library_benchmark]
#[bench::modulo_10k(args = (RouterKind::NacosModulo), setup = rehome_node)]
#[bench::rendezvous_10k(args = (RouterKind::Rendezvous), setup = rehome_node)]
fn rehome(node: &'static Node) {
    node.set_member_state(MemberId(2), MemberState::Down, fixture::NOW_MS + 1);
}

library_benchmark_group!(
    name = routing;
    benchmarks = owner_64, build_modulo, build_rendezvous, reattribute, rehome
);

// ----- checksum and digests ----------------------------------------------------------

fn service_instances(n: usize) -> (Vec<Instance>, String) {
    let interner = leak(Interner::new());
    let instances = fixture::spread(n, n)
        .into_iter()
        .map(|i| fixture::bare_instance(interner, i))
        .collect();
    (instances, String::with_capacity(n * 80))
}

#[library_benchmark]
#[bench::instances_100(args = (100), setup = service_instances)]
fn nacos_md5((instances, mut buf): (Vec<Instance>, String)) -> String {
    nacos::nacos_checksum(black_box(&instances), &mut buf)
}

#[library_benchmark]
#[bench::instances_100(args = (100), setup = service_instances)]
fn xxh3_128((instances, mut buf): (Vec<Instance>, String)) -> u128 {
    nacos::checksum_string(black_box(&instances), &mut buf);
    nacos::xxh3_128(&buf)
}

fn digest_pairs(n: usize) -> &'static [(ClientId, Revision)] {
    let v: Vec<(ClientId, Revision)> = (0..n)
        .map(|i| {
            (
                fixture::connection_client(i),
                Revision(0x1234_5678 + i as u64),
            )
        })
        .collect();
    Box::leak(v.into_boxed_slice())
}

// The O(1) update of a shard digest, 64 times.
#[library_benchmark]
#[bench::changes_64(args = (64), setup = digest_pairs)]
fn digest_update(pairs: &'static [(ClientId, Revision)]) -> ShardDigest {
    let mut d = ShardDigest::default();
    for (id, rev) in pairs {
        d.add(ShardDigest::of(black_box(id.as_str()), *rev));
    }
    d
}

// The 1,024 shard digests of 10,000 clients from scratch, single-threaded.
#[library_benchmark]
#[bench::clients_10k(args = (CLIENTS), setup = digest_pairs)]
fn digest_full(pairs: &'static [(ClientId, Revision)]) -> Vec<ShardDigest> {
    let mut acc = vec![ShardDigest::default(); 1024];
    for (id, rev) in pairs {
        acc[shard_of(id.as_str(), 1024) as usize].add(ShardDigest::of(id.as_str(), *rev));
    }
    acc
}

library_benchmark_group!(
    name = checksum;
    benchmarks = nacos_md5, xxh3_128, digest_update, digest_full
);

// ----- store -------------------------------------------------------------------------

fn store_node() -> &'static Node {
    let config = Config {
        snapshot_chunk_bytes: 64 * 1024,
        ..Config::default()
    };
    let node = leak(fixture::node(3, 0, config));
    fixture::populate(node.registry(), CLIENTS, Kind::IpPort, |_, _| node.me());
    node
}

/// The requests are leaked, as every fixture: dropping them (about 280 instructions a
/// request, ten strings) is not part of a registration or a heartbeat.
fn store_requests() -> (&'static Node, &'static [Request]) {
    let mut requests = fixture::requests(Kind::IpPort, CLIENTS, 1_000);
    requests.iter_mut().for_each(Request::change);
    (store_node(), Vec::leak(requests))
}

/// Sends every request of `requests` to `node` as a registration; the count accepted.
fn register_all(node: &Node, requests: &[Request]) -> usize {
    let now = fixture::NOW_MS;
    requests
        .iter()
        .filter(|r| {
            node.register(&r.client, &r.service, &r.instance, now)
                .is_ok()
        })
        .count()
}

/// 1,000 registrations of clients the node does not hold yet, each into one of the held
/// services: the owner's path in a registration burst.
fn store_new_requests() -> (&'static Node, &'static [Request]) {
    let requests = (CLIENTS..CLIENTS + 1_000)
        .map(|i| Request::new(Kind::IpPort, i, CLIENTS))
        .collect();
    (store_node(), Vec::leak(requests))
}

// 1,000 registrations that change an existing client (new revision, index, digest, sync
// scheduling). A thousand rather than a hundred, so that the maps' seed-dependent costs
// average out to well under the 2 % warning. `new_1000`: 1,000 new clients instead.
#[library_benchmark]
#[bench::changes_1000(setup = store_requests)]
#[bench::new_1000(setup = store_new_requests)]
fn register((node, requests): (&'static Node, &'static [Request])) -> usize {
    register_all(node, requests)
}

/// A node owning 50 SDK connection clients that publish to 20 services each, and 1,000
/// registrations that change one of those publications each (every client's every
/// service once): the Nacos pattern of one connection registering many services.
fn sdk_requests() -> (&'static Node, &'static [Request]) {
    let node = leak(fixture::node(3, 0, Config::default()));
    let (clients, services) = (50, 20);
    let mut requests = Vec::with_capacity(clients * services);
    for c in 0..clients {
        for s in 0..services {
            let mut r = Request::new(Kind::Connection, c, clients);
            r.service = fixture::service_spec(s);
            node.register(&r.client, &r.service, &r.instance, fixture::NOW_MS)
                .expect("valid request");
            r.change();
            requests.push(r);
        }
    }
    (node, Vec::leak(requests))
}

#[library_benchmark]
#[bench::services_20_changes_1000(setup = sdk_requests)]
fn register_sdk((node, requests): (&'static Node, &'static [Request])) -> usize {
    register_all(node, requests)
}

#[library_benchmark]
#[bench::beats_1000(setup = store_requests)]
fn beat((node, requests): (&'static Node, &'static [Request])) -> usize {
    let now = fixture::NOW_MS + 1;
    requests
        .iter()
        .filter(|r| node.beat(&r.client, &r.service, now).is_ok())
        .count()
}

fn store_services() -> (&'static Node, Vec<ServiceSpec>) {
    let specs = fixture::spread(fixture::services_for(CLIENTS), 64)
        .into_iter()
        .map(fixture::service_spec)
        .collect();
    (store_node(), specs)
}

// 64 queries of 100-instance services. A query sorts the publications it collects in the
// map's (seed-dependent) order, so one query's count varies by a few percent from run to
// run; 64 of them average that out to under one percent.
#[library_benchmark]
#[bench::services_64_of_100(setup = store_services)]
fn query((node, services): (&'static Node, Vec<ServiceSpec>)) -> usize {
    services
        .iter()
        .filter_map(|s| node.query(black_box(s)).ok().flatten())
        .map(|v| v.instance_count())
        .sum()
}

#[library_benchmark]
#[bench::chunk_64kib(setup = store_node)]
fn snapshot_chunk(node: &'static Node) -> usize {
    node.snapshot_chunk(black_box(SnapshotCursor::start_of(100)))
        .records
        .len()
}

library_benchmark_group!(
    name = store;
    benchmarks = register, register_sdk, beat, query, snapshot_chunk
);

// ----- sync --------------------------------------------------------------------------

const BATCH: usize = 1_000;
/// The changed clients of a small ("trickle") batch: a steady cluster's sync, a few
/// changes every sync delay.
const TRICKLE: usize = 8;

fn sync_cluster() -> &'static Cluster {
    sync_cluster_changed(BATCH)
}

/// Two nodes holding 10,000 clients, `changed` of the owner's changed since the last sync:
/// due for the replica at once, in one batch.
///
/// The same clients were changed, flushed and encoded once before (not measured), as a
/// running owner's flushes follow one another: the measured flush then allocates from the
/// pages the first one let go of. A cold first flush ran the allocator's fresh-page and
/// page-collection paths, whose share depended on the fixture heap's history: one change
/// of the code elsewhere moved `changes_8` by +13.7 % and another by +28.7 %, all of it
/// in mimalloc (twenty-seventh and twenty-eighth sessions).
fn sync_cluster_changed(changed: usize) -> &'static Cluster {
    let config = Config {
        sync_delay: 0,
        batch_max_entries: BATCH,
        ..Config::default()
    };
    let cluster = leak(Cluster::new(2, CLIENTS, &config, |_, _| false));
    let mut requests = fixture::requests(Kind::Connection, CLIENTS, changed);
    let change_all = |requests: &mut [Request]| {
        for r in requests {
            r.change();
            cluster.nodes[0]
                .register(&r.client, &r.service, &r.instance, fixture::NOW_MS)
                .expect("valid request");
        }
    };
    change_all(&mut requests);
    let warm = sync_batch(cluster);
    assert_eq!(
        warm.changes.len(),
        changed,
        "the warm-up flush takes them all"
    );
    drop(codec::encode(&cluster.nodes[0], &warm));
    drop(warm);
    change_all(&mut requests);
    cluster
}

/// As [`sync_cluster`], but the owner's 1,000 due clients are new ones (in held services):
/// the replica's path in a registration burst.
fn sync_cluster_new() -> &'static Cluster {
    let config = Config {
        sync_delay: 0,
        batch_max_entries: BATCH,
        ..Config::default()
    };
    let cluster = leak(Cluster::new(2, CLIENTS, &config, |_, _| false));
    for i in CLIENTS..CLIENTS + BATCH {
        let r = Request::new(Kind::Connection, i, CLIENTS);
        cluster.nodes[0]
            .register(&r.client, &r.service, &r.instance, fixture::NOW_MS)
            .expect("valid request");
    }
    cluster
}

fn sync_batch(cluster: &Cluster) -> SyncBatch {
    cluster.nodes[0]
        .tick(fixture::NOW_MS)
        .into_iter()
        .find_map(|c| match c {
            Command::Send {
                request: PeerRequest::Sync(batch),
                ..
            } => Some(batch),
            _ => None,
        })
        .expect("the changed clients are due")
}

// The owner's flush: take 1,000 due clients, build their records, encode the batch
// (`changes_8`: a small batch of 8, where the batch's fixed costs show).
#[library_benchmark]
#[bench::changes_1000(setup = sync_cluster)]
#[bench::changes_8(args = (TRICKLE), setup = sync_cluster_changed)]
fn build_and_encode(cluster: &'static Cluster) -> usize {
    codec::encode(&cluster.nodes[0], &sync_batch(cluster)).len
}

fn sync_encoded() -> (&'static Cluster, codec::Encoded) {
    encoded_batch(sync_cluster())
}

fn sync_encoded_new() -> (&'static Cluster, codec::Encoded) {
    encoded_batch(sync_cluster_new())
}

fn encoded_batch(cluster: &'static Cluster) -> (&'static Cluster, codec::Encoded) {
    let encoded = codec::encode(&cluster.nodes[0], &sync_batch(cluster));
    (cluster, encoded)
}

// The replica decodes the batch and applies 1,000 newer client states (`new_1000`: 1,000
// clients it does not hold yet).
#[library_benchmark]
#[bench::changes_1000(setup = sync_encoded)]
#[bench::new_1000(setup = sync_encoded_new)]
fn decode_and_apply((cluster, encoded): (&'static Cluster, codec::Encoded)) -> PeerResponse {
    let (owner, replica) = (&cluster.nodes[0], &cluster.nodes[1]);
    codec::apply(replica, owner.me(), &encoded, fixture::NOW_MS)
}

library_benchmark_group!(
    name = sync;
    benchmarks = build_and_encode, decode_and_apply
);

// ----- verify ------------------------------------------------------------------------

/// Node 0 owns 10,000 connection clients; node 1 holds all, node 2 lacks 1 % spread
/// evenly, node 3 lacks every client of 1 % of the shards.
fn verify_cluster(replica: usize) -> (&'static Cluster, usize) {
    let shards = Config::default().shards;
    let cluster = leak(Cluster::new(
        4,
        CLIENTS,
        &Config::default(),
        |node, i| match node {
            2 => i % 100 == 0,
            3 => shard_of(fixture::connection_client(i).as_str(), shards) < shards / 100,
            _ => false,
        },
    ));
    (cluster, replica)
}

// Step 1: the owner's digests, compared by the replica.
#[library_benchmark]
#[bench::in_sync(args = (1), setup = verify_cluster)]
#[bench::diverged_1pct_spread(args = (2), setup = verify_cluster)]
fn verify_digests((cluster, k): (&'static Cluster, usize)) -> PeerResponse {
    let (owner, replica) = (&cluster.nodes[0], &cluster.nodes[k]);
    let request = PeerRequest::VerifyDigests(VerifyDigests {
        digests: owner.registry().owner_digests(owner.me()),
    });
    replica.handle_request(owner.me(), request, fixture::NOW_MS)
}

// The whole round: digests, lists of the mismatched shards, report, repairs scheduled.
#[library_benchmark]
#[bench::diverged_1pct_spread(args = (2), setup = verify_cluster)]
#[bench::diverged_1pct_in_1pct_shards(args = (3), setup = verify_cluster)]
fn verify_round((cluster, k): (&'static Cluster, usize)) -> usize {
    let (owner, replica) = (&cluster.nodes[0], &cluster.nodes[k]);
    let now = fixture::NOW_MS;
    let request = PeerRequest::VerifyDigests(VerifyDigests {
        digests: owner.registry().owner_digests(owner.me()),
    });
    let response = replica.handle_request(owner.me(), request.clone(), now);
    let mut missing = 0;
    for command in owner.handle_response(replica.me(), request, Ok(response), now) {
        if let Command::Send {
            request: list @ PeerRequest::VerifyList(_),
            ..
        } = command
        {
            let report = replica.handle_request(owner.me(), list, now);
            if let PeerResponse::VerifyReport { needs, .. } = &report {
                missing += needs.len();
            }
            let sent = PeerRequest::VerifyList(VerifyList { shards: Vec::new() });
            owner.handle_response(replica.me(), sent, Ok(report), now);
        }
    }
    missing
}

library_benchmark_group!(
    name = verify;
    benchmarks = verify_digests, verify_round
);

// ----- wire --------------------------------------------------------------------------

const INSTANCE_REQUEST: &[u8] = br#"{"headers":{},"requestId":"17","namespace":"public","serviceName":"demo-svc","groupName":"DEFAULT_GROUP","type":"registerInstance","instance":{"ip":"10.0.0.7","port":8080,"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","metadata":{"zone":"a","version":"1.4.2"},"instanceHeartBeatInterval":5000,"instanceHeartBeatTimeOut":15000,"ipDeleteTimeout":30000}}"#;

// Decoding a Nacos InstanceRequest JSON payload into the core's request.
#[library_benchmark]
fn decode_instance_request() -> usize {
    let (_, instance) =
        distro_server::nacos::decode_instance_request(black_box(INSTANCE_REQUEST)).expect("valid");
    instance.metadata.len()
}

fn query_node() -> &'static Node {
    let node = leak(fixture::node(1, 0, Config::default()));
    for r in fixture::requests(Kind::IpPort, 100, 100) {
        let spec = distro_core::ServiceSpec::new("", "", "query-svc");
        node.register(&r.client, &spec, &r.instance, fixture::NOW_MS)
            .expect("valid request");
    }
    node
}

// Encoding a QueryServiceResponse of a 100-instance service.
#[library_benchmark]
#[bench::instances_100(setup = query_node)]
fn encode_query_response(node: &'static Node) -> usize {
    let spec = distro_core::ServiceSpec::new("", "", "query-svc");
    let payload = distro_server::nacos::encode_query_response(node, &spec, fixture::NOW_MS);
    payload.body.map_or(0, |b| b.value.len())
}

fn cached_query_node() -> (&'static Node, &'static distro_server::answers::AnswerCache) {
    let node = query_node();
    let cache: &'static std::sync::Arc<distro_server::answers::AnswerCache> = leak(
        distro_server::answers::AnswerCache::install(node.registry()),
    );
    let cache: &'static distro_server::answers::AnswerCache = cache;
    let spec = distro_core::ServiceSpec::new("", "", "query-svc");
    // The first read renders and keeps the answer; the measured one reuses it.
    distro_server::nacos::encode_query_response_cached(cache, node, &spec, fixture::NOW_MS);
    (node, cache)
}

// The same QueryServiceResponse answered from the answer cache (the service unchanged).
#[library_benchmark]
#[bench::instances_100(setup = cached_query_node)]
fn encode_query_response_cached(
    (node, cache): (&'static Node, &'static distro_server::answers::AnswerCache),
) -> usize {
    let spec = distro_core::ServiceSpec::new("", "", "query-svc");
    let payload =
        distro_server::nacos::encode_query_response_cached(cache, node, &spec, fixture::NOW_MS);
    payload.body.map_or(0, |b| b.value.len())
}

library_benchmark_group!(
    name = wire;
    benchmarks = decode_instance_request, encode_query_response, encode_query_response_cached
);

main!(
    library_benchmark_groups = hashing,
    routing,
    checksum,
    store,
    sync,
    verify,
    wire
);
