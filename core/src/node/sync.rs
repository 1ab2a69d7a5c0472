//! Sync, the node's side: flushing due clients to peers in batches, retrying failed
//! batches, and applying the batches peers send.
//!
//! What is pending and when it is due is [`crate::sync`]'s (a client pending once per
//! peer, due a sync delay after its first pending change). Here a flush turns due
//! clients into batches: each client's latest full state (or its tombstone), packed up to
//! `batch_max_entries` and `batch_max_bytes`, at most `max_inflight_batches` in flight per
//! peer, never to a DOWN peer. A failed batch pauses that peer and reschedules its
//! clients; nothing but "needs sending" is pending, so a retry never overwrites newer
//! state. A replica applies a change only when its revision is newer than what it holds.

use super::{Node, inc};
use crate::member::{MemberId, MemberState};
use crate::message::SharedEncoding;
use crate::message::{Command, PeerRequest, PeerResponse, SyncBatch};
use crate::model::Revision;
use crate::registry::{
    ApplyCounts, ChangeRef, Client, ClientChange, ClientRecord, IdKey, StateRef,
};
use crate::sync::{TakeSink, Taken, group_bit};
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// A batch being filled by a take ([`TakeSink`]). A state the queue held goes into the
/// batch as it is taken: the stored client itself (the encoder reads it, no record is
/// built), sized without asking what the change is, and its entry's id never moved.
/// Under a stripe's lock: nothing here locks. Once a client waits in `later`, every one
/// taken after it waits too: the batch is built in take order, so a full batch puts back
/// only what was taken after the client that overflowed it (a deletion taken first is
/// not put back while states taken after it fill the batch, flush after flush).
struct Filling {
    batch: SyncBatch,
    /// The batch's size estimate.
    bytes: usize,
    /// The lowest revision taken into the batch so far (`u64::MAX`: none), for
    /// [`SyncBatch::lowest`]: read here from the state in hand, where the encoder would
    /// walk the whole batch for it again.
    lowest: u64,
    max_bytes: usize,
    /// Full by bytes: what is taken from now on goes back, due as it was.
    overflow: bool,
    /// Held states are refused: the batch is full by bytes, or a client waits in
    /// `later` (one flag, read for every client taken, where the two were two reads).
    refuse: bool,
    /// Clients taken whole, in take order, for after the scheduler's locks are let go:
    /// those the queue held no state for (read from the registry then), held states
    /// refused because an earlier client waits here (they must not pass it), and all
    /// taken once the batch was full by bytes (they go back, due as they were).
    later: Vec<Taken>,
    /// The clients an early take took before they were due, by their place in the batch.
    not_due: Vec<(usize, u64, Millis)>,
    /// With followers: for each change of the batch, the followers that took it too (a
    /// follower is sent the batch itself if it took all of it, else a batch of what it
    /// took); without, `None` (nothing is recorded).
    also_of: Option<Vec<u64>>,
    /// In an early take, the time past which a client taken was not due yet (else
    /// `Millis::MAX`: one compare per client, where the flag and the time were two).
    not_due_after: Millis,
    /// The take asks for each state a client ahead ([`TakeSink::ahead`]): the registry
    /// is one of `--prefetch-from` clients or more.
    ahead: bool,
}

impl TakeSink for Filling {
    #[inline(always)]
    fn held(&mut self, c: Arc<Client>, due: Millis, hash: u64, also: u64) -> Option<Arc<Client>> {
        debug_assert_eq!(self.refuse, self.overflow || !self.later.is_empty());
        if self.refuse {
            return Some(c);
        }
        let size = c.size_hint();
        // The bound first: it is rarely passed, and the batch is rarely empty.
        if self.bytes + size > self.max_bytes && !self.batch.changes.is_empty() {
            // Full by bytes: this one and the rest go back, due as they were.
            self.overflow = true;
            self.refuse = true;
            return Some(c);
        }
        if due > self.not_due_after {
            self.not_due.push((self.batch.changes.len(), hash, due));
        }
        if let Some(v) = &mut self.also_of {
            v.push(also);
        }
        self.bytes += size;
        self.lowest = self.lowest.min(c.revision().0);
        // The change written straight into the batch's room (sized for the take: nearly
        // always there), its tag and pointer alone: built for `Vec::push`, whose growth
        // it passes, the whole change was built in the frame and copied.
        if let Err(change) =
            crate::model::push_within_capacity(&mut self.batch.changes, ClientChange::Stored(c))
        {
            self.batch.changes.push(change);
        }
        None
    }

    #[inline(always)]
    fn taken(&mut self, t: Taken) {
        self.refuse = true;
        self.later.push(t);
    }

    #[inline(always)]
    fn ahead(&self) -> bool {
        self.ahead
    }
}

impl Node {
    /// Sends everything pending now, regardless of the sync delay (graceful shutdown).
    pub fn drain(&self, now: Millis) -> Vec<Command> {
        let mut out = Vec::new();
        self.flush(now, true, &mut out);
        out
    }

    /// Sends what is due now to every peer that is neither DOWN nor paused (what
    /// [`Node::tick`] sends, without its other timers): a runtime calls it more often than
    /// it ticks, so that a burst's rest leaves once the burst has been quiet
    /// ([`Config::burst_quiet`](crate::Config::burst_quiet)) rather than at the next tick.
    pub fn flush_syncs(&self, now: Millis) -> Vec<Command> {
        let mut out = Vec::new();
        if !self.members.load().is_standalone() {
            self.flush(now, false, &mut out);
        }
        out
    }

    /// The earliest time anything pending becomes due (for runtimes that sleep).
    pub fn next_sync_due(&self) -> Option<Millis> {
        self.members
            .load()
            .peers()
            .filter_map(|p| self.sync.next_due(p.index()))
            .min()
    }

    /// Clients pending sync to `peer`.
    pub fn pending_sync(&self, peer: MemberId) -> usize {
        self.sync.pending(peer.index())
    }

    /// Batches the due clients of every peer that is neither DOWN nor paused by a failure
    /// (with `drain`: every pending client of every peer that is not DOWN).
    pub(super) fn flush(&self, now: Millis, drain: bool, out: &mut Vec<Command>) {
        for (p, state) in self.member_states() {
            if p != self.me() && state != MemberState::Down {
                self.flush_peer(p, now, drain, out);
            }
        }
    }

    /// Sends batches to `p` while it has a free slot (`max_inflight_batches`; `drain`
    /// ignores the bound and sends everything pending). A batch holds the due clients,
    /// earliest first; once a batch's worth is pending (`batch_early_entries`, at most
    /// [`Self::full_batch_entries`]) it takes clients that are not due yet too, up to a
    /// whole batch, so a full batch never waits out the delay.
    /// Only a partial batch waits: its clients that are not due go back to the queue. In
    /// a burst (a full batch left early within the last sync delay) a partial batch waits
    /// only [`Self::burst_linger`] since each client's first change, and nothing once
    /// the burst's writes stopped ([`Self::quiet_horizon`]): the changes of a burst are
    /// merged by the full batches already, and the burst's tail need not hold a whole
    /// delay. A trickle (no full batch within the delay) waits the whole delay.
    fn flush_peer(&self, p: MemberId, now: Millis, drain: bool, out: &mut Vec<Command>) {
        let q = self.sync.peer(p.index());
        if !drain && q.paused_until.load(Relaxed) > now {
            return;
        }
        let max_entries = self.config.batch_max_entries;
        loop {
            // Reserve the slot first: the timer's flush and the refill after an answer
            // may run at once, and together they must not exceed the bound.
            if drain {
                q.inflight.fetch_add(1, Relaxed);
            } else if q
                .inflight
                .fetch_update(Relaxed, Relaxed, |n| {
                    (n < self.config.max_inflight_batches).then_some(n + 1)
                })
                .is_err()
            {
                return;
            }
            let full = self.full_batch_entries();
            // A batch's worth pending sends one before the delay; it takes up to `full`.
            let early_from = self.config.batch_early_entries.min(full);
            // Read once a batch: a sum over the scheduler's stripes.
            let pending = self.sync.pending(p.index());
            let early = !drain && pending >= early_from;
            // Due by `horizon`: due now, or in a burst pending for the linger (a partial
            // batch: or every one pending, once the burst is quiet).
            let horizon = if q.burst_until.load(Relaxed) <= now {
                now
            } else {
                let lingered = now.saturating_add(self.config.sync_delay - self.burst_linger());
                if early || drain {
                    lingered
                } else {
                    self.quiet_horizon(p, now)
                        .map_or(lingered, |h| h.max(lingered))
                }
            };
            let (now_for, max) = match (drain, early) {
                (true, _) => (Millis::MAX, max_entries),
                (false, true) => (horizon, full),
                (false, false) => (horizon, max_entries),
            };
            // Other peers with a batch's worth pending follow an early take: one take and
            // one encoding for all of them, not one each (in a burst every change is
            // pending for all of them at once).
            let followers = if early {
                self.reserve_followers(p, now, early_from)
            } else {
                0
            };
            // Sized once: a batch of records grown by doubling copies them ~twice over.
            let room = max.min(pending);
            // The clients an early take took before they were due (by their place in the
            // batch, with their hashes and due times): what it puts back if the batch is
            // not full after all. Most batches hold none (a burst's are due by the time a
            // whole batch is pending): nothing is recorded of the others.
            let mut fill = Filling {
                batch: SyncBatch {
                    changes: Vec::with_capacity(room),
                    lowest: None,
                    encoding: None,
                },
                bytes: 8,
                lowest: u64::MAX,
                max_bytes: self.config.batch_max_bytes,
                overflow: false,
                refuse: false,
                later: Vec::new(),
                not_due: Vec::new(),
                also_of: (followers != 0).then(|| Vec::with_capacity(room)),
                not_due_after: if early { horizon } else { Millis::MAX },
                ahead: self.registry.prefetching(),
            };
            let took = if early {
                self.sync
                    .take_early_into(p.index(), followers, now_for, max, &mut fill)
            } else {
                self.sync.take_into(p.index(), 0, now_for, max, &mut fill)
            };
            let Filling {
                mut batch,
                mut bytes,
                mut lowest,
                max_bytes,
                mut overflow,
                later,
                mut not_due,
                mut also_of,
                ..
            } = fill;
            let took_any = took > 0;
            for Taken {
                id,
                due,
                hash,
                state,
                also,
            } in later
            {
                if overflow {
                    self.sync
                        .put_back_shared(p.index(), also, &id, hash, due, state.as_ref());
                    continue;
                }
                // Found by the hash the queue kept, not by hashing the id again.
                let change = match state {
                    Some(c) => ClientChange::Stored(c),
                    None => match self.registry.get_key(IdKey {
                        id: id.as_str(),
                        hash,
                    }) {
                        Some(c) => ClientChange::Stored(c),
                        None => match self.registry.tombstone(id.as_str()) {
                            Some(revision) => ClientChange::Delete {
                                id: id.clone(),
                                revision,
                            },
                            None => continue,
                        },
                    },
                };
                let size = change.size_hint();
                if !batch.changes.is_empty() && bytes + size > max_bytes {
                    // Full by bytes: this one and the rest go back, due as they were.
                    self.sync
                        .put_back_shared(p.index(), also, &id, hash, due, change.stored());
                    overflow = true;
                    continue;
                }
                if early && due > horizon {
                    not_due.push((batch.changes.len(), hash, due));
                }
                if let Some(v) = &mut also_of {
                    v.push(also);
                }
                bytes += size;
                lowest = lowest.min(change.revision().0);
                batch.changes.push(change);
            }
            // Every change of the batch is at or above it (an early take's put-backs below
            // only remove changes).
            batch.lowest = (!batch.changes.is_empty()).then_some(Revision(lowest));
            let is_full = overflow || batch.changes.len() >= early_from;
            // A full batch that left early starts a burst, for the followers it goes to too.
            let burst = (early && is_full).then(|| now.saturating_add(self.config.sync_delay));
            if let Some(until) = burst {
                q.burst_until.fetch_max(until, Relaxed);
            }
            if early && !is_full {
                // Taken ahead of time but not a full batch after all (clients gone, or
                // smaller than the estimate): what is not due yet waits out its delay.
                let mut kept = SyncBatch {
                    lowest: batch.lowest,
                    ..SyncBatch::default()
                };
                let mut back = not_due.into_iter().peekable();
                let mut kept_also = also_of.as_ref().map(|v| Vec::with_capacity(v.len()));
                for (i, change) in batch.changes.into_iter().enumerate() {
                    // Back for the followers that took it too.
                    let also = also_of.as_ref().map_or(0, |v| v[i]);
                    match back.next_if(|&(at, _, _)| at == i) {
                        Some((_, hash, due)) => self.sync.put_back_shared(
                            p.index(),
                            also,
                            &change.id(),
                            hash,
                            due,
                            change.stored(),
                        ),
                        None => {
                            kept.changes.push(change);
                            if let Some(k) = &mut kept_also {
                                k.push(also);
                            }
                        }
                    }
                }
                bytes = kept.size_hint();
                batch = kept;
                also_of = kept_also;
            }
            if batch.changes.is_empty() {
                q.inflight.fetch_sub(1, Relaxed);
                self.release_followers(p, followers);
                // Clients without state or tombstone left the queue: look again, unless
                // everything went back.
                if took_any && !early {
                    continue;
                }
                return;
            }
            if let Some(also_of) = also_of {
                self.send_to_followers(p, followers, &also_of, &mut batch, bytes, burst, out);
            }
            self.send_batch(p, batch, bytes, out);
            if early && !is_full {
                return;
            }
        }
    }

    /// Sends what the followers of `p` took of `batch` (about `bytes` encoded; `also_of`:
    /// for each of its changes, the followers that took it): the batch itself, encoded
    /// once for all of them, to those that took all of it (a burst's usual case, where
    /// every client is pending for every peer at once); a batch of what it took to one
    /// that took part of it (its queue out of step with the leader's: after a failure, a
    /// repair, a handover), so that it is not sent the clients it was not pending for; and
    /// nothing to one that took none of it, whose slot is given back. Those sent anything
    /// are in the leader's burst (until `burst`), if the batch started one.
    #[allow(clippy::too_many_arguments)]
    fn send_to_followers(
        &self,
        p: MemberId,
        followers: u64,
        also_of: &[u64],
        batch: &mut SyncBatch,
        bytes: usize,
        burst: Option<Millis>,
        out: &mut Vec<Command>,
    ) {
        debug_assert_eq!(also_of.len(), batch.changes.len());
        let (any, all) = also_of
            .iter()
            .fold((0, followers), |(any, all), a| (any | a, all & a));
        self.release_followers(p, followers & !any);
        if let Some(until) = burst {
            for f in Self::peers_in(p, any) {
                let q = self.sync.peer(f.index());
                q.burst_until.fetch_max(until, Relaxed);
            }
        }
        for f in Self::peers_in(p, any & !all) {
            let (_, bit) = group_bit(f.index());
            let own = SyncBatch {
                changes: batch
                    .changes
                    .iter()
                    .zip(also_of)
                    .filter(|(_, also)| *also & bit != 0)
                    .map(|(c, _)| c.clone())
                    .collect(),
                // At most the lowest of a part, as of the whole.
                lowest: batch.lowest,
                encoding: None,
            };
            let bytes = own.size_hint();
            self.send_batch(f, own, bytes, out);
        }
        if all != 0 {
            batch.encoding = Some(Arc::new(SharedEncoding::default()));
            for f in Self::peers_in(p, all) {
                inc(&self.counters.sync_batches_shared, 1);
                self.send_batch(f, batch.clone(), bytes, out);
            }
        }
    }

    /// The peers that follow an early take for `p`
    /// ([`crate::sync::SyncScheduler::take_into`]), as a mask of `p`'s group: those neither
    /// DOWN nor paused that have a batch's worth pending themselves and a free in-flight
    /// slot, which is reserved here for the batch (given back by
    /// [`Self::release_followers`] if they take none of it).
    fn reserve_followers(&self, p: MemberId, now: Millis, early_from: usize) -> u64 {
        let (group, _) = group_bit(p.index());
        let max = self.config.max_inflight_batches;
        let members = self.members.load();
        // Held for the walk (atomics only under it): no list of the peers is made.
        let peers = self.peers.lock();
        let mut mask = 0;
        for f in members.peers() {
            if f == p
                || group_bit(f.index()).0 != group
                || peers[f.index()].health.state == MemberState::Down
            {
                continue;
            }
            let q = self.sync.peer(f.index());
            if q.paused_until.load(Relaxed) > now || self.sync.pending(f.index()) < early_from {
                continue;
            }
            if q.inflight
                .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
                .is_ok()
            {
                mask |= group_bit(f.index()).1;
            }
        }
        mask
    }

    /// Gives back the in-flight slots of the followers of `p` in `mask`.
    fn release_followers(&self, p: MemberId, mask: u64) {
        for f in Self::peers_in(p, mask) {
            self.sync.peer(f.index()).inflight.fetch_sub(1, Relaxed);
        }
    }

    /// The peers of `p`'s group in `mask`.
    fn peers_in(p: MemberId, mask: u64) -> impl Iterator<Item = MemberId> {
        let (group, _) = group_bit(p.index());
        crate::sync::peers_of(group, mask).map(|i| MemberId(i as u16))
    }

    /// How long a client waits in a burst before a partial batch takes it: a tenth of
    /// the sync delay (100 ms by default), unless the burst has been quiet (see
    /// [`Self::quiet_horizon`]).
    fn burst_linger(&self) -> Millis {
        self.config.sync_delay / 10
    }

    /// Within a burst at `now`, once no client has become pending for `p` for
    /// [`Config::burst_quiet`](crate::Config::burst_quiet) (the burst's writes stopped):
    /// the due time of the newest pending in the regular order, by which a partial batch
    /// takes every one of them; `None` while writes keep coming.
    fn quiet_horizon(&self, p: MemberId, now: Millis) -> Option<Millis> {
        let newest = self.sync.newest_regular_due(p.index());
        let quiet_since = now.saturating_add(
            self.config
                .sync_delay
                .saturating_sub(self.config.burst_quiet),
        );
        (newest <= quiet_since).then_some(newest)
    }

    /// How many pending clients make a full batch: `batch_max_entries`, or fewer when
    /// that many would exceed `batch_max_bytes` at the average size of the changes sent
    /// so far (an estimate; the batch itself is cut at the exact size).
    fn full_batch_entries(&self) -> usize {
        let max = self.config.batch_max_entries;
        let changes = self.counters.sync_changes_sent.load(Relaxed);
        if changes == 0 {
            return max;
        }
        let avg = (self.counters.sync_bytes_sent.load(Relaxed) / changes).max(1);
        usize::try_from(self.config.batch_max_bytes as u64 / avg)
            .unwrap_or(usize::MAX)
            .clamp(1, max)
    }

    /// Emits `batch` (about `bytes` encoded) for `to`, whose in-flight slot the caller
    /// has reserved.
    pub(super) fn send_batch(
        &self,
        to: MemberId,
        batch: SyncBatch,
        bytes: usize,
        out: &mut Vec<Command>,
    ) {
        inc(&self.counters.sync_batches_sent, 1);
        inc(&self.counters.sync_changes_sent, batch.changes.len() as u64);
        inc(&self.counters.sync_bytes_sent, bytes as u64);
        out.push(Command::Send {
            to,
            request: PeerRequest::Sync(batch),
        });
    }

    /// Digests the outcome of `batch`, sent to `to`: a failed batch pauses the peer's
    /// queue for the retry delay (doubling with each failure in a row, up to
    /// `sync_retry_max_delay`) and schedules its clients again for then. A delivered
    /// batch frees its slot for the next one at once (due clients or a full batch), so
    /// the pipeline to a peer refills at the pace the peer answers, not at the timer's.
    pub(super) fn on_sync_result(
        &self,
        to: MemberId,
        batch: &SyncBatch,
        ok: bool,
        now: Millis,
        out: &mut Vec<Command>,
    ) {
        let q = self.sync.peer(to.index());
        q.inflight.fetch_sub(1, Relaxed);
        if ok {
            q.consecutive_failures.store(0, Relaxed);
            if self.member_state(to) != MemberState::Down {
                self.flush_peer(to, now, false, out);
            }
        } else {
            inc(&self.counters.sync_batches_failed, 1);
            let failures = q.consecutive_failures.fetch_add(1, Relaxed) + 1;
            let delay = self
                .config
                .sync_retry_delay
                .saturating_mul(1u64 << (failures - 1).min(20))
                .min(self.config.sync_retry_max_delay);
            q.paused_until.store(now + delay, Relaxed);
            if !self.members.load().contains(to) {
                // It left while the batch was out: nothing goes to it any more.
                return;
            }
            for change in &batch.changes {
                self.sync
                    .schedule_at(to.index(), &change.id(), now + delay, false);
            }
        }
    }

    /// The peer `to` answered a request other than a sync: whatever made syncs fail has
    /// passed. Clear the back-off so pending syncs and verify repairs flow at once instead
    /// of after up to `sync_retry_max_delay`.
    pub(super) fn resume_sync(&self, to: MemberId) {
        let q = self.sync.peer(to.index());
        if q.consecutive_failures.load(Relaxed) > 0 {
            q.consecutive_failures.store(0, Relaxed);
            q.paused_until.store(0, Relaxed);
        }
    }

    /// Applies a sync batch from peer `from` (the replica side; a batch handed over in
    /// one process, as the simulator does: a runtime decodes it, see
    /// [`Node::handle_sync`]). A state shared with the sender's store is applied through
    /// its record.
    pub(super) fn apply_batch(
        &self,
        from: MemberId,
        batch: &SyncBatch,
        now: Millis,
    ) -> PeerResponse {
        let records: Vec<ClientRecord> = batch
            .changes
            .iter()
            .filter_map(|c| match c {
                ClientChange::Stored(s) => Some(s.to_record()),
                _ => None,
            })
            .collect();
        let mut stored = records.iter();
        let changes = batch.changes.iter().map(|c| match c {
            ClientChange::Upsert(r) => ChangeRef::State(StateRef::of(r)),
            ClientChange::Stored(_) => ChangeRef::State(StateRef::of(
                stored.next().expect("a record per stored state"),
            )),
            ClientChange::Delete { id, revision } => ChangeRef::Delete(id.as_str(), *revision),
        });
        self.apply_changes(from, changes, now)
    }

    /// Answers a sync batch from peer `from` as [`Node::handle_request`] answers
    /// `PeerRequest::Sync`, the changes borrowed from wherever the runtime decoded them
    /// (the server decodes a batch straight from its bytes, see [`ChangeRef`]).
    pub fn handle_sync<'a>(
        &self,
        from: MemberId,
        changes: impl IntoIterator<Item = ChangeRef<'a>>,
        now: Millis,
    ) -> PeerResponse {
        if let Some(refused) = self.unknown_sender(from) {
            return refused;
        }
        self.apply_changes(from, changes, now)
    }

    fn apply_changes<'a>(
        &self,
        from: MemberId,
        changes: impl IntoIterator<Item = ChangeRef<'a>>,
        now: Millis,
    ) -> PeerResponse {
        // Grouped by shard in the registry: one lock acquisition per shard per batch;
        // attributed under one load of the routing table.
        let routes = self.routes();
        let changes = changes.into_iter().map(|change| match change.owner() {
            // A connection client is attributed to the sender (`Routes::attribution`).
            Some(_) if change.known_connection() => change.attributed(from),
            Some(_) => {
                let owner = routes.attribution(change.id(), from);
                change.attributed(owner)
            }
            None => change.attributed(from),
        });
        let ApplyCounts { applied, stale } = self.registry.apply_many(changes, now);
        inc(&self.counters.sync_changes_applied, u64::from(applied));
        inc(&self.counters.sync_changes_stale, u64::from(stale));
        PeerResponse::SyncAck { applied, stale }
    }
}

#[cfg(test)]
mod tests {
    use super::Filling;
    use crate::config::Config;
    use crate::member::MemberList;
    use crate::message::SyncBatch;
    use crate::model::{ClientId, InstanceSpec, ServiceSpec};
    use crate::node::Node;
    use crate::registry::Client;
    use crate::sync::{TakeSink, Taken};
    use crate::time::Millis;
    use std::sync::Arc;

    /// A node holding one client per entry of `metadata` (that many bytes of metadata
    /// each), and those clients' stored states, in order.
    fn states(metadata: &[usize]) -> (Node, Vec<Arc<Client>>) {
        let addrs: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
        let n = Node::new(
            Config::default(),
            MemberList::new(&addrs[0], &addrs).unwrap(),
            1_000,
        )
        .unwrap();
        let states = metadata
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let ip = format!("10.9.0.{i}");
                let id = ClientId::connection(1, &ip, 1);
                let mut spec = InstanceSpec::new(&ip, 80);
                spec.metadata = vec![("k".into(), "v".repeat(m))];
                n.register(&id, &ServiceSpec::new("", "", "svc"), &spec, 0)
                    .unwrap();
                n.registry.get(id.as_str()).unwrap()
            })
            .collect();
        (n, states)
    }

    fn filling(max_bytes: usize) -> Filling {
        Filling {
            batch: SyncBatch::default(),
            bytes: 8,
            lowest: u64::MAX,
            max_bytes,
            overflow: false,
            refuse: false,
            later: Vec::new(),
            not_due: Vec::new(),
            also_of: None,
            not_due_after: Millis::MAX,
            ahead: false,
        }
    }

    /// A held state that overflows the batch by bytes is refused, and so is every smaller
    /// one taken after it though it would fit: they go back behind it, in take order,
    /// and none joins the batch ahead of the big one.
    #[test]
    fn smaller_states_taken_after_an_overflow_do_not_pass_it() {
        let (_n, s) = states(&[100, 4000, 100, 100]);
        assert!(s[1].size_hint() > 4096 - 8 - s[0].size_hint());
        let mut f = filling(4096);
        assert!(f.held(s[0].clone(), 0, s[0].id_hash(), 0).is_none());
        for c in &s[1..] {
            let back = f.held(c.clone(), 0, c.id_hash(), 0).expect("refused");
            assert!(Arc::ptr_eq(&back, c));
        }
        assert!(f.overflow && f.refuse);
        assert_eq!(f.batch.changes.len(), 1);
        assert!(Arc::ptr_eq(f.batch.changes[0].stored().unwrap(), &s[0]));
        assert_eq!(f.lowest, s[0].revision().0);
    }

    /// Held states join the batch in take order, written into its room while there is
    /// some and pushed past it (a take sizes the batch for what it counted pending;
    /// clients scheduled meanwhile may outnumber it).
    #[test]
    fn held_states_join_the_batch_within_and_past_its_room() {
        let (_n, s) = states(&[10, 10, 10]);
        let mut f = filling(4096);
        f.batch.changes = Vec::with_capacity(1);
        let room = f.batch.changes.capacity();
        for c in &s {
            assert!(f.held(c.clone(), 0, c.id_hash(), 0).is_none());
        }
        assert!(room < s.len());
        assert_eq!(f.batch.changes.len(), s.len());
        for (change, c) in f.batch.changes.iter().zip(&s) {
            assert!(Arc::ptr_eq(change.stored().unwrap(), c));
        }
        assert_eq!(f.lowest, s.iter().map(|c| c.revision().0).min().unwrap());
    }

    /// A held state taken after a client that waits in `later` (its state to be read
    /// from the registry) is refused though the batch has room: it must not pass it.
    #[test]
    fn a_held_state_taken_after_a_waiting_client_waits_too() {
        let (_n, s) = states(&[10, 10]);
        let mut f = filling(4096);
        f.taken(Taken {
            id: s[0].id(),
            due: 0,
            hash: s[0].id_hash(),
            state: None,
            also: 0,
        });
        assert!(f.refuse && !f.overflow);
        assert!(f.held(s[1].clone(), 0, s[1].id_hash(), 0).is_some());
        assert!(f.batch.changes.is_empty());
    }
}
