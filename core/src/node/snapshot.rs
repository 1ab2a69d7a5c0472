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
use crate::registry::{ChangeRef, Client, ClientRecord, IdBuf, StateRef};
use crate::time::Millis;
use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// About the fewest bytes a client's record takes in the compact layout (one instance of
/// one service, an IPv4 address, the tables' indexes one byte each).
const MIN_RECORD_BYTES: usize = 16;

/// A client of a shard to send, with its id's first sixteen bytes ([`Client::id_prefix`]).
type Keyed = ((u64, u64), Arc<Client>);

/// The order of two clients' ids' bytes (derived ids written on the stack).
fn id_order(a: &Client, b: &Client) -> Ordering {
    a.id_bytes(&mut IdBuf::new())
        .cmp(b.id_bytes(&mut IdBuf::new()))
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
    /// The states are borrowed ([`StateRef`]) or handed over ([`crate::StateMut`]: their
    /// publications are moved into the store); a deletion, which a chunk does not hold,
    /// would be applied as one.
    pub fn load_states<'a, S: Into<ChangeRef<'a>>>(
        &self,
        from: MemberId,
        states: impl IntoIterator<Item = S>,
        now: Millis,
    ) {
        let me = self.me();
        let mut ghosts = Vec::new();
        // Grouped by shard in the registry: one lock acquisition per shard per chunk.
        let states = states.into_iter().filter_map(|s| {
            let s = s.into();
            let Some(sent) = s.owner() else {
                return Some(s.attributed(me));
            };
            let connection = s.is_connection();
            let owner = if connection {
                sent
            } else {
                self.attribution(s.id(), from)
            };
            if connection && owner == me {
                // A connection of this node's previous incarnation: it cannot exist any
                // more. Delete it everywhere (above its revision).
                ghosts.push(s);
                return None;
            }
            Some(s.attributed(owner))
        });
        let counts = self.registry.apply_many(states, now);
        inc(&self.counters.snapshot_clients, u64::from(counts.applied));
        for g in ghosts {
            let id = g.id();
            if self.registry.apply_many([g.attributed(me)], now).applied == 1 {
                let id = ClientId::checked(id);
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
        // One shard's clients at a time, sorted (the vector reused from shard to shard).
        let mut clients: Vec<Keyed> = Vec::new();
        while shard < shards {
            // In id order without building the ids (a derived one is not stored, see
            // `Client::id`): the first sixteen bytes compared as integers, the whole ids
            // only when those are equal.
            clients.clear();
            self.registry
                .for_each_in_shard(shard, |c| clients.push((c.id_prefix(), c.clone())));
            clients.sort_unstable_by(|(p, a), (q, b)| p.cmp(q).then_with(|| id_order(a, b)));
            let start = after.take().map_or(0, |k| {
                let k = k.as_str().as_bytes();
                clients.partition_point(|(_, c)| c.id_bytes(&mut IdBuf::new()) <= k)
            });
            for i in start..clients.len() {
                let c = &clients[i].1;
                let owner = c.owner();
                let size = size.state(
                    c.id_form(),
                    c.stored_id(),
                    owner,
                    || self.member_addr(owner).len(),
                    c.publications().iter().map(|p| &**p),
                );
                if !records.is_empty() && bytes + size > self.config.snapshot_chunk_bytes {
                    // Resume after the client before this one (sent, or before the cursor).
                    let after = i.checked_sub(1).map(|j| clients[j].1.id());
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
    use crate::config::Config;
    use crate::member::MemberList;
    use crate::message::SnapshotCursor;
    use crate::model::{ClientId, publish_samples};
    use crate::node::Node;

    /// Chunks pulled one after the other (each resumed at the cursor the last returned,
    /// mid-shard) give every client exactly once, shard by shard and in each shard in the
    /// byte order of the ids' full text, for ids of every form (derived ip:port ids
    /// included, which are not stored but ordered as if written out).
    #[test]
    fn chunks_resumed_at_their_cursors_give_every_client_once_in_id_order() {
        for (shards, chunk_bytes) in [(1, 1_024), (2, 1_024), (8, 2_048)] {
            let cfg = Config {
                shards,
                snapshot_chunk_bytes: chunk_bytes,
                ..Config::default()
            };
            let addrs = ["10.0.0.1:8848".to_string()];
            let node = Node::new(cfg, MemberList::new(&addrs[0], &addrs).unwrap(), 1).unwrap();
            let samples = publish_samples(node.registry());
            let mut want: Vec<(u32, String)> = samples
                .iter()
                .map(|id| (node.registry().shard_of(id), id.to_string()))
                .collect();
            want.sort();
            let (mut got, mut cursor, mut chunks) = (Vec::new(), SnapshotCursor::default(), 0);
            loop {
                let chunk = node.snapshot_chunk(cursor);
                chunks += 1;
                assert!(!chunk.records.is_empty());
                for c in &chunk.records {
                    got.push((c.shard(), c.id().to_string()));
                }
                match chunk.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            assert_eq!(got, want, "{shards} shards, chunks of {chunk_bytes} bytes");
            assert!(chunks >= 4, "{chunks} chunks");
            // A cursor after an id no client has resumes at the next id in byte order.
            let after = ClientId::parse("10.0.0.1:8#true").unwrap();
            let shard = node.registry().shard_of(&after);
            let chunk = node.snapshot_chunk(SnapshotCursor {
                shard,
                after: Some(after.clone()),
            });
            let first = chunk
                .records
                .first()
                .map(|c| (c.shard(), c.id().to_string()));
            let next = want
                .iter()
                .find(|(s, id)| (*s, id.as_str()) > (shard, after.as_str()))
                .cloned();
            assert_eq!(first, next);
        }
    }
}
