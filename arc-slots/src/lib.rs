//! An append-only array of optional `Arc<T>` slots that readers load without a lock and
//! writers replace without waiting for readers.
//!
//! The registry's per-service index keeps one slot per publishing client and replaces a
//! slot on every registration. It used `arc_swap::ArcSwapOption` cells: a store there pays
//! the "debts" of every thread that ever loaded through arc-swap, a walk over every
//! thread's debt slots, and with the dozens of threads of three embedded nodes that walk
//! was 12.8 % of the nodes' CPU in a million-client registration burst (perf, 2026-12-04).
//! Here a replaced value is handed to a [`seize`] collector instead, which frees it once no
//! reader that could have seen it is still inside its [`Pin`]: a store is one atomic swap
//! plus an entry in the thread's retire batch.
//!
//! Chunk `k` of a [`Slots`] holds `FIRST_CHUNK << k` slots and is allocated when its first
//! slot is taken, so a slot never moves (a writer stores into it while readers walk) and
//! the array holds at most about twice the slots in use, 8 bytes each.
//!
//! [`IdTable`] is the other structure of the kind: a hash table of `Arc<T>` values found by
//! a 64-bit hash, written under its lock and read without one (the registry's clients,
//! one table per shard), whose replaced values go to a [`Reclaimer`] too (see its module).
//!
//! A writer of either gets back what it let go of as an [`Unlinked`]: one reference that
//! readers pinned before may still see, retired when it is dropped. A value let go of by
//! two structures in one write (the registry's client, by its shard's table and by its
//! service's index slot) is retired once for both ([`Unlinked::retire_with`]): one entry
//! in the reclaimer's batch, not two. The values a writer lets go of across many writes
//! under one pin (a replicated batch) can be retired together ([`RetireBatch`]): one entry
//! for all of them.
//!
//! This crate holds the pointer handling, the only unsafe code besides `alloc-trim`; every
//! other crate keeps `unsafe_code = "forbid"`. For the same reason it holds [`SmallStr`],
//! the registry's 16-byte string (an instance's IP), whose inline text is read back as a
//! `str` without a second UTF-8 check, and [`ArcPlace`], an `Arc`'s allocation its value
//! is written into (a client, not built on the stack and copied into the `Arc`), and
//! [`push_within_capacity`], a push onto a `Vec` with room that is written in line, and
//! [`ascii_string`], ASCII bytes taken as a `String` without the UTF-8 decoder, and
//! [`prefetch`](fn@prefetch), the processor's cache hint (an instruction only `unsafe`
//! reaches).

mod arc_new;
mod ascii;
mod id_table;
mod prefetch;
mod push;
mod small_str;
mod unlinked;

pub use arc_new::ArcPlace;
pub use ascii::{ascii_str, ascii_string};
pub use id_table::{ArcRef, IdTable, Iter as IdTableIter, WriteGuard, Writer};
pub use prefetch::{prefetch, prefetch_arc_counts};
pub use push::push_within_capacity;
pub use small_str::SmallStr;
pub use unlinked::{RetireBatch, Unlinked};

use seize::{Collector, Guard, LocalGuard};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// Slots of the first chunk.
const FIRST_CHUNK: usize = 8;
/// Chunks: room for `FIRST_CHUNK * (2^CHUNKS - 1)` slots, about 537 million.
const CHUNKS: usize = 26;

/// The collector that frees values replaced in the [`Slots`] made with it; share one
/// between many arrays (a thread's [`Pin`] then covers reads of all of them).
#[derive(Clone)]
pub struct Reclaimer(Arc<Collector>, usize);

impl Reclaimer {
    /// A collector that frees retired values in batches of `batch` per thread (seize's
    /// batch size; smaller frees sooner and costs more).
    pub fn new(batch: usize) -> Self {
        let batch = batch.max(1);
        Self(Arc::new(Collector::new().batch_size(batch)), batch)
    }

    /// An empty [`RetireBatch`] for values let go of under `pin` (a pin of this
    /// reclaimer), with room for `capacity` of them.
    pub fn retire_batch<'a, T: Send + Sync + 'static>(
        &self,
        pin: &'a Pin<'a>,
        capacity: usize,
    ) -> RetireBatch<'a, T> {
        assert!(
            ptr::eq(pin.0.collector(), &*self.0),
            "a pin of another reclaimer"
        );
        RetireBatch::new(pin, capacity, self.1)
    }

    /// Marks this thread as reading until the pin is dropped: values loaded under it stay
    /// valid even if a writer replaces them meanwhile. Cheap; pins nest.
    #[inline]
    pub fn pin(&self) -> Pin<'_> {
        Pin(self.0.enter())
    }

    /// Starts freeing what this thread retired and has not freed yet (a batch frees only
    /// when full): call before asking the allocator to give memory back.
    pub fn flush(&self) {
        self.0.enter().flush();
    }
}

impl std::fmt::Debug for Reclaimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reclaimer")
    }
}

/// A reader's (or writer's) mark on a [`Reclaimer`]; see [`Reclaimer::pin`].
pub struct Pin<'c>(LocalGuard<'c>);

/// Frees one slot's reference to a retired value.
///
/// # Safety
///
/// `ptr` came from `Arc::into_raw` and its reference is owned by the caller.
#[allow(unsafe_code)]
unsafe fn release<T>(ptr: *mut T, _: &Collector) {
    // SAFETY: the caller owns the reference `ptr` stands for (a slot's, handed over when
    // the slot let go of it), and no reader can still see it (seize runs this only after
    // every pin that was active when it was retired has been dropped).
    let value = unsafe { Arc::from_raw(ptr) };
    drop(value);
}

/// The chunk of slot `s` and its place in it.
#[inline]
fn locate(s: usize) -> (usize, usize) {
    let k = (s / FIRST_CHUNK + 1).ilog2() as usize;
    (k, s - FIRST_CHUNK * ((1 << k) - 1))
}

/// An append-only array of optional `Arc<T>` slots (see the crate's documentation).
///
/// Every non-null pointer in a slot came from `Arc::into_raw` and stands for one strong
/// reference that the slot owns. `T: 'static`: a replaced value is dropped whenever the
/// reclaimer (which may outlive any borrow) gets to it.
///
/// Laid out in the order written (`repr(C)`): the length and the reclaimer, which every
/// push reads, then the first chunks, so that a push into a small array touches one or
/// two cache lines of it (the array is embedded in a larger value: see the registry's
/// `ServiceIndex`).
#[repr(C)]
pub struct Slots<T: Send + Sync + 'static> {
    /// Slots handed out: every slot below is in an allocated chunk.
    len: AtomicU32,
    reclaimer: Arc<Collector>,
    chunks: [OnceLock<Box<[AtomicPtr<T>]>>; CHUNKS],
}

impl<T: Send + Sync + 'static> Slots<T> {
    /// An empty array whose replaced values `reclaimer` frees.
    pub fn new(reclaimer: &Reclaimer) -> Self {
        Self {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicU32::new(0),
            reclaimer: reclaimer.0.clone(),
        }
    }

    /// Panics unless `pin` is of this array's reclaimer: a pin of another collector would
    /// not hold back the freeing of what this array's writers retire.
    fn check(&self, pin: &Pin<'_>) {
        assert!(
            ptr::eq(pin.0.collector(), &*self.reclaimer),
            "a pin of another reclaimer than the slots'"
        );
    }

    fn slot(&self, s: usize) -> Option<&AtomicPtr<T>> {
        if s >= self.len.load(Ordering::Acquire) as usize {
            return None;
        }
        let (k, i) = locate(s);
        self.chunks.get(k)?.get()?.get(i)
    }

    /// Slots handed out so far (empty ones included).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire) as usize
    }

    /// Whether no slot was handed out yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value in slot `s` (a new reference), if the slot was handed out and holds one.
    pub fn load(&self, s: usize, pin: &Pin<'_>) -> Option<Arc<T>> {
        self.check(pin);
        Self::load_slot(self.slot(s)?, pin)
    }

    fn load_slot(slot: &AtomicPtr<T>, pin: &Pin<'_>) -> Option<Arc<T>> {
        let p = pin.0.protect(slot, Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        #[allow(unsafe_code)]
        // SAFETY: `p` came from `Arc::into_raw` and the slot owned a reference when we
        // loaded it. A writer that has replaced it since retired it through this array's
        // collector (checked against `pin` by the caller), which does not release that
        // reference while `pin` is active: the count is still at least one, so taking
        // another reference is sound.
        let value = unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        };
        Some(value)
    }

    /// Puts `value` into slot `s`; returns what the slot held before, if anything, to
    /// retire (see [`Unlinked`]: freed once no reader can see it), or `None` if the slot
    /// was never handed out (then `value` is dropped). [`Slots::exchange`] is the same
    /// without telling the two `None`s apart.
    pub fn replace<'a>(
        &self,
        s: usize,
        value: Option<Arc<T>>,
        pin: &'a Pin<'a>,
    ) -> Option<Option<Unlinked<'a, T>>> {
        self.check(pin);
        let slot = self.slot(s)?;
        Some(Self::swap_into(slot, value, pin))
    }

    /// Puts `value` into slot `s`; returns the value the slot held before, to retire (see
    /// [`Unlinked`]), or `None` if it held none or was never handed out (then `value` is
    /// dropped). Inlined always: called, it cost every write of a held client's slot ~10
    /// (`#[inline]` alone left it out of line in the replica's apply).
    #[inline(always)]
    pub fn exchange<'a>(
        &self,
        s: usize,
        value: Option<Arc<T>>,
        pin: &'a Pin<'a>,
    ) -> Option<Unlinked<'a, T>> {
        self.check(pin);
        Self::swap_into(self.slot(s)?, value, pin)
    }

    /// Swaps `value` into `slot`; returns what it held. `pin` is of this array's collector
    /// (checked by the caller), the one readers pin.
    fn swap_into<'a>(
        slot: &AtomicPtr<T>,
        value: Option<Arc<T>>,
        pin: &'a Pin<'_>,
    ) -> Option<Unlinked<'a, T>> {
        let new = value.map_or(ptr::null_mut(), |v| Arc::into_raw(v).cast_mut());
        let old = pin.0.swap(slot, new, Ordering::AcqRel);
        #[allow(unsafe_code)]
        // SAFETY: `old` (if not null) came from `Arc::into_raw` and stands for the slot's
        // reference, which the slot let go of in the swap above: no reader that pins after
        // this can load it, and `pin` is of the collector readers pin.
        unsafe {
            Unlinked::new(old, pin)
        }
    }

    /// Takes the next slot for `value`; returns its number. Callers serialize pushes (two
    /// at once may take the same slot: one value then replaces the other, which is leaked).
    pub fn push(&self, value: Arc<T>, pin: &Pin<'_>) -> u32 {
        self.check(pin);
        let s = self.len.load(Ordering::Relaxed);
        let (k, i) = locate(s as usize);
        let chunk = self.chunks[k].get_or_init(|| {
            (0..FIRST_CHUNK << k)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect()
        });
        // The slot was never handed out: it holds nothing, and no other push writes it
        // (pushes are serialized), so a plain store publishes the value. A swap here, a
        // locked instruction, waited for every store before it to leave the store buffer:
        // ~6 % of the 1 M registration burst's samples, stalled on the clients' cache
        // misses. Two pushes at once (a caller's bug) may take the same slot: one value
        // then replaces the other, which is leaked (never freed, never freed twice).
        let slot = &chunk[i];
        debug_assert!(
            slot.load(Ordering::Relaxed).is_null(),
            "two pushes at once took slot {s}"
        );
        slot.store(Arc::into_raw(value).cast_mut(), Ordering::Release);
        // Release: a reader that sees the new length sees the chunk and the pointer.
        self.len.store(s + 1, Ordering::Release);
        s
    }

    /// Asks the processor for the line of the slot the next [`Slots::push`] takes, if
    /// its chunk is allocated: a hint ahead of a push (which stores there, a miss in an
    /// array whose tail the caches let go of since its last push). Changes nothing.
    #[inline]
    pub fn prefetch_push(&self) {
        let (k, i) = locate(self.len.load(Ordering::Relaxed) as usize);
        if let Some(c) = self.chunks.get(k).and_then(OnceLock::get) {
            crate::prefetch(c.as_ptr().wrapping_add(i));
        }
    }

    /// Appends every value held, in slot order, to `out` (new references).
    pub fn collect_into(&self, out: &mut Vec<Arc<T>>, pin: &Pin<'_>) {
        self.collect_map_into(out, |v| v, pin);
    }

    /// Appends `f` of every value held, in slot order, to `out` (new references, handed
    /// to `f`: a wrapper of the reference costs no second pass).
    #[inline]
    pub fn collect_map_into<U>(
        &self,
        out: &mut Vec<U>,
        mut f: impl FnMut(Arc<T>) -> U,
        pin: &Pin<'_>,
    ) {
        self.check(pin);
        let mut left = self.len();
        for chunk in &self.chunks {
            let Some(c) = chunk.get().filter(|_| left > 0) else {
                break;
            };
            let n = left.min(c.len());
            left -= n;
            out.extend(
                c[..n]
                    .iter()
                    .filter_map(|slot| Self::load_slot(slot, pin).map(&mut f)),
            );
        }
    }

    /// Slots allocated (handed out or not): the array's footprint is 8 bytes each.
    pub fn capacity(&self) -> usize {
        self.chunks
            .iter()
            .filter_map(OnceLock::get)
            .map(|c| c.len())
            .sum()
    }
}

impl<T: Send + Sync + 'static> Drop for Slots<T> {
    fn drop(&mut self) {
        for chunk in self.chunks.iter_mut().filter_map(OnceLock::get_mut) {
            for slot in chunk.iter_mut() {
                let p = *slot.get_mut();
                if !p.is_null() {
                    #[allow(unsafe_code)]
                    // SAFETY: `&mut self`: no reader or writer can reach the slot any more,
                    // and `p` stands for the slot's own reference (from `Arc::into_raw`).
                    let value = unsafe { Arc::from_raw(p) };
                    drop(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
