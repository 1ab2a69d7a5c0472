//! Marker registrations: convergence probes and push measurements.
//!
//! A marker is a short-lived client with a fresh address registered into one service that
//! subscribers on every node watch (the protocol's watch stream). Its *pending* entry
//! records when it was meant to be sent, sent and acknowledged, and which watchers still
//! have to see it.
//!
//! * **Probe** (every `--probe-interval`, into the probe service, one watcher per node):
//!   the first node to show it is the owner (the receiving node forwards to the owner,
//!   which applies it at once; the others learn it by replication). For each other node,
//!   the time from the acknowledgement to its visibility there is a convergence sample.
//!   A probe some node has not shown within `--converge-timeout` is unconverged.
//! * **Push** (`--scenario push`, at `--rate`, into the watched services, `--subscribers`
//!   watchers per node): for every watcher, the time from the change's intended send time
//!   (corrected) or actual send time (uncorrected) to the push that shows it is a `push`
//!   sample; a watcher that never shows it counts as a `push` error `not-pushed`.
//!
//! A marker seen by every watcher it needs (or timed out) is deregistered. Pending entries
//! are bounded (`MAX_PENDING`); beyond, new markers are dropped and counted.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::driver::Shared;
use crate::measure::op::Op;
use crate::measure::recorder::Sample;
use crate::protocol::WatchEvent;

/// Most markers awaiting visibility at once.
pub const MAX_PENDING: usize = 20_000;

/// What a marker measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    /// Convergence probe.
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
    /// Watchers that must see it.
    need: u64,
    /// Watchers that saw it.
    seen: u64,
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
    /// A tracker for `watchers` (at most 64), giving up on a marker after `timeout`.
    pub fn new(watchers: Vec<Watcher>, shared: Arc<Shared>, timeout: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
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
        let need = self
            .watchers
            .iter()
            .enumerate()
            .filter(|(_, w)| kind == MarkerKind::Push || w.probe)
            .fold(0u64, |m, (i, _)| m | (1 << i));
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
            seen: 0,
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

    /// The marker's registration failed for good: it counts as unconverged (probe) or
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

    /// Records the convergence samples of a probe whose ack is known: every node that
    /// showed it, but the first (the owner).
    fn record_probe(&self, p: &mut Pending) {
        let Some(ack) = p.ack else { return };
        let Some(meter) = self.shared.meter.get() else {
            return;
        };
        // Samples are recorded when both the ack and the sighting are known; entries
        // already recorded are marked with node usize::MAX.
        let first = p.node_seen.iter().map(|(_, t)| *t).min();
        for (node, t) in p.node_seen.iter_mut() {
            if *node == usize::MAX || Some(*t) == first {
                continue;
            }
            meter.record_convergence(t.saturating_duration_since(ack));
            *node = usize::MAX;
        }
    }

    /// Handles an event of watcher `w`.
    pub fn on_event(&self, w: usize, ev: &WatchEvent) {
        let bit = 1u64 << w;
        let mut g = self.inner.lock();
        let Some(list) = g.by_service.get_mut(&ev.service) else {
            return;
        };
        if list.iter().all(|p| p.need & bit == 0 || p.seen & bit != 0) {
            return;
        }
        let set: Option<HashSet<SocketAddrV4>> =
            (list.len() > 8).then(|| ev.instances.iter().copied().collect());
        for p in list.iter_mut() {
            if p.need & bit == 0 || p.seen & bit != 0 {
                continue;
            }
            let present = match &set {
                Some(s) => s.contains(&p.addr),
                None => ev.instances.contains(&p.addr),
            };
            if !present {
                continue;
            }
            p.seen |= bit;
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
                let complete = p.seen & p.need == p.need && p.ack.is_some();
                if !complete && now < p.deadline {
                    return true;
                }
                if !complete {
                    match p.kind {
                        MarkerKind::Probe => {
                            if let Some(m) = self.shared.meter.get() {
                                m.record_unconverged();
                            }
                        }
                        MarkerKind::Push => {
                            let missing = (p.need & !p.seen).count_ones();
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
