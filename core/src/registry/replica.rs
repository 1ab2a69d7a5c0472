//! Replicated writes: states and deletions from the client's owner (sync, verify,
//! snapshot), drops of replicas, and re-attribution.
//!
//! A replicated state is applied only when its revision is newer than what is held,
//! tombstones included, so duplicated, reordered and delayed syncs are harmless. A
//! replica's own decisions (dropping an expired or unlisted client, moving a client to
//! another owner) never remove a newer state that raced with them.

use super::{ApplyOutcome, ClientRecord, Registry, Tombstone};
use crate::member::MemberId;
use crate::model::{ClientId, Publication, Revision};
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One replicated change for [`Registry::apply_many`]: a full state with the member to
/// attribute the client to, or a deletion.
#[derive(Debug, Clone, Copy)]
pub enum ReplicaChange<'a> {
    /// A full state, attributed to the member.
    State(&'a ClientRecord, MemberId),
    /// A deletion at a revision.
    Delete(&'a ClientId, Revision),
}

impl ReplicaChange<'_> {
    fn id(&self) -> &ClientId {
        match self {
            ReplicaChange::State(r, _) => &r.id,
            ReplicaChange::Delete(id, _) => id,
        }
    }
}

/// What [`Registry::apply_many`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    /// Changes newer than what was held, now stored.
    pub applied: u32,
    /// Changes as old as or older than what was held; nothing changed.
    pub stale: u32,
}

type Tombstones = std::collections::HashMap<ClientId, Tombstone, super::FastHash>;
type ClientsRef<'g> = super::ShardClients<'g>;

impl Registry {
    /// Applies a replicated full state if it is newer than what is held (state or
    /// tombstone). `owner` is the member to attribute the client to.
    pub fn apply(&self, record: &ClientRecord, owner: MemberId, now: Millis) -> ApplyOutcome {
        let shard_no = self.shard_of(&record.id);
        let shard = &self.shards[shard_no as usize];
        let mut changed = Vec::new();
        let outcome = {
            let mut tombstones = shard.write.lock();
            let clients = shard.pin();
            self.apply_locked(
                &mut tombstones,
                &clients,
                shard_no,
                record,
                owner,
                now,
                &mut changed,
            )
        };
        self.notify(&changed);
        outcome
    }

    /// Applies a replicated deletion if it is newer than what is held.
    pub fn apply_delete(&self, id: &ClientId, revision: Revision, now: Millis) -> ApplyOutcome {
        let shard = &self.shards[self.shard_of(id) as usize];
        let mut changed = Vec::new();
        let outcome = {
            let mut tombstones = shard.write.lock();
            let clients = shard.pin();
            self.apply_delete_locked(&mut tombstones, &clients, id, revision, now, &mut changed)
        };
        self.notify(&changed);
        outcome
    }

    /// Applies the changes of a sync batch or snapshot chunk grouped by shard: each
    /// shard's lock is taken once for all of its changes (in their order in `changes`),
    /// not once per change. Each change is decided exactly as [`Registry::apply`] and
    /// [`Registry::apply_delete`] decide it; listeners hear of the changed services once
    /// every shard is done.
    pub fn apply_many<'a>(
        &self,
        changes: impl IntoIterator<Item = ReplicaChange<'a>>,
        now: Millis,
    ) -> ApplyCounts {
        let mut by_shard: Vec<(u32, ReplicaChange<'a>)> = changes
            .into_iter()
            .map(|c| (self.shard_of(c.id()), c))
            .collect();
        // Stable: two changes of one client (never in one batch today) keep their order.
        by_shard.sort_by_key(|(s, _)| *s);
        let mut counts = ApplyCounts::default();
        let mut changed = Vec::new();
        for group in by_shard.chunk_by(|a, b| a.0 == b.0) {
            let shard_no = group[0].0;
            let shard = &self.shards[shard_no as usize];
            let mut tombstones = shard.write.lock();
            let clients = shard.pin();
            for (_, c) in group {
                let outcome = match *c {
                    ReplicaChange::State(record, owner) => self.apply_locked(
                        &mut tombstones,
                        &clients,
                        shard_no,
                        record,
                        owner,
                        now,
                        &mut changed,
                    ),
                    ReplicaChange::Delete(id, revision) => self.apply_delete_locked(
                        &mut tombstones,
                        &clients,
                        id,
                        revision,
                        now,
                        &mut changed,
                    ),
                };
                match outcome {
                    ApplyOutcome::Applied => counts.applied += 1,
                    ApplyOutcome::Stale => counts.stale += 1,
                }
            }
        }
        self.notify(&changed);
        counts
    }

    /// [`Registry::apply`] under the shard's lock.
    #[allow(clippy::too_many_arguments)]
    fn apply_locked(
        &self,
        tombstones: &mut Tombstones,
        clients: &ClientsRef<'_>,
        shard_no: u32,
        record: &ClientRecord,
        owner: MemberId,
        now: Millis,
        changed: &mut Vec<crate::model::Service>,
    ) -> ApplyOutcome {
        let old = clients.get(record.id.as_str());
        let current = old
            .map(|c| c.revision)
            .max(tombstones.get(record.id.as_str()).map(|t| t.revision))
            .unwrap_or(Revision::ZERO);
        if record.revision <= current {
            if let Some(o) = old
                && o.revision == record.revision
            {
                o.renew_lease(now);
            }
            return ApplyOutcome::Stale;
        }
        tombstones.remove(record.id.as_str());
        // Share identical publications with the old state to keep the index stable.
        let pubs: Vec<Arc<Publication>> = record
            .publications
            .iter()
            .map(|p| {
                old.and_then(|o| {
                    o.publications
                        .binary_search_by(|q| q.service.cmp(&p.service))
                        .ok()
                        .map(|i| o.publications[i].publication().clone())
                })
                .filter(|q| **q == **p)
                .unwrap_or_else(|| p.clone())
            })
            .collect();
        let new = self.build_client(
            &record.id,
            record.revision,
            shard_no,
            pubs,
            owner,
            old.map(|c| &**c),
            now,
        );
        self.replace(clients, old, Some(new), changed);
        ApplyOutcome::Applied
    }

    /// [`Registry::apply_delete`] under the shard's lock.
    fn apply_delete_locked(
        &self,
        tombstones: &mut Tombstones,
        clients: &ClientsRef<'_>,
        id: &ClientId,
        revision: Revision,
        now: Millis,
        changed: &mut Vec<crate::model::Service>,
    ) -> ApplyOutcome {
        let old = clients.get(id.as_str());
        let current = old
            .map(|c| c.revision)
            .max(tombstones.get(id.as_str()).map(|t| t.revision))
            .unwrap_or(Revision::ZERO);
        if revision <= current {
            return ApplyOutcome::Stale;
        }
        tombstones.insert(
            id.clone(),
            Tombstone {
                revision,
                expires_at: now.saturating_add(self.tombstone_ttl()),
                dropped: false,
            },
        );
        self.replace(clients, old, None, changed);
        ApplyOutcome::Applied
    }

    /// Drops a replica client (lease expiry, or verify found its owner no longer has it).
    /// Only removes exactly `expected` (same revision), so a concurrent newer sync is never
    /// lost. Leaves a drop marker, not a tombstone: this is not a deletion by the owner.
    /// The marker keeps a sync of that revision or an older one, delayed on a slow link,
    /// from bringing the client back; if the owner does hold the client at that revision
    /// (a drop that raced with a handover), verify clears the marker
    /// ([`Registry::clear_drop_marker`]) and repairs the replica.
    pub fn drop_replica(&self, id: &ClientId, expected: Revision, now: Millis) -> bool {
        let shard = &self.shards[self.shard_of(id) as usize];
        let mut changed = Vec::new();
        let dropped = {
            let mut tombstones = shard.write.lock();
            let clients = shard.pin();
            match clients.get(id.as_str()) {
                Some(c) if c.revision == expected => {
                    self.replace(&clients, Some(c), None, &mut changed);
                    tombstones.insert(
                        id.clone(),
                        Tombstone {
                            revision: expected,
                            expires_at: now.saturating_add(self.tombstone_ttl()),
                            dropped: true,
                        },
                    );
                    true
                }
                _ => false,
            }
        };
        self.notify(&changed);
        dropped
    }

    /// Re-attributes client `id` to `owner`, moving it between digests.
    pub fn set_owner(&self, id: &ClientId, owner: MemberId) -> bool {
        let shard = &self.shards[self.shard_of(id) as usize];
        let _lock = shard.write.lock();
        let clients = shard.pin();
        match clients.get(id.as_str()) {
            Some(c) if c.owner() != owner => {
                self.digests
                    .remove(c.owner(), c.shard(), c.id.as_str(), c.revision);
                c.owner.store(owner.0, Relaxed);
                self.digests
                    .add(owner, c.shard(), c.id.as_str(), c.revision);
                true
            }
            _ => false,
        }
    }
}
