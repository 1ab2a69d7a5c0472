//! Replicated writes: states and deletions from the client's owner (sync, verify,
//! snapshot), drops of replicas, and re-attribution.
//!
//! A replicated state is applied only when its revision is newer than what is held,
//! tombstones included, so duplicated, reordered and delayed syncs are harmless. A
//! replica's own decisions (dropping an expired or unlisted client, moving a client to
//! another owner) never remove a newer state that raced with them.

use super::client::{Body, Next};
use super::{ApplyOutcome, ClientRecord, IdKey, Registry, Tombstone};
use crate::hash::{shard_of_hash, stable_hash64};
use crate::member::MemberId;
use crate::model::{ClientId, Publication, Revision};
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// A replicated full state as the apply reads it, borrowed from wherever it was decoded
/// (a [`ClientRecord`], or a received batch decoded straight from its bytes): nothing is
/// copied before the apply knows it needs it (the id is stored only for a client not
/// held yet; a held client keeps its id).
#[derive(Debug, Clone, Copy)]
pub struct StateRef<'a> {
    /// The client id's text, which [`ClientId::check`] accepted.
    pub id: &'a str,
    /// Revision of this state.
    pub revision: Revision,
    /// The member the sender attributes the client to.
    pub owner: MemberId,
    /// What the client publishes, sorted by service, one publication per service.
    pub publications: &'a [Arc<Publication>],
}

impl<'a> StateRef<'a> {
    /// The state of a record.
    pub fn of(r: &'a ClientRecord) -> Self {
        Self {
            id: r.id.as_str(),
            revision: r.revision,
            owner: r.owner,
            publications: &r.publications,
        }
    }

    /// The state as an owned record.
    pub fn to_record(&self) -> ClientRecord {
        ClientRecord {
            id: ClientId::checked(self.id),
            revision: self.revision,
            owner: self.owner,
            publications: self.publications.to_vec(),
        }
    }
}

/// One change of a sync batch as the apply reads it (see [`StateRef`]): a full state or
/// a deletion.
#[derive(Debug, Clone, Copy)]
pub enum ChangeRef<'a> {
    /// A full state.
    State(StateRef<'a>),
    /// A deletion at a revision; the id's text was accepted by [`ClientId::check`].
    Delete(&'a str, Revision),
}

/// One replicated change for [`Registry::apply_many`]: a full state with the member to
/// attribute the client to, or a deletion.
#[derive(Debug, Clone, Copy)]
pub enum ReplicaChange<'a> {
    /// A full state, attributed to the member.
    State(StateRef<'a>, MemberId),
    /// A deletion at a revision.
    Delete(&'a str, Revision),
}

impl ReplicaChange<'_> {
    fn id(&self) -> &str {
        match self {
            ReplicaChange::State(s, _) => s.id,
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

/// `keys` (`shard << 32 | position`, positions ascending) sorted: by counting the keys
/// of each shard when the batch is large beside the shard count (two passes, no
/// comparison), by a comparison sort otherwise. Both give the one sorted order.
fn by_shard(mut keys: Vec<u64>, shards: u32) -> Vec<u64> {
    if keys.len() < 64 || keys.len() * 8 < shards as usize {
        keys.sort_unstable();
        return keys;
    }
    // `at[s]`: where shard s's keys start, then the next free place among them.
    let mut at = vec![0u32; shards as usize + 1];
    for k in &keys {
        at[(k >> 32) as usize + 1] += 1;
    }
    for s in 1..at.len() {
        at[s] += at[s - 1];
    }
    let mut out = vec![0u64; keys.len()];
    for &k in &keys {
        let s = &mut at[(k >> 32) as usize];
        out[*s as usize] = k;
        *s += 1;
    }
    out
}

/// The changes per shard from which [`Registry::apply_many`] groups a batch by shard:
/// grouping costs a sort (about 60 instructions a change), and saves a lock and a pin
/// (about 60) for each change beyond the first of its shard, which pays only when shards
/// hold several changes each.
const GROUPED_PER_SHARD: usize = 4;

type Tombstones = std::collections::HashMap<ClientId, Tombstone, super::FastHash>;
type ClientsRef<'g> = super::ShardClients<'g>;

impl Registry {
    /// Applies a replicated full state if it is newer than what is held (state or
    /// tombstone). `owner` is the member to attribute the client to.
    pub fn apply(&self, record: &ClientRecord, owner: MemberId, now: Millis) -> ApplyOutcome {
        self.apply_state(StateRef::of(record), owner, now)
    }

    /// [`Registry::apply`] of a borrowed state.
    pub fn apply_state(&self, state: StateRef<'_>, owner: MemberId, now: Millis) -> ApplyOutcome {
        let key = IdKey::new(state.id);
        let shard_no = self.shard_of_key(key);
        let shard = &self.shards[shard_no as usize];
        let mut changed = Vec::new();
        let outcome = {
            let mut tombstones = shard.write.lock();
            let clients = shard.pin();
            self.apply_locked(
                &mut tombstones,
                &clients,
                shard_no,
                key,
                &state,
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
        let key = IdKey::new(id.as_str());
        let shard = &self.shards[self.shard_of_key(key) as usize];
        let mut changed = Vec::new();
        let outcome = {
            let mut tombstones = shard.write.lock();
            let clients = shard.pin();
            self.apply_delete_locked(&mut tombstones, &clients, key, revision, now, &mut changed)
        };
        self.notify(&changed);
        outcome
    }

    /// Applies the changes of a sync batch or snapshot chunk, each shard's lock taken once
    /// for a run of its changes: for a batch of at least [`GROUPED_PER_SHARD`] changes
    /// per shard, grouped by shard first (each shard's lock once for all of its changes,
    /// in their order in `changes`); for a smaller one, in the batch's order (sorting
    /// would cost more than the locks it saves: a shard then holds about one change).
    /// Each change is decided exactly as [`Registry::apply`] and
    /// [`Registry::apply_delete`] decide it, and two changes of one client keep their
    /// order either way; listeners hear of the changed services once every shard is done.
    pub fn apply_many<'a>(
        &self,
        changes: impl IntoIterator<Item = ReplicaChange<'a>>,
        now: Millis,
    ) -> ApplyCounts {
        // Each id hashed once (its shard, its lookup and its digest term).
        let changes = changes.into_iter();
        let mut hashed = Vec::with_capacity(changes.size_hint().0);
        hashed.extend(changes.map(|c| {
            let h = stable_hash64(c.id().as_bytes());
            (c, h)
        }));
        if hashed.len() < GROUPED_PER_SHARD * self.shard_count as usize {
            return self.apply_in_order(&hashed, 0..hashed.len(), now);
        }
        // The order of the apply as one integer per change, shard above position:
        // sorted, the changes of one shard are consecutive and keep their order in the
        // batch.
        let order = hashed
            .iter()
            .enumerate()
            .map(|(i, (_, h))| u64::from(shard_of_hash(*h, self.shard_count)) << 32 | i as u64)
            .collect();
        let order = by_shard(order, self.shard_count);
        let positions = order.iter().map(|k| (k & u64::from(u32::MAX)) as usize);
        self.apply_in_order(&hashed, positions, now)
    }

    /// Applies `hashed[i]` for each `i` of `order`, holding a shard's lock (and its
    /// pinned clients) across a run of changes of that shard.
    fn apply_in_order(
        &self,
        hashed: &[(ReplicaChange<'_>, u64)],
        order: impl Iterator<Item = usize>,
        now: Millis,
    ) -> ApplyCounts {
        let mut counts = ApplyCounts::default();
        let mut changed = Vec::new();
        // The shard held: its number, its pinned clients, its lock (dropped in that
        // order: unpinned, then unlocked).
        let mut held = None;
        for i in order {
            let (ref change, hash) = hashed[i];
            let shard_no = shard_of_hash(hash, self.shard_count);
            let (_, clients, tombstones) = match held {
                Some((s, _, _)) if s == shard_no => held.as_mut().expect("held"),
                _ => {
                    // The previous shard's let go before this one's is taken.
                    held = None;
                    let shard = &self.shards[shard_no as usize];
                    let lock = shard.write.lock();
                    held.insert((shard_no, shard.pin(), lock))
                }
            };
            let outcome = match *change {
                ReplicaChange::State(ref state, owner) => self.apply_locked(
                    tombstones,
                    clients,
                    shard_no,
                    IdKey { id: state.id, hash },
                    state,
                    owner,
                    now,
                    &mut changed,
                ),
                ReplicaChange::Delete(id, revision) => self.apply_delete_locked(
                    tombstones,
                    clients,
                    IdKey { id, hash },
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
        drop(held);
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
        key: IdKey<'_>,
        state: &StateRef<'_>,
        owner: MemberId,
        now: Millis,
        changed: &mut Vec<crate::model::Service>,
    ) -> ApplyOutcome {
        let old = clients.get_key(key);
        let current = old
            .map(|c| c.revision)
            .max(tombstones.get(state.id).map(|t| t.revision))
            .unwrap_or(Revision::ZERO);
        if state.revision <= current {
            if let Some(o) = old
                && o.revision == state.revision
            {
                o.renew_lease(now);
            }
            return ApplyOutcome::Stale;
        }
        if !tombstones.is_empty() {
            tombstones.remove(state.id);
        }
        // Share identical publications with the old state to keep the index stable
        // (mapped as the new client is built: no list gathered first).
        let pubs = state.publications.iter().map(|p| {
            let held = old.map(|o| o.publications());
            match held.map(|h| (h.find(&p.service), h)) {
                Some((Ok(i), h)) if h[i].get() == &**p => Next::Held(i),
                Some((Ok(i), _)) => Next::Replace(i, (**p).clone()),
                _ => Next::New((**p).clone()),
            }
        });
        let body = Body::build(pubs, old.map(|c| &**c), now);
        // A held client keeps its stored id text (`build_client` shares it).
        let new = self.build_client(
            state.id,
            None,
            key.hash,
            state.revision,
            shard_no,
            body,
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
        key: IdKey<'_>,
        revision: Revision,
        now: Millis,
        changed: &mut Vec<crate::model::Service>,
    ) -> ApplyOutcome {
        let id = key.id;
        let old = clients.get_key(key);
        let held = tombstones.get(id).map(|t| t.revision);
        let current = old.map(|c| c.revision).max(held).unwrap_or(Revision::ZERO);
        if revision <= current {
            return ApplyOutcome::Stale;
        }
        let tombstone = Tombstone {
            revision,
            expires_at: now.saturating_add(self.tombstone_ttl()),
            dropped: false,
        };
        match tombstones.get_mut(id) {
            Some(t) => *t = tombstone,
            None => {
                let id = old.map_or_else(|| ClientId::checked(id), |o| o.id());
                tombstones.insert(id, tombstone);
            }
        }
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
                    .remove(c.owner(), c.shard(), id.as_str(), c.revision);
                c.owner.store(owner.0, Relaxed);
                self.digests.add(owner, c.shard(), id.as_str(), c.revision);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::by_shard;

    #[test]
    fn sorting_by_shard_counts_or_compares_to_the_same_order() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for (n, shards) in [(0, 16), (10, 1024), (100, 16), (1_000, 1024), (5_000, 64)] {
            let keys: Vec<u64> = (0..n as u64)
                .map(|i| {
                    x = crate::hash::mix64(x.wrapping_add(i));
                    (x % u64::from(shards)) << 32 | i
                })
                .collect();
            let mut want = keys.clone();
            want.sort_unstable();
            assert_eq!(by_shard(keys, shards), want, "{n} keys, {shards} shards");
        }
    }
}
