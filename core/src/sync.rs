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
//! One entry serves every peer a change is scheduled for: it carries the set of peers
//! (of one group of 64, [`GROUP`]) it is pending for, so a change is hashed, found and
//! stored once, not once per peer; each peer has its own queue of due times (a *lane*)
//! pointing at the entries. Peers part ways only when their due times do: a peer that
//! took the client is scheduled again by the next change in an entry of its own, while
//! the others keep the earlier due time of the first; a peer rescheduled earlier (a
//! retry, a repair, a put-back) splits off into an entry of its own. A schedule merges
//! its state into the entry it meets, for all of that entry's peers: a peer may so send
//! a newer state than was scheduled for it, or read the registry (none), never an older one.
//!
//! A failed batch puts its clients back with a growing retry delay; a client that is
//! already pending again keeps the earlier of the two due times, and its newer state is
//! what the next flush sends.
//!
//! The flush takes clients in due order (within each stripe; the stripe a take starts at
//! rotates), and takes them *before* they are due once a whole batch is pending (see
//! [`SyncScheduler::take_early_into`]): a full batch has nothing left to merge into it, so
//! it leaves at once; what is taken back is put back with its due time. A batch is built
//! in take order: what a full batch puts back was taken after what it sends.
//!
//! Entries are striped by client id so concurrent writers rarely meet on one mutex.

use crate::hash::{mix64, stable_hash64, unmix64};
use crate::member::MAX_MEMBERS;
use crate::model::ClientId;
use crate::registry::Client;
use crate::time::Millis;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;
use parking_lot::Mutex;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

mod lane;

use lane::{Fifo, Lane};

const STRIPES: usize = 16;

/// Peers per group: an entry's peers are a bit mask over one group's.
const GROUP: usize = 64;

/// The group of `peer` and its bit in that group's masks.
pub(crate) fn group_bit(peer: usize) -> (u16, u64) {
    ((peer / GROUP) as u16, 1 << (peer % GROUP))
}

/// The peers of `group` in `mask`.
pub(crate) fn peers_of(group: u16, mask: u64) -> PeersOf {
    PeersOf {
        base: usize::from(group) * GROUP,
        bits: mask,
    }
}

#[derive(Clone)]
pub(crate) struct PeersOf {
    base: usize,
    bits: u64,
}

impl Iterator for PeersOf {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.bits == 0 {
            return None;
        }
        let b = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(self.base + b)
    }
}

/// The stripe of an id's table hash: bits the stripe's table does not index by (it takes
/// its buckets from the low bits and its tags from the top seven).
fn stripe_of(slot: u64) -> usize {
    (slot >> 32) as usize % STRIPES
}

/// A client taken from the queue: its id, due time, the id's stable hash (the
/// registry's, [`stable_hash64`]: the flush finds the client without hashing its id),
/// the state to send, if the entry holds one (else the flush reads the registry), and the
/// followers of the take that took it too (see [`SyncScheduler::take_into`]).
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub(crate) id: ClientId,
    pub(crate) due: Millis,
    pub(crate) hash: u64,
    pub(crate) state: Option<Arc<Client>>,
    pub(crate) also: u64,
}

/// Where a take hands the clients it takes, one at a time as they leave the queue (under
/// the stripe's lock: see [`SyncScheduler::take_into`]). A closure taking [`Taken`] is one
/// that takes every client whole.
pub(crate) trait TakeSink {
    /// A client whose entry held `state`, due at `due`, of stable hash `hash`, taken for
    /// the take's peer and for the followers in `also`: taken in (`None`: the entry's id
    /// is dropped, never moved), or handed back to be passed whole to
    /// [`TakeSink::taken`].
    #[inline(always)]
    fn held(
        &mut self,
        state: Arc<Client>,
        due: Millis,
        hash: u64,
        also: u64,
    ) -> Option<Arc<Client>> {
        let _ = (due, hash, also);
        Some(state)
    }

    /// A client taken, whole.
    fn taken(&mut self, t: Taken);

    /// Whether the take should ask for each held state's lines a client ahead (see
    /// [`Stripe::take_due_into`]): where the states are likely out of the caches (a
    /// registry of [`Config::prefetch_from`](crate::Config::prefetch_from) clients or
    /// more); the hint's lookup costs instructions a small registry does not win back.
    #[inline(always)]
    fn ahead(&self) -> bool {
        false
    }
}

impl<F: FnMut(Taken)> TakeSink for F {
    #[inline(always)]
    fn taken(&mut self, t: Taken) {
        self(t);
    }
}

/// A pending client: its id, when it is due, its table hash, the state to send (`None`:
/// whatever the registry holds when it is sent) and the peers it is pending for. Every
/// peer is in at most one entry of a client.
struct Pending {
    id: ClientId,
    due: Millis,
    /// The table hash, [`Mix::slot`] of the id's stable hash, kept (not the stable hash:
    /// the lanes hold it, so a take finds the entry by it without mixing, and a rehash
    /// reads it). A take gives the stable hash from the state (the client keeps it) or
    /// unmixes it ([`Mix::unslot`]), so the entry stays 64 bytes.
    slot: u64,
    state: Option<Arc<Client>>,
    /// The peers of `group` it is pending for: bit `peer % GROUP`.
    mask: u64,
    group: u16,
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

/// How the queues hash: an id's stable hash (computed once per schedule and handed to
/// the flush) mixed with a per-process key, so that ids chosen to collide in one
/// process's tables do not in another's (as the shards' tables' seeded hash tags do).
#[derive(Clone, Copy)]
struct Mix(u64);

impl Mix {
    #[inline]
    fn slot(self, hash: u64) -> u64 {
        mix64(self.0 ^ hash)
    }

    /// The stable hash whose table hash is `slot`: [`Mix::slot`] undone (the mix is a
    /// bijection, [`unmix64`]).
    #[inline]
    fn unslot(self, slot: u64) -> u64 {
        unmix64(slot) ^ self.0
    }

    /// An id's stable hash with its table hash.
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

/// One schedule of a client: its keys and id, the state it stored (if any), when it is
/// due and whether in the regular due order (after the sync delay).
///
/// The state is held, not borrowed: a new entry takes it ([`Change::pending`]), so the
/// write that stored it hands its reference over instead of the entry taking a second one
/// and the write dropping its own: two locked instructions on the new client's count line
/// fewer for each new client. A change for peers of several groups (64 members or more)
/// schedules a copy for each group.
#[derive(Clone)]
struct Change<'a> {
    keys: Keys,
    id: &'a ClientId,
    state: Option<Arc<Client>>,
    due: Millis,
    regular: bool,
}

impl Change<'_> {
    /// A new entry of this change for the peers of `group` in `mask`: its state moved in.
    fn pending(&mut self, group: u16, mask: u64) -> Pending {
        Pending {
            state: self.state.take(),
            ..self.pending_stateless(group, mask)
        }
    }

    fn pending_stateless(&self, group: u16, mask: u64) -> Pending {
        Pending {
            id: self.id.clone(),
            due: self.due,
            slot: self.keys.slot,
            state: None,
            mask,
            group,
        }
    }
}

struct Stripe {
    /// Every pending client, found by its table hash ([`Mix::slot`]).
    pending: HashTable<Pending>,
    /// Each peer's due times, by peer index.
    lanes: Box<[Lane]>,
}

impl Stripe {
    /// A stripe for `peers` peers with room for `room` clients before its table and
    /// queues grow.
    fn new(peers: usize, room: usize) -> Self {
        Self {
            pending: HashTable::with_capacity(room),
            lanes: (0..peers)
                .map(|_| Lane {
                    fifo: Fifo::with_capacity(room),
                    heap: BinaryHeap::new(),
                    last: 0,
                })
                .collect(),
        }
    }

    /// Schedules `c` for the peers of `group` in `mask`; returns those it was not
    /// pending for before. A client pending for some of them is merged into their
    /// entries (a peer due later split off into one of its own); the others get a new
    /// entry. `on_new` is called for each of those peers as its lane gets the entry (the
    /// caller counts them in the same walk over the peers). A new entry takes `c`'s state.
    fn schedule(
        &mut self,
        mix: Mix,
        c: &mut Change<'_>,
        group: u16,
        mut mask: u64,
        mut on_new: impl FnMut(usize),
    ) -> u64 {
        debug_assert_eq!(c.keys.slot, mix.slot(c.keys.hash));
        let slot = c.keys.slot;
        loop {
            let Self { pending, lanes } = self;
            // An entry of the client pending for some of the peers.
            let entry = pending.entry(
                c.keys.slot,
                |p| p.slot == slot && p.group == group && p.mask & mask != 0 && p.id == *c.id,
                |p| p.slot,
            );
            let split = match entry {
                Slot::Vacant(v) => {
                    // The loop ends here: nothing needs the state after the new entry.
                    v.insert(c.pending(group, mask));
                    for peer in peers_of(group, mask) {
                        lanes[peer].push(slot, c.due, c.regular);
                        on_new(peer);
                    }
                    return mask;
                }
                Slot::Occupied(mut o) => {
                    let p = o.get_mut();
                    let common = p.mask & mask;
                    mask &= !common;
                    merge(&mut p.state, c.state.as_ref());
                    if p.due > c.due {
                        Self::earlier(p, lanes, c, common)
                    } else {
                        None
                    }
                }
            };
            if let Some(s) = split {
                pending.insert_unique(c.keys.slot, s, |p| p.slot);
            }
            if mask == 0 {
                return 0;
            }
        }
    }

    /// Makes `p` due earlier, at `c`'s due time, for its peers in `common`: the whole
    /// entry, or a new one split off for them (returned). Their queue entries of `p`
    /// become obsolete (they no longer match its due time, or its peers).
    #[cold]
    fn earlier(
        p: &mut Pending,
        lanes: &mut [Lane],
        c: &Change<'_>,
        common: u64,
    ) -> Option<Pending> {
        for peer in peers_of(p.group, common) {
            lanes[peer].push_heap(c.keys.slot, c.due);
        }
        if p.mask == common {
            p.due = c.due;
            None
        } else {
            p.mask &= !common;
            Some(Pending {
                state: p.state.clone(),
                ..c.pending_stateless(p.group, common)
            })
        }
    }

    /// Pops up to `max` clients due for `peer` at `now`, earliest first (until `out` holds
    /// `max`).
    #[cfg(test)]
    fn take_due(&mut self, mix: Mix, peer: usize, now: Millis, max: usize, out: &mut Vec<Taken>) {
        let mut taken = out.len();
        self.take_due_into::<false, false>(mix, peer, 0, &[], now, max, &mut taken, &mut |t| {
            out.push(t)
        });
    }

    /// Pops clients due for `peer` at `now`, earliest first, into `sink`, until `*taken`
    /// (counting them) reaches `max`; each taken entry pending for any of `followers`
    /// (peers of `peer`'s group, bits as in an entry's mask) is taken for those too
    /// ([`Stripe::follow`], with their counts in `counts`, this stripe's row). `FOLLOW`:
    /// whether there are followers (without, the loop is the one of a take alone: the
    /// followers' questions cost ~17 instructions a client taken).
    ///
    /// `AHEAD`: each turn also asks for the held state of the fifo's next entry, if it is
    /// due (its pending entry looked up, the state's two lines hinted): the take's one
    /// miss a client, on the state it offers the sink (its hash, its size), then comes
    /// while the client before it is handled.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn take_due_into<const FOLLOW: bool, const AHEAD: bool>(
        &mut self,
        mix: Mix,
        peer: usize,
        followers: u64,
        counts: &[AtomicUsize],
        now: Millis,
        max: usize,
        taken: &mut usize,
        sink: &mut impl TakeSink,
    ) {
        let (group, bit) = group_bit(peer);
        debug_assert_eq!(followers & bit, 0);
        let Self { pending, lanes } = self;
        while *taken < max {
            let lane = &mut lanes[peer];
            let Some((due, slot, fifo)) = lane.front() else {
                break;
            };
            if due > now {
                break;
            }
            if AHEAD && fifo {
                Self::ask_ahead(pending, &lane.fifo, now);
            }
            lane.pop_front(fifo);
            // Skip queue entries made obsolete by a reschedule to an earlier time (the
            // pending entry stays, due when the earlier entry says).
            let found = pending.find_entry(slot, |p| {
                p.slot == slot && p.due == due && p.group == group && p.mask & bit != 0
            });
            let Ok(mut entry) = found else { continue };
            let p = entry.get_mut();
            *taken += 1;
            let also = if FOLLOW { p.mask & followers } else { 0 };
            if FOLLOW && also != 0 {
                Self::follow(lanes, counts, group, also, due, slot);
            }
            if p.mask == bit | also {
                // The fields are moved out of the removed entry as it is read (bound
                // whole, it was copied once more on the stack). Its due time and table
                // hash are the queue's (the lookup matched them).
                let (Pending { id, state, .. }, _) = entry.remove();
                // A held state is offered alone: the id goes along only if it is refused.
                // Its stable hash is the state's, else the table hash's unmixed.
                let Some((state, hash)) = offer(sink, mix, state, slot, due, also) else {
                    continue;
                };
                sink.taken(Taken {
                    id,
                    due,
                    hash,
                    state,
                    also,
                });
            } else {
                // Still pending for other peers.
                p.mask &= !(bit | also);
                let Some((state, hash)) = offer(sink, mix, p.state.clone(), p.slot, p.due, also)
                else {
                    continue;
                };
                sink.taken(Taken {
                    id: p.id.clone(),
                    due: p.due,
                    hash,
                    state,
                    also,
                });
            }
        }
        // The fifo entries taken are let go of once, not at every pop.
        lanes[peer].fifo.settle();
        if FOLLOW {
            for f in peers_of(group, followers) {
                lanes[f].fifo.settle();
            }
        }
    }

    /// The hint of [`Stripe::take_due_into`] with `AHEAD`: the held state of the entry
    /// after the fifo's front, if it is due by `now` (a lookup by its table hash alone: an
    /// entry of another due time or peer costs a useless hint, never a wrong take).
    #[inline(always)]
    fn ask_ahead(pending: &HashTable<Pending>, fifo: &Fifo, now: Millis) {
        if let Some(&(due, slot)) = fifo.items.get(fifo.head + 1)
            && due <= now
            && let Some(p) = pending.find(slot, |p| p.slot == slot)
            && let Some(state) = &p.state
        {
            Client::prefetch(state);
        }
    }

    /// The entry of table hash `slot` due at `due`, taken by a leader, taken for the
    /// followers of `group` in `also` too: each one's count goes down, and its pointer to
    /// the entry is popped when it heads its queue (the lanes are in step: a burst's
    /// usual case, where every change was scheduled for all of them at once). Otherwise
    /// the pointer stays where it is and finds nothing when its turn comes, as a pointer
    /// of an entry rescheduled earlier does: for every peer, hash and due time there are
    /// still at least as many pointers as entries.
    #[inline]
    fn follow(
        lanes: &mut [Lane],
        counts: &[AtomicUsize],
        group: u16,
        also: u64,
        due: Millis,
        slot: u64,
    ) {
        for f in peers_of(group, also) {
            let lane = &mut lanes[f];
            if let Some((d, s, fifo)) = lane.front()
                && d == due
                && s == slot
            {
                lane.pop_front(fifo);
            }
            let n = &counts[f];
            n.store(n.load(Relaxed) - 1, Relaxed);
        }
    }
}

/// A taken entry's held state offered to `sink` alone: `None` if the sink took it, else
/// the state it refused (or none held) and the id's stable hash (the state's, else the
/// table hash `slot` unmixed), to go to [`TakeSink::taken`] with the id.
#[inline(always)]
fn offer(
    sink: &mut impl TakeSink,
    mix: Mix,
    state: Option<Arc<Client>>,
    slot: u64,
    due: Millis,
    also: u64,
) -> Option<(Option<Arc<Client>>, u64)> {
    match state {
        Some(c) => {
            let hash = c.id_hash();
            debug_assert_eq!(hash, mix.unslot(slot));
            sink.held(c, due, hash, also)
                .map(|refused| (Some(refused), hash))
        }
        None => Some((None, mix.unslot(slot))),
    }
}

/// A peer's sync counters and flow control (its pending count is kept per stripe:
/// [`SyncScheduler::counts`]).
pub(crate) struct PeerQueue {
    pub(crate) inflight: AtomicUsize,
    pub(crate) consecutive_failures: AtomicU32,
    /// No batch is sent before this time (back-off after failures).
    pub(crate) paused_until: AtomicU64,
    /// Until this time the peer's queue is in a burst (a full batch left early within
    /// the last sync delay): a partial batch then waits the burst linger, not all of it.
    pub(crate) burst_until: AtomicU64,
    next_stripe: AtomicUsize,
}

impl PeerQueue {
    fn new() -> Self {
        Self {
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
    stripes: Box<[Mutex<Stripe>]>,
    /// Clients pending for each peer in each stripe (`stripe × peers + peer`), changed
    /// only under the stripe's lock, by a load and a store (no locked instruction: a
    /// schedule's `lock incq` of one shared per-peer count waited for its store of the
    /// new entry, a miss in a large table, ~2.6 % of the 1 M burst's samples); read by
    /// summing a peer's sixteen without a lock.
    counts: Box<[AtomicUsize]>,
    peers: Vec<PeerQueue>,
    mix: Mix,
    delay: Millis,
}

impl SyncScheduler {
    /// Queues for `members` peers, with room for a batch of `batch` clients before they
    /// grow (a burst after a quiet spell fills a batch without regrowing from empty).
    pub(crate) fn new(members: usize, delay: Millis, batch: usize, seed: Option<u64>) -> Self {
        let room = batch.div_ceil(STRIPES) * 5 / 4;
        Self {
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::new(members, room)))
                .collect(),
            counts: (0..STRIPES * members)
                .map(|_| AtomicUsize::new(0))
                .collect(),
            peers: (0..members).map(|_| PeerQueue::new()).collect(),
            mix: Mix(crate::registry::fast_hash(seed).hash_one(0x7379_6e63_u64)),
            delay,
        }
    }

    /// The stable hash of an id (the registry's); its queue entries keep its table hash
    /// ([`Mix::slot`] of it), from which [`Mix::unslot`] gives it back.
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
    /// module's documentation): one entry for all of them, the id hashed once (a stored
    /// state knows its id's hash: then not at all).
    pub(crate) fn schedule_all(
        &self,
        peers: impl IntoIterator<Item = usize, IntoIter: Clone>,
        id: &ClientId,
        state: Option<Arc<Client>>,
        now: Millis,
    ) {
        self.schedule_keyed(peers, self.regular(id, state, now));
    }

    /// [`Self::schedule_all`] for the peers in `mask`: bit `i` for peer `i` (the peers'
    /// mask a member list keeps when all of them are below 64, so that a change does not
    /// walk the list).
    pub(crate) fn schedule_mask(
        &self,
        mask: u64,
        id: &ClientId,
        state: Option<Arc<Client>>,
        now: Millis,
    ) {
        let mut c = self.regular(id, state, now);
        let s = stripe_of(c.keys.slot);
        let mut stripe = self.stripes[s].lock();
        self.schedule_group(&mut stripe, s, &mut c, 0, mask);
        drop(stripe);
        // A state not moved into an entry (the client was pending already) is dropped
        // after the lock.
        drop(c);
    }

    /// A change of `id` storing `state` at `now`, due after the regular sync delay.
    fn regular<'a>(&self, id: &'a ClientId, state: Option<Arc<Client>>, now: Millis) -> Change<'a> {
        let hash = state
            .as_ref()
            .map_or_else(|| Self::hash(id), |c| c.id_hash());
        debug_assert_eq!(hash, Self::hash(id));
        Change {
            keys: self.mix.keys(hash),
            id,
            state,
            due: now.saturating_add(self.delay),
            regular: true,
        }
    }

    /// Schedules `id` for `peer` at `due` (retries, repairs): never later than a pending
    /// entry. The flush reads the client's state from the registry.
    pub(crate) fn schedule_at(&self, peer: usize, id: &ClientId, due: Millis, regular: bool) {
        let c = Change {
            keys: self.mix.keys(Self::hash(id)),
            id,
            state: None,
            due,
            regular,
        };
        self.schedule_keyed([peer], c);
    }

    /// Schedules `c` for `peers`: one entry per group of peers (see [`GROUP`]).
    fn schedule_keyed<I>(&self, peers: I, mut c: Change<'_>)
    where
        I: IntoIterator<Item = usize>,
        I::IntoIter: Clone,
    {
        // The peers' groups: one, unless there are 64 members or more.
        let peers = peers.into_iter();
        let (mut group, mut mask, mut more) = (0, 0, false);
        for peer in peers.clone() {
            let (g, bit) = group_bit(peer);
            if mask == 0 || g == group {
                (group, mask) = (g, mask | bit);
            } else {
                more = true;
            }
        }
        let s = stripe_of(c.keys.slot);
        let mut stripe = self.stripes[s].lock();
        if more {
            self.schedule_group(&mut stripe, s, &mut c.clone(), group, mask);
            self.schedule_more(&mut stripe, s, peers, &c, group);
        } else {
            self.schedule_group(&mut stripe, s, &mut c, group, mask);
        }
        drop(stripe);
        drop(c);
    }

    /// Schedules `c` for the peers of `group` in `mask` in stripe `s` (`stripe`, locked),
    /// counting those it is new for (under the stripe's lock: a take that finds the entry
    /// counts it after).
    #[inline(always)]
    fn schedule_group(
        &self,
        stripe: &mut Stripe,
        s: usize,
        c: &mut Change<'_>,
        group: u16,
        mask: u64,
    ) {
        if mask != 0 {
            stripe.schedule(self.mix, c, group, mask, |peer| {
                let n = &self.counts[s * self.peers.len() + peer];
                n.store(n.load(Relaxed) + 1, Relaxed);
            });
        }
    }

    /// [`Self::schedule_keyed`] for the peers not in group `done`.
    #[cold]
    fn schedule_more(
        &self,
        stripe: &mut Stripe,
        s: usize,
        peers: impl Iterator<Item = usize>,
        c: &Change<'_>,
        done: u16,
    ) {
        let mut masks = [0u64; MAX_MEMBERS.div_ceil(GROUP)];
        for (g, bit) in peers.map(group_bit).filter(|(g, _)| *g != done) {
            masks[usize::from(g)] |= bit;
        }
        for (g, mask) in masks.into_iter().enumerate().filter(|(_, m)| *m != 0) {
            self.schedule_group(stripe, s, &mut c.clone(), g as u16, mask);
        }
    }

    /// [`Self::take_early_into`] into a vector (tests).
    #[cfg(test)]
    pub(crate) fn take_early(&self, peer: usize, now: Millis, max: usize) -> Vec<Taken> {
        let mut out = Vec::new();
        self.take_early_into(peer, 0, now, max, &mut |t| out.push(t));
        out
    }

    /// Takes up to `max` clients for `peer` whether due or not, into `sink` (see
    /// [`Self::take_into`], also for `followers`): first those due at `now`, then the
    /// earliest pending of each stripe in turn; returns how many were taken. The flush
    /// does so when a whole batch is pending, and puts back with
    /// [`Self::put_back_shared`] what it does not send.
    pub(crate) fn take_early_into(
        &self,
        peer: usize,
        followers: u64,
        now: Millis,
        max: usize,
        sink: &mut impl TakeSink,
    ) -> usize {
        let n = self.take_into(peer, followers, now, max, sink);
        if n < max {
            n + self.take_into(peer, followers, Millis::MAX, max - n, sink)
        } else {
            n
        }
    }

    /// Takes up to `max` clients due for `peer` at `now` (with their due times), fairly
    /// across stripes.
    pub(crate) fn take(&self, peer: usize, now: Millis, max: usize) -> Vec<Taken> {
        let mut out = Vec::with_capacity(max.min(self.pending(peer)));
        self.take_into(peer, 0, now, max, &mut |t| out.push(t));
        out
    }

    /// [`Self::take`] into `sink`, one client at a time as it leaves its queue (the flush
    /// builds its batch there, without a vector of taken clients between); returns how
    /// many were taken. `sink` runs under a stripe's lock: it must not call into the
    /// scheduler, nor take a lock a scheduling writer may hold.
    ///
    /// The peers in `followers` (of `peer`'s group: bit `f % 64` for peer `f`) follow the
    /// take: a client taken that is pending for some of them is taken for those as well
    /// (they are handed to `sink` with it, [`Taken::also`]), so one batch can go to all
    /// of them, taken and encoded once; what the caller puts back, it puts back for them
    /// too. Whether they are due is the take's question, asked of `peer`'s queue: a
    /// follower may so send a client before its due time, as an early take does.
    #[inline]
    pub(crate) fn take_into(
        &self,
        peer: usize,
        followers: u64,
        now: Millis,
        max: usize,
        sink: &mut impl TakeSink,
    ) -> usize {
        match (followers == 0, sink.ahead()) {
            (true, false) => self.take_with::<false, false>(peer, 0, now, max, sink),
            (true, true) => self.take_with::<false, true>(peer, 0, now, max, sink),
            (false, false) => self.take_with::<true, false>(peer, followers, now, max, sink),
            (false, true) => self.take_with::<true, true>(peer, followers, now, max, sink),
        }
    }

    /// [`Self::take_into`], with followers or without (`FOLLOW`), asking for the states
    /// ahead or not (`AHEAD`, see [`TakeSink::ahead`]).
    #[inline]
    fn take_with<const FOLLOW: bool, const AHEAD: bool>(
        &self,
        peer: usize,
        followers: u64,
        now: Millis,
        max: usize,
        sink: &mut impl TakeSink,
    ) -> usize {
        let q = &self.peers[peer];
        if self.pending(peer) == 0 {
            return 0;
        }
        let mut taken = 0;
        let peers = self.peers.len();
        let start = q.next_stripe.fetch_add(1, Relaxed);
        // Two passes: first a fair share from each stripe, then fill up.
        let share = max.div_ceil(STRIPES).max(1);
        for pass in 0..2 {
            for k in 0..STRIPES {
                if taken >= max {
                    break;
                }
                let limit = if pass == 0 {
                    (taken + share).min(max)
                } else {
                    max
                };
                let s = (start + k) % STRIPES;
                let mut stripe = self.stripes[s].lock();
                let before = taken;
                let counts = &self.counts[s * peers..(s + 1) * peers];
                stripe.take_due_into::<FOLLOW, AHEAD>(
                    self.mix, peer, followers, counts, now, limit, &mut taken, sink,
                );
                let n = &counts[peer];
                n.store(n.load(Relaxed) - (taken - before), Relaxed);
            }
        }
        taken
    }

    /// Returns a client taken by [`Self::take`] but not sent, due at its old due time
    /// (merging with anything scheduled for it since: the earlier due time wins).
    #[cfg(test)]
    pub(crate) fn put_back(&self, peer: usize, id: &ClientId, due: Millis) {
        self.schedule_at(peer, id, due, true);
    }

    /// [`Self::put_back`] of a client taken, with its hash and the state it held.
    #[cfg(test)]
    pub(crate) fn put_back_taken(&self, peer: usize, t: &Taken) {
        self.put_back_shared(peer, t.also, &t.id, t.hash, t.due, t.state.as_ref());
    }

    /// Returns a client taken but not sent (its id, hash, due time and the state it
    /// held), as a put-back does, for `peer` and the followers in `also` that took
    /// it with it ([`Taken::also`]): one schedule for all of them.
    pub(crate) fn put_back_shared(
        &self,
        peer: usize,
        also: u64,
        id: &ClientId,
        hash: u64,
        due: Millis,
        state: Option<&Arc<Client>>,
    ) {
        let c = Change {
            keys: self.mix.keys(hash),
            id,
            state: state.cloned(),
            due,
            regular: true,
        };
        let (group, _) = group_bit(peer);
        self.schedule_keyed(std::iter::once(peer).chain(peers_of(group, also)), c);
    }

    /// Every client pending for `peer`, with its due time (in no particular order).
    pub(crate) fn pending_clients(&self, peer: usize) -> Vec<(ClientId, Millis)> {
        let (group, bit) = group_bit(peer);
        let mut out = Vec::new();
        for s in self.stripes.iter() {
            out.extend(
                s.lock()
                    .pending
                    .iter()
                    .filter(|p| p.group == group && p.mask & bit != 0)
                    .map(|p| (p.id.clone(), p.due)),
            );
        }
        out
    }

    /// The latest due time ever queued for `peer` in the regular order (0 before any):
    /// the first change of the client that became pending for it last, plus the delay.
    /// Each stripe's lane keeps its own ([`Lane::last`]); the flush asks, within a burst,
    /// whether the burst's writes stopped.
    pub(crate) fn newest_regular_due(&self, peer: usize) -> Millis {
        self.stripes
            .iter()
            .map(|s| s.lock().lanes[peer].last)
            .max()
            .unwrap_or(0)
    }

    /// Number of clients pending for `peer`.
    pub(crate) fn pending(&self, peer: usize) -> usize {
        let peers = self.peers.len();
        (0..STRIPES)
            .map(|s| self.counts[s * peers + peer].load(Relaxed))
            .sum()
    }

    /// The earliest due time pending for `peer`.
    pub(crate) fn next_due(&self, peer: usize) -> Option<Millis> {
        self.stripes
            .iter()
            .filter_map(|s| s.lock().lanes[peer].next_due())
            .min()
    }
}

#[cfg(test)]
mod ahead_tests;
#[cfg(test)]
mod tests;
