//! The virtual network: how the simulator carries the commands nodes return.
//!
//! A `Command::Send` becomes a request that is delivered after a random delay (or lost,
//! or duplicated), answered by the peer's [`Node::handle_request`](crate::Node), and its
//! response carried back the same way to [`Node::handle_response`](crate::Node); a request
//! without a response within the peer timeout comes back as `SendError::Unreachable`. A
//! `Command::LoadSnapshot` becomes a stream of pulls and chunks between the two nodes,
//! ended by the last chunk or by a chunk that does not arrive in time. An isolated or
//! crashed node's messages are lost; a response to a node's previous incarnation is
//! dropped.

use super::SimCluster;
use crate::member::MemberId;
use crate::message::{Command, Need, PeerRequest, PeerResponse, SendError, SnapshotCursor};
use crate::registry::{ClientChange, ClientRecord};
use crate::time::Millis;
use std::cmp::Reverse;

/// Makes the states a sync batch shares with the sender's store records, as the server
/// encodes a batch when it sends it: the state as it is then, not at delivery.
fn own_states(request: &mut PeerRequest) {
    if let PeerRequest::Sync(batch) = request {
        for c in batch.changes.iter_mut() {
            if let ClientChange::Stored(s) = c {
                *c = ClientChange::Upsert(s.to_record());
            }
        }
    }
}

/// Changes the digests of a `VerifyDigests` as a node of another build would have
/// computed them for the same clients: the count is the same, the sums are not (an
/// empty shard's digest is all zeros in every build).
fn other_build_digests(request: &mut PeerRequest) {
    if let PeerRequest::VerifyDigests(v) = request {
        for d in v.digests.iter_mut().filter(|d| d.count > 0) {
            d.sum_lo = crate::hash::mix64(d.sum_lo ^ 0x5eed);
            d.sum_hi = crate::hash::mix64(d.sum_hi ^ 0x5eed);
        }
    }
}

/// Something the network does at a point of virtual time.
pub(super) enum Event {
    Deliver {
        req: u64,
    },
    Respond {
        req: u64,
        response: PeerResponse,
    },
    Timeout {
        req: u64,
    },
    Pull {
        load: u64,
        cursor: SnapshotCursor,
    },
    Chunk {
        load: u64,
        chunk: crate::message::SnapshotChunk,
    },
    LoadTimeout {
        load: u64,
        chunk_no: u64,
    },
    /// The source refused the load: it has not loaded its own snapshot yet.
    Refused {
        load: u64,
    },
}

/// A peer request on its way, until its response or timeout.
pub(super) struct Outstanding {
    from: usize,
    to: usize,
    /// What the sender calls `to`.
    to_id: MemberId,
    generation: u64,
    request: PeerRequest,
}

/// How a snapshot load ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Loaded,
    Failed,
    Refused,
}

/// A snapshot load being streamed, chunk by chunk.
pub(super) struct Load {
    loader: usize,
    source: usize,
    /// What the loader calls `source`.
    source_id: MemberId,
    generation: u64,
    chunks: u64,
    done: bool,
}

impl SimCluster {
    /// Re-expresses the owners of records sent by node `from` in node `to`'s member ids,
    /// as the server's wire does (it names owners by address): member ids are local to
    /// a node, and two nodes started with different lists number members differently. An
    /// owner `to` never knew (a member that left before `to` started) is learned as a
    /// former member ([`crate::Node::owner_id`]); false if that fails (the server refuses
    /// such a message).
    fn translate(&self, from: usize, to: usize, records: &mut [ClientRecord]) -> bool {
        let (Some(f), Some(t)) = (self.nodes[from].as_ref(), self.nodes[to].as_ref()) else {
            return false;
        };
        for r in records {
            match t.owner_id(f.member_addr(r.owner)).ok() {
                Some(id) => r.owner = id,
                None => return false,
            }
        }
        true
    }

    /// [`SimCluster::translate`] for the records a request carries.
    fn translate_request(&self, from: usize, to: usize, request: &mut PeerRequest) -> bool {
        match request {
            // Stored states were made records when sent (`own_states`).
            PeerRequest::Sync(batch) => batch.changes.iter_mut().all(|c| match c {
                ClientChange::Upsert(r) => self.translate(from, to, std::slice::from_mut(r)),
                ClientChange::Stored(_) | ClientChange::Delete { .. } => true,
            }),
            _ => true,
        }
    }

    /// [`SimCluster::translate`] for the records a response carries.
    fn translate_response(&self, from: usize, to: usize, response: &mut PeerResponse) -> bool {
        match response {
            PeerResponse::VerifyReport { needs, .. } => needs.iter_mut().all(|(_, n)| match n {
                Need::Newer(ClientChange::Upsert(r)) => {
                    self.translate(from, to, std::slice::from_mut(r))
                }
                _ => true,
            }),
            _ => true,
        }
    }

    /// Whether nodes `a` and `b` can talk: both alive, neither isolated.
    pub(super) fn link_ok(&self, a: usize, b: usize) -> bool {
        self.nodes[a].is_some() && self.nodes[b].is_some() && !self.isolated[a] && !self.isolated[b]
    }

    /// Queues event `e` at virtual time `at`.
    fn schedule(&mut self, at: Millis, e: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, e);
    }

    /// A random one-way delay.
    fn delay(&mut self) -> Millis {
        let n = self.cfg.net;
        self.rng.range(n.min_delay, n.max_delay.max(n.min_delay))
    }

    /// Carries out the commands node `from` returned: sends requests (which may be lost
    /// or duplicated, and time out) and starts snapshot loads.
    pub(super) fn execute(&mut self, from: usize, cmds: Vec<Command>) {
        for c in cmds {
            match c {
                Command::Send {
                    to: to_id,
                    mut request,
                } => {
                    let Some(to) = self.node_of(from, to_id) else {
                        continue;
                    };
                    own_states(&mut request);
                    if self.other_build[from] != self.other_build[to] {
                        other_build_digests(&mut request);
                    }
                    self.seq += 1;
                    let id = self.seq;
                    self.stats.requests += 1;
                    self.outstanding.insert(
                        id,
                        Outstanding {
                            from,
                            to,
                            to_id,
                            generation: self.generation[from],
                            request,
                        },
                    );
                    let timeout = self.now + self.cfg.protocol.peer_timeout;
                    self.schedule(timeout, Event::Timeout { req: id });
                    if self.rng.chance(self.cfg.net.loss) {
                        self.stats.lost += 1;
                        continue;
                    }
                    let d = self.delay();
                    self.schedule(self.now + d, Event::Deliver { req: id });
                    if self.rng.chance(self.cfg.net.duplicate) {
                        self.stats.duplicated += 1;
                        let d = self.delay();
                        self.schedule(self.now + d, Event::Deliver { req: id });
                    }
                }
                Command::LoadSnapshot { from: source_id } => {
                    let Some(source) = self.node_of(from, source_id) else {
                        continue;
                    };
                    self.seq += 1;
                    let load = self.seq;
                    self.loads.insert(
                        load,
                        Load {
                            loader: from,
                            source,
                            source_id,
                            generation: self.generation[from],
                            chunks: 0,
                            done: false,
                        },
                    );
                    self.send_pull(load, SnapshotCursor::default());
                }
                // No allocator to trim in a simulation.
                Command::ReleaseMemory => {}
            }
        }
    }

    /// Asks the load's source for the chunk at `cursor`.
    fn send_pull(&mut self, load: u64, cursor: SnapshotCursor) {
        let chunk_no = self.loads[&load].chunks;
        let timeout = self.now + self.cfg.protocol.peer_timeout;
        self.schedule(timeout, Event::LoadTimeout { load, chunk_no });
        if self.rng.chance(self.cfg.net.loss) {
            self.stats.lost += 1;
            return;
        }
        let d = self.delay();
        self.schedule(self.now + d, Event::Pull { load, cursor });
    }

    /// Ends snapshot load `load` and tells the loader (`ok` false: it failed).
    fn finish_load(&mut self, load: u64, ok: bool) {
        self.end_load(load, if ok { End::Loaded } else { End::Failed });
    }

    fn end_load(&mut self, load: u64, end: End) {
        let Some(l) = self.loads.get_mut(&load) else {
            return;
        };
        if l.done {
            return;
        }
        l.done = true;
        let (loader, source, generation) = (l.loader, l.source_id, l.generation);
        if self.generation[loader] != generation {
            return;
        }
        if end == End::Loaded {
            self.stats.snapshot_loads += 1;
        }
        let now = self.now;
        if let Some(n) = &self.nodes[loader] {
            match end {
                End::Loaded => n.load_finished(source, true, now),
                End::Failed => n.load_finished(source, false, now),
                End::Refused => n.load_refused(source, now),
            }
        }
    }

    /// Processes one event: a request delivered, a response, a timeout, a snapshot pull or
    /// chunk.
    pub(super) fn process(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Deliver { req } => {
                let Some(o) = self.outstanding.get(&req) else {
                    return;
                };
                let (from, to) = (o.from, o.to);
                if !self.link_ok(from, to) {
                    self.stats.lost += 1;
                    return;
                }
                let mut request = o.request.clone();
                if !self.translate_request(from, to, &mut request) {
                    self.stats.lost += 1;
                    return;
                }
                let node = self.nodes[to]
                    .as_ref()
                    .expect("link_ok checked the node is alive");
                let response = match self.id_on(to, from) {
                    Some(id) => node.handle_request(id, request, now),
                    // As the server's peer service: a sender it never knew is refused.
                    None => PeerResponse::NotMember,
                };
                if self.rng.chance(self.cfg.net.loss) {
                    self.stats.lost += 1;
                    return;
                }
                let d = self.delay();
                self.schedule(now + d, Event::Respond { req, response });
            }
            Event::Respond { req, mut response } => {
                let Some(o) = self.outstanding.get(&req) else {
                    return;
                };
                if !self.link_ok(o.from, o.to) || self.generation[o.from] != o.generation {
                    self.stats.lost += 1;
                    return;
                }
                let o = self.outstanding.remove(&req).expect("present above");
                if !self.translate_response(o.to, o.from, &mut response) {
                    self.stats.lost += 1;
                    return;
                }
                let node = self.nodes[o.from]
                    .as_ref()
                    .expect("link_ok checked the node is alive");
                let cmds = node.handle_response(o.to_id, o.request, Ok(response), now);
                self.execute(o.from, cmds);
            }
            Event::Timeout { req } => {
                let Some(o) = self.outstanding.remove(&req) else {
                    return;
                };
                if self.generation[o.from] != o.generation {
                    return;
                }
                self.stats.timeouts += 1;
                if let Some(node) = self.nodes[o.from].as_ref() {
                    let cmds =
                        node.handle_response(o.to_id, o.request, Err(SendError::Unreachable), now);
                    self.execute(o.from, cmds);
                }
            }
            Event::Pull { load, cursor } => {
                let Some(l) = self.loads.get(&load) else {
                    return;
                };
                if l.done || !self.link_ok(l.loader, l.source) {
                    self.stats.lost += 1;
                    return;
                }
                let source = self.nodes[l.source]
                    .as_ref()
                    .expect("link_ok checked the node is alive");
                let e = if source.serves_snapshot() {
                    Event::Chunk {
                        load,
                        chunk: source.snapshot_chunk(cursor),
                    }
                } else {
                    self.stats.snapshot_refusals += 1;
                    Event::Refused { load }
                };
                if self.rng.chance(self.cfg.net.loss) {
                    self.stats.lost += 1;
                    return;
                }
                let d = self.delay();
                self.schedule(now + d, e);
            }
            Event::Chunk { load, chunk } => {
                let Some(l) = self.loads.get_mut(&load) else {
                    return;
                };
                if l.done || self.generation[l.loader] != l.generation {
                    return;
                }
                let (loader, source, source_id) = (l.loader, l.source, l.source_id);
                if !self.link_ok(loader, source) {
                    // Lost: the pending LoadTimeout for this chunk ends the load.
                    self.stats.lost += 1;
                    return;
                }
                if let Some(l) = self.loads.get_mut(&load) {
                    l.chunks += 1;
                }
                self.stats.snapshot_chunks += 1;
                // As records (owned: the loader's member ids are not the source's).
                let mut records: Vec<_> = chunk.records.iter().map(|c| c.to_record()).collect();
                if !self.translate(source, loader, &mut records) {
                    // A chunk the loader cannot decode fails the load, as on the server
                    // (the LoadTimeout pending for it no longer matches the chunk count,
                    // and waiting for it left the load, and the loader, hanging).
                    self.finish_load(load, false);
                    return;
                }
                let node = self.nodes[loader]
                    .as_ref()
                    .expect("link_ok checked the node is alive");
                node.load_chunk(source_id, &records, now);
                match chunk.next {
                    Some(cursor) => self.send_pull(load, cursor),
                    None => self.finish_load(load, true),
                }
            }
            Event::Refused { load } => {
                let live = self.loads.get(&load).is_some_and(|l| {
                    !l.done
                        && self.generation[l.loader] == l.generation
                        && self.link_ok(l.loader, l.source)
                });
                if live {
                    self.end_load(load, End::Refused);
                }
            }
            Event::LoadTimeout { load, chunk_no } => {
                let stalled = self
                    .loads
                    .get(&load)
                    .is_some_and(|l| !l.done && l.chunks == chunk_no);
                if stalled {
                    self.stats.timeouts += 1;
                    self.finish_load(load, false);
                }
            }
        }
    }
}
