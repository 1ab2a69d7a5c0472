//! Health: the owner's heartbeat checks, the replicas' leases, supersession and
//! self-preservation, all run by the health timer of [`Node::tick`].
//!
//! * **Heartbeats** (owner side): an ip:port instance without a heartbeat turns
//!   unhealthy after its heartbeat timeout and is removed after its delete timeout. A
//!   node that reaches at most half of the members holds its expiries back: it is more
//!   likely cut off than its clients dead.
//! * **Leases** (replica side): a replica drops a client whose lease neither a sync nor
//!   a verify (a matching digest, or the owner's list naming it at its revision) renewed
//!   within `lease`.
//! * **Self-preservation**: while a peer is not UP, at most `self_preservation_fraction`
//!   of the clients it owned may expire, however long the outage.
//! * **Supersession**: a connection client of a peer that is not UP whose every instance
//!   another client publishes identically (its SDK failed over and registered again
//!   through a live node) is dropped without waiting for the lease, and lifts the peer's
//!   self-preservation cap.

use super::{Node, inc};
use crate::member::{MemberId, MemberState};
use crate::model::{ClientId, ClientKind, Publication, Revision, Service};
use crate::registry::{Client, Origin, WriteResult};
use crate::time::Millis;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Self-preservation state of one peer (see `update_preservation`).
#[derive(Clone, Copy, Default)]
pub(super) struct Preservation {
    active: bool,
    baseline: u64,
    expired: u64,
    /// One of the member's connection clients was superseded: its SDKs failed over, so
    /// the member is gone rather than cut off, and its clients expire with the lease.
    lifted: bool,
}

impl Node {
    /// The owner's heartbeat check of its ip:port clients: marks instances unhealthy after
    /// their heartbeat timeout and removes them after their delete timeout (held back while
    /// this node is in a minority).
    pub(super) fn check_heartbeats(&self, now: Millis) {
        let me = self.me();
        let cfg = &self.config;
        let hold_expiry = self.in_minority();
        enum Act {
            Unhealthy(Service),
            Expire(Service),
        }
        let mut acts: Vec<(ClientId, Act)> = Vec::new();
        self.registry.for_each(|c| {
            if c.owner() != me || c.kind() != ClientKind::IpPort {
                return;
            }
            for (i, p) in c.publications().iter().enumerate() {
                let idle = now.saturating_sub(c.last_beat(i));
                let expire = p
                    .instances
                    .iter()
                    .all(|inst| idle > inst.delete_timeout(cfg.delete_timeout));
                if expire && hold_expiry {
                    inc(&self.counters.heartbeat_expiry_held, 1);
                } else if expire {
                    acts.push((c.id(), Act::Expire(p.service.clone())));
                } else if p.instances.iter().any(|inst| {
                    inst.healthy && idle > inst.heartbeat_timeout(cfg.heartbeat_timeout)
                }) {
                    acts.push((c.id(), Act::Unhealthy(p.service.clone())));
                }
            }
        });
        for (id, act) in acts {
            let r = match act {
                Act::Expire(svc) => {
                    inc(&self.counters.heartbeat_expired, 1);
                    self.registry.unpublish(&id, &svc, me, now, Origin::Timer)
                }
                Act::Unhealthy(svc) => {
                    let hb = cfg.heartbeat_timeout;
                    self.registry
                        .update_instances(&id, &svc, me, now, Origin::Timer, |p| {
                            let mut q = p.clone();
                            let mut changed = false;
                            for inst in q.instances.iter_mut() {
                                if inst.healthy {
                                    inst.healthy = false;
                                    changed = true;
                                }
                            }
                            let _ = hb;
                            changed.then_some(q)
                        })
                }
            };
            if matches!(r, WriteResult::Changed(_)) {
                inc(&self.counters.heartbeat_unhealthy, 1);
            }
            self.after_write(&id, r, now);
        }
    }

    /// Whether this node reaches at most half of the members (itself included): then it
    /// is more likely cut off than the clients that stopped beating here dead, and their
    /// beats go to the other side. Its expiries would delete live clients everywhere once
    /// the partition heals, so it holds them until it rejoins a majority.
    fn in_minority(&self) -> bool {
        let n = self.members.load().len();
        let reachable = self
            .member_states()
            .iter()
            .filter(|(_, s)| s.is_routable())
            .count();
        n > 1 && reachable * 2 <= n
    }

    /// The replica's lease sweep: drops superseded connection clients of unreachable
    /// owners, then the clients whose lease neither sync nor verify renewed, within the
    /// self-preservation cap.
    pub(super) fn expire_leases(&self, now: Millis) {
        let me = self.me();
        let lease = self.config.lease;
        let states = self.member_states();
        // By member id; a member that left the list is unreachable too.
        let mut unreachable = vec![true; self.members.load().capacity()];
        for (m, s) in &states {
            unreachable[m.index()] = *s != MemberState::Up;
        }
        let any_unreachable =
            states.iter().any(|(_, s)| *s != MemberState::Up) || self.members.load().version() > 0;
        let mut candidates: Vec<(MemberId, ClientId, Revision)> = Vec::new();
        // Connection clients of unreachable owners: checked for supersession below.
        let mut doubtful: Vec<Arc<Client>> = Vec::new();
        self.registry.for_each(|c| {
            let owner = c.owner();
            if owner == me {
                return;
            }
            if any_unreachable && unreachable[owner.index()] && c.kind() == ClientKind::Connection {
                doubtful.push(c.clone());
            }
            let base = c
                .lease_base()
                .max(self.renewed_at(owner, c.shard()).load(Relaxed));
            if now.saturating_sub(base) > lease {
                candidates.push((owner, c.id(), c.revision()));
            }
        });
        self.update_preservation(now, &states);
        let superseded = self.superseded(&doubtful);
        if !superseded.is_empty() {
            let mut pres = self.preservation.lock();
            for c in &superseded {
                if self.registry.drop_replica(&c.id(), c.revision(), now) {
                    inc(&self.counters.lease_superseded, 1);
                    pres[c.owner().index()].lifted = true;
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        let mut pres = self.preservation.lock();
        for (owner, id, rev) in candidates {
            let p = &mut pres[owner.index()];
            if p.active && !p.lifted {
                let allowed =
                    (p.baseline as f64 * self.config.self_preservation_fraction).floor() as u64;
                if p.expired >= allowed {
                    inc(&self.counters.lease_preserved, 1);
                    continue;
                }
                p.expired += 1;
            }
            if self.registry.drop_replica(&id, rev, now) {
                inc(&self.counters.lease_expired, 1);
            }
        }
    }

    /// The clients of `doubtful` (connection clients of unreachable owners) whose every
    /// instance is also published, identically, by a client outside `doubtful`: the SDK
    /// reconnected to a live node and registered again (its redo), so the old connection
    /// is gone and its copy only duplicates the new one. A partition does not produce
    /// this: SDKs stay connected to the node they reach.
    fn superseded(&self, doubtful: &[Arc<Client>]) -> Vec<Arc<Client>> {
        if doubtful.is_empty() {
            return Vec::new();
        }
        let hasher = crate::registry::fast_hash(self.config.hash_seed);
        let suspect: HashSet<*const Publication, _> = {
            let mut set = HashSet::with_hasher(hasher.clone());
            set.extend(
                doubtful
                    .iter()
                    .flat_map(|c| c.publications().iter().map(|p| std::ptr::from_ref(p.get()))),
            );
            set
        };
        // The doubtful clients' publications, by service: each service is read once.
        let mut by_service: HashMap<&str, Vec<(usize, &Publication)>, _> =
            HashMap::with_hasher(hasher.clone());
        for (ci, c) in doubtful.iter().enumerate() {
            for p in c.publications() {
                by_service
                    .entry(p.service.key().as_str())
                    .or_default()
                    .push((ci, p));
            }
        }
        let mut covered = vec![true; doubtful.len()];
        for pubs in by_service.values() {
            let s = &pubs[0].1.service;
            let view = self.registry.query(s.namespace(), s.group(), s.name());
            // Instances other clients publish, by address.
            let mut live: HashMap<(&str, u16), Vec<&crate::model::Instance>, _> =
                HashMap::with_hasher(hasher.clone());
            for q in view.iter().flat_map(|v| v.publications.iter()) {
                if suspect.contains(&std::ptr::from_ref(q.publication())) {
                    continue;
                }
                for i in q.instances.iter() {
                    live.entry((i.ip.as_str(), i.port)).or_default().push(i);
                }
            }
            for (ci, p) in pubs {
                let all = p.instances.iter().all(|i| {
                    live.get(&(i.ip.as_str(), i.port))
                        .is_some_and(|v| v.contains(&i))
                });
                if !all {
                    covered[*ci] = false;
                }
            }
        }
        doubtful
            .iter()
            .zip(covered)
            .filter(|(c, covered)| *covered && !c.publications().is_empty())
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Self-preservation bookkeeping: when a peer stops being UP, remember how many
    /// clients it owned; until it is UP again at most `self_preservation_fraction` of that
    /// number may expire, however long the outage, unless one of its connection clients
    /// was superseded (then the peer is gone, not cut off, and the cap is lifted).
    ///
    /// A member that left the list is gone by decision, not cut off: its clients expire
    /// with the lease, uncapped. (Its cap stayed as it was when it left: if this node saw
    /// it DOWN then, a partition or a crash just before the leave, the cap held its
    /// replicas for good, while nodes that saw it UP let theirs expire, and the two never
    /// converged.)
    fn update_preservation(&self, _now: Millis, states: &[(MemberId, MemberState)]) {
        let mut pres = self.preservation.lock();
        let members = self.members.load();
        for (i, p) in pres.iter_mut().enumerate() {
            if !members.contains(MemberId(i as u16)) {
                *p = Preservation::default();
            }
        }
        for &(m, state) in states {
            if m == self.me() {
                continue;
            }
            let p = &mut pres[m.index()];
            if state == MemberState::Up {
                *p = Preservation::default();
            } else if !p.active {
                *p = Preservation {
                    active: true,
                    baseline: self.registry.owner_count(m),
                    expired: 0,
                    lifted: false,
                };
            }
        }
    }
}
