//! Interned names: namespaces, groups, services, clusters and metadata keys.
//!
//! These values repeat across millions of instances, so each distinct string is stored
//! once and shared through a reference-counted pointer. A name nothing uses any more (the
//! interner holds the only reference) is freed by [`Interner::reclaim`], which the node's
//! periodic collection calls after it removed empty services: a client that keeps
//! registering new service names, clusters or metadata keys does not grow the process
//! without bound. The interner also holds the table of distinct metadata maps
//! ([`MetadataTable`]), reclaimed in the same pass.

use crate::model::MetadataTable;
use hashbrown::hash_table::{Entry, HashTable};
use parking_lot::Mutex;
use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A shared, immutable string, usually obtained from an [`Interner`].
///
/// Equality and hashing are by content, so a `Name` built without the interner still
/// compares correctly; interning only saves memory and makes equality checks hit the
/// pointer fast path.
///
/// One pointer wide (the string sits behind a second one): every stored instance holds
/// its cluster's name, and the 8 bytes saved there make an instance 64 bytes.
///
/// A stored client's id text is a `Name` too (shared with the request that named the
/// client): beside the text sits what the compact peer layout reads of a client id
/// (`Name::id_parts`), found once, not at every flush: when an owner stores the client,
/// or at the first encoding of a client a replica stored (8 bytes more per name: the
/// shared part is 40 bytes, a size class of the allocator).
#[derive(Clone)]
pub struct Name(Arc<Text>);

/// What a [`Name`] points at.
struct Text {
    text: Box<str>,
    /// [`crate::compact_form::pack_connection`] of the text, or [`UNKNOWN`] until it is
    /// found (by an owner storing a client of this id, or at the first encoding of it).
    id_parts: AtomicU64,
}

/// [`Text::id_parts`] not found yet (no packed form is all ones: its millis' length is
/// at most 19 of 31).
const UNKNOWN: u64 = u64::MAX;

impl Name {
    /// Builds a name that is not interned (tests, one-off values).
    pub fn new(s: &str) -> Self {
        Name(Arc::new(Text {
            text: Box::from(s),
            id_parts: AtomicU64::new(UNKNOWN),
        }))
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// What the compact peer layout reads of the text as a client id, without the
    /// client's instance ([`crate::compact_form::pack_connection`]): read from the text
    /// the first time, kept after (two threads asking at once both read it, and store the
    /// same word).
    #[inline]
    pub(crate) fn id_parts(&self) -> u64 {
        match self.0.id_parts.load(Relaxed) {
            UNKNOWN => self.find_id_parts(),
            p => p,
        }
    }

    /// Finds [`Name::id_parts`] now if it is not known yet: taken from `same` (a name of
    /// the same text, such as the one a client's held state stores) when that knows it.
    #[inline]
    pub(crate) fn find_id_parts_now(&self, same: Option<&Name>) {
        if self.0.id_parts.load(Relaxed) != UNKNOWN {
            return;
        }
        match same.map(|n| n.0.id_parts.load(Relaxed)) {
            Some(p) if p != UNKNOWN => {
                debug_assert_eq!(self.0.text, same.expect("a name").0.text);
                self.0.id_parts.store(p, Relaxed);
            }
            _ => {
                self.find_id_parts();
            }
        }
    }

    /// Whether [`Name::id_parts`] is known (found, not left for the next reader to find).
    #[cfg(test)]
    pub(crate) fn id_parts_known(&self) -> bool {
        self.0.id_parts.load(Relaxed) != UNKNOWN
    }

    #[cold]
    fn find_id_parts(&self) -> u64 {
        let p = crate::compact_form::pack_connection(self.0.text.as_bytes());
        self.0.id_parts.store(p, Relaxed);
        p
    }
}

impl Deref for Name {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        &self.0.text
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0.text
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.text == other.0.text
    }
}
impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.text.cmp(&other.0.text)
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.text.hash(state)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0.text, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

/// `a == b` for the short strings the hot paths compare (service parts, client ids, IP
/// addresses: mostly 6 to 32 bytes), in a few word loads instead of a call to `memcmp`
/// (whose setup costs more than such a comparison). Longer strings go to `memcmp`.
#[inline(always)]
pub fn short_eq(a: &str, b: &str) -> bool {
    short_eq_bytes(a.as_bytes(), b.as_bytes())
}

/// [`short_eq`] of byte strings.
#[inline(always)]
pub(crate) fn short_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // The first and last word of each (overlapping when the length is not a multiple),
    // compared at once: a difference anywhere shows in the or of the xors.
    fn head<const W: usize>(s: &[u8]) -> [u8; W] {
        s.first_chunk().map_or([0; W], |c| *c)
    }
    fn tail<const W: usize>(s: &[u8]) -> [u8; W] {
        s.last_chunk().map_or([0; W], |c| *c)
    }
    let x8 = |a: &[u8], b: &[u8]| {
        (u64::from_ne_bytes(head(a)) ^ u64::from_ne_bytes(head(b)))
            | (u64::from_ne_bytes(tail(a)) ^ u64::from_ne_bytes(tail(b)))
    };
    match n {
        0 => true,
        1..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => {
            (u32::from_ne_bytes(head(a)) ^ u32::from_ne_bytes(head(b)))
                | (u32::from_ne_bytes(tail(a)) ^ u32::from_ne_bytes(tail(b)))
                == 0
        }
        8..=16 => x8(a, b) == 0,
        17..=32 => x8(&a[..16], &b[..16]) | x8(&a[n - 16..], &b[n - 16..]) == 0,
        _ => a == b,
    }
}

/// [`short_eq`] for client ids: 17 to 32 bytes (most ids: an ip:port id's text, a
/// connection id `<millis>_<ip>_<port>` of 23 to 35 bytes with an IPv4 address up to its
/// length) tested first, not after the shorter ones (`short_eq`'s order suits the shorter
/// strings its other callers compare); longer ids are compared whole.
#[inline(always)]
pub(crate) fn id_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n == b.len() && n.wrapping_sub(17) < 16 {
        return short_eq_bytes(&a[..16], &b[..16]) && short_eq_bytes(&a[n - 16..], &b[n - 16..]);
    }
    short_eq_bytes(a, b)
}

/// Shards of the interner's set: a power of two, enough that threads interning at once
/// rarely wait for each other.
const SHARDS: usize = 64;

/// A shard's table is shrunk when reclamation leaves it at most a quarter full (and it has
/// room for more than this many names: small tables are not worth the rehash).
const SHRINK_ABOVE: usize = 64;

/// A concurrent set of interned strings: `SHARDS` hash tables, each behind its own
/// mutex, chosen by the string's hash. Only writes intern (queries look names up in the
/// store's maps, not here), and a lookup holds its shard's lock for one probe, so threads
/// interning at once seldom meet. Unlike a lock-free table, a shard can shrink: after a
/// burst of names came and went, [`Interner::reclaim`] gives the table back.
pub struct Interner {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<HashTable<Name>>]>,
    metadata: MetadataTable,
    /// `DEFAULT`, the cluster of nearly every instance, handed out without a lookup. Held
    /// apart from the tables: it is never reclaimed and not counted.
    default_cluster: Name,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            metadata: MetadataTable::new(),
            default_cluster: Name::new(crate::model::DEFAULT_CLUSTER),
        }
    }

    /// The default cluster's name, `DEFAULT` (equal to what [`Interner::intern`] returns
    /// for it, without the lookup).
    pub fn default_cluster(&self) -> Name {
        self.default_cluster.clone()
    }

    /// The distinct metadata maps held (see [`MetadataTable`]).
    pub fn metadata(&self) -> &MetadataTable {
        &self.metadata
    }

    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    /// The shard of a hash: bits the table itself uses neither for its buckets (the low
    /// ones) nor for its tags (the top seven).
    fn shard(&self, hash: u64) -> &Mutex<HashTable<Name>> {
        &self.shards[(hash >> 40) as usize & (SHARDS - 1)]
    }

    /// Returns the shared copy of `s`, inserting it on first use.
    pub fn intern(&self, s: &str) -> Name {
        let hash = self.hash(s);
        let mut table = self.shard(hash).lock();
        match table.entry(hash, |n| n.as_str() == s, |n| self.hash(n)) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => e.insert(Name::new(s)).get().clone(),
        }
    }

    /// Frees every metadata map and then every interned name that nothing but the
    /// interner references (a map freed first releases its keys); returns how many of
    /// both. A shard left at most a quarter full is shrunk to twice what it holds, so a
    /// burst of a million names leaves no table sized for them once they are gone. Each
    /// shard is locked in turn: a name can only gain a holder through [`Interner::intern`],
    /// under the same lock, so one counted unused here is unused.
    pub fn reclaim(&self) -> usize {
        let mut freed = self.metadata.reclaim();
        for shard in self.shards.iter() {
            let mut table = shard.lock();
            let before = table.len();
            table.retain(|name| Arc::strong_count(&name.0) > 1);
            freed += before - table.len();
            if table.capacity() > SHRINK_ABOVE && table.len() <= table.capacity() / 4 {
                let keep = table.len() * 2;
                table.shrink_to(keep, |n| self.hash(n));
            }
        }
        freed
    }

    /// Names the tables have room for without growing.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.lock().capacity()).sum()
    }

    /// Number of distinct strings interned.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether nothing was interned yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_eq_is_eq() {
        let base: String = (0..40u8).map(|i| char::from(b'a' + i % 26)).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(id_eq(a, &String::from(a)));
            for m in 0..=40 {
                assert_eq!(id_eq(a, &base[..m]), n == m);
            }
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] ^= 1;
                assert!(
                    !id_eq(a, std::str::from_utf8(&b).unwrap()),
                    "{n} bytes, {i}"
                );
            }
        }
    }

    #[test]
    fn short_eq_is_eq() {
        let base: String = (0..40u8).map(|i| char::from(b'a' + i % 26)).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(short_eq(a, a));
            assert!(short_eq(a, &String::from(a)));
            for m in 0..=40 {
                assert_eq!(short_eq(a, &base[..m]), n == m);
            }
            // One byte changed anywhere.
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] = b'#';
                assert!(!short_eq(a, std::str::from_utf8(&b).unwrap()), "{n} {i}");
            }
        }
    }

    #[test]
    fn interned_names_share_storage() {
        let i = Interner::new();
        let a = i.intern("DEFAULT_GROUP");
        let b = i.intern("DEFAULT_GROUP");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(i.len(), 1);
        assert_eq!(a, Name::new("DEFAULT_GROUP"));
    }

    #[test]
    fn the_default_cluster_needs_no_lookup_and_is_not_counted() {
        let i = Interner::new();
        let d = i.default_cluster();
        assert_eq!(d, i.intern("DEFAULT"));
        assert_eq!(d.as_str(), crate::model::DEFAULT_CLUSTER);
        drop(d);
        assert_eq!(i.reclaim(), 1);
        assert!(i.is_empty());
        assert_eq!(i.default_cluster().as_str(), "DEFAULT");
    }

    #[test]
    fn unused_names_are_reclaimed_and_used_ones_kept() {
        let i = Interner::new();
        let kept = i.intern("kept");
        for n in 0..100 {
            drop(i.intern(&format!("service-{n}")));
        }
        assert_eq!(i.len(), 101);
        assert_eq!(i.reclaim(), 100);
        assert_eq!(i.len(), 1);
        // The name still in use is the one interning hands out again.
        let again = i.intern("kept");
        assert!(Arc::ptr_eq(&kept.0, &again.0));
        assert_eq!(i.reclaim(), 0);
        drop((kept, again));
        assert_eq!(i.reclaim(), 1);
        assert!(i.is_empty());
        // A reclaimed string interned again is a fresh copy that compares equal.
        let old = Name::new("service-1");
        assert_eq!(i.intern("service-1"), old);
    }

    #[test]
    fn tables_shrink_once_a_burst_of_names_is_reclaimed() {
        let i = Interner::new();
        let kept: Vec<Name> = (0..100).map(|n| i.intern(&format!("kept-{n}"))).collect();
        let burst: Vec<Name> = (0..100_000)
            .map(|n| i.intern(&format!("burst-{n}")))
            .collect();
        assert!(i.capacity() >= 100_100);
        drop(burst);
        assert_eq!(i.reclaim(), 100_000);
        assert_eq!(i.len(), 100);
        // Each of the 64 shards keeps at most a small table.
        assert!(
            i.capacity() <= SHARDS * 2 * SHRINK_ABOVE,
            "{}",
            i.capacity()
        );
        // The names left are the ones handed out.
        for (n, k) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(&k.0, &i.intern(&format!("kept-{n}")).0));
        }
        assert_eq!(i.len(), 100);
    }
}
