//! [`Unlinked`]: a reference a writer let go of, retired when it is dropped, or once for
//! two structures that let go of the same value ([`Unlinked::retire_with`]); and
//! [`RetireBatch`], many of them let go of under one pin and retired as one.

use super::{Pin, release};
use seize::{Collector, Guard};
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr;
use std::sync::Arc;

/// A value a [`crate::Slots`] or [`crate::IdTable`] writer let go of: the structure's
/// reference to it, which readers that pinned before it was let go of may still be using.
/// Dropping it retires it through the reclaimer of the pin it was let go of under (freed
/// once no pin active now is held). Dereferences to the `Arc` (the value stays valid while
/// this lives: the reference is its own).
///
/// A value let go of by two structures in one write, the same `Arc` in both, is retired
/// once for both with [`Unlinked::retire_with`]: one entry in the reclaimer's batch that
/// releases the two references together.
#[must_use = "dropping it retires it (or retire it with another, `retire_with`)"]
pub struct Unlinked<'a, T: Send + Sync + 'static> {
    /// Stands for one strong reference this value owns (from `Arc::into_raw`); the value
    /// left the structure that owned it, but readers pinned before may still see it.
    arc: ManuallyDrop<Arc<T>>,
    /// A pin of the reclaimer the structure's readers pin.
    pin: &'a Pin<'a>,
}

impl<'a, T: Send + Sync + 'static> Unlinked<'a, T> {
    /// `None` for a null `p`.
    ///
    /// # Safety
    ///
    /// A non-null `p` came from `Arc::into_raw` and stands for a reference the caller owns
    /// and hands over; it was unlinked from a structure whose readers pin `pin`'s
    /// reclaimer, so that no reader that pins after this can reach it through that
    /// structure (readers that pinned before may still hold it).
    #[allow(unsafe_code)]
    #[inline]
    pub(crate) unsafe fn new(p: *mut T, pin: &'a Pin<'a>) -> Option<Self> {
        if p.is_null() {
            return None;
        }
        Some(Self {
            // SAFETY: the caller's contract: `p` is from `Arc::into_raw` and its reference is
            // handed to us (released by `Drop` or `retire_with`, through the reclaimer).
            arc: ManuallyDrop::new(unsafe { Arc::from_raw(p) }),
            pin,
        })
    }

    /// The raw pointer of the reference, given up: the caller retires it.
    #[inline]
    fn into_raw(self) -> *mut T {
        let this = ManuallyDrop::new(self);
        Arc::as_ptr(&this.arc).cast_mut()
    }

    /// Retires it, as dropping it does (a call that inlines where the drop glue may not).
    #[inline]
    pub fn retire(self) {
        let pin = self.pin;
        let p = self.into_raw();
        // SAFETY: `p` stands for our reference (given up above), unlinked from its
        // structure before now (see `new`); seize runs `release` once every pin active now
        // is dropped, and `pin` is of the reclaimer readers pin.
        #[allow(unsafe_code)]
        let () = unsafe { pin.0.defer_retire(p, release::<T>) };
    }

    /// Whether `self` and `other` are references to the same value let go of under pins
    /// of the same reclaimer (what [`Unlinked::retire_with`] retires as one).
    #[inline]
    fn same(&self, other: &Unlinked<'_, T>) -> bool {
        Arc::ptr_eq(&self.arc, &other.arc)
            && ptr::eq(self.pin.0.collector(), other.pin.0.collector())
    }

    /// Retires this and `other` together: one entry in the reclaimer's batch when they are
    /// references to the same value let go of under pins of the same reclaimer (then both
    /// are released at once, once no pin active now is held), else each as if dropped.
    pub fn retire_with(self, other: Unlinked<'_, T>) {
        if !self.same(&other) {
            return;
        }
        let pin = self.pin;
        let p = self.into_raw();
        let q = other.into_raw();
        debug_assert!(ptr::eq(p, q));
        // SAFETY: `p` stands for two references (ours and `other`'s, both given up above),
        // each unlinked from a structure whose readers pin this one reclaimer (the same
        // collector, checked above) before now: a reader that pins after this reaches the
        // value through neither, and `release_two` runs once every pin active now (those
        // that may have reached it through either) is dropped.
        #[allow(unsafe_code)]
        let () = unsafe { pin.0.defer_retire(p, release_two::<T>) };
    }
}

impl<T: Send + Sync + 'static> Deref for Unlinked<'_, T> {
    type Target = Arc<T>;
    #[inline]
    fn deref(&self) -> &Arc<T> {
        &self.arc
    }
}

impl<T: Send + Sync + 'static> Drop for Unlinked<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let p = Arc::as_ptr(&self.arc).cast_mut();
        // SAFETY: `p` stands for our reference (never released: `arc` is `ManuallyDrop`),
        // unlinked from its structure before now (see `new`); seize runs `release` once
        // every pin active now is dropped, and `pin` is of the reclaimer readers pin.
        #[allow(unsafe_code)]
        let () = unsafe { self.pin.0.defer_retire(p, release::<T>) };
    }
}

/// Frees two references to one retired value (see [`Unlinked::retire_with`]).
///
/// # Safety
///
/// `ptr` came from `Arc::into_raw` and stands for two references owned by the caller.
#[allow(unsafe_code)]
unsafe fn release_two<T>(ptr: *mut T, collector: &Collector) {
    // SAFETY: the caller owns two references: one is released here (the count stays at
    // least one, the other's), the other by `release`.
    unsafe {
        Arc::decrement_strong_count(ptr);
        release(ptr, collector);
    }
}

/// Values let go of under one pin (by [`crate::IdTable`] and [`crate::Slots`] writers),
/// gathered and retired together when the batch is retired or dropped: one entry in the
/// reclaimer's batch for all of them, instead of one each (an entry costs ~60
/// instructions to add and ~10 to walk; a push here ~5). Made by
/// [`crate::Reclaimer::retire_batch`].
///
/// A batch of at least the reclaimer's batch size (and at least `MIN_UNIT_ENTRIES`
/// values) is retired as one entry, padded with entries that free nothing to that many:
/// the thread's batch of the reclaimer fills and is retired with it (one process-wide
/// barrier, which the values retired one by one would have cost once per reclaimer batch
/// size of them), and goes with as many threads pinned as a batch of values one by one
/// would. The values are freed once the pins active then are dropped, as soon as they
/// would have been. A smaller one retires each value on its own (as [`Unlinked`] does),
/// so that the values waiting in a thread's batch stay as few as without it.
///
/// Readers pinned before a value was let go of may still use it: nothing in the batch is
/// released before every pin active when the batch is retired is dropped, and every value
/// was let go of before that (a reader that pins later reaches none of them).
#[must_use = "dropping it retires what it holds"]
pub struct RetireBatch<'a, T: Send + Sync + 'static> {
    /// Pointers from `Arc::into_raw` (boxed when retired), each standing for one
    /// reference this batch owns, or two when its lowest bit is set (a value let go of by
    /// two structures: see [`Unlinked::retire_with`]). An `Arc`'s value sits after its two
    /// counts, at least word-aligned: the lowest bit of the address is always free.
    ptrs: Vec<*mut T>,
    /// A pin of the reclaimer the structures' readers pin, under which every value was let
    /// go of (checked as each is pushed).
    pin: &'a Pin<'a>,
    /// The entries the batch counts as when retired as one: the reclaimer's batch size,
    /// at least [`MIN_UNIT_ENTRIES`] (see the type's documentation and its `Drop`). A
    /// smaller batch retires its values one by one.
    unit: usize,
}

impl<'a, T: Send + Sync + 'static> RetireBatch<'a, T> {
    pub(crate) fn new(pin: &'a Pin<'a>, capacity: usize, flush_at: usize) -> Self {
        Self {
            ptrs: Vec::with_capacity(capacity),
            pin,
            unit: flush_at.max(MIN_UNIT_ENTRIES),
        }
    }

    /// Values held (a value of two references counts once).
    pub fn len(&self) -> usize {
        self.ptrs.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ptrs.is_empty()
    }

    /// Whether `u` was let go of under a pin of this batch's reclaimer.
    #[inline]
    fn ours(&self, u: &Unlinked<'_, T>) -> bool {
        ptr::eq(u.pin.0.collector(), self.pin.0.collector())
    }

    /// Adds `u`, to retire with the batch (or on its own now, if it was let go of under a
    /// pin of another reclaimer).
    #[inline]
    pub fn push(&mut self, u: Unlinked<'_, T>) {
        if !self.ours(&u) {
            return u.retire();
        }
        self.ptrs.push(u.into_raw());
    }

    /// Adds `a` and `b`: as one entry of two references when they are the same value (see
    /// [`Unlinked::retire_with`]), else each as [`RetireBatch::push`] does.
    #[inline]
    pub fn push_with(&mut self, a: Unlinked<'_, T>, b: Unlinked<'_, T>) {
        if !(a.same(&b) && self.ours(&a)) {
            self.push(a);
            self.push(b);
            return;
        }
        let p = a.into_raw();
        let q = b.into_raw();
        debug_assert!(ptr::eq(p, q));
        debug_assert!(p.addr() & 1 == 0, "an Arc's value is word-aligned");
        self.ptrs.push(p.map_addr(|a| a | 1));
    }

    /// Retires every value held (see the type's documentation); dropping it does the same.
    pub fn retire(self) {
        drop(self);
    }
}

impl<T: Send + Sync + 'static> Drop for RetireBatch<'_, T> {
    fn drop(&mut self) {
        if self.ptrs.len() < self.unit {
            for &p in &self.ptrs {
                let release = if p.addr() & 1 == 0 {
                    release::<T>
                } else {
                    release_two::<T>
                };
                // SAFETY: `p` (its tag cleared) stands for the references the batch owns
                // (one, or two when tagged), each handed over by an `Unlinked`, so
                // unlinked from its structure before now under a pin of this reclaimer
                // (checked in `push`); seize runs `release` or `release_two` (for two)
                // once every pin active now is dropped.
                #[allow(unsafe_code)]
                let () = unsafe { self.pin.0.defer_retire(p.map_addr(|a| a & !1), release) };
            }
            return;
        }
        let ptrs = Box::into_raw(Box::new(std::mem::take(&mut self.ptrs)));
        // SAFETY: `ptrs` came from `Box::into_raw` just above and is ours; each pointer in
        // it stands for the references the batch owns (see the field), each unlinked from
        // its structure under a pin of this reclaimer (checked in `push`) before now, so a
        // reader that pins after this reaches none of them. Seize runs `release_batch`
        // once every pin active now (those that may have reached them) is dropped.
        #[allow(unsafe_code)]
        let () = unsafe { self.pin.0.defer_retire(ptrs, release_batch::<T>) };
        // Seize retires a thread's batch once it holds its batch size of entries (the
        // reclaimer's), linking it into the list of every thread pinned then, one entry
        // per thread: with fewer entries than pinned threads it waits for more. Alone, the
        // unit's one entry would wait whenever another thread is pinned. So it counts as
        // `unit` entries (the reclaimer's batch size, at least `MIN_UNIT_ENTRIES`),
        // entries that free nothing filling it up, never more than the values one by one
        // would have added: the thread's batch reaches its size while they are added (an
        // add that brings a batch to its size or past it retires it), is retired then, with
        // one barrier, and goes with up to that many threads pinned, as a batch of values
        // one by one does. With more pinned, it waits for the thread's next retirements
        // (values one by one would have waited too, for their own later ones). What is
        // added after the retirement (entries that free nothing) goes with the thread's
        // next batch.
        for _ in 1..self.unit {
            // SAFETY: nothing is freed or read through the pointer (`release_nothing`).
            #[allow(unsafe_code)]
            let () = unsafe {
                self.pin
                    .0
                    .defer_retire(ptr::NonNull::<u8>::dangling().as_ptr(), release_nothing)
            };
        }
    }
}

/// The fewest entries a [`RetireBatch`] retired as one counts as (see its `Drop`): with a
/// small reclaimer batch size, as many threads as this may be pinned for it to go at once.
const MIN_UNIT_ENTRIES: usize = 8;

/// Frees nothing: an entry that only lets a [`RetireBatch`]'s go (see its `Drop`).
///
/// # Safety
///
/// None needed: the pointer is not used.
#[allow(unsafe_code)]
unsafe fn release_nothing(_: *mut u8, _: &Collector) {}

/// Frees the references of a retired [`RetireBatch`] and its list.
///
/// # Safety
///
/// `ptr` came from `Box::into_raw` of a batch's list, which it owns with the references
/// its pointers stand for (see [`RetireBatch`]'s field), and no reader can reach those
/// values any more.
#[allow(unsafe_code)]
unsafe fn release_batch<T>(ptr: *mut Vec<*mut T>, collector: &Collector) {
    // SAFETY: the caller's contract: the list is ours.
    let ptrs = unsafe { Box::from_raw(ptr) };
    for &p in ptrs.iter() {
        let q = p.map_addr(|a| a & !1);
        // SAFETY: `q` came from `Arc::into_raw` and stands for one reference, or two when
        // `p` is tagged, owned by the list (the caller's contract).
        unsafe {
            if p.addr() & 1 == 0 {
                release(q, collector);
            } else {
                release_two(q, collector);
            }
        }
    }
}

#[cfg(test)]
mod tests;
