//! Unit tests of [`Node`] on its own: sync after the delay, a standalone node, ip:port
//! clients' own addresses, heartbeat checks. Protocol properties across nodes and faults
//! are the simulator's (`sim.rs`, `core/tests/simulation.rs`).

use super::{BeatResult, Node};
use crate::config::Config;
use crate::member::{MemberId, MemberList};
use crate::message::{Command, PeerRequest};
use crate::model::{ClientId, InstanceSpec, ServiceSpec};

fn node(me: &str, n: usize) -> Node {
    let addrs: Vec<String> = (1..=n).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        ..Config::default()
    };
    Node::new(cfg, MemberList::new(me, &addrs).unwrap(), 1_000).unwrap()
}

fn sends(cmds: &[Command]) -> Vec<(&MemberId, &PeerRequest)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send { to, request } => Some((to, request)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_change_is_synced_to_every_peer_after_the_delay() {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::connection(1, "1.1.1.1", 1);
    n.register(
        &id,
        &ServiceSpec::new("", "", "svc"),
        &InstanceSpec::new("1.1.1.1", 80),
        0,
    )
    .unwrap();
    n.tick(0);
    let before: Vec<_> = n
        .tick(999)
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                Command::Send {
                    request: PeerRequest::Sync(_),
                    ..
                }
            )
        })
        .collect();
    assert!(before.is_empty());
    let cmds = n.tick(1000);
    let syncs: Vec<_> = sends(&cmds)
        .into_iter()
        .filter(|(_, r)| matches!(r, PeerRequest::Sync(_)))
        .collect();
    assert_eq!(syncs.len(), 2);
}

#[test]
fn standalone_is_loaded_and_sends_nothing() {
    let n = node("10.0.0.1:8848", 1);
    assert!(n.is_loaded());
    let id = ClientId::ip_port("1.1.1.1", 80);
    n.register(
        &id,
        &ServiceSpec::new("", "", "svc"),
        &InstanceSpec::new("1.1.1.1", 80),
        0,
    )
    .unwrap();
    assert!(n.tick(10_000).is_empty());
}

#[test]
fn ip_port_clients_publish_only_their_own_address() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let e = n
        .register(
            &id,
            &ServiceSpec::new("", "", "svc"),
            &InstanceSpec::new("1.1.1.2", 80),
            0,
        )
        .unwrap_err();
    assert!(e.to_string().contains("clientId"), "{e}");
}

#[test]
fn heartbeats_keep_instances_healthy_then_they_expire() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let svc = ServiceSpec::new("", "", "svc");
    n.register(&id, &svc, &InstanceSpec::new("1.1.1.1", 80), 0)
        .unwrap();
    n.tick(0);
    assert_eq!(n.beat(&id, &svc, 4_000).unwrap(), BeatResult::Ok);
    n.tick(10_000);
    let healthy = |n: &Node| n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy;
    assert!(healthy(&n));
    n.tick(20_000); // 16 s after the last beat
    assert!(!healthy(&n));
    assert_eq!(n.beat(&id, &svc, 21_000).unwrap(), BeatResult::Ok);
    assert!(healthy(&n));
    n.tick(25_000);
    n.tick(30_000);
    n.tick(35_000);
    n.tick(40_000);
    n.tick(45_000);
    n.tick(50_000); // 29 s after the last beat
    assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 1);
    n.tick(55_000); // 34 s
    assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 0);
    assert_eq!(n.beat(&id, &svc, 56_000).unwrap(), BeatResult::NotFound);
}

#[test]
fn per_instance_heartbeat_overrides() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let svc = ServiceSpec::new("", "", "svc");
    let mut spec = InstanceSpec::new("1.1.1.1", 80);
    spec.metadata = vec![
        ("preserved.heart.beat.timeout".into(), "3000".into()),
        ("preserved.ip.delete.timeout".into(), "6000".into()),
    ];
    n.register(&id, &svc, &spec, 0).unwrap();
    n.tick(0);
    n.tick(5_000);
    assert!(!n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy);
    n.tick(10_000);
    assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 0);
}
