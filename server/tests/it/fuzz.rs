//! Bad-input fuzzing, driven by proptest strategies: the peer protocol's decoders (the
//! compact layout of sync batches and snapshot chunks, the zero-copy `sync_codec` and
//! the `wire` conversions, then the core's handling of what
//! they accept), the HTTP/2 frames and HPACK blocks of `h2wire` (`fuzz/h2wire.rs`), the
//! Nacos 2.x JSON payloads over a real gRPC connection, and the HTTP
//! Open API parameters over real HTTP. Inputs are mutations of valid messages
//! (bit flips, byte changes, insertions, deletions, truncations, splices) and generated
//! values; every input must give an answer or a clear error, never a panic, a hang, or a
//! server that stops serving.
//!
//! CI runs a bounded number of cases (seconds). Long runs: `DISTRO_FUZZ_SECS=600` runs
//! each target for that long (`DISTRO_FUZZ_CASES` sets the case count instead); each
//! target prints executions, time and findings.
//!
//! Every run draws a fresh seed (from the OS's randomness and the clock), so each CI run
//! tries new inputs; each target prints it first, and every finding names it. Replay a
//! run with `DISTRO_FUZZ_SEED=<seed>` (the same seed gives the same inputs).

mod h2wire;

use super::nacos::harness::{Raw, TestServer, decode, fast_config, raw_payload, register_body};
use distro_core::message::{PeerRequest, SyncBatch};
use distro_core::model::{ClientId, InstanceSpec, ServiceSpec};
use distro_core::{Command, Config, MemberList, Node};
use distro_server::cluster::compact;
use distro_server::cluster::sync_codec::{self, SnapshotChunk, SyncRequest};
use distro_server::cluster::wire;
use distro_server::proto::distro as pb;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use prost::Message as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a target runs.
pub(crate) struct Budget {
    cases: u64,
    until: Option<Instant>,
}

/// The value of the environment variable `name` as a number, if it is set; a panic that
/// names the variable if it is not a number.
fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a whole number: {e}")),
    )
}

impl Budget {
    pub(crate) fn from_env(default_cases: u64) -> Budget {
        let secs = env_u64("DISTRO_FUZZ_SECS");
        let cases = env_u64("DISTRO_FUZZ_CASES").unwrap_or(if secs.is_some() {
            u64::MAX
        } else {
            default_cases
        });
        Budget {
            cases,
            until: secs.map(|s| Instant::now() + Duration::from_secs(s)),
        }
    }

    pub(crate) fn more(&self, done: u64) -> bool {
        done < self.cases && self.until.is_none_or(|u| Instant::now() < u)
    }
}

/// The run's seed: `DISTRO_FUZZ_SEED` to replay a run, otherwise drawn once per process
/// from the OS's randomness (std's `RandomState` keys) mixed with the clock.
pub(crate) fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        env_u64("DISTRO_FUZZ_SEED").unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            h.write_u128(now.as_nanos());
            h.write_u32(std::process::id());
            h.finish()
        })
    })
}

/// The input generator of `target`, seeded from the run's seed, which it prints first (a
/// failing test shows it with its output).
pub(crate) fn runner(target: &str) -> TestRunner {
    println!(
        "fuzz {target}: seed {s} (replay with DISTRO_FUZZ_SEED={s})",
        s = seed()
    );
    let s = seed()
        ^ target
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&s.to_le_bytes());
    TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

pub(crate) fn sample<T: std::fmt::Debug>(r: &mut TestRunner, s: &impl Strategy<Value = T>) -> T {
    s.new_tree(r).expect("strategy generates").current()
}

/// One mutation of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
    /// A varint of many continuation bytes or a huge length.
    Varint(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX),
                Just(1u64 << 31),
                Just(1u64 << 40),
                any::<u64>()
            ]
        )
            .prop_map(|(p, v)| Mutation::Varint(p, v)),
    ]
}

fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
        match m {
            Mutation::Flip(p, bit) if !b.is_empty() => {
                let i = at(*p, b.len());
                b[i] ^= 1 << bit;
            }
            Mutation::Set(p, v) if !b.is_empty() => {
                let i = at(*p, b.len());
                b[i] = *v;
            }
            Mutation::Insert(p, v) => {
                let i = at(*p, b.len() + 1);
                b.splice(i..i, v.iter().copied());
            }
            Mutation::Delete(p, n) if !b.is_empty() => {
                let i = at(*p, b.len());
                let j = (i + n).min(b.len());
                b.drain(i..j);
            }
            Mutation::Truncate(p) => {
                let i = at(*p, b.len() + 1);
                b.truncate(i);
            }
            Mutation::Duplicate(p, n) if !b.is_empty() => {
                let i = at(*p, b.len());
                let j = (i + n).min(b.len());
                let copy = b[i..j].to_vec();
                b.splice(j..j, copy);
            }
            Mutation::Varint(p, v) => {
                let i = at(*p, b.len() + 1);
                let mut enc = Vec::new();
                prost::encoding::encode_varint(*v, &mut enc);
                b.splice(i..i, enc);
            }
            _ => {}
        }
    }
    b
}

/// A corpus entry mutated 0-4 times, or (1 in 8) random bytes.
pub(crate) fn input(corpus: &[Vec<u8>]) -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus.to_vec();
    let n = corpus.len();
    prop_oneof![
        7 => (0..n, prop::collection::vec(mutation(), 0..5))
            .prop_map(move |(i, ms)| mutate(corpus[i].clone(), &ms)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Tallies of one target.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) executions: u64,
    accepted: u64,
    refused: u64,
    slowest: Duration,
}

impl Tally {
    pub(crate) fn record(&mut self, ok: bool, took: Duration) {
        self.executions += 1;
        if ok {
            self.accepted += 1;
        } else {
            self.refused += 1;
        }
        self.slowest = self.slowest.max(took);
    }

    pub(crate) fn print(&self, target: &str, start: Instant) {
        println!(
            "fuzz {target}: {} executions in {:.1} s ({} accepted, {} refused with an error), \
             slowest case {:.1} ms, 0 findings (seed {}; DISTRO_FUZZ_SEED replays it)",
            self.executions,
            start.elapsed().as_secs_f64(),
            self.accepted,
            self.refused,
            self.slowest.as_secs_f64() * 1e3,
            seed()
        );
    }
}

const MEMBERS: [&str; 3] = ["10.0.0.1:8848", "10.0.0.2:8848", "10.0.0.3:8848"];

fn node(me: usize) -> Arc<Node> {
    let members: Vec<String> = MEMBERS.iter().map(|s| s.to_string()).collect();
    let cfg = Config {
        sync_delay: 0,
        // Fixed map seeds: the corpus's orders, and so the inputs of a seed, are the same
        // in every process.
        hash_seed: Some(0x5eed),
        ..Config::default()
    };
    Arc::new(
        Node::new(
            cfg,
            MemberList::new(&members[me], &members).expect("members"),
            1,
        )
        .expect("node"),
    )
}

/// Keeps one metadata entry per instance: prost encodes a map in the order of its
/// `HashMap`, which differs from process to process, and the corpus must not, or a seed
/// would not replay. (The `SyncRequest` and `SnapshotChunk` entries, our own codec, keep
/// both entries, in key order.)
fn one_metadata_entry(r: &mut pb::ClientRecord) {
    for i in r
        .publications
        .iter_mut()
        .flat_map(|p| p.instances.iter_mut())
    {
        if let Some(first) = i.metadata.keys().min().cloned() {
            i.metadata.retain(|k, _| *k == first);
        }
    }
}

/// Valid peer messages of every kind, encoded.
fn peer_corpus() -> Vec<Vec<u8>> {
    let n = node(0);
    let svc = ServiceSpec::new("ns", "g", "svc");
    let mut spec = InstanceSpec::new("10.1.2.3", 8080);
    spec.weight = 2.5;
    spec.cluster = "c-1".into();
    spec.metadata = vec![("zone".into(), "a".into()), ("k".into(), String::new())];
    spec.instance_id = Some("custom".into());
    n.register(&ClientId::ip_port("10.1.2.3", 8080), &svc, &spec, 10)
        .expect("register");
    let batch: Vec<InstanceSpec> = (0..3)
        .map(|p| InstanceSpec::new("172.16.0.1", 9000 + p))
        .collect();
    n.register_batch(&ClientId::connection(5, "172.16.0.1", 1), &svc, &batch, 10)
        .expect("batch");
    // The compact layout's other forms: an IPv6 instance, a host name, an id that only
    // looks derivable (sent as a string), a connection's millis sent escaped after its
    // word (2^48 - 1 and above).
    for (id, ip, port) in [
        (ClientId::ip_port("fe80::1", 7000), "fe80::1", 7000),
        (
            ClientId::connection((1 << 48) + 5, "172.16.0.2", 4),
            "172.16.0.2",
            4,
        ),
        (ClientId::connection(7, "host-b", 2), "host-b", 3),
        (
            ClientId::parse("10.9.9.9:09#true").expect("id"),
            "10.9.9.9",
            9,
        ),
    ] {
        n.register(&id, &svc, &InstanceSpec::new(ip, port), 10)
            .expect("register");
    }
    n.register(
        &ClientId::connection(6, "1.1.1.1", 1),
        &ServiceSpec::new("", "", "other"),
        &InstanceSpec::new("1.1.1.1", 1),
        10,
    )
    .expect("register");
    n.remove_client(&ClientId::connection(6, "1.1.1.1", 1), 11);
    let sync = n
        .tick(20)
        .into_iter()
        .find_map(Command::into_sync_batch)
        .expect("a batch");
    let mut out = vec![
        SyncRequest::new(&n, &sync).encode_to_vec(),
        SyncRequest::protobuf(n.clone(), sync.clone()).encode_to_vec(),
        compact::encode_changes(&n, &sync.changes),
    ];
    for c in &sync.changes {
        let mut change = wire::change_to_proto(&n, c);
        if let Some(pb::client_change::Change::Upsert(r)) = &mut change.change {
            one_metadata_entry(r);
        }
        out.push(change.encode_to_vec());
        if let distro_core::ClientChange::Upsert(r) = c {
            let mut record = wire::record_to_proto(&n, r);
            one_metadata_entry(&mut record);
            out.push(record.encode_to_vec());
        }
    }
    let chunk = n.snapshot_chunk(distro_core::SnapshotCursor::default());
    out.push(compact::encode_records(&n, &chunk.records));
    out.push(SnapshotChunk::protobuf(n.clone(), &chunk).encode_to_vec());
    out.push(SnapshotChunk::new(&n, &chunk).encode_to_vec());
    let versions = vec![
        pb::ClientVersion {
            id: "10.1.2.3:8080#true".into(),
            revision: 5,
        },
        pb::ClientVersion {
            id: "5_172.16.0.1_1".into(),
            revision: 1 << 40,
        },
    ];
    out.push(
        pb::VerifyDigestsRequest {
            from: MEMBERS[0].into(),
            digests: (0..4)
                .map(|i| pb::ShardDigest {
                    count: i,
                    sum_lo: i * 7,
                    sum_hi: 1,
                })
                .collect(),
            digest_version: 3,
        }
        .encode_to_vec(),
    );
    out.push(
        pb::VerifyListRequest {
            from: MEMBERS[0].into(),
            shards: vec![pb::ShardList {
                shard: 3,
                clients: versions.clone(),
            }],
        }
        .encode_to_vec(),
    );
    out.push(
        pb::VerifyClientsRequest {
            from: MEMBERS[0].into(),
            clients: versions,
        }
        .encode_to_vec(),
    );
    out
}

/// Feeds `b` to every peer decoder and the core; returns whether anything accepted it.
fn peer_case(replica: &Node, b: &[u8]) -> bool {
    let from = replica
        .members()
        .find(MEMBERS[0])
        .expect("member 0 is known");
    let clear = |e: &dyn std::fmt::Display| {
        let m = e.to_string();
        assert!(!m.trim().is_empty(), "an error without a message");
    };
    let mut accepted = false;
    let handle = |req: PeerRequest| {
        let _ = replica.handle_request(from, req, 1_000_000);
    };
    match sync_codec::decode_change(replica, b) {
        Ok(c) => {
            accepted = true;
            handle(PeerRequest::Sync(SyncBatch {
                changes: vec![c],
                lowest: None,
                encoding: None,
            }));
        }
        Err(e) => clear(&e),
    }
    match sync_codec::decode_record(replica, b) {
        Ok(_) => accepted = true,
        Err(e) => clear(&e),
    }
    match compact::decode(replica, b) {
        Ok(mut decoded) => {
            accepted = true;
            let _ = replica.handle_sync(from, decoded.changes(), 1_000_000);
        }
        Err(e) => clear(&e),
    }
    match compact::decode_records(replica, b) {
        Ok(_) => accepted = true,
        Err(e) => clear(&e),
    }
    match SyncRequest::decode(b) {
        Ok(s) => match s.decode_batch(replica) {
            Ok(mut decoded) => {
                accepted = true;
                let _ = replica.handle_sync(from, decoded.changes(), 1_000_000);
            }
            Err(e) => clear(&e),
        },
        Err(e) => clear(&e),
    }
    match SnapshotChunk::decode(b) {
        Ok(c) => match c.decode_records(replica) {
            Ok(_) => accepted = true,
            Err(e) => clear(&e),
        },
        Err(e) => clear(&e),
    }
    match pb::ClientChange::decode(b) {
        Ok(c) => match wire::change_from_proto(replica, c) {
            Ok(_) => accepted = true,
            Err(e) => clear(&e),
        },
        Err(e) => clear(&e),
    }
    match pb::ClientRecord::decode(b) {
        Ok(r) => match wire::record_from_proto(replica, r) {
            Ok(_) => accepted = true,
            Err(e) => clear(&e),
        },
        Err(e) => clear(&e),
    }
    if let Ok(d) = pb::VerifyDigestsRequest::decode(b) {
        accepted = true;
        handle(PeerRequest::VerifyDigests(wire::digests_from_proto(
            &d.digests,
        )));
    }
    if let Ok(l) = pb::VerifyListRequest::decode(b) {
        match wire::list_from_proto(&l.shards) {
            Ok(l) => {
                accepted = true;
                handle(PeerRequest::VerifyList(l));
            }
            Err(e) => clear(&e),
        }
    }
    if let Ok(v) = pb::VerifyClientsRequest::decode(b) {
        match wire::verify_clients_from_proto(&v.clients) {
            Ok(v) => {
                accepted = true;
                handle(PeerRequest::VerifyClients(v));
            }
            Err(e) => clear(&e),
        }
    }
    if let Ok(r) = pb::VerifyListResponse::decode(b) {
        match wire::needs_from_proto(replica, r.needs) {
            Ok(_) => accepted = true,
            Err(e) => clear(&e),
        }
    }
    accepted
}

#[test]
fn peer_messages() {
    let corpus = peer_corpus();
    let strategy = input(&corpus);
    let mut r = runner("peer");
    let budget = Budget::from_env(5_000);
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut replica = node(1);
    while budget.more(tally.executions) {
        if tally.executions % 20_000 == 0 {
            // A fresh node now and then, so interned garbage does not pile up.
            replica = node(1);
        }
        let b = sample(&mut r, &strategy);
        let t = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| peer_case(&replica, &b)));
        match outcome {
            Ok(ok) => tally.record(ok, t.elapsed()),
            Err(_) => panic!(
                "FINDING: the peer decoders panicked on {:02x?} (seed {})",
                b,
                seed()
            ),
        }
    }
    tally.print("peer messages", start);
    assert!(
        tally.slowest < Duration::from_secs(2),
        "a case took {:?}",
        tally.slowest
    );
}

/// Words the request decoders look for, so generated objects hit real fields.
const KEYS: &[&str] = &[
    "type",
    "namespace",
    "serviceName",
    "groupName",
    "instance",
    "instances",
    "ip",
    "port",
    "weight",
    "healthy",
    "enabled",
    "ephemeral",
    "clusterName",
    "metadata",
    "instanceId",
    "cluster",
    "clusters",
    "healthyOnly",
    "healthOnly",
    "subscribe",
    "pageNo",
    "pageSize",
    "requestId",
    "resultCode",
    "errorCode",
    "headers",
    "labels",
    "abilityTable",
    "tenant",
    "clientVersion",
    "module",
    "beat",
    "enable",
    "namespaceId",
    "x",
];

/// Values that sit on the edges of what the decoders accept.
const VALUES: &[&str] = &[
    "",
    "0",
    "-1",
    "1",
    "80",
    "65535",
    "65536",
    "4294967296",
    "99999999999999999999",
    "1e308",
    "-0.5",
    "NaN",
    "true",
    "false",
    "yes",
    "null",
    "{",
    "{}",
    "{\"a\":1}",
    "[]",
    "{\"ip\":\"1.1.1.1\",\"port\":80}",
    "a=b,c=d",
    "novalue",
    "a@@b",
    "@@",
    "DEFAULT_GROUP@@x",
    "registerInstance",
    "deregisterInstance",
    "batchRegisterInstance",
    "public",
    "DEFAULT",
    "no spaces",
    "10.0.0.1",
    "::1",
    "host.example",
    "\u{fc}\u{6f22}",
    "%ff",
    "a\u{0}b",
];

fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(VALUES).prop_map(str::to_string),
        1 => "[a-z0-9.:@_-]{0,12}",
        1 => any::<String>(),
        1 => (1usize..3000).prop_map(|n| "x".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(&[0i64, 1, -1, 80, 65535, 65536, i64::MAX, i64::MIN][..])
            .prop_map(Value::from),
        text_value().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

const NACOS_KINDS: &[&str] = &[
    "InstanceRequest",
    "BatchInstanceRequest",
    "PersistentInstanceRequest",
    "ServiceQueryRequest",
    "SubscribeServiceRequest",
    "ServiceListRequest",
    "ServerCheckRequest",
    "HealthCheckRequest",
    "ConnectionSetupRequest",
    "NotifySubscriberResponse",
    "NoSuchRequest",
];

fn nacos_corpus() -> Vec<(usize, Vec<u8>)> {
    use serde_json::json;
    let inst = json!({"ip":"10.0.0.1","port":80,"weight":1.0,"healthy":true,"enabled":true,
        "ephemeral":true,"clusterName":"DEFAULT","metadata":{"a":"b"},"instanceId":null});
    let bodies = [
        (0, register_body("fz", "10.0.0.1", 80)),
        (
            1,
            json!({"type":"batchRegisterInstance","namespace":"","serviceName":"fz",
            "groupName":"DEFAULT_GROUP","instances":[inst.clone(), inst]}),
        ),
        (
            2,
            json!({"type":"registerInstance","serviceName":"fz","instance":inst}),
        ),
        (
            3,
            json!({"namespace":"","serviceName":"fz","groupName":"DEFAULT_GROUP","cluster":"",
            "healthyOnly":false,"udpPort":0}),
        ),
        (
            4,
            json!({"namespace":"","serviceName":"fz","groupName":"DEFAULT_GROUP",
            "subscribe":true,"clusters":""}),
        ),
        (
            5,
            json!({"namespace":"","groupName":"DEFAULT_GROUP","pageNo":1,"pageSize":10}),
        ),
        (6, json!({"headers":{}})),
        (7, json!({"headers":{}})),
    ];
    bodies
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_vec(&v).expect("json")))
        .collect()
}

fn nacos_input() -> impl Strategy<Value = (usize, Vec<u8>)> {
    let corpus = nacos_corpus();
    let n = corpus.len();
    prop_oneof![
        4 => (0..n, prop::collection::vec(mutation(), 0..4))
            .prop_map(move |(i, ms)| (corpus[i].0, mutate(corpus[i].1.clone(), &ms))),
        4 => (0..NACOS_KINDS.len(), json_value())
            .prop_map(|(k, v)| (k, serde_json::to_vec(&v).expect("json"))),
        1 => (0..NACOS_KINDS.len(), prop::collection::vec(any::<u8>(), 0..64)),
    ]
}

async fn nacos_client(server: &TestServer) -> Raw {
    let mut c = Raw::connect(server).await;
    c.setup().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacos_payloads() {
    let server = TestServer::start(fast_config()).await;
    let mut c = nacos_client(&server).await;
    let strategy = nacos_input();
    let mut r = runner("nacos");
    let budget = Budget::from_env(800);
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut reconnects = 0;
    while budget.more(tally.executions) {
        let (kind, body) = sample(&mut r, &strategy);
        let t = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            c.unary.request(raw_payload(NACOS_KINDS[kind], &body)),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "FINDING: no reply within 5 s to {} {:?} (seed {})",
                NACOS_KINDS[kind],
                String::from_utf8_lossy(&body),
                seed()
            )
        });
        let ok = match reply {
            Ok(p) => {
                let (ty, v) = decode(p.get_ref());
                if ty == "ErrorResponse" {
                    let code = v["errorCode"].as_i64().unwrap_or(-1);
                    let msg = v["message"].as_str().unwrap_or_default();
                    assert!(
                        code > 0 && code != 500 && !msg.is_empty(),
                        "FINDING: unclear error {v} for {} {:?} (seed {})",
                        NACOS_KINDS[kind],
                        String::from_utf8_lossy(&body),
                        seed()
                    );
                    if code == 301 {
                        // The connection is gone (closed by the server): set up again.
                        reconnects += 1;
                        c = nacos_client(&server).await;
                    }
                    false
                } else {
                    assert!(ty.ends_with("Response"), "reply of type {ty}");
                    true
                }
            }
            Err(status) => {
                assert!(
                    !status.message().is_empty(),
                    "a gRPC error without a message"
                );
                false
            }
        };
        tally.record(ok, t.elapsed());
    }
    tally.print("Nacos payloads", start);
    println!("fuzz Nacos payloads: {reconnects} reconnects after 301");
    // The server still serves a well-formed client.
    let mut fresh = nacos_client(&server).await;
    let (ty, v) = fresh
        .call(
            "InstanceRequest",
            register_body("after-fuzz", "10.9.9.9", 99),
        )
        .await;
    assert_eq!(ty, "InstanceResponse", "{v}");
    // A client that never reads its bi-stream (pushes of fuzzed subscriptions pile up)
    // holds the server's graceful shutdown (the binary bounds it at 10 s): close first.
    drop(c);
    drop(fresh);
    server.stop().await;
}

const ROUTES: &[&str] = &[
    "/nacos/v1/ns/instance",
    "/nacos/v1/ns/instance/beat",
    "/nacos/v1/ns/instance/list",
    "/nacos/v1/ns/service/list",
    "/health",
    "/metrics",
];

fn form() -> impl Strategy<Value = String> {
    let pair = (
        prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_string), 1 => any::<String>()],
        text_value(),
    );
    prop_oneof![
        6 => prop::collection::vec(pair, 0..10).prop_map(|v| {
            serde_urlencoded::to_string(&v).unwrap_or_default()
        }),
        1 => "[a-zA-Z0-9=&%+;._-]{0,64}",
    ]
}

#[derive(Debug)]
struct HttpCase {
    method: &'static str,
    path: String,
    query: String,
    body: Vec<u8>,
}

fn http_input() -> impl Strategy<Value = HttpCase> {
    (
        prop::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH"][..]),
        prop_oneof![
            8 => prop::sample::select(ROUTES).prop_map(str::to_string),
            1 => "/[a-z/]{0,30}",
        ],
        form(),
        prop_oneof![
            3 => Just(Vec::new()),
            2 => form().prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..128),
        ],
    )
        .prop_map(|(method, path, query, body)| HttpCase {
            method,
            path,
            query,
            body,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_parameters() {
    use distro_server::{Listeners, ServerConfig};
    let mut config = ServerConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        sdk_port: Some(0),
        cluster_port: Some(0),
        ..ServerConfig::default()
    };
    let listeners = Listeners::bind(&config).expect("bind");
    config.port = listeners.http.local_addr().expect("addr").port();
    let server = distro_server::start(config, listeners)
        .await
        .expect("server starts");
    let base = format!("http://{}", server.http_addr());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let strategy = http_input();
    let mut r = runner("http");
    let budget = Budget::from_env(800);
    let start = Instant::now();
    let mut tally = Tally::default();
    while budget.more(tally.executions) {
        let case = sample(&mut r, &strategy);
        let url = format!("{base}{}?{}", case.path, case.query);
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let t = Instant::now();
        let resp = http
            .request(method, &url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(case.body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("FINDING: no answer ({e}) to {case:?} (seed {})", seed()));
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status < 500,
            "FINDING: {status} {body:?} for {case:?} (seed {})",
            seed()
        );
        if status == 400 {
            assert!(
                body.starts_with("invalid ") || body.starts_with("malformed "),
                "FINDING: an unclear 400 {body:?} for {case:?} (seed {})",
                seed()
            );
        }
        tally.record(status == 200, t.elapsed());
    }
    tally.print("HTTP parameters", start);
    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health answers");
    assert_eq!(health.status().as_u16(), 200);
    server.shutdown().await;
}
