//! A real 3-node cluster in one process (LocalCluster): replication, forwarding, restart
//! with snapshot load, verify repair, heartbeat expiry, partitions, and the binary's
//! graceful shutdown; the cluster token and malformed input on every API in
//! [`hostile`].
//!
//! Timings are shortened (sync delay 200 ms, verify 1 s, probes 300 ms) so the protocol
//! runs many rounds per test; every wait is a condition polled against a deadline.

use distro_core::model::ClientId;
use distro_core::{MemberState, Node, Route};
use distro_server::proto::distro as pb;
use distro_server::{LocalCluster, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod flushes;
mod hints;
mod hostile;
mod versions;
pub(crate) use hostile::RawBytes;

pub(crate) fn fast_config() -> ServerConfig {
    let mut c = ServerConfig::default();
    let p = &mut c.protocol;
    p.sync_delay = 200;
    p.sync_retry_delay = 500;
    p.sync_retry_max_delay = 2_000;
    p.peer_timeout = 1_000;
    p.verify_interval = 1_000;
    p.lease = 20_000;
    p.probe_interval = 300;
    p.heartbeat_timeout = 2_000;
    p.delete_timeout = 4_000;
    p.health_check_interval = 500;
    p.load_retry_delay = 300;
    p.tombstone_ttl = 10_000;
    p.shards = 64;
    c.tick = Duration::from_millis(50);
    c.nacos.push_delay = Duration::from_millis(100);
    c
}

/// [`fast_config`] for tests whose clients send no heartbeats: their instances stay as
/// registered (healthy, held) for the test's whole length.
fn no_beats_config() -> ServerConfig {
    let mut c = fast_config();
    c.protocol.heartbeat_timeout = 120_000;
    c.protocol.delete_timeout = 240_000;
    c
}

/// Polls `f` every 50 ms until it holds or `deadline` passes; panics with `what`.
pub(crate) async fn eventually(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A native registration of a healthy, enabled instance `ip:port` of weight 1 in `svc`.
pub(crate) fn registration(svc: &pb::ServiceRef, ip: String, port: u32) -> pb::Registration {
    pb::Registration {
        service: Some(svc.clone()),
        instance: Some(pb::Instance {
            ip,
            port,
            weight: 1.0,
            healthy: true,
            enabled: true,
            ..Default::default()
        }),
    }
}

pub(crate) async fn cluster(n: usize, config: ServerConfig) -> LocalCluster {
    let c = LocalCluster::start(n, config, 1)
        .await
        .expect("cluster starts");
    let nodes: Vec<Arc<Node>> = (0..n).filter_map(|i| c.node(i)).collect();
    eventually("every node loaded", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.is_loaded())
    })
    .await;
    c
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

fn holds(node: &Node, ip: &str, port: u16) -> bool {
    node.registry()
        .get(ClientId::ip_port(ip, port).as_str())
        .is_some()
}

/// The address node `i` goes by in the member list (what its peer messages carry).
fn member_addr(c: &LocalCluster, i: usize) -> String {
    let n = c.node(i).expect("runs");
    n.members().addr(n.me()).to_string()
}

/// A peer-protocol client of node `i`'s cluster port.
async fn peer_client(
    c: &LocalCluster,
    i: usize,
) -> pb::peer_client::PeerClient<tonic::transport::Channel> {
    pb::peer_client::PeerClient::connect(format!("http://127.0.0.1:{}", c.ports(i).cluster))
        .await
        .expect("connect")
}

pub(crate) fn all_hold(c: &LocalCluster, ip: &str, port: u16) -> bool {
    (0..c.len()).all(|i| c.node(i).is_some_and(|n| holds(&n, ip, port)))
}

/// An ip:port (10.9.x.y:8080) that the cluster routes to node `owner`.
pub(crate) fn address_owned_by(c: &LocalCluster, owner: usize) -> (String, u16) {
    let n = c.node(0).expect("node 0 runs");
    let want = c.node(owner).expect("owner runs").me();
    for i in 0..10_000u32 {
        let ip = format!("10.9.{}.{}", i / 250, i % 250);
        let owner_of = match n.route(&format!("{ip}:8080")) {
            Route::Local => n.me(),
            Route::Remote(m) => m,
        };
        if owner_of == want {
            return (ip, 8080);
        }
    }
    panic!("no address routes to node {owner}");
}

pub(crate) async fn register_http(
    c: &LocalCluster,
    via: usize,
    service: &str,
    ip: &str,
    port: u16,
) -> (u16, String) {
    let url = format!(
        "http://{}/nacos/v1/ns/instance?serviceName={service}&ip={ip}&port={port}",
        c.http_addr(via)
    );
    send(http().post(url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_through_any_node_is_visible_on_every_node() {
    let c = cluster(3, fast_config()).await;
    for via in 0..3 {
        let ip = format!("10.1.0.{via}");
        let (status, body) = register_http(&c, via, "orders", &ip, 8080).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    let took = eventually(
        "all three instances on every node",
        Duration::from_secs(5),
        || (0..3).all(|v| all_hold(&c, &format!("10.1.0.{v}"), 8080)),
    )
    .await;
    println!("replicated to every node {took:?} after the last write (sync delay 200 ms)");
    // Every node answers the list locally with all three.
    for i in 0..3 {
        let url = format!(
            "http://{}/nacos/v1/ns/instance/list?serviceName=orders",
            c.http_addr(i)
        );
        let (status, body) = send(http().get(url)).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["name"], "DEFAULT_GROUP@@orders");
        assert_eq!(
            v["hosts"].as_array().map(Vec::len),
            Some(3),
            "node {i}: {body}"
        );
    }
    c.shutdown().await;
}

/// The revision (`rev` metadata) of the one instance an `instance/list` answer lists (0: none).
async fn listed_revision(http: &reqwest::Client, addr: std::net::SocketAddr) -> u64 {
    let url = format!("http://{addr}/nacos/v1/ns/instance/list?serviceName=revisions");
    let (status, body) = send(http.get(url)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    match v["hosts"].as_array().map(Vec::as_slice) {
        None | Some([]) => 0,
        Some([h]) => h["metadata"]["rev"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no rev in {body}")),
        Some(_) => panic!("more than one instance in {body}"),
    }
}

/// `GET /nacos/v1/ns/instance/list` is answered from the answer cache: a writer registers
/// one instance again and again with metadata `rev=1`, `rev=2`, … through its owner, while
/// readers list the service on every node in a loop. A read at the owner after a write
/// returned shows that revision or a later one, no node ever shows an older revision after
/// a newer one, and every node shows the last revision before a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_api_reads_never_return_an_answer_older_than_the_change_they_follow() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const WRITES: u64 = 60;
    let c = cluster(3, fast_config()).await;
    let (ip, port) = address_owned_by(&c, 0);
    let http = http();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (http, stop, addr) = (http.clone(), stop.clone(), c.http_addr(i));
            tokio::spawn(async move {
                let (mut last, mut reads) = (0, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    let rev = listed_revision(&http, addr).await;
                    assert!(
                        rev >= last,
                        "node {i} listed revision {rev} after revision {last}"
                    );
                    (last, reads) = (rev, reads + 1);
                }
                reads
            })
        })
        .collect();
    for rev in 1..=WRITES {
        let url = format!("http://{}/nacos/v1/ns/instance", c.http_addr(0));
        let query = [
            ("serviceName", "revisions".to_string()),
            ("ip", ip.clone()),
            ("port", port.to_string()),
            ("metadata", format!("rev={rev}")),
        ];
        let (status, body) = send(http.post(url).query(&query)).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "revision {rev}");
        let seen = listed_revision(&http, c.http_addr(0)).await;
        assert!(
            seen >= rev,
            "the owner listed revision {seen} after the write of revision {rev} returned"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        loop {
            let rev = listed_revision(&http, c.http_addr(i)).await;
            if rev == WRITES {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} still lists revision {rev} of {WRITES}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for (i, r) in readers.into_iter().enumerate() {
        let reads = r.await.expect("the reader saw no revision go back");
        println!("node {i}: {reads} reads while {WRITES} revisions were written");
        assert!(reads > 0);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_forwarded_to_their_owner() {
    let c = cluster(3, fast_config()).await;
    let (ip, port) = address_owned_by(&c, 2);
    let (status, body) = register_http(&c, 0, "payments", &ip, port).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let owner = c.node(2).expect("runs");
    let client = owner
        .registry()
        .get(ClientId::ip_port(&ip, port).as_str())
        .expect("the owner applied it");
    assert_eq!(client.owner(), owner.me(), "attributed to the owner");
    assert_eq!(
        c.node(0).expect("runs").owned_clients(),
        0,
        "the entry node owns nothing"
    );
    let m0 = c.metrics(0).expect("runs");
    assert_eq!(m0.forwarded_count(distro_server::metrics::Outcome::Ok), 1);
    // A heartbeat through the third node is forwarded too.
    let url = format!(
        "http://{}/nacos/v1/ns/instance/beat?serviceName=payments&ip={ip}&port={port}",
        c.http_addr(1)
    );
    let (status, body) = send(http().put(url)).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"code\":10200"), "{body}");
    assert_eq!(
        c.metrics(1)
            .expect("runs")
            .forwarded_count(distro_server::metrics::Outcome::Ok),
        1
    );
    c.shutdown().await;
}

/// `max_clients` counts the clients a node owns: every node holds the others' clients
/// as replicas past the limit (a sync is never refused), and a registration forwarded to
/// an owner at its limit comes back refused with the owner's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_limit_binds_owners_and_never_refuses_replicas() {
    let mut config = fast_config();
    config.protocol.max_clients = 1;
    let c = cluster(3, config).await;
    let mut owned = Vec::new();
    for owner in 0..3 {
        let (ip, port) = address_owned_by(&c, owner);
        assert_eq!(
            register_http(&c, (owner + 1) % 3, "limited", &ip, port).await,
            (200, "ok".into())
        );
        owned.push((ip, port));
    }
    eventually(
        "every node holds all three clients",
        Duration::from_secs(10),
        || owned.iter().all(|(ip, port)| all_hold(&c, ip, *port)),
    )
    .await;
    // One more client owned by node 1, sent to node 0: forwarded, refused by the owner.
    let n = c.node(0).expect("node 0 runs");
    let want = c.node(1).expect("node 1 runs").me();
    let extra = (0..10_000u32)
        .map(|i| format!("10.8.{}.{}", i / 250, i % 250))
        .find(|ip| n.route(&format!("{ip}:8080")) == Route::Remote(want))
        .expect("an address owned by node 1");
    let (status, body) = register_http(&c, 0, "limited", &extra, 8080).await;
    println!("a second client of node 1: {status} {body}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("the limit is 1 (max_clients)"), "{body}");
    // The native API refuses the same item with its per-item code for invalid input.
    let mut native =
        pb::registry_client::RegistryClient::connect(format!("http://{}", c.sdk_addr(2)))
            .await
            .expect("connect");
    let r = native
        .register(pb::RegisterRequest {
            registrations: vec![pb::Registration {
                service: Some(pb::ServiceRef {
                    namespace: String::new(),
                    group: String::new(),
                    name: "limited".into(),
                }),
                instance: Some(pb::Instance {
                    ip: extra.clone(),
                    port: 8080,
                    weight: 1.0,
                    healthy: true,
                    enabled: true,
                    ..Default::default()
                }),
            }],
        })
        .await
        .expect("register answers")
        .into_inner();
    let item = &r.results[0];
    println!("natively: {} {}", item.code, item.message);
    assert_eq!(item.code, 400, "{item:?}");
    assert!(item.message.contains("(max_clients)"), "{item:?}");
    // The other nodes' clients keep working.
    assert_eq!(
        register_http(&c, 2, "limited-2", &owned[2].0, owned[2].1).await,
        (200, "ok".into())
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_batches_are_split_by_owner_and_watched_from_any_node() {
    let c = cluster(3, fast_config()).await;
    let sdk = |i: usize| format!("http://{}", c.sdk_addr(i));
    let mut watcher = pb::registry_client::RegistryClient::connect(sdk(2))
        .await
        .expect("connect");
    let svc = pb::ServiceRef {
        namespace: String::new(),
        group: String::new(),
        name: "inventory".into(),
    };
    let mut events = watcher
        .watch(pb::WatchRequest {
            services: vec![svc.clone()],
        })
        .await
        .expect("watch")
        .into_inner();
    let first = events
        .message()
        .await
        .expect("stream")
        .expect("initial state");
    assert!(first.instances.is_empty());
    let mut client = pb::registry_client::RegistryClient::connect(sdk(0))
        .await
        .expect("connect");
    let registrations: Vec<pb::Registration> = (0..300u32)
        .map(|i| registration(&svc, format!("10.2.{}.{}", i / 200, i % 200), 7000))
        .collect();
    let r = client
        .register(pb::RegisterRequest { registrations })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(r.results.len(), 300);
    assert!(
        r.results.iter().all(|x| x.code == 200),
        "{:?}",
        r.results.iter().find(|x| x.code != 200)
    );
    let owned: Vec<u64> = (0..3)
        .map(|i| c.node(i).expect("runs").owned_clients())
        .collect();
    assert_eq!(owned.iter().sum::<u64>(), 300);
    assert!(
        owned.iter().all(|&n| n > 50),
        "every node owns a share: {owned:?}"
    );
    // The watcher on node 2 sees all 300 once replicated.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), events.message())
            .await
            .expect("watch event before the deadline")
            .expect("stream")
            .expect("event");
        if ev.instances.len() == 300 {
            break;
        }
    }
    // Query through the native API on node 1.
    let mut q = pb::registry_client::RegistryClient::connect(sdk(1))
        .await
        .expect("connect");
    eventually("node 1 holds all 300", Duration::from_secs(5), || {
        c.node(1).expect("runs").registry().stats().instances == 300
    })
    .await;
    let r = q
        .query(pb::QueryRequest {
            service: Some(svc.clone()),
            clusters: vec![],
            healthy_only: false,
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(r.instances.len(), 300);
    // Many services in one request: one answer per query, in order (the second, repeated,
    // comes from the answer cache; an unknown service and an unmatched filter are empty).
    let query = |name: &str, clusters: Vec<String>| pb::QueryRequest {
        service: Some(pb::ServiceRef {
            name: name.into(),
            ..svc.clone()
        }),
        clusters,
        healthy_only: false,
    };
    let queries = vec![
        query(&svc.name, vec![]),
        query("no-such-service", vec![]),
        query(&svc.name, vec!["no-such-cluster".into()]),
        query(&svc.name, vec![]),
    ];
    let r = q
        .query_batch(pb::QueryBatchRequest { queries })
        .await
        .expect("query batch")
        .into_inner();
    let counts: Vec<usize> = r.answers.iter().map(|a| a.instances.len()).collect();
    assert_eq!(counts, [300, 0, 0, 300]);
    assert!(r.answers[0].revision > 0);
    assert_eq!(r.answers[0], r.answers[3]);
    // A query naming an invalid service fails the request, naming the query.
    let bad = q
        .query_batch(pb::QueryBatchRequest {
            queries: vec![query(&svc.name, vec![]), query("", vec![])],
        })
        .await
        .expect_err("an invalid service is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("queries[1]"), "{}", bad.message());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_loads_the_snapshot_and_converges() {
    let mut config = fast_config();
    config.protocol.snapshot_chunk_bytes = 4096; // many chunks
    let c = cluster(3, config).await;
    for i in 0..150u16 {
        let (s, _) = register_http(
            &c,
            (i % 3) as usize,
            "catalog",
            &format!("10.3.0.{}", i % 250),
            9000 + i,
        )
        .await;
        assert_eq!(s, 200);
    }
    eventually("150 clients everywhere", Duration::from_secs(10), || {
        (0..3).all(|i| {
            c.node(i)
                .is_some_and(|n| n.registry().stats().clients == 150)
        })
    })
    .await;
    c.kill(1);
    // Writes continue while node 1 is dead (clients whose owner is node 1 fail over to
    // the survivors once node 1 is DOWN; register through node 0, retrying 503s).
    for i in 150..200u16 {
        let ip = format!("10.3.1.{}", i % 250);
        let start = Instant::now();
        loop {
            let (s, body) = register_http(&c, 0, "catalog", &ip, 9000 + i).await;
            if s == 200 {
                break;
            }
            assert_eq!(s, 503, "{body}");
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "owner never failed over: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.restart(1).await.expect("restart");
    let node1 = c.node(1).expect("runs");
    eventually(
        "node 1 loaded its snapshot",
        Duration::from_secs(10),
        || node1.is_loaded(),
    )
    .await;
    assert_eq!(node1.stats().snapshot_loads, 1);
    assert!(node1.stats().snapshot_clients >= 150);
    eventually("node 1 holds all 200", Duration::from_secs(10), || {
        node1.registry().stats().clients == 200
    })
    .await;
    eventually("every node agrees", Duration::from_secs(10), || {
        (0..3).all(|i| {
            c.node(i)
                .is_some_and(|n| n.registry().stats().clients == 200)
        })
    })
    .await;
    c.shutdown().await;
}

/// Nodes killed and restarted together: a node still loading refuses to serve its
/// (empty) registry, so both load from the node that kept the state; verify then drops
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_restarted_together_load_from_the_node_that_kept_the_state() {
    let c = cluster(3, no_beats_config()).await;
    for i in 0..90u16 {
        let ip = format!("10.5.0.{}", i % 250);
        let (s, body) = register_http(&c, (i % 3) as usize, "catalog", &ip, 9000 + i).await;
        assert_eq!(s, 200, "{body}");
    }
    let count = |i: usize| c.node(i).map_or(0, |n| n.registry().stats().clients);
    eventually("90 clients everywhere", Duration::from_secs(10), || {
        (0..3).all(|i| count(i) == 90)
    })
    .await;
    let keeper = c.node(2).expect("runs");
    c.kill(0);
    c.kill(1);
    let (a, b) = tokio::join!(c.restart(0), c.restart(1));
    a.expect("restart 0");
    b.expect("restart 1");
    let restarted: Vec<Arc<Node>> = [0, 1].iter().map(|&i| c.node(i).expect("runs")).collect();
    eventually(
        "both restarted nodes loaded",
        Duration::from_secs(10),
        || restarted.iter().all(|n| n.is_loaded()),
    )
    .await;
    for n in &restarted {
        assert!(!n.cold_started(), "a loaded peer was reachable");
        // From the keeper, or from the other restarted node once that one had loaded from
        // the keeper (a node serves its snapshot only once loaded): either way all 90.
        let from = n.loaded_from().expect("loaded from a peer");
        assert_ne!(from, n.me());
        assert!(
            n.stats().snapshot_clients >= 90,
            "loaded a full snapshot: {} clients from {from:?} (keeper {:?})",
            n.stats().snapshot_clients,
            keeper.me()
        );
    }
    // Three verify rounds later nothing was dropped anywhere.
    let rounds = keeper.stats().verify_rounds;
    eventually("three verify rounds", Duration::from_secs(10), || {
        keeper.stats().verify_rounds >= rounds + 6
    })
    .await;
    for i in 0..3 {
        assert_eq!(count(i), 90, "node {i}");
        assert_eq!(
            c.node(i).expect("runs").stats().verify_removed,
            0,
            "node {i}"
        );
    }
    c.shutdown().await;
}

/// The whole cluster killed and restarted together: every node refuses while loading,
/// and the cold-start rule lets each start empty instead of waiting for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restarted_together_cold_starts_and_serves() {
    let c = cluster(3, fast_config()).await;
    for i in 0..3 {
        c.kill(i);
    }
    let (a, b, d) = tokio::join!(c.restart(0), c.restart(1), c.restart(2));
    a.and(b).and(d).expect("restarts");
    let nodes: Vec<Arc<Node>> = (0..3).map(|i| c.node(i).expect("runs")).collect();
    eventually("every node started", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.is_loaded())
    })
    .await;
    assert!(nodes.iter().any(|n| n.cold_started()));
    let refused: u64 = (0..3)
        .map(|i| {
            c.metrics(i)
                .expect("runs")
                .snapshots_refused
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(refused > 0, "a loading node refused to serve");
    let (s, body) = register_http(&c, 0, "catalog", "10.5.1.1", 9000).await;
    assert_eq!(s, 200, "{body}");
    eventually(
        "replicated after the cold start",
        Duration::from_secs(5),
        || all_hold(&c, "10.5.1.1", 9000),
    )
    .await;
    c.shutdown().await;
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The replica's drop leaves a drop marker; the owner's verify list clears it and the
/// owner's repair comes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_clients_is_repaired_by_verify() {
    let c = cluster(3, fast_config()).await;
    let (ip, port) = address_owned_by(&c, 0);
    assert_eq!(register_http(&c, 0, "search", &ip, port).await.0, 200);
    eventually("replicated", Duration::from_secs(5), || {
        all_hold(&c, &ip, port)
    })
    .await;
    let replica = c.node(2).expect("runs");
    let id = ClientId::ip_port(&ip, port);
    let rev = replica
        .registry()
        .get(id.as_str())
        .expect("held")
        .revision();
    let repairs_before = c.node(0).expect("runs").stats().verify_repairs;
    assert!(
        replica.registry().drop_replica(&id, rev, wall_ms()),
        "dropped behind the protocol's back"
    );
    assert!(!holds(&replica, &ip, port));
    eventually(
        "verify restored the client",
        Duration::from_secs(10),
        || holds(&replica, &ip, port),
    )
    .await;
    assert!(c.node(0).expect("runs").stats().verify_repairs > repairs_before);
    assert!(
        replica.stats().verify_repairs == 0,
        "the owner repairs, not the replica"
    );
    let long = long_reports(&c, 0);
    assert_eq!(long, 0, "a one-client report stays on the runtime");
    c.shutdown().await;
}

/// Verify reports node `i` received and handled on the blocking pool (more than 64 entries).
fn long_reports(c: &LocalCluster, i: usize) -> u64 {
    c.metrics(i)
        .expect("runs")
        .verify_long_reports
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A replica that lost hundreds of an owner's clients at once: the verify report lists
/// more of them than the driver handles on the runtime's thread (it goes to the blocking
/// pool), and every one is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_hundreds_of_clients_is_repaired_by_one_long_report() {
    // The clients' health must not change while the test runs (a newer revision synced by
    // the owner would restore them before verify does).
    let c = cluster(3, no_beats_config()).await;
    let owner = c.node(0).expect("runs");
    let owned: Vec<String> = (0..20_000u32)
        .map(|i| format!("10.8.{}.{}", i / 250, i % 250))
        .filter(|ip| owner.route(&format!("{ip}:8080")) == Route::Local)
        .take(300)
        .collect();
    assert_eq!(owned.len(), 300);
    for ip in &owned {
        assert_eq!(register_http(&c, 0, "bulk", ip, 8080).await.0, 200);
    }
    eventually("replicated", Duration::from_secs(10), || {
        owned.iter().all(|ip| all_hold(&c, ip, 8080))
    })
    .await;
    let replica = c.node(2).expect("runs");
    let repairs_before = owner.stats().verify_repairs;
    for ip in &owned {
        let id = ClientId::ip_port(ip, 8080);
        let rev = replica
            .registry()
            .get(id.as_str())
            .expect("held")
            .revision();
        assert!(replica.registry().drop_replica(&id, rev, wall_ms()));
    }
    assert!(owned.iter().all(|ip| !holds(&replica, ip, 8080)));
    eventually(
        "verify restored every client",
        Duration::from_secs(15),
        || owned.iter().all(|ip| holds(&replica, ip, 8080)),
    )
    .await;
    assert!(owner.stats().verify_repairs >= repairs_before + 300);
    let long = long_reports(&c, 0);
    assert!(long >= 1, "a 300-client report goes to the blocking pool");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_heartbeat_removes_the_instance_everywhere() {
    let c = cluster(3, fast_config()).await;
    assert_eq!(
        register_http(&c, 1, "ephemeral", "10.4.0.1", 8080).await.0,
        200
    );
    eventually("replicated", Duration::from_secs(5), || {
        all_hold(&c, "10.4.0.1", 8080)
    })
    .await;
    let healthy_everywhere = |want: bool| {
        (0..3).all(|i| {
            c.node(i)
                .and_then(|n| {
                    n.registry()
                        .get(ClientId::ip_port("10.4.0.1", 8080).as_str())
                })
                .is_some_and(|cl| cl.publications()[0].instances[0].healthy == want)
        })
    };
    // No heartbeats: unhealthy after 2 s on every node, then gone after 4 s.
    eventually("unhealthy everywhere", Duration::from_secs(6), || {
        healthy_everywhere(false)
    })
    .await;
    eventually("deleted everywhere", Duration::from_secs(8), || {
        (0..3).all(|i| c.node(i).is_some_and(|n| !holds(&n, "10.4.0.1", 8080)))
    })
    .await;
    // A heartbeat now answers 20404: register again.
    let url = format!(
        "http://{}/nacos/v1/ns/instance/beat?serviceName=ephemeral&ip=10.4.0.1&port=8080",
        c.http_addr(2)
    );
    let (status, body) = send(http().put(url)).await;
    assert_eq!(status, 200);
    assert!(body.contains("20404"), "{body}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_misses_writes_then_converges_after_healing() {
    let c = cluster(3, fast_config()).await;
    c.partition(2);
    let (ip, port) = address_owned_by(&c, 0);
    assert_eq!(register_http(&c, 0, "partitioned", &ip, port).await.0, 200);
    let n1 = c.node(1).expect("runs");
    eventually("node 1 has it", Duration::from_secs(5), || {
        holds(&n1, &ip, port)
    })
    .await;
    // Node 2 would have had the write by now if the partition let it through: the owner
    // sends every change to every peer it does not hold DOWN, and a change leaves the
    // owner's queue for a peer only when that peer took it (a refused batch is queued
    // again). So wait until both other nodes hold node 2 DOWN (their probes were refused:
    // nothing more goes to it) with the write still queued for node 2; then it must be
    // missing there.
    let n2 = c.node(2).expect("runs").me();
    let others = [c.node(0).expect("runs"), n1.clone()];
    eventually(
        "node 2 down to both others, the write still queued for it",
        Duration::from_secs(10),
        || {
            others
                .iter()
                .all(|n| n.member_state(n2) == MemberState::Down)
                && others.iter().map(|n| n.pending_sync(n2)).sum::<usize>() >= 1
        },
    )
    .await;
    assert!(
        !holds(&c.node(2).expect("runs"), &ip, port),
        "the partition holds"
    );
    c.heal(2);
    eventually("node 2 caught up", Duration::from_secs(10), || {
        all_hold(&c, &ip, port)
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_hands_its_pending_syncs_to_its_peers() {
    // A sync delay far beyond the test: only the shutdown's drain can replicate.
    let mut config = fast_config();
    config.protocol.sync_delay = 120_000;
    config.protocol.verify_interval = 120_000;
    config.protocol.lease = 300_000;
    let c = cluster(2, config).await;
    let n0 = c.node(0).expect("node 0 runs");
    let n1 = c.node(1).expect("node 1 runs");
    let owned: Vec<(String, u16)> = (0..10_000u32)
        .map(|i| (format!("10.8.{}.{}", i / 250, i % 250), 8080))
        .filter(|(ip, port)| matches!(n0.route(&format!("{ip}:{port}")), Route::Local))
        .take(40)
        .collect();
    for (ip, port) in &owned {
        let (status, body) = register_http(&c, 0, "orders", ip, *port).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    let peer = n1.me();
    assert_eq!(
        n0.pending_sync(peer),
        owned.len(),
        "every write waits for the delay"
    );
    assert!(owned.iter().all(|(ip, port)| !holds(&n1, ip, *port)));
    c.stop(0).await;
    let missing: Vec<_> = owned
        .iter()
        .filter(|(ip, port)| !holds(&n1, ip, *port))
        .collect();
    assert!(
        missing.is_empty(),
        "not handed over at shutdown: {missing:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_shuts_down_gracefully_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_distro-server"))
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--sdk-port",
            "0",
            "--cluster-port",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn distro-server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Warnings (an open-file limit below what the connection caps need) may come first.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("a start line within 20 s");
        if line.contains("distro node started") {
            break;
        }
        assert!(!line.contains("ERROR"), "{line}");
    }
    let pid = child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM received")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("distro node stopped")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_is_never_forwarded_again() {
    let c = cluster(3, fast_config()).await;
    // Node 1 owns this address; a "forwarded" write sent to node 0 (as a peer whose view
    // diverged would send it) must not travel on: 421, counted, nothing applied.
    let (ip, port) = address_owned_by(&c, 1);
    let from = member_addr(&c, 2);
    let mut peer = peer_client(&c, 0).await;
    let req = pb::ForwardRequest {
        from,
        registrations: vec![pb::Registration {
            service: Some(pb::ServiceRef {
                name: "misdirected".into(),
                ..Default::default()
            }),
            instance: Some(pb::Instance {
                ip: ip.clone(),
                port: u32::from(port),
                weight: 1.0,
                healthy: true,
                enabled: true,
                ..Default::default()
            }),
        }],
        deregistrations: vec![],
        beats: vec![],
    };
    let r = peer.forward(req).await.expect("answered").into_inner();
    assert_eq!(r.registrations[0].code, 421, "{:?}", r.registrations[0]);
    assert!(
        r.registrations[0]
            .message
            .contains("divergent member views"),
        "{:?}",
        r.registrations[0]
    );
    let m = c.metrics(0).expect("runs");
    assert_eq!(
        m.forwarded_count(distro_server::metrics::Outcome::Misdirected),
        1
    );
    assert!(!holds(&c.node(0).expect("runs"), &ip, port));
    c.shutdown().await;
}
