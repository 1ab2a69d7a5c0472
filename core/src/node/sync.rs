//! Sync, the node's side: flushing due clients to peers in batches, retrying failed
//! batches, and applying the batches peers send.
//!
//! What is pending and when it is due is [`crate::sync`]'s (one entry per peer and
//! client, due a sync delay after its first pending change). Here a flush turns due
//! clients into batches: each client's latest full state (or its tombstone), packed up to
//! `batch_max_entries` and `batch_max_bytes`, at most `max_inflight_batches` in flight per
//! peer, never to a DOWN peer. A failed batch pauses that peer and reschedules its
//! clients; nothing but "needs sending" is pending, so a retry never overwrites newer
//! state. A replica applies a change only when its revision is newer than what it holds.

use super::{Node, inc};
use crate::member::{MemberId, MemberState};
use crate::message::{Command, PeerRequest, PeerResponse, SyncBatch};
use crate::registry::{ApplyCounts, ClientChange, ReplicaChange};
use crate::time::Millis;
use std::sync::atomic::Ordering::Relaxed;

impl Node {
    /// Sends everything pending now, regardless of the sync delay (graceful shutdown).
    pub fn drain(&self, now: Millis) -> Vec<Command> {
        let mut out = Vec::new();
        self.flush(now, true, &mut out);
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
        let states = self.member_states();
        for (p, state) in states {
            if p == self.me() || state == MemberState::Down {
                continue;
            }
            let q = self.sync.peer(p.index());
            if !drain && q.paused_until.load(Relaxed) > now {
                continue;
            }
            let until = if drain { Millis::MAX } else { now };
            while drain || q.inflight.load(Relaxed) < self.config.max_inflight_batches {
                let ids = self
                    .sync
                    .take_due(p.index(), until, self.config.batch_max_entries);
                if ids.is_empty() {
                    break;
                }
                let mut batch = SyncBatch::default();
                let mut bytes = 8;
                for id in ids {
                    let change = match self.registry.get(id.as_str()) {
                        Some(c) => ClientChange::Upsert(c.to_record()),
                        None => match self.registry.tombstone(id.as_str()) {
                            Some(revision) => ClientChange::Delete { id, revision },
                            None => continue,
                        },
                    };
                    let size = change.size_hint();
                    if !batch.changes.is_empty() && bytes + size > self.config.batch_max_bytes {
                        self.send_batch(p, std::mem::take(&mut batch), bytes, out);
                        bytes = 8;
                    }
                    bytes += size;
                    batch.changes.push(change);
                }
                if !batch.changes.is_empty() {
                    self.send_batch(p, batch, bytes, out);
                }
            }
        }
    }

    /// Emits `batch` (about `bytes` encoded) for `to` and counts it in flight.
    pub(super) fn send_batch(
        &self,
        to: MemberId,
        batch: SyncBatch,
        bytes: usize,
        out: &mut Vec<Command>,
    ) {
        self.sync.peer(to.index()).inflight.fetch_add(1, Relaxed);
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
    /// `sync_retry_max_delay`) and schedules its clients again for then.
    pub(super) fn on_sync_result(&self, to: MemberId, batch: &SyncBatch, ok: bool, now: Millis) {
        let q = self.sync.peer(to.index());
        q.inflight.fetch_sub(1, Relaxed);
        if ok {
            q.consecutive_failures.store(0, Relaxed);
        } else {
            inc(&self.counters.sync_batches_failed, 1);
            let failures = q.consecutive_failures.fetch_add(1, Relaxed) + 1;
            let delay = self
                .config
                .sync_retry_delay
                .saturating_mul(1u64 << (failures - 1).min(20))
                .min(self.config.sync_retry_max_delay);
            q.paused_until.store(now + delay, Relaxed);
            for change in &batch.changes {
                self.sync
                    .schedule_at(to.index(), change.id(), now + delay, false);
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

    /// Applies a sync batch from peer `from` (the replica side).
    pub(super) fn apply_batch(
        &self,
        from: MemberId,
        batch: &SyncBatch,
        now: Millis,
    ) -> PeerResponse {
        // Grouped by shard in the registry: one lock acquisition per shard per batch.
        let changes = batch.changes.iter().map(|change| match change {
            ClientChange::Upsert(r) => ReplicaChange::State(r, self.attribution(&r.id, from)),
            ClientChange::Delete { id, revision } => ReplicaChange::Delete(id, *revision),
        });
        let ApplyCounts { applied, stale } = self.registry.apply_many(changes, now);
        inc(&self.counters.sync_changes_applied, u64::from(applied));
        inc(&self.counters.sync_changes_stale, u64::from(stale));
        PeerResponse::SyncAck { applied, stale }
    }
}
