//! Property tests of the protocol, swept over many seeds with `SimCluster`.
//!
//! Each seed builds a cluster (3 to 5 nodes), a population of ip:port clients (heartbeat
//! every 5 s, re-register on "not found" or when the owner's copy differs from what they
//! registered, as Nacos clients re-assert their state) and connection clients (pinned to
//! a node; when it dies they reconnect elsewhere under a new id and redo their
//! registrations, as the SDKs do), then runs a random script of faults for 50 s: node
//! crashes and restarts, partitions of one node (shorter than the lease), message loss,
//! duplication and reordering. Two thirds of the seeds also change members: a node joins
//! (started with the new list, every node given it), or one leaves (the list drops it, it
//! hands its clients over and stops 3 s later, for good); `DISTRO_SIM_MEMBERSHIP=0` leaves
//! them out (the other faults of a seed stay the same either way). Client operations
//! continue throughout. After the faults stop, it checks:
//!
//! 1. **convergence**: every live node holds the same clients at the same revisions, within
//!    `sync delay + verify interval + retry delay + probe interval (+ snapshot load)`;
//! 2. **no lost registration**: every live client's latest acknowledged registration is
//!    present on every node;
//! 3. **no resurrection**: nothing deregistered, closed or expired comes back;
//! 4. **single ownership**: every node routes every ip:port client to the same live owner.
//!
//! On the way to convergence the sweep also counts *transient returns*: a deregistered
//! service that a loaded node had dropped after the faults stopped and shows again. It
//! prints them rather than failing: state is replicated per client, last writer wins, so a
//! client that writes through a node holding a stale copy of it (a node that was cut off,
//! or two nodes that briefly disagree on the owner) republishes that copy's other services
//! until its heartbeats (or their absence) settle them. The case that must never happen, a
//! cut-off owner's own health check outranking a deregistration, has its own test in
//! `distro_core::sim`.
//!
//! A quarter of the seeds use Nacos's per-client verify instead of digests. It cannot
//! remove a replica its owner forgot (there is no reverse check), so in those seeds the
//! bound of check 1 is the lease (shortened to 20 s there) plus a verify interval, two
//! sweep periods and a probe interval.
//!
//! A third of the seeds (seed % 3 == 2) sync in batches of 2 to 6 clients with 1 to 3 in
//! flight, so that batches fill: full ones leave before the sync delay and an answered
//! batch's slot is refilled at once, interleaved with the faults like everything else.
//!
//! `DISTRO_SIM_SEEDS=N` sets the number of seeds (default 200); `DISTRO_SIM_SEED=S` replays
//! one seed alone and prints its trace summary.

use distro_core::model::{ClientId, InstanceSpec};
use distro_core::node::BeatResult;
use distro_core::sim::{NetConfig, SimCluster, SimConfig, SimRng};
use distro_core::{Millis, Route};
use std::collections::{BTreeMap, BTreeSet};

const SECOND: Millis = 1_000;
const FAULTS_START: Millis = 10 * SECOND;
const FAULTS_END: Millis = 60 * SECOND;
const SETTLE: Millis = 45 * SECOND;

fn spec(ip: &str, port: u16, version: u32) -> InstanceSpec {
    let mut s = InstanceSpec::new(ip, port);
    s.metadata = vec![("v".to_string(), version.to_string())];
    s
}

fn version_of(p: &distro_core::Publication) -> Option<u32> {
    p.instances.first()?.metadata.get("v")?.parse().ok()
}

struct IpClient {
    ip: String,
    port: u16,
    services: BTreeMap<String, u32>,
    deleted: BTreeSet<String>,
    beating: bool,
    next_beat: Millis,
    entry: usize,
}

impl IpClient {
    fn id(&self) -> ClientId {
        ClientId::ip_port(&self.ip, self.port)
    }
}

struct ConnClient {
    ip: String,
    port: u16,
    node: usize,
    /// Incarnation of `node` when the connection was made: a restart kills connections.
    incarnation: Millis,
    id: ClientId,
    old_ids: Vec<ClientId>,
    services: BTreeMap<String, u32>,
    deleted: BTreeSet<String>,
    closed: bool,
    needs_redo: bool,
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    per_client: bool,
    convergence_ms: Millis,
    virtual_ms: Millis,
    faults: Vec<String>,
    acked: u64,
    messages: u64,
    lost: u64,
    snapshot_loads: u64,
    transient_returns: u64,
    first_return: Option<String>,
    /// Sync batches the nodes running at the end sent as a follower of another peer's
    /// take (taken and encoded once for both).
    shared_batches: u64,
}

#[derive(Debug)]
enum Fault {
    Crash(usize),
    Restart(usize),
    Isolate(usize),
    Heal(usize),
    Net(NetConfig),
    /// A new node starts and every node's member list names it.
    Join,
    /// The member list leaves the node out (it hands its clients over) ...
    Leave(usize),
    /// ... and it stops for good.
    Stop(usize),
}

struct World {
    sim: SimCluster,
    rng: SimRng,
    ip_clients: Vec<IpClient>,
    conn_clients: Vec<ConnClient>,
    services: Vec<String>,
    acked: u64,
    version: u32,
}

impl World {
    fn live_entry(&mut self) -> Option<usize> {
        // Clients reach the listed nodes (a node that left is no longer advertised).
        let listed = self.sim.listed().to_vec();
        let alive: Vec<usize> = self
            .sim
            .alive()
            .into_iter()
            .filter(|n| listed.contains(n))
            .collect();
        if alive.is_empty() {
            return None;
        }
        Some(alive[self.rng.below(alive.len() as u64) as usize])
    }

    fn next_version(&mut self) -> u32 {
        self.version += 1;
        self.version
    }

    /// One random client action (registrations only while `writes` is on).
    fn client_action(&mut self, writes: bool) {
        if !writes {
            return;
        }
        let pick = self.rng.below(100);
        if pick < 60 {
            // ip:port client: register or update a service.
            let c = self.rng.below(self.ip_clients.len() as u64) as usize;
            if !self.ip_clients[c].beating {
                return;
            }
            let svc = self.services[self.rng.below(self.services.len() as u64) as usize].clone();
            let v = self.next_version();
            let Some(entry) = self.live_entry() else {
                return;
            };
            let (ip, port) = (self.ip_clients[c].ip.clone(), self.ip_clients[c].port);
            let r = self
                .sim
                .register_ip_port_spec(entry, &svc, &spec(&ip, port, v));
            let id = ClientId::ip_port(&ip, port);
            trace(
                &self.sim,
                &id,
                &format!("register {svc} v{v} via node {entry}: {r:?}"),
            );
            if let Some(Ok(_)) = r {
                self.acked += 1;
                let cl = &mut self.ip_clients[c];
                cl.services.insert(svc.clone(), v);
                cl.deleted.remove(&svc);
            }
        } else if pick < 75 {
            // ip:port client: deregister a service.
            let c = self.rng.below(self.ip_clients.len() as u64) as usize;
            let Some(svc) = self.ip_clients[c].services.keys().next().cloned() else {
                return;
            };
            let Some(entry) = self.live_entry() else {
                return;
            };
            let (ip, port) = (self.ip_clients[c].ip.clone(), self.ip_clients[c].port);
            let ok = self.sim.deregister_ip_port(entry, &svc, &ip, port);
            trace(
                &self.sim,
                &ClientId::ip_port(&ip, port),
                &format!("deregister {svc} via node {entry}: {ok}"),
            );
            if ok {
                self.acked += 1;
                let cl = &mut self.ip_clients[c];
                cl.services.remove(&svc);
                cl.deleted.insert(svc);
            }
        } else if pick < 77 {
            // ip:port client stops beating: it must expire everywhere.
            let c = self.rng.below(self.ip_clients.len() as u64) as usize;
            self.ip_clients[c].beating = false;
        } else if pick < 95 {
            // connection client: register/update or deregister.
            let c = self.rng.below(self.conn_clients.len() as u64) as usize;
            if self.conn_clients[c].closed || self.conn_clients[c].needs_redo {
                return;
            }
            let node = self.conn_clients[c].node;
            let id = self.conn_clients[c].id.clone();
            if self.rng.chance(0.7) {
                let svc =
                    self.services[self.rng.below(self.services.len() as u64) as usize].clone();
                let v = self.next_version();
                let (ip, port) = (self.conn_clients[c].ip.clone(), self.conn_clients[c].port);
                let r = self
                    .sim
                    .register_connection(node, &id, &svc, &spec(&ip, port, v));
                trace(
                    &self.sim,
                    &id,
                    &format!("register {svc} v{v} at node {node}: {r:?}"),
                );
                if let Some(Ok(_)) = r {
                    self.acked += 1;
                    let cl = &mut self.conn_clients[c];
                    cl.services.insert(svc.clone(), v);
                    cl.deleted.remove(&svc);
                }
            } else if let Some(svc) = self.conn_clients[c].services.keys().next().cloned() {
                let ok = self.sim.deregister_connection(node, &id, &svc);
                trace(
                    &self.sim,
                    &id,
                    &format!("deregister {svc} at node {node}: {ok}"),
                );
                if ok {
                    self.acked += 1;
                    let cl = &mut self.conn_clients[c];
                    cl.services.remove(&svc);
                    cl.deleted.insert(svc);
                }
            }
        } else if pick < 96 {
            // connection client closes its connection.
            let c = self.rng.below(self.conn_clients.len() as u64) as usize;
            let cl = &self.conn_clients[c];
            if cl.closed || cl.needs_redo {
                return;
            }
            let (node, id) = (cl.node, cl.id.clone());
            if self.sim.close_connection(node, &id) {
                self.conn_clients[c].closed = true;
            }
        }
    }

    /// Heartbeats due, and reconnections of connection clients whose node died.
    fn client_upkeep(&mut self) {
        let now = self.sim.now();
        for c in 0..self.ip_clients.len() {
            if !self.ip_clients[c].beating || self.ip_clients[c].next_beat > now {
                continue;
            }
            self.ip_clients[c].next_beat = now + 5 * SECOND;
            let services: Vec<(String, u32)> = self.ip_clients[c]
                .services
                .iter()
                .map(|(s, v)| (s.clone(), *v))
                .collect();
            let (ip, port) = (self.ip_clients[c].ip.clone(), self.ip_clients[c].port);
            for (svc, v) in services {
                let alive = self.sim.alive();
                if alive.is_empty() {
                    break;
                }
                // As the Nacos client: one server, round-robin to the next on failure.
                let mut done = false;
                for k in 0..alive.len() {
                    let entry = alive[(self.ip_clients[c].entry + k) % alive.len()];
                    match self.sim.beat_ip_port(entry, &svc, &ip, port) {
                        Some((BeatResult::Ok, Some(p))) if version_of(&p) == Some(v) => {
                            done = true;
                        }
                        Some(r) => {
                            trace(
                                &self.sim,
                                &ClientId::ip_port(&ip, port),
                                &format!(
                                    "beat {svc} via node {entry}: {:?}, re-register v{v}",
                                    r.0
                                ),
                            );
                            // Not found, or the owner holds something else: re-register.
                            done = matches!(
                                self.sim
                                    .register_ip_port_spec(entry, &svc, &spec(&ip, port, v)),
                                Some(Ok(_))
                            );
                        }
                        None => {}
                    }
                    if done {
                        self.ip_clients[c].entry = (self.ip_clients[c].entry + k) % alive.len();
                        break;
                    }
                }
            }
        }
        for c in 0..self.conn_clients.len() {
            let cl = &self.conn_clients[c];
            if cl.closed {
                continue;
            }
            let connection_alive = self
                .sim
                .node(cl.node)
                .is_some_and(|n| n.incarnation() == cl.incarnation);
            if !connection_alive && !cl.needs_redo {
                self.conn_clients[c].needs_redo = true;
            }
            if !self.conn_clients[c].needs_redo {
                continue;
            }
            let Some(node) = self.live_entry() else {
                return;
            };
            let cl = &mut self.conn_clients[c];
            let old = std::mem::replace(&mut cl.id, ClientId::connection(now, &cl.ip, cl.port));
            cl.old_ids.push(old);
            cl.node = node;
            cl.incarnation = self.sim.node(node).map_or(0, |n| n.incarnation());
            let (id, ip, port) = (cl.id.clone(), cl.ip.clone(), cl.port);
            let services: Vec<(String, u32)> =
                cl.services.iter().map(|(s, v)| (s.clone(), *v)).collect();
            let mut ok = true;
            trace(&self.sim, &id, &format!("reconnected to node {node}"));
            for (svc, v) in services {
                ok &= matches!(
                    self.sim
                        .register_connection(node, &id, &svc, &spec(&ip, port, v)),
                    Some(Ok(_))
                );
            }
            self.conn_clients[c].needs_redo = !ok;
        }
    }
}

/// Services a client deregistered (and did not register again since): once the
/// deregistration is acknowledged, they must not come back.
fn deregistered(services: &BTreeMap<String, u32>, deleted: &BTreeSet<String>) -> Vec<String> {
    deleted
        .iter()
        .filter(|s| !services.contains_key(*s))
        .cloned()
        .collect()
}

/// Check 3 on the way to convergence: `gone` remembers every deregistered (client,
/// service, node) a loaded node has been seen without; seeing one again is a resurrection.
/// (Clients that stopped beating or closed are left to the final check: a replica may
/// drop and re-learn them until their owner expires them.)
fn check_no_return(w: &World, gone: &mut BTreeSet<(String, String, usize)>) -> Option<String> {
    let mut clients: Vec<(ClientId, Vec<String>)> = Vec::new();
    for c in &w.ip_clients {
        clients.push((c.id(), deregistered(&c.services, &c.deleted)));
    }
    for c in &w.conn_clients {
        clients.push((c.id.clone(), deregistered(&c.services, &c.deleted)));
    }
    for n in w.sim.alive() {
        let node = w.sim.node(n).expect("alive");
        if !node.is_loaded() {
            continue;
        }
        for (id, services) in &clients {
            let held = node.registry().get(id.as_str());
            for svc in services {
                let shown = held.as_ref().is_some_and(|h| {
                    h.publications()
                        .iter()
                        .any(|p| p.service.name().as_str() == svc)
                });
                let key = (id.as_str().to_string(), svc.clone(), n);
                if !shown {
                    gone.insert(key);
                } else if gone.remove(&key) {
                    return Some(format!(
                        "node {n}: {id} deregistered {svc}, the node had dropped it, and it came back: {held:?}"
                    ));
                }
            }
        }
    }
    None
}

fn trace(sim: &SimCluster, id: &ClientId, what: &str) {
    if let Ok(t) = std::env::var("DISTRO_SIM_TRACE_CLIENT")
        && id.as_str().contains(&t)
    {
        println!(
            "{:>6} ms {id}: {what}",
            sim.now() - SimConfig::default().start_time
        );
    }
}

fn fault_script(rng: &mut SimRng, nodes: usize) -> Vec<(Millis, Fault)> {
    let mut script = Vec::new();
    let events = rng.range(1, 4);
    for _ in 0..events {
        let node = rng.below(nodes as u64) as usize;
        let start = FAULTS_START + rng.below(35 * SECOND);
        let len = rng.range(2 * SECOND, 20 * SECOND);
        let end = (start + len).min(FAULTS_END - SECOND);
        match rng.below(3) {
            0 => {
                script.push((start, Fault::Crash(node)));
                script.push((end, Fault::Restart(node)));
            }
            1 => {
                script.push((start, Fault::Isolate(node)));
                script.push((end, Fault::Heal(node)));
            }
            _ => {
                let net = NetConfig {
                    loss: rng.below(30) as f64 / 100.0,
                    duplicate: rng.below(20) as f64 / 100.0,
                    min_delay: 1,
                    max_delay: rng.range(5, 300),
                };
                script.push((start, Fault::Net(net)));
                script.push((end, Fault::Net(NetConfig::default())));
            }
        }
    }
    script.sort_by_key(|(t, _)| *t);
    script
}

/// Members joining and leaving, from a generator of their own (the other faults of a seed
/// stay as they were): in a third of the seeds one node joins, in another third one of
/// the nodes started leaves (its list drops it, it stops 3 s later), early enough that
/// the settle time after the change ends well before the faults do.
/// `DISTRO_SIM_MEMBERSHIP=0` turns them off.
fn membership_script(seed: u64, nodes: usize) -> Vec<(Millis, Fault)> {
    if std::env::var("DISTRO_SIM_MEMBERSHIP").is_ok_and(|v| v == "0") {
        return Vec::new();
    }
    let mut rng = SimRng::new(seed ^ 0x4D_E4B3);
    let at = FAULTS_START + rng.below(25 * SECOND);
    match rng.below(3) {
        0 => vec![(at, Fault::Join)],
        1 => {
            let node = rng.below(nodes as u64) as usize;
            vec![
                (at, Fault::Leave(node)),
                (at + 3 * SECOND, Fault::Stop(node)),
            ]
        }
        _ => Vec::new(),
    }
}

fn run_seed(seed: u64) -> Result<Outcome, String> {
    let mut rng = SimRng::new(seed ^ 0xD15_7A0);
    let nodes = 3 + rng.below(3) as usize;
    let mut cfg = SimConfig {
        nodes,
        seed,
        ..SimConfig::default()
    };
    // A quarter of the seeds verify as Nacos does: one request per client. That mode has
    // no reverse check (a replica the owner forgot is only dropped when its lease
    // expires), so those seeds use a 20 s lease to finish within the settle time.
    let per_client = seed.is_multiple_of(4);
    if per_client {
        cfg.protocol.verify_mode = distro_core::VerifyMode::PerClient;
        cfg.protocol.lease = 20 * SECOND;
    }
    // A third of the seeds sync in small batches (2..=6 clients, 1..=3 in flight): full
    // batches leave before the delay, answers refill the pipeline at once, and the rest
    // waits out the delay. The same checks hold.
    if seed % 3 == 2 {
        cfg.protocol.batch_max_entries = 2 + (seed / 3 % 5) as usize;
        cfg.protocol.max_inflight_batches = 1 + (seed / 15 % 3) as usize;
    }
    // A fifth of the seeds flush only when they tick, a burst's rest waiting its 100 ms
    // linger whether quiet or not (the server until it flushed between ticks); the others
    // flush every 20 ms between ticks, as the server's driver does.
    if seed % 5 == 1 {
        cfg.flush = 0;
        cfg.protocol.burst_quiet = 100;
    }
    let membership = membership_script(seed, nodes);
    // A node that left and stopped leaves copies of its connection clients that no owner
    // verifies any more: those the SDKs' redo does not supersede expire with the lease
    // (README, Membership changes), shortened to 20 s in those seeds as in the per-client
    // ones.
    let left = membership.iter().any(|(_, f)| matches!(f, Fault::Leave(_)));
    if left {
        cfg.protocol.lease = 20 * SECOND;
    }
    let protocol = cfg.protocol.clone();
    let start = cfg.start_time;
    let mut w = World {
        sim: SimCluster::new(cfg),
        ip_clients: (0..40)
            .map(|i| IpClient {
                ip: format!("10.{}.{}.{}", 1 + i / 200, (i / 20) % 10, i % 250),
                port: 8000 + (i as u16 % 7),
                services: BTreeMap::new(),
                deleted: BTreeSet::new(),
                beating: true,
                next_beat: start + rng.below(5 * SECOND),
                entry: rng.below(nodes as u64) as usize,
            })
            .collect(),
        conn_clients: (0..20)
            .map(|i| {
                let ip = format!("172.16.0.{}", i + 1);
                let port = 40_000 + i as u16;
                let node = rng.below(nodes as u64) as usize;
                ConnClient {
                    incarnation: start,
                    id: ClientId::connection(start, &ip, port),
                    ip,
                    port,
                    node,
                    old_ids: Vec::new(),
                    services: BTreeMap::new(),
                    deleted: BTreeSet::new(),
                    closed: false,
                    needs_redo: false,
                }
            })
            .collect(),
        services: (0..8).map(|i| format!("svc-{i}")).collect(),
        rng,
        acked: 0,
        version: 0,
    };
    let mut script = fault_script(&mut w.rng, nodes);
    script.extend(membership);
    script.sort_by_key(|(t, _)| *t);
    let mut outcome = Outcome {
        per_client,
        faults: script
            .iter()
            .map(|(t, f)| format!("{}s:{f:?}", (t) / SECOND))
            .collect(),
        ..Outcome::default()
    };
    if std::env::var("DISTRO_SIM_SEED").is_ok() {
        println!("nodes {nodes}, faults {:?}", outcome.faults);
    }
    let mut script = script.into_iter().peekable();
    // Faults and client activity.
    let mut t = start;
    while t < start + FAULTS_END {
        while let Some((at, _)) = script.peek() {
            if start + *at > t {
                break;
            }
            let (_, f) = script.next().expect("peeked");
            match f {
                Fault::Crash(n) => w.sim.crash(n),
                // A node that left stays stopped.
                Fault::Restart(n) if w.sim.listed().contains(&n) => w.sim.restart(n),
                Fault::Restart(_) => {}
                Fault::Isolate(n) => w.sim.isolate(n),
                Fault::Heal(n) => w.sim.heal(n),
                Fault::Net(net) => w.sim.set_net(net),
                Fault::Join => {
                    let j = w.sim.add_node();
                    let mut list = w.sim.listed().to_vec();
                    list.push(j);
                    w.sim.set_listed(&list, |_| true);
                    w.sim.restart(j);
                }
                Fault::Leave(n) => {
                    let list: Vec<usize> =
                        w.sim.listed().iter().copied().filter(|&m| m != n).collect();
                    w.sim.set_listed(&list, |_| true);
                }
                Fault::Stop(n) => w.sim.crash(n),
            }
        }
        for _ in 0..3 {
            w.client_action(true);
        }
        w.client_upkeep();
        t += 100;
        w.sim.run_until(t);
    }
    // Faults stop: everything up, healed, perfect network. Clients keep heart-beating.
    for n in w.sim.listed().to_vec() {
        w.sim.restart(n);
    }
    for n in 0..w.sim.len() {
        w.sim.heal(n);
    }
    w.sim.set_net(NetConfig::default());
    let faults_end = t;
    let mut converged_at = None;
    let mut gone = BTreeSet::new();
    while t < faults_end + SETTLE {
        w.client_upkeep();
        t += 100;
        w.sim.run_until(t);
        if let Some(e) = check_no_return(&w, &mut gone) {
            outcome.transient_returns += 1;
            if outcome.first_return.is_none() {
                outcome.first_return = Some(format!("{} ms after the faults: {e}", t - faults_end));
            }
        }
        if converged_at.is_none() && w.sim.converged() {
            converged_at = Some(t);
        }
        if converged_at.is_none()
            && std::env::var("DISTRO_SIM_TRACE").is_ok()
            && (t - faults_end).is_multiple_of(SECOND)
        {
            println!("t+{} ms:\n{}", t - faults_end, w.sim.differences());
        }
    }
    outcome.virtual_ms = t - start;
    outcome.acked = w.acked;
    let stats = w.sim.stats();
    outcome.messages = stats.requests;
    outcome.lost = stats.lost;
    outcome.snapshot_loads = stats.snapshot_loads;
    outcome.shared_batches = (0..nodes)
        .filter_map(|i| w.sim.node(i))
        .map(|n| n.stats().sync_batches_shared)
        .sum();

    // 1. Convergence, within the bound.
    let Some(at) = converged_at else {
        return Err(format!("never converged:\n{}", w.sim.differences()));
    };
    outcome.convergence_ms = at - faults_end;
    let mut bound = protocol.sync_delay
        + protocol.verify_interval
        + protocol.sync_retry_delay
        + protocol.probe_interval
        + 2 * SECOND; // snapshot load of a restarted node and message delays
    if per_client || left {
        // The orphan's lease, the sweep that notices, and self-preservation lifting once
        // the orphan's owner is seen UP again.
        bound = bound.max(
            protocol.lease
                + protocol.verify_interval
                + 2 * protocol.health_check_interval
                + protocol.probe_interval
                + 2 * SECOND,
        );
    }
    if outcome.convergence_ms > bound {
        return Err(format!(
            "converged {} ms after the faults stopped, bound {bound} ms",
            outcome.convergence_ms
        ));
    }
    if !w.sim.converged() {
        return Err(format!(
            "diverged again after converging:\n{}",
            w.sim.differences()
        ));
    }
    let alive = w.sim.alive();
    // 2. No acknowledged registration of a live client is lost; 3. nothing comes back.
    for &n in &alive {
        let node = w.sim.node(n).expect("alive");
        let reg = node.registry();
        for c in &w.ip_clients {
            let held = reg.get(c.id().as_str());
            if !c.beating {
                if let Some(h) = held {
                    return Err(format!(
                        "node {n}: expired client {} came back: {h:?}",
                        c.id()
                    ));
                }
                continue;
            }
            for (svc, v) in &c.services {
                let found = held.as_ref().and_then(|h| {
                    h.publications()
                        .iter()
                        .find(|p| p.service.name().as_str() == svc)
                        .map(|p| p.publication().clone())
                });
                if found.as_deref().and_then(version_of) != Some(*v) {
                    return Err(format!(
                        "node {n}: client {} lost acknowledged registration {svc} v{v}: holds {held:?}",
                        c.id()
                    ));
                }
            }
            for svc in c.deleted.iter().filter(|s| !c.services.contains_key(*s)) {
                if held.as_ref().is_some_and(|h| {
                    h.publications()
                        .iter()
                        .any(|p| p.service.name().as_str() == svc)
                }) {
                    return Err(format!(
                        "node {n}: client {} deregistered {svc} but it came back",
                        c.id()
                    ));
                }
            }
        }
        for c in &w.conn_clients {
            for old in &c.old_ids {
                if reg.get(old.as_str()).is_some() {
                    return Err(format!(
                        "node {n}: connection client {old} of a dead connection came back"
                    ));
                }
            }
            let held = reg.get(c.id.as_str());
            if c.closed {
                if held.is_some() {
                    return Err(format!(
                        "node {n}: closed connection client {} came back",
                        c.id
                    ));
                }
                continue;
            }
            for (svc, v) in &c.services {
                let found = held.as_ref().and_then(|h| {
                    h.publications()
                        .iter()
                        .find(|p| p.service.name().as_str() == svc)
                        .map(|p| p.publication().clone())
                });
                if found.as_deref().and_then(version_of) != Some(*v) {
                    return Err(format!(
                        "node {n}: connection client {} lost {svc} v{v}: holds {held:?}",
                        c.id
                    ));
                }
            }
            for svc in c.deleted.iter().filter(|s| !c.services.contains_key(*s)) {
                if held.as_ref().is_some_and(|h| {
                    h.publications()
                        .iter()
                        .any(|p| p.service.name().as_str() == svc)
                }) {
                    return Err(format!(
                        "node {n}: client {} deregistered {svc} but it came back",
                        c.id
                    ));
                }
            }
        }
    }
    // 4. Exactly one owner per ip:port client, the same on every node, and alive.
    for c in &w.ip_clients {
        let key = format!("{}:{}", c.ip, c.port);
        // By address: member ids are local to each node.
        let addr = |n: usize| {
            let node = w.sim.node(n).expect("alive");
            node.members().addr(node.me()).to_string()
        };
        let owners: BTreeSet<String> = alive
            .iter()
            .map(|&n| {
                let node = w.sim.node(n).expect("alive");
                match node.route(&key) {
                    Route::Local => addr(n),
                    Route::Remote(m) => node.members().addr(m).to_string(),
                }
            })
            .collect();
        let alive_addrs: BTreeSet<String> = alive.iter().map(|&n| addr(n)).collect();
        if owners.len() != 1 || !alive_addrs.contains(owners.iter().next().expect("one")) {
            return Err(format!("client {key} has owners {owners:?}"));
        }
    }
    Ok(outcome)
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("DISTRO_SIM_SEED") {
        return vec![s.parse().expect("DISTRO_SIM_SEED must be a number")];
    }
    let n: u64 = std::env::var("DISTRO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    (1..=n).collect()
}

#[test]
fn seed_sweep_converges_without_losing_or_resurrecting_registrations() {
    let seeds = seeds();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunks: Vec<Vec<u64>> = (0..workers)
        .map(|w| seeds.iter().copied().skip(w).step_by(workers).collect())
        .collect();
    let results: Vec<(u64, Result<Outcome, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|seed| (seed, run_seed(seed)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    let mut conv: Vec<Millis> = Vec::new();
    let mut conv_per_client: Vec<Millis> = Vec::new();
    let mut virtual_ms = 0;
    let (mut acked, mut messages, mut lost, mut loads, mut shared) = (0, 0, 0, 0, 0);
    let mut returns: Vec<(u64, u64, String)> = Vec::new();
    for (seed, r) in &results {
        match r {
            Ok(o) => {
                if o.per_client {
                    conv_per_client.push(o.convergence_ms);
                } else {
                    conv.push(o.convergence_ms);
                }
                virtual_ms += o.virtual_ms;
                acked += o.acked;
                messages += o.messages;
                lost += o.lost;
                loads += o.snapshot_loads;
                shared += o.shared_batches;
                if let Some(first) = &o.first_return {
                    returns.push((*seed, o.transient_returns, first.clone()));
                }
                if seeds.len() == 1 {
                    println!("seed {seed}: faults {:?}", o.faults);
                }
            }
            Err(e) if seeds.len() == 1 => failures.push(format!("seed {seed}: {e}")),
            Err(e) => failures.push(format!(
                "seed {seed} failed (replay: DISTRO_SIM_SEED={seed} cargo test -p distro-core --test simulation -- --nocapture):\n{e}"
            )),
        }
    }
    let summary = |v: &mut Vec<Millis>| {
        v.sort_unstable();
        let pct = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        format!(
            "{} seeds: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            v.len(),
            pct(0.5),
            pct(0.9),
            pct(0.99),
            v.last().copied().unwrap_or(0)
        )
    };
    println!(
        "simulation: {} seeds, {:.0} s virtual time, {acked} acknowledged client writes, {messages} peer requests ({lost} lost), {loads} snapshot loads, {shared} sync batches shared by two peers' takes",
        results.len(),
        virtual_ms as f64 / 1000.0,
    );
    // The small-batch seeds (a third) send full batches early, which other peers with a
    // batch's worth pending follow: the sweep covers that path under its faults.
    assert!(
        seeds.len() < 20 || shared > 0,
        "no seed sent a batch taken for two peers at once"
    );
    println!(
        "convergence after the faults stop, digest verify: {}",
        summary(&mut conv)
    );
    println!(
        "convergence after the faults stop, per-client verify (lease 20 s): {}",
        summary(&mut conv_per_client)
    );
    println!(
        "transient returns of deregistered services: {} seeds of {}",
        returns.len(),
        results.len()
    );
    for (seed, n, first) in returns.iter().take(5) {
        println!("  seed {seed}: {n} steps, first {first}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

/// A seed is a complete description of a run: running it twice gives the same messages,
/// the same acknowledged writes and the same convergence time (std's per-instance hasher
/// keys differ between the two runs, so any dependence on hash order would show).
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 4, 17] {
        let a = run_seed(seed).expect("seed passes");
        let b = run_seed(seed).expect("seed passes");
        assert_eq!(
            (
                a.acked,
                a.messages,
                a.lost,
                a.snapshot_loads,
                a.convergence_ms
            ),
            (
                b.acked,
                b.messages,
                b.lost,
                b.snapshot_loads,
                b.convergence_ms
            ),
            "seed {seed} is not deterministic"
        );
    }
}
