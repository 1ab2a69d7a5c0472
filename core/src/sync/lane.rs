//! A peer's due times in one stripe of the scheduler: the regular queue (a vector read
//! from a moving front) and the heap of other due times.

use crate::time::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A lane's queue of due times and hashes in push order: a vector and the index of its
/// front. A push is a vector push (no ring index to wrap, as a `VecDeque`'s has); a take
/// moves the front past what it takes ([`Fifo::skip`]). Once a take stops
/// ([`Fifo::settle`]), the vector is cleared when the front reached its end, and the taken
/// entries are dropped from its start once they are at least [`Fifo::COMPACT`] and as
/// many as those left, so between takes it holds at most twice what is queued (plus that
/// many).
pub(super) struct Fifo {
    pub(super) items: Vec<(Millis, u64)>,
    pub(super) head: usize,
}

impl Fifo {
    /// The taken entries kept before the vector is compacted.
    pub(super) const COMPACT: usize = 64;

    pub(super) fn with_capacity(room: usize) -> Self {
        Self {
            items: Vec::with_capacity(room),
            head: 0,
        }
    }

    #[inline(always)]
    pub(super) fn push_back(&mut self, item: (Millis, u64)) {
        self.items.push(item);
    }

    #[inline(always)]
    pub(super) fn front(&self) -> Option<&(Millis, u64)> {
        self.items.get(self.head)
    }

    /// Removes the front entry (if any).
    #[cfg(test)]
    pub(super) fn pop_front(&mut self) {
        if self.head >= self.items.len() {
            return;
        }
        self.skip();
        self.settle();
    }

    /// Moves the front past the front entry, which the caller has seen: nothing is let go
    /// until [`Fifo::settle`] (a take pops many entries, and settles once it stops).
    #[inline(always)]
    pub(super) fn skip(&mut self) {
        debug_assert!(self.head < self.items.len());
        self.head += 1;
    }

    /// Lets the taken entries go: the vector is cleared once the front reaches its end,
    /// and compacted once the taken ones are at least [`Fifo::COMPACT`] and as many as
    /// those left.
    #[inline]
    pub(super) fn settle(&mut self) {
        if self.head == self.items.len() {
            self.items.clear();
            self.head = 0;
            if self.items.capacity() > Self::SHRINK_ABOVE {
                self.shrink();
            }
        } else if self.head >= Self::COMPACT && self.head * 2 >= self.items.len() {
            self.compact();
        }
    }

    /// Drained after a backlog of more than this many entries (1 MiB; a peer that lagged
    /// by a million clients or more), the vector lets its memory go: it grows to ~4x its
    /// high-water mark (twice what is queued before a compaction, then doubled), and a
    /// lane is kept per peer and stripe for as long as the peer is a member.
    pub(super) const SHRINK_ABOVE: usize = 1 << 16;

    #[cold]
    fn shrink(&mut self) {
        self.items.shrink_to(Self::COMPACT * 64);
    }

    #[cold]
    fn compact(&mut self) {
        self.items.drain(..self.head);
        self.head = 0;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len() - self.head
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One peer's due times in a stripe.
pub(super) struct Lane {
    /// Entries scheduled with the regular sync delay: due times are nondecreasing. Each is
    /// a due time and a table hash (`Mix::slot` of the id's stable hash: a take looks
    /// the entry up by it without mixing), no id: a take removes the peer from a pending
    /// entry of that hash due at that time (an entry rescheduled earlier since is not).
    /// The mix is a bijection, so table hashes are equal exactly when stable hashes are:
    /// were two ids' whole 64-bit hashes equal, each entry is still taken once, at its
    /// own due time.
    pub(super) fifo: Fifo,
    /// Entries with other due times (retries, verify repairs, handovers), as due times and
    /// table hashes too: a pointer takes any one entry of its peer, hash and due time, as
    /// a fifo pointer does, so for every (peer, hash, due time) there are at least as many
    /// pointers as entries. (Matching the id here lost a schedule for good when two ids'
    /// hashes were equal: a fifo pointer of one took the other's entry, whose own heap
    /// pointer then found nothing, and later schedules merged into the entry left behind
    /// without a pointer.)
    pub(super) heap: BinaryHeap<Reverse<(Millis, u64)>>,
    /// The due time last pushed to `fifo` (0 before any): a push keeps `fifo`
    /// nondecreasing by comparing with it, not with `fifo`'s back (an index computation
    /// and a load, and no back at all once `fifo` is drained). It is at least the back's
    /// due time, so a due time not below it is not below any in `fifo`; one below it (a
    /// put-back after `fifo` emptied, say) goes to `heap`, which takes any due time.
    pub(super) last: Millis,
}

impl Lane {
    /// Queues an entry of table hash `slot` due at `due` for this lane's peer.
    #[inline]
    pub(super) fn push(&mut self, slot: u64, due: Millis, regular: bool) {
        if regular && self.last <= due {
            self.last = due;
            self.fifo.push_back((due, slot));
        } else {
            self.push_heap(slot, due);
        }
    }

    #[inline(never)]
    pub(super) fn push_heap(&mut self, slot: u64, due: Millis) {
        self.heap.push(Reverse((due, slot)));
    }

    pub(super) fn next_due(&self) -> Option<Millis> {
        self.front().map(|(due, _, _)| due)
    }

    /// The earliest queue entry: its due time, its table hash and whether it heads the fifo
    /// (else the heap; the fifo's on a tie).
    #[inline]
    pub(super) fn front(&self) -> Option<(Millis, u64, bool)> {
        let fifo = self.fifo.front().copied();
        match self.heap.peek() {
            Some(&Reverse((b, h))) if fifo.is_none_or(|(a, _)| a > b) => Some((b, h, false)),
            _ => fifo.map(|(a, h)| (a, h, true)),
        }
    }

    /// Removes the entry [`Lane::front`] returned (from the fifo: let go of at the
    /// take's end, [`Fifo::settle`]).
    #[inline]
    pub(super) fn pop_front(&mut self, fifo: bool) {
        if fifo {
            self.fifo.skip();
        } else {
            self.heap.pop();
        }
    }
}
