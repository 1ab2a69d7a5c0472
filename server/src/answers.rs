//! Serialized answers, cached per service until the service changes.
//!
//! A read of a service (a Nacos `ServiceQueryRequest`, a subscribe answer, a push, a native
//! `Query`, an Open API `GET /nacos/v1/ns/instance/list`) renders the service's instances for one *form*: the encoding (Nacos JSON or
//! native protobuf), the cluster filter and the healthy-only flag. Rendering costs time in
//! proportion to the service's instances and allocates for every one of them; most reads
//! of a service find it unchanged since the last one. [`AnswerCache`] keeps the rendered
//! bytes of every form asked for since the service last changed and hands them out again.
//!
//! Freshness: the cache is a registry [`ChangeListener`], and every change of a service
//! (local write, replicated sync, removal of a client, expiry) bumps the service's
//! *generation* and drops its rendered forms, before the write that made the change is
//! answered. A reader that misses takes the generation, then reads the registry and
//! renders, and keeps its bytes only if the generation is still the same: a rendering that
//! may predate a change is never stored, so no read returns an answer older than a change
//! that completed before the read began. The two `SeqCst` fences (after a reader finds or
//! inserts the service's entry, before the listener looks it up) make sure that either the
//! listener finds the entry or the reader sees the change.
//!
//! Bounds: at most [`MAX_FORMS`] forms per service (others are rendered and not kept), and
//! entries only for services read since their last change (a change removes the entry).
//! A reader can also ask for services that never change (names that do not exist): so the
//! whole cache is dropped when it holds more than [`MAX_SERVICES`] services or more than
//! [`MAX_KEPT_BYTES`] of answers, and refills from the next reads.

use distro_core::Service;
use distro_core::registry::ChangeListener;
use parking_lot::Mutex;
use prost::bytes::Bytes;
use std::collections::hash_map::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

/// Most forms kept per service: readers asking for more distinct filters are answered
/// freshly rendered bytes that are not kept.
pub const MAX_FORMS: usize = 8;

/// Most services with an entry; one more empties the cache.
pub const MAX_SERVICES: usize = 100_000;

/// Most bytes of kept answers; more empties the cache.
pub const MAX_KEPT_BYTES: usize = 256 << 20;

/// The encoding of a cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Nacos `ServiceInfo` JSON up to and including `hosts` (see `nacos::view`).
    NacosJson,
    /// The same for the Open API's `instance/list`: `name` is `group@@name` and
    /// `cacheMillis` Nacos's default (see `api::http`).
    NacosOpenApi,
    /// A native `distro.v1.QueryResponse`.
    Native,
}

/// One form of a service's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form<'a> {
    /// The encoding.
    pub encoding: Encoding,
    /// The cluster filter, as the encoding spells it (exactly: no two filters that select
    /// differently may share a spelling).
    pub clusters: &'a str,
    /// Only healthy instances.
    pub healthy_only: bool,
}

struct Kept {
    encoding: Encoding,
    clusters: Box<str>,
    healthy_only: bool,
    bytes: Bytes,
}

impl Kept {
    fn is(&self, f: &Form<'_>) -> bool {
        self.encoding == f.encoding
            && self.healthy_only == f.healthy_only
            && *self.clusters == *f.clusters
    }
}

#[derive(Default)]
struct Slot {
    generation: u64,
    forms: Vec<Kept>,
    /// Bytes of `forms`.
    bytes: usize,
}

/// Rendered answers per service; see the module comment.
#[derive(Default)]
pub struct AnswerCache {
    services: papaya::HashMap<Arc<str>, Arc<Mutex<Slot>>>,
    /// At least the number of entries in `services`: counted before an entry is inserted,
    /// uncounted after one is removed. At 0 (nothing read since the last changes: a
    /// write-only phase) a change has nothing to drop and skips the map.
    entries: AtomicUsize,
    /// Bytes of every kept form (an estimate after a reset: a reader racing it may add
    /// bytes kept in an entry that was just dropped).
    kept_bytes: AtomicUsize,
}

/// How a read was answered (for tests and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From the cache.
    Hit,
    /// Rendered now (and kept when no change intervened).
    Rendered,
}

impl AnswerCache {
    /// A cache listening to `registry`'s changes.
    pub fn install(registry: &distro_core::Registry) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        registry.add_listener(cache.clone() as Arc<dyn ChangeListener>);
        cache
    }

    /// The bytes of `form` of service `key` (`Service::key_of`): kept ones, or `render`'s,
    /// which reads the registry only after this call took the generation.
    pub fn get(&self, key: &str, form: Form<'_>, render: impl FnOnce() -> Bytes) -> Bytes {
        self.get_counted(key, form, render).0
    }

    /// [`Self::get`], telling how the read was served.
    pub fn get_counted(
        &self,
        key: &str,
        form: Form<'_>,
        render: impl FnOnce() -> Bytes,
    ) -> (Bytes, Served) {
        let slot = {
            let services = self.services.pin();
            match services.get(key) {
                Some(s) => s.clone(),
                None => {
                    if services.len() >= MAX_SERVICES {
                        self.reset();
                    }
                    // Counted first: a change that does not see the count finds no entry.
                    self.entries.fetch_add(1, Ordering::SeqCst);
                    match services.try_insert_with(key.into(), Default::default) {
                        Ok(inserted) => inserted.clone(),
                        Err(present) => {
                            self.entries.fetch_sub(1, Ordering::Release);
                            present.clone()
                        }
                    }
                }
            }
        };
        let generation = {
            let s = slot.lock();
            if let Some(k) = s.forms.iter().find(|k| k.is(&form)) {
                return (k.bytes.clone(), Served::Hit);
            }
            s.generation
        };
        // Pairs with the listener's fence: either the listener finds this entry (and bumps
        // the generation after this read of it), or the registry read below sees the change.
        fence(Ordering::SeqCst);
        let bytes = render();
        let mut s = slot.lock();
        if s.generation == generation
            && s.forms.len() < MAX_FORMS
            && !s.forms.iter().any(|k| k.is(&form))
        {
            s.forms.push(Kept {
                encoding: form.encoding,
                clusters: form.clusters.into(),
                healthy_only: form.healthy_only,
                bytes: bytes.clone(),
            });
            s.bytes += bytes.len();
            let total = self.kept_bytes.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
            drop(s);
            if total > MAX_KEPT_BYTES {
                self.reset();
            }
        }
        (bytes, Served::Rendered)
    }

    /// Drops every entry (the cache is over one of its bounds).
    fn reset(&self) {
        let services = self.services.pin();
        for (key, slot) in services.iter() {
            self.remove(&services, key, slot);
        }
        self.kept_bytes.store(0, Ordering::Relaxed);
    }

    /// Removes `key`'s entry if it is still `slot`, uncounting it.
    fn remove<G: papaya::Guard>(
        &self,
        services: &papaya::HashMapRef<'_, Arc<str>, Arc<Mutex<Slot>>, RandomState, G>,
        key: &str,
        slot: &Arc<Mutex<Slot>>,
    ) {
        if let Ok(Some(_)) = services.remove_if(key, |_, v| Arc::ptr_eq(v, slot)) {
            // Release, paired with the Acquire in `invalidate`: a change that reads the
            // count this leaves also sees the removal (on x86 both are plain accesses).
            self.entries.fetch_sub(1, Ordering::Release);
        }
    }

    /// Bytes of kept answers (an estimate, see the field).
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes.load(Ordering::Relaxed)
    }

    /// Services with an entry.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no service has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a change of the service of key `key` does (the tests' way in).
    #[cfg(test)]
    fn invalidate(&self, key: &str) {
        if self.any_kept() {
            self.invalidate_kept(key);
        }
    }

    /// Whether any answer may be kept, asked after the change it follows is stored (the
    /// fence orders that store before this load). A change listener asks it before it
    /// reads the changed service's key, so a cache holding nothing costs no read of it.
    fn any_kept(&self) -> bool {
        fence(Ordering::SeqCst);
        // Acquire, paired with the Release of the decrements: at 0, every removal that
        // brought the count there is visible, so no entry is left behind unseen.
        self.entries.load(Ordering::Acquire) != 0
    }

    /// What a change of the service of key `key` does once [`AnswerCache::any_kept`] said
    /// yes.
    fn invalidate_kept(&self, key: &str) {
        let services = self.services.pin();
        if let Some(slot) = services.get(key) {
            let mut s = slot.lock();
            s.generation += 1;
            s.forms.clear();
            let freed = std::mem::take(&mut s.bytes);
            let _ = self
                .kept_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(freed))
                });
            // Out of the map while locked: a reader still holding this entry stores nothing
            // (the generation moved); the next reader inserts a fresh one.
            self.remove(&services, key, slot);
        }
    }
}

impl ChangeListener for AnswerCache {
    /// One fence and one question for the whole batch (its changes are all stored).
    fn services_changed(&self, services: &[Service]) {
        if self.any_kept() {
            for service in services {
                self.invalidate_kept(service.key().as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(clusters: &str) -> Form<'_> {
        Form {
            encoding: Encoding::NacosJson,
            clusters,
            healthy_only: false,
        }
    }

    #[test]
    fn kept_until_the_service_changes() {
        let c = AnswerCache::default();
        let (b, how) = c.get_counted("k", json(""), || Bytes::from_static(b"1"));
        assert_eq!((&b[..], how), (&b"1"[..], Served::Rendered));
        let (b, how) = c.get_counted("k", json(""), || Bytes::from_static(b"2"));
        assert_eq!((&b[..], how), (&b"1"[..], Served::Hit));
        // Another form is rendered on its own.
        let (b, _) = c.get_counted("k", json("a"), || Bytes::from_static(b"3"));
        assert_eq!(&b[..], b"3");
        c.invalidate("k");
        assert!(c.is_empty(), "a change removes the service's entry");
        let (b, how) = c.get_counted("k", json(""), || Bytes::from_static(b"4"));
        assert_eq!((&b[..], how), (&b"4"[..], Served::Rendered));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_changed_service_drops_its_answers_through_the_listener() {
        let c = AnswerCache::default();
        let interner = distro_core::name::Interner::default();
        let s1 = Service::new(&interner, "public", "G", "s1");
        let s2 = Service::new(&interner, "public", "G", "s2");
        // Nothing kept: the listener finds nothing to do (and reads no key).
        c.service_changed(&s1);
        assert!(!c.any_kept() && c.is_empty());
        let key = s1.key().as_str();
        c.get_counted(key, json(""), || Bytes::from_static(b"1"));
        assert!(c.any_kept());
        // Another service's change leaves it.
        c.service_changed(&s2);
        let (_, how) = c.get_counted(key, json(""), || Bytes::from_static(b"2"));
        assert_eq!(how, Served::Hit);
        c.service_changed(&s1);
        assert!(c.is_empty() && !c.any_kept(), "its own change drops it");
        // A batch's changes drop the answers of each service named, however often.
        let s3 = Service::new(&interner, "public", "G", "s3");
        for s in [&s1, &s2, &s3] {
            c.get_counted(s.key().as_str(), json(""), || Bytes::from_static(b"x"));
        }
        assert_eq!(c.len(), 3);
        c.services_changed(&[s1.clone(), s3, s1.clone()]);
        assert_eq!(c.len(), 1, "s2's answer stays");
        let (_, how) = c.get_counted(s2.key().as_str(), json(""), || Bytes::from_static(b"y"));
        assert_eq!(how, Served::Hit);
        c.services_changed(std::slice::from_ref(&s2));
        let (b, how) = c.get_counted(key, json(""), || Bytes::from_static(b"3"));
        assert_eq!((&b[..], how), (&b"3"[..], Served::Rendered));
    }

    #[test]
    fn the_entry_count_follows_the_map() {
        let c = AnswerCache::default();
        let count = |c: &AnswerCache| c.entries.load(Ordering::SeqCst);
        // A change with nothing read skips the map; nothing is counted.
        c.invalidate("k");
        assert_eq!((count(&c), c.len()), (0, 0));
        c.get("k", json(""), || Bytes::from_static(b"1"));
        c.get("k", json("a"), || Bytes::from_static(b"2"));
        c.get("j", json(""), || Bytes::from_static(b"3"));
        assert_eq!((count(&c), c.len()), (2, 2));
        c.invalidate("k");
        assert_eq!((count(&c), c.len()), (1, 1));
        // Still dropped when the count is not 0: the next read renders afresh.
        let (b, how) = c.get_counted("j", json(""), || Bytes::from_static(b"4"));
        assert_eq!((&b[..], how), (&b"3"[..], Served::Hit));
        c.invalidate("j");
        let (b, how) = c.get_counted("j", json(""), || Bytes::from_static(b"5"));
        assert_eq!((&b[..], how), (&b"5"[..], Served::Rendered));
        c.get("k", json(""), || Bytes::from_static(b"6"));
        assert_eq!((count(&c), c.len()), (2, 2));
        c.reset();
        assert_eq!((count(&c), c.len()), (0, 0));
    }

    #[test]
    fn a_rendering_overtaken_by_a_change_is_not_kept() {
        let c = AnswerCache::default();
        // The change lands while the reader renders.
        let (b, _) = c.get_counted("k", json(""), || {
            c.invalidate("k");
            Bytes::from_static(b"old")
        });
        assert_eq!(&b[..], b"old", "the reader itself gets what it read");
        let (b, how) = c.get_counted("k", json(""), || Bytes::from_static(b"new"));
        assert_eq!((&b[..], how), (&b"new"[..], Served::Rendered));
    }

    /// A writer registers instances one by one in a real registry, the cache listening;
    /// after each registration returns it publishes how many it made. Readers, racing it,
    /// note that count, then read through the cache: every answer must list at least that
    /// many instances (a read never returns an answer older than a change it follows).
    #[test]
    fn no_read_returns_an_answer_older_than_the_change_it_follows() {
        use distro_core::{ClientId, Config, InstanceSpec, MemberList, Node, ServiceSpec};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
        const WRITES: u64 = 2_000;
        let node = Node::new(
            Config::default(),
            MemberList::new("127.0.0.1:8848", &[]).unwrap(),
            1,
        )
        .unwrap();
        let cache = AnswerCache::install(node.registry());
        let spec = ServiceSpec::new("", "", "fresh");
        let key = Service::key_of("public", "DEFAULT_GROUP", "fresh");
        let done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let (reads, hits) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for reader in 0..3 {
                let (node, cache, key, done, stop) = (&node, &cache, &key, &done, &stop);
                let (reads, hits) = (&reads, &hits);
                s.spawn(move || {
                    let form = Form {
                        encoding: if reader % 2 == 0 {
                            Encoding::NacosJson
                        } else {
                            Encoding::Native
                        },
                        clusters: "",
                        healthy_only: reader == 2,
                    };
                    while !stop.load(SeqCst) {
                        let before = done.load(SeqCst);
                        let (bytes, how) = cache.get_counted(key, form, || {
                            let n = node
                                .registry()
                                .query("public", "DEFAULT_GROUP", "fresh")
                                .map_or(0, |v| v.instance_count() as u64);
                            Bytes::copy_from_slice(&n.to_le_bytes())
                        });
                        let seen = u64::from_le_bytes(bytes[..].try_into().unwrap());
                        assert!(
                            seen >= before,
                            "reader {reader} got an answer of {seen} instances ({how:?}) \
                             after the registration of the {before}th returned"
                        );
                        reads.fetch_add(1, SeqCst);
                        if how == Served::Hit {
                            hits.fetch_add(1, SeqCst);
                        }
                    }
                });
            }
            for i in 1..=WRITES {
                let c = ClientId::connection(1, "10.0.0.1", i as u16);
                let port = u16::try_from(i).unwrap();
                node.register(&c, &spec, &InstanceSpec::new("10.0.0.2", port), i)
                    .unwrap();
                done.store(i, SeqCst);
            }
            stop.store(true, SeqCst);
        });
        let (reads, hits) = (reads.load(SeqCst), hits.load(SeqCst));
        eprintln!("{reads} reads, {hits} from the cache");
        assert!(reads > 0);
    }

    #[test]
    fn forms_per_service_are_bounded() {
        let c = AnswerCache::default();
        let names: Vec<String> = (0..MAX_FORMS + 3).map(|i| i.to_string()).collect();
        for n in &names {
            c.get("k", json(n), || Bytes::from_static(b"x"));
        }
        let last = names.last().unwrap();
        let (_, how) = c.get_counted("k", json(last), || Bytes::from_static(b"x"));
        assert_eq!(how, Served::Rendered);
        let (_, how) = c.get_counted("k", json(&names[0]), || Bytes::from_static(b"x"));
        assert_eq!(how, Served::Hit);
    }

    /// A reader asking for ever new services (names that never change, so no change ever
    /// drops their entries) cannot grow the cache past its bounds.
    #[test]
    fn reads_of_ever_new_services_stay_within_the_bounds() {
        let c = AnswerCache::default();
        for i in 0..(MAX_SERVICES + 10) {
            c.get(&format!("no-such-service-{i}"), json(""), || {
                Bytes::from_static(b"{}")
            });
            assert!(c.len() <= MAX_SERVICES, "{} entries at read {i}", c.len());
        }
        assert!(c.len() < MAX_SERVICES, "the cache was emptied once full");
        // Answers that add up past the byte bound empty it too.
        let big = Bytes::from(vec![b'x'; MAX_KEPT_BYTES / 4 + 1]);
        for i in 0..4 {
            c.get(&format!("big-{i}"), json(""), || big.clone());
        }
        assert!(c.kept_bytes() <= MAX_KEPT_BYTES, "{}", c.kept_bytes());
        // An invalidation gives its bytes back.
        let c = AnswerCache::default();
        c.get("k", json(""), || Bytes::from_static(b"12345"));
        assert_eq!(c.kept_bytes(), 5);
        c.invalidate("k");
        assert_eq!(c.kept_bytes(), 0);
    }
}
