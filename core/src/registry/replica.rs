//! Replicated writes: states and deletions from the client's owner (sync, verify,
//! snapshot), drops of replicas, and re-attribution.
//!
//! A replicated state is applied only when its revision is newer than what is held,
//! tombstones included, so duplicated, reordered and delayed syncs are harmless. A
//! replica's own decisions (dropping an expired or unlisted client, moving a client to
//! another owner) never remove a newer state that raced with them.

use super::client::{Body, Client, Next};
use super::{ApplyOutcome, ClientRecord, IdKey, Registry, Tombstone};
use crate::hash::{shard_of_hash, stable_hash64};
use crate::member::MemberId;
use crate::model::{ClientId, Publication, Revision};
use crate::time::Millis;
use arc_slots::{Pin, RetireBatch};
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

/// A replicated full state decoded for this apply alone (a received batch or snapshot
/// chunk), as [`StateRef`] but with its publications handed over: the apply moves each one
/// it stores into the stored client instead of copying it (one the held state already
/// has is left where it is, and dropped with the batch).
#[derive(Debug)]
pub struct StateMut<'a> {
    /// The client id's text, which [`ClientId::check`] accepted.
    pub id: &'a str,
    /// Revision of this state.
    pub revision: Revision,
    /// The member the sender attributes the client to.
    pub owner: MemberId,
    /// What the client publishes, sorted by service, one publication per service, every
    /// one `Some` (the apply takes those it stores).
    pub publications: &'a mut [Option<Publication>],
    /// The id is known to be a connection client's (its decoder wrote it as
    /// `<millis>_<ip>_<port>`, with no `#`: a validated ip has none), so it is attributed
    /// to the sender without a scan of its text; `false`: not known.
    pub connection: bool,
}

/// One change of a sync batch as the apply reads it (see [`StateRef`], [`StateMut`]): a
/// full state, borrowed or handed over, or a deletion.
#[derive(Debug)]
pub enum ChangeRef<'a> {
    /// A full state.
    State(StateRef<'a>),
    /// A full state whose publications the apply moves into the store.
    Moved(StateMut<'a>),
    /// A deletion at a revision; the id's text was accepted by [`ClientId::check`].
    Delete(&'a str, Revision),
}

impl<'a> From<StateRef<'a>> for ChangeRef<'a> {
    fn from(s: StateRef<'a>) -> Self {
        ChangeRef::State(s)
    }
}

impl<'a> From<StateMut<'a>> for ChangeRef<'a> {
    fn from(s: StateMut<'a>) -> Self {
        ChangeRef::Moved(s)
    }
}

impl<'a> ChangeRef<'a> {
    /// The client id's text.
    pub fn id(&self) -> &'a str {
        match self {
            ChangeRef::State(s) => s.id,
            ChangeRef::Moved(s) => s.id,
            ChangeRef::Delete(id, _) => id,
        }
    }

    /// The member the sender attributes a state to (`None`: a deletion).
    pub fn owner(&self) -> Option<MemberId> {
        match self {
            ChangeRef::State(s) => Some(s.owner),
            ChangeRef::Moved(s) => Some(s.owner),
            ChangeRef::Delete(..) => None,
        }
    }

    /// Whether the id is a connection client's (no `#`), read from the text unless the
    /// decoder said so ([`StateMut::connection`]).
    pub fn is_connection(&self) -> bool {
        match self {
            ChangeRef::Moved(s) if s.connection => true,
            c => !c.id().contains('#'),
        }
    }

    /// Whether the id is known to be a connection client's without reading it (see
    /// [`StateMut::connection`]).
    pub fn known_connection(&self) -> bool {
        matches!(self, ChangeRef::Moved(s) if s.connection)
    }

    /// The change to apply, a state attributed to `owner`.
    pub fn attributed(self, owner: MemberId) -> ReplicaChange<'a> {
        match self {
            ChangeRef::State(s) => ReplicaChange::State(s, owner),
            ChangeRef::Moved(s) => ReplicaChange::Moved(s, owner),
            ChangeRef::Delete(id, revision) => ReplicaChange::Delete(id, revision),
        }
    }
}

/// One replicated change for [`Registry::apply_many`]: a full state with the member to
/// attribute the client to, or a deletion.
#[derive(Debug)]
pub enum ReplicaChange<'a> {
    /// A full state, attributed to the member.
    State(StateRef<'a>, MemberId),
    /// A full state handed over (see [`StateMut`]), attributed to the member.
    Moved(StateMut<'a>, MemberId),
    /// A deletion at a revision.
    Delete(&'a str, Revision),
}

impl ReplicaChange<'_> {
    fn id(&self) -> &str {
        match self {
            ReplicaChange::State(s, _) => s.id,
            ReplicaChange::Moved(s, _) => s.id,
            ReplicaChange::Delete(id, _) => id,
        }
    }

    /// The hint for the index of the change's first publication's service (see
    /// [`crate::model::Service`]'s `prefetch_index`): a replicated client publishes
    /// nearly always to one service, whose index its apply then writes.
    #[inline(always)]
    fn prefetch_service_index(&self) {
        let service = match self {
            ReplicaChange::State(s, _) => s.publications.first().map(|p| &p.service),
            ReplicaChange::Moved(s, _) => s
                .publications
                .first()
                .and_then(|p| p.as_ref())
                .map(|p| &p.service),
            ReplicaChange::Delete(..) => None,
        };
        if let Some(s) = service {
            s.prefetch_index();
        }
    }
}

/// The publications of a state being applied: borrowed (copied when stored) or handed
/// over (moved when stored).
enum Pubs<'s> {
    Shared(&'s [Arc<Publication>]),
    Owned(&'s mut [Option<Publication>]),
}

impl Pubs<'_> {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Pubs::Shared(p) => p.len(),
            Pubs::Owned(p) => p.len(),
        }
    }
    /// Publication `i`.
    #[inline]
    fn get(&self, i: usize) -> &Publication {
        match self {
            Pubs::Shared(p) => &p[i],
            Pubs::Owned(p) => p[i].as_ref().expect("a publication is taken once"),
        }
    }
    /// Publication `i` to store (taken at most once).
    #[inline(always)]
    fn take(&mut self, i: usize) -> Publication {
        match self {
            Pubs::Shared(p) => (*p[i]).clone(),
            Pubs::Owned(p) => p[i].take().expect("a publication is taken once"),
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

impl ApplyCounts {
    /// `outcome` counted.
    #[inline]
    fn count(&mut self, outcome: ApplyOutcome) {
        match outcome {
            ApplyOutcome::Applied => self.applied += 1,
            ApplyOutcome::Stale => self.stale += 1,
        }
    }
}

/// The changes per shard from which [`Registry::apply_many`] groups a batch by shard:
/// grouping costs a sort (about 60 instructions a change), and saves a lock and a pin
/// (about 60) for each change beyond the first of its shard, which pays only when shards
/// hold several changes each.
const GROUPED_PER_SHARD: usize = 4;

use super::Tombstones;
type ClientsRef<'g, 'a> = super::ShardWriter<'g, 'a>;

/// A batch of [`Registry::apply_many`] being applied under one pin: the shard held (its
/// number and its lock), the clients let go of (retired together once every shard is
/// done, see `RetireBatch`), the services changed and the counts.
///
/// Dropped, it ends the batch (see its `Drop`): as it is applied ([`Registry::applied`])
/// or when the batch stops midway (a panic of the iterator of a small batch, which runs
/// between its changes): what it applied is stored, and its listeners hear of it.
struct Applying<'a> {
    registry: &'a Registry,
    held: Option<(u32, super::ShardLock<'a>)>,
    retired: RetireBatch<'a, Client>,
    changed: Vec<crate::model::Service>,
    counts: ApplyCounts,
}

impl<'a> Applying<'a> {
    fn new(registry: &'a Registry, retired: RetireBatch<'a, Client>) -> Self {
        Self {
            registry,
            held: None,
            retired,
            changed: Vec::new(),
            counts: ApplyCounts::default(),
        }
    }
}

impl Drop for Applying<'_> {
    /// Ends the batch: its shard let go of (a listener must not run under its lock, nor a
    /// later write of this thread wait on it), the listeners told of the changed services,
    /// then (the field dropped) what it let go of retired as one (see `RetireBatch`).
    fn drop(&mut self) {
        self.held = None;
        self.registry.notify(&self.changed);
    }
}

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
            let pin = self.pin();
            let mut retired = self.slots.retire_batch(&pin, 0);
            let mut lock = shard.write();
            let (tombstones, mut clients) = self.writer(&mut lock, &pin);
            self.apply_locked(
                tombstones,
                &mut clients,
                shard_no,
                key,
                state.revision,
                Pubs::Shared(state.publications),
                owner,
                now,
                &mut changed,
                &mut retired,
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
            let pin = self.pin();
            let mut retired = self.slots.retire_batch(&pin, 0);
            let mut lock = shard.write();
            let (tombstones, mut clients) = self.writer(&mut lock, &pin);
            self.apply_delete_locked(
                tombstones,
                &mut clients,
                key,
                revision,
                now,
                &mut changed,
                &mut retired,
            )
        };
        self.notify(&changed);
        outcome
    }

    /// Applies the changes of a sync batch or snapshot chunk, each shard's lock taken once
    /// for a run of its changes: for a batch of at least `GROUPED_PER_SHARD` changes
    /// per shard, grouped by shard first (each shard's lock once for all of its changes,
    /// in their order in `changes`); for a smaller one, in the batch's order (sorting
    /// would cost more than the locks it saves: a shard then holds about one change).
    /// Each change is decided exactly as [`Registry::apply`] and
    /// [`Registry::apply_delete`] decide it, and two changes of one client keep their
    /// order either way; listeners hear of the changed services once every shard is done.
    ///
    /// In a registry of [`Config::prefetch_from`](crate::config::Config::prefetch_from)
    /// clients or more (tables larger than the caches), every batch is gathered first and
    /// each change's memory asked for ahead of it (see `apply_prefetching`). Below that,
    /// a small batch whose length `changes` tells exactly (its `size_hint`) is applied as
    /// it is iterated, each change as it comes (not gathered into a list first): the
    /// iterator may then run while a shard's lock is held, so it must not call anything
    /// of this registry that takes a shard's lock (a write, [`Registry::tombstone`],
    /// `stats`: parking_lot's locks are not reentrant, the thread would wait on itself);
    /// lock-free reads are fine, and the node's attribution of a change takes no lock.
    /// Should the iterator panic, the changes applied before stay applied, and the
    /// listeners hear of their services (the shard's lock let go of first).
    pub fn apply_many<'a>(
        &self,
        changes: impl IntoIterator<Item = ReplicaChange<'a>>,
        now: Millis,
    ) -> ApplyCounts {
        // Each id hashed once (its shard, its lookup and its digest term).
        let changes = changes.into_iter();
        let (len, most) = changes.size_hint();
        let prefetch = self.prefetching();
        // Below this many changes a batch is applied in its order, not grouped by shard.
        let grouped_from = GROUPED_PER_SHARD * self.shard_count as usize;
        if !prefetch && most == Some(len) && len < grouped_from {
            let pin = self.pin();
            let mut batch = Applying::new(self, self.slots.retire_batch(&pin, len));
            for mut change in changes {
                let hash = stable_hash64(change.id().as_bytes());
                self.apply_one(&mut batch, &pin, &mut change, hash, now);
            }
            return self.applied(batch);
        }
        let mut hashed = Vec::with_capacity(len);
        hashed.extend(changes.map(|c| {
            let h = stable_hash64(c.id().as_bytes());
            (c, h)
        }));
        let n = hashed.len();
        if n < grouped_from {
            return if prefetch {
                self.apply_prefetching(&mut hashed, |k| k, now)
            } else {
                self.apply_in_order(&mut hashed, 0..n, now)
            };
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
        let at = |k: usize| (order[k] & u64::from(u32::MAX)) as usize;
        if prefetch {
            self.apply_prefetching(&mut hashed, at, now)
        } else {
            self.apply_in_order(&mut hashed, (0..n).map(at), now)
        }
    }

    /// Applies `hashed[i]` for each `i` of `order`, holding a shard's lock (and its
    /// pinned clients) across a run of changes of that shard.
    fn apply_in_order(
        &self,
        hashed: &mut [(ReplicaChange<'_>, u64)],
        order: impl Iterator<Item = usize>,
        now: Millis,
    ) -> ApplyCounts {
        let pin = self.pin();
        let mut batch = Applying::new(self, self.slots.retire_batch(&pin, hashed.len()));
        for i in order {
            let (ref mut change, hash) = hashed[i];
            self.apply_one(&mut batch, &pin, change, hash, now);
        }
        self.applied(batch)
    }

    /// `apply_in_order` of `hashed[at(k)]` for each `k` in `0..hashed.len()`, the memory
    /// each change waits on (its shard, its table's array, its slot: three dependent
    /// misses in a large registry) asked for ahead of it, a step of the chain per change
    /// ([`Registry::prefetch_shard`] three changes ahead, then the array two ahead, then
    /// the slot and the service's index one ahead), so that each is in the cache when its
    /// change comes. In a million-client burst the replicas' apply fell from 10.8 % of the
    /// burst's samples to 5.1 %; the gather and the hints cost ~160 instructions a change (~70 and ~85), which
    /// a registry whose tables fit the caches does not win back (see
    /// [`Config::prefetch_from`](crate::config::Config::prefetch_from)). A loop of its own:
    /// `apply_in_order` with a flag for the hints read +12 instructions a change below
    /// the threshold (`sync::decode_and_apply.changes_1000`, the loop not unswitched).
    fn apply_prefetching(
        &self,
        hashed: &mut [(ReplicaChange<'_>, u64)],
        at: impl Fn(usize) -> usize,
        now: Millis,
    ) -> ApplyCounts {
        let pin = self.pin();
        let n = hashed.len();
        let mut batch = Applying::new(self, self.slots.retire_batch(&pin, n));
        for k in 0..n {
            if k + 3 < n {
                self.prefetch_shard(hashed[at(k + 3)].1);
            }
            if k + 2 < n {
                self.prefetch_array(hashed[at(k + 2)].1);
            }
            if k + 1 < n {
                let (ref next, hash) = hashed[at(k + 1)];
                self.prefetch_slot(hash, &pin);
                next.prefetch_service_index();
            }
            let (ref mut change, hash) = hashed[at(k)];
            self.apply_one(&mut batch, &pin, change, hash, now);
        }
        self.applied(batch)
    }

    /// Applies `change`, whose id's stable hash is `hash`, as part of `batch`: under its
    /// shard's lock, which the batch keeps for the next change if it is of the same shard.
    /// Inlined into the loops of [`Registry::apply_many`] (a small batch of known length),
    /// `apply_in_order` and `apply_prefetching` (every other batch, in its order or
    /// grouped by shard).
    #[inline(always)]
    fn apply_one<'a>(
        &'a self,
        batch: &mut Applying<'a>,
        pin: &'a Pin<'a>,
        change: &mut ReplicaChange<'_>,
        hash: u64,
        now: Millis,
    ) {
        let shard_no = shard_of_hash(hash, self.shard_count);
        let held = &mut batch.held;
        let (_, lock) = match held {
            Some((s, _)) if *s == shard_no => held.as_mut().expect("held"),
            _ => {
                // The previous shard's let go before this one's is taken.
                *held = None;
                held.insert((shard_no, self.shards[shard_no as usize].write()))
            }
        };
        let (tombstones, mut clients) = self.writer(lock, pin);
        let clients = &mut clients;
        // A state, borrowed or handed over, goes to one call of the apply (inlined here:
        // called, its ten arguments and saves cost ~20 a change).
        let (id, revision, publications, owner) = match *change {
            ReplicaChange::State(ref state, owner) => (
                state.id,
                state.revision,
                Pubs::Shared(state.publications),
                owner,
            ),
            ReplicaChange::Moved(ref mut state, owner) => (
                state.id,
                state.revision,
                Pubs::Owned(&mut *state.publications),
                owner,
            ),
            ReplicaChange::Delete(id, revision) => {
                let outcome = self.apply_delete_locked(
                    tombstones,
                    clients,
                    IdKey { id, hash },
                    revision,
                    now,
                    &mut batch.changed,
                    &mut batch.retired,
                );
                batch.counts.count(outcome);
                return;
            }
        };
        let outcome = self.apply_locked(
            tombstones,
            clients,
            shard_no,
            IdKey { id, hash },
            revision,
            publications,
            owner,
            now,
            &mut batch.changed,
            &mut batch.retired,
        );
        batch.counts.count(outcome);
    }

    /// Ends `batch` (its `Drop`: its shard let go of, the listeners told of the changed
    /// services, what it let go of retired as one); its counts.
    fn applied(&self, batch: Applying<'_>) -> ApplyCounts {
        let counts = batch.counts;
        drop(batch);
        counts
    }

    /// [`Registry::apply`] under the shard's lock; the client let go of goes to
    /// `retired`. Inlined into its two callers (a batch's loop, one state's apply).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn apply_locked<'a>(
        &self,
        tombstones: &mut Tombstones,
        clients: &mut ClientsRef<'_, 'a>,
        shard_no: u32,
        key: IdKey<'_>,
        revision: Revision,
        mut publications: Pubs<'_>,
        owner: MemberId,
        now: Millis,
        changed: &mut Vec<crate::model::Service>,
        retired: &mut RetireBatch<'a, Client>,
    ) -> ApplyOutcome {
        let held = clients.get_key(key);
        let old = held.as_deref();
        let current = old
            .map(|c| c.revision)
            .max(tombstones.get(key.id).map(|t| t.revision))
            .unwrap_or(Revision::ZERO);
        if revision <= current {
            if let Some(o) = old
                && o.revision == revision
            {
                o.renew_lease(now);
            }
            return ApplyOutcome::Stale;
        }
        if !tombstones.is_empty() {
            tombstones.remove(key.id);
        }
        // One publication for a held one of the same service (nearly every change), or
        // for none: stored as sent, the held heartbeat time kept (what the general build
        // makes of it, without pairing the lists).
        let one = match (old.map(|o| &o.body), publications.len()) {
            (Some(Body::One(h)), 1) if h.service == publications.get(0).service => {
                Some(h.beat.load(Relaxed))
            }
            (None, 1) => Some(now),
            _ => None,
        };
        // A held client keeps its stored id text (`Client::replica_id` and
        // `Client::new_with` share it); the body is made in the client as it is built (a
        // publication moved once).
        let new = match one {
            // The publication goes from where it was decoded into the new client's
            // allocation (`Client::replica_one`), its first instance read for the id first.
            Some(beat) => {
                let first = publications.get(0).instances.first();
                let id = Client::replica_id(key.id, old.map(|c| &**c), first);
                Client::replica_one(
                    id,
                    key.hash,
                    revision,
                    now,
                    owner,
                    shard_no,
                    // Inlined: called, the publication was moved out and back (~8).
                    #[inline(always)]
                    || publications.take(0),
                    beat,
                )
            }
            None => Client::new_with(
                key.id,
                None,
                old.map(|c| &**c),
                key.hash,
                revision,
                now,
                owner,
                shard_no,
                move || Self::next_body(old, publications, now),
            ),
        };
        self.replace_batched(clients, old, Some(new), changed, retired);
        ApplyOutcome::Applied
    }

    /// The body of the next state of `old` publishing `publications` (see
    /// [`Body::build`]).
    fn next_body(old: Option<&Arc<Client>>, mut publications: Pubs<'_>, now: Millis) -> Body {
        // Share identical publications with the old state's parts to keep the index
        // stable (mapped as the new client is built: no list gathered first); the others
        // are copied, or moved when handed over. A held client of one publication has no
        // part to share (its slot points at the client, which the new one replaces): a
        // publication of its service is taken as sent, without comparing the two (an
        // equal one would be copied from the held state, to the same effect).
        let held = old.map(|o| o.publications());
        let parts = old.is_some_and(|o| matches!(o.body, Body::Many(_)));
        let pubs = (0..publications.len()).map(|k| {
            let p = publications.get(k);
            match held.map(|h| (h.find(&p.service), h)) {
                Some((Ok(i), h)) if parts && h[i].get() == p => Next::Held(i),
                Some((Ok(i), _)) => Next::Replace(i, publications.take(k)),
                _ => Next::New(publications.take(k)),
            }
        });
        Body::build(pubs, old.map(|c| &**c), now)
    }

    /// [`Registry::apply_delete`] under the shard's lock; the client let go of goes to
    /// `retired`.
    #[allow(clippy::too_many_arguments)]
    fn apply_delete_locked<'a>(
        &self,
        tombstones: &mut Tombstones,
        clients: &mut ClientsRef<'_, 'a>,
        key: IdKey<'_>,
        revision: Revision,
        now: Millis,
        changed: &mut Vec<crate::model::Service>,
        retired: &mut RetireBatch<'a, Client>,
    ) -> ApplyOutcome {
        let id = key.id;
        let held = clients.get_key(key);
        let old = held.as_deref();
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
        self.replace_batched(clients, old, None, changed, retired);
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
            let pin = self.pin();
            let mut lock = shard.write();
            let (tombstones, mut clients) = self.writer(&mut lock, &pin);
            match clients.get(id.as_str()) {
                Some(c) if c.revision == expected => {
                    self.replace(&mut clients, Some(&c), None, &mut changed);
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
        let shard_no = self.shard_of(id);
        let _lock = self.shards[shard_no as usize].write();
        let pin = self.pin();
        match self.clients(shard_no, &pin).get(id.as_str()) {
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
    use super::{ApplyCounts, ReplicaChange, StateMut, StateRef, by_shard};
    use crate::config::Config;
    use crate::member::MemberId;
    use crate::model::{InstanceSpec, Publication, Revision};
    use crate::registry::{ApplyOutcome, Registry};
    use std::sync::Arc;

    /// A decoded state's publications are moved into the store: a new client's and a
    /// changed one's are taken (and stored as sent), one a held part already has, or one
    /// of a stale state, is left; the store then holds what the borrowed form of the same
    /// states would have stored.
    #[test]
    fn a_handed_over_state_moves_what_it_stores() {
        let (moved, borrowed) = (
            Registry::new(MemberId(0), 3, 1_000, &Config::default()),
            Registry::new(MemberId(0), 3, 1_000, &Config::default()),
        );
        let publication = |r: &Registry, svc: &str, port: u16| {
            let s = r.service("public", "DEFAULT_GROUP", svc);
            let i = InstanceSpec::new("10.0.0.1", port)
                .to_instance(r.interner(), &s)
                .unwrap();
            Publication::single(s, i)
        };
        let id = "1700000000000_10.0.0.1_80";
        // The revision, the services and ports, whether it applies, which are taken.
        type Step = (u64, &'static [(&'static str, u16)], bool, &'static [bool]);
        let steps: [Step; 6] = [
            (5, &[("a", 80)], true, &[true]),
            (6, &[("a", 81)], true, &[true]),
            // A held client of one publication shares no part: both taken.
            (7, &[("a", 81), ("b", 90)], true, &[true, true]),
            (8, &[("a", 81), ("b", 91)], true, &[false, true]),
            (8, &[("a", 82)], false, &[false]),
            (9, &[("b", 91)], true, &[false]),
        ];
        for (revision, pubs, applied, taken) in steps {
            let mut owned: Vec<Option<Publication>> = pubs
                .iter()
                .map(|&(s, port)| Some(publication(&moved, s, port)))
                .collect();
            let change = ReplicaChange::Moved(
                StateMut {
                    id,
                    revision: Revision(revision),
                    owner: MemberId(1),
                    publications: &mut owned,
                    connection: true,
                },
                MemberId(1),
            );
            let want = ApplyCounts {
                applied: u32::from(applied),
                stale: u32::from(!applied),
            };
            let now = revision * 10;
            assert_eq!(moved.apply_many([change], now), want, "revision {revision}");
            let left: Vec<bool> = owned.iter().map(Option::is_none).collect();
            assert_eq!(left, taken, "revision {revision}: which were taken");
            let shared: Vec<Arc<Publication>> = pubs
                .iter()
                .map(|&(s, port)| Arc::new(publication(&borrowed, s, port)))
                .collect();
            let state = StateRef {
                id,
                revision: Revision(revision),
                owner: MemberId(1),
                publications: &shared,
            };
            let outcome = borrowed.apply_state(state, MemberId(1), now);
            assert_eq!(outcome == ApplyOutcome::Applied, applied);
            let (m, b) = (moved.get(id).unwrap(), borrowed.get(id).unwrap());
            assert_eq!(m.to_record(), b.to_record(), "revision {revision}");
            if applied {
                assert_eq!(b.to_record(), state.to_record(), "revision {revision}");
            }
            // A publication keeps the heartbeat time of its service's first state (a at
            // revision 5, b at 7), in either form.
            for (k, &(svc, _)) in pubs.iter().enumerate().filter(|_| applied) {
                let first = if svc == "a" { 50 } else { 70 };
                assert_eq!(m.last_beat(k), first, "revision {revision}, {svc}");
                assert_eq!(b.last_beat(k), first, "revision {revision}, {svc}");
            }
        }
    }

    /// The states a replicated batch replaces (of one publication: the table's and the
    /// index slot's references retired as one) and deletes are retired with the batch:
    /// as one unit for a batch of at least the reclaim batch size (3 here), one by one
    /// for a smaller one. Once the retirements ran, nothing holds an old state but this
    /// test (every reference the store held released, none twice), and the newest
    /// states are the store's.
    #[test]
    fn the_states_a_batch_lets_go_of_are_released_once() {
        let config = Config {
            reclaim_batch: 3,
            shards: 4,
            ..Config::default()
        };
        let r = Registry::new(MemberId(0), 3, 1_000, &config);
        let s = r.service("public", "DEFAULT_GROUP", "a");
        let state = |port: u16| {
            let i = InstanceSpec::new("10.0.0.1", port)
                .to_instance(r.interner(), &s)
                .unwrap();
            Arc::new(Publication::single(s.clone(), i))
        };
        let ids: Vec<String> = (0..6)
            .map(|i| format!("1700000000000_10.0.0.{i}_80"))
            .collect();
        let mut held = Vec::new();
        // Revision 1 stores them (nothing let go of); 2 replaces all six (a unit); 3
        // replaces two (one by one); 4 deletes one and replaces another (one by one).
        for (revision, which) in [(1, 0..6), (2, 0..6), (3, 0..2), (4, 4..6)] {
            let pubs: Vec<Vec<Arc<Publication>>> =
                which.clone().map(|_| vec![state(80 + revision)]).collect();
            let changes = which.clone().zip(&pubs).map(|(k, p)| {
                let id = ids[k].as_str();
                if revision == 4 && k == 4 {
                    return ReplicaChange::Delete(id, Revision(4));
                }
                let state = StateRef {
                    id,
                    revision: Revision(u64::from(revision)),
                    owner: MemberId(1),
                    publications: p,
                };
                ReplicaChange::State(state, MemberId(1))
            });
            let counts = r.apply_many(changes, 10);
            assert_eq!(counts.applied as usize, which.len());
            held.extend(which.filter_map(|k| r.get(&ids[k])));
        }
        r.flush_retired();
        let newest: Vec<_> = ids.iter().filter_map(|id| r.get(id)).collect();
        assert_eq!(newest.len(), 5);
        for (i, c) in held.iter().enumerate() {
            let store = if newest.iter().any(|n| Arc::ptr_eq(n, c)) {
                2
            } else {
                0
            };
            // The test's in `held`, the store's (table and slot), and `newest`'s.
            let want = 1 + store + usize::from(store > 0);
            assert_eq!(Arc::strong_count(c), want, "state {i}");
        }
    }

    /// A small batch whose length its iterator tells exactly is applied as it is iterated
    /// (each change stored before the next is read: no list of the batch gathered first);
    /// one whose length is not known exactly (a filter) is gathered first. Both store the
    /// same states and count the same.
    #[test]
    fn a_small_batch_of_known_length_is_applied_as_it_is_iterated() {
        let ids: Vec<String> = (0..5)
            .map(|i| format!("1700000000000_10.0.0.{i}_80"))
            .collect();
        let mut held = Vec::new();
        for exact in [true, false] {
            let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
            let s = r.service("public", "DEFAULT_GROUP", "a");
            let pubs: Vec<Vec<Arc<Publication>>> = (0..ids.len() as u16)
                .map(|k| {
                    let i = InstanceSpec::new("10.0.0.1", 80 + k)
                        .to_instance(r.interner(), &s)
                        .unwrap();
                    vec![Arc::new(Publication::single(s.clone(), i))]
                })
                .collect();
            // How many of the changes before each were stored when it was read.
            let mut stored_before = Vec::new();
            let changes = (0..ids.len()).map(|k| {
                stored_before.push(ids[..k].iter().filter(|id| r.get(id).is_some()).count());
                let state = StateRef {
                    id: &ids[k],
                    revision: Revision(7),
                    owner: MemberId(1),
                    publications: &pubs[k],
                };
                ReplicaChange::State(state, MemberId(1))
            });
            let counts = if exact {
                r.apply_many(changes, 10)
            } else {
                r.apply_many(changes.filter(|_| true), 10)
            };
            assert_eq!(counts.applied as usize, ids.len());
            let want: Vec<usize> = if exact {
                (0..ids.len()).collect()
            } else {
                vec![0; ids.len()]
            };
            assert_eq!(stored_before, want, "exact length: {exact}");
            let records: Vec<_> = ids
                .iter()
                .map(|id| r.get(id).unwrap().to_record())
                .collect();
            held.push((records, r.stats(), r.owner_digests(MemberId(1))));
        }
        assert_eq!(held[0], held[1]);
    }

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
