//! A stored client and its replicated forms.
//!
//! [`Client`] is one client's full state at one revision as this node stores it:
//! immutable once stored (a change replaces it whole), except for its owner attribution,
//! heartbeat times, index slots and lease, which are atomics. [`ClientRecord`] is the
//! same state as it travels in syncs and snapshots; [`ClientChange`] is one entry of a
//! sync batch (a state, owned or shared with the store, or a deletion).

use super::NO_SLOT;
use crate::member::MemberId;
use crate::model::{ClientId, Publication, Revision};
use crate::time::Millis;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};

/// A stored client: its full state at one revision. One allocation of 80 bytes (96 with
/// its reference counts, size class 96) for a client with one publication: the id (inline
/// up to 24 bytes, see [`ClientId`]) and its hash, the publication's pointer, heartbeat
/// time and index slot sit in it. A test pins the size.
pub struct Client {
    pub(super) id: ClientId,
    /// The id's stable hash (see `IdKey`): its shard, its place in the shard's set and
    /// its digest term, computed once for the client's first state.
    pub(super) id_hash: u64,
    pub(super) revision: Revision,
    pub(super) lease_base: AtomicU64,
    pub(super) owner: AtomicU16,
    /// The shard of the id (shards are at most 65,536, see [`crate::Config::shards`]).
    pub(super) shard: u16,
    /// What the client publishes, sorted by service.
    pub(super) publications: PublishedList,
}

/// One publication of a stored client with what the store keeps beside it: the last
/// heartbeat (ip:port clients; owner side) and the publication's slot in its service's
/// index (set while the client is stored, under its shard lock). Dereferences to the
/// publication.
pub struct Published {
    publication: Arc<Publication>,
    pub(super) beat: AtomicU64,
    slot: AtomicU32,
}

impl Published {
    pub(super) fn new(publication: Arc<Publication>, beat: Millis) -> Self {
        Self {
            publication,
            beat: AtomicU64::new(beat),
            slot: AtomicU32::new(NO_SLOT),
        }
    }

    /// The publication.
    pub fn publication(&self) -> &Arc<Publication> {
        &self.publication
    }
}

impl Deref for Published {
    type Target = Arc<Publication>;
    fn deref(&self) -> &Arc<Publication> {
        &self.publication
    }
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.publication, f)
    }
}

/// A client's publications' pointers as a write gathers them for the next state: one or
/// two without an allocation.
pub(super) type PublicationArcs = smallvec::SmallVec<[Arc<Publication>; 2]>;

/// A client's publications: the single one inline (the common case), more in a slice.
pub(super) enum PublishedList {
    One(Published),
    Many(Box<[Published]>),
}

impl PublishedList {
    pub(super) fn from_vec(mut v: Vec<Published>) -> Self {
        if v.len() == 1
            && let Some(p) = v.pop()
        {
            return PublishedList::One(p);
        }
        PublishedList::Many(v.into_boxed_slice())
    }
}

impl Deref for PublishedList {
    type Target = [Published];
    fn deref(&self) -> &[Published] {
        match self {
            PublishedList::One(p) => std::slice::from_ref(p),
            PublishedList::Many(v) => v,
        }
    }
}

impl Client {
    /// A client to be stored (its publications' slots are `NO_SLOT` until it is).
    pub(super) fn new(
        id: ClientId,
        id_hash: u64,
        revision: Revision,
        lease_base: Millis,
        owner: MemberId,
        shard: u32,
        publications: PublishedList,
    ) -> Self {
        Self {
            id,
            id_hash,
            revision,
            lease_base: AtomicU64::new(lease_base),
            owner: AtomicU16::new(owner.0),
            shard: u16::try_from(shard).expect("at most 65,536 shards"),
            publications,
        }
    }

    /// The index slot of publication `i` (in its service's index).
    pub(super) fn slot(&self, i: usize) -> &AtomicU32 {
        &self.publications[i].slot
    }

    /// The client id.
    pub fn id(&self) -> &ClientId {
        &self.id
    }
    /// The revision of this state.
    pub fn revision(&self) -> Revision {
        self.revision
    }
    /// The shard of the client id.
    pub fn shard(&self) -> u32 {
        u32::from(self.shard)
    }
    /// What the client publishes, sorted by service.
    pub fn publications(&self) -> &[Published] {
        &self.publications
    }
    /// The member this node attributes the client to.
    pub fn owner(&self) -> MemberId {
        MemberId(self.owner.load(Relaxed))
    }
    /// Number of instances published.
    pub fn instance_count(&self) -> usize {
        self.publications.iter().map(|p| p.instances.len()).sum()
    }
    /// Last heartbeat of publication `i`.
    pub(crate) fn last_beat(&self, i: usize) -> Millis {
        self.publications[i].beat.load(Relaxed)
    }
    pub(crate) fn lease_base(&self) -> Millis {
        self.lease_base.load(Relaxed)
    }
    pub(crate) fn renew_lease(&self, now: Millis) {
        self.lease_base.fetch_max(now, Relaxed);
    }
    /// The publications' pointers, for a write that builds the next state.
    pub(super) fn publication_arcs(&self) -> PublicationArcs {
        let arcs = self.publications.iter().map(|p| p.publication.clone());
        if self.publications.len() <= 2 {
            // Pushed one by one: the small vector's collect reserves and checks more.
            let mut v = PublicationArcs::new();
            arcs.for_each(|p| v.push(p));
            v
        } else {
            // A vector's own collect, kept as the small vector's heap (no copy).
            PublicationArcs::from_vec(arcs.collect())
        }
    }
    /// The full state as a record, for sync and snapshot.
    pub fn to_record(&self) -> ClientRecord {
        ClientRecord {
            id: self.id.clone(),
            revision: self.revision,
            owner: self.owner(),
            publications: self
                .publications
                .iter()
                .map(|p| p.publication.clone())
                .collect(),
        }
    }
}

/// Two clients are equal when they hold the same state: id, revision, owner and
/// publications (heartbeat times, lease and index slots aside), as their records are.
impl PartialEq for Client {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.revision == other.revision
            && self.owner() == other.owner()
            && self.publications.len() == other.publications.len()
            && self
                .publications
                .iter()
                .zip(other.publications.iter())
                .all(|(a, b)| a.publication == b.publication)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("revision", &self.revision)
            .field("owner", &self.owner())
            .field("publications", &&*self.publications)
            .finish()
    }
}

/// The full state of one client as replicated: every publication at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    /// Client id.
    pub id: ClientId,
    /// Revision of this state.
    pub revision: Revision,
    /// The member the sender attributes the client to.
    pub owner: MemberId,
    /// What the client publishes.
    pub publications: Vec<Arc<Publication>>,
}

impl ClientRecord {
    /// An estimate of the record's encoded size in bytes (protobuf-like), used to bound
    /// batches and chunks. Errs on the high side.
    pub fn size_hint(&self) -> usize {
        size_hint(&self.id, self.publications.iter().map(|p| &**p))
    }
}

/// [`ClientRecord::size_hint`] of a state's id and publications.
fn size_hint<'a>(id: &ClientId, publications: impl Iterator<Item = &'a Publication>) -> usize {
    let mut n = 16 + id.as_str().len();
    for p in publications {
        n += 16 + p.service.key().len();
        for i in p.instances.iter() {
            n += 32 + i.ip.len() + i.cluster.len();
            n += i.custom_id.as_ref().map_or(0, |s| s.len() + 2);
            n += i
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>();
        }
    }
    n
}

/// One entry of a sync batch: a client's full state or its deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientChange {
    /// The full state.
    Upsert(ClientRecord),
    /// The full state as this node stores it, shared with the store: what a flush sends
    /// (encoded straight from the stored client, without building a record). Its owner is
    /// read when it is encoded. [`ClientChange::into_owned`] makes it an `Upsert`.
    Stored(Arc<Client>),
    /// The client was deleted at `revision`.
    Delete {
        /// Client id.
        id: ClientId,
        /// Revision of the deletion (above the last state's).
        revision: Revision,
    },
}

impl ClientChange {
    /// The client id.
    pub fn id(&self) -> &ClientId {
        match self {
            ClientChange::Upsert(r) => &r.id,
            ClientChange::Stored(c) => &c.id,
            ClientChange::Delete { id, .. } => id,
        }
    }
    /// The revision.
    pub fn revision(&self) -> Revision {
        match self {
            ClientChange::Upsert(r) => r.revision,
            ClientChange::Stored(c) => c.revision,
            ClientChange::Delete { revision, .. } => *revision,
        }
    }
    /// Estimated encoded size in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            ClientChange::Upsert(r) => r.size_hint(),
            ClientChange::Stored(c) => size_hint(&c.id, c.publications.iter().map(|p| &***p)),
            ClientChange::Delete { id, .. } => 16 + id.as_str().len(),
        }
    }
    /// The change with a stored state as an owned record (an `Upsert`), the others as
    /// they are.
    pub fn into_owned(self) -> ClientChange {
        match self {
            ClientChange::Stored(c) => ClientChange::Upsert(c.to_record()),
            c => c,
        }
    }
}
