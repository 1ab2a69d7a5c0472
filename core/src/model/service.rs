//! Services: the interned, validated form ([`Service`]) and the form a request names
//! ([`ServiceSpec`]), with the defaults and the `group@@name` rule that resolve one into
//! the other.

use super::{DEFAULT_GROUP, DEFAULT_NAMESPACE, GROUP_SEPARATOR};
use crate::error::{Field, ValidationError};
use crate::limits::*;
use crate::name::{Interner, Name, short_eq};
use crate::registry::ServiceIndex;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, Weak};

/// The byte between the parts of a service's key (it cannot occur in a valid name).
const SEPARATOR: u8 = 0x1f;

/// A service: namespace, group and name, interned. Cheap to clone (one pointer).
#[derive(Clone)]
pub struct Service(Arc<ServiceInner>);

struct ServiceInner {
    key: Name,
    /// [`crate::hash::stable_hash64`] of `key`'s bytes (see [`Service::key_hash`]).
    key_hash: u64,
    namespace: Name,
    group: Name,
    name: Name,
    /// The registry's index of this service, set by the registry when it makes the
    /// service or first stores a publication of it: a write finds the index without
    /// looking the name up. Set once: a service that caches a retired index is not the
    /// key of its name's next index (see `Registry::own_service`).
    index: OnceLock<Weak<ServiceIndex>>,
}

impl Service {
    /// Builds a service from validated parts (see [`ServiceSpec::resolve`]).
    pub fn new(interner: &Interner, namespace: &str, group: &str, name: &str) -> Self {
        let key = Self::key_of(namespace, group, name);
        Service(Arc::new(ServiceInner {
            key_hash: Self::hash_of_key(&key),
            key: Name::new(&key),
            namespace: interner.intern(namespace),
            group: interner.intern(group),
            name: interner.intern(name),
            index: OnceLock::new(),
        }))
    }

    /// The index the registry keeps for this service, if it set one and it is still held
    /// (the registry checks that it is still in use: an emptied index may be retired).
    #[inline]
    pub(crate) fn cached_index(&self) -> Option<Arc<ServiceIndex>> {
        self.0.index.get()?.upgrade()
    }

    /// Asks the processor to fetch the first two lines of the index cached here, if any (its
    /// `Arc`'s counts and the fields a write that takes a slot touches first: see
    /// `ServiceIndex`), ahead of a write into it. Reads no more than the cache's pointer
    /// (the hint needs no live index: it reads nothing through the address).
    #[inline]
    pub(crate) fn prefetch_index(&self) {
        if let Some(w) = self.0.index.get() {
            prefetch_index_at(w.as_ptr());
        }
    }

    /// Where this service's cached index sits (`0` for none), for hints that ask for its
    /// lines without reading through it (see `Registry::prefetch_found`): an address, not
    /// a reference.
    #[inline]
    pub(crate) fn index_address(&self) -> usize {
        self.0.index.get().map_or(0, |w| w.as_ptr().addr())
    }

    /// Whether a registry cached its index here (even one since dropped).
    pub(crate) fn has_cached_index(&self) -> bool {
        self.0.index.get().is_some()
    }

    /// Remembers `index` as this service's (only the first time: a service whose index
    /// was retired and replaced finds the new one by its key).
    pub(crate) fn cache_index(&self, index: &Arc<ServiceIndex>) {
        let _ = self.0.index.set(Arc::downgrade(index));
    }

    /// The map key of a service: `namespace \x1f group \x1f name` (the separator cannot
    /// occur in a valid name).
    pub fn key_of(namespace: &str, group: &str, name: &str) -> String {
        let mut k = String::with_capacity(namespace.len() + group.len() + name.len() + 2);
        k.push_str(namespace);
        k.push(char::from(SEPARATOR));
        k.push_str(group);
        k.push(char::from(SEPARATOR));
        k.push_str(name);
        k
    }

    /// Whether this is the service `namespace`/`group`/`name` (resolved parts, see
    /// [`ServiceSpec::resolve`]); compares the name first, which differs most often.
    pub fn is(&self, namespace: &str, group: &str, name: &str) -> bool {
        short_eq(&self.0.name, name)
            && short_eq(&self.0.group, group)
            && short_eq(&self.0.namespace, namespace)
    }

    /// Orders this service against the resolved parts `namespace`/`group`/`name` as
    /// [`Ord`] orders services (by key), without building the parts' key: a write finds
    /// the held publication of the service it names by a binary search over the client's
    /// sorted publications. A valid name holds no byte below `0x20` (control characters
    /// are refused) and the key joins the parts with `0x1f`, so the keys' order is the
    /// order of the `(namespace, group, name)` tuples, compared part by part (the equal
    /// leading parts of a client's services cost a few word compares). `Equal` means
    /// exactly these parts, whatever they hold.
    pub fn cmp_parts(&self, namespace: &str, group: &str, name: &str) -> std::cmp::Ordering {
        // Inlined: as a closure it was a call per part, which cost the binary search of a
        // client's many services more or less with the split into codegen units.
        #[inline(always)]
        fn part(held: &Name, given: &str) -> std::cmp::Ordering {
            if short_eq(held, given) {
                std::cmp::Ordering::Equal
            } else {
                held.as_str().cmp(given)
            }
        }
        part(&self.0.namespace, namespace)
            .then_with(|| part(&self.0.group, group))
            .then_with(|| self.0.name.as_str().cmp(name))
    }

    /// Whether `other` is this very service (one allocation), not only an equal one.
    #[cfg(test)]
    pub(crate) fn same(&self, other: &Service) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A reference to this service that does not keep it (its names) alive.
    #[inline]
    pub(crate) fn downgrade(&self) -> WeakService {
        WeakService(Arc::downgrade(&self.0))
    }

    /// The unique key of this service.
    pub fn key(&self) -> &Name {
        &self.0.key
    }

    /// [`crate::hash::stable_hash64`] of [`Service::key`]'s bytes, worked out once when
    /// the service was made: a change listener that keeps a set of the keys it wants asks
    /// it first, without reading the key's text (a cache miss for each changed service of
    /// a replicated batch, and a hash of ~35 bytes).
    #[inline]
    pub fn key_hash(&self) -> u64 {
        self.0.key_hash
    }

    /// [`Service::key_hash`] of the service whose key is `key` (a listener's set of the
    /// keys it wants is built with it).
    pub fn hash_of_key(key: &str) -> u64 {
        crate::hash::stable_hash64(key.as_bytes())
    }
    /// Namespace id.
    pub fn namespace(&self) -> &Name {
        &self.0.namespace
    }
    /// Group name.
    pub fn group(&self) -> &Name {
        &self.0.group
    }
    /// Service name without the group.
    pub fn name(&self) -> &Name {
        &self.0.name
    }
    /// `group@@name`, as Nacos names a service in instance ids and the HTTP API.
    pub fn grouped_name(&self) -> String {
        format!("{}{GROUP_SEPARATOR}{}", self.0.group, self.0.name)
    }
}

/// A [`Service`] held without keeping it alive (see [`Service::downgrade`]): once the
/// last service is dropped its names are, and only the allocation stays.
#[derive(Clone, Default)]
pub(crate) struct WeakService(Weak<ServiceInner>);

/// Asks for the first two lines of the index whose `Arc` value is at `index`: the counts
/// (16 bytes before the value) and the fields a write that takes a slot touches first
/// (see `ServiceIndex`). Reads nothing through the address.
#[inline]
fn prefetch_index_at(index: *const ServiceIndex) {
    arc_slots::prefetch_arc_counts(index);
    let value = index.cast::<u8>();
    arc_slots::prefetch(value.wrapping_add(64 - 2 * std::mem::size_of::<usize>()));
}

impl WeakService {
    /// Asks the processor for the lines a write into this service reads first: the
    /// service's counts and its names' pointers and, at `index` (a
    /// [`Service::index_address`], `0` for none), its index's counts and the fields a
    /// write that takes a slot touches (see `ServiceIndex`). Reads nothing through either.
    #[inline]
    pub(crate) fn prefetch_with(&self, index: usize) {
        arc_slots::prefetch_arc_counts(self.0.as_ptr());
        if index != 0 {
            prefetch_index_at(std::ptr::without_provenance(index));
        }
    }

    /// The service, if it is still alive.
    #[inline]
    pub(crate) fn upgrade(&self) -> Option<Service> {
        self.0.upgrade().map(Service)
    }
}

impl PartialEq for Service {
    /// The same service object (nearly always: one canonical service per registry) without
    /// a call; two objects compared by key out of line.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.key_eq(other)
    }
}

impl Service {
    /// Whether `other`, another object, has the same key (see `eq`).
    #[inline(never)]
    fn key_eq(&self, other: &Service) -> bool {
        self.0.key == other.0.key
    }
}
impl Eq for Service {}
impl Hash for Service {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state)
    }
}
impl PartialOrd for Service {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Service {
    /// By key; one canonical service (the registry's, shared by every publication to it)
    /// is equal to itself without a comparison of its text.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.key.cmp(&other.0.key)
    }
}
impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}{GROUP_SEPARATOR}{}",
            self.0.namespace, self.0.group, self.0.name
        )
    }
}

/// A service as named in a request. Empty parts take their defaults; a `name` of the form
/// `group@@name` carries its group (and then `group` must be empty or equal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Namespace id; empty means `public`.
    pub namespace: String,
    /// Group; empty means `DEFAULT_GROUP`.
    pub group: String,
    /// Service name, optionally `group@@name`.
    pub name: String,
}

impl ServiceSpec {
    /// A spec from its three parts.
    pub fn new(namespace: &str, group: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            group: group.to_string(),
            name: name.to_string(),
        }
    }

    /// Validates and resolves defaults; returns `(namespace, group, name)`.
    pub fn resolve(&self) -> Result<(&str, &str, &str), ValidationError> {
        Self::resolve_parts(&self.namespace, &self.group, &self.name)
    }

    /// [`ServiceSpec::resolve`] on borrowed parts (decoders use it without copying).
    pub fn resolve_parts<'a>(
        namespace: &'a str,
        group: &'a str,
        name: &'a str,
    ) -> Result<(&'a str, &'a str, &'a str), ValidationError> {
        let (namespace, group, name) = Self::split_parts(namespace, group, name)?;
        Self::check_parts(namespace, group, name)?;
        Ok((namespace, group, name))
    }

    /// [`ServiceSpec::resolve`] without the checks of each part: the defaults and the
    /// `group@@name` rule only. For a lookup that validates only when it finds nothing
    /// (every stored name was valid, so a hit proves the parts valid); the parts must go
    /// through [`ServiceSpec::check_parts`] before anything is stored or refused.
    #[inline]
    pub fn split_parts<'a>(
        namespace: &'a str,
        group: &'a str,
        name: &'a str,
    ) -> Result<(&'a str, &'a str, &'a str), ValidationError> {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        let (group, name) = match split_separator(name) {
            Some((g, n)) => {
                if !group.is_empty() && group != g {
                    return Err(ValidationError::new(
                        Field::Service,
                        format!(
                            "grouped service name {name:?} names group {g:?} but groupName is {group:?}"
                        ),
                    ));
                }
                (g, n)
            }
            None => (
                if group.is_empty() {
                    DEFAULT_GROUP
                } else {
                    group
                },
                name,
            ),
        };
        Ok((namespace, group, name))
    }

    /// The parts as given with their defaults, the name not split at `@@`: what
    /// [`ServiceSpec::split_parts`] gives for every name without the separator, and the
    /// only thing a lookup among held services needs to try first (a held name never
    /// holds it, so a hit proves it absent and these parts the split ones; on a miss the
    /// caller splits and looks again).
    #[inline]
    pub fn given_parts<'a>(
        namespace: &'a str,
        group: &'a str,
        name: &'a str,
    ) -> (&'a str, &'a str, &'a str) {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        let group = if group.is_empty() {
            DEFAULT_GROUP
        } else {
            group
        };
        (namespace, group, name)
    }

    /// The checks of each part of a split service name (see [`ServiceSpec::split_parts`]).
    pub fn check_parts(namespace: &str, group: &str, name: &str) -> Result<(), ValidationError> {
        check_name(Field::Namespace, namespace, MAX_NAMESPACE_LEN)?;
        check_name(Field::Group, group, MAX_GROUP_LEN)?;
        check_name(Field::Service, name, MAX_SERVICE_NAME_LEN)?;
        if split_separator(name).is_some() || split_separator(group).is_some() {
            return Err(ValidationError::new(
                Field::Service,
                "must contain at most one '@@' separator",
            ));
        }
        Ok(())
    }
}

/// `s.split_once(GROUP_SEPARATOR)`, without the general substring search (which cost
/// more than the rest of a heartbeat): the first `@` found eight bytes at a time, then
/// byte by byte to the first `@@`.
fn split_separator(s: &str) -> Option<(&str, &str)> {
    debug_assert_eq!(GROUP_SEPARATOR, "@@");
    let b = s.as_bytes();
    let mut from = super::client::first_byte(b, b'@')?;
    while let Some(p) = b[from..].iter().position(|&c| c == b'@') {
        let at = from + p;
        if b.get(at + 1) == Some(&b'@') {
            // Both '@' are ASCII, so `at` and `at + 2` are char boundaries.
            return Some((&s[..at], &s[at + 2..]));
        }
        from = at + 1;
    }
    None
}

fn check_name(field: Field, s: &str, max: usize) -> Result<(), ValidationError> {
    // Fast path: short printable ASCII, the overwhelmingly common case.
    if !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Ok(());
    }
    if s.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes long, the limit is {max}", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(ValidationError::new(
            field,
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod separator_tests {
    use super::*;

    #[test]
    fn a_services_key_hash_is_the_stable_hash_of_its_key() {
        let interner = Interner::new();
        let a = Service::new(&interner, "public", "DEFAULT_GROUP", "a");
        let b = Service::new(&interner, "public", "DEFAULT_GROUP", "b");
        assert_eq!(a.key_hash(), crate::hash::stable_hash64(a.key().as_bytes()));
        assert_eq!(a.key_hash(), Service::hash_of_key(a.key()));
        assert_ne!(a.key_hash(), b.key_hash());
    }

    #[test]
    fn split_separator_is_split_once() {
        for s in [
            "",
            "@",
            "@@",
            "a@@b",
            "@@b",
            "a@@",
            "a@b@@c@@d",
            "a@b",
            "@a@",
            "é@@ü",
            "a@@@b",
            "g@@@@n",
        ] {
            assert_eq!(split_separator(s), s.split_once(GROUP_SEPARATOR), "{s:?}");
        }
        // Every placement of one or two '@' (and a non-ASCII byte) across the 8-byte
        // words of a 20-byte name.
        for len in 0..=20 {
            for i in 0..=len {
                for j in i..=len {
                    let mut v: Vec<char> = "abcdefghijklmnopqrst"[..len].chars().collect();
                    if i < len {
                        v[i] = '@';
                    }
                    if j < len {
                        v[j] = if j == i + 1 || j % 3 == 0 {
                            '@'
                        } else {
                            '\u{e9}'
                        };
                    }
                    let s: String = v.into_iter().collect();
                    assert_eq!(split_separator(&s), s.split_once(GROUP_SEPARATOR), "{s:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod eq_tests {
    use super::*;

    /// One service object equals itself without its key compared; two objects (two
    /// interners: a replica's and a decoder's) are equal exactly when their keys are.
    #[test]
    fn services_are_equal_by_object_or_by_key() {
        let (a, b) = (Interner::default(), Interner::default());
        let s = Service::new(&a, "public", "DEFAULT_GROUP", "svc");
        assert!(s == s.clone());
        let same = Service::new(&b, "public", "DEFAULT_GROUP", "svc");
        assert!(!s.same(&same));
        assert!(s == same);
        assert!(same == s);
        for other in [
            Service::new(&b, "public", "DEFAULT_GROUP", "svd"),
            Service::new(&b, "public", "OTHER_GROUP", "svc"),
            Service::new(&b, "prod", "DEFAULT_GROUP", "svc"),
        ] {
            assert!(s != other);
            assert!(other != s);
        }
    }
}
