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

/// The sync requests among `cmds`.
fn syncs(cmds: &[Command]) -> usize {
    sends(cmds)
        .into_iter()
        .filter(|(_, r)| matches!(r, PeerRequest::Sync(_)))
        .count()
}

#[test]
fn a_beat_of_a_healthy_instance_only_moves_its_beat_time() {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let svc = ServiceSpec::new("", "", "svc");
    let spec = InstanceSpec::new("1.1.1.1", 80);
    n.register(&id, &svc, &spec, 0).unwrap();
    n.tick(0);
    assert_eq!(syncs(&n.tick(1_000)), 2, "the registration is synced");
    let shard = n.registry().shard_of(&id);
    let before = n.registry().get(id.as_str()).unwrap();
    let digest = n.registry().digest(n.me(), shard);

    // Beats: the same stored client, revision and digest; nothing for peers.
    for t in [2_000, 7_000, 12_000] {
        assert_eq!(n.beat(&id, &svc, t).unwrap(), BeatResult::Ok);
        let after = n.registry().get(id.as_str()).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&before, &after),
            "a beat built a client"
        );
        assert_eq!(after.revision(), before.revision());
        assert_eq!(n.registry().digest(n.me(), shard), digest);
        assert_eq!(syncs(&n.tick(t + 1_500)), 0, "a beat was synced");
    }
    // The owner's heartbeat check saw them: healthy 18 s after the registration.
    let healthy = |n: &Node| n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy;
    n.tick(18_000);
    assert!(healthy(&n));

    // The same registration again is a beat too: no write, the beat time moves.
    assert_eq!(
        n.register(&id, &svc, &spec, 20_000).unwrap(),
        crate::WriteResult::Unchanged
    );
    n.tick(30_000); // 18 s after the last beat at 12 s, 10 s after the registration
    assert!(healthy(&n));
    assert_eq!(syncs(&n.tick(31_500)), 0);
    let after = n.registry().get(id.as_str()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&before, &after));

    // A beat that finds the instance unhealthy writes, and that write is synced.
    n.tick(36_000); // 16 s after the registration at 20 s
    assert!(!healthy(&n));
    assert_eq!(syncs(&n.tick(37_500)), 2, "the health change is synced");
    assert_eq!(n.beat(&id, &svc, 38_000).unwrap(), BeatResult::Ok);
    assert!(healthy(&n));
    let healed = n.registry().get(id.as_str()).unwrap();
    assert!(healed.revision() > before.revision());
    assert_eq!(syncs(&n.tick(39_500)), 2, "making it healthy is synced");

    // A beat names its service validly or gets an error naming the field, not "not found".
    let bad = ServiceSpec::new("", "", "bad\u{1}name");
    let e = n.beat(&id, &bad, 40_000).unwrap_err();
    assert!(e.to_string().contains("control character"), "{e}");
    let long = ServiceSpec::new("", "", &"s".repeat(300));
    assert!(n.beat(&id, &long, 40_000).is_err());
    let other = ServiceSpec::new("", "", "other");
    assert_eq!(n.beat(&id, &other, 40_000).unwrap(), BeatResult::NotFound);
}

#[test]
fn names_of_services_nobody_publishes_to_any_more_are_freed() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let mut spec = InstanceSpec::new("1.1.1.1", 80);
    let mut now = 0;
    n.tick(now);
    for i in 0..2_000 {
        // A new service name, cluster name and metadata key every time.
        spec.cluster = format!("c{i}");
        spec.metadata = vec![(format!("key-{i}"), "v".into())];
        let svc = ServiceSpec::new("", "", &format!("svc-{i}"));
        n.register(&id, &svc, &spec, now).unwrap();
        n.remove_client(&id, now);
        now += 1_000;
        n.tick(now);
    }
    // Empty services are collected a minute after they emptied, so about 60 services
    // (3 names each) are still held, plus what the map has not freed yet; without
    // reclamation 6,000 names would be.
    let names = n.registry().interner().len();
    eprintln!("{names} names interned after 2,000 services came and went");
    assert!(names < 300, "{names} names interned");
}
