//! The registry: a sharded, concurrent store of clients with a per-service index.
//!
//! * **Clients** live in `shards` lock-free maps (papaya), one per digest shard, keyed by
//!   client id. A client is immutable once stored and replaced as a whole on change
//!   (copy-on-write), except for its owner attribution, heartbeat times and lease, which
//!   are atomics.
//! * **Services** map to a [`ServiceIndex`] holding the publications of every client that
//!   publishes to them, so a query costs time in proportion to that service's instances.
//! * **Digests** of each owner's clients per shard are updated with every change.
//!
//! Reads (queries, lookups, iteration) take no lock. Writes take the mutex of the
//! client's shard, which serializes changes of one client (and its tombstone) with the
//! index and digest updates they imply; writes to different shards run in parallel.
//! The registry knows nothing of routing or peers: [`crate::Node`] decides who owns what.

use crate::config::Config;
use crate::digest::{DigestTable, ShardDigest};
use crate::error::{Field, ValidationError};
use crate::hash::shard_of;
use crate::member::MemberId;
use crate::model::{ClientId, ClientKind, Instance, Publication, Revision, Service};
use crate::name::{Interner, Name};
use crate::time::Millis;
use arc_swap::ArcSwapOption;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};

const NO_SLOT: u32 = u32::MAX;

pub(crate) type FastHash = foldhash::fast::SeedableRandomState;
type Map<K, V> = papaya::HashMap<K, V, FastHash>;

/// The in-memory map hasher: random per process unless `seed` fixes it (the simulator
/// fixes it so a seed replays exactly, iteration orders included).
pub(crate) fn fast_hash(seed: Option<u64>) -> FastHash {
    match seed {
        Some(s) => FastHash::with_seed(s, foldhash::SharedSeed::global_fixed()),
        None => FastHash::random(),
    }
}

fn new_map<K, V>(seed: Option<u64>) -> Map<K, V> {
    papaya::HashMap::builder()
        .hasher(fast_hash(seed))
        .resize_mode(papaya::ResizeMode::Blocking)
        .build()
}

/// A stored client: its full state at one revision.
pub struct Client {
    id: ClientId,
    revision: Revision,
    shard: u32,
    publications: SmallVec<[Arc<Publication>; 1]>,
    owner: AtomicU16,
    /// Last heartbeat per publication (ip:port clients; owner side).
    beats: SmallVec<[AtomicU64; 1]>,
    /// The slot of each publication in its service's index (set while the client is
    /// stored, under its shard lock).
    slots: SmallVec<[AtomicU32; 1]>,
    /// Last time a sync, a per-client verify or an ownership change renewed the lease.
    lease_base: AtomicU64,
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
    /// Records a heartbeat of publication `i` at `now`; returns the publication.
    pub(crate) fn record_beat(&self, i: usize, now: Millis) -> Arc<Publication> {
        self.beats[i].fetch_max(now, Relaxed);
        self.publications[i].clone()
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

/// The publications of one service: a slab of slots, one per publishing client.
///
/// Readers iterate the slots without a lock (an append-only `boxcar::Vec` of
/// `ArcSwapOption`s); writers hold the service's free-list mutex only to take or return a
/// slot, and every client remembers its slot in each service, so an update is one atomic
/// store. A slot costs about 16 bytes, a fraction of a hash-map entry.
pub struct ServiceIndex {
    service: Service,
    slots: boxcar::Vec<ArcSwapOption<Publication>>,
    free: Mutex<Vec<u32>>,
    live: AtomicUsize,
    revision: AtomicU64,
    instances: AtomicUsize,
    /// Writers hold it shared; the empty-service collector holds it exclusively and sets
    /// the flag once it removed the index from the map.
    retired: RwLock<bool>,
    empty_since: AtomicU64,
}

impl ServiceIndex {
    fn new(service: Service) -> Self {
        Self {
            service,
            slots: boxcar::Vec::new(),
            free: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            revision: AtomicU64::new(0),
            instances: AtomicUsize::new(0),
            retired: RwLock::new(false),
            empty_since: AtomicU64::new(0),
        }
    }
}

/// A consistent-enough view of one service: the publications present when it was read.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The service.
    pub service: Service,
    /// Increments on every change of the service's publications.
    pub revision: u64,
    /// The publications, one per publishing client.
    pub publications: Vec<Arc<Publication>>,
}

/// Which instances a query wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryFilter<'a> {
    /// Only these clusters (empty: all).
    pub clusters: &'a [&'a str],
    /// Only healthy instances.
    pub healthy_only: bool,
    /// Only enabled instances (Nacos hides disabled ones from queries and pushes).
    pub enabled_only: bool,
}

impl ServiceView {
    /// The instances passing `filter`.
    pub fn instances<'s>(&'s self, filter: QueryFilter<'s>) -> impl Iterator<Item = &'s Instance> {
        self.publications
            .iter()
            .flat_map(|p| p.instances.iter())
            .filter(move |i| {
                (filter.clusters.is_empty() || filter.clusters.contains(&i.cluster.as_str()))
                    && (!filter.healthy_only || i.healthy)
                    && (!filter.enabled_only || i.enabled)
            })
    }

    /// Number of instances regardless of filters.
    pub fn instance_count(&self) -> usize {
        self.publications.iter().map(|p| p.instances.len()).sum()
    }
}

/// Called after every change of a service's publications (pushes, watch streams).
pub trait ChangeListener: Send + Sync {
    /// `service`'s publications changed.
    fn service_changed(&self, service: &Service);
}

struct Tombstone {
    revision: Revision,
    expires_at: Millis,
    /// A drop marker, not a deletion: the replica at `revision` was dropped (verify found
    /// its owner without it, or its lease ran out). It blocks that revision and older ones
    /// (a sync delayed on a slow link must not bring the client back), is never sent as a
    /// deletion, and is cleared when the owner lists the client at exactly `revision`.
    dropped: bool,
}

struct StoreShard {
    clients: Map<ClientId, Arc<Client>>,
    write: Mutex<HashMap<ClientId, Tombstone, FastHash>>,
}

/// What applying a replicated change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The state was newer and is now stored.
    Applied,
    /// The local state (or tombstone) is as new or newer; nothing changed.
    Stale,
}

/// Why a local write was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// A field is invalid or a limit was exceeded.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// The result of a local write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// The client now has this revision.
    Changed(Revision),
    /// The client was deleted at this revision (its last publication went away).
    Deleted(Revision),
    /// Nothing to do (e.g. deregistering what was not registered).
    Unchanged,
}

/// Who caused a local write, which decides how its revision is ordered.
///
/// Revisions are hybrid clocks: a client's write gets `max(previous + 1, now)`, so a
/// later write anywhere in the cluster outranks an earlier one. A write the owner makes
/// on its own timer (marking an instance unhealthy, expiring it) is not new information
/// from the client: it is derived from the state it changes and gets that state's
/// revision plus one, without the time floor. It replaces that state everywhere, but any
/// later write by the client (a deregistration or re-registration through another node
/// while this one was cut off) outranks it, so a cut-off former owner's health check
/// cannot bring back a deleted client or undo a newer registration when the partition
/// heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client asked for it (register, deregister).
    Client,
    /// A health change derived from the state it changes: the heartbeat check marking
    /// an instance unhealthy or expiring it, or a beat that makes it healthy again.
    Timer,
}

/// Counters of the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Clients held (owned and replicas).
    pub clients: usize,
    /// Instances held.
    pub instances: usize,
    /// Services with an index (including recently emptied ones).
    pub services: usize,
    /// Tombstones held.
    pub tombstones: usize,
}

/// The sharded client store with its service index and digests.
pub struct Registry {
    me: MemberId,
    floor: AtomicU64,
    shard_count: u32,
    shards: Box<[StoreShard]>,
    services: Map<Name, Arc<ServiceIndex>>,
    digests: DigestTable,
    interner: Interner,
    listeners: RwLock<Vec<Arc<dyn ChangeListener>>>,
    has_listener: AtomicBool,
    clients: AtomicUsize,
    instances: AtomicUsize,
    max_services_per_client: usize,
    tombstone_ttl: Millis,
}

impl Registry {
    /// An empty registry for member `me` of `members`, with the revision floor of an owner
    /// started at `incarnation_ms`, and the shard count and limits of `config`.
    pub fn new(me: MemberId, members: usize, incarnation_ms: Millis, config: &Config) -> Self {
        let shards = config.shards;
        let seed = config.hash_seed;
        Self {
            me,
            floor: AtomicU64::new(Revision::floor(incarnation_ms)),
            shard_count: shards,
            shards: (0..shards)
                .map(|_| StoreShard {
                    clients: new_map(seed),
                    write: Mutex::new(HashMap::with_hasher(fast_hash(seed))),
                })
                .collect(),
            services: new_map(seed),
            digests: DigestTable::new(members, shards),
            interner: Interner::new(),
            listeners: RwLock::new(Vec::new()),
            has_listener: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            instances: AtomicUsize::new(0),
            max_services_per_client: config.max_services_per_client,
            tombstone_ttl: config.tombstone_ttl,
        }
    }

    /// Adds a listener told about every service change (after the change is visible).
    pub fn add_listener(&self, listener: Arc<dyn ChangeListener>) {
        self.listeners.write().push(listener);
        self.has_listener.store(true, Relaxed);
    }

    /// The interner for names stored in this registry.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The shard of a client id.
    pub fn shard_of(&self, id: &ClientId) -> u32 {
        shard_of(id.as_str(), self.shard_count)
    }

    /// The canonical [`Service`] for validated parts, shared with the index.
    pub fn service(&self, namespace: &str, group: &str, name: &str) -> Service {
        let services = self.services.pin();
        let found = Service::with_key(namespace, group, name, |key| {
            services.get(key).map(|idx| idx.service.clone())
        });
        if let Some(s) = found {
            return s;
        }
        let service = Service::new(&self.interner, namespace, group, name);
        let idx = services.get_or_insert_with(service.key().clone(), || {
            let idx = ServiceIndex::new(service.clone());
            idx.empty_since.store(0, Relaxed);
            Arc::new(idx)
        });
        idx.service.clone()
    }

    /// The client `id`, if held.
    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        let shard = &self.shards[shard_of(id, self.shard_count) as usize];
        shard.clients.pin().get(id).cloned()
    }

    /// The publications of a service.
    pub fn query(&self, namespace: &str, group: &str, name: &str) -> Option<ServiceView> {
        let services = self.services.pin();
        let idx = Service::with_key(namespace, group, name, |key| services.get(key).cloned())?;
        let publications: Vec<Arc<Publication>> = idx
            .slots
            .iter()
            .filter_map(|(_, s)| s.load_full())
            .collect();
        // Slot order: stable, roughly registration order (slots are reused).
        Some(ServiceView {
            service: idx.service.clone(),
            revision: idx.revision.load(Relaxed),
            publications,
        })
    }

    /// Services of `namespace` (and of `group`, when given), sorted by name.
    pub fn services(&self, namespace: &str, group: Option<&str>) -> Vec<Service> {
        let services = self.services.pin();
        let mut v: Vec<Service> = services
            .values()
            .filter(|idx| {
                idx.service.namespace().as_str() == namespace
                    && group.is_none_or(|g| idx.service.group().as_str() == g)
            })
            .map(|idx| idx.service.clone())
            .collect();
        v.sort_by(|a, b| (a.group(), a.name()).cmp(&(b.group(), b.name())));
        v
    }

    /// Counters.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            clients: self.clients.load(Relaxed),
            instances: self.instances.load(Relaxed),
            services: self.services.len(),
            tombstones: self.shards.iter().map(|s| s.write.lock().len()).sum(),
        }
    }

    /// The digest of `owner`'s clients in `shard`.
    pub fn digest(&self, owner: MemberId, shard: u32) -> ShardDigest {
        self.digests.get(owner, shard)
    }

    /// All shard digests of `owner`'s clients.
    pub fn owner_digests(&self, owner: MemberId) -> Vec<ShardDigest> {
        self.digests.owner_digests(owner)
    }

    /// Number of clients attributed to `owner`.
    pub fn owner_count(&self, owner: MemberId) -> u64 {
        self.digests.owner_count(owner)
    }

    /// Calls `f` with every client of `shard` (a point-in-time-ish iteration).
    pub fn for_each_in_shard(&self, shard: u32, mut f: impl FnMut(&Arc<Client>)) {
        let clients = self.shards[shard as usize].clients.pin();
        for c in clients.values() {
            f(c);
        }
    }

    /// The clients of `shard`.
    pub fn shard_clients(&self, shard: u32) -> Vec<Arc<Client>> {
        let clients = self.shards[shard as usize].clients.pin();
        clients.values().cloned().collect()
    }

    /// Calls `f` with every client.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Client>)) {
        for s in 0..self.shard_count {
            self.for_each_in_shard(s, &mut f);
        }
    }

    // ----- local writes (this node is the owner) ---------------------------------------

    /// Publishes `publication` for client `id` (replacing what it published to that
    /// service before). `owner` is the member the client is attributed to (this node).
    pub fn publish(
        &self,
        id: &ClientId,
        publication: Publication,
        owner: MemberId,
        now: Millis,
    ) -> Result<WriteResult, WriteError> {
        let max = self.max_services_per_client;
        let mut result = Ok(());
        let publication = Arc::new(publication);
        let out = self.write_local(id, owner, now, Origin::Client, |old| {
            let mut pubs: Vec<Arc<Publication>> =
                old.map(|c| c.publications.to_vec()).unwrap_or_default();
            match pubs.binary_search_by(|p| p.service.cmp(&publication.service)) {
                Ok(i) => {
                    if *pubs[i] == *publication {
                        return LocalAction::Nothing;
                    }
                    pubs[i] = publication.clone();
                }
                Err(i) => {
                    if pubs.len() >= max {
                        result = Err(ValidationError::new(
                            Field::Services,
                            format!(
                                "client {id} already publishes to {} services, the limit is {max}",
                                pubs.len()
                            ),
                        ));
                        return LocalAction::Nothing;
                    }
                    pubs.insert(i, publication.clone());
                }
            }
            LocalAction::Put(pubs)
        });
        result?;
        Ok(out)
    }

    /// Removes what client `id` publishes to `service`; deletes the client when nothing
    /// is left. `origin` orders the write's revision (see [`Origin`]).
    pub fn unpublish(
        &self,
        id: &ClientId,
        service: &Service,
        owner: MemberId,
        now: Millis,
        origin: Origin,
    ) -> WriteResult {
        self.write_local(id, owner, now, origin, |old| {
            let Some(old) = old else {
                return LocalAction::Nothing;
            };
            let mut pubs = old.publications.to_vec();
            match pubs.binary_search_by(|p| p.service.cmp(service)) {
                Ok(i) => {
                    pubs.remove(i);
                    if pubs.is_empty() {
                        LocalAction::Delete
                    } else {
                        LocalAction::Put(pubs)
                    }
                }
                Err(_) => LocalAction::Nothing,
            }
        })
    }

    /// Records that client `id`, which this node does not hold, was deregistered: a
    /// tombstone at a fresh revision, replicated like any deletion. The owner may lack a
    /// registration that reached another node while the two were cut off (or before the
    /// sync arrived); without the tombstone that registration would arrive afterwards and
    /// undo the acknowledged deregistration. Nothing happens if the node holds the client.
    pub fn forget_absent(&self, id: &ClientId, owner: MemberId, now: Millis) -> WriteResult {
        self.write_local(id, owner, now, Origin::Client, |old| match old {
            Some(_) => LocalAction::Nothing,
            None => LocalAction::Delete,
        })
    }

    /// Deletes client `id` (connection closed, or expiry by its owner).
    pub fn remove_client(&self, id: &ClientId, owner: MemberId, now: Millis) -> WriteResult {
        self.write_local(id, owner, now, Origin::Client, |old| match old {
            Some(_) => LocalAction::Delete,
            None => LocalAction::Nothing,
        })
    }

    /// Replaces the instances of publication `service` of client `id` through `f` (health
    /// changes). `f` returns `None` to leave it unchanged. `origin` orders the write's
    /// revision (see [`Origin`]).
    pub fn update_instances(
        &self,
        id: &ClientId,
        service: &Service,
        owner: MemberId,
        now: Millis,
        origin: Origin,
        f: impl FnOnce(&Publication) -> Option<Publication>,
    ) -> WriteResult {
        self.write_local(id, owner, now, origin, |old| {
            let Some(old) = old else {
                return LocalAction::Nothing;
            };
            let Ok(i) = old
                .publications
                .binary_search_by(|p| p.service.cmp(service))
            else {
                return LocalAction::Nothing;
            };
            match f(&old.publications[i]) {
                Some(p) => {
                    let mut pubs = old.publications.to_vec();
                    pubs[i] = Arc::new(p);
                    LocalAction::Put(pubs)
                }
                None => LocalAction::Nothing,
            }
        })
    }

    /// Records a heartbeat of client `id` for `service`. Returns the publication's
    /// instances if the client publishes to it, `None` otherwise.
    pub fn beat(&self, id: &ClientId, service: &Service, now: Millis) -> Option<Arc<Publication>> {
        let c = self.get(id.as_str())?;
        let i = c
            .publications
            .binary_search_by(|p| p.service.cmp(service))
            .ok()?;
        c.beats[i].fetch_max(now, Relaxed);
        Some(c.publications[i].clone())
    }

    /// Sets every heartbeat of client `id` to at least `now` (grace after an ownership
    /// change, so a new owner does not expire instances whose beats went elsewhere).
    pub(crate) fn refresh_beats(&self, c: &Client, now: Millis) {
        for b in c.beats.iter() {
            b.fetch_max(now, Relaxed);
        }
    }

    fn write_local(
        &self,
        id: &ClientId,
        owner: MemberId,
        now: Millis,
        origin: Origin,
        f: impl FnOnce(Option<&Arc<Client>>) -> LocalAction,
    ) -> WriteResult {
        let shard_no = self.shard_of(id);
        let shard = &self.shards[shard_no as usize];
        let mut changed: Vec<Service> = Vec::new();
        let result = {
            let mut tombstones = shard.write.lock();
            let clients = shard.clients.pin();
            let old = clients.get(id.as_str());
            let action = f(old);
            let prev = old
                .map(|c| c.revision)
                .max(tombstones.get(id.as_str()).map(|t| t.revision))
                .unwrap_or(Revision::ZERO);
            let floor = match origin {
                Origin::Client => self.floor.load(Relaxed).max(Revision::floor(now)),
                Origin::Timer => 0,
            };
            let revision = Revision::next(prev, floor, self.me);
            match action {
                LocalAction::Nothing => WriteResult::Unchanged,
                LocalAction::Put(pubs) => {
                    let new = self.build_client(
                        id,
                        revision,
                        shard_no,
                        pubs,
                        owner,
                        old.map(|c| &**c),
                        now,
                    );
                    tombstones.remove(id.as_str());
                    self.replace(&clients, old, Some(new), &mut changed);
                    WriteResult::Changed(revision)
                }
                LocalAction::Delete => {
                    tombstones.insert(
                        id.clone(),
                        Tombstone {
                            revision,
                            expires_at: now.saturating_add(self.tombstone_ttl()),
                            dropped: false,
                        },
                    );
                    self.replace(&clients, old, None, &mut changed);
                    WriteResult::Deleted(revision)
                }
            }
        };
        self.notify(&changed);
        result
    }

    fn tombstone_ttl(&self) -> Millis {
        self.tombstone_ttl
    }

    #[allow(clippy::too_many_arguments)]
    fn build_client(
        &self,
        id: &ClientId,
        revision: Revision,
        shard: u32,
        pubs: Vec<Arc<Publication>>,
        owner: MemberId,
        old: Option<&Client>,
        now: Millis,
    ) -> Arc<Client> {
        let beats: SmallVec<[AtomicU64; 1]> = pubs
            .iter()
            .map(|p| {
                // Keep the beat time of a publication that is still there.
                let prev = old.and_then(|o| {
                    o.publications
                        .binary_search_by(|q| q.service.cmp(&p.service))
                        .ok()
                        .map(|i| o.last_beat(i))
                });
                AtomicU64::new(prev.unwrap_or(now))
            })
            .collect();
        let slots = pubs.iter().map(|_| AtomicU32::new(NO_SLOT)).collect();
        Arc::new(Client {
            id: id.clone(),
            revision,
            shard,
            slots,
            publications: SmallVec::from_vec(pubs),
            owner: AtomicU16::new(owner.0),
            beats,
            lease_base: AtomicU64::new(now),
        })
    }

    /// Swaps `old` for `new` in the client map, the service index and the digests.
    /// Caller holds the shard lock.
    fn replace(
        &self,
        clients: &papaya::HashMapRef<'_, ClientId, Arc<Client>, FastHash, papaya::LocalGuard<'_>>,
        old: Option<&Arc<Client>>,
        new: Option<Arc<Client>>,
        changed: &mut Vec<Service>,
    ) {
        let old_ref = old.map(|c| &**c);
        let new_ref = new.as_deref();
        // Service index: free the slots of publications that went away, reuse the slot
        // of a service the client still publishes to, take a slot for a new one.
        if let Some(o) = old_ref {
            for (i, p) in o.publications.iter().enumerate() {
                let still = new_ref.is_some_and(|n| {
                    n.publications
                        .binary_search_by(|q| q.service.cmp(&p.service))
                        .is_ok()
                });
                if !still {
                    self.index_remove(&p.service, o.slots[i].load(Relaxed), p.instances.len());
                    changed.push(p.service.clone());
                }
            }
        }
        if let Some(n) = new_ref {
            for (i, p) in n.publications.iter().enumerate() {
                let before = old_ref.and_then(|o| {
                    o.publications
                        .binary_search_by(|q| q.service.cmp(&p.service))
                        .ok()
                        .map(|j| (&o.publications[j], o.slots[j].load(Relaxed)))
                });
                let slot = match before {
                    Some((b, slot)) if Arc::ptr_eq(b, p) => slot,
                    Some((b, slot)) => {
                        changed.push(p.service.clone());
                        self.index_insert(p.clone(), Some(slot), b.instances.len())
                    }
                    None => {
                        changed.push(p.service.clone());
                        self.index_insert(p.clone(), None, 0)
                    }
                };
                n.slots[i].store(slot, Relaxed);
            }
        }
        // Digests and counters.
        if let Some(o) = old_ref {
            self.digests
                .remove(o.owner(), o.shard, o.id.as_str(), o.revision);
            self.instances.fetch_sub(o.instance_count(), Relaxed);
        }
        match new {
            Some(n) => {
                self.digests
                    .add(n.owner(), n.shard, n.id.as_str(), n.revision);
                self.instances.fetch_add(n.instance_count(), Relaxed);
                if old.is_none() {
                    self.clients.fetch_add(1, Relaxed);
                }
                clients.insert(n.id.clone(), n);
            }
            None => {
                if let Some(o) = old_ref {
                    self.clients.fetch_sub(1, Relaxed);
                    clients.remove(o.id.as_str());
                }
            }
        }
    }

    /// Stores `p` in its service's index, in `slot` if the client already had one there;
    /// returns the slot.
    fn index_insert(&self, p: Arc<Publication>, slot: Option<u32>, replaced_len: usize) -> u32 {
        let services = self.services.pin();
        loop {
            let idx = services
                .get_or_insert_with(p.service.key().clone(), || {
                    Arc::new(ServiceIndex::new(p.service.clone()))
                })
                .clone();
            let retired = idx.retired.read();
            if *retired {
                // The collector removed this index after we looked it up; look again.
                drop(retired);
                continue;
            }
            let n = p.instances.len();
            let slot = match slot.filter(|s| *s != NO_SLOT) {
                Some(s) => {
                    if let Some(cell) = idx.slots.get(s as usize) {
                        cell.store(Some(p));
                    }
                    s
                }
                None => {
                    let reused = idx.free.lock().pop();
                    let s = match reused {
                        Some(s) => {
                            if let Some(cell) = idx.slots.get(s as usize) {
                                cell.store(Some(p));
                            }
                            s
                        }
                        None => idx.slots.push(ArcSwapOption::new(Some(p))) as u32,
                    };
                    idx.live.fetch_add(1, Relaxed);
                    s
                }
            };
            idx.instances.fetch_add(n, Relaxed);
            idx.instances.fetch_sub(replaced_len, Relaxed);
            idx.revision.fetch_add(1, Relaxed);
            return slot;
        }
    }

    fn index_remove(&self, service: &Service, slot: u32, len: usize) {
        let services = self.services.pin();
        if let Some(idx) = services.get(service.key().as_str()) {
            let _shared = idx.retired.read();
            if let Some(cell) = idx.slots.get(slot as usize)
                && cell.swap(None).is_some()
            {
                idx.free.lock().push(slot);
                idx.live.fetch_sub(1, Relaxed);
                idx.instances.fetch_sub(len, Relaxed);
                idx.revision.fetch_add(1, Relaxed);
            }
        }
    }

    fn notify(&self, changed: &[Service]) {
        if changed.is_empty() || !self.has_listener.load(Relaxed) {
            return;
        }
        for l in self.listeners.read().iter() {
            for s in changed {
                l.service_changed(s);
            }
        }
    }

    // ----- replicated writes ------------------------------------------------------------

    /// Applies a replicated full state if it is newer than what is held (state or
    /// tombstone). `owner` is the member to attribute the client to.
    pub fn apply(&self, record: &ClientRecord, owner: MemberId, now: Millis) -> ApplyOutcome {
        let shard_no = self.shard_of(&record.id);
        let shard = &self.shards[shard_no as usize];
        let mut changed = Vec::new();
        let outcome = {
            let mut tombstones = shard.write.lock();
            let clients = shard.clients.pin();
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
                ApplyOutcome::Stale
            } else {
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
                                .map(|i| o.publications[i].clone())
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
                self.replace(&clients, old, Some(new), &mut changed);
                ApplyOutcome::Applied
            }
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
            let clients = shard.clients.pin();
            let old = clients.get(id.as_str());
            let current = old
                .map(|c| c.revision)
                .max(tombstones.get(id.as_str()).map(|t| t.revision))
                .unwrap_or(Revision::ZERO);
            if revision <= current {
                ApplyOutcome::Stale
            } else {
                tombstones.insert(
                    id.clone(),
                    Tombstone {
                        revision,
                        expires_at: now.saturating_add(self.tombstone_ttl()),
                        dropped: false,
                    },
                );
                self.replace(&clients, old, None, &mut changed);
                ApplyOutcome::Applied
            }
        };
        self.notify(&changed);
        outcome
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
            let clients = shard.clients.pin();
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
        let clients = shard.clients.pin();
        match clients.get(id.as_str()) {
            Some(c) if c.owner() != owner => {
                self.digests
                    .remove(c.owner(), c.shard, c.id.as_str(), c.revision);
                c.owner.store(owner.0, Relaxed);
                self.digests.add(owner, c.shard, c.id.as_str(), c.revision);
                true
            }
            _ => false,
        }
    }

    /// The revision of the tombstone of `id`, if any (drop markers are not deletions and
    /// do not count).
    pub fn tombstone(&self, id: &str) -> Option<Revision> {
        let shard = &self.shards[shard_of(id, self.shard_count) as usize];
        shard
            .write
            .lock()
            .get(id)
            .filter(|t| !t.dropped)
            .map(|t| t.revision)
    }

    /// Removes the drop marker of `id` if it is at exactly `revision` (its owner lists the
    /// client at that revision, so the drop was wrong); whether one was removed.
    pub fn clear_drop_marker(&self, id: &str, revision: Revision) -> bool {
        let shard = &self.shards[shard_of(id, self.shard_count) as usize];
        let mut t = shard.write.lock();
        if t.get(id)
            .is_some_and(|t| t.dropped && t.revision == revision)
        {
            t.remove(id);
            true
        } else {
            false
        }
    }

    /// Forgets tombstones that expired; returns how many.
    pub fn collect_tombstones(&self, now: Millis) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut t = s.write.lock();
            let before = t.len();
            t.retain(|_, t| t.expires_at > now);
            n += before - t.len();
        }
        n
    }

    /// Removes service indexes that have been empty for at least `min_age`; returns how many.
    pub fn collect_empty_services(&self, now: Millis, min_age: Millis) -> usize {
        let services = self.services.pin();
        let mut removed = 0;
        for (key, idx) in services.iter() {
            if idx.instances.load(Relaxed) != 0 || idx.live.load(Relaxed) != 0 {
                idx.empty_since.store(0, Relaxed);
                continue;
            }
            let since = idx.empty_since.load(Relaxed);
            if since == 0 {
                idx.empty_since.store(now.max(1), Relaxed);
                continue;
            }
            if now.saturating_sub(since) < min_age {
                continue;
            }
            let mut retired = idx.retired.write();
            if idx.live.load(Relaxed) == 0 {
                *retired = true;
                services.remove(key.as_str());
                removed += 1;
            }
        }
        removed
    }

    /// Every client's kind counted: `(connection, ip_port)`.
    pub fn kind_counts(&self) -> (usize, usize) {
        let mut c = (0, 0);
        self.for_each(|cl| match cl.id.kind() {
            ClientKind::Connection => c.0 += 1,
            ClientKind::IpPort => c.1 += 1,
        });
        c
    }
}

enum LocalAction {
    Nothing,
    Put(Vec<Arc<Publication>>),
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceSpec;

    fn cfg(shards: u32, max_services: usize) -> Config {
        Config {
            shards,
            max_services_per_client: max_services,
            ..Config::default()
        }
    }

    fn reg() -> Registry {
        Registry::new(MemberId(0), 3, 1_000, &cfg(16, 100))
    }

    fn publication(r: &Registry, svc: &str, ip: &str, port: u16) -> Publication {
        let s = r.service("public", "DEFAULT_GROUP", svc);
        let i = InstanceSpec::new(ip, port)
            .to_instance(r.interner(), &s)
            .unwrap();
        Publication::single(s, i)
    }

    #[test]
    fn publish_query_unpublish() {
        let r = reg();
        let me = MemberId(0);
        let id = ClientId::ip_port("10.0.0.1", 80);
        let p = publication(&r, "a", "10.0.0.1", 80);
        let WriteResult::Changed(rev1) = r.publish(&id, p.clone(), me, 10).unwrap() else {
            panic!()
        };
        assert_eq!(r.publish(&id, p, me, 11).unwrap(), WriteResult::Unchanged);
        let v = r.query("public", "DEFAULT_GROUP", "a").unwrap();
        assert_eq!(v.instance_count(), 1);
        assert_eq!(r.stats().clients, 1);
        assert_eq!(r.owner_count(me), 1);
        let svc = v.service;
        let WriteResult::Deleted(rev2) = r.unpublish(&id, &svc, me, 12, Origin::Client) else {
            panic!()
        };
        assert!(rev2 > rev1);
        assert_eq!(
            r.query("public", "DEFAULT_GROUP", "a")
                .unwrap()
                .instance_count(),
            0
        );
        assert_eq!(
            r.stats(),
            RegistryStats {
                clients: 0,
                instances: 0,
                services: 1,
                tombstones: 1
            }
        );
        assert_eq!(r.owner_count(me), 0);
        // Re-registration gets a revision above the tombstone.
        let WriteResult::Changed(rev3) = r
            .publish(&id, publication(&r, "a", "10.0.0.1", 80), me, 13)
            .unwrap()
        else {
            panic!()
        };
        assert!(rev3 > rev2);
    }

    /// An owner `a` (member 0) that wrote client `id` twice (`rec1`, then `rec2`), and an
    /// empty replica `b` (member 1).
    fn owner_and_replica() -> (Registry, Registry, ClientId, ClientRecord, ClientRecord) {
        let a = reg();
        let b = Registry::new(MemberId(1), 3, 1_000, &cfg(16, 100));
        let id = ClientId::ip_port("10.0.0.1", 80);
        a.publish(&id, publication(&a, "a", "10.0.0.1", 80), MemberId(0), 1)
            .unwrap();
        let rec1 = a.get(id.as_str()).unwrap().to_record();
        a.publish(&id, publication(&a, "a", "10.0.0.1", 81), MemberId(0), 2)
            .unwrap();
        let rec2 = a.get(id.as_str()).unwrap().to_record();
        (a, b, id, rec1, rec2)
    }

    #[test]
    fn apply_only_newer_and_tombstones_block_older() {
        let (a, b, id, rec1, rec2) = owner_and_replica();
        assert_eq!(b.apply(&rec2, MemberId(0), 3), ApplyOutcome::Applied);
        assert_eq!(b.apply(&rec1, MemberId(0), 4), ApplyOutcome::Stale);
        assert_eq!(b.apply(&rec2, MemberId(0), 4), ApplyOutcome::Stale);
        assert_eq!(
            b.digest(MemberId(0), b.shard_of(&id)),
            a.digest(MemberId(0), a.shard_of(&id))
        );
        let WriteResult::Deleted(del) = a.remove_client(&id, MemberId(0), 5) else {
            panic!()
        };
        assert_eq!(b.apply_delete(&id, del, 6), ApplyOutcome::Applied);
        assert_eq!(
            b.apply(&rec2, MemberId(0), 7),
            ApplyOutcome::Stale,
            "tombstone blocks"
        );
        assert!(b.get(id.as_str()).is_none());
        assert_eq!(
            b.collect_tombstones(6 + crate::config::DEFAULT_TOMBSTONE_TTL + 1),
            1
        );
    }

    /// A dropped replica leaves a marker: a delayed sync of the dropped revision (or an
    /// older one) cannot bring it back, a newer state can, the marker is not a deletion
    /// (never sent as one), and clearing it (the owner lists that revision) lets the
    /// owner's repair through.
    #[test]
    fn a_dropped_replica_is_not_brought_back_by_a_delayed_sync() {
        let (a, b, id, rec1, rec2) = owner_and_replica();
        assert_eq!(b.apply(&rec2, MemberId(0), 3), ApplyOutcome::Applied);
        assert!(
            !b.drop_replica(&id, rec1.revision, 4),
            "only the held revision"
        );
        assert!(b.drop_replica(&id, rec2.revision, 4));
        assert!(b.get(id.as_str()).is_none());
        assert_eq!(b.tombstone(id.as_str()), None, "a marker is not a deletion");
        assert_eq!(b.apply(&rec2, MemberId(0), 5), ApplyOutcome::Stale);
        assert_eq!(b.apply(&rec1, MemberId(0), 5), ApplyOutcome::Stale);
        assert!(!b.clear_drop_marker(id.as_str(), rec1.revision));
        assert!(b.clear_drop_marker(id.as_str(), rec2.revision));
        assert_eq!(b.apply(&rec2, MemberId(0), 6), ApplyOutcome::Applied);
        // A newer state passes a marker without clearing it.
        assert!(b.drop_replica(&id, rec2.revision, 7));
        a.publish(&id, publication(&a, "a", "10.0.0.1", 82), MemberId(0), 8)
            .unwrap();
        let rec3 = a.get(id.as_str()).unwrap().to_record();
        assert_eq!(b.apply(&rec3, MemberId(0), 9), ApplyOutcome::Applied);
    }

    #[test]
    fn set_owner_moves_digests() {
        let r = reg();
        let id = ClientId::ip_port("10.0.0.1", 80);
        r.publish(&id, publication(&r, "a", "10.0.0.1", 80), MemberId(0), 1)
            .unwrap();
        assert!(r.set_owner(&id, MemberId(2)));
        assert_eq!(r.owner_count(MemberId(0)), 0);
        assert_eq!(r.owner_count(MemberId(2)), 1);
        assert!(!r.set_owner(&id, MemberId(2)));
    }

    #[test]
    fn service_limit_per_client() {
        let r = Registry::new(MemberId(0), 1, 0, &cfg(4, 2));
        let id = ClientId::parse("c1").unwrap();
        r.publish(&id, publication(&r, "a", "10.0.0.1", 80), MemberId(0), 1)
            .unwrap();
        r.publish(&id, publication(&r, "b", "10.0.0.1", 80), MemberId(0), 1)
            .unwrap();
        let e = r
            .publish(&id, publication(&r, "c", "10.0.0.1", 80), MemberId(0), 1)
            .unwrap_err();
        assert!(e.to_string().contains("limit is 2"), "{e}");
    }

    #[test]
    fn empty_services_are_collected_after_a_while() {
        let r = reg();
        let _ = r.service("public", "DEFAULT_GROUP", "ghost");
        assert_eq!(r.collect_empty_services(1_000, 60_000), 0);
        assert_eq!(r.collect_empty_services(2_000, 60_000), 0);
        assert_eq!(r.collect_empty_services(62_000, 60_000), 1);
        assert!(r.query("public", "DEFAULT_GROUP", "ghost").is_none());
        // A later publication recreates it.
        let id = ClientId::ip_port("10.0.0.1", 80);
        r.publish(
            &id,
            publication(&r, "ghost", "10.0.0.1", 80),
            MemberId(0),
            1,
        )
        .unwrap();
        assert_eq!(
            r.query("public", "DEFAULT_GROUP", "ghost")
                .unwrap()
                .instance_count(),
            1
        );
    }

    #[test]
    fn concurrent_writers_keep_index_and_digests_consistent() {
        let r = Arc::new(reg());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..500u16 {
                        let ip = format!("10.0.{t}.{}", i % 50);
                        let id = ClientId::ip_port(&ip, 1000 + i);
                        let p = publication(&r, &format!("s{}", i % 7), &ip, 1000 + i);
                        r.publish(&id, p, MemberId(0), u64::from(i)).unwrap();
                        if i % 3 == 0 {
                            r.remove_client(&id, MemberId(0), u64::from(i));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = r.stats();
        let mut via_services = 0;
        for s in r.services("public", None) {
            via_services += r
                .query("public", "DEFAULT_GROUP", s.name())
                .unwrap()
                .instance_count();
        }
        assert_eq!(stats.instances, via_services);
        assert_eq!(stats.clients as u64, r.owner_count(MemberId(0)));
        assert_eq!(stats.clients, 4 * (500 - 167));
    }
}
