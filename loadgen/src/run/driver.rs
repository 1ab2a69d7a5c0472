//! Lanes: the tasks that drive the simulated clients.
//!
//! The clients of a run are split into contiguous slices, one per lane (one Tokio task
//! each). A lane keeps two bytes per client (its current node and its state) and derives
//! everything else from the population. Its *sources* produce items at their intended
//! times: the registration cursor (open model at `--rate`, or as fast as the in-flight
//! limit allows), the heartbeat cursor (client `k` of `n` beats at `start + r·period +
//! k·period/n`), and, once the hold phase starts, queries and churn at fixed rates.
//! Heartbeats wait in a queue of their own per node (up to three quarters of a queue's
//! worth), sent before anything else, so under overload the clients already registered
//! stay alive and new ones register more slowly (an overloaded run slows down instead of
//! losing the clients it has): a client's heartbeat never waits behind other clients'
//! registrations, as a real client's keep-alive does not. A heartbeat the protocol answers
//! without a request ([`Protocol::local_beat`]: etcd's shared leases) is answered as it
//! falls due and takes no room. Other items (retries, registrations, queries, churn) wait in
//! one queue per node; batches of at most `batch` items (heartbeats first) are sent within
//! a per-node window of items in flight, so a stalled node holds back only its own clients
//! (their corrected latency shows it).
//!
//! **Backpressure** (AIMD, per node): the window starts at `batch × concurrency` items.
//! A batch that signals overload (an overload error such as a timeout, `UNAVAILABLE`,
//! `RESOURCE_EXHAUSTED` or `503`, or a response slower than `congestion_latency`) halves
//! the window, at most once per round trip (only batches sent after the last cut can cut
//! again), down to `min_window`; every batch that completes cleanly grows it by
//! `batch × items / window` (one batch per window's worth of acknowledged items), up to
//! the start value. Retries go through the same window, so they cannot pile onto an
//! overloaded node. A queue is bounded: when full, sources stop producing and their
//! items fall behind schedule (late), and heartbeats or queries more than `max_lag`
//! behind are dropped (counted). A failed item moves its client to the next node
//! (round-robin, as the Nacos client does) and is retried after a backoff, keeping its
//! intended time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::measure::op::Op;
use crate::measure::recorder::{Recorder, Sample};
use crate::population::{Population, Rng};
use crate::protocol::{Batch, Item, Kind, Outcome, Protocol};
use crate::run::timer::LaneTimer;
use window::Window;

mod window;

/// The phase of a run, broadcast to every task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Registering the clients.
    Register,
    /// Every client is registered (or failed for good); holding since the instant.
    Hold(Instant),
    /// Stop producing, finish what is in flight.
    Stop,
}

/// State shared by the lanes and the run.
#[derive(Debug)]
pub struct Shared {
    /// The recorder, once the warm-up is over (samples before are not recorded).
    pub meter: OnceLock<Recorder>,
    /// Initial registrations not yet resolved.
    pub reg_remaining: AtomicU64,
    /// Clients registered now.
    pub registered: AtomicI64,
    /// Items retried on another node.
    pub failovers: AtomicU64,
    /// Times a lane halved its window to a node (backpressure).
    pub window_cuts: AtomicU64,
    /// Set once the run has checked the nodes after the stop: until then the lanes keep
    /// their clients alive with heartbeats (unmeasured), so that no client expires while
    /// the run waits for its last probes and for the nodes to agree.
    pub finished: AtomicBool,
    /// Number of nodes.
    pub nodes: usize,
    /// The first client of this run's slice.
    pub first_client: u32,
    /// Each client's state (see [`ClientView::of`]), indexed from `first_client`; written
    /// by its lane only.
    pub states: Box<[AtomicU8]>,
    /// Failed requests by code since the start (warm-up included), for the fault windows.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Nodes that left the cluster (`--chaos leave`): no request goes to them any more.
    left: Box<[AtomicBool]>,
}

impl Shared {
    /// Shared state for the clients `slice` on `nodes` nodes.
    pub fn new(slice: Range<u32>, nodes: usize) -> Self {
        let clients = slice.end.saturating_sub(slice.start);
        Self {
            meter: OnceLock::new(),
            reg_remaining: AtomicU64::new(u64::from(clients)),
            registered: AtomicI64::new(0),
            failovers: AtomicU64::new(0),
            window_cuts: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            nodes,
            first_client: slice.start,
            states: (0..clients).map(|_| AtomicU8::new(NEW)).collect(),
            errors: Mutex::new(BTreeMap::new()),
            left: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Node `node` left the cluster: its clients move to the next node that has not, and
    /// the probes no longer expect to see it (a node beyond the targets is ignored).
    pub fn leave(&self, node: usize) {
        if let Some(l) = self.left.get(node) {
            l.store(true, Relaxed);
        }
    }

    /// Whether node `node` left the cluster.
    pub fn has_left(&self, node: usize) -> bool {
        self.left.get(node).is_some_and(|l| l.load(Relaxed))
    }

    /// `node`, or the next node after it that has not left (`node` if every one has).
    pub fn present(&self, node: usize) -> usize {
        (0..self.nodes)
            .map(|d| (node + d) % self.nodes.max(1))
            .find(|&n| !self.has_left(n))
            .unwrap_or(node)
    }

    /// What the run knows of client `client` (None: not in this run's slice).
    pub fn client_view(&self, client: u32) -> Option<ClientView> {
        let i = client.checked_sub(self.first_client)? as usize;
        self.states.get(i).map(|c| ClientView::of(c.load(Relaxed)))
    }

    /// Records `op`'s outcome when measuring (errors are counted by code regardless).
    pub fn record(&self, op: Op, sample: Sample, outcome: Result<(), &str>) {
        if let Err(code) = outcome {
            *self.errors.lock().entry(code.to_owned()).or_default() += 1;
        }
        if let Some(r) = self.meter.get() {
            r.record(op, sample, outcome);
        }
    }

    /// Records a dropped send when measuring.
    pub fn dropped(&self, op: Op) {
        if let Some(r) = self.meter.get() {
            r.record_dropped(op);
        }
    }
}

/// What a lane does.
#[derive(Clone, Debug)]
pub struct LaneConfig {
    /// Registration rate of this lane (None: as fast as the in-flight limit allows).
    pub register_rate: Option<f64>,
    /// Heartbeat period (None: no heartbeats).
    pub heartbeat: Option<Duration>,
    /// Query rate of this lane in the hold phase (0: none).
    pub query_rate: f64,
    /// Query rate is open (`rate`) or closed: with `closed_queries`, queries are sent
    /// whenever a slot is free.
    pub closed_queries: bool,
    /// Closed queries: how many may wait for a slot together (one request's worth).
    pub query_window: usize,
    /// Churn (deregister, then register again) rate of this lane in the hold phase.
    pub churn_rate: f64,
    /// How long a churned client stays away.
    pub churn_down: Duration,
    /// Items per batch.
    pub batch: usize,
    /// Batches in flight per node at most (the window's ceiling is `batch × concurrency`
    /// items).
    pub concurrency: usize,
    /// A batch slower than this counts as an overload signal (backpressure).
    pub congestion_latency: Duration,
    /// Heartbeats and queries further behind schedule than this are dropped.
    pub max_lag: Duration,
    /// Retries of an item (each on the next node).
    pub retries: u8,
    /// Shortest wait between two sends to a node that has a partial batch (lets items
    /// gather into batches).
    pub linger: Duration,
    /// Lanes of the run: each lane's open-model sources start `index / lanes` of an
    /// interval after the hold begins, so the lanes' items interleave instead of falling
    /// due together.
    pub lanes: usize,
}

impl LaneConfig {
    /// Whether queries go out as requests of their own on an open schedule (`--rate`
    /// or `--query-rate` without `--batch`): each is then sent alone, at its instant.
    pub fn own_request_queries(&self) -> bool {
        self.query_window == 1 && self.query_rate > 0.0 && !self.closed_queries
    }
}

/// Queries sent as requests of their own that one lane keeps in flight to one node at
/// most. They are not held to `concurrency`, the closed model's limit: each stands for
/// an independent client's request, due at its instant whatever else is in flight. The
/// bound only keeps a system that stops answering from piling up requests without end
/// (what waits for it counts in the corrected latency; what falls `max_lag` behind is
/// dropped).
const OWN_QUERIES_IN_FLIGHT: usize = 256;

const NEW: u8 = 0;
const JOINING: u8 = 1;
const UP: u8 = 2;
const LEAVING: u8 = 3;
const DOWN: u8 = 4;
const REJOINING: u8 = 5;
const FAILED: u8 = 6;
/// The state bits of a client's cell in [`Shared::states`]; the bits above count its
/// moves to UP or DOWN (wrapping).
const STATE_MASK: u8 = 0b111;

/// What the run knows of a client, as read from [`Shared::states`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientView {
    /// Its registration was acknowledged and it has not left: every node should hold it.
    /// The number counts its moves to up (wrapping), so that two reads with the same
    /// number saw one uninterrupted stay.
    Up(u8),
    /// Its deregistration was acknowledged and it has not come back yet: no node should
    /// hold it. The number counts as for `Up`.
    Down(u8),
    /// In between (registering, leaving, re-registering) or given up on: no expectation.
    Unsettled,
}

impl ClientView {
    /// The view of a state cell's value.
    pub fn of(cell: u8) -> Self {
        match cell & STATE_MASK {
            UP => ClientView::Up(cell >> 3),
            DOWN => ClientView::Down(cell >> 3),
            _ => ClientView::Unsettled,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Delayed {
    due: Instant,
    seq: u64,
    item: Item,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// An open-model source: item `i` is intended at `start + i / rate`.
#[derive(Debug, Clone, Copy)]
struct Rate {
    start: Instant,
    rate: f64,
    next: u64,
}

impl Rate {
    fn intended(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.next as f64 / self.rate)
    }
}

/// Whether a node's queue of `len` items, of which the next batch may take `take`, waits
/// for more (the linger) before it is sent: only a partial batch that takes the whole
/// queue, and none holding a query that is sent as a request of its own
/// (`own_request_queries`), which nothing would coalesce.
fn lingers(len: usize, take: usize, batch: usize, own_request_queries: bool) -> bool {
    len < batch && take == len && !own_request_queries
}

/// Whether an outcome says the node is overloaded (rather than refusing one item).
fn overload(o: Outcome) -> bool {
    matches!(
        o,
        Outcome::Retry("timeout" | "UNAVAILABLE" | "RESOURCE_EXHAUSTED" | "CANCELLED" | "503")
    )
}

struct Lane<P: Protocol> {
    index: usize,
    proto: Arc<P>,
    pop: Arc<Population>,
    shared: Arc<Shared>,
    cfg: LaneConfig,
    range: Range<u32>,
    node: Vec<u8>,
    /// This lane's first client's index in [`Shared::states`].
    offset: usize,
    rng: Rng,
    start: Instant,
    reg_next: u32,
    beat_k: u32,
    beat_round: u64,
    query: Option<Rate>,
    churn: Option<Rate>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    seq: u64,
    /// Per node: heartbeats waiting (sent first).
    beats: Vec<VecDeque<Item>>,
    /// Per node: every other item waiting.
    queues: Vec<VecDeque<Item>>,
    /// Queries waiting in each node's queue (they never linger: see [`Lane::dispatch`]).
    queries: Vec<usize>,
    /// Items waiting in all the queues, heartbeats included.
    queued: usize,
    /// Heartbeats waiting.
    queued_beats: usize,
    inflight: Vec<usize>,
    /// Per node: queries in flight as requests of their own (see
    /// [`OWN_QUERIES_IN_FLIGHT`]); not counted in `inflight` or the window.
    own_queries: Vec<usize>,
    window: Vec<Window>,
    /// When the lane saw [`Phase::Stop`] (items intended later are not measured).
    stopped_at: Option<Instant>,
    last_send: Vec<Instant>,
    spare: Vec<Batch>,
    ready: Vec<Batch>,
}

impl<P: Protocol> Lane<P> {
    fn n(&self) -> u32 {
        self.range.end - self.range.start
    }

    fn cap(&self) -> usize {
        (self.cfg.batch * self.cfg.concurrency * self.shared.nodes * 2).max(4096)
    }

    fn local(&self, client: u32) -> usize {
        (client - self.range.start) as usize
    }

    fn st(&self, k: usize) -> u8 {
        self.shared.states[self.offset + k].load(Relaxed) & STATE_MASK
    }

    fn set_st(&self, k: usize, state: u8) {
        let cell = &self.shared.states[self.offset + k];
        let old = cell.load(Relaxed);
        // Each move to UP or DOWN starts a new epoch, so that an observer can tell a client
        // that stayed up (or away) from one that left and came back meanwhile.
        let epoch = if (state == UP || state == DOWN) && old & STATE_MASK != state {
            (old >> 3).wrapping_add(1) << 3
        } else {
            old & !STATE_MASK
        };
        cell.store(epoch | state, Relaxed);
    }

    fn push(&mut self, item: Item) {
        let k = self.local(item.client);
        let node = self.shared.present(self.node[k] as usize);
        self.node[k] = node as u8;
        if item.kind == Kind::Beat {
            self.beats[node].push_back(item);
            self.queued_beats += 1;
        } else {
            self.queues[node].push_back(item);
            self.queries[node] += usize::from(item.kind == Kind::Query);
        }
        self.queued += 1;
    }

    fn delay(&mut self, due: Instant, item: Item) {
        self.seq += 1;
        self.delayed.push(Reverse(Delayed {
            due,
            seq: self.seq,
            item,
        }));
    }

    fn beat_intended(&self, period: Duration) -> Instant {
        let n = u64::from(self.n().max(1));
        let off = period.as_nanos() as u64 / n * u64::from(self.beat_k);
        self.start + period * (self.beat_round as u32) + Duration::from_nanos(off)
    }

    /// Moves due items from the sources into the node queues; returns the next instant the
    /// other sources and the queries have something due (None: nothing scheduled).
    fn fill(&mut self, now: Instant, phase: Phase) -> (Option<Instant>, Option<Instant>) {
        let mut next: Option<Instant> = None;
        let mut next_query = None;
        let mut soon = |t: Instant| {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };
        // Retries and rejoins.
        while let Some(Reverse(d)) = self.delayed.peek().copied() {
            if d.due > now {
                soon(d.due);
                break;
            }
            self.delayed.pop();
            let k = self.local(d.item.client);
            if d.item.kind == Kind::Register && self.st(k) == DOWN {
                self.set_st(k, REJOINING);
            }
            self.push(d.item);
        }
        let cap = self.cap();
        // Heartbeats (before new registrations, in queues of their own of up to three
        // quarters of a queue: when the queues are full the clients already registered stay
        // alive, and new ones still get a quarter): only clients that are up.
        if let Some(period) = self.cfg.heartbeat {
            while self.queued_beats < cap - cap / 4 && self.n() > 0 {
                let t = self.beat_intended(period);
                if t > now {
                    soon(t);
                    break;
                }
                let k = self.beat_k as usize;
                self.beat_k += 1;
                if self.beat_k == self.n() {
                    self.beat_k = 0;
                    self.beat_round += 1;
                }
                if self.st(k) != UP {
                    continue;
                }
                if now.saturating_duration_since(t) > self.cfg.max_lag {
                    if self.stopped_at.is_none() {
                        self.shared.dropped(Op::Beat);
                    }
                    continue;
                }
                let client = self.range.start + k as u32;
                let beat = Item {
                    client,
                    service: 0,
                    kind: Kind::Beat,
                    attempt: 0,
                    intended: t,
                };
                match self.proto.local_beat(client) {
                    Some(outcome) => {
                        let sample = Sample {
                            intended: t,
                            sent: now,
                            done: now,
                        };
                        self.resolve(&beat, outcome, sample, now);
                    }
                    None => self.push(beat),
                }
            }
        }
        // After the stop, only the heartbeats that keep the clients alive until the run has
        // checked the nodes (`Shared::finished`).
        if phase == Phase::Stop {
            return (next, None);
        }
        // Registrations.
        while self.reg_next < self.n() && self.queued < cap {
            let intended = match self.cfg.register_rate {
                Some(r) => {
                    let t = self.start + Duration::from_secs_f64(f64::from(self.reg_next) / r);
                    if t > now {
                        soon(t);
                        break;
                    }
                    t
                }
                None => now,
            };
            let k = self.reg_next as usize;
            self.reg_next += 1;
            self.set_st(k, JOINING);
            let client = self.range.start + k as u32;
            self.push(Item {
                client,
                service: 0,
                kind: Kind::Register,
                attempt: 0,
                intended,
            });
        }
        if let Phase::Hold(at) = phase {
            // Lane `index` of `lanes` starts `index / lanes` of an interval late, so the
            // lanes' items interleave evenly instead of falling due together.
            let phase = self.index as f64 / self.cfg.lanes.max(1) as f64;
            let start = |rate: f64| at + Duration::from_secs_f64(phase / rate);
            if self.query.is_none() && self.cfg.query_rate > 0.0 {
                self.query = Some(Rate {
                    start: start(self.cfg.query_rate),
                    rate: self.cfg.query_rate,
                    next: 0,
                });
            }
            if self.churn.is_none() && self.cfg.churn_rate > 0.0 {
                self.churn = Some(Rate {
                    start: start(self.cfg.churn_rate),
                    rate: self.cfg.churn_rate,
                    next: 0,
                });
            }
        }
        // Queries: a random client asks for a random service.
        if let Some(mut q) = self.query {
            let services = self.proto_services();
            while self.queued < cap && self.n() > 0 {
                let t = if self.cfg.closed_queries {
                    if self.queued >= self.cfg.query_window {
                        break;
                    }
                    now
                } else {
                    q.intended()
                };
                if t > now {
                    next_query = Some(t);
                    break;
                }
                q.next += 1;
                if now.saturating_duration_since(t) > self.cfg.max_lag {
                    self.shared.dropped(Op::Query);
                    continue;
                }
                let k = self.rng.below(u64::from(self.n())) as u32;
                let service = self.rng.below(u64::from(services)) as u32;
                self.push(Item {
                    client: self.range.start + k,
                    service,
                    kind: Kind::Query,
                    attempt: 0,
                    intended: t,
                });
            }
            self.query = Some(q);
        }
        // Churn: a random client that is up leaves, and comes back after `churn_down`.
        if let Some(mut c) = self.churn {
            while self.queued < cap && self.n() > 0 {
                let t = c.intended();
                if t > now {
                    soon(t);
                    break;
                }
                c.next += 1;
                let mut picked = None;
                for _ in 0..16 {
                    let k = self.rng.below(u64::from(self.n())) as usize;
                    if self.st(k) == UP {
                        picked = Some(k);
                        break;
                    }
                }
                let Some(k) = picked else {
                    self.shared.dropped(Op::Deregister);
                    continue;
                };
                self.set_st(k, LEAVING);
                self.shared.registered.fetch_sub(1, Relaxed);
                self.push(Item {
                    client: self.range.start + k as u32,
                    service: 0,
                    kind: Kind::Deregister,
                    attempt: 0,
                    intended: t,
                });
            }
            self.churn = Some(c);
        }
        (next, next_query)
    }

    fn proto_services(&self) -> u32 {
        self.pop.services()
    }

    /// Moves what the queues hold into batches ready to send (`self.ready`), within the
    /// in-flight limits; a partial batch waits for `linger` after the node's last send,
    /// unless it holds a query sent as a request of its own (`query_window` 1): waiting
    /// would only add loadgen's linger to that query's latency, since nothing coalesces
    /// it. Returns when a lingering partial batch is due.
    fn dispatch(&mut self, now: Instant) -> Option<Instant> {
        let mut next = None;
        // What waits for a node that left goes to the next one.
        for node in 0..self.queues.len() {
            if self.shared.has_left(node)
                && (!self.queues[node].is_empty() || !self.beats[node].is_empty())
            {
                let beats = std::mem::take(&mut self.beats[node]);
                let items = std::mem::take(&mut self.queues[node]);
                self.queued -= beats.len() + items.len();
                self.queued_beats -= beats.len();
                self.queries[node] = 0;
                for item in beats.into_iter().chain(items) {
                    self.push(item);
                }
            }
        }
        let own_mode = self.cfg.own_request_queries();
        for node in 0..self.queues.len() {
            loop {
                // A query sent as a request of its own goes out alone and at once: a batch
                // completes with its slowest request, so a query batched with others would
                // be timed by theirs.
                if own_mode
                    && self.own_queries[node] < OWN_QUERIES_IN_FLIGHT
                    && self.queues[node]
                        .front()
                        .is_some_and(|i| i.kind == Kind::Query)
                {
                    let mut b = self.spare.pop().unwrap_or_else(|| Batch::new(node));
                    b.node = node;
                    b.items.clear();
                    b.items.extend(self.queues[node].pop_front());
                    b.sent = now;
                    self.queries[node] -= 1;
                    self.queued -= 1;
                    self.own_queries[node] += 1;
                    self.ready.push(b);
                    continue;
                }
                let beats = self.beats[node].len();
                // With queries of their own, a batch stops before the first query.
                let others = if own_mode && self.queries[node] > 0 {
                    self.queues[node]
                        .iter()
                        .take(self.cfg.batch)
                        .take_while(|i| i.kind != Kind::Query)
                        .count()
                } else {
                    self.queues[node].len()
                };
                let len = beats + others;
                if len == 0 || self.inflight[node] >= self.cfg.concurrency {
                    break;
                }
                let take = self.window[node].room(self.cfg.batch, len);
                if take == 0 {
                    break;
                }
                let own_requests =
                    !own_mode && self.cfg.query_window == 1 && self.queries[node] > 0;
                if lingers(len, take, self.cfg.batch, own_requests) {
                    let due = self.last_send[node] + self.cfg.linger;
                    if due > now {
                        next = Some(next.map_or(due, |n: Instant| n.min(due)));
                        break;
                    }
                }
                let mut b = self.spare.pop().unwrap_or_else(|| Batch::new(node));
                b.node = node;
                b.items.clear();
                let from_beats = take.min(beats);
                b.items.extend(self.beats[node].drain(..from_beats));
                b.items.extend(self.queues[node].drain(..take - from_beats));
                if self.queries[node] > 0 {
                    let taken = b.items.iter().filter(|i| i.kind == Kind::Query).count();
                    self.queries[node] -= taken;
                }
                b.sent = now;
                self.queued -= take;
                self.queued_beats -= from_beats;
                self.inflight[node] += 1;
                self.window[node].items += take;
                self.last_send[node] = now;
                self.ready.push(b);
            }
        }
        next
    }

    fn record(&self, measured: bool, op: Op, sample: Sample, outcome: Result<(), &str>) {
        if measured {
            self.shared.record(op, sample, outcome);
        }
    }

    /// Records a batch's outcomes and reacts: state changes, failover and retry, rejoin.
    fn complete(&mut self, mut b: Batch) {
        let now = Instant::now();
        // In own-request mode no other batch holds a query (see `dispatch`).
        let own_query =
            self.cfg.own_request_queries() && b.items.len() == 1 && b.items[0].kind == Kind::Query;
        if own_query {
            self.own_queries[b.node] -= 1;
        } else {
            self.inflight[b.node] -= 1;
            let congested = b.done.saturating_duration_since(b.sent) > self.cfg.congestion_latency
                || b.outcomes.iter().any(|o| overload(*o));
            if self.window[b.node].complete(b.items.len(), b.sent, now, congested) {
                self.shared.window_cuts.fetch_add(1, Relaxed);
            }
        }
        for (i, item) in b.items.iter().enumerate() {
            let outcome = b
                .outcomes
                .get(i)
                .copied()
                .unwrap_or(Outcome::Failed("internal"));
            // A closed-model registration (no --rate) has no schedule: the time it was
            // queued in loadgen is not an intended time, and counting from it would measure
            // loadgen's own queue. Its latency is service time.
            let closed = item.kind == Kind::Register && self.cfg.register_rate.is_none();
            let sample = Sample {
                intended: if closed { b.sent } else { item.intended },
                sent: b.sent,
                done: b.done,
            };
            self.resolve(item, outcome, sample, now);
        }
        b.items.clear();
        b.outcomes.clear();
        self.spare.push(b);
    }

    /// Records one item's outcome and reacts: state changes, failover and retry, rejoin.
    fn resolve(&mut self, item: &Item, outcome: Outcome, sample: Sample, now: Instant) {
        let nodes = self.shared.nodes;
        let k = self.local(item.client);
        let op = item.kind.op();
        // Keep-alive beats sent after the stop are not part of the figures.
        let measured = self.stopped_at.is_none_or(|s| item.intended < s);
        match outcome {
            Outcome::Ok => {
                self.record(measured, op, sample, Ok(()));
                self.succeeded(k, item.kind, now);
            }
            Outcome::NotFound if item.kind == Kind::Beat && self.st(k) == UP => {
                self.record(measured, op, sample, Err("404"));
                self.set_st(k, REJOINING);
                self.shared.registered.fetch_sub(1, Relaxed);
                self.push(Item {
                    kind: Kind::Register,
                    attempt: 0,
                    intended: now,
                    ..*item
                });
            }
            // A heartbeat that raced with this client's own deregistration.
            Outcome::NotFound => self.record(measured, op, sample, Ok(())),
            Outcome::Retry(_) if item.attempt < self.cfg.retries => {
                self.shared.failovers.fetch_add(1, Relaxed);
                self.node[k] = ((self.node[k] as usize + 1) % nodes) as u8;
                let backoff = Duration::from_millis(50u64 << item.attempt.min(5));
                self.delay(
                    now + backoff.min(Duration::from_secs(2)),
                    Item {
                        attempt: item.attempt + 1,
                        ..*item
                    },
                );
            }
            Outcome::Retry(code) | Outcome::Failed(code) => {
                self.record(measured, op, sample, Err(code));
                self.gave_up(k, item.kind);
            }
        }
    }

    fn succeeded(&mut self, k: usize, kind: Kind, now: Instant) {
        match kind {
            Kind::Register => {
                if self.st(k) == JOINING {
                    self.shared.reg_remaining.fetch_sub(1, Relaxed);
                }
                if self.st(k) != UP {
                    self.shared.registered.fetch_add(1, Relaxed);
                }
                self.set_st(k, UP);
            }
            Kind::Deregister => {
                self.set_st(k, DOWN);
                let client = self.range.start + k as u32;
                let due = now + self.cfg.churn_down;
                self.delay(
                    due,
                    Item {
                        client,
                        service: 0,
                        kind: Kind::Register,
                        attempt: 0,
                        intended: due,
                    },
                );
            }
            Kind::Beat | Kind::Query => {}
        }
    }

    fn gave_up(&mut self, k: usize, kind: Kind) {
        match kind {
            Kind::Register => {
                if self.st(k) == JOINING {
                    self.shared.reg_remaining.fetch_sub(1, Relaxed);
                }
                self.set_st(k, FAILED);
            }
            // Still registered as far as we know: keep beating.
            Kind::Deregister => {
                self.set_st(k, UP);
                self.shared.registered.fetch_add(1, Relaxed);
            }
            Kind::Beat | Kind::Query => {}
        }
    }
}

/// Runs lane `index` over the clients `range`: after [`Phase::Stop`] only heartbeats,
/// until [`Shared::finished`] is set and its requests in flight are done (or `drain` has
/// passed).
#[allow(clippy::too_many_arguments)]
pub async fn run_lane<P: Protocol>(
    index: usize,
    proto: Arc<P>,
    pop: Arc<Population>,
    shared: Arc<Shared>,
    cfg: LaneConfig,
    range: Range<u32>,
    mut phase: watch::Receiver<Phase>,
    drain: Duration,
    mut timer: LaneTimer,
) {
    // A lane wakes for its next query's instant itself (queries due every few hundred
    // microseconds): within microseconds with a precise timer (a timerfd, the pacing
    // thread), at tokio's next millisecond tick otherwise (a later floor would only add
    // up to its length to each query's lateness: the tick already bounds the wake-ups).
    // For anything else, at most every 500 µs: heartbeats and writes gather into batches
    // anyway, and go with the next query.
    let coarse = Duration::from_micros(500);
    let floor = Duration::from_micros(20);
    let nodes = shared.nodes;
    let offset = range.start.saturating_sub(shared.first_client) as usize;
    let node = (range.start..range.end)
        .map(|c| pop.first_node(c, nodes) as u8)
        .collect();
    let now = Instant::now();
    let window = (0..nodes)
        .map(|_| Window::new(cfg.batch, cfg.concurrency, now))
        .collect();
    let mut lane = Lane {
        index,
        rng: Rng::new(pop.seed() ^ (index as u64).wrapping_mul(0x51_7cc1_b727_220a)),
        proto,
        pop,
        shared,
        cfg,
        range,
        node,
        offset,
        start: now,
        reg_next: 0,
        beat_k: 0,
        beat_round: 1,
        query: None,
        churn: None,
        delayed: BinaryHeap::new(),
        seq: 0,
        beats: (0..nodes).map(|_| VecDeque::new()).collect(),
        queues: (0..nodes).map(|_| VecDeque::new()).collect(),
        queries: vec![0; nodes],
        queued: 0,
        queued_beats: 0,
        inflight: vec![0; nodes],
        own_queries: vec![0; nodes],
        window,
        stopped_at: None,
        last_send: vec![now; nodes],
        spare: Vec::new(),
        ready: Vec::new(),
    };
    let mut pending = FuturesUnordered::new();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let ph = *phase.borrow_and_update();
        if ph == Phase::Stop && lane.stopped_at.is_none() {
            lane.stopped_at = Some(now);
            lane.delayed.clear();
        }
        if lane.stopped_at.is_some()
            && stop_deadline.is_none()
            && lane.shared.finished.load(Relaxed)
        {
            stop_deadline = Some(now + drain);
        }
        let (next_source, next_query) = lane.fill(now, ph);
        let next_linger = lane.dispatch(now);
        for b in lane.ready.drain(..) {
            pending.push(lane.proto.execute(lane.index, b));
        }
        if let Some(deadline) = stop_deadline
            && (pending.is_empty() || now >= deadline)
        {
            break;
        }
        let wake = [next_source, next_linger]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_millis(100))
            .max(now + coarse);
        let wake = next_query.map_or(wake, |q| wake.min(q.max(now + floor)));
        let wake = match stop_deadline {
            Some(d) => wake.min(d),
            None => wake,
        };
        tokio::select! {
            Some(b) = pending.next(), if !pending.is_empty() => {
                lane.complete(b);
                // Take every other completed batch without waiting.
                while let Some(Some(b)) = futures::FutureExt::now_or_never(pending.next()) {
                    lane.complete(b);
                }
            }
            () = timer.sleep_until(wake) => {}
            r = phase.changed(), if lane.stopped_at.is_none() => {
                if r.is_err() {
                    lane.stopped_at = Some(Instant::now());
                    stop_deadline = Some(Instant::now() + drain);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
