//! Verify: owners and replicas comparing what they hold, so replicas converge even when
//! syncs were lost, and renewing the replicas' leases.
//!
//! Every verify interval ([`Node::tick`]) an owner sends each loaded peer that is not
//! DOWN its shard digests. The peer answers with the shards that differ from its copy of
//! the owner's clients and renews the leases of the clients in the matching shards. For
//! the differing shards the owner sends `(client id, revision)` lists; the peer renews
//! the leases of the listed clients it holds at the listed revision (and the listed
//! shards'), reports what it lacks or holds stale, drops what the owner no longer lists,
//! and returns any newer state it holds, which the owner adopts and propagates. The owner then sends
//! exactly the lacking clients, through the sync queue. Nacos's one request per client
//! (`VerifyMode::PerClient`) is here too, to be measured against the digests.
//!
//! The owner's side comes first (a round, then each answer), then the peer's.

use super::{Node, inc};
use crate::config::VerifyMode;
use crate::member::{MemberId, MemberState};
use crate::message::{
    Command, Need, PeerRequest, PeerResponse, ShardList, VerifyClients, VerifyDigests, VerifyList,
};
use crate::model::{ClientId, ClientKind, Revision};
use crate::registry::{ApplyOutcome, Client, ClientChange, ClientRecord, FastHash};
use crate::time::Millis;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Verify rounds in a row a mismatched peer may go without lists while syncs to it are
/// pending or in flight; the next mismatch sends them regardless (under continuous churn
/// the queue is never empty).
const MAX_DEFERRED_LISTS: u32 = 2;

impl Node {
    /// Sends every loaded peer that is not DOWN this node's shard digests (or, per
    /// client, every owned client's revision).
    pub(super) fn verify_round(&self, now: Millis, out: &mut Vec<Command>) {
        // A leaving node owns nothing: its digests would tell peers that have not seen
        // the new list yet to drop what they attribute to it. Right after a list change,
        // peers may not have it yet either.
        if self.members.load().is_leaving() || self.settling(now) {
            return;
        }
        let targets: Vec<MemberId> = {
            let peers = self.peers.lock();
            self.members
                .load()
                .peers()
                .filter(|p| {
                    let i = &peers[p.index()];
                    i.health.state != MemberState::Down && i.loaded
                })
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        self.verify_routing
            .store(self.routing_changes.load(Relaxed), Relaxed);
        match self.config.verify_mode {
            VerifyMode::Digest => {
                let digests = self.registry.owner_digests(self.me());
                for p in targets {
                    inc(&self.counters.verify_rounds, 1);
                    inc(&self.counters.verify_bytes_sent, 24 * digests.len() as u64);
                    out.push(Command::Send {
                        to: p,
                        request: PeerRequest::VerifyDigests(VerifyDigests {
                            digests: digests.clone(),
                        }),
                    });
                }
            }
            VerifyMode::PerClient => {
                let me = self.me();
                let mut owned = Vec::new();
                self.registry.for_each(|c| {
                    if c.owner() == me {
                        owned.push((c.id(), c.revision()));
                    }
                });
                for p in targets {
                    inc(&self.counters.verify_rounds, 1);
                    for (id, rev) in &owned {
                        inc(
                            &self.counters.verify_bytes_sent,
                            16 + id.as_str().len() as u64,
                        );
                        out.push(Command::Send {
                            to: p,
                            request: PeerRequest::VerifyClients(VerifyClients {
                                clients: vec![(id.clone(), *rev)],
                            }),
                        });
                    }
                }
            }
        }
    }

    /// `to` found the shards `shards` of this node's clients differing from its copy:
    /// send it the `(client id, revision)` lists of those shards, unless the routing
    /// table changed since the round was sent (or this node is leaving, or settling
    /// after a list change), or syncs to `to` are still pending or in flight and the
    /// lists were not held back [`MAX_DEFERRED_LISTS`] rounds in a row already: a replica
    /// behind by what is on its way differs for that reason alone, and lists of every
    /// shard in the middle of a burst of registrations cost both nodes a walk of all
    /// their clients (a million-client burst stalled both for seconds) to repair what the
    /// queue delivers anyway. Leases can wait for it: they are many rounds long, and the
    /// lists, when they go, renew them as a matching digest does (a cluster of mixed
    /// builds, whose digests never match, keeps its clients by them); a replica that lost
    /// state still gets the lists within `MAX_DEFERRED_LISTS + 1` rounds. `to` drops the
    /// replicas it attributes to this node that the lists leave out: lists built after
    /// this node handed clients over (a member joined or came back, this node is leaving)
    /// leave out clients that `to`, not knowing of the change yet, still attributes to
    /// this node, and it would drop them, perhaps the copy their new owner needs. The next
    /// round verifies under the new table.
    pub(super) fn on_verify_mismatch(
        &self,
        to: MemberId,
        shards: &[u32],
        now: Millis,
        out: &mut Vec<Command>,
    ) {
        inc(&self.counters.verify_shards_mismatched, shards.len() as u64);
        let moved = self.routing_changes.load(Relaxed) != self.verify_routing.load(Relaxed);
        if moved || self.members.load().is_leaving() || self.settling(now) {
            return;
        }
        let syncing = self.sync.pending(to.index()) > 0
            || self.sync.peer(to.index()).inflight.load(Relaxed) > 0;
        {
            let mut peers = self.peers.lock();
            let deferred = &mut peers[to.index()].lists_deferred;
            if syncing && *deferred < MAX_DEFERRED_LISTS {
                *deferred += 1;
                inc(&self.counters.verify_lists_deferred, 1);
                return;
            }
            *deferred = 0;
        }
        self.send_lists(to, shards, out);
    }

    /// Sends `to` the `(client id, revision)` lists of this node's clients in `shards`, in
    /// requests bounded by `batch_max_bytes`.
    fn send_lists(&self, to: MemberId, shards: &[u32], out: &mut Vec<Command>) {
        let me = self.me();
        let issued_here = self.issued_here();
        let mut list = VerifyList { shards: Vec::new() };
        let mut bytes = 0usize;
        for &s in shards {
            if s >= self.registry.shard_count() {
                continue;
            }
            // The clients it owns; and of the ip:port clients (owned by routing), those
            // it holds at a revision it issued (it handed them over) and those it
            // attributes to `to`. A peer whose view of the members differs (a member
            // this node sees DOWN is UP there) may attribute such a client to this node
            // while this node attributes it to `to` or to a third member, and `to` would
            // drop it as no longer listed, perhaps the copy the owner of the agreed view
            // needs. Listed, it stays until the views agree or its owner changes it.
            // (A connection client's owner is the node holding it, whatever the view;
            // listing another's would re-attribute it to this node.)
            let mut clients = Vec::new();
            self.registry.for_each_in_shard(s, |c| {
                let routed = c.kind() == ClientKind::IpPort;
                let vouched = routed && (c.owner() == to || issued_here(c.revision()));
                if c.owner() == me || vouched {
                    clients.push((c.id(), c.revision()));
                }
            });
            let size: usize = 8 + clients
                .iter()
                .map(|(id, _)| id.as_str().len() + 12)
                .sum::<usize>();
            if !list.shards.is_empty() && bytes + size > self.config.batch_max_bytes {
                inc(&self.counters.verify_bytes_sent, bytes as u64);
                out.push(Command::Send {
                    to,
                    request: PeerRequest::VerifyList(std::mem::replace(
                        &mut list,
                        VerifyList { shards: Vec::new() },
                    )),
                });
                bytes = 0;
            }
            bytes += size;
            list.shards.push(ShardList { shard: s, clients });
        }
        if !list.shards.is_empty() {
            inc(&self.counters.verify_bytes_sent, bytes as u64);
            out.push(Command::Send {
                to,
                request: PeerRequest::VerifyList(list),
            });
        }
    }

    /// `to` reported what it lacks or holds stale of this node's listed clients (sent again
    /// at once), and any newer state it holds (adopted and propagated as the owner).
    pub(super) fn on_verify_report(&self, to: MemberId, needs: Vec<(ClientId, Need)>, now: Millis) {
        for (id, need) in needs {
            match need {
                Need::Missing | Need::Stale => {
                    inc(&self.counters.verify_repairs, 1);
                    self.sync.schedule_at(to.index(), &id, now, false);
                }
                Need::Newer(change) => {
                    // Adopt the newer change and propagate it as the owner.
                    let adopt = |r: &ClientRecord| {
                        let owner = self.attribution(r.id.as_str(), self.me());
                        self.registry.apply(r, owner, now)
                    };
                    let applied = match &change {
                        ClientChange::Upsert(r) => adopt(r),
                        ClientChange::Stored(s) => adopt(&s.to_record()),
                        ClientChange::Delete { id, revision } => {
                            self.registry.apply_delete(id, *revision, now)
                        }
                    };
                    if applied == ApplyOutcome::Applied {
                        inc(&self.counters.verify_repairs, 1);
                        for p in self.members.load().peers() {
                            self.sync.schedule_at(p.index(), &id, now, false);
                        }
                    }
                }
            }
        }
    }

    /// `to` lacks or holds stale the `failed` clients of a per-client verify: send them.
    pub(super) fn on_verify_clients_result(
        &self,
        to: MemberId,
        failed: Vec<ClientId>,
        now: Millis,
    ) {
        for id in failed {
            inc(&self.counters.verify_repairs, 1);
            self.sync.schedule_at(to.index(), &id, now, false);
        }
    }

    /// Answers an owner's digests: the shards that differ from this node's copy of its
    /// clients; the matching shards renew their leases.
    pub(super) fn check_digests(
        &self,
        from: MemberId,
        v: &VerifyDigests,
        now: Millis,
    ) -> PeerResponse {
        if v.digests.len() != self.registry.shard_count() as usize {
            return PeerResponse::Refused(format!(
                "shard count mismatch: sender has {}, this node {}",
                v.digests.len(),
                self.registry.shard_count()
            ));
        }
        let mut shards = Vec::new();
        for (s, d) in v.digests.iter().enumerate() {
            let s = s as u32;
            if self.registry.digest(from, s) == *d {
                self.renewed_at(from, s).store(now, Relaxed);
            } else {
                shards.push(s);
            }
        }
        PeerResponse::VerifyMismatch { shards }
    }

    /// Answers an owner's `(client id, revision)` lists: what this node lacks, holds stale
    /// or holds newer, and drops the replicas the owner no longer lists.
    pub(super) fn check_list(&self, from: MemberId, list: VerifyList, now: Millis) -> PeerResponse {
        let mut needs = Vec::new();
        let mut removed = 0;
        for sl in list.shards {
            if sl.shard >= self.registry.shard_count() {
                return PeerResponse::Refused(format!("shard {} out of range", sl.shard));
            }
            // Hashed with the registry's seeded hasher, not std's per-process random one:
            // with a fixed `hash_seed` the walk is the same in every run (the instruction
            // gate's verify round varied by up to 4 % with std's), and foldhash is cheaper.
            let mut listed: HashSet<&str, FastHash> = HashSet::with_capacity_and_hasher(
                sl.clients.len(),
                crate::registry::fast_hash(self.config.hash_seed),
            );
            listed.extend(sl.clients.iter().map(|(id, _)| id.as_str()));
            for (id, rev) in &sl.clients {
                match self.registry.get(id.as_str()) {
                    None => match self.registry.tombstone(id.as_str()) {
                        Some(t) if t > *rev => needs.push((
                            id.clone(),
                            Need::Newer(ClientChange::Delete {
                                id: id.clone(),
                                revision: t,
                            }),
                        )),
                        _ => {
                            // The owner holds it: a drop marker at this revision was wrong.
                            self.registry.clear_drop_marker(id.as_str(), *rev);
                            needs.push((id.clone(), Need::Missing));
                        }
                    },
                    Some(c) if c.revision() < *rev => needs.push((id.clone(), Need::Stale)),
                    Some(c) if c.revision() > *rev => {
                        needs.push((id.clone(), Need::Newer(ClientChange::Upsert(c.to_record()))))
                    }
                    Some(c) => {
                        c.renew_lease(now);
                        if c.owner() != from && id.kind() == ClientKind::Connection {
                            self.registry.set_owner(id, from);
                        }
                    }
                }
            }
            // Extras: clients this node attributes to `from` that `from` no longer has.
            // A client synced within the last peer timeout may postdate the list; keep it.
            // A client that moved to `from` (a change of members) within the settle time
            // may not have reached it yet (its old owner hands it over); keep it too.
            let grace = self
                .config
                .peer_timeout
                .max(self.config.member_change_settle);
            // A client whose revision this incarnation issued was handed over by this node (it
            // owned it before `from`): the handover sync may still be retrying, with its
            // back-off; keep it until that has run out.
            let handover_grace = grace.max(
                self.config
                    .sync_retry_max_delay
                    .saturating_add(self.config.peer_timeout),
            );
            let issued_here = self.issued_here();
            let mut extras: Vec<(ClientId, Revision)> = Vec::new();
            self.registry
                .for_each_in_shard(sl.shard, |c: &Arc<Client>| {
                    let grace = if issued_here(c.revision()) {
                        handover_grace
                    } else {
                        grace
                    };
                    if c.owner() == from && now.saturating_sub(c.lease_base()) > grace {
                        let id = c.id();
                        if !listed.contains(id.as_str()) {
                            extras.push((id, c.revision()));
                        }
                    }
                });
            for (id, rev) in extras {
                if self.registry.drop_replica(&id, rev, now) {
                    removed += 1;
                }
            }
            self.renewed_at(from, sl.shard).store(now, Relaxed);
        }
        inc(&self.counters.verify_removed, u64::from(removed));
        PeerResponse::VerifyReport { needs, removed }
    }

    /// Answers a per-client verify (`VerifyMode::PerClient`, Nacos's): renews the lease of
    /// every listed client held at the listed revision and reports the others as failed.
    pub(super) fn check_clients(&self, v: VerifyClients, now: Millis) -> PeerResponse {
        let mut failed = Vec::new();
        for (id, rev) in v.clients {
            match self.registry.get(id.as_str()) {
                Some(c) if c.revision() == rev => c.renew_lease(now),
                Some(_) => failed.push(id),
                None => {
                    // The owner holds it: a drop marker at this revision was wrong.
                    self.registry.clear_drop_marker(id.as_str(), rev);
                    failed.push(id);
                }
            }
        }
        PeerResponse::VerifyClientsResult { failed }
    }

    /// Whether this node, in this incarnation, issued a revision: its member bits are this
    /// node's and it is not below the revision floor this incarnation started with. A
    /// restarted node has the member bits of its previous incarnation, and the replicas
    /// it loads at that incarnation's revisions were not handed over by it (no handover
    /// sync of its is retrying for them). (A write of this node's own timer on a state
    /// of a previous incarnation is issued below the floor: such a client is taken as not
    /// issued here, and gets the ordinary grace.)
    fn issued_here(&self) -> impl Fn(Revision) -> bool + use<> {
        let (me, floor) = (self.me(), Revision::floor(self.incarnation));
        move |rev| rev.member() == me && rev.logical() >= floor
    }

    /// When a matching digest (or list) last renewed the leases of `owner`'s clients in
    /// `shard`.
    pub(super) fn renewed_at(&self, owner: MemberId, shard: u32) -> &AtomicU64 {
        &self.renewed[owner.index() * self.config.shards as usize + shard as usize]
    }
}
