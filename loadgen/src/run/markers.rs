//! Marker registrations: replication probes and push measurements.
//!
//! A marker is a short-lived client with a fresh address registered into one service that
//! subscribers on every node watch (the protocol's watch stream). Its *pending* entry
//! records when it was meant to be sent, sent and acknowledged, and which watchers still
//! have to see it.
//!
//! * **Probe** (every `--probe-interval`, into the probe service, one watcher per node):
//!   the first node to show it is the owner (the receiving node forwards to the owner,
//!   which applies it at once; the others learn it by replication). For each other node,
//!   the time from the acknowledgement to its visibility there is a replication lag sample;
//!   a sighting that came before the acknowledgement (etcd and ZooKeeper replicate to a
//!   quorum before they acknowledge) is counted as visible before the ack instead.
//!   A probe some node has not shown within `--converge-timeout` is unreplicated.
//! * **Push** (`--scenario push`, at `--rate`, into the watched services, `--subscribers`
//!   watchers per node): for every watcher, the time from the change's intended send time
//!   (corrected) or actual send time (uncorrected) to the push that shows it is a `push`
//!   sample; a watcher that never shows it counts as a `push` error `not-pushed`.
//!
//! A marker seen by every watcher it needs (or timed out) is deregistered. Pending entries
//! are bounded (`MAX_PENDING`); beyond, new markers are dropped and counted.
//!
//! The [`Tracker`] holds the pending markers and is fed by the run's watchers;
//! [`run_markers`] is the task that sends the markers (and, after the stop, a last probe).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::driver::{Phase, Shared};
use crate::measure::op::Op;
use crate::measure::recorder::Sample;
use crate::population::{MARKER_BASE, Population, Rng};
use crate::protocol::{Batch, Item, Kind, Outcome, Protocol, WatchEvent};

/// Most markers awaiting visibility at once.
pub const MAX_PENDING: usize = 20_000;

/// Retries of a marker's registration, each on the next node after a backoff.
const MARKER_RETRIES: u8 = 5;

/// What a marker measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    /// Replication probe.
    Probe,
    /// Change-to-push latency.
    Push,
}

#[derive(Debug)]
struct Pending {
    id: u32,
    addr: SocketAddrV4,
    kind: MarkerKind,
    intended: Instant,
    sent: Instant,
    ack: Option<Instant>,
    /// How many watchers must see it (every one for a push, the probe watchers for a
    /// probe).
    need: usize,
    /// Watchers that saw it, and how many.
    seen: WatcherSet,
    seen_count: usize,
    /// Nodes that showed it, with when (probes: recorded once the ack is known).
    node_seen: Vec<(usize, Instant)>,
    deadline: Instant,
    failed: bool,
}

/// One subscriber stream.
#[derive(Clone, Copy, Debug)]
pub struct Watcher {
    /// Its node.
    pub node: usize,
    /// Whether probes use it (one per node).
    pub probe: bool,
}

/// Watchers by index, as bits (grown as indices come; any number of watchers).
#[derive(Debug, Default)]
struct WatcherSet(Vec<u64>);

impl WatcherSet {
    fn contains(&self, w: usize) -> bool {
        self.0.get(w / 64).is_some_and(|b| b & (1 << (w % 64)) != 0)
    }

    /// Adds `w`; false if it was in already.
    fn insert(&mut self, w: usize) -> bool {
        if self.0.len() <= w / 64 {
            self.0.resize(w / 64 + 1, 0);
        }
        let (word, bit) = (&mut self.0[w / 64], 1u64 << (w % 64));
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_service: HashMap<u32, Vec<Pending>>,
    count: usize,
}

/// The pending markers. See the module documentation.
#[derive(Debug)]
pub struct Tracker {
    inner: Mutex<Inner>,
    watchers: Vec<Watcher>,
    /// Watchers with `probe`.
    probe_watchers: usize,
    shared: Arc<Shared>,
    timeout: Duration,
}

/// A marker that is done and should be deregistered.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    /// The marker's client id.
    pub id: u32,
    /// Its service.
    pub service: u32,
}

impl Tracker {
    /// A tracker for `watchers`, giving up on a marker after `timeout`.
    pub fn new(watchers: Vec<Watcher>, shared: Arc<Shared>, timeout: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            probe_watchers: watchers.iter().filter(|w| w.probe).count(),
            watchers,
            shared,
            timeout,
        }
    }

    /// The watchers.
    pub fn watchers(&self) -> &[Watcher] {
        &self.watchers
    }

    /// Markers pending.
    pub fn pending(&self) -> usize {
        self.inner.lock().count
    }

    /// Starts tracking marker `id` (address `addr`, in `service`), about to be sent.
    /// Returns false (and counts a drop) when too many are pending.
    pub fn add(
        &self,
        id: u32,
        addr: SocketAddrV4,
        service: u32,
        kind: MarkerKind,
        intended: Instant,
    ) -> bool {
        let need = match kind {
            MarkerKind::Push => self.watchers.len(),
            MarkerKind::Probe => self.probe_watchers,
        };
        let mut g = self.inner.lock();
        if g.count >= MAX_PENDING {
            drop(g);
            if kind == MarkerKind::Push {
                self.shared.dropped(Op::Push);
            }
            return false;
        }
        let now = Instant::now();
        g.count += 1;
        g.by_service.entry(service).or_default().push(Pending {
            id,
            addr,
            kind,
            intended,
            sent: now,
            ack: None,
            need,
            seen: WatcherSet::default(),
            seen_count: 0,
            node_seen: Vec::new(),
            deadline: now + self.timeout,
            failed: false,
        });
        true
    }

    /// The marker's registration was acknowledged at `at`.
    pub fn acked(&self, id: u32, service: u32, at: Instant) {
        let mut g = self.inner.lock();
        if let Some(p) = g
            .by_service
            .get_mut(&service)
            .and_then(|v| v.iter_mut().find(|p| p.id == id))
        {
            p.ack = Some(at);
            if p.kind == MarkerKind::Probe {
                self.record_probe(p);
            }
        }
    }

    /// The marker's registration failed for good: it counts as unreplicated (probe) or
    /// as a push error.
    pub fn failed(&self, id: u32, service: u32) {
        let mut g = self.inner.lock();
        if let Some(p) = g
            .by_service
            .get_mut(&service)
            .and_then(|v| v.iter_mut().find(|p| p.id == id))
        {
            p.failed = true;
            p.deadline = Instant::now();
        }
    }

    /// Records the replication lag samples of a probe whose ack is known: every node that
    /// showed it, but the first (the owner).
    fn record_probe(&self, p: &mut Pending) {
        let Some(ack) = p.ack else { return };
        let Some(meter) = self.shared.meter.get() else {
            return;
        };
        // Samples are recorded when both the ack and the sighting are known, whichever
        // came first: a sighting is compared with the ack time (the response's arrival),
        // not with when the driver handled it. Entries already recorded are marked with
        // node usize::MAX.
        let first = p.node_seen.iter().map(|(_, t)| *t).min();
        for (node, t) in p.node_seen.iter_mut() {
            if *node == usize::MAX || Some(*t) == first {
                continue;
            }
            match t.checked_duration_since(ack) {
                Some(lag) => meter.record_replication_lag(lag),
                // Visible there before the writer heard back: no lag to record, counted
                // (a system that replicates before it acknowledges), never clamped to 0.
                None => meter.record_visible_before_ack(),
            }
            *node = usize::MAX;
        }
    }

    /// Handles an event of watcher `w`.
    pub fn on_event(&self, w: usize, ev: &WatchEvent) {
        let probe = self.watchers[w].probe;
        let needs = |p: &Pending| p.kind == MarkerKind::Push || probe;
        let mut g = self.inner.lock();
        let Some(list) = g.by_service.get_mut(&ev.service) else {
            return;
        };
        if list.iter().all(|p| !needs(p) || p.seen.contains(w)) {
            return;
        }
        let set: Option<HashSet<SocketAddrV4>> =
            (list.len() > 8).then(|| ev.instances.iter().copied().collect());
        for p in list.iter_mut() {
            if !needs(p) || p.seen.contains(w) {
                continue;
            }
            let present = match &set {
                Some(s) => s.contains(&p.addr),
                None => ev.instances.contains(&p.addr),
            };
            if !present {
                continue;
            }
            if p.seen.insert(w) {
                p.seen_count += 1;
            }
            match p.kind {
                MarkerKind::Push => self.shared.record(
                    Op::Push,
                    Sample {
                        intended: p.intended,
                        sent: p.sent,
                        done: ev.received,
                    },
                    Ok(()),
                ),
                MarkerKind::Probe => {
                    // The earliest sighting marks the owner; record_probe skips it.
                    p.node_seen.push((self.watchers[w].node, ev.received));
                    self.record_probe(p);
                }
            }
        }
    }

    /// Removes markers seen by every watcher they need, and those past their deadline
    /// (counting them); returns them for deregistration.
    pub fn sweep(&self, now: Instant, out: &mut Vec<Finished>) {
        let mut g = self.inner.lock();
        let mut removed = 0;
        for (service, list) in g.by_service.iter_mut() {
            list.retain(|p| {
                // A watcher of a node that left will not see it: it is not waited for.
                let seen = p.seen_count >= p.need
                    || self.watchers.iter().enumerate().all(|(w, watcher)| {
                        (p.kind == MarkerKind::Probe && !watcher.probe)
                            || p.seen.contains(w)
                            || self.shared.has_left(watcher.node)
                    });
                let complete = seen && p.ack.is_some();
                if !complete && now < p.deadline {
                    return true;
                }
                if !complete {
                    match p.kind {
                        MarkerKind::Probe => {
                            if let Some(m) = self.shared.meter.get() {
                                m.record_unreplicated();
                            }
                        }
                        MarkerKind::Push => {
                            let missing = p.need.saturating_sub(p.seen_count);
                            for _ in 0..missing {
                                self.shared.record(
                                    Op::Push,
                                    Sample {
                                        intended: p.intended,
                                        sent: p.sent,
                                        done: now,
                                    },
                                    Err("not-pushed"),
                                );
                            }
                        }
                    }
                }
                if !p.failed {
                    out.push(Finished {
                        id: p.id,
                        service: *service,
                    });
                }
                removed += 1;
                false
            });
        }
        g.by_service.retain(|_, v| !v.is_empty());
        g.count -= removed;
    }
}

/// What the marker task does.
#[derive(Clone, Copy, Debug)]
pub struct MarkerConfig {
    /// Probe period.
    pub probe_interval: Duration,
    /// Push changes per second in the hold phase (0: none).
    pub push_rate: f64,
    /// Push changes go to services `0..push_services`.
    pub push_services: u32,
    /// Nodes.
    pub nodes: usize,
    /// After the load stops, how long to wait for the last markers.
    pub final_wait: Duration,
}

/// Sends probes (and push changes), feeds acks to the tracker, deregisters finished
/// markers; after the stop, sends a last probe and waits for every marker.
pub async fn run_markers<P: Protocol>(
    proto: Arc<P>,
    pop: Arc<Population>,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
    cfg: MarkerConfig,
    mut phase: watch::Receiver<Phase>,
) {
    let mut rng = Rng::new(pop.seed() ^ 0x70_7265_6265);
    let mut next_id: u32 = 0;
    let mut next_probe = Instant::now();
    let mut push_next: u64 = 0;
    let mut inflight = FuturesUnordered::new();
    let mut finished: Vec<Finished> = Vec::new();
    let mut final_deadline: Option<Instant> = None;
    let mut last_sweep = Instant::now();
    let lane = 0;
    // Sends `item` to `node` after `after` (a retry's backoff).
    let send = |node: usize, item: Item, after: Duration| {
        let proto = &proto;
        async move {
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            let mut b = Batch::new(node);
            b.items.push(item);
            b.sent = Instant::now();
            proto.execute(lane, b).await
        }
    };
    loop {
        let now = Instant::now();
        let ph = *phase.borrow_and_update();
        let mut new: Vec<(u32, MarkerKind, Instant)> = Vec::new();
        if ph == Phase::Stop {
            if final_deadline.is_none() {
                final_deadline = Some(now + cfg.final_wait + Duration::from_secs(1));
                new.push((pop.probe_service(), MarkerKind::Probe, now));
            }
        } else if now >= next_probe {
            new.push((pop.probe_service(), MarkerKind::Probe, now));
            next_probe += cfg.probe_interval;
            if next_probe < now {
                next_probe = now + cfg.probe_interval;
            }
        }
        if let Phase::Hold(at) = ph
            && cfg.push_rate > 0.0
            && cfg.push_services > 0
        {
            loop {
                let t = at + Duration::from_secs_f64(push_next as f64 / cfg.push_rate);
                if t > now {
                    break;
                }
                push_next += 1;
                let s = rng.below(u64::from(cfg.push_services)) as u32;
                new.push((s, MarkerKind::Push, t));
            }
        }
        for (service, kind, intended) in new {
            let id = next_id;
            next_id = next_id.wrapping_add(1) % (MARKER_BASE - 1);
            let client = MARKER_BASE + id;
            if !tracker.add(id, pop.addr(client), service, kind, intended) {
                continue;
            }
            let node = shared.present(rng.below(cfg.nodes as u64) as usize);
            inflight.push(send(
                node,
                Item {
                    client,
                    service,
                    kind: Kind::Register,
                    attempt: 0,
                    intended,
                },
                Duration::ZERO,
            ));
        }
        if now.duration_since(last_sweep) >= Duration::from_millis(50) {
            last_sweep = now;
            tracker.sweep(now, &mut finished);
            for f in finished.drain(..) {
                let node = shared.present(rng.below(cfg.nodes as u64) as usize);
                inflight.push(send(
                    node,
                    Item {
                        client: MARKER_BASE + f.id,
                        service: f.service,
                        kind: Kind::Deregister,
                        attempt: 0,
                        intended: now,
                    },
                    Duration::ZERO,
                ));
            }
        }
        if let Some(d) = final_deadline
            && ((tracker.pending() == 0 && inflight.is_empty()) || now >= d)
        {
            break;
        }
        tokio::select! {
            Some(b) = inflight.next(), if !inflight.is_empty() => {
                let b: Batch = b;
                for (item, outcome) in b.items.iter().zip(b.outcomes.iter()) {
                    if item.kind != Kind::Register {
                        continue;
                    }
                    let id = item.client - MARKER_BASE;
                    match outcome {
                        Outcome::Ok => tracker.acked(id, item.service, b.done),
                        // As the clients retry (see the driver): on the next node, after
                        // 50 ms, 100 ms, ... 800 ms, which outlasts the moment nodes disagree
                        // on the owner while a member list changes (421 misdirected).
                        Outcome::Retry(_) if item.attempt < MARKER_RETRIES => {
                            shared.failovers.fetch_add(1, Relaxed);
                            let node = shared.present((b.node + 1) % cfg.nodes);
                            let backoff = Duration::from_millis(50u64 << item.attempt.min(5));
                            inflight.push(send(node, Item { attempt: item.attempt + 1, ..*item }, backoff));
                        }
                        _ => tracker.failed(id, item.service),
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}
