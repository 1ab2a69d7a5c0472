//! A stored client and its replicated forms.
//!
//! [`Client`] is one client's full state at one revision as this node stores it:
//! immutable once stored (a change replaces it whole), except for its owner attribution,
//! heartbeat times, index slots and lease, which are atomics. [`ClientRecord`] is the
//! same state as it travels in syncs and snapshots; [`ClientChange`] is one entry of a
//! sync batch (a state or a deletion).

use crate::member::MemberId;
use crate::model::{ClientId, Publication, Revision};
use crate::time::Millis;
use smallvec::SmallVec;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};

/// A stored client: its full state at one revision.
pub struct Client {
    pub(super) id: ClientId,
    pub(super) revision: Revision,
    pub(super) shard: u32,
    pub(super) publications: SmallVec<[Arc<Publication>; 1]>,
    pub(super) owner: AtomicU16,
    /// Last heartbeat per publication (ip:port clients; owner side).
    pub(super) beats: SmallVec<[AtomicU64; 1]>,
    /// The slot of each publication in its service's index (set while the client is
    /// stored, under its shard lock).
    pub(super) slots: SmallVec<[AtomicU32; 1]>,
    /// Last time a sync, a per-client verify or an ownership change renewed the lease.
    pub(super) lease_base: AtomicU64,
}

impl Client {
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
        self.shard
    }
    /// What the client publishes, sorted by service.
    pub fn publications(&self) -> &[Arc<Publication>] {
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
        self.beats[i].load(Relaxed)
    }
    pub(crate) fn lease_base(&self) -> Millis {
        self.lease_base.load(Relaxed)
    }
    pub(crate) fn renew_lease(&self, now: Millis) {
        self.lease_base.fetch_max(now, Relaxed);
    }
    /// The full state as a record, for sync and snapshot.
    pub fn to_record(&self) -> ClientRecord {
        ClientRecord {
            id: self.id.clone(),
            revision: self.revision,
            owner: self.owner(),
            publications: self.publications.to_vec(),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("revision", &self.revision)
            .field("owner", &self.owner())
            .field("publications", &self.publications)
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
        let mut n = 16 + self.id.as_str().len();
        for p in &self.publications {
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
}

/// One entry of a sync batch: a client's full state or its deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientChange {
    /// The full state.
    Upsert(ClientRecord),
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
            ClientChange::Delete { id, .. } => id,
        }
    }
    /// The revision.
    pub fn revision(&self) -> Revision {
        match self {
            ClientChange::Upsert(r) => r.revision,
            ClientChange::Delete { revision, .. } => *revision,
        }
    }
    /// Estimated encoded size in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            ClientChange::Upsert(r) => r.size_hint(),
            ClientChange::Delete { id, .. } => 16 + id.as_str().len(),
        }
    }
}
