//! Interned names: namespaces, groups, services, clusters and metadata keys.
//!
//! These values repeat across millions of instances, so each distinct string is stored
//! once and shared through a reference-counted pointer. A name nothing uses any more (the
//! interner holds the only reference) is freed by [`Interner::reclaim`], which the node's
//! periodic collection calls after it removed empty services: a client that keeps
//! registering new service names, clusters or metadata keys does not grow the process
//! without bound. A hash table does not shrink by itself: when reclamation leaves the set
//! at a quarter or less of the most names it held, the set is rebuilt at its new size (see
//! [`Interner::reclaim`]), so that a burst of a million names leaves no table sized for
//! them once they are gone.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A shared, immutable string, usually obtained from an [`Interner`].
///
/// Equality and hashing are by content, so a `Name` built without the interner still
/// compares correctly; interning only saves memory and makes equality checks hit the
/// pointer fast path.
#[derive(Clone)]
pub struct Name(Arc<str>);

impl Name {
    /// Builds a name that is not interned (tests, one-off values).
    pub fn new(s: &str) -> Self {
        Name(Arc::from(s))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
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
        self.0.cmp(&other.0)
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Set = papaya::HashSet<Name, foldhash::fast::RandomState>;

fn new_set() -> Set {
    papaya::HashSet::builder()
        .hasher(foldhash::fast::RandomState::default())
        .build()
}

/// Below this many names a set is not rebuilt: its table is small anyway.
const REBUILD_MIN: usize = 4_096;
/// A set is rebuilt when reclamation leaves it at `1 / REBUILD_RATIO` or less of the most
/// names it held.
const REBUILD_RATIO: usize = 4;

/// A concurrent set of interned strings. Lookups take no lock.
pub struct Interner {
    set: arc_swap::ArcSwap<Set>,
    /// The most names the current set was seen holding (at a [`Interner::reclaim`]): what
    /// its table is sized for, near enough.
    sized_for: AtomicUsize,
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
            set: arc_swap::ArcSwap::from_pointee(new_set()),
            sized_for: AtomicUsize::new(0),
        }
    }

    /// Returns the shared copy of `s`, inserting it on first use.
    pub fn intern(&self, s: &str) -> Name {
        let set = self.set.load();
        let set = set.pin();
        if let Some(name) = set.get(s) {
            return name.clone();
        }
        let name = Name::new(s);
        set.insert(name.clone());
        // Another thread may have inserted the same string first; return the stored copy.
        set.get(s).cloned().unwrap_or(name)
    }

    /// Frees every interned name that nothing but the interner references; returns how
    /// many. Lock-free next to [`Interner::intern`]: a name being handed out while it is
    /// removed stays valid (the caller holds its own reference), and interning the same
    /// string later makes a new copy; the two compare equal, since equality and hashing
    /// are by content, so the only cost of that race is one duplicate string.
    ///
    /// When what is left is at most a quarter of the most names the set was seen holding
    /// (and that was at least 4,096), the names left are copied into a new set, which
    /// replaces the old one; the old table is freed once no `intern` still reads it.
    /// Lookups go on in the old set meanwhile; a name interned into it during the copy is
    /// not carried over, which costs at most one duplicate string, as above.
    pub fn reclaim(&self) -> usize {
        let current = self.set.load_full();
        let set = current.pin();
        let before = set.len();
        let sized_for = self.sized_for.fetch_max(before, Relaxed).max(before);
        set.retain(|name| Arc::strong_count(&name.0) > 1);
        let after = set.len();
        if sized_for >= REBUILD_MIN && after <= sized_for / REBUILD_RATIO {
            let fresh = new_set();
            {
                let f = fresh.pin();
                for name in set.iter() {
                    f.insert(name.clone());
                }
            }
            self.set.store(Arc::new(fresh));
            self.sized_for.store(after, Relaxed);
        }
        before.saturating_sub(after)
    }

    /// The most names the current set was seen holding, which its table is sized for:
    /// it falls to what is left when the set is rebuilt.
    pub fn sized_for(&self) -> usize {
        self.sized_for.load(Relaxed).max(self.len())
    }

    /// Number of distinct strings interned.
    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    /// Whether nothing was interned yet.
    pub fn is_empty(&self) -> bool {
        self.set.load().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_set_that_emptied_is_rebuilt_at_its_new_size() {
        let i = Interner::new();
        let kept: Vec<Name> = (0..100).map(|n| i.intern(&format!("kept-{n}"))).collect();
        let mut burst: Vec<Name> = (0..20_000)
            .map(|n| i.intern(&format!("burst-{n}")))
            .collect();
        assert_eq!(i.reclaim(), 0);
        assert_eq!(i.sized_for(), 20_100);
        // Half gone: not rebuilt.
        burst.truncate(10_000);
        assert_eq!(i.reclaim(), 10_000);
        assert_eq!(i.sized_for(), 20_100);
        drop(burst);
        assert_eq!(i.reclaim(), 10_000);
        assert_eq!(i.len(), 100);
        assert_eq!(i.sized_for(), 100, "rebuilt for the 100 names left");
        // The names left are the ones handed out, in the new set.
        for (n, k) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(&k.0, &i.intern(&format!("kept-{n}")).0));
        }
        assert_eq!(i.len(), 100);
    }
}
