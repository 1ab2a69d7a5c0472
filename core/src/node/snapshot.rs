//! Snapshot: serving this node's clients in chunks, and loading a peer's at startup.
//!
//! A snapshot is every client held, as records, streamed in chunks bounded in bytes and
//! addressed by a cursor (shard, offset), so any size streams and a chunk can be asked
//! for again. A starting node loads from the first UP peer, tries the next on failure,
//! and starts empty only when every peer is DOWN; until loaded it sends no verify. The
//! runtime carries the stream: [`Node::tick`] returns `Command::LoadSnapshot`, the
//! runtime pulls chunks with [`Node::snapshot_chunk`] on the peer and feeds them to
//! [`Node::load_chunk`] here, then reports the end with [`Node::load_finished`].

use super::{Node, inc};
use crate::member::{MemberId, MemberState};
use crate::message::{Command, SnapshotChunk, SnapshotCursor};
use crate::model::ClientKind;
use crate::registry::{ApplyOutcome, ClientRecord, ReplicaChange};
use crate::time::Millis;
use std::sync::atomic::Ordering::Relaxed;

/// Progress of the startup snapshot load.
pub(super) struct LoadState {
    pub(super) in_progress: Option<MemberId>,
    pub(super) tried: Vec<MemberId>,
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

    pub(super) fn load_step(&self, now: Millis, out: &mut Vec<Command>) {
        if self.is_loaded() {
            return;
        }
        let mut load = self.load.lock();
        if load.in_progress.is_some() || now < load.next_attempt {
            return;
        }
        let states = self.member_states();
        let candidate = states
            .iter()
            .find(|(m, s)| *m != self.me() && *s == MemberState::Up && !load.tried.contains(m))
            .map(|(m, _)| *m);
        match candidate {
            Some(m) => {
                load.in_progress = Some(m);
                out.push(Command::LoadSnapshot { from: m });
            }
            None => {
                let all_down = states
                    .iter()
                    .all(|(m, s)| *m == self.me() || *s == MemberState::Down);
                if all_down {
                    // Nobody to load from: this node starts the cluster's state.
                    self.loaded.store(true, Relaxed);
                } else {
                    load.tried.clear();
                    load.next_attempt = now + self.config.load_retry_delay;
                }
            }
        }
    }

    /// Applies a chunk of the snapshot being loaded from `from`.
    pub fn load_chunk(&self, from: MemberId, records: &[ClientRecord], now: Millis) {
        let me = self.me();
        let mut ghosts = Vec::new();
        // Grouped by shard in the registry: one lock acquisition per shard per chunk.
        let states = records.iter().filter_map(|r| {
            let owner = match r.id.kind() {
                ClientKind::IpPort => self.attribution(&r.id, from),
                ClientKind::Connection => r.owner,
            };
            if r.id.kind() == ClientKind::Connection && owner == me {
                // A connection of this node's previous incarnation: it cannot exist any
                // more. Delete it everywhere (above its revision).
                ghosts.push(r.clone());
                return None;
            }
            Some(ReplicaChange::State(r, owner))
        });
        let counts = self.registry.apply_many(states, now);
        inc(&self.counters.snapshot_clients, u64::from(counts.applied));
        for g in ghosts {
            if self.registry.apply(&g, me, now) == ApplyOutcome::Applied {
                let r = self.registry.remove_client(&g.id, me, now);
                self.after_write(&g.id, r, now);
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

    /// A chunk of this node's snapshot starting at `cursor`, bounded by the configured
    /// chunk size (a chunk holds at least one client when any is left).
    pub fn snapshot_chunk(&self, cursor: SnapshotCursor) -> SnapshotChunk {
        let shards = self.registry.shard_count();
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut shard = cursor.shard;
        let mut offset = cursor.offset as usize;
        while shard < shards {
            let mut clients = self.registry.shard_clients(shard);
            clients.sort_by(|a, b| a.id().cmp(b.id()));
            while offset < clients.len() {
                let rec = clients[offset].to_record();
                let size = rec.size_hint();
                if !records.is_empty() && bytes + size > self.config.snapshot_chunk_bytes {
                    return SnapshotChunk {
                        records,
                        next: Some(SnapshotCursor {
                            shard,
                            offset: offset as u32,
                        }),
                    };
                }
                bytes += size;
                records.push(rec);
                offset += 1;
            }
            shard += 1;
            offset = 0;
        }
        SnapshotChunk {
            records,
            next: None,
        }
    }
}
