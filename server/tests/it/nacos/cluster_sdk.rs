//! The real `nacos-sdk` crate (0.8) against a 3-node `LocalCluster`: what an application
//! sees when its SDK talks to one node and the others replicate.
//!
//! Each SDK is given the server list an application would configure (main ports; the SDK
//! adds 1000 for gRPC): a single node where the scenario must go through that node, all
//! three where it needs failover. App A, whose shutdown or failover a test observes, runs
//! in a child process (this test binary re-executed on the ignored `helper_app` test),
//! because the SDK has no shutdown: killing the process is how its connection ends.
//!
//! Timings are shortened (sync delay 200 ms, verify 1 s, push delay 100 ms, probes 300 ms)
//! so every scenario takes seconds; every wait is a condition polled against a deadline.

use crate::cluster::{cluster, fast_config};
use crate::nacos::harness::{DEADLINE, sdk_servers, wait_until};
use crate::nacos::sdk::{KillOnDrop, addrs, events, instance, pushed};
use distro_core::model::ClientKind;
use distro_core::{ClientId, MemberId, Node};
use distro_server::LocalCluster;
use nacos_sdk::api::naming::{NamingService, ServiceInstance};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The server list of node `i` alone.
fn only(c: &LocalCluster, i: usize) -> Vec<String> {
    vec![c.http_addr(i).to_string()]
}

fn node(c: &LocalCluster, i: usize) -> Arc<Node> {
    c.node(i).expect("the node runs")
}

/// `(client id, owner)` of every connection client that publishes to `service` (namespace
/// public, group DEFAULT_GROUP) in `node`'s registry.
pub(crate) fn publishers(node: &Node, service: &str) -> Vec<(ClientId, MemberId)> {
    let mut v = Vec::new();
    node.registry().for_each(|c| {
        if c.id().kind() == ClientKind::Connection
            && c.publications()
                .iter()
                .any(|p| p.service.name().as_str() == service)
        {
            v.push((c.id(), c.owner()));
        }
    });
    v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    v
}

/// `ip:port` of every instance of `service` held by node `i`, sorted.
pub(crate) fn held(c: &LocalCluster, i: usize, service: &str) -> Vec<String> {
    let mut v: Vec<String> = node(c, i)
        .query(&distro_core::ServiceSpec::new("", "", service))
        .expect("valid service")
        .map(|view| {
            view.publications
                .iter()
                .flat_map(|p| p.instances.iter())
                .map(|i| i.address())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether every running node holds exactly `want` for `service`.
fn all_hold(c: &LocalCluster, service: &str, want: &[&str]) -> bool {
    (0..c.len())
        .filter(|i| c.is_running(*i))
        .all(|i| held(c, i, service) == want)
}

/// Polls the async `f` until it returns `Some`, failing after `deadline`.
async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `C` reads through its node with a one-off query (`ServiceQueryRequest`).
async fn query(c: &NamingService, service: &str) -> Vec<ServiceInstance> {
    c.get_all_instances(service.into(), None, vec![], false)
        .await
        .expect("query")
}

fn assert_orders_a(i: &ServiceInstance) {
    assert_eq!(
        i.instance_id.as_deref(),
        Some("10.0.0.7#8080#c1#DEFAULT_GROUP@@orders"),
        "{i:?}"
    );
    assert_eq!((i.ip.as_str(), i.port), ("10.0.0.7", 8080));
    assert_eq!(i.weight, 2.5);
    assert!(i.healthy && i.enabled && i.ephemeral, "{i:?}");
    assert_eq!(i.cluster_name.as_deref(), Some("c1"));
    assert_eq!(i.service_name.as_deref(), Some("DEFAULT_GROUP@@orders"));
    assert_eq!(
        i.metadata,
        HashMap::from([
            ("zone".to_string(), "a".to_string()),
            ("version".to_string(), "1.2.0".to_string()),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registers_via_node_1_b_is_pushed_via_node_3_c_queries_via_node_2() {
    let c = cluster(3, fast_config()).await;
    let b = sdk_servers(&only(&c, 2), false).await;
    let (listener, mut rx) = events();
    b.subscribe("orders".into(), None, vec![], listener)
        .await
        .expect("subscribe through node 3");

    let a = sdk_servers(&only(&c, 0), true).await;
    let mut inst = instance("10.0.0.7", 8080);
    inst.weight = 2.5;
    inst.cluster_name = Some("c1".into());
    inst.metadata = HashMap::from([
        ("zone".to_string(), "a".to_string()),
        ("version".to_string(), "1.2.0".to_string()),
    ]);
    a.register_instance("orders".into(), None, inst)
        .await
        .expect("register through node 1");

    // A's connection is a connection client owned by node 1 and replicated to the others.
    let owner = node(&c, 0).me();
    wait_until(
        "A's connection client, owned by node 1, on every node",
        || {
            (0..3).all(|i| {
                let p = publishers(&node(&c, i), "orders");
                p.len() == 1 && p[0].1 == owner
            })
        },
    )
    .await;

    let got = pushed(&mut rx, &["10.0.0.7:8080"]).await;
    assert_orders_a(&got[0]);

    // D registers through node 2 an unhealthy instance in another cluster, E a disabled one.
    let d = sdk_servers(&only(&c, 1), true).await;
    let mut sick = instance("10.0.0.8", 9090);
    sick.healthy = false;
    sick.weight = 0.5;
    sick.cluster_name = Some("c2".into());
    d.register_instance("orders".into(), None, sick)
        .await
        .expect("register an unhealthy instance");
    let e = sdk_servers(&only(&c, 1), true).await;
    let mut off = instance("10.0.0.9", 7070);
    off.enabled = false;
    e.register_instance("orders".into(), None, off)
        .await
        .expect("register a disabled instance");
    pushed(&mut rx, &["10.0.0.7:8080", "10.0.0.8:9090"]).await;

    // C queries through node 2 and gets every field as Nacos gives it.
    let cc = sdk_servers(&only(&c, 1), true).await;
    let got = poll("C reads both enabled instances", DEADLINE, || async {
        let v = query(&cc, "orders").await;
        (v.len() == 2).then_some(v)
    })
    .await;
    let mut got = got;
    got.sort_by_key(|i| i.ip.clone());
    assert_orders_a(&got[0]);
    let s = &got[1];
    assert_eq!(
        s.instance_id.as_deref(),
        Some("10.0.0.8#9090#c2#DEFAULT_GROUP@@orders")
    );
    assert_eq!((s.weight, s.healthy, s.enabled), (0.5, false, true));
    assert_eq!(s.cluster_name.as_deref(), Some("c2"));
    assert!(s.metadata.is_empty());
    // The server filters clusters; the SDK filters health.
    let c2 = cc
        .get_all_instances("orders".into(), None, vec!["c2".into()], false)
        .await
        .expect("query c2");
    assert_eq!(addrs(&c2), ["10.0.0.8:9090"]);
    let healthy = cc
        .select_instances("orders".into(), None, vec![], false, true)
        .await
        .expect("select healthy");
    assert_eq!(addrs(&healthy), ["10.0.0.7:8080"]);
    assert!(all_hold(
        &c,
        "orders",
        &["10.0.0.7:8080", "10.0.0.8:9090", "10.0.0.9:7070"]
    ));

    // A deregisters through node 1: gone everywhere, and B is told.
    a.deregister_instance("orders".into(), None, instance("10.0.0.7", 8080))
        .await
        .expect("deregister");
    pushed(&mut rx, &["10.0.0.8:9090"]).await;
    wait_until("A's instance is gone from every node", || {
        all_hold(&c, "orders", &["10.0.0.8:9090", "10.0.0.9:7070"])
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_registration_replicates_and_replaces_the_batch_on_every_node() {
    let c = cluster(3, fast_config()).await;
    let b = sdk_servers(&only(&c, 2), false).await;
    let (listener, mut rx) = events();
    b.subscribe("inventory".into(), None, vec![], listener)
        .await
        .expect("subscribe");
    let a = sdk_servers(&only(&c, 0), true).await;
    let batch: Vec<ServiceInstance> = (0..3).map(|p| instance("10.0.1.1", 7000 + p)).collect();
    a.batch_register_instance("inventory".into(), None, batch)
        .await
        .expect("batch");
    let want = ["10.0.1.1:7000", "10.0.1.1:7001", "10.0.1.1:7002"];
    pushed(&mut rx, &want).await;
    let cc = sdk_servers(&only(&c, 1), true).await;
    let got = poll("C reads the batch", DEADLINE, || async {
        let v = query(&cc, "inventory").await;
        (v.len() == 3).then_some(v)
    })
    .await;
    assert_eq!(addrs(&got), want);
    assert!(
        got.iter().all(|i| i.instance_id.as_deref()
            == Some(&*format!(
                "{}#{}#DEFAULT#DEFAULT_GROUP@@inventory",
                i.ip, i.port
            ))),
        "{got:?}"
    );
    assert_eq!(
        publishers(&node(&c, 1), "inventory").len(),
        1,
        "one connection client publishes the whole batch"
    );

    // A smaller batch replaces the batch (the SDK's way to deregister one of them).
    a.batch_register_instance(
        "inventory".into(),
        None,
        vec![instance("10.0.1.1", 7001), instance("10.0.1.1", 7002)],
    )
    .await
    .expect("smaller batch");
    pushed(&mut rx, &["10.0.1.1:7001", "10.0.1.1:7002"]).await;
    wait_until("every node holds the smaller batch", || {
        all_hold(&c, "inventory", &["10.0.1.1:7001", "10.0.1.1:7002"])
    })
    .await;
    a.batch_register_instance("inventory".into(), None, vec![])
        .await
        .expect("empty batch");
    pushed(&mut rx, &[]).await;
    wait_until("every node holds nothing", || {
        all_hold(&c, "inventory", &[])
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_list_pages_the_replicated_names_on_another_node() {
    let c = cluster(3, fast_config()).await;
    let a = sdk_servers(&only(&c, 0), true).await;
    for (i, name) in ["s-c", "s-a", "s-e", "s-b", "s-d"].iter().enumerate() {
        a.register_instance((*name).into(), None, instance("10.0.2.1", 100 + i as i32))
            .await
            .expect("register");
    }
    a.register_instance("s-x".into(), Some("OTHER".into()), instance("10.0.2.1", 99))
        .await
        .expect("register in OTHER");

    let cc = sdk_servers(&only(&c, 2), true).await;
    let (names, count) = poll("five names on node 3", DEADLINE, || async {
        let page = cc.get_service_list(1, 2, None).await.expect("page 1");
        (page.1 == 5).then_some(page)
    })
    .await;
    assert_eq!(
        (names, count),
        (vec!["s-a".to_string(), "s-b".to_string()], 5)
    );
    let page2 = cc.get_service_list(2, 2, None).await.expect("page 2");
    assert_eq!(page2, (vec!["s-c".to_string(), "s-d".to_string()], 5));
    let page3 = cc.get_service_list(3, 2, None).await.expect("page 3");
    assert_eq!(page3, (vec!["s-e".to_string()], 5));
    let page4 = cc.get_service_list(4, 2, None).await.expect("page 4");
    assert_eq!(page4, (Vec::<String>::new(), 5));
    let other = poll("OTHER on node 3", DEADLINE, || async {
        let page = cc
            .get_service_list(1, 10, Some("OTHER".into()))
            .await
            .expect("OTHER");
        (page.1 == 1).then_some(page)
    })
    .await;
    assert_eq!(other, (vec!["s-x".to_string()], 1));
    c.shutdown().await;
}

// ----- app A in a child process ------------------------------------------------------------

/// Environment of the helper process: the server list (main addresses, comma-separated).
const HELPER_SERVERS: &str = "DISTRO_NACOS_TEST_HELPER_SERVERS";
/// The service the helper registers in.
const HELPER_SERVICE: &str = "DISTRO_NACOS_TEST_HELPER_SERVICE";
/// The instance it registers, `ip:port`.
const HELPER_INSTANCE: &str = "DISTRO_NACOS_TEST_HELPER_INSTANCE";

/// Not a test by itself: app A of the tests below, run in a child process. It registers
/// one instance through the SDK given the server list, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process, started by other tests"]
async fn helper_app() {
    let (Ok(servers), Ok(service), Ok(inst)) = (
        std::env::var(HELPER_SERVERS),
        std::env::var(HELPER_SERVICE),
        std::env::var(HELPER_INSTANCE),
    ) else {
        return;
    };
    let servers: Vec<String> = servers.split(',').map(str::to_string).collect();
    let (ip, port) = inst.rsplit_once(':').expect("ip:port");
    let a = sdk_servers(&servers, true).await;
    a.register_instance(service, None, instance(ip, port.parse().expect("a port")))
        .await
        .expect("register from the helper process");
    // Killed by the parent long before this.
    tokio::time::sleep(DEADLINE * 6).await;
}

/// Starts app A: registers `inst` in `service` through `servers`.
fn start_app(servers: &[String], service: &str, inst: &str) -> KillOnDrop {
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "nacos::cluster_sdk::helper_app",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_SERVERS, servers.join(","))
        .env(HELPER_SERVICE, service)
        .env(HELPER_INSTANCE, inst)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the helper process");
    KillOnDrop(child)
}

fn stop_app(mut app: KillOnDrop) {
    app.0.kill().expect("kill the helper");
    app.0.wait().expect("reap the helper");
}

/// The node that holds the connection owning `service`'s publication, per node 0..n.
fn holder(c: &LocalCluster, service: &str) -> Option<usize> {
    (0..c.len()).filter(|i| c.is_running(*i)).find(|i| {
        let n = node(c, *i);
        publishers(&n, service).iter().any(|(_, o)| *o == n.me())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_removes_its_instance_from_every_node_and_b_is_told() {
    let c = cluster(3, fast_config()).await;
    let b = sdk_servers(&only(&c, 2), false).await;
    let (listener, mut rx) = events();
    b.subscribe("shipping".into(), None, vec![], listener)
        .await
        .expect("subscribe");
    let app = start_app(&only(&c, 0), "shipping", "10.0.3.1:3000");
    pushed(&mut rx, &["10.0.3.1:3000"]).await;
    wait_until("every node holds A's instance", || {
        all_hold(&c, "shipping", &["10.0.3.1:3000"])
    })
    .await;
    assert_eq!(holder(&c, "shipping"), Some(0));

    stop_app(app);
    pushed(&mut rx, &[]).await;
    wait_until("A's instance is gone from every node", || {
        all_hold(&c, "shipping", &[])
            && (0..3).all(|i| publishers(&node(&c, i), "shipping").is_empty())
    })
    .await;
    c.shutdown().await;
}

/// A cluster whose replicas drop an unrenewed connection client after 4 s.
fn short_lease() -> distro_server::ServerConfig {
    let mut config = fast_config();
    config.protocol.lease = 4_000;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_node_dies_its_sdk_fails_over_re_registers_and_b_sees_it_again() {
    let c = cluster(3, short_lease()).await;
    let app = start_app(&c.server_list(), "billing", "10.0.4.1:4000");
    let k = crate::nacos::harness::wait_for("A's node", || holder(&c, "billing")).await;
    // B subscribes through a node that stays up.
    let j = (k + 2) % 3;
    let b = sdk_servers(&only(&c, j), false).await;
    let (listener, mut rx) = events();
    b.subscribe("billing".into(), None, vec![], listener)
        .await
        .expect("subscribe");
    pushed(&mut rx, &["10.0.4.1:4000"]).await;
    let dead = node(&c, k).me();

    c.kill(k);
    // A's SDK notices, moves to the next server and redoes its registration there.
    let redone = wait_for_long(
        "A's redo on a live node, replicated to both survivors",
        || {
            (0..3).filter(|i| *i != k).all(|i| {
                publishers(&node(&c, i), "billing")
                    .iter()
                    .any(|(_, o)| *o != dead)
            })
        },
    )
    .await;
    println!("A re-registered through a survivor {redone:?} after its node died");
    // Until the dead node's connection client expires, node j holds A's instance twice
    // (the dead connection's and the redo's); B's view lists it once.
    let copies = publishers(&node(&c, j), "billing").len();
    let direct = query(&b, "billing").await;
    assert_eq!(
        addrs(&direct),
        ["10.0.4.1:4000"],
        "one instance, not one per connection client ({copies} publish it)"
    );
    // The dead node's connection client expires with its lease on the survivors.
    let expired = wait_for_long(
        "the dead node's connection client expires on the survivors",
        || {
            (0..3).filter(|i| *i != k).all(|i| {
                let p = publishers(&node(&c, i), "billing");
                p.len() == 1 && p[0].1 != dead
            })
        },
    )
    .await;
    println!("the dead node's connection client expired {expired:?} after the redo");
    // B sees A's instance (again, if the expiry came before the redo).
    let view = poll("B's view holds A's instance", DEADLINE, || async {
        let v = b
            .get_all_instances("billing".into(), None, vec![], true)
            .await
            .expect("B's view");
        (addrs(&v) == ["10.0.4.1:4000"]).then_some(v)
    })
    .await;
    assert_eq!(view.len(), 1);
    let direct = query(&b, "billing").await;
    assert_eq!(addrs(&direct), ["10.0.4.1:4000"]);

    // A's shutdown now removes it from both survivors and B is told.
    stop_app(app);
    pushed(&mut rx, &[]).await;
    wait_until("A's instance is gone from the survivors", || {
        all_hold(&c, "billing", &[])
    })
    .await;
    c.shutdown().await;
}

/// [`wait_until`] with room for the SDK's reconnect (health check every 5 s, then a
/// back-off of 2 s before the next server), returning how long it took.
async fn wait_for_long(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    let deadline = DEADLINE * 2;
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node dies with one of its apps (the same machine): nobody will ever close that app's
/// connection. Another app of the node fails over and registers again elsewhere, which
/// proves the node gone rather than cut off by a partition; the dead app's instance then
/// expires with the lease on the survivors, self-preservation notwithstanding, and B is
/// told. (Without such evidence the survivors keep it: see the core's partition tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_node_and_its_app_die_the_instance_expires_on_the_survivors() {
    let c = cluster(3, short_lease()).await;
    let survivor = start_app(&c.server_list(), "billing", "10.0.4.1:4000");
    let k =
        crate::nacos::harness::wait_for("the surviving app's node", || holder(&c, "billing")).await;
    let j = (k + 2) % 3;
    let b = sdk_servers(&only(&c, j), false).await;
    let (listener, mut rx) = events();
    b.subscribe("audit".into(), None, vec![], listener)
        .await
        .expect("subscribe");
    let doomed = start_app(&only(&c, k), "audit", "10.0.5.1:5000");
    pushed(&mut rx, &["10.0.5.1:5000"]).await;
    wait_until("every node holds the doomed app's instance", || {
        all_hold(&c, "audit", &["10.0.5.1:5000"])
    })
    .await;

    stop_app(doomed);
    c.kill(k);
    let took = wait_for_long(
        "the survivors drop the dead app's connection client",
        || all_hold(&c, "audit", &[]),
    )
    .await;
    println!("the survivors dropped the dead node's connection client after {took:?}");
    pushed(&mut rx, &[]).await;
    // The app that failed over is still listed, once.
    assert!(all_hold(&c, "billing", &["10.0.4.1:4000"]));
    let superseded: u64 = (0..3)
        .filter(|i| *i != k)
        .map(|i| node(&c, i).stats().lease_superseded)
        .sum();
    assert_eq!(
        superseded, 2,
        "each survivor dropped the failed-over copy once"
    );
    stop_app(survivor);
    c.shutdown().await;
}

/// Auth is not supported, and says so: an SDK configured with credentials logs in over HTTP
/// first; the login answers 501 with the reason and issues no token, and the SDK (which
/// logs the failed login) registers and reads without one, as every client can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_with_credentials_gets_no_token_and_works_without_one() {
    let c = cluster(1, fast_config()).await;
    for path in ["/nacos/v1/auth/login", "/nacos/v1/auth/users/login"] {
        let url = format!(
            "http://{}{path}?username=nacos&password=nacos",
            c.http_addr(0)
        );
        let r = reqwest::Client::new()
            .post(url)
            .send()
            .await
            .expect("login request");
        assert_eq!(r.status().as_u16(), 501, "{path}");
        assert_eq!(
            r.text().await.expect("body"),
            distro_server::api::http::AUTH_UNSUPPORTED
        );
    }
    let props = crate::nacos::harness::client_props(&c.http_addr(0).to_string(), true)
        .auth_username("nacos")
        .auth_password("nacos");
    let a = nacos_sdk::api::naming::NamingServiceBuilder::new(props)
        .enable_auth_plugin_http()
        .build()
        .await
        .expect("the SDK connects without a token");
    a.register_instance("secured".into(), None, instance("10.0.6.1", 6000))
        .await
        .expect("register without a token");
    assert_eq!(addrs(&query(&a, "secured").await), ["10.0.6.1:6000"]);
    c.shutdown().await;
}

/// B's own node dies: B's SDK reconnects to another node and subscribes again (its redo),
/// gets the current view there, and is pushed the changes made afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_node_dies_subscribes_again_elsewhere_and_is_pushed() {
    let c = cluster(3, fast_config()).await;
    let b = sdk_servers(&c.server_list(), false).await;
    // B registers too, so that its connection (and node) can be found.
    b.register_instance("watchers".into(), None, instance("10.0.7.1", 1))
        .await
        .expect("B registers");
    let k = crate::nacos::harness::wait_for("B's node", || holder(&c, "watchers")).await;
    let (listener, mut rx) = events();
    b.subscribe("stock".into(), None, vec![], listener)
        .await
        .expect("subscribe");
    let a = sdk_servers(&only(&c, (k + 1) % 3), true).await;
    a.register_instance("stock".into(), None, instance("10.0.7.2", 2))
        .await
        .expect("A registers");
    pushed(&mut rx, &["10.0.7.2:2"]).await;

    c.kill(k);
    let dead = wait_for_long("B's redo on a live node", || {
        holder(&c, "watchers").is_some_and(|h| h != k)
    })
    .await;
    println!("B registered and subscribed again {dead:?} after its node died");
    // A change after B's failover reaches B from its new node.
    a.register_instance("stock".into(), None, instance("10.0.7.2", 3))
        .await
        .expect("A re-registers on another port");
    pushed(&mut rx, &["10.0.7.2:3"]).await;
    c.shutdown().await;
}
