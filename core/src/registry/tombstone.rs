//! Tombstones and drop markers: what is left of a client that is gone.
//!
//! A deletion leaves a tombstone at its revision, so a late, older sync cannot bring the
//! client back; it is replicated like any state. A replica that drops a client (its lease
//! ran out, or verify found its owner without it) leaves a drop marker instead: it blocks
//! that revision and older ones but is no deletion, is never sent, and is cleared when the
//! owner lists the client at exactly that revision. Both expire after the tombstone TTL.

use super::Registry;
use crate::hash::shard_of;
use crate::model::Revision;
use crate::time::Millis;

/// What is left of a deleted (or dropped) client, for a while.
pub(super) struct Tombstone {
    pub(super) revision: Revision,
    pub(super) expires_at: Millis,
    /// A drop marker, not a deletion: the replica at `revision` was dropped (verify found
    /// its owner without it, or its lease ran out). It blocks that revision and older ones
    /// (a sync delayed on a slow link must not bring the client back), is never sent as a
    /// deletion, and is cleared when the owner lists the client at exactly `revision`.
    pub(super) dropped: bool,
}

impl Registry {
    /// How long a tombstone (or drop marker) is kept.
    pub(super) fn tombstone_ttl(&self) -> Millis {
        self.tombstone_ttl
    }

    /// The revision of the tombstone of `id`, if any (drop markers are not deletions and
    /// do not count).
    pub fn tombstone(&self, id: &str) -> Option<Revision> {
        let shard = &self.shards[shard_of(id, self.shard_count) as usize];
        shard
            .write()
            .get(id)
            .filter(|t| !t.dropped)
            .map(|t| t.revision)
    }

    /// Removes the drop marker of `id` if it is at exactly `revision` (its owner lists the
    /// client at that revision, so the drop was wrong); whether one was removed.
    pub fn clear_drop_marker(&self, id: &str, revision: Revision) -> bool {
        let shard = &self.shards[shard_of(id, self.shard_count) as usize];
        let mut t = shard.write();
        if t.get(id)
            .is_some_and(|t| t.dropped && t.revision == revision)
        {
            t.remove(id);
            true
        } else {
            false
        }
    }

    /// Forgets tombstones that expired; returns how many. A shard's table left at less
    /// than a quarter full (and above 64 slots: with a thousand shards, small tables add
    /// up) is shrunk to twice what it holds, under the shard's write lock (readers of the
    /// store do not take it): a burst of deletions leaves no table sized for it once its
    /// tombstones expired.
    pub fn collect_tombstones(&self, now: Millis) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut t = s.write();
            let before = t.len();
            t.retain(|_, t| t.expires_at > now);
            n += before - t.len();
            if t.capacity() > 64 && t.len() < t.capacity() / 4 {
                let keep = t.len() * 2;
                t.shrink_to(keep);
            }
        }
        n
    }

    /// Tombstones the shards' tables have room for without growing.
    pub fn tombstone_capacity(&self) -> usize {
        self.shards.iter().map(|s| s.write().capacity()).sum()
    }
}
