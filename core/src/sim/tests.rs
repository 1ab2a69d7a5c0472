//! Unit tests of the simulator and, through it, of protocol scenarios too specific for
//! the seed sweep: a cut-off owner's health check, deregistration through a node that
//! missed the registration, a cut-off minority, self-preservation, failed-over connection
//! clients, a chunked snapshot load.

use super::*;
use crate::member::MemberId;
use crate::model::{ClientId, InstanceSpec};
use crate::node::Route;

#[test]
fn rng_is_deterministic_and_spread() {
    let mut a = SimRng::new(42);
    let mut b = SimRng::new(42);
    let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
    let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
    assert_eq!(xs, ys);
    assert!((0..10).all(|v| xs.contains(&v)));
}

#[test]
fn a_registration_replicates_to_every_node() {
    let mut sim = SimCluster::new(SimConfig::default());
    let id = sim
        .register_ip_port(1, "svc", "10.1.1.1", 8080)
        .expect("acked");
    assert!(!sim.converged());
    sim.run_for(1_500);
    for i in 0..3 {
        assert!(
            sim.node(i).unwrap().registry().get(id.as_str()).is_some(),
            "node {i}"
        );
    }
    assert!(sim.converged(), "{}", sim.differences());
}

/// The default configuration with seed `seed`, whose ip:port instances neither turn
/// unhealthy nor expire during a test (no heartbeats needed: registrations stay).
fn no_expiry(seed: u64) -> SimConfig {
    let mut cfg = SimConfig {
        seed,
        ..SimConfig::default()
    };
    cfg.protocol.heartbeat_timeout = 3_600_000;
    cfg.protocol.delete_timeout = 3_600_000;
    cfg
}

fn connection_clients_on(sim: &mut SimCluster, node: usize, n: usize) -> Vec<ClientId> {
    let start = sim.now();
    (0..n)
        .map(|i| {
            let ip = format!("172.16.{node}.{i}");
            let id = ClientId::connection(start, &ip, 40_000);
            let spec = InstanceSpec::new(&ip, 8080);
            sim.register_connection(node, &id, "svc", &spec)
                .expect("alive")
                .expect("valid");
            id
        })
        .collect()
}

fn held(sim: &SimCluster, node: usize, ids: &[ClientId]) -> usize {
    let reg = sim.node(node).unwrap().registry();
    ids.iter()
        .filter(|id| reg.get(id.as_str()).is_some())
        .count()
}

/// A node cut off from its peers keeps running heartbeat checks on the clients it
/// owned. Clients that deregistered through the other side meanwhile must not come
/// back when the partition heals: the cut-off node's "unhealthy" mark is derived from
/// its stale copy and must not outrank the deregistration (it did before, by being
/// written later, and the deleted clients came back until they expired).
#[test]
fn a_cut_off_owners_health_check_does_not_bring_back_deregistered_clients() {
    let mut sim = SimCluster::new(SimConfig::default());
    sim.run_for(1_000);
    let cfg = sim.node(0).unwrap().config().clone();
    let registered_at = sim.now();
    let mut mine = Vec::new();
    for i in 0..60 {
        let ip = format!("10.9.0.{i}");
        let id = sim
            .register_ip_port(0, "svc", &ip, 8080)
            .expect("acknowledged");
        if sim.node(2).unwrap().route(&format!("{ip}:8080")) == Route::Local {
            mine.push((ip, id));
        }
    }
    assert!(mine.len() >= 5, "node 2 owns {} of 60", mine.len());
    let ids: Vec<ClientId> = mine.iter().map(|(_, id)| id.clone()).collect();
    sim.run_for(3_000);
    assert!(sim.converged(), "{}", sim.differences());
    sim.isolate(2);
    // The others see node 2 down and take its clients over; then they deregister.
    let cut_at = sim.now();
    let moved = |sim: &SimCluster| {
        mine.iter().all(|(ip, _)| {
            let key = format!("{ip}:8080");
            [0, 1].iter().all(|&n| {
                !matches!(sim.node(n).unwrap().route(&key), Route::Remote(m) if m.index() == 2)
            })
        })
    };
    while !moved(&sim) {
        assert!(sim.now() < cut_at + 30_000, "node 2 never seen down");
        sim.run_for(100);
    }
    sim.run_for(500);
    for (ip, _) in &mine {
        assert!(sim.deregister_ip_port(0, "svc", ip, 8080));
    }
    sim.run_for(2_000);
    assert_eq!(held(&sim, 0, &ids), 0);
    assert_eq!(held(&sim, 1, &ids), 0);
    // Node 2 marks them unhealthy (no beats), but has not expired them yet.
    sim.run_until(registered_at + cfg.heartbeat_timeout + 2 * cfg.health_check_interval);
    assert!(sim.now() < registered_at + cfg.delete_timeout);
    assert_eq!(held(&sim, 2, &ids), ids.len());
    let unhealthy = ids
        .iter()
        .filter(|id| {
            let c = sim.node(2).unwrap().registry().get(id.as_str()).unwrap();
            c.publications()[0].instances.iter().all(|i| !i.healthy)
        })
        .count();
    assert!(unhealthy > 0, "node 2 marked none of them unhealthy");
    sim.heal(2);
    let healed_at = sim.now();
    let mut converged = None;
    while sim.now() < healed_at + 20_000 {
        sim.run_for(100);
        for n in [0, 1] {
            assert_eq!(
                held(&sim, n, &ids),
                0,
                "node {n}: a deregistered client came back {} ms after the heal",
                sim.now() - healed_at
            );
        }
        if converged.is_none() && held(&sim, 2, &ids) == 0 && sim.converged() {
            converged = Some(sim.now() - healed_at);
        }
    }
    let converged = converged.expect("node 2 learned the deregistrations");
    println!("node 2 dropped the deregistered clients {converged} ms after the heal");
    assert!(
        converged < cfg.delete_timeout,
        "by the tombstones, not by expiry"
    );
}

/// A client registers through the majority while its usual node is cut off, and
/// deregisters through that node as soon as the partition heals, before the node has
/// learned of the registration. The deregistration was acknowledged, so the
/// registration must not come back when it replicates there (it did: deregistering
/// an unknown client changed nothing, and the client stayed listed everywhere until
/// its heartbeats timed out).
#[test]
fn a_deregistration_through_a_node_that_missed_the_registration_holds() {
    let mut sim = SimCluster::new(SimConfig::default());
    sim.run_for(1_000);
    let cfg = sim.node(0).unwrap().config().clone();
    let (ip, port) = (0..200)
        .map(|i| (format!("10.8.0.{i}"), 8080))
        .find(|(ip, port)| sim.node(2).unwrap().route(&format!("{ip}:{port}")) == Route::Local)
        .expect("node 2 owns some address");
    let id = ClientId::ip_port(&ip, port);
    sim.isolate(2);
    let cut_at = sim.now();
    while sim.node(0).unwrap().route(&format!("{ip}:{port}")) == Route::Remote(MemberId(2)) {
        assert!(sim.now() < cut_at + 30_000, "node 2 never seen down");
        sim.run_for(100);
    }
    sim.register_ip_port(0, "svc", &ip, port)
        .expect("registered through the majority");
    sim.run_for(2_000);
    assert_eq!(held(&sim, 1, std::slice::from_ref(&id)), 1);
    assert_eq!(held(&sim, 2, std::slice::from_ref(&id)), 0);
    sim.heal(2);
    assert!(
        sim.deregister_ip_port(2, "svc", &ip, port),
        "node 2 (still its own owner) acknowledges"
    );
    let healed_at = sim.now();
    let mut gone = [false; 3];
    while sim.now() < healed_at + 10_000 {
        sim.run_for(100);
        for (n, g) in gone.iter_mut().enumerate() {
            let has = held(&sim, n, std::slice::from_ref(&id)) == 1;
            assert!(!(*g && has), "node {n}: the deregistered client came back");
            *g |= !has;
        }
    }
    assert_eq!(
        gone, [true; 3],
        "deregistered everywhere well before expiry"
    );
    assert!(sim.converged(), "{}", sim.differences());
    assert!(10_000 < cfg.delete_timeout);
}

/// A node cut off from its peers and from the clients for longer than the delete
/// timeout: the clients keep beating the other side. The cut-off node, reaching only
/// itself of three members, holds its expiries; when the partition heals it gives the
/// clients it owns fresh heartbeat times (their beats went to the other side), so it
/// does not delete the live clients everywhere. It did both: its expiry outranked the
/// state the others held, and every one of its clients had to register again.
#[test]
fn a_cut_off_minority_does_not_expire_clients_that_beat_the_majority() {
    let mut sim = SimCluster::new(SimConfig::default());
    sim.run_for(1_000);
    let cfg = sim.node(0).unwrap().config().clone();
    let addrs: Vec<(String, u16)> = (0..60).map(|i| (format!("10.7.0.{i}"), 8080)).collect();
    let ids: Vec<ClientId> = addrs
        .iter()
        .map(|(ip, port)| sim.register_ip_port(0, "svc", ip, *port).expect("acked"))
        .collect();
    let node2_owns = addrs
        .iter()
        .filter(|(ip, port)| sim.node(2).unwrap().route(&format!("{ip}:{port}")) == Route::Local)
        .count();
    assert!(node2_owns >= 5, "node 2 owns {node2_owns} of 60");
    sim.run_for(2_000);
    sim.isolate(2);
    let cut_at = sim.now();
    // Clients beat through node 0 only (node 2 is unreachable for them too), every
    // 5 s as Nacos clients do.
    while sim.now() < cut_at + cfg.delete_timeout + 3 * cfg.health_check_interval {
        for (ip, port) in &addrs {
            sim.beat_ip_port(0, "svc", ip, *port);
        }
        sim.run_for(5_000);
    }
    assert_eq!(held(&sim, 2, &ids), ids.len(), "node 2 expired none");
    assert!(sim.node(2).unwrap().stats().heartbeat_expiry_held > 0);
    assert_eq!(sim.node(2).unwrap().stats().heartbeat_expired, 0);
    sim.heal(2);
    let healed_at = sim.now();
    while sim.now() < healed_at + 30_000 {
        for (ip, port) in &addrs {
            sim.beat_ip_port(0, "svc", ip, *port);
        }
        for _ in 0..50 {
            sim.run_for(100);
            for n in [0, 1] {
                assert_eq!(
                    held(&sim, n, &ids),
                    ids.len(),
                    "node {n}: live clients deleted {} ms after the heal",
                    sim.now() - healed_at
                );
            }
        }
    }
    assert!(sim.converged(), "{}", sim.differences());
    assert_eq!(held(&sim, 2, &ids), ids.len());
}

/// A partition longer than the lease: with self-preservation (default 15 %) the
/// other nodes keep at least 85 % of the unreachable node's clients however long it
/// lasts; with it disabled (Nacos's behaviour) they expire all of them after the lease.
#[test]
fn self_preservation_caps_expiry_during_a_long_partition() {
    for (fraction, min_kept) in [(0.15, 34), (1.0, 0)] {
        let mut cfg = SimConfig::default();
        cfg.protocol.self_preservation_fraction = fraction;
        let mut sim = SimCluster::new(cfg);
        sim.run_for(1_000);
        let ids = connection_clients_on(&mut sim, 2, 40);
        sim.run_for(3_000);
        assert_eq!(held(&sim, 0, &ids), 40);
        sim.isolate(2);
        sim.run_for(600_000); // ten minutes, more than three leases
        let kept = held(&sim, 0, &ids);
        println!("self_preservation_fraction {fraction}: node 0 kept {kept} of 40 after 10 min");
        if fraction < 1.0 {
            assert!(kept >= min_kept, "kept only {kept}");
            assert!(sim.node(0).unwrap().stats().lease_preserved > 0);
        } else {
            assert_eq!(kept, 0);
        }
        // The owner itself never loses its own clients.
        assert_eq!(held(&sim, 2, &ids), 40);
        sim.heal(2);
        sim.run_for(15_000);
        assert!(sim.converged(), "{}", sim.differences());
        assert_eq!(
            held(&sim, 0, &ids),
            40,
            "verify repaired the expired replicas"
        );
    }
}

/// A node dies: its SDKs that are still alive fail over and register again on a
/// survivor (a new connection client with identical instances). Their old copies go at
/// the next sweep, without waiting for the lease, and since that proves the owner gone
/// rather than cut off, the copies nobody re-registered (apps that died with the node)
/// then expire with the lease despite self-preservation. Without such evidence (the
/// partition test above) self-preservation keeps them.
#[test]
fn failed_over_connection_clients_lift_self_preservation_of_a_dead_owner() {
    let mut sim = SimCluster::new(SimConfig::default());
    sim.run_for(1_000);
    let ids = connection_clients_on(&mut sim, 2, 20);
    sim.run_for(3_000);
    assert_eq!(held(&sim, 0, &ids), 20);
    sim.crash(2);
    // Half of the apps reconnect to node 0 and redo their registration there.
    let redo_at = sim.now();
    let mut redone = Vec::new();
    for i in 0..10 {
        let ip = format!("172.16.2.{i}");
        let id = ClientId::connection(redo_at, &ip, 50_000);
        sim.register_connection(0, &id, "svc", &InstanceSpec::new(&ip, 8080))
            .expect("alive")
            .expect("valid");
        redone.push(id);
    }
    let cfg = sim.node(0).unwrap().config().clone();
    // Node 2 goes DOWN after a few probes; the next sweep drops the superseded copies.
    sim.run_for(
        cfg.probe_interval * u64::from(cfg.probe_down_after + 2) + 2 * cfg.health_check_interval,
    );
    assert!(sim.now() - redo_at < cfg.lease, "well before the lease");
    for n in [0, 1] {
        assert_eq!(held(&sim, n, &ids[..10]), 0, "node {n}: superseded copies");
        assert_eq!(held(&sim, n, &ids[10..]), 10, "node {n}: not yet expired");
        assert_eq!(held(&sim, n, &redone), 10, "node {n}: the redone clients");
        assert_eq!(sim.node(n).unwrap().stats().lease_superseded, 10);
    }
    sim.run_for(cfg.lease + 2 * cfg.health_check_interval);
    for n in [0, 1] {
        assert_eq!(
            held(&sim, n, &ids),
            0,
            "node {n}: the dead owner's other connection clients expired with the lease"
        );
        assert_eq!(sim.node(n).unwrap().stats().lease_preserved, 0);
        assert_eq!(held(&sim, n, &redone), 10);
    }
}

/// A restarted node loads a multi-chunk snapshot and verify stays quiet afterwards.
#[test]
fn restarted_node_loads_a_chunked_snapshot() {
    let mut cfg = SimConfig::default();
    cfg.protocol.snapshot_chunk_bytes = 1024;
    let mut sim = SimCluster::new(cfg);
    sim.run_for(1_000);
    for i in 0..300u16 {
        let ip = format!("10.2.{}.{}", i / 200, i % 200);
        sim.register_ip_port((i % 3) as usize, "svc", &ip, 9000 + i)
            .expect("acked");
    }
    let ids = connection_clients_on(&mut sim, 0, 20);
    sim.run_for(2_000);
    assert!(sim.converged());
    sim.crash(1);
    sim.run_for(1_000);
    sim.restart(1);
    let chunks_before = sim.stats().snapshot_chunks;
    sim.run_for(3_000);
    let node = sim.node(1).unwrap();
    assert!(node.is_loaded());
    assert_eq!(node.stats().snapshot_loads, 1);
    assert!(
        sim.stats().snapshot_chunks - chunks_before > 5,
        "1 KiB chunks: many of them"
    );
    assert_eq!(held(&sim, 1, &ids), 20);
    assert!(sim.converged(), "{}", sim.differences());
    let repairs = node.stats().verify_repairs;
    sim.run_for(20_000);
    assert_eq!(sim.node(1).unwrap().stats().verify_repairs, repairs);
}

/// A snapshot streams chunk by chunk while the source's clients change: clients that
/// deregister between two chunks (here always ones already sent, the lowest ids of the
/// one shard) must not make the stream skip a client it has not sent. The cursor was an
/// offset among the shard's clients, so every client removed before it moved the rest
/// back by one under it, and the loader ended its load without them (verify repaired
/// them later). It now resumes after the last id sent.
#[test]
fn a_snapshot_streamed_while_clients_deregister_skips_none() {
    let mut cfg = SimConfig::default();
    cfg.protocol.shards = 1;
    // The smallest chunks (about 40 of these clients each in the compact layout's size).
    cfg.protocol.snapshot_chunk_bytes = 1024;
    let mut sim = SimCluster::new(cfg);
    sim.run_for(1_000);
    let addrs: Vec<String> = (0..400)
        .map(|i| format!("10.6.{}.{}", i / 200, i % 200))
        .collect();
    for (k, ip) in addrs.iter().enumerate() {
        sim.register_ip_port(k % 3, "svc", ip, 9000).expect("acked");
    }
    sim.run_for(3_000);
    assert!(sim.converged(), "{}", sim.differences());
    // Node 0's own clients, lowest id first: node 1 loads from node 0 (the first peer),
    // and removing them there moves what follows in its one shard.
    let mut mine: Vec<ClientId> = addrs
        .iter()
        .filter(|ip| sim.node(0).unwrap().route(&format!("{ip}:9000")) == Route::Local)
        .map(|ip| ClientId::ip_port(ip, 9000))
        .collect();
    mine.sort();
    let all: Vec<ClientId> = addrs.iter().map(|ip| ClientId::ip_port(ip, 9000)).collect();
    sim.crash(1);
    sim.run_for(500);
    sim.restart(1);
    let chunks_before = sim.stats().snapshot_chunks;
    let mut removed = Vec::new();
    let mut next = mine.iter();
    while !sim.node(1).unwrap().is_loaded() {
        if sim.stats().snapshot_chunks > chunks_before
            && let Some(id) = next.next()
        {
            let ip = id.as_str().split(':').next().unwrap().to_string();
            assert!(sim.deregister_ip_port(0, "svc", &ip, 9000), "{id}");
            removed.push(id.clone());
        }
        sim.run_for(1);
    }
    let node = sim.node(1).unwrap();
    assert_eq!(node.loaded_from(), Some(MemberId(0)));
    assert!(
        sim.stats().snapshot_chunks - chunks_before > 5,
        "1 KiB chunks: many of them"
    );
    assert!(
        removed.len() > 5,
        "removed {} during the load",
        removed.len()
    );
    let skipped: Vec<&ClientId> = all
        .iter()
        .filter(|id| !removed.contains(id) && node.registry().get(id.as_str()).is_none())
        .collect();
    assert!(
        skipped.is_empty(),
        "{} clients never removed were skipped by the snapshot: {skipped:?}",
        skipped.len()
    );
}

/// Two nodes restarted together: neither serves the other its empty registry (a node
/// still loading refuses), both load from the node that kept the state, and nothing is
/// lost.
#[test]
fn nodes_restarted_together_load_from_the_loaded_one() {
    for seed in 1..=20 {
        let mut sim = SimCluster::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.run_for(1_000);
        let mut ids = connection_clients_on(&mut sim, 2, 10);
        for i in 0..60u16 {
            let ip = format!("10.3.0.{i}");
            ids.push(
                sim.register_ip_port((i % 3) as usize, "svc", &ip, 9000 + i)
                    .expect("acked"),
            );
        }
        sim.run_for(2_000);
        assert!(sim.converged(), "seed {seed}: {}", sim.differences());
        sim.crash(0);
        sim.crash(1);
        sim.restart(0);
        sim.restart(1);
        sim.run_for(5_000);
        for n in [0, 1] {
            let node = sim.node(n).unwrap();
            assert!(node.is_loaded(), "seed {seed}: node {n} loaded");
            assert!(
                !node.cold_started(),
                "seed {seed}: node {n} took no empty state"
            );
            assert_eq!(
                node.loaded_from(),
                Some(MemberId(2)),
                "seed {seed}: node {n} loaded from the node that kept the state"
            );
        }
        sim.run_for(1_000);
        assert!(sim.converged(), "seed {seed}: {}", sim.differences());
        for n in 0..3 {
            assert_eq!(held(&sim, n, &ids), 70, "seed {seed}: node {n}");
            let node = sim.node(n).unwrap();
            assert_eq!(node.stats().verify_removed, 0, "seed {seed}: node {n}");
        }
    }
}

/// The whole cluster restarted together: every node refuses while loading, and the
/// cold-start rule lets them all start (empty) instead of waiting for each other.
#[test]
fn a_cluster_restarted_together_cold_starts() {
    for seed in 1..=20 {
        let mut sim = SimCluster::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.run_for(1_000);
        for n in 0..3 {
            sim.crash(n);
        }
        for n in 0..3 {
            sim.restart(n);
        }
        sim.run_for(3_000);
        assert!(sim.stats().snapshot_refusals > 0, "seed {seed}");
        for n in 0..3 {
            let node = sim.node(n).unwrap();
            assert!(node.is_loaded(), "seed {seed}: node {n} started");
        }
        assert!(
            (0..3).any(|n| sim.node(n).unwrap().cold_started()),
            "seed {seed}"
        );
        sim.register_ip_port(0, "svc", "10.4.0.1", 9000)
            .expect("acked");
        sim.run_for(2_000);
        assert!(sim.converged(), "seed {seed}: {}", sim.differences());
    }
}

mod builds;
mod membership;
