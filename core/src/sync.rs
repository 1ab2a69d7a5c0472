//! Sync scheduling: which changed clients are due for which peer, and when.
//!
//! Every change of a client this node owns schedules that client for every peer. A
//! client pending for a peer is one entry, whatever the number of changes: the entry
//! keeps the due time of the *first* pending change (`first + sync delay`), so changes
//! within the delay merge and continuous churn cannot postpone replication. The entry
//! holds the newest state scheduled with it (a registration's stored client: the flush
//! sends it without finding it in the registry again), or none: then the flush reads the
//! client's latest full state (or its deletion) from the registry. An entry holding a
//! state keeps the one of the highest revision of those scheduled; a schedule without a
//! state (a deletion, a retry, a repair) makes the entry read the registry, which holds
//! whatever is newest. So a batch never carries anything older than what is pending. A
//! held state can be older than the registry's, though: a writer that stored revision 5
//! may schedule it after revision 6 was scheduled and sent, or the registry may change
//! without a schedule here (a replica's apply after a re-homing). Such a batch carries
//! a stale state, which a peer refuses by its revision; the newest state is always sent
//! at least once, because every stored state schedules itself.
//!
//! A failed batch puts its clients back with a growing retry delay; a client that is
//! already pending again keeps the earlier of the two due times, and its newer state is
//! what the next flush sends.
//!
//! The flush takes clients in due order, and takes them *before* they are due once a
//! whole batch is pending (see [`SyncScheduler::take`]): a full batch has nothing left to
//! merge into it, so it leaves at once; what is taken back is put back with its due time.
//!
//! Queues are striped by client id so concurrent writers rarely meet on one mutex.

use crate::hash::{mix64, stable_hash64};
use crate::model::ClientId;
use crate::registry::Client;
use crate::time::Millis;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

const STRIPES: usize = 16;

/// The stripe of an id's table hash: bits the stripe's table does not index by (it takes
/// its buckets from the low bits and its tags from the top seven).
fn stripe_of(slot: u64) -> usize {
    (slot >> 32) as usize % STRIPES
}

/// A client taken from the queue: its id, due time, the id's stable hash (the
/// registry's, [`stable_hash64`]: the flush finds the client without hashing its id) and
/// the state to send, if the entry holds one (else the flush reads the registry).
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub(crate) id: ClientId,
    pub(crate) due: Millis,
    pub(crate) hash: u64,
    pub(crate) state: Option<Arc<Client>>,
}

/// A pending client: its id, when it is due, its id's stable hash and the state to send
/// (`None`: whatever the registry holds when it is sent).
struct Pending {
    id: ClientId,
    due: Millis,
    hash: u64,
    state: Option<Arc<Client>>,
}

/// What an entry holding `held` holds once `new` is scheduled into it: the state of the
/// higher revision if both are states, else none (the registry's state, the newest).
fn merge(held: &mut Option<Arc<Client>>, new: Option<&Arc<Client>>) {
    match (held.as_ref(), new) {
        (Some(h), Some(n)) if n.revision() > h.revision() => *held = Some(n.clone()),
        (Some(_), Some(_)) | (None, _) => {}
        (Some(_), None) => *held = None,
    }
}

/// How the queues hash: an id's stable hash (computed once per schedule, for every peer,
/// and handed to the flush) mixed with a per-process key, so that ids chosen to collide
/// in one process's tables do not in another's (as the shards' tables' seeded hash tags do).
#[derive(Clone, Copy)]
struct Mix(u64);

impl Mix {
    #[inline]
    fn slot(self, hash: u64) -> u64 {
        mix64(self.0 ^ hash)
    }

    /// An id's stable hash with its table hash, mixed once for all of its peers' queues.
    #[inline]
    fn keys(self, hash: u64) -> Keys {
        Keys {
            hash,
            slot: self.slot(hash),
        }
    }
}

/// An id's stable hash and its table hash ([`Mix::slot`] of it).
#[derive(Clone, Copy)]
struct Keys {
    hash: u64,
    slot: u64,
}

struct Stripe {
    /// Every pending client, found by its table hash ([`Mix::slot`]).
    pending: HashTable<Pending>,
    /// Entries scheduled with the regular sync delay: due times are nondecreasing. Each is
    /// a due time and a stable hash, no id: a take removes the pending entry of that hash
    /// due at that time (an entry rescheduled earlier since is not; were two ids' whole
    /// 64-bit hashes equal, each entry is still taken once, at its own due time).
    fifo: VecDeque<(Millis, u64)>,
    /// Entries with other due times (retries, verify repairs, handovers).
    heap: BinaryHeap<Reverse<(Millis, ClientId)>>,
}

impl Stripe {
    /// A stripe with room for `room` clients before its table and queue grow.
    fn new(room: usize) -> Self {
        Self {
            pending: HashTable::with_capacity(room),
            fifo: VecDeque::with_capacity(room),
            heap: BinaryHeap::new(),
        }
    }

    /// Schedules `id` (of `keys`) at `due` without a state; whether it was not pending.
    #[cfg(test)]
    fn schedule(
        &mut self,
        mix: Mix,
        keys: Keys,
        id: &ClientId,
        due: Millis,
        regular: bool,
    ) -> bool {
        self.schedule_state(mix, keys, id, None, due, regular)
    }

    /// Schedules `id` (of `keys`) at `due` with `state` (see [`merge`]); whether it was
    /// not pending before.
    fn schedule_state(
        &mut self,
        mix: Mix,
        keys: Keys,
        id: &ClientId,
        state: Option<&Arc<Client>>,
        due: Millis,
        regular: bool,
    ) -> bool {
        debug_assert_eq!(keys.slot, mix.slot(keys.hash));
        let hash = keys.hash;
        let entry = self.pending.entry(
            keys.slot,
            |p| p.hash == hash && p.id == *id,
            |p| mix.slot(p.hash),
        );
        match entry {
            Slot::Occupied(mut o) => {
                let p = o.get_mut();
                merge(&mut p.state, state);
                if p.due > due {
                    p.due = due;
                    self.heap.push(Reverse((due, id.clone())));
                }
                false
            }
            Slot::Vacant(v) => {
                v.insert(Pending {
                    id: id.clone(),
                    due,
                    hash,
                    state: state.cloned(),
                });
                if regular && self.fifo.back().is_none_or(|(d, _)| *d <= due) {
                    self.fifo.push_back((due, hash));
                } else {
                    self.heap.push(Reverse((due, id.clone())));
                }
                true
            }
        }
    }

    /// Pops up to `max` clients due at `now`, earliest first.
    fn take_due(&mut self, mix: Mix, now: Millis, max: usize, out: &mut Vec<Taken>) {
        while out.len() < max {
            let from_fifo = match (self.fifo.front(), self.heap.peek()) {
                (Some((a, _)), Some(Reverse((b, _)))) => a <= b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return,
            };
            // Skip queue entries made obsolete by a reschedule to an earlier time (the
            // pending entry stays, due when the earlier entry says).
            let found = if from_fifo {
                let (due, hash) = *self.fifo.front().expect("checked above");
                if due > now {
                    return;
                }
                self.fifo.pop_front();
                self.pending
                    .find_entry(mix.slot(hash), |p| p.hash == hash && p.due == due)
            } else {
                let Reverse((due, _)) = self.heap.peek().expect("checked above");
                if *due > now {
                    return;
                }
                let (due, id) = self.heap.pop().expect("checked above").0;
                let hash = stable_hash64(id.as_str().as_bytes());
                self.pending.find_entry(mix.slot(hash), |p| {
                    p.hash == hash && p.due == due && p.id == id
                })
            };
            if let Ok(entry) = found {
                let (p, _) = entry.remove();
                out.push(Taken {
                    id: p.id,
                    due: p.due,
                    hash: p.hash,
                    state: p.state,
                });
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
    /// Until this time the peer's queue is in a burst (a full batch left early within
    /// the last sync delay): a partial batch then waits a tenth of the delay, not all of it.
    pub(crate) burst_until: AtomicU64,
    next_stripe: AtomicUsize,
}

impl PeerQueue {
    fn new(room: usize) -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::new(room)))
                .collect(),
            pending: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            paused_until: AtomicU64::new(0),
            burst_until: AtomicU64::new(0),
            next_stripe: AtomicUsize::new(0),
        }
    }
}

/// Pending syncs of every peer.
pub(crate) struct SyncScheduler {
    peers: Vec<PeerQueue>,
    mix: Mix,
    delay: Millis,
}

impl SyncScheduler {
    /// Queues for `members` peers, each with room for a batch of `batch` clients before it
    /// grows (a burst after a quiet spell fills a batch without regrowing from empty).
    pub(crate) fn new(members: usize, delay: Millis, batch: usize, seed: Option<u64>) -> Self {
        let room = batch.div_ceil(STRIPES) * 5 / 4;
        Self {
            peers: (0..members).map(|_| PeerQueue::new(room)).collect(),
            mix: Mix(crate::registry::fast_hash(seed).hash_one(0x7379_6e63_u64)),
            delay,
        }
    }

    /// The stable hash of an id (the registry's), which its queue entries keep.
    fn hash(id: &ClientId) -> u64 {
        stable_hash64(id.as_str().as_bytes())
    }

    pub(crate) fn peer(&self, peer: usize) -> &PeerQueue {
        &self.peers[peer]
    }

    /// Schedules `id` for `peer` after the regular sync delay (merging with a pending entry).
    #[cfg(test)]
    pub(crate) fn schedule(&self, peer: usize, id: &ClientId, now: Millis) {
        self.schedule_all([peer], id, None, now);
    }

    /// Schedules `id` for each of `peers` after the regular sync delay (merging with a
    /// pending entry), with the state the change stored if the caller has it (see the
    /// module's documentation); the id is hashed once for all (a stored state knows its
    /// id's hash: then not at all).
    pub(crate) fn schedule_all(
        &self,
        peers: impl IntoIterator<Item = usize>,
        id: &ClientId,
        state: Option<&Arc<Client>>,
        now: Millis,
    ) {
        let hash = state.map_or_else(|| Self::hash(id), |c| c.id_hash());
        debug_assert_eq!(hash, Self::hash(id));
        let keys = self.mix.keys(hash);
        let due = now.saturating_add(self.delay);
        for peer in peers {
            self.schedule_keyed(peer, keys, id, state, due, true);
        }
    }

    /// Schedules `id` for `peer` at `due` (retries, repairs): never later than a pending
    /// entry. The flush reads the client's state from the registry.
    pub(crate) fn schedule_at(&self, peer: usize, id: &ClientId, due: Millis, regular: bool) {
        self.schedule_keyed(peer, self.mix.keys(Self::hash(id)), id, None, due, regular);
    }

    /// Schedules `id` (of `keys`) for `peer` at `due` with `state`.
    fn schedule_keyed(
        &self,
        peer: usize,
        keys: Keys,
        id: &ClientId,
        state: Option<&Arc<Client>>,
        due: Millis,
        regular: bool,
    ) {
        let q = &self.peers[peer];
        let scheduled = q.stripes[stripe_of(keys.slot)]
            .lock()
            .schedule_state(self.mix, keys, id, state, due, regular);
        if scheduled {
            q.pending.fetch_add(1, Relaxed);
        }
    }

    /// Takes up to `max` clients for `peer` whether due or not: first those due at `now`,
    /// then the earliest pending of each stripe in turn. The flush does so when a whole
    /// batch is pending, and puts back with [`Self::put_back`] what it does not send.
    pub(crate) fn take_early(&self, peer: usize, now: Millis, max: usize) -> Vec<Taken> {
        let mut out = self.take(peer, now, max);
        if out.len() < max {
            out.extend(self.take(peer, Millis::MAX, max - out.len()));
        }
        out
    }

    /// Takes up to `max` clients due for `peer` at `now` (with their due times), fairly
    /// across stripes.
    pub(crate) fn take(&self, peer: usize, now: Millis, max: usize) -> Vec<Taken> {
        let q = &self.peers[peer];
        let pending = q.pending.load(Relaxed);
        if pending == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(max.min(pending));
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
                    .take_due(self.mix, now, limit, &mut out);
            }
        }
        q.pending.fetch_sub(out.len(), Relaxed);
        out
    }

    /// Returns a client taken by [`Self::take`] but not sent, due at its old due time
    /// (merging with anything scheduled for it since: the earlier due time wins).
    #[cfg(test)]
    pub(crate) fn put_back(&self, peer: usize, id: &ClientId, due: Millis) {
        self.schedule_at(peer, id, due, true);
    }

    /// [`Self::put_back`] of a client taken, with its hash and the state it held.
    pub(crate) fn put_back_taken(&self, peer: usize, t: &Taken) {
        self.put_back_parts(peer, &t.id, t.hash, t.due, t.state.as_ref());
    }

    /// [`Self::put_back_taken`] of a taken client's parts.
    pub(crate) fn put_back_parts(
        &self,
        peer: usize,
        id: &ClientId,
        hash: u64,
        due: Millis,
        state: Option<&Arc<Client>>,
    ) {
        self.schedule_keyed(peer, self.mix.keys(hash), id, state, due, true);
    }

    /// Every client pending for `peer`, with its due time (in no particular order).
    pub(crate) fn pending_clients(&self, peer: usize) -> Vec<(ClientId, Millis)> {
        let mut out = Vec::new();
        for s in self.peers[peer].stripes.iter() {
            out.extend(s.lock().pending.iter().map(|p| (p.id.clone(), p.due)));
        }
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

    impl SyncScheduler {
        fn take_due(&self, peer: usize, now: Millis, max: usize) -> Vec<ClientId> {
            self.take(peer, now, max)
                .into_iter()
                .map(|t| t.id)
                .collect()
        }
    }

    /// The states of one client at successive revisions (ports 1, 2, ...), as a
    /// registry stores them.
    fn states(n: u16) -> (ClientId, Vec<Arc<Client>>) {
        use crate::model::{InstanceSpec, Publication};
        use crate::{Config, MemberId, registry::Registry};
        let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
        let id = id("1717000000000_10.0.0.7_8080");
        let s = r.service("public", "DEFAULT_GROUP", "svc");
        let states = (1..=n)
            .map(|port| {
                let i = InstanceSpec::new("10.0.0.7", port)
                    .to_instance(r.interner(), &s)
                    .unwrap();
                let p = Publication::single(s.clone(), i);
                let (_, stored) = r
                    .publish_stored(&id, MemberId(0), u64::from(port), |_| Ok(p))
                    .unwrap();
                stored.expect("a change stores a state")
            })
            .collect();
        (id, states)
    }

    #[test]
    fn an_entry_holds_the_newest_state_scheduled_or_none() {
        let (a, v) = states(3);
        assert!(v[0].revision() < v[1].revision() && v[1].revision() < v[2].revision());
        let revision = |t: &Taken| t.state.as_ref().map(|c| c.revision());
        let s = SyncScheduler::new(2, 0, 100, None);
        // Scheduled out of order (two writers racing): the higher revision stays.
        s.schedule_all([1], &a, Some(&v[1]), 0);
        s.schedule_all([1], &a, Some(&v[0]), 0);
        let t = s.take(1, 10, 10);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].hash, SyncScheduler::hash(&a));
        assert_eq!(revision(&t[0]), Some(v[1].revision()));
        // Put back, then a newer change: the newer state is sent.
        s.put_back_taken(1, &t[0]);
        s.schedule_all([1], &a, Some(&v[2]), 5);
        let t = s.take(1, 10, 10);
        assert_eq!(revision(&t[0]), Some(v[2].revision()));
        // A schedule without a state (a deletion, a repair) makes the flush read the
        // registry, whatever states come after it.
        s.schedule_all([1], &a, Some(&v[0]), 0);
        s.schedule_at(1, &a, 0, false);
        s.schedule_all([1], &a, Some(&v[2]), 0);
        let t = s.take(1, 10, 10);
        assert_eq!((t.len(), revision(&t[0])), (1, None));
        assert!(s.take(1, Millis::MAX, 10).is_empty());
    }

    #[test]
    fn taken_clients_carry_the_registrys_hash() {
        let s = SyncScheduler::new(2, 0, 100, None);
        s.schedule(1, &id("1717000000000_10.0.0.7_8080"), 0);
        s.schedule_at(1, &id("10.0.0.7:80#true"), 5, false);
        let taken = s.take(1, 10, 10);
        assert_eq!(taken.len(), 2);
        for t in taken {
            let key = crate::registry::IdKey::new(t.id.as_str());
            assert_eq!(t.hash, key.hash, "{:?}", t.id);
        }
    }

    #[test]
    fn ids_of_one_hash_are_each_taken_once_at_their_due_time() {
        // Queue entries hold no id: two ids whose hashes are equal (forced here) must still
        // be taken once each, each when due, even with an obsolete entry of one of them.
        let mix = Mix(7);
        let mut stripe = Stripe::new(4);
        let (a, b) = (id("a"), id("b"));
        // b is given a's hash (b is only ever queued in the fifo, which keeps no id; a heap
        // entry is hashed again from its id).
        let h = stable_hash64(b"a");
        assert!(stripe.schedule(mix, mix.keys(h), &a, 10, true));
        assert!(stripe.schedule(mix, mix.keys(h), &b, 20, true));
        assert!(!stripe.schedule(mix, mix.keys(h), &a, 5, false)); // a earlier: its fifo entry is obsolete
        assert!(!stripe.schedule(mix, mix.keys(h), &b, 30, true)); // b later: merges, stays due at 20
        let mut out = Vec::new();
        stripe.take_due(mix, 9, 10, &mut out);
        assert_eq!(
            out.iter()
                .map(|t| (t.id.clone(), t.due))
                .collect::<Vec<_>>(),
            [(a.clone(), 5)]
        );
        stripe.take_due(mix, 19, 10, &mut out);
        assert_eq!(
            out.len(),
            1,
            "a's obsolete entry took nothing, b is not due"
        );
        stripe.take_due(mix, 100, 10, &mut out);
        assert_eq!(
            out.iter()
                .map(|t| (t.id.clone(), t.due))
                .collect::<Vec<_>>(),
            [(a, 5), (b, 20)]
        );
        assert!(stripe.pending.is_empty() && stripe.next_due().is_none());
    }

    #[test]
    fn changes_merge_within_the_delay_anchored_at_the_first() {
        let s = SyncScheduler::new(2, 1000, 100, None);
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
        let s = SyncScheduler::new(2, 1000, 100, None);
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
        let s = SyncScheduler::new(2, 0, 100, None);
        for i in 0..100 {
            s.schedule(1, &id(&format!("c{i}")), i);
        }
        assert_eq!(s.take_due(1, 1000, 30).len(), 30);
        assert_eq!(s.pending(1), 70);
        assert_eq!(s.next_due(1).map(|d| d <= 1000), Some(true));
        assert_eq!(s.take_due(1, 1000, 1000).len(), 70);
    }

    #[test]
    fn taking_early_goes_in_due_order_and_put_back_keeps_the_due_time() {
        let s = SyncScheduler::new(2, 1000, 100, None);
        for i in 0..10 {
            s.schedule(1, &id(&format!("c{i}")), i * 10);
        }
        // Nothing is due at 500, but the earliest pending can be taken ahead of time.
        assert!(s.take(1, 500, 10).is_empty());
        assert_eq!(s.take_early(1, 500, 4).len(), 4);
        assert_eq!(s.pending(1), 6);
        assert_eq!(s.take_early(1, 500, 100).len(), 6);
        for i in 0..10 {
            s.schedule(1, &id(&format!("c{i}")), i * 10);
        }
        // Early or not, what is due comes first.
        let early = s.take_early(1, 1020, 4);
        let mut dues: Vec<Millis> = early.iter().map(|t| t.due).collect();
        dues.sort_unstable();
        assert_eq!(dues[..3], [1000, 1010, 1020]);
        assert!(dues[3] > 1020);
        assert_eq!(s.pending(1), 6);
        // Put back, each is due when it was; a change since then keeps the earlier time.
        let first = early.iter().find(|t| t.due == 1000).unwrap().id.clone();
        s.schedule(1, &first, 700); // due 1700: merges, the put-back 1000 wins
        for t in &early {
            s.put_back(1, &t.id, t.due);
        }
        assert_eq!(s.pending(1), 10);
        assert!(s.take(1, 999, 10).is_empty());
        let at_due = s.take_due(1, 1000, 10);
        assert_eq!(at_due, vec![first]);
        assert_eq!(s.take(1, Millis::MAX, 100).len(), 9);
        assert!(s.take(1, Millis::MAX, 100).is_empty(), "no duplicate entry");
    }
}
