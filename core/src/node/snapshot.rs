//! Snapshot: serving this node's clients in chunks, and loading a peer's at startup.
//!
//! A snapshot is every client held, as records, streamed in chunks bounded in bytes and
//! addressed by a cursor (a shard and the last client id sent of it: clients added or
//! removed meanwhile cannot make it skip one), so any size streams and a chunk can be
//! asked for again. The runtime carries the stream: [`Node::tick`] returns
//! `Command::LoadSnapshot`, the runtime pulls chunks with [`Node::snapshot_chunk`] on the
//! peer and feeds them to [`Node::load_chunk`] here, then reports the end with
//! [`Node::load_finished`]; until loaded a node sends no verify.
//!
//! **Who serves.** A node serves its snapshot only once it has loaded its own
//! ([`Node::serves_snapshot`]): a node still loading holds an empty or partial registry,
//! and a peer that took it as the cluster's state would then drop replicas in verify. The
//! runtime answers such a request with a refusal, which the loader reports with
//! [`Node::load_refused`] and treats as "try the next peer".
//!
//! **Whom to load from.** A starting node tries, in one round, every UP peer once, those
//! reporting themselves loaded (in probes) first; a failure or refusal moves on to the
//! next. When a round ends without a load:
//!
//! * every peer is DOWN: nobody to load from, the node starts empty (it starts the
//!   cluster's state, or it is cut off: verify repairs either case once peers return).
//!   A peer whose last probe answer was "not a member (yet)" does not count as DOWN here,
//!   however many probes it refused: it is alive and has not read a member list naming
//!   this node yet (this node just joined, and the peers read the list at their own
//!   moment: a members file every second, a DNS name every few seconds, behind DNS
//!   caches). The node keeps waiting for it (no snapshot, not loaded, `/health` 503)
//!   instead of starting empty beside peers that hold the cluster's state;
//! * **cold start**: every peer that is not DOWN *refused* in this round, and none reports
//!   itself loaded since: every reachable node is itself loading (the whole cluster
//!   restarted together), so there is no state to lose and the node starts empty. Each
//!   node decides this alone and at once, so it cannot deadlock, and a node that any
//!   loaded peer could serve never starts empty: a loaded peer does not refuse, and a
//!   peer that failed for another reason (unreachable, timed out) blocks the cold start;
//! * otherwise (a loaded peer failed, or one reported itself loaded after refusing) the
//!   round starts again after `load_retry_delay`.

use super::{Node, inc};
use crate::compact_form::ChunkSize;
use crate::member::{MemberId, MemberState};
use crate::message::{Command, SnapshotChunk, SnapshotCursor};
use crate::model::ClientId;
use crate::registry::{ApplyOutcome, Client, ClientRecord, ReplicaChange, StateRef};
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// About the fewest bytes a client's record takes in the compact layout (one instance of
/// one service, an IPv4 address, the tables' indexes one byte each).
const MIN_RECORD_BYTES: usize = 16;

/// The first eight bytes of a client id as a big-endian integer (zeros after a shorter
/// id): ordered as the ids' bytes are, up to a tie (an id holds no NUL, so a shorter id
/// that is another's start orders first, as it does by bytes).
fn id_prefix(id: &str) -> u64 {
    let mut a = [0u8; 8];
    for (d, s) in a.iter_mut().zip(id.as_bytes()) {
        *d = *s;
    }
    u64::from_be_bytes(a)
}

/// Progress of the startup snapshot load.
pub(super) struct LoadState {
    pub(super) in_progress: Option<MemberId>,
    /// Peers tried in this round (failed or refused).
    pub(super) tried: Vec<MemberId>,
    /// Peers that refused in this round because they have not loaded yet.
    pub(super) refused: Vec<MemberId>,
    /// Whether this node started empty by the cold-start rule.
    pub(super) cold_start: bool,
    pub(super) next_attempt: Millis,
    pub(super) loaded_from: Option<MemberId>,
}

impl Node {
    /// Whether the startup snapshot load finished (always true when standalone).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Relaxed)
    }

    /// The peer this node loaded its snapshot from, if any.
    pub fn loaded_from(&self) -> Option<MemberId> {
        self.load.lock().loaded_from
    }

    /// Whether this node started empty because every reachable peer was itself loading
    /// (the cold-start rule of the module documentation).
    pub fn cold_started(&self) -> bool {
        self.load.lock().cold_start
    }

    /// Whether this node may serve its snapshot: only once it has loaded its own. A
    /// runtime answers a snapshot request of a node that may not with a refusal (the
    /// loader then calls [`Node::load_refused`]).
    pub fn serves_snapshot(&self) -> bool {
        self.is_loaded()
    }

    pub(super) fn load_step(&self, now: Millis, out: &mut Vec<Command>) {
        if self.is_loaded() {
            return;
        }
        let mut load = self.load.lock();
        if load.in_progress.is_some() || now < load.next_attempt {
            return;
        }
        let states = self.member_states();
        let reports_loaded = |m: MemberId| self.peers.lock()[m.index()].loaded;
        let untried = |m: &MemberId| *m != self.me() && !load.tried.contains(m);
        let up: Vec<MemberId> = states
            .iter()
            .filter(|(m, s)| untried(m) && *s == MemberState::Up)
            .map(|(m, _)| *m)
            .collect();
        // Peers reporting themselves loaded first: the others would refuse.
        let candidate = up
            .iter()
            .copied()
            .find(|&m| reports_loaded(m))
            .or_else(|| up.first().copied());
        if let Some(m) = candidate {
            load.in_progress = Some(m);
            out.push(Command::LoadSnapshot { from: m });
            return;
        }
        let not_listing_me = |m: MemberId| self.peers.lock()[m.index()].not_listing_me;
        let reachable: Vec<MemberId> = states
            .iter()
            .filter(|(m, s)| *m != self.me() && (*s != MemberState::Down || not_listing_me(*m)))
            .map(|(m, _)| *m)
            .collect();
        if reachable.is_empty() {
            // Nobody to load from: this node starts the cluster's state.
            self.loaded.store(true, Relaxed);
            return;
        }
        let all_refused = reachable.iter().all(|m| load.refused.contains(m));
        if all_refused && !reachable.iter().any(|&m| reports_loaded(m)) {
            // Cold start: every reachable node is itself loading.
            load.cold_start = true;
            self.loaded.store(true, Relaxed);
            return;
        }
        load.tried.clear();
        load.refused.clear();
        load.next_attempt = now + self.config.load_retry_delay;
    }

    /// Applies a chunk of the snapshot being loaded from `from`.
    pub fn load_chunk(&self, from: MemberId, records: &[ClientRecord], now: Millis) {
        self.load_states(from, records.iter().map(StateRef::of), now);
    }

    /// [`Node::load_chunk`] of states borrowed from wherever the runtime decoded them
    /// (the server decodes a chunk straight from its bytes, see [`StateRef`]).
    pub fn load_states<'a>(
        &self,
        from: MemberId,
        states: impl IntoIterator<Item = StateRef<'a>>,
        now: Millis,
    ) {
        let me = self.me();
        let mut ghosts = Vec::new();
        // Grouped by shard in the registry: one lock acquisition per shard per chunk.
        let states = states.into_iter().filter_map(|s| {
            let connection = !s.id.contains('#');
            let owner = if connection {
                s.owner
            } else {
                self.attribution(s.id, from)
            };
            if connection && owner == me {
                // A connection of this node's previous incarnation: it cannot exist any
                // more. Delete it everywhere (above its revision).
                ghosts.push(s);
                return None;
            }
            Some(ReplicaChange::State(s, owner))
        });
        let counts = self.registry.apply_many(states, now);
        inc(&self.counters.snapshot_clients, u64::from(counts.applied));
        for g in ghosts {
            if self.registry.apply_state(g, me, now) == ApplyOutcome::Applied {
                let id = ClientId::checked(g.id);
                let r = self.registry.remove_client(&id, me, now);
                self.after_write(&id, r, now);
            }
        }
    }

    /// Ends the load from `from`: on success the node is loaded and starts verifying; on
    /// failure the next peer is tried.
    pub fn load_finished(&self, from: MemberId, ok: bool, now: Millis) {
        let mut load = self.load.lock();
        if load.in_progress != Some(from) {
            return;
        }
        load.in_progress = None;
        if ok {
            load.loaded_from = Some(from);
            self.loaded.store(true, Relaxed);
            inc(&self.counters.snapshot_loads, 1);
        } else {
            load.tried.push(from);
            load.next_attempt = now;
        }
    }

    /// Ends the load from `from` because `from` refused: it has not loaded its own
    /// snapshot yet. The next peer is tried; when every reachable peer refuses, the
    /// cold-start rule applies (module documentation).
    pub fn load_refused(&self, from: MemberId, now: Millis) {
        let mut load = self.load.lock();
        if load.in_progress != Some(from) {
            return;
        }
        load.in_progress = None;
        load.tried.push(from);
        load.refused.push(from);
        load.next_attempt = now;
        drop(load);
        // Its refusal is its latest report: not loaded (a later probe may say otherwise).
        self.peers.lock()[from.index()].loaded = false;
    }

    /// A chunk of this node's snapshot starting at `cursor` (the clients after its id in
    /// its shard, in id order, then the next shards), bounded by the configured chunk size
    /// (a chunk holds at least one client when any is left). Serve it only when
    /// [`Node::serves_snapshot`] says so.
    pub fn snapshot_chunk(&self, cursor: SnapshotCursor) -> SnapshotChunk {
        let shards = self.registry.shard_count();
        // Room for as many records as the chunk can hold at the smallest a record encodes
        // to: grown by doubling, the vector was copied ~twice over (9 % of a chunk's
        // instructions).
        let mut records = Vec::with_capacity(self.config.snapshot_chunk_bytes / MIN_RECORD_BYTES);
        let mut size = ChunkSize::new();
        let mut bytes = size.head();
        let mut shard = cursor.shard;
        let mut after = cursor.after;
        while shard < shards {
            // Each id written out once (a derived one is not stored, see `Client::id`).
            let mut clients: Vec<(u64, ClientId, Arc<Client>)> = self
                .registry
                .shard_clients(shard)
                .into_iter()
                .map(|c| {
                    let id = c.id();
                    (id_prefix(id.as_str()), id, c)
                })
                .collect();
            // In id order: the first eight bytes compared as one integer, the rest only
            // when those are equal.
            clients.sort_unstable_by(|(p, a, _), (q, b, _)| p.cmp(q).then_with(|| a.cmp(b)));
            let start = after
                .take()
                .map_or(0, |k| clients.partition_point(|(_, id, _)| *id <= k));
            for i in start..clients.len() {
                let (_, id, c) = &clients[i];
                let owner = c.owner();
                let size = size.state(
                    id.as_str(),
                    owner,
                    || self.member_addr(owner).len(),
                    c.publications().iter().map(|p| &**p),
                );
                if !records.is_empty() && bytes + size > self.config.snapshot_chunk_bytes {
                    // Resume after the client before this one (sent, or before the cursor).
                    let after = i.checked_sub(1).map(|j| clients[j].1.clone());
                    return SnapshotChunk {
                        records,
                        next: Some(SnapshotCursor { shard, after }),
                    };
                }
                bytes += size;
                records.push(Arc::clone(c));
            }
            shard += 1;
        }
        SnapshotChunk {
            records,
            next: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::id_prefix;

    #[test]
    fn ids_ordered_by_prefix_then_whole_are_in_byte_order() {
        let mut ids = vec![
            "",
            "a",
            "ab",
            "abcdefgh",
            "abcdefg",
            "abcdefgh1",
            "abcdefgh0",
            "b",
            "10.0.0.7:80#true",
            "10.0.0.7:8080#true",
            "10.0.0.70:80#true",
            "1717000000000_10.0.0.7_1",
            "é",
            "~",
        ];
        let mut by_prefix = ids.clone();
        by_prefix.sort_unstable_by(|a, b| id_prefix(a).cmp(&id_prefix(b)).then_with(|| a.cmp(b)));
        ids.sort_unstable();
        assert_eq!(by_prefix, ids);
    }
}
