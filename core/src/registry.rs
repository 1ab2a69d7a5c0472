//! The registry: a sharded, concurrent store of clients with a per-service index.
//!
//! * **Clients** live in `shards` tables ([`arc_slots::IdTable`]), one per digest shard,
//!   of the stored clients found by their id's hash and compared by id. A client is
//!   immutable once stored and replaced as a whole on change (copy-on-write: one pointer
//!   stored into its slot), except for its owner attribution, heartbeat times, index
//!   slots and lease, which are atomics.
//! * **Services** map to a [`ServiceIndex`] holding the publications of every client that
//!   publishes to them, so a query costs time in proportion to that service's instances.
//! * **Digests** of each owner's clients per shard are updated with every change.
//!
//! Reads (queries, lookups, iteration) take no lock: they pin the registry's one
//! reclaimer, which frees the clients and index entries writers let go of once no pin
//! that could have seen them is held. Writes take the lock of the client's shard (its
//! table's own, which also guards the shard's tombstones), which serializes changes of
//! one client (and its tombstone) with the index and digest updates they imply; writes
//! to different shards run in parallel.
//! The registry knows nothing of routing or peers: [`crate::Node`] decides who owns what.
//!
//! This file holds the store itself (the shards, lookups, iteration, the swap of a
//! client's state that keeps index, digests and counters in step) and the outcome types
//! of writes. The rest is one file per concept under `registry/`:
//!
//! | file | what it holds |
//! |---|---|
//! | `client.rs` | the stored client, and its replicated forms (record, change) |
//! | `index.rs` | the per-service index, queries, change listeners |
//! | `local.rs` | local writes: publish, unpublish, remove, health changes, beats |
//! | `replica.rs` | replicated writes: apply a state or a deletion, drop a replica, re-attribute |
//! | `tombstone.rs` | tombstones and drop markers |
//!
//! The digests themselves are [`crate::digest`]'s.

use crate::config::Config;
use crate::digest::{DigestTable, ShardDigest};
use crate::error::ValidationError;
use crate::hash::{mix64, shard_of_hash, stable_hash64};
use crate::member::MemberId;
use crate::model::{ClientId, ClientKind, Revision, Service};
use crate::name::{Interner, Name};
use crate::time::Millis;
use arc_slots::{Pin, RetireBatch, Unlinked};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

#[cfg(test)]
mod apply_tests;
mod client;
#[cfg(test)]
mod hint_tests;
mod index;
mod local;
mod replica;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
mod tombstone;

use client::Body;
pub(crate) use client::is_ip_port_text;
pub use client::{
    Client, ClientChange, ClientRecord, IdBuf, Publications, PublicationsIter, Published,
};
pub use index::{
    ChangeListener, PublicationRef, QueryFilter, ServiceIndex, ServiceResolver, ServiceView,
};
pub use replica::{ApplyCounts, ChangeRef, ReplicaChange, StateMut, StateRef};
use tombstone::Tombstone;

const NO_SLOT: u32 = u32::MAX;

pub(crate) type FastHash = foldhash::fast::SeedableRandomState;
type Map<K, V> = papaya::HashMap<K, V, FastHash>;
/// One shard's tombstones and drop markers, kept under the shard's lock.
type Tombstones = HashMap<ClientId, Tombstone, FastHash>;
/// One shard's clients: a table of the stored clients, each found by its id's hash (see
/// [`IdKey`]); its lock is the shard's write lock, which guards the shard's tombstones.
type ClientTable = arc_slots::IdTable<Client, Tombstones>;
/// A shard's write lock, held.
type ShardLock<'a> = arc_slots::WriteGuard<'a, Client, Tombstones>;
/// A stored client on loan to a reader of its shard (dereferences to its `Arc`).
type ClientRef<'a> = arc_slots::ArcRef<'a, Client>;

/// A client id with its stable hash ([`stable_hash64`], the hash that picks its shard
/// and makes its digest term): what a client is found by. Hashed once per operation:
/// the shard, the lookup in the shard's table and the digest all use the one value (the
/// stored client keeps it, so a replacement hashes nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdKey<'a> {
    pub(crate) id: &'a str,
    pub(crate) hash: u64,
}

impl<'a> IdKey<'a> {
    pub(crate) fn new(id: &'a str) -> Self {
        Self {
            id,
            hash: stable_hash64(id.as_bytes()),
        }
    }

    /// Whether `c` is the client of this id.
    #[inline]
    fn is(&self, c: &Client) -> bool {
        c.id_hash == self.hash && c.id_is(self.id)
    }
}

/// The seed of the shards' tables: a client is placed by its id's stable hash mixed with
/// it ([`table_hash`]). Per process (fixed with the config's seed): ids chosen to collide
/// in a table do not collide in another process (all ids of a shard share the stable
/// hash's low bits, which the mix spreads); only ids whose whole 64-bit stable hashes are
/// equal collide everywhere, and a lookup tells them apart by the id.
fn table_seed(seed: Option<u64>) -> u64 {
    use std::hash::BuildHasher;
    fast_hash(seed).hash_one(0x0069_646b_6579_u64)
}

/// The hash a client of id hash `id_hash` is placed by in its shard's table.
#[inline]
fn table_hash(seed: u64, id_hash: u64) -> u64 {
    mix64(seed ^ id_hash)
}

/// The in-memory map hasher: random per process unless `seed` fixes it (the simulator
/// fixes it so a seed replays exactly, iteration orders included).
pub(crate) fn fast_hash(seed: Option<u64>) -> FastHash {
    match seed {
        Some(s) => FastHash::with_seed(s, foldhash::SharedSeed::global_fixed()),
        None => FastHash::random(),
    }
}

/// A store map whose removed and replaced entries are freed once `reclaim_batch` of them
/// have gathered on the thread that removed them (see [`Config::reclaim_batch`]).
fn new_map<K, V>(seed: Option<u64>, reclaim_batch: usize) -> Map<K, V> {
    papaya::HashMap::builder()
        .hasher(fast_hash(seed))
        .resize_mode(papaya::ResizeMode::Blocking)
        .collector(seize::Collector::new().batch_size(reclaim_batch.max(1)))
        .build()
}

/// One shard's clients, read under a pin of the registry's reclaimer (no lock).
struct ShardClients<'a> {
    table: &'a ClientTable,
    seed: u64,
    pin: &'a Pin<'a>,
}

impl<'a> ShardClients<'a> {
    /// The client `id`, if held.
    fn get(&self, id: &str) -> Option<ClientRef<'a>> {
        self.get_key(IdKey::new(id))
    }
    /// The client of `key`, if held.
    #[inline]
    fn get_key(&self, key: IdKey<'_>) -> Option<ClientRef<'a>> {
        let h = table_hash(self.seed, key.hash);
        self.table.get(h, |c| key.is(c), self.pin)
    }
    /// How many clients are held.
    fn len(&self) -> usize {
        self.table.len()
    }
    /// Every client held.
    fn iter(&self) -> impl Iterator<Item = ClientRef<'a>> + use<'a> {
        self.table.iter(self.pin)
    }
}

/// One shard's clients under the shard's lock: read as [`ShardClients`], changed only
/// through `Registry::replace_with` (by [`Registry::replace`] and `replace_batched`).
struct ShardWriter<'g, 'a> {
    table: arc_slots::Writer<'g, 'a, Client>,
    seed: u64,
    pin: &'a Pin<'a>,
    /// The last lookup's `seed ^ id hash` and its [`table_hash`]: the write that follows
    /// (of that id, nearly always) places by it without mixing again (~7 instructions a
    /// write). `(0, 0)` before any lookup: `mix64(0) == 0`.
    looked: std::cell::Cell<(u64, u64)>,
}

impl<'a> ShardWriter<'_, 'a> {
    /// The client `id`, if held.
    fn get(&self, id: &str) -> Option<ClientRef<'a>> {
        self.get_key(IdKey::new(id))
    }
    /// The client of `key`, if held (its slot noted for the write that follows: see
    /// [`arc_slots::Writer::set`]). Always inlined: called, it cost a write ~6.
    #[inline(always)]
    fn get_key(&self, key: IdKey<'_>) -> Option<ClientRef<'a>> {
        let x = self.seed ^ key.hash;
        let h = mix64(x);
        self.looked.set((x, h));
        self.table.get(h, |c| key.is(c), self.pin)
    }
    /// [`table_hash`] of `id_hash`, the last lookup's if it was of that hash.
    #[inline(always)]
    fn place_of(&self, id_hash: u64) -> u64 {
        let x = self.seed ^ id_hash;
        let (looked, h) = self.looked.get();
        let h = if looked == x { h } else { mix64(x) };
        debug_assert_eq!(h, table_hash(self.seed, id_hash));
        h
    }
    /// Puts `new` in the place of `old`, the client of its id that is held (or inserts it
    /// if `old` is `None`), or removes `old` if `new` is `None`. `old` is what this writer
    /// found for the id (under the same lock, so still held): `None` only if no client of
    /// the id is held, as the caller found (the insert does not look again; a debug build
    /// checks). Returns the client let go of (`old`), to retire.
    #[inline(always)]
    fn swap(
        &mut self,
        old: Option<&Client>,
        new: Option<Arc<Client>>,
    ) -> Option<Unlinked<'a, Client>> {
        let id_hash = old.or(new.as_deref()).map(|c| c.id_hash)?;
        let h = self.place_of(id_hash);
        debug_assert!(
            old.is_some()
                || new.as_deref().is_some_and(|n| {
                    let held =
                        self.table
                            .get(h, |c| c.id_hash == id_hash && c.same_id(n), self.pin);
                    held.is_none()
                }),
            "an insert of a client whose id is held"
        );
        // The client held is `old` itself: found by its address, no id compared.
        let is_old = |c: &Client| old.is_some_and(|o| std::ptr::eq(c, o));
        let let_go = self.table.set(h, is_old, new, self.pin);
        debug_assert_eq!(let_go.is_some(), old.is_some(), "`old` is the client held");
        let_go
    }
}

/// What [`Registry::replace_with`] does with a client let go of: retire it at once
/// ([`RetireNow`]), or with the rest of a batch ([`RetireBatch`]).
trait Retire<'a> {
    /// `u`, let go of by one structure.
    fn one(&mut self, u: Unlinked<'a, Client>);
    /// `a` and `b`, let go of by the shard's table and an index slot (one client when the
    /// slot moved to its new state, see [`Unlinked::retire_with`]).
    fn both(&mut self, a: Unlinked<'a, Client>, b: Unlinked<'a, Client>);
}

/// Retires what it is given at once.
struct RetireNow;

impl<'a> Retire<'a> for RetireNow {
    #[inline(always)]
    fn one(&mut self, u: Unlinked<'a, Client>) {
        u.retire();
    }
    #[inline(always)]
    fn both(&mut self, a: Unlinked<'a, Client>, b: Unlinked<'a, Client>) {
        a.retire_with(b);
    }
}

impl<'a> Retire<'a> for RetireBatch<'a, Client> {
    #[inline(always)]
    fn one(&mut self, u: Unlinked<'a, Client>) {
        self.push(u);
    }
    #[inline(always)]
    fn both(&mut self, a: Unlinked<'a, Client>, b: Unlinked<'a, Client>) {
        self.push_with(a, b);
    }
}

struct StoreShard {
    clients: ClientTable,
}

impl StoreShard {
    /// The shard's write lock, which guards its tombstones (what it dereferences to) and
    /// the changes of its clients ([`Registry::writer`]). Inlined: a replica's apply in
    /// the batch's order takes a lock for nearly every change.
    #[inline(always)]
    fn write(&self) -> ShardLock<'_> {
        self.clients.lock()
    }
}

/// Hints that ask for the memory a client's write waits on first, a write or so ahead
/// of it: a handler applying a batch of writes names the next client while it applies
/// the current one ([`WriteHints::client`]), and the slot the next lookup starts at (a
/// miss in a large registry) is fetched meanwhile. Holds a pin of the registry's
/// reclaimer: keep it for a batch, not longer.
pub struct WriteHints<'r> {
    registry: &'r Registry,
    /// `None`: inactive (a registry below [`Config::prefetch_from`] clients).
    pin: Option<Pin<'r>>,
}

/// A write's service as [`WriteHints`] find it: the slot of the thread's memo of found
/// services that its parts pick ([`WriteHints::service_at`]).
#[derive(Clone, Copy, Debug)]
pub struct ServiceHint(usize);

impl WriteHints<'_> {
    /// Asks for the slot a write of `id` looks up first (and the two lines that lead to
    /// it: its shard's table and array header, read here), if the hints are active.
    /// Changes nothing.
    #[inline]
    pub fn client(&self, id: &ClientId) {
        if let Some(pin) = &self.pin {
            let hash = stable_hash64(id.as_str().as_bytes());
            self.registry.prefetch_slot(hash, pin);
        }
    }

    /// Where this thread's memo keeps the service of a write (its parts as received), for
    /// the write's two hints ([`WriteHints::service_early`], then [`WriteHints::service`]):
    /// computed once, when the batch is walked. `None` if the hints are not active or the
    /// parts do not split.
    #[inline]
    pub fn service_at(&self, namespace: &str, group: &str, name: &str) -> Option<ServiceHint> {
        self.pin.as_ref()?;
        index::memo_slot_of(namespace, group, name).map(ServiceHint)
    }

    /// Asks for this thread's memo entry of the service a write two writes ahead names:
    /// the first of two hints for its service. Changes nothing.
    #[inline]
    pub fn service_early(&self, at: ServiceHint) {
        self.registry.prefetch_memo(at.0);
    }

    /// Asks for the lines of the service a write a write ahead names, and of its index,
    /// that the write reads first, from the memo entry [`WriteHints::service_early`] asked
    /// for. Changes nothing.
    #[inline]
    pub fn service(&self, at: ServiceHint) {
        self.registry.prefetch_found(at.0);
    }

    /// Whether the hints ask for anything (the registry held
    /// [`Config::prefetch_from`] clients or more when they were made).
    pub fn active(&self) -> bool {
        self.pin.is_some()
    }
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
    /// Unique in the process (services shared between registries tell theirs apart by it).
    id: u64,
    me: MemberId,
    floor: AtomicU64,
    shard_count: u32,
    shards: Box<[StoreShard]>,
    /// The seed the shards' tables place clients by (see [`table_seed`]).
    table_seed: u64,
    /// The service indexes, by service (looked up by a name's parts: see `index.rs`).
    services: Map<index::ServiceKey, Arc<ServiceIndex>>,
    /// Frees the clients the shards' tables let go of and the publications the indexes'
    /// slots let go of (see `index.rs`); its pins cover reads of both.
    slots: arc_slots::Reclaimer,
    digests: DigestTable,
    interner: Interner,
    listeners: RwLock<Vec<Arc<dyn ChangeListener>>>,
    has_listener: AtomicBool,
    clients: AtomicUsize,
    instances: AtomicUsize,
    /// Service indexes the empty-service collector retired so far (see `index::Memo`).
    services_retired: AtomicU64,
    max_services_per_client: usize,
    /// [`Config::prefetch_from`].
    prefetch_from: usize,
    max_clients: u64,
    max_services_per_namespace: usize,
    /// Services with at least one publication, per namespace (namespaces with none are
    /// absent). Changed under a service's free-list lock when its index fills or empties.
    namespace_services: Mutex<HashMap<Name, usize, FastHash>>,
    /// Services with at least one publication, in all namespaces: the sum of
    /// `namespace_services`, written with it under its lock. While it is below
    /// `max_services_per_namespace` no namespace can be at the limit, and a write that
    /// publishes a client is not checked against it further (one load of a line written
    /// only when a service fills or empties; see `check_new_service`).
    live_services: AtomicUsize,
    tombstone_ttl: Millis,
}

impl Registry {
    /// An empty registry for member `me` of `members`, with the revision floor of an owner
    /// started at `incarnation_ms`, and the shard count and limits of `config`.
    pub fn new(me: MemberId, members: usize, incarnation_ms: Millis, config: &Config) -> Self {
        let shards = config.shards;
        let seed = config.hash_seed;
        static IDS: AtomicU64 = AtomicU64::new(0);
        let slots = arc_slots::Reclaimer::new(config.reclaim_batch);
        Self {
            id: IDS.fetch_add(1, Relaxed),
            me,
            floor: AtomicU64::new(Revision::floor(incarnation_ms)),
            shard_count: shards,
            shards: (0..shards)
                .map(|_| StoreShard {
                    clients: ClientTable::new(&slots, HashMap::with_hasher(fast_hash(seed))),
                })
                .collect(),
            table_seed: table_seed(seed),
            services: new_map(seed, config.reclaim_batch),
            slots,
            digests: DigestTable::new(members, shards),
            interner: Interner::new(),
            listeners: RwLock::new(Vec::new()),
            has_listener: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            instances: AtomicUsize::new(0),
            services_retired: AtomicU64::new(0),
            max_services_per_client: config.max_services_per_client,
            prefetch_from: config.prefetch_from,
            max_clients: u64::try_from(config.max_clients).unwrap_or(u64::MAX),
            max_services_per_namespace: config.max_services_per_namespace,
            namespace_services: Mutex::new(HashMap::with_hasher(fast_hash(seed))),
            live_services: AtomicUsize::new(0),
            tombstone_ttl: config.tombstone_ttl,
        }
    }

    /// Number of services of `namespace` with at least one publication.
    pub fn namespace_service_count(&self, namespace: &str) -> usize {
        self.namespace_services
            .lock()
            .get(namespace)
            .copied()
            .unwrap_or(0)
    }

    /// Frees interned names no stored state uses any more (see [`Interner::reclaim`]);
    /// returns how many.
    pub fn reclaim_names(&self) -> usize {
        self.interner.reclaim()
    }

    /// Frees what the store retired on the calling thread but keeps until the thread's
    /// batch fills (`Config::reclaim_batch`): after a burst of removals, up to that many
    /// old client versions and index entries (one batch for the shards' tables and the
    /// indexes' slots, one for the service map) per thread, which pin the pages they sit
    /// on and the names they use. Costs a process-wide memory barrier per batch: for
    /// after a burst, not per operation.
    pub fn flush_retired(&self) {
        use papaya::Guard as _;
        self.services.guard().flush();
        self.slots.flush();
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
        self.shard_of_key(IdKey::new(id.as_str()))
    }

    /// The shard of a client's key.
    #[inline]
    pub(crate) fn shard_of_key(&self, key: IdKey<'_>) -> u32 {
        shard_of_hash(key.hash, self.shard_count)
    }

    /// The shard of the client whose id's stable hash is `hash`.
    #[inline(always)]
    fn shard_of_id_hash(&self, hash: u64) -> &StoreShard {
        &self.shards[shard_of_hash(hash, self.shard_count) as usize]
    }

    /// Hints for a write of the client whose id's stable hash is `hash`, a few changes
    /// ahead of it (see [`arc_slots::prefetch`]): the first brings its shard (the table's
    /// array pointer and lock) into the cache, the second its table's array header (read
    /// through the first), the third the slot its lookup starts at (read through the
    /// second). Each reads only what the one before fetched; they change nothing.
    #[inline(always)]
    pub(crate) fn prefetch_shard(&self, hash: u64) {
        self.shard_of_id_hash(hash).clients.prefetch_table();
    }

    /// The second hint (see [`Registry::prefetch_shard`]).
    #[inline(always)]
    pub(crate) fn prefetch_array(&self, hash: u64) {
        self.shard_of_id_hash(hash).clients.prefetch_array();
    }

    /// The third hint (see [`Registry::prefetch_shard`]).
    #[inline(always)]
    pub(crate) fn prefetch_slot(&self, hash: u64, pin: &Pin<'_>) {
        self.shard_of_id_hash(hash)
            .clients
            .prefetch_slot(table_hash(self.table_seed, hash), pin);
    }

    /// Whether writes ask for their memory ahead: the registry holds
    /// [`Config::prefetch_from`] clients or more.
    #[inline]
    pub(crate) fn prefetching(&self) -> bool {
        self.clients.load(Relaxed) >= self.prefetch_from
    }

    /// Hints for the writes of a batch (see [`WriteHints`]), valid while they live:
    /// active if the registry holds [`Config::prefetch_from`] clients or more, else
    /// they do nothing (not even hash the ids).
    pub fn write_hints(&self) -> WriteHints<'_> {
        WriteHints {
            registry: self,
            pin: self.prefetching().then(|| self.pin()),
        }
    }

    /// The client `id`, if held.
    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.get_key(IdKey::new(id))
    }

    /// The client of `key` (an id with its stable hash, known to the caller), if held.
    pub(crate) fn get_key(&self, key: IdKey<'_>) -> Option<Arc<Client>> {
        let pin = self.slots.pin();
        let c = self.clients(self.shard_of_key(key), &pin).get_key(key);
        c.map(|c| Arc::clone(&c))
    }

    /// The clients of `shard`, read under `pin` (a pin of [`Registry::pin`]).
    #[inline]
    fn clients<'a>(&'a self, shard: u32, pin: &'a Pin<'a>) -> ShardClients<'a> {
        ShardClients {
            table: &self.shards[shard as usize].clients,
            seed: self.table_seed,
            pin,
        }
    }

    /// A pin of the registry's reclaimer: what is read under it stays valid until it is
    /// dropped.
    #[inline]
    fn pin(&self) -> Pin<'_> {
        self.slots.pin()
    }

    /// The tombstones and the clients' writer of the shard whose lock is `lock`, the
    /// clients read under `pin` (a pin of [`Registry::pin`]).
    #[inline]
    fn writer<'g, 'a>(
        &self,
        lock: &'g mut ShardLock<'a>,
        pin: &'a Pin<'a>,
    ) -> (&'g mut Tombstones, ShardWriter<'g, 'a>) {
        let (tombstones, table) = lock.split();
        let writer = ShardWriter {
            table,
            seed: self.table_seed,
            pin,
            looked: std::cell::Cell::new((0, 0)),
        };
        (tombstones, writer)
    }

    /// Counters.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            clients: self.clients.load(Relaxed),
            instances: self.instances.load(Relaxed),
            services: self.services.len(),
            tombstones: self.shards.iter().map(|s| s.write().len()).sum(),
        }
    }

    /// Instances held (what [`Registry::stats`] counts, without its walk of the shards
    /// for their tombstones): one load.
    pub fn instances(&self) -> usize {
        self.instances.load(Relaxed)
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
        let pin = self.slots.pin();
        for c in self.clients(shard, &pin).iter() {
            f(&c);
        }
    }

    /// The clients of `shard`.
    pub fn shard_clients(&self, shard: u32) -> Vec<Arc<Client>> {
        let pin = self.slots.pin();
        let clients = self.clients(shard, &pin);
        let mut v = Vec::with_capacity(clients.len());
        v.extend(clients.iter().map(|c| Arc::clone(&c)));
        v
    }

    /// Calls `f` with every client.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Client>)) {
        for s in 0..self.shard_count {
            self.for_each_in_shard(s, &mut f);
        }
    }

    /// The stored form of a client's new state at `revision` publishing `body` (built
    /// from `old`, the state it replaces, see [`Body::build`]).
    #[allow(clippy::too_many_arguments)]
    fn build_client(
        &self,
        id: &str,
        shared: Option<&Name>,
        id_hash: u64,
        revision: Revision,
        shard: u32,
        body: Body,
        owner: MemberId,
        old: Option<&Client>,
        now: Millis,
    ) -> Arc<Client> {
        // A held client's stored id text is shared, not copied (see `Client::new`).
        Client::new(id, shared, old, id_hash, revision, now, owner, shard, body)
    }

    /// Swaps `old` (the client held, as `clients` found it) for `new` in the shard's
    /// clients, the service index and the digests, and adds the services whose
    /// publications changed to `changed` when a listener is to hear of them (see
    /// [`Registry::notify`]). The client let go of is retired at once.
    fn replace<'a>(
        &self,
        clients: &mut ShardWriter<'_, 'a>,
        old: Option<&Arc<Client>>,
        new: Option<Arc<Client>>,
        changed: &mut Vec<Service>,
    ) {
        self.replace_with::<false>(clients, old, new, changed, &mut RetireNow);
    }

    /// [`Registry::replace`] of `old` by `new` that the caller knows to differ in a
    /// publication of the same service (`LocalAction::Replace`: the instance written is
    /// not the held one, see `InstanceSpec::convert_into`): a client of one publication
    /// moves its index slot without comparing the two publications again.
    fn replace_changed<'a>(
        &self,
        clients: &mut ShardWriter<'_, 'a>,
        old: &Arc<Client>,
        new: Arc<Client>,
        changed: &mut Vec<Service>,
    ) {
        self.replace_with::<true>(clients, Some(old), Some(new), changed, &mut RetireNow);
    }

    /// [`Registry::replace`], the client let go of added to `retired`, to retire with the
    /// rest of a replicated batch.
    fn replace_batched<'a>(
        &self,
        clients: &mut ShardWriter<'_, 'a>,
        old: Option<&Arc<Client>>,
        new: Option<Arc<Client>>,
        changed: &mut Vec<Service>,
        retired: &mut RetireBatch<'a, Client>,
    ) {
        self.replace_with::<false>(clients, old, new, changed, retired);
    }

    /// [`Registry::replace`], [`Registry::replace_changed`] and
    /// [`Registry::replace_batched`]: one body, made for each (a test of which to do cost
    /// the owner's path ~7 instructions a write). `DIFFERS`: the caller knows that `new`'s
    /// publication differs from `old`'s (see [`Registry::replace_changed`]).
    #[inline(always)]
    fn replace_with<'a, const DIFFERS: bool>(
        &self,
        clients: &mut ShardWriter<'_, 'a>,
        old: Option<&Arc<Client>>,
        new: Option<Arc<Client>>,
        changed: &mut Vec<Service>,
        retired: &mut impl Retire<'a>,
    ) {
        // Without a listener nothing reads `changed`: no list is grown (an allocation per
        // write otherwise).
        let listened = self.has_listener.load(Relaxed);
        let mut changed = |s: &Service| {
            if listened {
                changed.push(s.clone());
            }
        };
        let old_ref = old.map(|c| &**c);
        let new_ref = new.as_deref();
        // Service index: free the slots of publications that went away, keep the slot of
        // one held by the same part, point it at the new holder of one that is still
        // there (a client of one publication is its own holder: its slot moves with each
        // state), take a slot for a new service. A client of one publication replaced by
        // one of the same service (nearly every write) moves its slot, and the old state,
        // which the slot and the shard's table both let go of, is retired once for both
        // (below).
        let one =
            |c: &Arc<Client>| c.publications().len() == 1 && Arc::ptr_eq(Client::holder(c, 0), c);
        let let_go = match (old, &new) {
            (Some(o), Some(n)) if one(o) && one(n) && o.single().service == n.single().service => {
                self.index_move::<DIFFERS>(o, n, &mut changed, clients.pin)
            }
            // A new client of one publication (an insert: a replica's apply, a repair).
            (None, Some(n)) if one(n) => {
                self.index_add(n, &mut changed, clients.pin);
                None
            }
            _ => {
                self.index_walk(old, new.as_ref(), &mut changed, clients.pin);
                None
            }
        };
        // Digests (one client: its id hashed once for the old term and the new) and
        // counters.
        if let Some(c) = old_ref.or(new_ref) {
            self.digests.replace(
                c.shard(),
                c.id_hash,
                old_ref.map(|o| (o.owner(), o.revision)),
                new_ref.map(|n| (n.owner(), n.revision)),
            );
        }
        // A replacement moves the instance count by the difference, once, and not at all
        // when it is the same (a change of a held client's instance): no write to the
        // shared counter.
        match (old_ref, new_ref) {
            (Some(o), Some(n)) => {
                let delta = n.instance_count().wrapping_sub(o.instance_count());
                if delta != 0 {
                    self.instances.fetch_add(delta, Relaxed);
                }
            }
            (None, Some(n)) => {
                self.instances.fetch_add(n.instance_count(), Relaxed);
                self.clients.fetch_add(1, Relaxed);
            }
            (Some(o), None) => {
                self.instances.fetch_sub(o.instance_count(), Relaxed);
                self.clients.fetch_sub(1, Relaxed);
            }
            (None, None) => {}
        }
        match (clients.swap(old_ref, new), let_go) {
            (Some(table), Some(slot)) => retired.both(table, slot),
            (table, slot) => {
                if let Some(t) = table {
                    retired.one(t);
                }
                if let Some(s) = slot {
                    retired.one(s);
                }
            }
        }
    }

    /// The index changes of a client's publications `old` -> `new` (see
    /// [`Registry::replace`]): both lists are sorted by service, so one walk over the two
    /// pairs them up (the unchanged parts of a client publishing to many services are the
    /// same pointers and cost no comparison of names). What the slots let go of is
    /// retired on its own. Not inlined: the loop, inlined into `replace`, made the fast
    /// path of a client of one publication dearer.
    #[inline(never)]
    fn index_walk<'a>(
        &self,
        old: Option<&Arc<Client>>,
        new: Option<&Arc<Client>>,
        changed: &mut impl FnMut(&Service),
        pin: &'a Pin<'a>,
    ) {
        let len = |c: Option<&Arc<Client>>| c.map_or(0, |c| c.publications().len());
        let (old_len, new_len) = (len(old), len(new));
        let (mut i, mut j) = (0, 0);
        while i < old_len || j < new_len {
            let o_holder = old.filter(|_| i < old_len).map(|o| Client::holder(o, i));
            let n_holder = new.filter(|_| j < new_len).map(|n| Client::holder(n, j));
            let order = match (o_holder, n_holder) {
                (Some(o), Some(n)) if Arc::ptr_eq(o, n) => std::cmp::Ordering::Equal,
                (Some(o), Some(n)) => o.single().service.cmp(&n.single().service),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, _) => std::cmp::Ordering::Greater,
            };
            match (order, o_holder, n_holder) {
                (std::cmp::Ordering::Less, Some(o), _) => {
                    let p = o.single();
                    if let Some(u) = self.index_remove(&p.service, o.slot.load(Relaxed), pin) {
                        u.retire();
                    }
                    changed(&p.service);
                    i += 1;
                }
                (std::cmp::Ordering::Greater, _, Some(n)) => {
                    self.index_add(n, changed, pin);
                    j += 1;
                }
                (std::cmp::Ordering::Equal, Some(o), Some(n)) => {
                    if !Arc::ptr_eq(o, n)
                        && let Some(u) = self.index_move::<false>(o, n, changed, pin)
                    {
                        u.retire();
                    }
                    i += 1;
                    j += 1;
                }
                _ => unreachable!("an order without its publication"),
            }
        }
    }

    /// Takes a slot of its service's index for `n`, a client of one publication (or a
    /// part) new to it. Not inlined (an insert is rare next to a change), so that
    /// `replace` stays small around its fast path.
    #[inline(never)]
    fn index_add(&self, n: &Arc<Client>, changed: &mut impl FnMut(&Service), pin: &Pin<'_>) {
        changed(&n.single().service);
        // A slot new to the client holds nothing (a free slot was emptied when freed).
        let (slot, let_go) = self.index_insert(n.clone(), None, true, pin);
        if let Some(u) = let_go {
            u.retire();
        }
        n.slot.store(slot, Relaxed);
    }

    /// Moves the index slot of `o`, a client of one publication, to `n`, its new state
    /// (of the same service); returns what the slot let go of (`o`), to retire. Inlined
    /// into both callers (`replace`'s fast path, nearly every write, and the walk): a call
    /// cost ~35 a write.
    #[inline(always)]
    fn index_move<'a, const DIFFERS: bool>(
        &self,
        o: &Arc<Client>,
        n: &Arc<Client>,
        changed: &mut impl FnMut(&Service),
        pin: &'a Pin<'a>,
    ) -> Option<Unlinked<'a, Client>> {
        let (op, np) = (o.single(), n.single());
        debug_assert!(!DIFFERS || op.get() != np.get());
        let same = !DIFFERS && op.get() == np.get();
        if !same {
            changed(&np.service);
        }
        let (slot, let_go) = self.index_insert(n.clone(), Some(o.slot.load(Relaxed)), !same, pin);
        n.slot.store(slot, Relaxed);
        let_go
    }

    /// Every client's kind counted: `(connection, ip_port)`.
    pub fn kind_counts(&self) -> (usize, usize) {
        let mut c = (0, 0);
        self.for_each(|cl| match cl.kind() {
            ClientKind::Connection => c.0 += 1,
            ClientKind::IpPort => c.1 += 1,
        });
        c
    }
}
