//! Interned names: namespaces, groups, services, clusters and metadata keys.
//!
//! These values repeat across millions of instances, so each distinct string is stored
//! once and shared through a reference-counted pointer. Interned names are never freed
//! while the process runs; the number of distinct names is bounded by the validation
//! limits and by the number of services, which the operator controls.

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
}
