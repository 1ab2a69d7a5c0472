//! The real `nacos-sdk` crate (0.8) against the front end.
//!
//! The SDK has no shutdown, and dropping a `NamingService` does not close its connection
//! (its tasks live on a process-wide runtime and keep the bi-stream open). What ends an SDK
//! client is its process exiting, so the shutdown test runs the client in a child process
//! (this test binary, re-executed on the ignored `helper_process` test) and kills it.

use crate::nacos::harness::*;
use distro_core::{ClientId, InstanceSpec, ServiceSpec};
use nacos_sdk::api::naming::{NamingChangeEvent, NamingEventListener, ServiceInstance};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(crate) fn instance(ip: &str, port: i32) -> ServiceInstance {
    ServiceInstance {
        ip: ip.into(),
        port,
        ..Default::default()
    }
}

/// A listener that forwards every pushed instance list.
pub(crate) struct Events(mpsc::UnboundedSender<Vec<ServiceInstance>>);

impl NamingEventListener for Events {
    fn event(&self, e: Arc<NamingChangeEvent>) {
        let _ = self.0.send(e.instances.clone().unwrap_or_default());
    }
}

pub(crate) fn events() -> (Arc<Events>, mpsc::UnboundedReceiver<Vec<ServiceInstance>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Events(tx)), rx)
}

pub(crate) fn addrs(v: &[ServiceInstance]) -> Vec<String> {
    let mut a: Vec<String> = v.iter().map(|i| i.ip_and_port()).collect();
    a.sort();
    a
}

/// Waits for a pushed list whose addresses are exactly `want`.
pub(crate) async fn pushed(
    rx: &mut mpsc::UnboundedReceiver<Vec<ServiceInstance>>,
    want: &[&str],
) -> Vec<ServiceInstance> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no push of {want:?} within {DEADLINE:?}"))
            .expect("listener alive");
        if addrs(&got) == want {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_query_returns_every_field_as_nacos() {
    let server = TestServer::start(fast_config()).await;
    let a = sdk(&server, true).await;
    let mut inst = instance("10.0.0.7", 8080);
    inst.weight = 2.5;
    inst.cluster_name = Some("c1".into());
    inst.metadata = HashMap::from([("zone".to_string(), "a".to_string())]);
    a.register_instance("orders".into(), None, inst)
        .await
        .expect("register");
    let mut disabled = instance("10.0.0.8", 8080);
    disabled.enabled = false;
    a.register_instance("orders".into(), Some("OTHER".into()), disabled)
        .await
        .expect("register in another group");

    let got = a
        .get_all_instances("orders".into(), None, vec![], false)
        .await
        .expect("query");
    assert_eq!(got.len(), 1, "{got:?}");
    let i = &got[0];
    assert_eq!(
        i.instance_id.as_deref(),
        Some("10.0.0.7#8080#c1#DEFAULT_GROUP@@orders")
    );
    assert_eq!((i.ip.as_str(), i.port), ("10.0.0.7", 8080));
    assert_eq!(i.weight, 2.5);
    assert!(i.healthy && i.enabled && i.ephemeral);
    assert_eq!(i.cluster_name.as_deref(), Some("c1"));
    assert_eq!(i.service_name.as_deref(), Some("DEFAULT_GROUP@@orders"));
    assert_eq!(i.metadata.get("zone").map(String::as_str), Some("a"));

    // The cluster filter is applied by the server.
    let other = a
        .get_all_instances("orders".into(), None, vec!["c2".into()], false)
        .await
        .expect("query c2");
    assert!(other.is_empty(), "{other:?}");
    // A disabled instance is hidden.
    let hidden = a
        .get_all_instances("orders".into(), Some("OTHER".into()), vec![], false)
        .await
        .expect("query OTHER");
    assert!(hidden.is_empty(), "{hidden:?}");
    assert_eq!(server.instances("orders"), ["10.0.0.7:8080"]);

    a.deregister_instance("orders".into(), None, instance("10.0.0.7", 8080))
        .await
        .expect("deregister");
    assert!(server.instances("orders").is_empty());
    let after = a
        .get_all_instances("orders".into(), None, vec![], false)
        .await
        .expect("query after deregister");
    assert!(after.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_instances_by_push_and_their_removal() {
    let server = TestServer::start(fast_config()).await;
    let publisher = sdk(&server, true).await;
    let subscriber = sdk(&server, false).await;
    let (listener, mut rx) = events();
    subscriber
        .subscribe("payments".into(), None, vec![], listener)
        .await
        .expect("subscribe");

    publisher
        .register_instance("payments".into(), None, instance("10.0.0.1", 80))
        .await
        .expect("register");
    pushed(&mut rx, &["10.0.0.1:80"]).await;
    publisher
        .register_instance("payments".into(), None, instance("10.0.0.1", 81))
        .await
        .expect("re-register replaces the connection's instance");
    pushed(&mut rx, &["10.0.0.1:81"]).await;

    // A change that does not come through this front end (here an ip:port client written
    // straight into the node, as the HTTP API or a replica sync would) is pushed too.
    let other = ClientId::ip_port("10.0.0.2", 90);
    server
        .node
        .register(
            &other,
            &ServiceSpec::new("", "", "payments"),
            &InstanceSpec::new("10.0.0.2", 90),
            wall_ms(),
        )
        .expect("direct register");
    pushed(&mut rx, &["10.0.0.1:81", "10.0.0.2:90"]).await;
    server.node.remove_client(&other, wall_ms());
    pushed(&mut rx, &["10.0.0.1:81"]).await;

    publisher
        .deregister_instance("payments".into(), None, instance("10.0.0.1", 81))
        .await
        .expect("deregister");
    pushed(&mut rx, &[]).await;

    // Five distinct views were pushed ([80], [81], [81, 90], [81], []) and acked.
    wait_until("the SDK acked every push", || {
        server.nacos.stats().pushes_acked >= 5
    })
    .await;
    assert_eq!(server.nacos.stats().subscribed_services, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_registration_replaces_the_batch_and_an_empty_batch_deregisters() {
    let server = TestServer::start(fast_config()).await;
    let a = sdk(&server, true).await;
    let batch: Vec<ServiceInstance> = (0..3).map(|p| instance("10.0.1.1", 7000 + p)).collect();
    a.batch_register_instance("inventory".into(), None, batch)
        .await
        .expect("batch");
    let got = a
        .get_all_instances("inventory".into(), None, vec![], false)
        .await
        .expect("query");
    assert_eq!(
        addrs(&got),
        ["10.0.1.1:7000", "10.0.1.1:7001", "10.0.1.1:7002"]
    );
    a.batch_register_instance(
        "inventory".into(),
        None,
        vec![instance("10.0.1.1", 7001), instance("10.0.1.1", 7002)],
    )
    .await
    .expect("smaller batch");
    assert_eq!(
        server.instances("inventory"),
        ["10.0.1.1:7001", "10.0.1.1:7002"]
    );
    a.batch_register_instance("inventory".into(), None, vec![])
        .await
        .expect("empty batch");
    assert!(server.instances("inventory").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_list_pages_names_of_one_group() {
    let server = TestServer::start(fast_config()).await;
    let a = sdk(&server, true).await;
    for (i, name) in ["s-c", "s-a", "s-e", "s-b", "s-d"].iter().enumerate() {
        a.register_instance((*name).into(), None, instance("10.0.2.1", 100 + i as i32))
            .await
            .expect("register");
    }
    a.register_instance("s-x".into(), Some("OTHER".into()), instance("10.0.2.1", 99))
        .await
        .expect("register in OTHER");

    let (names, count) = a.get_service_list(1, 2, None).await.expect("page 1");
    assert_eq!((names, count), (vec!["s-a".into(), "s-b".into()], 5));
    let (names, count) = a.get_service_list(3, 2, None).await.expect("page 3");
    assert_eq!((names, count), (vec!["s-e".to_string()], 5));
    let (names, count) = a.get_service_list(4, 2, None).await.expect("page 4");
    assert_eq!((names, count), (Vec::<String>::new(), 5));
    let (names, count) = a
        .get_service_list(1, 10, Some("OTHER".into()))
        .await
        .expect("OTHER");
    assert_eq!((names, count), (vec!["s-x".to_string()], 1));
    server.stop().await;
}

/// Environment variable giving the helper process the server's port.
const HELPER_PORT: &str = "DISTRO_NACOS_TEST_HELPER_PORT";

/// Not a test by itself: the child process of
/// `an_sdk_process_exit_removes_its_instance_and_tells_subscribers`. It registers one
/// instance and then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process, started by another test"]
async fn helper_process() {
    let Some(port) = std::env::var(HELPER_PORT)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        return;
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let client = sdk_at(addr, true).await;
    client
        .register_instance("shipping".into(), None, instance("10.0.3.1", 3000))
        .await
        .expect("register from the helper process");
    // Killed by the parent long before this.
    tokio::time::sleep(DEADLINE * 3).await;
}

pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_process_exit_removes_its_instance_and_tells_subscribers() {
    let server = TestServer::start(fast_config()).await;
    let subscriber = sdk(&server, false).await;
    let (listener, mut rx) = events();
    subscriber
        .subscribe("shipping".into(), None, vec![], listener)
        .await
        .expect("subscribe");

    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "nacos::sdk::helper_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_PORT, server.addr.port().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the helper process");
    let mut child = KillOnDrop(child);
    pushed(&mut rx, &["10.0.3.1:3000"]).await;
    assert_eq!(server.nacos.connection_count(), 2);

    child.0.kill().expect("kill the helper");
    child.0.wait().expect("reap the helper");
    pushed(&mut rx, &[]).await;
    assert!(server.instances("shipping").is_empty());
    wait_until("the helper's connection is gone", || {
        server.nacos.connection_count() == 1
    })
    .await;
    let closed = server.nacos.stats().connections_closed;
    assert!(closed.contains(&("stream_ended", 1)), "{closed:?}");
    server.stop().await;
}
