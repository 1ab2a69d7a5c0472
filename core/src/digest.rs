//! Per-shard digests of each owner's clients, updated in O(1) per change.
//!
//! A shard's digest over a set of `(client id, revision)` pairs is the count of pairs and
//! the sum of their 128-bit [`client_digest_hash`]es, kept as two independent wrapping
//! 64-bit sums (the low and high halves). Sums are commutative and invertible, so adding
//! or removing one client is two atomic additions, whatever the order of changes; two
//! nodes holding the same pairs for an owner's shard have equal digests.

use crate::hash::{client_digest_hash, client_digest_term};
use crate::member::MemberId;
use crate::model::Revision;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The digest of one shard of one owner's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ShardDigest {
    /// Number of clients.
    pub count: u64,
    /// Wrapping sum of the low 64 bits of each client's digest hash.
    pub sum_lo: u64,
    /// Wrapping sum of the high 64 bits of each client's digest hash.
    pub sum_hi: u64,
}

impl ShardDigest {
    /// The digest of a single pair.
    pub fn of(client_id: &str, revision: Revision) -> Self {
        let h = client_digest_hash(client_id, revision.0);
        Self {
            count: 1,
            sum_lo: h as u64,
            sum_hi: (h >> 64) as u64,
        }
    }

    /// Adds a pair.
    pub fn add(&mut self, other: ShardDigest) {
        self.count = self.count.wrapping_add(other.count);
        self.sum_lo = self.sum_lo.wrapping_add(other.sum_lo);
        self.sum_hi = self.sum_hi.wrapping_add(other.sum_hi);
    }
}

struct Cell {
    count: AtomicU64,
    lo: AtomicU64,
    hi: AtomicU64,
}

/// Digests indexed by (owner, shard). Writers serialize per shard (the registry's shard
/// lock); readers take no lock and may see a change half-applied, which only makes one
/// verify round report a spurious mismatch.
pub(crate) struct DigestTable {
    shards: u32,
    cells: Box<[Cell]>,
}

impl DigestTable {
    pub(crate) fn new(members: usize, shards: u32) -> Self {
        let n = members * shards as usize;
        let cells = (0..n)
            .map(|_| Cell {
                count: AtomicU64::new(0),
                lo: AtomicU64::new(0),
                hi: AtomicU64::new(0),
            })
            .collect();
        Self { shards, cells }
    }

    fn cell(&self, owner: MemberId, shard: u32) -> &Cell {
        &self.cells[owner.index() * self.shards as usize + shard as usize]
    }

    pub(crate) fn add(&self, owner: MemberId, shard: u32, id: &str, rev: Revision) {
        self.add_term(owner, shard, client_digest_hash(id, rev.0));
    }

    pub(crate) fn remove(&self, owner: MemberId, shard: u32, id: &str, rev: Revision) {
        self.remove_term(owner, shard, client_digest_hash(id, rev.0));
    }

    /// A change of a client of `shard` whose id's [`crate::hash::stable_hash64`] is `h`:
    /// its term at `old` (owner, revision) taken out, its term at `new` put in. Inlined
    /// into the registry's one caller (every write).
    #[inline(always)]
    pub(crate) fn replace(
        &self,
        shard: u32,
        h: u64,
        old: Option<(MemberId, Revision)>,
        new: Option<(MemberId, Revision)>,
    ) {
        match (old, new) {
            // One owner (nearly every change): its cell found once, the count left as it
            // is and each half moved by the difference of the two terms (the halves are
            // independent wrapping sums, so this is the removal and the addition).
            (Some((o, old_rev)), Some((n, new_rev))) if o == n => {
                let (old, new) = (
                    client_digest_term(h, old_rev.0),
                    client_digest_term(h, new_rev.0),
                );
                let c = self.cell(n, shard);
                c.lo.fetch_add((new as u64).wrapping_sub(old as u64), Relaxed);
                c.hi.fetch_add(
                    ((new >> 64) as u64).wrapping_sub((old >> 64) as u64),
                    Relaxed,
                );
            }
            _ => {
                if let Some((owner, rev)) = old {
                    self.remove_term(owner, shard, client_digest_term(h, rev.0));
                }
                if let Some((owner, rev)) = new {
                    self.add_term(owner, shard, client_digest_term(h, rev.0));
                }
            }
        }
    }

    fn add_term(&self, owner: MemberId, shard: u32, term: u128) {
        let c = self.cell(owner, shard);
        c.count.fetch_add(1, Relaxed);
        c.lo.fetch_add(term as u64, Relaxed);
        c.hi.fetch_add((term >> 64) as u64, Relaxed);
    }

    fn remove_term(&self, owner: MemberId, shard: u32, term: u128) {
        let c = self.cell(owner, shard);
        c.count.fetch_sub(1, Relaxed);
        c.lo.fetch_sub(term as u64, Relaxed);
        c.hi.fetch_sub((term >> 64) as u64, Relaxed);
    }

    pub(crate) fn get(&self, owner: MemberId, shard: u32) -> ShardDigest {
        let c = self.cell(owner, shard);
        ShardDigest {
            count: c.count.load(Relaxed),
            sum_lo: c.lo.load(Relaxed),
            sum_hi: c.hi.load(Relaxed),
        }
    }

    /// All shard digests of `owner`.
    pub(crate) fn owner_digests(&self, owner: MemberId) -> Vec<ShardDigest> {
        (0..self.shards).map(|s| self.get(owner, s)).collect()
    }

    /// Number of clients attributed to `owner`.
    pub(crate) fn owner_count(&self, owner: MemberId) -> u64 {
        (0..self.shards)
            .map(|s| self.cell(owner, s).count.load(Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_order_independent_and_invertible() {
        let t = DigestTable::new(2, 4);
        let m = MemberId(1);
        t.add(m, 2, "a", Revision(5));
        t.add(m, 2, "b", Revision(7));
        let ab = t.get(m, 2);
        let u = DigestTable::new(2, 4);
        u.add(m, 2, "b", Revision(7));
        u.add(m, 2, "x", Revision(1));
        u.add(m, 2, "a", Revision(5));
        u.remove(m, 2, "x", Revision(1));
        assert_eq!(u.get(m, 2), ab);
        assert_eq!(ab.count, 2);
        // A different revision changes the digest.
        u.remove(m, 2, "a", Revision(5));
        u.add(m, 2, "a", Revision(6));
        assert_ne!(u.get(m, 2), ab);
        assert_eq!(t.owner_count(m), 2);
        assert_eq!(t.get(MemberId(0), 2), ShardDigest::default());
        // A replacement is the removal and the addition.
        let o = MemberId(0);
        let h = |id: &str| crate::hash::stable_hash64(id.as_bytes());
        t.replace(2, h("a"), Some((m, Revision(5))), Some((o, Revision(9))));
        u.remove(m, 2, "a", Revision(6));
        u.add(o, 2, "a", Revision(9));
        assert_eq!((t.get(m, 2), t.get(o, 2)), (u.get(m, 2), u.get(o, 2)));
        t.replace(2, h("b"), Some((m, Revision(7))), None);
        t.replace(2, h("c"), None, Some((m, Revision(1))));
        u.remove(m, 2, "b", Revision(7));
        u.add(m, 2, "c", Revision(1));
        assert_eq!(t.get(m, 2), u.get(m, 2));
        // A replacement within one owner (the differences of the halves added in one
        // cell) is the removal and the addition too, with wrapping sums (each half is a
        // sum of its own: no carry passes between them; b's term at revision 0 was never
        // added: the sums take it out all the same).
        for (id, from, to) in [("c", 1, 4), ("b", 0, u64::MAX), ("c", 4, 3)] {
            let before = t.get(m, 2);
            t.replace(2, h(id), Some((m, Revision(from))), Some((m, Revision(to))));
            u.remove(m, 2, id, Revision(from));
            u.add(m, 2, id, Revision(to));
            assert_eq!(t.get(m, 2), u.get(m, 2), "{id} {from} -> {to}");
            assert_ne!(t.get(m, 2), before);
            assert_eq!(t.get(o, 2), u.get(o, 2));
        }
    }
}
