//! The per-service index: the publications of every client that publishes to a service,
//! so a query costs time in proportion to that service's instances, not the registry's.
//!
//! Each service has a [`ServiceIndex`], an array of slots, one per publishing client. The
//! store keeps it in step with the clients (`Registry::replace`, in `registry.rs`, calls
//! `index_insert` and `index_remove` under the client's shard lock): readers iterate the
//! slots without a lock, writers take or return a slot under the service's free-list
//! mutex. Listeners ([`ChangeListener`]) hear of every change after it is visible.
//! Indexes left empty are collected after a while.

use super::{Client, NO_SLOT, Registry};
use crate::model::{Instance, Publication, Service, WeakService};
use crate::name::short_eq;
use crate::time::Millis;
use arc_slots::{Pin, Slots, Unlinked};
use parking_lot::{Mutex, RwLock};
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// The publications of one service: an array of slots, one per publishing client.
///
/// Readers iterate the slots without a lock (an append-only [`Slots`] array, whose
/// replaced publications the registry's `slots` reclaimer frees once no reader can see
/// them); writers hold the service's free-list mutex only to take or return a
/// slot, and every client remembers its slot in each service, so an update is one atomic
/// store. A slot costs 8 bytes (about 8 more held ahead at worst), a fraction of a
/// hash-map entry.
///
/// Laid out in the order written (`repr(C)`): everything a write writes here (`free`'s
/// lock, `live`, `revision`, after the `Arc`'s two counts: 64 bytes, the first cache line
/// of the allocation, which mimalloc aligns to 64 bytes for this size), then what it reads
/// (`registry`, `gone`, then the slots' length and first chunks), not spread over ten
/// lines by the compiler's order (the 640-byte `slots` between them): in a million-client
/// burst each of those lines is a miss of its own. The index kept an instance count
/// until the twenty-ninth session, read only by the collector's first test of emptiness
/// (which `live` answers) and written with a locked add by every change; gone. The first
/// locked instruction after a new slot's stores (the slot, the slots' length) waits for
/// their lines, ~3.5 % of the burst's samples (on the count's add before, on the
/// revision's now). Not for the other core's writes: two lanes, the node's own clients'
/// slots and counters apart from the replicas', each on lines of its own, left that wait
/// as it was and cost a miss more (README, "Locked instructions"); the burst's million
/// clients evict a service's lines between two of its writes.
#[repr(C)]
pub struct ServiceIndex {
    /// The free slots; writers that take a slot or give one back hold it (and with it
    /// settle `gone`, and write `live`).
    free: Mutex<Vec<u32>>,
    /// Slots in use: written only under `free`'s lock (a load and a store), read without.
    live: AtomicUsize,
    revision: AtomicU64,
    /// The registry holding it (see `Registry::id`): a service may be shared between
    /// registries of one process (the simulator's nodes), its cached index is one of them.
    registry: u64,
    /// Writers that change a slot they hold in an index they looked up (not the one
    /// their service caches) hold it shared; the empty-service collector holds it
    /// exclusively, and `free` too, while it removes the index from the map and sets
    /// `gone`.
    retired: RwLock<()>,
    /// Whether the collector retired this index: set under `retired`'s exclusive lock
    /// and `free`'s, read under `free` by writers that take a slot, under `retired`'s
    /// shared lock by a writer that changes a slot it holds in an index it looked up, and
    /// without either by one that changes a slot of its service's cached index: an index
    /// with a slot in use has a live publication,
    /// so the collector cannot retire it meanwhile, and the one index of a service that
    /// is not retired is the one holding that slot.
    gone: AtomicBool,
    empty_since: AtomicU64,
    service: Service,
    /// The holders of the publications: clients of one publication (a client itself, or
    /// a part of a client of several; see `client.rs`).
    slots: Slots<Client>,
}

// What a write writes fits the allocation's first line beside the `Arc`'s two counts.
const _: () = assert!(std::mem::offset_of!(ServiceIndex, revision) + 8 <= 64 - 16);

impl ServiceIndex {
    fn new(registry: u64, service: Service, reclaimer: &arc_slots::Reclaimer) -> Self {
        Self {
            registry,
            service,
            slots: Slots::new(reclaimer),
            free: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            revision: AtomicU64::new(0),
            retired: RwLock::new(()),
            gone: AtomicBool::new(false),
            empty_since: AtomicU64::new(0),
        }
    }
}

/// The key of the registry's map of services: the index's own [`Service`] (the one
/// [`Registry::find_service`] hands out), hashed part by part, so that a name is looked up
/// by its parts ([`Parts`]) without joining them into the service's key first.
#[derive(Clone)]
pub(crate) struct ServiceKey(Service);

/// The parts `namespace`, `group`, `name` of a service's name, resolved (defaults applied,
/// `@@` split): what the map of services is looked up by.
#[derive(Clone, Copy)]
struct Parts<'a>(&'a str, &'a str, &'a str);

impl<'a> Parts<'a> {
    fn of(service: &'a Service) -> Self {
        Parts(service.namespace(), service.group(), service.name())
    }
}

/// The one hash of a service's name, from its parts (each written on its own: a map key
/// and a lookup hash the same parts the same way; the hasher's `write` is not streaming,
/// so a key joined from the parts would hash differently).
#[inline]
fn hash_parts<H: Hasher>(state: &mut H, namespace: &str, group: &str, name: &str) {
    state.write(name.as_bytes());
    state.write(group.as_bytes());
    state.write(namespace.as_bytes());
}

impl Hash for ServiceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, self.0.namespace(), self.0.group(), self.0.name())
    }
}

impl Hash for Parts<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, self.0, self.1, self.2)
    }
}

/// The parts of one key equal (the hash's notion of equality: two services of equal
/// parts are the same service).
impl PartialEq for ServiceKey {
    fn eq(&self, other: &Self) -> bool {
        papaya::Equivalent::equivalent(&Parts::of(&self.0), other)
    }
}
impl Eq for ServiceKey {}

impl papaya::Equivalent<ServiceKey> for Parts<'_> {
    #[inline]
    fn equivalent(&self, key: &ServiceKey) -> bool {
        self.are(&key.0)
    }
}

impl Parts<'_> {
    /// Whether these are `s`'s parts: `Service::is`, inlined (a call cost ~30 a lookup);
    /// the name first, which differs most often.
    #[inline(always)]
    fn are(self, s: &Service) -> bool {
        short_eq(s.name(), self.2) && short_eq(s.group(), self.1) && short_eq(s.namespace(), self.0)
    }
}

/// How many services each thread's memo of [`Registry::find_service`] holds (a power of
/// two): 4,096 (128 KiB a thread, 32 bytes an entry). Of 1,000 services written at once (the 1 M burst's), a
/// name shares its slot with another in ~22 % of cases at 4,096 slots against ~62 % at
/// 1,024, and two names that share a slot take it from each other: with the names asked
/// for at random, 34 % of lookups miss the memo at 1,024 slots and 11 % at 4,096 (a
/// simulation of 1,000 random slots; at 1,024 the map lookups of the misses were a third
/// of `find_service`'s 5.8 % of the burst's samples).
const MEMO_SLOTS: usize = 1 << 12;

thread_local! {
    /// The services this thread's [`Registry::find_service`] found lately, each in the slot
    /// [`memo_slot`] picks for its parts (the last found takes a slot): a burst of new
    /// clients into many services finds a held name without hashing its three parts,
    /// pinning and probing the map (~330 instructions). An entry is only a candidate,
    /// taken if it has the parts asked for and is still the key of the asking registry's
    /// live index of them (see [`Memo`]): an entry of another registry is not taken, and
    /// a service its registry collected is not answered. An entry does not keep its
    /// service alive (a collected service's names are reclaimed as without the memo):
    /// only the service's allocation stays until the entry is replaced, at most
    /// `MEMO_SLOTS` per thread.
    static FOUND: RefCell<Vec<Memo>> = const { RefCell::new(Vec::new()) };
}

/// An entry of [`FOUND`]: a service found by [`Registry::find_service`], with the registry
/// it was found in and that registry's count of retired indexes before the lookup. While
/// the count has not moved, the service is still the key of that registry's live index of
/// its name (a map key stops being one only when the collector retires its index and
/// removes it, and counts that after the removal; between the two a hit may still answer
/// the retired service, as the check it replaced could between `gone` and the removal,
/// and a write into it finds `gone` set under the index's lock and looks again). So a hit
/// is answered without the index, whose first line the registry's writers on other threads
/// keep changing (upgrading its weak reference and dropping it again were two locked
/// instructions on that line, and `find_service` ~6 % of the 1 M burst's samples).
#[derive(Default)]
struct Memo {
    service: WeakService,
    /// Where the service's cached index sat when the entry was made
    /// ([`Service::index_address`]): for [`Registry::prefetch_found`]'s hint only, never
    /// read through.
    index_at: usize,
    registry: u64,
    retired: u64,
}

/// The slot of [`FOUND`] for a name's parts: from the name's first and last eight bytes
/// and the three lengths (a cheap pick, not a hash of the whole text: two names that
/// share a slot only take it from each other).
#[inline(always)]
fn memo_slot(namespace: &str, group: &str, name: &str) -> usize {
    let b = name.as_bytes();
    let n = b.len();
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let w = if n >= 8 {
        word(0) ^ word(n - 8).rotate_left(29)
    } else {
        let mut t = [0u8; 8];
        crate::compact_form::copy_short(&mut t, b);
        u64::from_le_bytes(t)
    };
    let lens = (n as u64) << 56 ^ (group.len() as u64) << 48 ^ (namespace.len() as u64) << 40;
    ((w ^ lens).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - MEMO_SLOTS.trailing_zeros())) as usize
}

/// The slot of this thread's memo that [`Registry::find_service`] reads for a service's
/// parts as received (defaults and `@@` applied as a write applies them), if they split:
/// computed once for a write's two hints ([`Registry::prefetch_memo`],
/// [`Registry::prefetch_found`]).
#[inline]
pub(super) fn memo_slot_of(namespace: &str, group: &str, name: &str) -> Option<usize> {
    let (ns, group, name) = crate::model::ServiceSpec::split_parts(namespace, group, name).ok()?;
    Some(memo_slot(ns, group, name))
}

/// `f` of this thread's memo entry in slot `at` ([`memo_slot_of`]), if the memo is there
/// and not borrowed.
#[inline(always)]
fn memo_entry(at: usize, f: impl FnOnce(&Memo)) {
    let _ = FOUND.try_with(|m| {
        if let Ok(m) = m.try_borrow()
            && let Some(e) = m.get(at)
        {
            f(e);
        }
    });
}

/// [`Registry::find_service`] in a pinned map.
#[inline]
fn find_in(services: &Services<'_>, namespace: &str, group: &str, name: &str) -> Option<Service> {
    services
        .get_key_value(&Parts(namespace, group, name))
        .map(|(key, _)| key.0.clone())
}

/// The registry's map of services, pinned.
type Services<'r> =
    papaya::HashMapRef<'r, ServiceKey, Arc<ServiceIndex>, super::FastHash, seize::LocalGuard<'r>>;

/// Resolves the names of services as [`Registry::resolve_service`] does, under one pin
/// of the registry's map of services (entering and leaving a pin costs each lookup two
/// fences and a tenth of its instructions). Hold it for a batch, not longer: what the
/// map lets go of meanwhile is freed only after.
pub struct ServiceResolver<'r> {
    registry: &'r Registry,
    services: Services<'r>,
}

impl ServiceResolver<'_> {
    /// [`Registry::resolve_service`].
    pub fn resolve(
        &self,
        namespace: &str,
        group: &str,
        name: &str,
    ) -> Result<Service, crate::ValidationError> {
        let (ns, group, name) = crate::model::ServiceSpec::split_parts(namespace, group, name)?;
        if let Some(s) = find_in(&self.services, ns, group, name) {
            return Ok(s);
        }
        self.registry.resolve_split(ns, group, name)
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
    pub publications: Vec<PublicationRef>,
}

/// A publication as a service's index holds it: shared with the stored client (it sits
/// in the client, or in a part of it). Dereferences to the publication.
#[derive(Clone)]
pub struct PublicationRef(Arc<Client>);

impl PublicationRef {
    /// The publication.
    #[inline]
    pub fn publication(&self) -> &Publication {
        self.0.single()
    }
}

impl std::ops::Deref for PublicationRef {
    type Target = Publication;
    #[inline]
    fn deref(&self) -> &Publication {
        self.0.single()
    }
}

impl std::fmt::Debug for PublicationRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.publication(), f)
    }
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
    /// Every service of `services` changed: one write's, or one replicated batch's (a
    /// service there once per changed client, so often more than once). A listener that
    /// asks a question or takes a lock before it looks at a service does so once a call
    /// (a locked instruction or a fence each waits for the batch's stores that miss the
    /// cache: once a change, they were a visible part of a replica's apply).
    fn services_changed(&self, services: &[Service]);

    /// `service`'s publications changed: [`ChangeListener::services_changed`] of it alone.
    fn service_changed(&self, service: &Service) {
        self.services_changed(std::slice::from_ref(service));
    }
}

impl Registry {
    /// Adds a listener told about every service change (after the change is visible).
    pub fn add_listener(&self, listener: Arc<dyn ChangeListener>) {
        self.listeners.write().push(listener);
        self.has_listener.store(true, Relaxed);
    }

    /// The canonical [`Service`] of resolved parts, if the registry holds it (every
    /// service it holds was validated when first stored). Looked up by the parts (see
    /// `ServiceKey`); the service handed out is the map's key, the index's own.
    ///
    /// A service found lately by this thread is answered from its memo (`FOUND`) if it
    /// still is that key.
    pub fn find_service(&self, namespace: &str, group: &str, name: &str) -> Option<Service> {
        let at = memo_slot(namespace, group, name);
        // Read before the lookup below: a retirement after this read moves the count, so
        // an entry made from the lookup is not taken again after it.
        let retired = self
            .services_retired
            .load(std::sync::atomic::Ordering::Acquire);
        let hit = FOUND.try_with(|m| {
            let m = m.borrow();
            let e = m.get(at)?;
            if e.registry != self.id || e.retired != retired {
                return None;
            }
            let s = e.service.upgrade()?;
            Parts(namespace, group, name).are(&s).then_some(s)
        });
        if let Ok(Some(s)) = hit {
            return Some(s);
        }
        let found = find_in(&self.services.pin(), namespace, group, name)?;
        let memo = Memo {
            service: found.downgrade(),
            index_at: found.index_address(),
            registry: self.id,
            retired,
        };
        // What the slot held is dropped after the borrow ends.
        let _old = FOUND.try_with(|m| {
            let mut m = m.borrow_mut();
            if m.is_empty() {
                m.resize_with(MEMO_SLOTS, Memo::default);
            }
            std::mem::replace(&mut m[at], memo)
        });
        Some(found)
    }

    /// The first of two hints for a write into a service, two writes ahead: asks for the
    /// line of this thread's memo entry in slot `at` ([`memo_slot_of`] of its parts), which
    /// [`Registry::find_service`] will read. Reads nothing else.
    #[inline]
    pub(super) fn prefetch_memo(&self, at: usize) {
        memo_entry(at, |e| arc_slots::prefetch(e));
    }

    /// The second hint, a write ahead: reads the memo entry [`Registry::prefetch_memo`]
    /// asked for and, if it is this registry's, asks for the lines of the service it names
    /// and of its index that the write reads first (see `WeakService::prefetch_with`):
    /// from the addresses the entry keeps, so it reads through neither (an entry whose
    /// service was dropped since only costs a useless hint).
    #[inline]
    pub(super) fn prefetch_found(&self, at: usize) {
        memo_entry(at, |e| {
            if e.registry == self.id {
                e.service.prefetch_with(e.index_at);
            }
        });
    }

    /// Asks for the line of the slot a new publication of `service` would take in its
    /// index (the cached one, if live), ahead of the write that takes it: an owner's
    /// write of a new client asks while it builds the client. Takes and lets go of a
    /// reference to the index (its first line asked for a write before, see
    /// [`Registry::prefetch_found`]). Changes nothing.
    #[inline]
    pub(crate) fn prefetch_new_slot(&self, service: &Service) {
        if let Some(idx) = self.live_index(service) {
            idx.slots.prefetch_push();
        }
    }

    /// A [`ServiceResolver`]: [`Registry::resolve_service`] for many names (a decoded
    /// batch's table of services) under one pin of the map.
    pub fn service_resolver(&self) -> ServiceResolver<'_> {
        ServiceResolver {
            registry: self,
            services: self.services.pin(),
        }
    }

    /// The canonical [`Service`] of a name's parts as received (from a peer): the defaults
    /// and the `group@@name` rule applied, then looked up; the checks of each part (which
    /// cost more than the lookup) run only for a name the registry does not hold yet (a
    /// held name was checked when first stored). The answer, error or not, is
    /// [`crate::model::ServiceSpec::resolve_parts`]'s.
    pub fn resolve_service(
        &self,
        namespace: &str,
        group: &str,
        name: &str,
    ) -> Result<Service, crate::ValidationError> {
        let (ns, group, name) = crate::model::ServiceSpec::split_parts(namespace, group, name)?;
        self.resolve_split(ns, group, name)
    }

    /// [`Registry::resolve_service`] of parts already split (defaults applied, `@@`
    /// resolved): looked up, checked only when not held.
    pub fn resolve_split(
        &self,
        ns: &str,
        group: &str,
        name: &str,
    ) -> Result<Service, crate::ValidationError> {
        if let Some(s) = self.find_service(ns, group, name) {
            return Ok(s);
        }
        crate::model::ServiceSpec::check_parts(ns, group, name)?;
        Ok(self.service(ns, group, name))
    }

    /// The canonical [`Service`] for validated parts, shared with the index.
    pub fn service(&self, namespace: &str, group: &str, name: &str) -> Service {
        if let Some(s) = self.find_service(namespace, group, name) {
            return s;
        }
        let services = self.services.pin();
        let service = Service::new(&self.interner, namespace, group, name);
        let idx = services.get_or_insert_with(ServiceKey(service.clone()), || {
            let idx = ServiceIndex::new(self.id, service, &self.slots);
            idx.empty_since.store(0, Relaxed);
            Arc::new(idx)
        });
        // The service handed out finds its index without a lookup (see `index_insert`).
        idx.service.cache_index(idx);
        idx.service.clone()
    }

    /// The publications of a service.
    pub fn query(&self, namespace: &str, group: &str, name: &str) -> Option<ServiceView> {
        let idx = self
            .services
            .pin()
            .get(&Parts(namespace, group, name))
            .cloned()?;
        let mut publications = Vec::with_capacity(idx.live.load(Relaxed));
        idx.slots
            .collect_map_into(&mut publications, PublicationRef, &self.slots.pin());
        // Slot order: stable, roughly registration order (slots are reused).
        Some(ServiceView {
            service: idx.service.clone(),
            revision: idx.revision.load(Relaxed),
            publications,
        })
    }

    /// Whether `service` has at least one publication: read from the index it cached
    /// when that is this registry's and not retired (the one index of the service in the
    /// map then), looked up by its parts otherwise.
    pub(super) fn service_is_live(&self, service: &Service) -> bool {
        let live = |idx: &ServiceIndex| idx.live.load(Relaxed) > 0;
        match self.live_index(service) {
            Some(idx) => live(&idx),
            None => self.mapped_index(service).is_some_and(|idx| live(&idx)),
        }
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

    /// `service` to name a new index of this registry: itself unless it caches an index
    /// it cannot cache the new one in place of (another registry's, from a publication
    /// applied from another node of the process in the simulator; or a retired one of
    /// this registry's, from a service resolved before it was collected), then a copy,
    /// so that the services the map hands out (the index's) cache their own index: a
    /// key caching a retired index would send every write of the service down the slow
    /// path until it is collected again.
    fn own_service(&self, service: &Service) -> Service {
        let ours = !service.has_cached_index() || self.live_index(service).is_some();
        if ours {
            service.clone()
        } else {
            Service::new(
                &self.interner,
                service.namespace(),
                service.group(),
                service.name(),
            )
        }
    }

    /// The index `service` cached, if it is one of this registry's (it may be retired).
    #[inline]
    fn cached_index(&self, service: &Service) -> Option<Arc<ServiceIndex>> {
        service.cached_index().filter(|idx| idx.registry == self.id)
    }

    /// Stores `holder` (a client of one publication) in its service's index, in `slot` if
    /// the client already had one there; returns the slot and what it held before (to
    /// retire). `changed` tells whether the publication differs from the one replaced (the
    /// service's revision moves then). `pin` is the caller's pin of the registry's
    /// reclaimer (its shard writer's).
    ///
    /// Inlined: a slot held in the index the service caches (nearly every change) is
    /// changed in line, the rest out of line ([`Registry::index_insert_slow`]).
    #[inline(always)]
    pub(super) fn index_insert<'a>(
        &self,
        holder: Arc<Client>,
        slot: Option<u32>,
        changed: bool,
        pin: &'a Pin<'a>,
    ) -> (u32, Option<Unlinked<'a, Client>>) {
        let p = holder.single();
        // A slot held: it is in the service's one index that is not retired, which
        // cannot be retired while the slot is in use (see `ServiceIndex::gone`).
        if let Some(s) = slot.filter(|s| *s != NO_SLOT)
            && let Some(idx) = self.live_index(&p.service)
        {
            let let_go = idx.slots.exchange(s as usize, Some(holder), pin);
            if changed {
                Self::count_change(&idx);
            }
            return (s, let_go);
        }
        self.index_insert_slow(holder, slot, changed, pin)
    }

    /// [`Registry::index_insert`] of a client without a slot, or whose service's index
    /// is not cached (or retired): the index found or made, a slot taken.
    #[inline(never)]
    fn index_insert_slow<'a>(
        &self,
        holder: Arc<Client>,
        slot: Option<u32>,
        changed: bool,
        pin: &'a Pin<'a>,
    ) -> (u32, Option<Unlinked<'a, Client>>) {
        let p = holder.single();
        let mut cached = self.cached_index(&p.service);
        loop {
            let idx = match cached.take() {
                Some(idx) => idx,
                None => self.index_of(&p.service),
            };
            let (slot, let_go) = match slot.filter(|s| *s != NO_SLOT) {
                Some(s) => {
                    let _shared = idx.retired.read();
                    if idx.gone.load(std::sync::atomic::Ordering::Relaxed) {
                        // The collector removed this index after we found it; look it
                        // up again.
                        continue;
                    }
                    (s, idx.slots.exchange(s as usize, Some(holder), pin))
                }
                None => {
                    // The collector retires an index holding its free list's lock too, so
                    // under it `gone` is settled: no lock of `retired` here (two locked
                    // instructions fewer for every new slot, each waiting for the write's
                    // stores before it).
                    let mut free = idx.free.lock();
                    if idx.gone.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    let (s, let_go) = match free.pop() {
                        Some(s) => (s, idx.slots.exchange(s as usize, Some(holder), pin)),
                        None => (idx.slots.push(holder, pin), None),
                    };
                    // Under the free-list lock, so the namespace's count sees this
                    // service fill and empty in order. `live` is written only under it:
                    // a load and a store, not a locked add.
                    let live = idx.live.load(Relaxed);
                    idx.live.store(live + 1, Relaxed);
                    if live == 0 {
                        let mut counts = self.namespace_services.lock();
                        *counts.entry(idx.service.namespace().clone()).or_insert(0) += 1;
                        // Written only under the counts' lock: a load and a store.
                        let all = self.live_services.load(Relaxed);
                        self.live_services.store(all + 1, Relaxed);
                    }
                    drop(free);
                    (s, let_go)
                }
            };
            if changed {
                Self::count_change(&idx);
            }
            return (slot, let_go);
        }
    }

    /// The index of `service` in the map (made if there is none), cached in `service` if
    /// it caches none yet: for a write whose service did not cache this registry's index,
    /// or cached one since retired.
    #[cold]
    #[inline(never)]
    fn index_of(&self, service: &Service) -> Arc<ServiceIndex> {
        let services = self.services.pin();
        // Held: no copy of the service is needed (nor built).
        let idx = match services.get(&Parts::of(service)) {
            Some(idx) => idx.clone(),
            None => {
                // The key is the index's service (see `ServiceKey`).
                let own = self.own_service(service);
                services
                    .get_or_insert_with(ServiceKey(own.clone()), || {
                        Arc::new(ServiceIndex::new(self.id, own, &self.slots))
                    })
                    .clone()
            }
        };
        idx.service.cache_index(&idx);
        service.cache_index(&idx);
        idx
    }

    /// The index of `service` in the map, if any (for a service that cached none of this
    /// registry's, or a retired one). Not inlined: the walk over a client's publications
    /// inlines its callers.
    #[cold]
    #[inline(never)]
    fn mapped_index(&self, service: &Service) -> Option<Arc<ServiceIndex>> {
        self.services.pin().get(&Parts::of(service)).cloned()
    }

    /// The index `service` cached if it is this registry's and not retired: for a writer
    /// that holds a slot in the service's index, the index holding it.
    #[inline]
    fn live_index(&self, service: &Service) -> Option<Arc<ServiceIndex>> {
        self.cached_index(service)
            .filter(|idx| !idx.gone.load(std::sync::atomic::Ordering::Acquire))
    }

    /// A publication changed: the service's revision moves.
    #[inline]
    fn count_change(idx: &ServiceIndex) {
        idx.revision.fetch_add(1, Relaxed);
    }

    /// Frees `slot` of `service`'s index (a publication went away); returns what it held
    /// (to retire). `pin` is the caller's pin of the registry's reclaimer.
    pub(super) fn index_remove<'a>(
        &self,
        service: &Service,
        slot: u32,
        pin: &'a Pin<'a>,
    ) -> Option<Unlinked<'a, Client>> {
        // The slot is in the service's index that is not retired (one holding a slot in
        // use is not: it has a live publication, and cannot be retired while it has; see
        // `ServiceIndex::gone`), the cached one unless that was retired.
        let idx = self
            .live_index(service)
            .or_else(|| self.mapped_index(service));
        let idx = idx?;
        let let_go = idx.slots.exchange(slot as usize, None, pin);
        if let_go.is_some() {
            let mut free = idx.free.lock();
            free.push(slot);
            // `live` is written only under the free list's lock.
            let live = idx.live.load(Relaxed);
            idx.live.store(live - 1, Relaxed);
            if live == 1 {
                let mut counts = self.namespace_services.lock();
                let ns = idx.service.namespace().as_str();
                if let Some(n) = counts.get_mut(ns) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(ns);
                    }
                    let all = self.live_services.load(Relaxed);
                    self.live_services.store(all - 1, Relaxed);
                }
            }
            drop(free);
            idx.revision.fetch_add(1, Relaxed);
        }
        let_go
    }

    /// Tells the listeners about `changed` services. Inlined: without a listener nothing
    /// was collected (see `Registry::replace`), and a write then pays only the check, not
    /// a call.
    #[inline]
    pub(super) fn notify(&self, changed: &[Service]) {
        if changed.is_empty() || !self.has_listener.load(Relaxed) {
            return;
        }
        self.notify_listeners(changed);
    }

    fn notify_listeners(&self, changed: &[Service]) {
        for l in self.listeners.read().iter() {
            l.services_changed(changed);
        }
    }

    /// Removes service indexes that have been empty for at least `min_age`; returns how many.
    pub fn collect_empty_services(&self, now: Millis, min_age: Millis) -> usize {
        let services = self.services.pin();
        let mut removed = 0;
        for (key, idx) in services.iter() {
            if idx.live.load(Relaxed) != 0 {
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
            // Both locks: a writer changing a slot it holds in an index it looked up
            // holds `retired` shared, one taking a new slot holds the free list's.
            let _exclusive = idx.retired.write();
            let _free = idx.free.lock();
            if idx.live.load(Relaxed) == 0 {
                idx.gone.store(true, std::sync::atomic::Ordering::Release);
                services.remove(key);
                // After the removal: a `find_service` that reads the new count finds the
                // map without the key (see `Memo`).
                self.services_retired
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests;
