//! Interned names: namespaces, groups, services, clusters and metadata keys.
//!
//! These values repeat across millions of instances, so each distinct string is stored
//! once and shared through a reference-counted pointer. A name nothing uses any more (the
//! interner holds the only reference) is freed by [`Interner::reclaim`], which the node's
//! periodic collection calls after it removed empty services: a client that keeps
//! registering new service names, clusters or metadata keys does not grow the process
//! without bound.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

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

/// A concurrent set of interned strings. Lookups take no lock.
pub struct Interner {
    set: papaya::HashSet<Name, foldhash::fast::RandomState>,
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
            set: papaya::HashSet::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
        }
    }

    /// Returns the shared copy of `s`, inserting it on first use.
    pub fn intern(&self, s: &str) -> Name {
        let set = self.set.pin();
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
    pub fn reclaim(&self) -> usize {
        let set = self.set.pin();
        let before = set.len();
        set.retain(|name| Arc::strong_count(&name.0) > 1);
        before.saturating_sub(set.len())
    }

    /// Number of distinct strings interned.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether nothing was interned yet.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
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
}
