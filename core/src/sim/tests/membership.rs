//! Members joining and leaving while clients write: joining nodes load the snapshot and
//! take their share of ip:port clients, leaving nodes' clients move to their new owners,
//! and no acknowledged registration is lost, also when nodes learn of the change at
//! different times.

use super::*;
use crate::member::MemberState;

/// A configuration without heartbeat expiry during the test (registrations stay).
fn config(seed: u64) -> SimConfig {
    let mut cfg = no_expiry(seed);
    // Nodes learn a list at most 1 s apart here.
    cfg.protocol.member_change_settle = 2_000;
    cfg
}

/// Registers ip:port client `k` through a random listed node, retrying (as a client
/// would) for up to 500 ms; the client's id if the owner acknowledged it. While nodes
/// disagree on the list, a write may find no node that agrees it is the owner.
fn register(sim: &mut SimCluster, k: u32) -> Option<ClientId> {
    let ip = format!("10.7.{}.{}", k / 250, k % 250);
    for _ in 0..10 {
        let listed = sim.listed().to_vec();
        let entry = listed[sim.rng().range(0, listed.len() as u64 - 1) as usize];
        if let Some(id) = sim.register_ip_port(entry, "svc", &ip, 8080) {
            return Some(id);
        }
        sim.run_for(50);
    }
    None
}

/// Runs `ms` of virtual time, registering a client every 100 ms.
fn run_writing(sim: &mut SimCluster, ms: Millis, next: &mut u32, acked: &mut Vec<ClientId>) {
    let end = sim.now() + ms;
    while sim.now() < end {
        if let Some(id) = register(sim, *next) {
            acked.push(id);
        }
        *next += 1;
        sim.run_for(100);
    }
}

/// Every alive node holds every acked client, attributed to the owner its routing names.
fn check_owners(sim: &SimCluster, acked: &[ClientId], seed: u64) {
    for i in sim.alive() {
        let n = sim.node(i).unwrap();
        for id in acked {
            let c = n
                .registry()
                .get(id.as_str())
                .unwrap_or_else(|| panic!("seed {seed}: node {i} lost {id}"));
            let want = match n.route(id.routing_key().unwrap()) {
                Route::Local => n.me(),
                Route::Remote(m) => m,
            };
            assert_eq!(c.owner(), want, "seed {seed}: node {i}: owner of {id}");
        }
    }
}

/// A network that loses 5 % of peer messages, duplicates 5 % and delays up to 60 ms.
fn lossy() -> NetConfig {
    NetConfig {
        loss: 0.05,
        duplicate: 0.05,
        min_delay: 1,
        max_delay: 60,
    }
}

/// Whether no alive node sees a member of its list DOWN. Over a lossy network a node may
/// see a peer DOWN for a while (probes lost in a row) and route around it: until the
/// views agree again, two nodes may both count a client as theirs.
fn views_agree(sim: &SimCluster) -> bool {
    sim.alive().into_iter().all(|i| {
        sim.node(i)
            .unwrap()
            .member_states()
            .iter()
            .all(|(_, s)| *s != MemberState::Down)
    })
}

/// Runs until the alive nodes converge and agree on the members' states, for at most
/// `ms`.
fn converge(sim: &mut SimCluster, ms: Millis, seed: u64) {
    let end = sim.now() + ms;
    while !(sim.converged() && views_agree(sim)) {
        assert!(sim.now() < end, "seed {seed}: {}", sim.differences());
        sim.run_for(100);
    }
}

fn scale_3_5_3(seed: u64, staggered: bool, net: NetConfig) {
    let mut sim = SimCluster::new(config(seed));
    sim.set_net(net);
    sim.run_for(1_000);
    // The start's own load (a lost snapshot pull waits out the peer timeout) ends
    // before the scaling begins: a node joining a cluster that is still loading starts
    // empty by the cold-start rule, as its peers do.
    converge(&mut sim, 30_000, seed);
    let (mut next, mut acked) = (0, Vec::new());
    run_writing(&mut sim, 2_000, &mut next, &mut acked);
    // Two nodes join: started with the new list; the others learn it (all at once, or
    // half of them a second later).
    let joined = [sim.add_node(), sim.add_node()];
    let all: Vec<usize> = (0..5).collect();
    sim.set_listed(&all, |i| !staggered || i % 2 == 0);
    for &j in &joined {
        sim.restart(j);
    }
    run_writing(&mut sim, 1_000, &mut next, &mut acked);
    sim.set_listed(&all, |_| true);
    run_writing(&mut sim, 4_000, &mut next, &mut acked);
    sim.run_for(3_000);
    converge(&mut sim, 30_000, seed);
    for &j in &joined {
        let n = sim.node(j).unwrap();
        assert!(
            n.loaded_from().is_some(),
            "seed {seed}: node {j} loaded a snapshot"
        );
        assert!(
            n.owned_clients() > 0,
            "seed {seed}: node {j} took its share"
        );
    }
    check_owners(&sim, &acked, seed);
    // The two leave: the list drops them (the survivors learn it at once or staggered),
    // then they stop.
    let rest = [0, 1, 2];
    sim.set_listed(&rest, |i| !staggered || i != 1);
    run_writing(&mut sim, 1_000, &mut next, &mut acked);
    sim.set_listed(&rest, |_| true);
    run_writing(&mut sim, 500, &mut next, &mut acked);
    let writes = next;
    for &j in &joined {
        sim.crash(j);
    }
    run_writing(&mut sim, 3_000, &mut next, &mut acked);
    sim.run_for(3_000);
    converge(&mut sim, 30_000, seed);
    check_owners(&sim, &acked, seed);
    let owned: u64 = rest
        .iter()
        .map(|&i| sim.node(i).unwrap().owned_clients())
        .sum();
    assert_eq!(
        owned,
        acked.len() as u64,
        "seed {seed}: every client has one owner"
    );
    for i in rest {
        assert_eq!(sim.node(i).unwrap().members().len(), 3, "seed {seed}");
    }
    if !staggered && net == NetConfig::default() {
        // With one view at a time, only the moments a node is starting refuse writes.
        assert!(
            acked.len() as u32 * 10 >= writes * 9,
            "seed {seed}: {} of {writes}",
            acked.len()
        );
    }
}

#[test]
fn scale_3_to_5_to_3_while_writing_loses_nothing() {
    for seed in 1..=30 {
        scale_3_5_3(seed, false, NetConfig::default());
    }
}

#[test]
fn scale_3_to_5_to_3_with_members_learning_at_different_times() {
    for seed in 1..=30 {
        scale_3_5_3(seed, true, NetConfig::default());
    }
}

/// The same over a network that loses, duplicates and delays peer messages: handover
/// syncs are lost and retried, a client may move owner twice while its syncs are
/// pending.
#[test]
fn scale_3_to_5_to_3_over_a_lossy_network() {
    // DISTRO_SIM_SEED=S replays one seed; DISTRO_SIM_SEEDS=N runs seeds 1..=N (50).
    let seeds: Vec<u64> = match std::env::var("DISTRO_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("DISTRO_SIM_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("DISTRO_SIM_SEEDS")
                .map(|s| s.parse().expect("DISTRO_SIM_SEEDS must be a number"))
                .unwrap_or(50);
            (1..=n).collect()
        }
    };
    let mut failed = Vec::new();
    for seed in seeds {
        for staggered in [false, true] {
            let r = std::panic::catch_unwind(|| scale_3_5_3(seed, staggered, lossy()));
            if r.is_err() {
                failed.push((seed, staggered));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failed (seed, staggered): {failed:?}; replay one with DISTRO_SIM_SEED=S"
    );
}

/// A node that starts after a member left was never given that member's address, yet
/// its peers still hold replicas of the connection clients the member owned (until
/// their leases end, 180 s by default) and send them in the snapshot, naming their owner
/// by address. It must load them: it refused every chunk naming an owner it did not know,
/// so its load failed at every peer, round after round, until those leases had ended
/// everywhere (and in the simulator the failed chunk left the load hanging for good).
#[test]
fn a_node_started_after_a_leave_loads_the_replicas_of_the_member_that_left() {
    for seed in 1..=10 {
        let mut sim = SimCluster::new(config(seed));
        sim.run_for(1_000);
        let orphans = connection_clients_on(&mut sim, 2, 10);
        let ip_port: Vec<ClientId> = (0..30).filter_map(|k| register(&mut sim, k)).collect();
        assert_eq!(ip_port.len(), 30, "seed {seed}");
        sim.run_for(2_000);
        assert!(sim.converged(), "seed {seed}: {}", sim.differences());
        // Node 2 leaves (hands its ip:port clients over) and stops.
        sim.set_listed(&[0, 1], |_| true);
        sim.run_for(1_000);
        sim.crash(2);
        // Node 0 restarts, given the list without node 2.
        sim.crash(0);
        sim.restart(0);
        let restarted = sim.now();
        while !sim.node(0).unwrap().is_loaded() {
            assert!(
                sim.now() < restarted + 5_000,
                "seed {seed}: node 0 did not load within 5 s"
            );
            sim.run_for(100);
        }
        let n0 = sim.node(0).unwrap();
        assert!(!n0.cold_started(), "seed {seed}");
        assert_eq!(n0.members().len(), 2, "seed {seed}");
        assert!(n0.loaded_from().is_some(), "seed {seed}");
        let left = n0.members().known("10.0.0.3:8848");
        assert!(
            left.is_some_and(|m| !n0.members().contains(m)),
            "seed {seed}: node 2 known as a former member"
        );
        assert_eq!(
            held(&sim, 0, &orphans),
            10,
            "seed {seed}: node 2's replicas"
        );
        assert_eq!(
            held(&sim, 1, &orphans),
            10,
            "seed {seed}: within their lease"
        );
        assert_eq!(held(&sim, 0, &ip_port), 30, "seed {seed}");
        converge(&mut sim, 10_000, seed);
        check_owners(&sim, &ip_port, seed);
    }
}

/// A member that leaves while a node sees it DOWN (that node was cut off, or the member
/// had crashed): self-preservation capped the expiry of its replicas there when it went
/// DOWN, and the cap stayed for good once the member was no longer listed, so that node
/// kept 85 % of the member's connection clients while the nodes that saw it UP let them
/// expire with the lease. A member that left is gone by decision: uncapped.
#[test]
fn replicas_of_a_member_that_left_while_seen_down_expire_with_the_lease() {
    for seed in 1..=5 {
        let mut cfg = config(seed);
        cfg.protocol.lease = 20_000;
        let mut sim = SimCluster::new(cfg);
        sim.run_for(1_000);
        let orphans = connection_clients_on(&mut sim, 0, 20);
        sim.run_for(2_000);
        assert!(sim.converged(), "seed {seed}: {}", sim.differences());
        sim.isolate(2);
        let cut_at = sim.now();
        let zero = sim.id_on(2, 0).unwrap();
        while sim.node(2).unwrap().member_state(zero) != MemberState::Down {
            assert!(
                sim.now() < cut_at + 30_000,
                "seed {seed}: node 2 never saw node 0 DOWN"
            );
            sim.run_for(100);
        }
        // Node 0 leaves (every node told) and stops; node 2's partition heals later.
        sim.set_listed(&[1, 2], |_| true);
        sim.run_for(1_000);
        sim.crash(0);
        sim.run_for(2_000);
        sim.heal(2);
        let cfg = sim.node(1).unwrap().config().clone();
        sim.run_for(cfg.lease + 3 * cfg.health_check_interval);
        assert_eq!(held(&sim, 1, &orphans), 0, "seed {seed}: node 1");
        assert_eq!(
            held(&sim, 2, &orphans),
            0,
            "seed {seed}: node 2 kept replicas of the member that left"
        );
        converge(&mut sim, 10_000, seed);
    }
}

/// Changes a node made just before it learned of a joiner were scheduled for the peers of
/// the old list only, and the joiner's snapshot may predate their sync to the peer it
/// loads from, which does not pass them on: only verify repaired them, and over a lossy
/// network a joiner lacked two clients for 30 s (the lossy test above, seed 239). What is
/// pending for the old peers when the list changes goes to the joiners too. Verify is
/// off here, so sync alone must deliver.
#[test]
fn changes_pending_when_a_member_joins_reach_the_joiner() {
    for seed in 1..=10 {
        let mut cfg = config(seed);
        cfg.protocol.verify_interval = 3_600_000;
        cfg.protocol.lease = 7_200_000;
        let mut sim = SimCluster::new(cfg);
        sim.run_for(3_000);
        // Clients node 2 owns, registered within the sync delay before the join: their
        // syncs to nodes 0 and 1 are still pending.
        let mine: Vec<String> = (0..200)
            .map(|i| format!("10.9.1.{i}"))
            .filter(|ip| sim.node(2).unwrap().route(&format!("{ip}:8080")) == Route::Local)
            .take(20)
            .collect();
        let ids: Vec<ClientId> = mine
            .iter()
            .map(|ip| sim.register_ip_port(2, "svc", ip, 8080).expect("acked"))
            .collect();
        assert_eq!(ids.len(), 20, "seed {seed}");
        assert!(
            sim.node(2).unwrap().pending_sync(MemberId(0)) > 0,
            "seed {seed}"
        );
        let joined = [sim.add_node(), sim.add_node()];
        let all: Vec<usize> = (0..5).collect();
        sim.set_listed(&all, |_| true);
        for &j in &joined {
            sim.restart(j);
        }
        sim.run_for(5_000);
        for &j in &joined {
            assert!(sim.node(j).unwrap().is_loaded(), "seed {seed}: node {j}");
            assert_eq!(
                held(&sim, j, &ids),
                ids.len(),
                "seed {seed}: node {j} got the changes pending at the join"
            );
        }
        converge(&mut sim, 5_000, seed);
    }
}
