//! `SimCluster`: N nodes on a virtual clock and a virtual network, driven by one seed.
//!
//! The simulator plays the runtime's part for real [`Node`]s: it calls [`Node::tick`] every
//! `tick` milliseconds of virtual time, carries every [`Command`] over a network that can
//! lose, delay, duplicate and reorder messages, delivers responses or timeouts, and streams
//! snapshots chunk by chunk. Faults are scripted by the caller: crash and restart a node
//! (a restarted node starts empty, with a new incarnation, and loads a snapshot), isolate
//! it from its peers (a partition; clients can still reach it), change the network's loss
//! and delay. Every random choice comes from one seeded generator, so a run is a pure
//! function of its seed and its script: a failing seed replays exactly.
//!
//! Client operations follow the server's rules: an ip:port write enters at any node, is
//! routed to its owner (one hop; the owner must agree it is the owner, as a forwarded
//! write is never forwarded again) and is acknowledged only if the owner applied it.
//! Client traffic is not subject to message loss; a client that cannot reach the owner
//! simply gets no acknowledgement.

use crate::config::Config;
use crate::member::{MemberId, MemberList};
use crate::message::{Command, PeerRequest, PeerResponse, SendError, SnapshotCursor};
use crate::model::{ClientId, InstanceSpec, ServiceSpec};
use crate::node::{BeatResult, Node, Route};
use crate::registry::{WriteError, WriteResult};
use crate::time::Millis;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// The simulator's seeded generator ([`crate::rng::SplitMix64`]).
pub type SimRng = crate::rng::SplitMix64;

/// Behaviour of the virtual network between nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetConfig {
    /// Probability that a message (request, response or snapshot chunk) is lost.
    pub loss: f64,
    /// Probability that a request is delivered twice.
    pub duplicate: f64,
    /// Smallest one-way delay.
    pub min_delay: Millis,
    /// Largest one-way delay (random delays reorder messages).
    pub max_delay: Millis,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: 1,
            max_delay: 5,
        }
    }
}

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Protocol configuration of every node.
    pub protocol: Config,
    /// Network behaviour.
    pub net: NetConfig,
    /// Period of [`Node::tick`] calls (Nacos's delay engine ticks every 100 ms).
    pub tick: Millis,
    /// Virtual wall-clock time at the start (epoch ms; revisions derive from it).
    pub start_time: Millis,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            seed: 1,
            protocol: Config {
                shards: 64,
                snapshot_chunk_bytes: 4096,
                ..Config::default()
            },
            net: NetConfig::default(),
            tick: 100,
            start_time: 1_700_000_000_000,
        }
    }
}

/// Message counters of a simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Requests sent.
    pub requests: u64,
    /// Messages lost (random loss or partition or dead node).
    pub lost: u64,
    /// Requests duplicated.
    pub duplicated: u64,
    /// Requests that ended in a timeout.
    pub timeouts: u64,
    /// Snapshot chunks delivered.
    pub snapshot_chunks: u64,
    /// Snapshot loads completed.
    pub snapshot_loads: u64,
}

enum Event {
    Deliver {
        req: u64,
    },
    Respond {
        req: u64,
        response: PeerResponse,
    },
    Timeout {
        req: u64,
    },
    Pull {
        load: u64,
        cursor: SnapshotCursor,
    },
    Chunk {
        load: u64,
        chunk: crate::message::SnapshotChunk,
    },
    LoadTimeout {
        load: u64,
        chunk_no: u64,
    },
}

struct Outstanding {
    from: usize,
    to: usize,
    generation: u64,
    request: PeerRequest,
}

struct Load {
    loader: usize,
    source: usize,
    generation: u64,
    chunks: u64,
    done: bool,
}

/// A simulated cluster. See the module documentation.
pub struct SimCluster {
    cfg: SimConfig,
    rng: SimRng,
    now: Millis,
    addrs: Vec<String>,
    nodes: Vec<Option<Node>>,
    generation: Vec<u64>,
    isolated: Vec<bool>,
    events: BinaryHeap<Reverse<(Millis, u64)>>,
    payloads: HashMap<u64, Event>,
    seq: u64,
    outstanding: HashMap<u64, Outstanding>,
    loads: HashMap<u64, Load>,
    next_tick: Millis,
    stats: SimStats,
}

impl SimCluster {
    /// Starts `cfg.nodes` nodes, all up and connected.
    pub fn new(mut cfg: SimConfig) -> Self {
        // Fix the map hasher too, so iteration orders (and with them message orders)
        // depend on the seed only.
        cfg.protocol.hash_seed.get_or_insert(cfg.seed);
        let addrs: Vec<String> = (0..cfg.nodes)
            .map(|i| format!("10.0.0.{}:8848", i + 1))
            .collect();
        let mut sim = Self {
            rng: SimRng::new(cfg.seed),
            now: cfg.start_time,
            nodes: (0..cfg.nodes).map(|_| None).collect(),
            generation: vec![0; cfg.nodes],
            isolated: vec![false; cfg.nodes],
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            seq: 0,
            outstanding: HashMap::new(),
            loads: HashMap::new(),
            next_tick: cfg.start_time,
            stats: SimStats::default(),
            addrs,
            cfg,
        };
        for i in 0..sim.cfg.nodes {
            sim.start_node(i);
        }
        sim
    }

    fn start_node(&mut self, i: usize) {
        let members =
            MemberList::new(&self.addrs[i], &self.addrs).expect("generated member list is valid");
        let node = Node::new(self.cfg.protocol.clone(), members, self.now)
            .expect("simulation config is valid");
        self.generation[i] += 1;
        self.nodes[i] = Some(node);
    }

    /// Current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Number of nodes (alive or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`, if alive.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref()
    }

    /// Indices of the alive nodes.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// Message counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// The random generator (for workloads that must share the seed).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Changes the network's behaviour.
    pub fn set_net(&mut self, net: NetConfig) {
        self.cfg.net = net;
    }

    /// Kills node `i`: its state is gone, messages to it are lost.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.generation[i] += 1;
    }

    /// Starts node `i` again, empty, with a new incarnation; it loads a snapshot.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].is_none() {
            self.start_node(i);
        }
    }

    /// Cuts node `i`'s peer traffic both ways (clients still reach it).
    pub fn isolate(&mut self, i: usize) {
        self.isolated[i] = true;
    }

    /// Ends node `i`'s isolation.
    pub fn heal(&mut self, i: usize) {
        self.isolated[i] = false;
    }

    /// Whether node `i` is isolated.
    pub fn is_isolated(&self, i: usize) -> bool {
        self.isolated[i]
    }

    fn link_ok(&self, a: usize, b: usize) -> bool {
        self.nodes[a].is_some() && self.nodes[b].is_some() && !self.isolated[a] && !self.isolated[b]
    }

    fn schedule(&mut self, at: Millis, e: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, e);
    }

    fn delay(&mut self) -> Millis {
        let n = self.cfg.net;
        self.rng.range(n.min_delay, n.max_delay.max(n.min_delay))
    }

    fn execute(&mut self, from: usize, cmds: Vec<Command>) {
        for c in cmds {
            match c {
                Command::Send { to, request } => {
                    let to = to.index();
                    self.seq += 1;
                    let id = self.seq;
                    self.stats.requests += 1;
                    self.outstanding.insert(
                        id,
                        Outstanding {
                            from,
                            to,
                            generation: self.generation[from],
                            request,
                        },
                    );
                    let timeout = self.now + self.cfg.protocol.peer_timeout;
                    self.schedule(timeout, Event::Timeout { req: id });
                    if self.rng.chance(self.cfg.net.loss) {
                        self.stats.lost += 1;
                        continue;
                    }
                    let d = self.delay();
                    self.schedule(self.now + d, Event::Deliver { req: id });
                    if self.rng.chance(self.cfg.net.duplicate) {
                        self.stats.duplicated += 1;
                        let d = self.delay();
                        self.schedule(self.now + d, Event::Deliver { req: id });
                    }
                }
                Command::LoadSnapshot { from: source } => {
                    self.seq += 1;
                    let load = self.seq;
                    self.loads.insert(
                        load,
                        Load {
                            loader: from,
                            source: source.index(),
                            generation: self.generation[from],
                            chunks: 0,
                            done: false,
                        },
                    );
                    self.send_pull(load, SnapshotCursor::default());
                }
            }
        }
    }

    fn send_pull(&mut self, load: u64, cursor: SnapshotCursor) {
        let chunk_no = self.loads[&load].chunks;
        let timeout = self.now + self.cfg.protocol.peer_timeout;
        self.schedule(timeout, Event::LoadTimeout { load, chunk_no });
        if self.rng.chance(self.cfg.net.loss) {
            self.stats.lost += 1;
            return;
        }
        let d = self.delay();
        self.schedule(self.now + d, Event::Pull { load, cursor });
    }

    fn finish_load(&mut self, load: u64, ok: bool) {
        let Some(l) = self.loads.get_mut(&load) else {
            return;
        };
        if l.done {
            return;
        }
        l.done = true;
        let (loader, source, generation) = (l.loader, l.source, l.generation);
        if self.generation[loader] != generation {
            return;
        }
        if ok {
            self.stats.snapshot_loads += 1;
        }
        let now = self.now;
        if let Some(n) = &self.nodes[loader] {
            n.load_finished(MemberId(source as u16), ok, now);
        }
    }

    fn process(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Deliver { req } => {
                let Some(o) = self.outstanding.get(&req) else {
                    return;
                };
                let (from, to) = (o.from, o.to);
                if !self.link_ok(from, to) {
                    self.stats.lost += 1;
                    return;
                }
                let request = o.request.clone();
                let node = self.nodes[to]
                    .as_ref()
                    .expect("link_ok checked the node is alive");
                let response = node.handle_request(MemberId(from as u16), request, now);
                if self.rng.chance(self.cfg.net.loss) {
                    self.stats.lost += 1;
                    return;
                }
                let d = self.delay();
                self.schedule(now + d, Event::Respond { req, response });
            }
            Event::Respond { req, response } => {
                let Some(o) = self.outstanding.get(&req) else {
                    return;
                };
                if !self.link_ok(o.from, o.to) || self.generation[o.from] != o.generation {
                    self.stats.lost += 1;
                    return;
                }
                let o = self.outstanding.remove(&req).expect("present above");
                let node = self.nodes[o.from]
                    .as_ref()
                    .expect("link_ok checked the node is alive");
                let cmds =
                    node.handle_response(MemberId(o.to as u16), o.request, Ok(response), now);
                self.execute(o.from, cmds);
            }
            Event::Timeout { req } => {
                let Some(o) = self.outstanding.remove(&req) else {
                    return;
                };
                if self.generation[o.from] != o.generation {
                    return;
                }
                self.stats.timeouts += 1;
                if let Some(node) = self.nodes[o.from].as_ref() {
                    let cmds = node.handle_response(
                        MemberId(o.to as u16),
                        o.request,
                        Err(SendError::Unreachable),
                        now,
                    );
                    self.execute(o.from, cmds);
                }
            }
            Event::Pull { load, cursor } => {
                let Some(l) = self.loads.get(&load) else {
                    return;
                };
                if l.done || !self.link_ok(l.loader, l.source) {
                    self.stats.lost += 1;
                    return;
                }
                let chunk = self.nodes[l.source]
                    .as_ref()
                    .expect("link_ok checked the node is alive")
                    .snapshot_chunk(cursor);
                if self.rng.chance(self.cfg.net.loss) {
                    self.stats.lost += 1;
                    return;
                }
                let d = self.delay();
                self.schedule(now + d, Event::Chunk { load, chunk });
            }
            Event::Chunk { load, chunk } => {
                let Some(l) = self.loads.get_mut(&load) else {
                    return;
                };
                if l.done || self.generation[l.loader] != l.generation {
                    return;
                }
                let (loader, source) = (l.loader, l.source);
                if !self.link_ok(loader, source) {
                    // Lost: the pending LoadTimeout for this chunk ends the load.
                    self.stats.lost += 1;
                    return;
                }
                if let Some(l) = self.loads.get_mut(&load) {
                    l.chunks += 1;
                }
                self.stats.snapshot_chunks += 1;
                let node = self.nodes[loader]
                    .as_ref()
                    .expect("link_ok checked the node is alive");
                node.load_chunk(MemberId(source as u16), &chunk.records, now);
                match chunk.next {
                    Some(cursor) => self.send_pull(load, cursor),
                    None => self.finish_load(load, true),
                }
            }
            Event::LoadTimeout { load, chunk_no } => {
                let stalled = self
                    .loads
                    .get(&load)
                    .is_some_and(|l| !l.done && l.chunks == chunk_no);
                if stalled {
                    self.stats.timeouts += 1;
                    self.finish_load(load, false);
                }
            }
        }
    }

    fn tick_nodes(&mut self) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            let cmds = match &self.nodes[i] {
                Some(n) => n.tick(now),
                None => continue,
            };
            self.execute(i, cmds);
        }
    }

    /// Runs until virtual time `t`, processing events and ticks in time order.
    pub fn run_until(&mut self, t: Millis) {
        loop {
            let next_event = self.events.peek().map(|Reverse((at, _))| *at);
            let next = match next_event {
                Some(at) if at < self.next_tick => at,
                _ => self.next_tick,
            };
            if next > t {
                self.now = t;
                return;
            }
            self.now = next;
            if next_event == Some(next) && next < self.next_tick {
                let Reverse((_, seq)) = self.events.pop().expect("peeked above");
                let e = self
                    .payloads
                    .remove(&seq)
                    .expect("every queued event has a payload");
                self.process(e);
            } else {
                self.next_tick = next + self.cfg.tick;
                self.tick_nodes();
            }
        }
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: Millis) {
        let t = self.now + ms;
        self.run_until(t);
    }

    // ----- clients ---------------------------------------------------------------------

    /// The node that would apply an ip:port write entering at `entry`: the entry itself
    /// or the owner it routes to, if reachable and agreeing that it is the owner.
    fn owner_for(&self, entry: usize, key: &str) -> Option<usize> {
        let e = self.nodes[entry].as_ref()?;
        match e.route(key) {
            Route::Local => Some(entry),
            Route::Remote(o) => {
                let o = o.index();
                if !self.link_ok(entry, o) {
                    return None;
                }
                match self.nodes[o].as_ref()?.route(key) {
                    Route::Local => Some(o),
                    Route::Remote(_) => None,
                }
            }
        }
    }

    /// Registers `spec` for its ip:port client in `service`, entering at node `entry`.
    /// Returns the owner's result if the write was acknowledged.
    pub fn register_ip_port_spec(
        &mut self,
        entry: usize,
        service: &str,
        spec: &InstanceSpec,
    ) -> Option<Result<WriteResult, WriteError>> {
        let key = format!("{}:{}", spec.ip, spec.port);
        let owner = self.owner_for(entry, &key)?;
        let id = ClientId::ip_port(&spec.ip, spec.port as u16);
        let now = self.now;
        let node = self.nodes[owner].as_ref()?;
        Some(node.register(&id, &ServiceSpec::new("", "", service), spec, now))
    }

    /// Registers a default instance `ip:port` in `service` through node `entry`; returns
    /// the client id if acknowledged.
    pub fn register_ip_port(
        &mut self,
        entry: usize,
        service: &str,
        ip: &str,
        port: u16,
    ) -> Option<ClientId> {
        let spec = InstanceSpec::new(ip, port);
        match self.register_ip_port_spec(entry, service, &spec)? {
            Ok(_) => Some(ClientId::ip_port(ip, port)),
            Err(_) => None,
        }
    }

    /// Deregisters ip:port from `service` through node `entry`; true if acknowledged.
    pub fn deregister_ip_port(&mut self, entry: usize, service: &str, ip: &str, port: u16) -> bool {
        let key = format!("{ip}:{port}");
        let Some(owner) = self.owner_for(entry, &key) else {
            return false;
        };
        let now = self.now;
        let id = ClientId::ip_port(ip, port);
        self.nodes[owner].as_ref().is_some_and(|n| {
            n.deregister(&id, &ServiceSpec::new("", "", service), now)
                .is_ok()
        })
    }

    /// A heartbeat of ip:port for `service` through node `entry`, with the owner's current
    /// publication of that service (so a client can re-assert what it registered).
    pub fn beat_ip_port(
        &mut self,
        entry: usize,
        service: &str,
        ip: &str,
        port: u16,
    ) -> Option<(
        BeatResult,
        Option<std::sync::Arc<crate::model::Publication>>,
    )> {
        let key = format!("{ip}:{port}");
        let owner = self.owner_for(entry, &key)?;
        let now = self.now;
        let id = ClientId::ip_port(ip, port);
        let node = self.nodes[owner].as_ref()?;
        let spec = ServiceSpec::new("", "", service);
        let r = node.beat(&id, &spec, now).ok()?;
        let current = node.registry().get(id.as_str()).and_then(|c| {
            c.publications()
                .iter()
                .find(|p| p.service.name().as_str() == service)
                .cloned()
        });
        Some((r, current))
    }

    /// Registers for connection client `client` held by node `node`.
    pub fn register_connection(
        &mut self,
        node: usize,
        client: &ClientId,
        service: &str,
        spec: &InstanceSpec,
    ) -> Option<Result<WriteResult, WriteError>> {
        let now = self.now;
        let n = self.nodes[node].as_ref()?;
        Some(n.register(client, &ServiceSpec::new("", "", service), spec, now))
    }

    /// Deregisters `service` for connection client `client` held by node `node`.
    pub fn deregister_connection(&mut self, node: usize, client: &ClientId, service: &str) -> bool {
        let now = self.now;
        self.nodes[node].as_ref().is_some_and(|n| {
            n.deregister(client, &ServiceSpec::new("", "", service), now)
                .is_ok()
        })
    }

    /// Closes connection client `client` held by node `node`.
    pub fn close_connection(&mut self, node: usize, client: &ClientId) -> bool {
        let now = self.now;
        match self.nodes[node].as_ref() {
            Some(n) => {
                n.remove_client(client, now);
                true
            }
            None => false,
        }
    }

    // ----- checks ----------------------------------------------------------------------

    /// Every client `(id, revision)` held by node `i`, sorted.
    pub fn client_set(&self, i: usize) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        if let Some(n) = &self.nodes[i] {
            n.registry()
                .for_each(|c| v.push((c.id().as_str().to_string(), c.revision().0)));
        }
        v.sort();
        v
    }

    /// Whether every alive node finished loading and holds the same clients at the same
    /// revisions (compared through the sum of all owners' digests, then exactly).
    pub fn converged(&self) -> bool {
        let alive = self.alive();
        if alive
            .iter()
            .any(|&i| !self.nodes[i].as_ref().is_some_and(|n| n.is_loaded()))
        {
            return false;
        }
        let total = |i: usize| {
            let n = self.nodes[i].as_ref().expect("alive");
            let mut d = crate::digest::ShardDigest::default();
            for m in n.members().ids() {
                for s in n.registry().owner_digests(m) {
                    d.add(s);
                }
            }
            d
        };
        let Some(&first) = alive.first() else {
            return true;
        };
        let t0 = total(first);
        if alive.iter().any(|&i| total(i) != t0) {
            return false;
        }
        let s0 = self.client_set(first);
        alive.iter().all(|&i| self.client_set(i) == s0)
    }

    /// A description of how the alive nodes differ (for failure messages).
    pub fn differences(&self) -> String {
        let alive = self.alive();
        let mut all: BTreeMap<String, Vec<Option<u64>>> = BTreeMap::new();
        for (k, &i) in alive.iter().enumerate() {
            for (id, rev) in self.client_set(i) {
                all.entry(id).or_insert_with(|| vec![None; alive.len()])[k] = Some(rev);
            }
        }
        let mut out = String::new();
        for (id, revs) in all {
            if revs.iter().any(|r| *r != revs[0]) {
                out.push_str(&format!("  {id}: "));
                for (k, r) in revs.iter().enumerate() {
                    let n = self.nodes[alive[k]].as_ref().expect("alive");
                    let owner = n.registry().get(&id).map(|c| c.owner().0);
                    let routed = ClientId::parse(&id)
                        .ok()
                        .and_then(|c| c.routing_key().map(|k| n.owner_of(k).0));
                    out.push_str(&format!(
                        "node{}={} (owner {owner:?}, routed {routed:?}, tombstone {:?}) ",
                        alive[k],
                        r.map_or("-".into(), |r| r.to_string()),
                        n.registry().tombstone(&id).map(|t| t.0)
                    ));
                }
                out.push('\n');
            }
        }
        for &i in &alive {
            let n = self.nodes[i].as_ref().expect("alive");
            out.push_str(&format!(
                "  node{i}: loaded={} isolated={} members={:?} pending={:?}\n",
                n.is_loaded(),
                self.isolated[i],
                n.member_states()
                    .iter()
                    .map(|(_, s)| s.as_str())
                    .collect::<Vec<_>>(),
                n.members()
                    .peers()
                    .map(|p| n.pending_sync(p))
                    .collect::<Vec<_>>()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .filter(|(ip, port)| {
                sim.node(2).unwrap().route(&format!("{ip}:{port}")) == Route::Local
            })
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
            println!(
                "self_preservation_fraction {fraction}: node 0 kept {kept} of 40 after 10 min"
            );
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
            cfg.probe_interval * u64::from(cfg.probe_down_after + 2)
                + 2 * cfg.health_check_interval,
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
        let mut sim = SimCluster::new(SimConfig::default());
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
            "4 KiB chunks: many of them"
        );
        assert_eq!(held(&sim, 1, &ids), 20);
        assert!(sim.converged(), "{}", sim.differences());
        let repairs = node.stats().verify_repairs;
        sim.run_for(20_000);
        assert_eq!(sim.node(1).unwrap().stats().verify_repairs, repairs);
    }
}
