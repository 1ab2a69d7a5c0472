//! A cluster of mixed builds: nodes whose verify digests differ for the same clients (the
//! digest term changed between builds, see the README). Every verify round then differs
//! in every shard, the owners send their lists (held back while syncs are on their way,
//! at most two rounds), and the lists renew the replicas' leases: no client may vanish
//! from any node while the builds are mixed.

use super::*;

fn config(seed: u64) -> SimConfig {
    // ip:port clients stay without heartbeats during the test.
    let mut cfg = no_expiry(seed);
    // A lease of twelve verify rounds, so the run covers several.
    cfg.protocol.lease = 60_000;
    cfg
}

#[test]
fn no_client_vanishes_while_one_node_runs_another_build() {
    for seed in 1..=5 {
        let mut sim = SimCluster::new(config(seed));
        sim.set_other_build(2);
        sim.run_for(1_000);
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.extend(connection_clients_on(&mut sim, n, 20));
        }
        for k in 0..60 {
            let entry = k % 3;
            let id = sim
                .register_ip_port(entry, "svc", &format!("10.8.0.{k}"), 8080)
                .unwrap_or_else(|| panic!("seed {seed}: client {k} acknowledged"));
            ids.push(id);
        }
        sim.run_for(2_000);
        let lease = sim.node(0).unwrap().config().lease;
        let verify = sim.node(0).unwrap().config().verify_interval;
        // Three leases, checked after every verify round: a drop at a lease's end would
        // show until the next lists brought the client back. Meanwhile other clients come
        // and go every 250 ms, so syncs are often on their way when a round finds the
        // shards different, and the lists are held back (at most two rounds in a row).
        let end = sim.now() + 3 * lease;
        let mut churn = 0u32;
        while sim.now() < end {
            for _ in 0..verify / 250 {
                let entry = (churn % 3) as usize;
                let ip = format!("10.9.{}.{}", churn / 250 % 250, churn % 250);
                sim.register_ip_port(entry, "churn", &ip, 8080);
                if churn >= 8 {
                    let old = churn - 8;
                    let ip = format!("10.9.{}.{}", old / 250 % 250, old % 250);
                    sim.deregister_ip_port(entry, "churn", &ip, 8080);
                }
                churn += 1;
                sim.run_for(250);
            }
            for n in 0..3 {
                assert_eq!(
                    held(&sim, n, &ids),
                    ids.len(),
                    "seed {seed}: node {n} at {} ms",
                    sim.now()
                );
            }
        }
        let mut deferred = 0;
        for n in 0..3 {
            let stats = sim.node(n).unwrap().stats();
            assert_eq!(stats.lease_expired, 0, "seed {seed}: node {n}");
            assert!(
                stats.verify_shards_mismatched > 0,
                "seed {seed}: node {n} met the other build's digests"
            );
            deferred += stats.verify_lists_deferred;
        }
        assert!(deferred > 0, "seed {seed}: no lists were held back");
        // The last changes reach every node once the churn stops.
        sim.run_for(verify);
        assert!(sim.converged(), "seed {seed}: {}", sim.differences());
    }
}
