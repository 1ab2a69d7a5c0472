//! Instance metadata: the stored form ([`Metadata`], sorted pairs behind one shared
//! pointer) and the table that stores each distinct map once ([`MetadataTable`]).
//!
//! Instances of one deployment mostly carry the same few maps (a version, a zone), so a
//! map is looked up by content before anything is allocated: a registration whose map
//! is already held costs a hash and a probe, and a million instances with the same map
//! hold one copy. A map nothing uses any more is freed by [`MetadataTable::reclaim`]
//! (called by [`Interner::reclaim`], before the names its keys hold).

use crate::name::{Interner, Name, short_eq};
use crate::time::Millis;
use hashbrown::hash_table::{Entry, HashTable};
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// Instance metadata: sorted `(key, value)` pairs, shared between copies (and between
/// instances with the same map, see [`MetadataTable`]).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(Option<Arc<MetadataList>>);

/// The entries of a non-empty [`Metadata`], sorted by key (one pointer in every
/// instance), and the bytes of their keys and values together (for size estimates,
/// without walking the entries; stored once per distinct map). Compared and hashed by
/// the entries alone (the byte count follows from them).
pub struct MetadataList(Box<[MetadataEntry]>, usize);

impl PartialEq for MetadataList {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for MetadataList {}

impl std::hash::Hash for MetadataList {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// One metadata entry: an interned key and its value.
pub type MetadataEntry = (Name, Box<str>);

impl MetadataList {
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), &**v))
    }
}

impl Metadata {
    /// No metadata.
    pub const EMPTY: Metadata = Metadata(None);

    /// Builds metadata from pairs (sorted by key; the last value of a repeated key wins),
    /// shared with every other holder of the same map (see [`MetadataTable`]). The pairs
    /// are walked several times (the order check, the hash, each candidate's comparison,
    /// the copy): a clone of the iterator must replay the same pairs, cheaply.
    pub fn from_pairs<'a, I>(interner: &Interner, pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        I::IntoIter: Clone,
    {
        let pairs = pairs.into_iter();
        // Maps usually arrive sorted with distinct keys (every peer sends them so): looked
        // up as given, not collected first.
        let mut rest = pairs.clone();
        let Some(mut last) = rest.next() else {
            return Metadata(None);
        };
        let mut len = 1;
        let mut sorted = true;
        for p in rest {
            if last.0 >= p.0 {
                sorted = false;
                break;
            }
            last = p;
            len += 1;
        }
        if sorted {
            return Metadata(Some(interner.metadata().get(interner, pairs, len)));
        }
        let mut v: SmallVec<[(&str, &str); 4]> = pairs.collect();
        // Stable: of a repeated key, the last value stays last, and is kept.
        v.sort_by(|a, b| a.0.cmp(b.0));
        let mut kept = 0;
        for i in 0..v.len() {
            if kept > 0 && v[kept - 1].0 == v[i].0 {
                v[kept - 1].1 = v[i].1;
            } else {
                v[kept] = v[i];
                kept += 1;
            }
        }
        v.truncate(kept);
        Metadata(Some(interner.metadata().get(
            interner,
            v.iter().copied(),
            kept,
        )))
    }

    /// The entries, sorted by key.
    pub fn entries(&self) -> &[MetadataEntry] {
        self.0.as_ref().map_or(&[], |a| &a.0)
    }

    /// Whether `pairs`, as given, are exactly these entries in order (then they are this
    /// map: sorted, keys distinct). Compares, allocates nothing, hashes nothing. Inlined
    /// (a registration's conversion calls it once: the call's register saves cost more
    /// than the loop of a usual map's few entries; its one caller, the conversion, grown
    /// by writing into a slot, no longer inlined it unasked: +9 per registration).
    #[inline(always)]
    pub fn is<'a>(&self, mut pairs: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        let held = self.entries();
        let (least, most) = pairs.size_hint();
        if least > held.len() || most.is_some_and(|n| n < held.len()) {
            return false;
        }
        for (k, v) in held {
            match pairs.next() {
                Some((gk, gv)) if short_eq(k, gk) && short_eq(v, gv) => {}
                _ => return false,
            }
        }
        pairs.next().is_none()
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().flat_map(|a| a.pairs())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let a = &self.0.as_ref()?.0;
        a.binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &*a[i].1)
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |a| a.0.len())
    }

    /// Whether there are no entries.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of every key and value together (without walking the entries).
    #[inline]
    pub fn text_len(&self) -> usize {
        self.0.as_ref().map_or(0, |a| a.1)
    }

    /// A duration in milliseconds stored under `key`, if present and a number.
    pub fn millis(&self, key: &str) -> Option<Millis> {
        self.get(key).and_then(|v| v.trim().parse::<u64>().ok())
    }

    /// The identity of the stored map (0 for none): equal for metadata that
    /// [`Metadata::shares_storage`], so an encoder can key a table of maps by it without
    /// hashing the pairs.
    #[inline]
    pub fn storage_key(&self) -> usize {
        self.0.as_ref().map_or(0, |a| Arc::as_ptr(a) as usize)
    }

    /// Whether `self` and `other` share one stored map (or both are empty).
    pub fn shares_storage(&self, other: &Metadata) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Shards of the table: a power of two (as the interner's).
const SHARDS: usize = 16;

/// A shard's table is shrunk when reclamation leaves it at most a quarter full (and it
/// has room for more than this many maps).
const SHRINK_ABOVE: usize = 64;

/// The distinct metadata maps held, each once: `SHARDS` hash tables behind their own
/// mutexes, chosen by the hash of the map's sorted pairs. Only writes look maps up here.
pub struct MetadataTable {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<HashTable<Arc<MetadataList>>>]>,
}

impl Default for MetadataTable {
    fn default() -> Self {
        Self::new()
    }
}

impl MetadataTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
        }
    }

    /// The hash of sorted pairs: each key and value written on its own. foldhash 0.2's
    /// `write` mixes in the length of what it writes, so a key and value split differently
    /// hash differently (a test pins it: a streaming hasher would hash every split of one
    /// text alike, and a client could fill one bucket chain). Only the lookup's cost
    /// depends on it: equality is decided by comparing the entries.
    fn hash<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
        let mut h = self.hasher.build_hasher();
        for (k, v) in pairs {
            h.write(k.as_bytes());
            h.write(v.as_bytes());
        }
        h.finish()
    }

    fn shard(&self, hash: u64) -> &Mutex<HashTable<Arc<MetadataList>>> {
        &self.shards[(hash >> 40) as usize & (SHARDS - 1)]
    }

    /// The shared copy of the map of the `len` `pairs` (sorted by key, keys distinct),
    /// stored on first use with its keys interned in `names`. The entries are compared as
    /// [`Metadata::is`] does (word loads for short strings, not `memcmp`).
    fn get<'a>(
        &self,
        names: &Interner,
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        len: usize,
    ) -> Arc<MetadataList> {
        let hash = self.hash(pairs.clone());
        let mut table = self.shard(hash).lock();
        let found = table.entry(
            hash,
            |l| {
                l.0.len() == len
                    && l.0
                        .iter()
                        .zip(pairs.clone())
                        .all(|((k, v), (gk, gv))| short_eq(k, gk) && short_eq(v, gv))
            },
            |l| self.hash(l.pairs()),
        );
        match found {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let entries: Box<[MetadataEntry]> = pairs
                    .map(|(k, v)| (names.intern(k), Box::from(v)))
                    .collect();
                let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
                e.insert(Arc::new(MetadataList(entries, bytes)))
                    .get()
                    .clone()
            }
        }
    }

    /// Frees every map that nothing but the table references; returns how many. Shrinks
    /// a shard left at most a quarter full, as [`Interner::reclaim`] does.
    pub fn reclaim(&self) -> usize {
        let mut freed = 0;
        for shard in self.shards.iter() {
            let mut table = shard.lock();
            let before = table.len();
            table.retain(|l| Arc::strong_count(l) > 1);
            freed += before - table.len();
            if table.capacity() > SHRINK_ABOVE && table.len() <= table.capacity() / 4 {
                let keep = table.len() * 2;
                table.shrink_to(keep, |l| self.hash(l.pairs()));
            }
        }
        freed
    }

    /// Number of distinct maps held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no map is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_maps_are_stored_once_in_any_order() {
        let i = Interner::new();
        let a = Metadata::from_pairs(&i, [("zone", "a"), ("version", "1.4.2")]);
        let b = Metadata::from_pairs(&i, [("version", "1.4.2"), ("zone", "a")]);
        let c = Metadata::from_pairs(&i, [("zone", "b"), ("version", "1.4.2"), ("zone", "a")]);
        assert!(a.shares_storage(&b) && a.shares_storage(&c));
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("version", "1.4.2"), ("zone", "a")]
        );
        // The last value of a repeated key wins.
        let d = Metadata::from_pairs(&i, [("zone", "a"), ("zone", "b")]);
        assert_eq!(d.get("zone"), Some("b"));
        assert!(!d.shares_storage(&a));
        assert_ne!(d, a);
        // A key and value split differently is a different map.
        let e = Metadata::from_pairs(&i, [("ab", "c")]);
        let f = Metadata::from_pairs(&i, [("a", "bc")]);
        assert_ne!(e, f);
        assert_eq!(i.metadata().len(), 4);
        assert!(Metadata::from_pairs(&i, []).shares_storage(&Metadata::EMPTY));
    }

    /// Sorted pairs are looked up as given (not collected), others sorted and deduplicated
    /// first: both find the one stored map, with its byte count, past the collection's
    /// inline size too.
    /// A key and value split differently hash differently (the table's hasher mixes in
    /// each write's length): maps of one text do not share a bucket chain.
    #[test]
    fn pairs_of_one_text_split_differently_hash_differently() {
        let t = MetadataTable::new();
        let splits = [
            ("abc", "d"),
            ("ab", "cd"),
            ("a", "bcd"),
            ("", "abcd"),
            ("abcd", ""),
        ];
        let hashes: std::collections::HashSet<u64> =
            splits.iter().map(|&p| t.hash([p].into_iter())).collect();
        assert_eq!(hashes.len(), splits.len());
        assert_ne!(
            t.hash([("a", "b"), ("c", "d")].into_iter()),
            t.hash([("ab", "cd")].into_iter())
        );
    }

    #[test]
    fn sorted_and_unsorted_pairs_find_one_map() {
        let i = Interner::new();
        let sorted = [
            ("a", "1"),
            ("b", "22"),
            ("c", "333"),
            ("d", "4"),
            ("e", "55"),
        ];
        let mut reversed = sorted;
        reversed.reverse();
        let m = Metadata::from_pairs(&i, sorted);
        let r = Metadata::from_pairs(&i, reversed);
        assert!(m.shares_storage(&r));
        assert_eq!(m.iter().collect::<Vec<_>>(), sorted);
        assert_eq!(m.text_len(), 5 + 1 + 2 + 3 + 1 + 2);
        // A repeated key, even in sorted order, keeps its last value.
        let d = Metadata::from_pairs(&i, [("a", "x"), ("a", "1"), ("b", "22")]);
        let e = Metadata::from_pairs(&i, [("a", "1"), ("b", "22")]);
        assert!(d.shares_storage(&e));
        assert_eq!(d.text_len(), 5);
        // A map whose entries only begin like a stored one's is another map.
        let f = Metadata::from_pairs(&i, [("a", "1"), ("b", "2")]);
        assert!(!f.shares_storage(&e));
        assert_eq!(i.metadata().len(), 3);
    }

    #[test]
    fn is_compares_the_pairs_as_given() {
        let i = Interner::new();
        let m = Metadata::from_pairs(&i, [("version", "1"), ("zone", "a")]);
        assert!(m.is([("version", "1"), ("zone", "a")].into_iter()));
        assert!(!m.is([("zone", "a"), ("version", "1")].into_iter()));
        assert!(!m.is([("version", "1")].into_iter()));
        assert!(!m.is([("version", "1"), ("zone", "a"), ("x", "y")].into_iter()));
        assert!(!m.is([("version", "1"), ("zone", "b")].into_iter()));
        assert!(!m.is(std::iter::empty()));
        assert!(Metadata::EMPTY.is(std::iter::empty()));
        assert!(!Metadata::EMPTY.is([("a", "b")].into_iter()));
    }

    #[test]
    fn unused_maps_and_their_keys_are_reclaimed() {
        let i = Interner::new();
        let kept = Metadata::from_pairs(&i, [("zone", "a")]);
        for n in 0..100 {
            let v = n.to_string();
            drop(Metadata::from_pairs(
                &i,
                [("zone", "a"), ("key", v.as_str())],
            ));
        }
        assert_eq!(i.metadata().len(), 101);
        // One pass frees the maps and then the keys only they used.
        assert_eq!(i.reclaim(), 100 + 1);
        assert_eq!(i.metadata().len(), 1);
        assert_eq!(i.len(), 1);
        let again = Metadata::from_pairs(&i, [("zone", "a")]);
        assert!(again.shares_storage(&kept));
        drop((kept, again));
        assert_eq!(i.reclaim(), 2);
        assert!(i.is_empty() && i.metadata().is_empty());
    }
}
