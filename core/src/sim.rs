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
//!
//! This file holds the configuration, the cluster with its faults, and the run loop that
//! interleaves ticks and network events in time order. `sim/network.rs` carries the
//! commands (requests, responses, timeouts, snapshot streams), `sim/client.rs` the client
//! operations, `sim/check.rs` the convergence checks the property sweep builds on.

use crate::config::Config;
use crate::member::{MemberId, MemberList};
use crate::message::Command;
use crate::node::Node;
use crate::time::Millis;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

mod check;
mod client;
mod network;
#[cfg(test)]
mod tests;

use network::{Event, Load, Outstanding};

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
    /// Period of [`Node::flush_syncs`] calls between ticks, as the server's driver makes
    /// them (`sync_flush`, 20 ms); 0: none (only the ticks flush).
    pub flush: Millis,
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
            flush: 20,
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
    /// Snapshot requests refused because the source had not loaded its own yet.
    pub snapshot_refusals: u64,
}

/// A simulated cluster. See the module documentation.
pub struct SimCluster {
    cfg: SimConfig,
    rng: SimRng,
    now: Millis,
    addrs: Vec<String>,
    /// The nodes (indices) the member list names: what a started node is given.
    listed: Vec<usize>,
    nodes: Vec<Option<Node>>,
    generation: Vec<u64>,
    isolated: Vec<bool>,
    /// Nodes that play a node of another build, whose verify digests differ from the
    /// others' for the same clients (see [`SimCluster::set_other_build`]).
    other_build: Vec<bool>,
    events: BinaryHeap<Reverse<(Millis, u64)>>,
    payloads: HashMap<u64, Event>,
    seq: u64,
    outstanding: HashMap<u64, Outstanding>,
    loads: HashMap<u64, Load>,
    next_tick: Millis,
    /// When the next flush between ticks is due (`Millis::MAX`: flushes off).
    next_flush: Millis,
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
            other_build: vec![false; cfg.nodes],
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            seq: 0,
            outstanding: HashMap::new(),
            loads: HashMap::new(),
            next_tick: cfg.start_time,
            next_flush: if cfg.flush == 0 {
                Millis::MAX
            } else {
                cfg.start_time + cfg.flush
            },
            stats: SimStats::default(),
            listed: (0..cfg.nodes).collect(),
            addrs,
            cfg,
        };
        for i in 0..sim.cfg.nodes {
            sim.start_node(i);
        }
        sim
    }

    fn start_node(&mut self, i: usize) {
        let listed = self.listed_addrs();
        let members =
            MemberList::new(&self.addrs[i], &listed).expect("generated member list is valid");
        let node = Node::new(self.cfg.protocol.clone(), members, self.now)
            .expect("simulation config is valid");
        self.generation[i] += 1;
        self.nodes[i] = Some(node);
    }

    /// The addresses of the listed nodes.
    fn listed_addrs(&self) -> Vec<String> {
        self.listed.iter().map(|&i| self.addrs[i].clone()).collect()
    }

    /// The index of the node that node `on` calls `id`.
    pub(super) fn node_of(&self, on: usize, id: MemberId) -> Option<usize> {
        let n = self.nodes[on].as_ref()?;
        let addr = n.members().addr(id).clone();
        self.addrs.iter().position(|a| a.as_str() == addr.as_str())
    }

    /// The id node `on` gives node `peer`, if `on` knows it (lists it, or did).
    pub(super) fn id_on(&self, on: usize, peer: usize) -> Option<MemberId> {
        self.nodes[on].as_ref()?.members().known(&self.addrs[peer])
    }

    /// Adds a node (not started, not listed) and returns its index: list it with
    /// [`SimCluster::set_listed`] and start it with [`SimCluster::restart`].
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        // Every other joiner's address sorts before the started nodes' ("10.0.0.15:8848"
        // before "10.0.0.1:8848"): it numbers every member differently from its peers
        // (ids are slots filled in address order), the others number them alike.
        self.addrs.push(if i.is_multiple_of(2) {
            format!("10.0.0.1{}:8848", i + 1)
        } else {
            format!("10.0.1.{}:8848", i + 1)
        });
        self.nodes.push(None);
        self.generation.push(0);
        self.isolated.push(false);
        self.other_build.push(false);
        i
    }

    /// Makes the member list name exactly `nodes`, and hands the new list to every alive
    /// node that `tell` accepts (the others keep theirs: they learn it later, by another
    /// call; a node the list leaves out learns that it is leaving). A node started
    /// afterwards is given this list.
    pub fn set_listed(&mut self, nodes: &[usize], tell: impl Fn(usize) -> bool) {
        self.listed = nodes.to_vec();
        let list = self.listed_addrs();
        let now = self.now;
        for i in 0..self.nodes.len() {
            if !tell(i) {
                continue;
            }
            if let Some(n) = &self.nodes[i] {
                n.set_members(&list, now)
                    .expect("generated member list is valid");
            }
        }
    }

    /// The nodes the member list names.
    pub fn listed(&self) -> &[usize] {
        &self.listed
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

    /// Makes node `i` play a node of another build whose digest term differs (as builds
    /// on either side of a change of the term do, see the README): every `VerifyDigests`
    /// between it and a node of this build differs in every shard that holds a client,
    /// as it would on the wire; between nodes of one kind they agree as before.
    pub fn set_other_build(&mut self, i: usize) {
        self.other_build[i] = true;
    }

    /// Whether node `i` is isolated.
    pub fn is_isolated(&self, i: usize) -> bool {
        self.isolated[i]
    }

    /// Calls `timer` (a tick, or a flush between ticks as the server's driver makes) on
    /// every running node at the current time and carries out its commands.
    fn on_every_node(&mut self, timer: fn(&Node, Millis) -> Vec<Command>) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            let cmds = match &self.nodes[i] {
                Some(n) => timer(n, now),
                None => continue,
            };
            self.execute(i, cmds);
        }
    }

    /// Runs until virtual time `t`, processing events, ticks and flushes in time order
    /// (at one instant: events, then a tick, then a flush).
    pub fn run_until(&mut self, t: Millis) {
        loop {
            let next_event = self.events.peek().map(|Reverse((at, _))| *at);
            let timer = self.next_tick.min(self.next_flush);
            let next = match next_event {
                Some(at) if at < timer => at,
                _ => timer,
            };
            if next > t {
                self.now = t;
                return;
            }
            self.now = next;
            if next_event == Some(next) && next < timer {
                let Reverse((_, seq)) = self.events.pop().expect("peeked above");
                let e = self
                    .payloads
                    .remove(&seq)
                    .expect("every queued event has a payload");
                self.process(e);
            } else if next == self.next_tick {
                self.next_tick = next + self.cfg.tick;
                self.on_every_node(Node::tick);
            } else {
                self.next_flush = next + self.cfg.flush;
                self.on_every_node(Node::flush_syncs);
            }
        }
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: Millis) {
        let t = self.now + ms;
        self.run_until(t);
    }
}
