//! Sync scheduling: which changed clients are due for which peer, and when.
//!
//! Every change of a client this node owns schedules that client for every peer. A
//! client pending for a peer is one entry, whatever the number of changes: the entry
//! keeps the due time of the *first* pending change (`first + sync delay`), so changes
//! within the delay merge and continuous churn cannot postpone replication. The entry
//! holds no state: a flush reads the client's latest full state (or its deletion) from
//! the registry, so a batch never carries anything older than what is pending.
//!
//! A failed batch puts its clients back with a growing retry delay; a client that is
//! already pending again keeps the earlier of the two due times, and its newer state is
//! what the next flush sends.
//!
//! Queues are striped by client id so concurrent writers rarely meet on one mutex.

use crate::model::ClientId;
use crate::time::Millis;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::registry::FastHash;

const STRIPES: usize = 16;

struct Stripe {
    /// Due time of every pending client.
    pending: HashMap<ClientId, Millis, FastHash>,
    /// Entries scheduled with the regular sync delay: due times are nondecreasing.
    fifo: VecDeque<(Millis, ClientId)>,
    /// Entries with other due times (retries, verify repairs, handovers).
    heap: BinaryHeap<Reverse<(Millis, ClientId)>>,
}

impl Stripe {
    fn schedule(&mut self, id: &ClientId, due: Millis, regular: bool) -> bool {
        match self.pending.get_mut(id.as_str()) {
            Some(d) if *d <= due => false,
            Some(d) => {
                *d = due;
                self.heap.push(Reverse((due, id.clone())));
                false
            }
            None => {
                self.pending.insert(id.clone(), due);
                if regular && self.fifo.back().is_none_or(|(d, _)| *d <= due) {
                    self.fifo.push_back((due, id.clone()));
                } else {
                    self.heap.push(Reverse((due, id.clone())));
                }
                true
            }
        }
    }

    /// Pops up to `max` due clients.
    fn take_due(&mut self, now: Millis, max: usize, out: &mut Vec<ClientId>) {
        while out.len() < max {
            let from_fifo = match (self.fifo.front(), self.heap.peek()) {
                (Some((a, _)), Some(Reverse((b, _)))) => a <= b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return,
            };
            let (due, id) = if from_fifo {
                let (d, _) = self.fifo.front().expect("checked above");
                if *d > now {
                    return;
                }
                self.fifo.pop_front().expect("checked above")
            } else {
                let Reverse((d, _)) = self.heap.peek().expect("checked above");
                if *d > now {
                    return;
                }
                self.heap.pop().expect("checked above").0
            };
            // Skip queue entries made obsolete by a reschedule to an earlier time.
            if self.pending.get(id.as_str()) == Some(&due) {
                self.pending.remove(id.as_str());
                out.push(id);
            }
        }
    }

    fn next_due(&self) -> Option<Millis> {
        let a = self.fifo.front().map(|(d, _)| *d);
        let b = self.heap.peek().map(|Reverse((d, _))| *d);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The pending syncs to one peer.
pub(crate) struct PeerQueue {
    stripes: Box<[Mutex<Stripe>]>,
    pending: AtomicUsize,
    pub(crate) inflight: AtomicUsize,
    pub(crate) consecutive_failures: AtomicU32,
    /// No batch is sent before this time (back-off after failures).
    pub(crate) paused_until: AtomicU64,
    next_stripe: AtomicUsize,
}

impl PeerQueue {
    fn new(seed: Option<u64>) -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| {
                    Mutex::new(Stripe {
                        pending: HashMap::with_hasher(crate::registry::fast_hash(seed)),
                        fifo: VecDeque::new(),
                        heap: BinaryHeap::new(),
                    })
                })
                .collect(),
            pending: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            paused_until: AtomicU64::new(0),
            next_stripe: AtomicUsize::new(0),
        }
    }

    fn stripe(&self, id: &ClientId, hasher: &FastHash) -> &Mutex<Stripe> {
        &self.stripes[(hasher.hash_one(id.as_str()) as usize) % STRIPES]
    }
}

/// Pending syncs of every peer.
pub(crate) struct SyncScheduler {
    peers: Vec<PeerQueue>,
    hasher: FastHash,
    delay: Millis,
}

impl SyncScheduler {
    pub(crate) fn new(members: usize, delay: Millis, seed: Option<u64>) -> Self {
        Self {
            peers: (0..members).map(|_| PeerQueue::new(seed)).collect(),
            hasher: crate::registry::fast_hash(seed),
            delay,
        }
    }

    pub(crate) fn peer(&self, peer: usize) -> &PeerQueue {
        &self.peers[peer]
    }

    /// Schedules `id` for `peer` after the regular sync delay (merging with a pending entry).
    pub(crate) fn schedule(&self, peer: usize, id: &ClientId, now: Millis) {
        self.schedule_at(peer, id, now.saturating_add(self.delay), true);
    }

    /// Schedules `id` for `peer` at `due` (retries, repairs): never later than a pending entry.
    pub(crate) fn schedule_at(&self, peer: usize, id: &ClientId, due: Millis, regular: bool) {
        let q = &self.peers[peer];
        if q.stripe(id, &self.hasher).lock().schedule(id, due, regular) {
            q.pending.fetch_add(1, Relaxed);
        }
    }

    /// Takes up to `max` clients due for `peer` at `now`, fairly across stripes.
    pub(crate) fn take_due(&self, peer: usize, now: Millis, max: usize) -> Vec<ClientId> {
        let q = &self.peers[peer];
        let mut out = Vec::new();
        if q.pending.load(Relaxed) == 0 {
            return out;
        }
        let start = q.next_stripe.fetch_add(1, Relaxed);
        // Two passes: first a fair share from each stripe, then fill up.
        let share = max.div_ceil(STRIPES).max(1);
        for pass in 0..2 {
            for k in 0..STRIPES {
                if out.len() >= max {
                    break;
                }
                let limit = if pass == 0 {
                    (out.len() + share).min(max)
                } else {
                    max
                };
                q.stripes[(start + k) % STRIPES]
                    .lock()
                    .take_due(now, limit, &mut out);
            }
        }
        q.pending.fetch_sub(out.len(), Relaxed);
        out
    }

    /// Number of clients pending for `peer`.
    pub(crate) fn pending(&self, peer: usize) -> usize {
        self.peers[peer].pending.load(Relaxed)
    }

    /// The earliest due time pending for `peer`.
    pub(crate) fn next_due(&self, peer: usize) -> Option<Millis> {
        self.peers[peer]
            .stripes
            .iter()
            .filter_map(|s| s.lock().next_due())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    #[test]
    fn changes_merge_within_the_delay_anchored_at_the_first() {
        let s = SyncScheduler::new(2, 1000, None);
        s.schedule(1, &id("a"), 0);
        s.schedule(1, &id("a"), 500);
        s.schedule(1, &id("a"), 999);
        assert_eq!(s.pending(1), 1);
        assert!(s.take_due(1, 999, 10).is_empty());
        assert_eq!(s.take_due(1, 1000, 10), vec![id("a")]);
        assert_eq!(s.pending(1), 0);
        // Continuous churn: a change every 100 ms still flushes every second.
        let mut flushed = 0;
        for t in (2000..10_000).step_by(100) {
            s.schedule(1, &id("b"), t);
            flushed += s.take_due(1, t, 10).len();
        }
        assert!(flushed >= 7, "churn starved replication: {flushed} flushes");
    }

    #[test]
    fn retries_never_delay_pending_state() {
        let s = SyncScheduler::new(2, 1000, None);
        s.schedule(1, &id("a"), 0); // due 1000
        s.schedule_at(1, &id("a"), 3000, false); // a failed batch's retry: keeps 1000
        assert_eq!(s.take_due(1, 1000, 10), vec![id("a")]);
        assert!(s.take_due(1, 5000, 10).is_empty(), "no duplicate entry");
        s.schedule_at(1, &id("b"), 4000, false);
        s.schedule(1, &id("b"), 2500); // regular change due 3500 comes first
        assert_eq!(s.take_due(1, 3500, 10), vec![id("b")]);
        assert!(s.take_due(1, 9000, 10).is_empty());
    }

    #[test]
    fn take_due_is_bounded_and_ordered() {
        let s = SyncScheduler::new(2, 0, None);
        for i in 0..100 {
            s.schedule(1, &id(&format!("c{i}")), i);
        }
        assert_eq!(s.take_due(1, 1000, 30).len(), 30);
        assert_eq!(s.pending(1), 70);
        assert_eq!(s.next_due(1).map(|d| d <= 1000), Some(true));
        assert_eq!(s.take_due(1, 1000, 1000).len(), 70);
    }
}
