//! Membership: the member list and its changes, probing peers, their states (UP,
//! SUSPICIOUS, DOWN), and what a change of either moves.
//!
//! The runtime may change the member list at any time ([`Node::set_members`]: a watched
//! file, a re-resolved DNS name). Ids stay with their addresses ([`crate::MemberList`]), so
//! nothing held under an id is renumbered; a change rebuilds routing exactly as a change
//! of member states does, below.
//!
//! Every probe interval ([`Node::tick`]) a node probes each peer; a failed probe makes a
//! peer SUSPICIOUS, `probe_down_after` failures in a row DOWN, a success UP
//! ([`crate::member`] keeps the count). Probes carry each side's incarnation and whether
//! its snapshot load finished. Routing uses the UP and SUSPICIOUS members: when that set
//! changes, the routing table is rebuilt and every ip:port client is re-attributed to its
//! owner under the new table (a node gaining clients refreshes their heartbeat times, a
//! node losing them hands them to the new owner at once).

use super::{Node, inc};
use crate::member::{MemberId, MemberList, MemberListError, MemberState, PeerHealth};
use crate::message::{Command, PeerRequest, PeerResponse, Probe, SendError};
use crate::registry::Client;
use crate::router::Router;
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// What this node knows of a peer.
#[derive(Clone)]
pub(super) struct PeerInfo {
    /// Probe state: UP, SUSPICIOUS or DOWN.
    pub(super) health: PeerHealth,
    /// Whether the peer reports its snapshot load finished (verify waits for it).
    pub(super) loaded: bool,
    /// The peer's incarnation, as it reports it.
    pub(super) incarnation: u64,
    /// Whether the peer's answer to the last probe was "not a member (yet)": it is alive
    /// but has not read a member list naming this node. Its probes still count as failed
    /// (it may go DOWN), but a node loading its snapshot waits for it rather than start
    /// empty (see `snapshot`).
    pub(super) not_listing_me: bool,
    /// Verify rounds in a row whose lists this node held back from the peer because
    /// syncs to it were still on their way (see `Node::on_verify_mismatch`).
    pub(super) lists_deferred: u32,
}

impl PeerInfo {
    /// A peer just listed: UP until a probe fails, as Nacos; loaded until it says not.
    pub(super) fn new() -> Self {
        Self {
            health: PeerHealth::new(),
            loaded: true,
            incarnation: 0,
            not_listing_me: false,
            lists_deferred: 0,
        }
    }
}

impl Node {
    /// Every member's state as this node sees it (itself always UP).
    pub fn member_states(&self) -> Vec<(MemberId, MemberState)> {
        let peers = self.peers.lock();
        self.members
            .load()
            .ids()
            .map(|m| {
                let s = if m == self.me() {
                    MemberState::Up
                } else {
                    peers[m.index()].health.state
                };
                (m, s)
            })
            .collect()
    }

    /// The state of member `m`.
    pub fn member_state(&self, m: MemberId) -> MemberState {
        if m == self.me() {
            MemberState::Up
        } else {
            self.peers.lock()[m.index()].health.state
        }
    }

    /// Forces member `m`'s state (tests, and runtimes with their own failure detector).
    pub fn set_member_state(&self, m: MemberId, state: MemberState, now: Millis) {
        if m == self.me() {
            return;
        }
        let changed = {
            let mut peers = self.peers.lock();
            let h = &mut peers[m.index()].health;
            let changed = h.state != state;
            h.state = state;
            h.consecutive_failures = match state {
                MemberState::Up => 0,
                MemberState::Suspicious => 1,
                MemberState::Down => self.config.probe_down_after,
            };
            changed
        };
        if changed {
            self.recompute_routing(now);
        }
    }

    /// Replaces the member list with `addrs` (this node's address included): members
    /// already known keep their ids, new ones take free slots ([`MemberList::update`]).
    /// A joining member starts UP (until a probe fails) and not loaded (until it reports
    /// it); a member that left is no longer probed, synced to, verified or routed to, and
    /// its pending syncs are dropped. Routing is rebuilt and every ip:port client moves to
    /// its owner under the new list, as after a change of member states. Returns whether
    /// the list changed; on error the list is left as it was.
    pub fn set_members(&self, addrs: &[String], now: Millis) -> Result<bool, MemberListError> {
        let _one_at_a_time = self.member_change.lock();
        let old = self.members.load_full();
        let new = old.update(addrs)?;
        if new.ids().eq(old.ids()) {
            return Ok(false);
        }
        {
            let mut peers = self.peers.lock();
            for m in new.peers().filter(|&m| !old.contains(m)) {
                peers[m.index()] = PeerInfo {
                    loaded: false,
                    ..PeerInfo::new()
                };
                let q = self.sync.peer(m.index());
                q.paused_until.store(0, Relaxed);
                q.consecutive_failures.store(0, Relaxed);
            }
        }
        // What is pending for the members of the old list goes to the joiners too: those
        // changes were made before this node knew of them, and a joiner's snapshot may
        // predate their sync to the peer it loads from, which does not pass them on (a
        // joiner lacked two clients for 30 s over a lossy network, with only verify to
        // repair it: the lossy 3 -> 5 -> 3 test, seed 239).
        let joiners: Vec<MemberId> = new.peers().filter(|&m| !old.contains(m)).collect();
        if !joiners.is_empty() {
            for p in old.peers() {
                for (id, due) in self.sync.pending_clients(p.index()) {
                    for j in &joiners {
                        self.sync.schedule_at(j.index(), &id, due, false);
                    }
                }
            }
        }
        self.store_members(new);
        // Nothing more goes to a member that left (if it returns, it loads a snapshot and
        // verify repairs what it lacks): its queue is dropped once the new list is in
        // force, and again a peer timeout later, for what a writer that still held the
        // old list queued meanwhile (with the re-homing pass when routing changed; on a
        // timer of its own otherwise, as when the member was already DOWN).
        self.drop_former_members_syncs();
        self.timers.lock().drop_former_again = Some(now + self.config.peer_timeout);
        self.list_changed_at.store(now.max(1), Relaxed);
        self.recompute_routing(now);
        Ok(true)
    }

    /// Makes `new` the member list, and its word ([`MemberList::word`]) what writes load.
    /// A write that loads the word just before it changes schedules for the old list's
    /// peers, as one that loaded the old list just before the store does.
    fn store_members(&self, new: MemberList) {
        let word = new.word();
        self.members.store(Arc::new(new));
        self.member_word.store(word, Relaxed);
    }

    /// Drops whatever is queued for a slot that is not a current member (see
    /// [`Node::set_members`]): entries left for a member that never returns would hold
    /// their client states for good.
    pub(super) fn drop_former_members_syncs(&self) {
        let members = self.members.load();
        for i in 0..members.capacity() {
            let m = MemberId(i as u16);
            if self.sync.pending(i) > 0 && m != members.me() && !members.contains(m) {
                drop(self.sync.take(i, Millis::MAX, usize::MAX));
            }
        }
    }

    /// The member id of the owner at `addr`, as a record received from a peer names it
    /// (a snapshot chunk, a sync, a verify answer): a member this node knows (current, or
    /// one that left), else `addr` is learned as a former member ([`crate::MemberList::learn`]).
    /// Peers hold replicas of a member that left until their leases end; a node started
    /// after the leave was never given its address, and refusing such records made its
    /// snapshot load fail at every peer until those leases ended everywhere. Errors when
    /// `addr` is not `host:port` or no slot is free.
    pub fn owner_id(&self, addr: &str) -> Result<MemberId, MemberListError> {
        if let Some(id) = self.members.load().known(addr) {
            return Ok(id);
        }
        let _one_at_a_time = self.member_change.lock();
        let old = self.members.load_full();
        let (new, id) = old.learn(addr)?;
        self.store_members(new);
        Ok(id)
    }

    /// Whether the member list changed within the settle time
    /// ([`crate::Config::member_change_settle`]): this node sends no verify then.
    pub(super) fn settling(&self, now: Millis) -> bool {
        let at = self.list_changed_at.load(Relaxed);
        at != 0 && now.saturating_sub(at) < self.config.member_change_settle
    }

    /// Probes every peer that has no probe in flight.
    pub(super) fn probe_peers(&self, out: &mut Vec<Command>) {
        let mut peers = self.peers.lock();
        for p in self.members.load().peers() {
            let info = &mut peers[p.index()];
            if info.health.probe_in_flight {
                continue;
            }
            info.health.probe_in_flight = true;
            out.push(Command::Send {
                to: p,
                request: PeerRequest::Probe(Probe {
                    incarnation: self.incarnation,
                    loaded: self.is_loaded(),
                }),
            });
        }
    }

    /// Answers a probe from `from`, noting what it reports about itself.
    pub(super) fn answer_probe(&self, from: MemberId, p: Probe) -> PeerResponse {
        self.note_peer_report(from, p);
        PeerResponse::ProbeAck(Probe {
            incarnation: self.incarnation,
            loaded: self.is_loaded(),
        })
    }

    /// Notes what peer `from` reports about itself (loaded, incarnation).
    fn note_peer_report(&self, from: MemberId, p: Probe) {
        let mut peers = self.peers.lock();
        let info = &mut peers[from.index()];
        info.loaded = p.loaded;
        info.incarnation = p.incarnation;
    }

    /// Digests the outcome of a probe of `to`.
    pub(super) fn on_probe_result(
        &self,
        to: MemberId,
        result: &Result<PeerResponse, SendError>,
        now: Millis,
    ) {
        let ok = result.is_ok();
        if !ok {
            inc(&self.counters.probes_failed, 1);
        }
        if let Ok(PeerResponse::ProbeAck(p)) = result {
            self.note_peer_report(to, *p);
        }
        self.peers.lock()[to.index()].not_listing_me = matches!(result, Err(SendError::NotMember));
        self.on_probe(to, ok, now);
    }

    /// Moves `peer`'s state after a probe; a change of state rebuilds the routing table.
    fn on_probe(&self, peer: MemberId, ok: bool, now: Millis) {
        let changed = {
            let mut peers = self.peers.lock();
            peers[peer.index()]
                .health
                .on_probe(ok, self.config.probe_down_after)
        };
        if let Some(state) = changed {
            if state == MemberState::Up {
                // Let pending syncs flow again at once.
                let q = self.sync.peer(peer.index());
                q.paused_until.store(0, Relaxed);
                q.consecutive_failures.store(0, Relaxed);
            }
            self.recompute_routing(now);
        }
    }

    /// Rebuilds the routing table from member states and moves ip:port ownership.
    fn recompute_routing(&self, now: Millis) {
        let routable: Vec<MemberId> = self
            .member_states()
            .into_iter()
            .filter(|(_, s)| s.is_routable())
            .map(|(m, _)| m)
            .collect();
        let table = self.config.router.build(&self.members.load(), &routable);
        let rejoined = {
            let old = self.routing.load();
            if table.members() == old.members() {
                return;
            }
            table.members().iter().any(|m| !old.members().contains(m))
        };
        self.routing.store(Arc::new(table));
        self.routing_changes.fetch_add(1, Relaxed);
        self.rehome(now, rejoined);
        // A replica applied concurrently may have been attributed under the old table
        // after this pass went by its shard: one more pass once such applies are done.
        self.timers.lock().rehome_again = Some(now + self.config.peer_timeout);
    }

    /// Re-attributes every ip:port client to its owner under the current routing table.
    /// Clients this node gains get fresh heartbeat times (no mass expiry); clients it
    /// loses are handed to their new owner at once. When a member `rejoined` (a partition
    /// healed, a node came back), the clients this node keeps get fresh heartbeat times
    /// too: while the members were apart, their heartbeats may have gone to the other
    /// side, which does not report them, so the last beat seen here says nothing.
    pub(super) fn rehome(&self, now: Millis, rejoined: bool) {
        let me = self.me();
        let members = self.members.load_full();
        let mut moves: Vec<(Arc<Client>, MemberId)> = Vec::new();
        // One load of the routing table for the pass.
        let routing = self.routing.load();
        self.registry.for_each(|c| {
            // The routing key without writing a derived id out (see `Client::id`).
            if let Some(key) = c.routing_key() {
                let owner = routing.owner_of_key(key).unwrap_or(me);
                if owner != c.owner() {
                    moves.push((c.clone(), owner));
                } else if rejoined && owner == me {
                    self.registry.refresh_beats(c, now);
                }
            }
        });
        for (c, owner) in moves {
            let previous = c.owner();
            let was_mine = previous == me;
            // Written out once (a derived id is not stored, see `Client::id`).
            let id = c.id();
            if !self.registry.set_owner(&id, owner) {
                continue;
            }
            if owner == me {
                self.registry.refresh_beats(&c, now);
                inc(&self.counters.clients_adopted, 1);
            } else if was_mine {
                inc(&self.counters.clients_released, 1);
                self.sync.schedule_at(owner.index(), &id, now, false);
            } else if !members.contains(previous) {
                // Its owner left the list: this copy may be the only one the new owner
                // can get (the old owner's last syncs may have reached only some nodes).
                // The new owner applies it only if it is newer than what it holds.
                self.sync.schedule_at(owner.index(), &id, now, false);
            }
            c.renew_lease(now);
        }
    }
}
