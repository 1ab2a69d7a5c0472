//! The real `nacos-sdk` connected to a node that leaves the cluster: its members file is
//! rewritten without the node, the node hands over and is stopped, and the SDK (given
//! every node, as an application is) reconnects to another node and redoes its
//! registration and subscription there. Its instance is on every remaining node
//! throughout or again within the deadline, and it is pushed the changes made after.

use crate::cluster::fast_config;
use crate::nacos::cluster_sdk::{held, publishers};
use crate::nacos::harness::{DEADLINE, sdk_servers};
use crate::nacos::sdk::{events, instance, pushed};
use distro_server::LocalCluster;
use nacos_sdk::api::naming::NamingService;
use std::time::{Duration, Instant};

/// Polls `f` every 50 ms until it holds, failing after `deadline`; returns how long it took.
async fn until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// The running node whose own connection client publishes to `service`.
fn holder(c: &LocalCluster, service: &str) -> Option<usize> {
    (0..c.len()).filter(|i| c.is_running(*i)).find(|&i| {
        let n = c.node(i).expect("runs");
        publishers(&n, service).iter().any(|(_, o)| *o == n.me())
    })
}

async fn register(sdk: &NamingService, service: &str, ip: &str, port: i32) {
    sdk.register_instance(service.into(), None, instance(ip, port))
        .await
        .unwrap_or_else(|e| panic!("register {ip}:{port} in {service}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_whose_node_leaves_fails_over_and_keeps_its_instance_and_pushes() {
    let dir = std::env::temp_dir().join(format!("distro-leave-sdk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut config = fast_config();
    config.members_file = Some(dir.join("cluster.conf"));
    config.members_file_interval = Duration::from_millis(200);
    config.protocol.member_change_settle = 1_000;
    config.protocol.probe_down_after = 10;
    let c = LocalCluster::start_some(3, config, 1, 0)
        .await
        .expect("ports reserved");
    c.write_members(&[0, 1, 2]).expect("members file");
    for i in 0..3 {
        c.restart(i).await.expect("start");
    }
    until("3 nodes loaded", DEADLINE, || {
        (0..3).all(|i| c.node(i).is_some_and(|n| n.is_loaded()))
    })
    .await;

    // B registers (so that its node can be found) and subscribes; A, on another node,
    // registers what B watches.
    let b = sdk_servers(&c.server_list(), false).await;
    register(&b, "watchers", "10.0.9.1", 1).await;
    until("B's node", DEADLINE, || holder(&c, "watchers").is_some()).await;
    let k = holder(&c, "watchers").expect("B's node");
    let (listener, mut rx) = events();
    b.subscribe("stock".into(), None, vec![], listener)
        .await
        .expect("subscribe");
    let j = (k + 1) % 3;
    let a = sdk_servers(&[c.http_addr(j).to_string()], true).await;
    register(&a, "stock", "10.0.9.2", 2).await;
    pushed(&mut rx, &["10.0.9.2:2"]).await;
    let stay: Vec<usize> = (0..3).filter(|&i| i != k).collect();
    until("B's instance on every node", DEADLINE, || {
        (0..3).all(|i| held(&c, i, "watchers") == ["10.0.9.1:1"])
    })
    .await;

    // B's node leaves: the file no longer names it; it sees it is leaving, then stops.
    let t = Instant::now();
    c.write_members(&stay).expect("members file");
    until("the node leaving, the others listing 2", DEADLINE, || {
        c.node(k).is_some_and(|n| n.members().is_leaving())
            && stay
                .iter()
                .all(|&i| c.node(i).is_some_and(|n| n.members().len() == 2))
    })
    .await;
    // Meanwhile B's instance stays on the remaining nodes.
    assert!(
        stay.iter()
            .all(|&i| held(&c, i, "watchers") == ["10.0.9.1:1"]),
        "B's instance left the remaining nodes with its node's leave"
    );
    c.stop(k).await;
    let left_in = t.elapsed();

    // B's SDK reconnects to a remaining node and redoes: its own connection client there
    // publishes B's instance, on every remaining node.
    let redone = until("B's redo on a remaining node", DEADLINE * 2, || {
        holder(&c, "watchers").is_some_and(|h| h != k)
    })
    .await;
    let everywhere = until("B's instance on both remaining nodes", DEADLINE, || {
        stay.iter()
            .all(|&i| held(&c, i, "watchers") == ["10.0.9.1:1"])
    })
    .await;
    // A change made after the failover reaches B from its new node.
    register(&a, "stock", "10.0.9.2", 3).await;
    pushed(&mut rx, &["10.0.9.2:3"]).await;
    println!(
        "B's node left and stopped {left_in:?} after the file changed; B redid its \
         registration {redone:?} later, on node {}; its instance on both remaining nodes \
         {everywhere:?} after that; pushed after",
        holder(&c, "watchers").map_or(0, |h| h + 1)
    );
    std::fs::remove_dir_all(&dir).ok();
    c.shutdown().await;
}
