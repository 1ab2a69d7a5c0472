//! [`Unlinked`]: a reference a writer let go of, retired when it is dropped, or once for
//! two structures that let go of the same value ([`Unlinked::retire_with`]).

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

    /// Retires this and `other` together: one entry in the reclaimer's batch when they are
    /// references to the same value let go of under pins of the same reclaimer (then both
    /// are released at once, once no pin active now is held), else each as if dropped.
    pub fn retire_with(self, other: Unlinked<'_, T>) {
        let same = Arc::ptr_eq(&self.arc, &other.arc)
            && ptr::eq(self.pin.0.collector(), other.pin.0.collector());
        if !same {
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
