//! [`IdTable`]: a hash table of `Arc<T>` values found by a 64-bit hash and a caller-given
//! equality, written by one writer at a time (under the table's lock) and read without a
//! lock.
//!
//! The registry keeps one per shard, of the shard's clients. Writes to a shard are
//! serialized anyway (a change updates the shard's index and digests with it), so the
//! table needs no concurrent map: the lock that serializes the shard's writes is the
//! table's own ([`IdTable::lock`]), and what it guards besides the table (the shard's
//! tombstones) is the `W` it holds.
//!
//! The table is open addressing with linear probing over an array of 16-byte slots, each
//! a tag (the value's hash, with its lowest bit set so that it is never 0) and a pointer
//! from `Arc::into_raw` that owns one reference. A slot is empty (tag 0: a lookup stops
//! there), live (tag and pointer), or a tombstone (tag, null pointer: a removed value,
//! which lookups walk past). A tag never returns to 0 in an array, so a value present
//! while a reader probes is always found: the slots before it stay non-empty.
//!
//! * Replacing a value is one atomic store of the new pointer into its slot (the slot the
//!   writer's last lookup found it in, when that is the value replaced: no second probe);
//!   the old value is handed back as an [`Unlinked`], retired (when dropped) through the
//!   [`Reclaimer`] the table was made with, which frees it once no reader that could have
//!   loaded it is still inside its [`Pin`].
//! * Growth, shrinking and the clearing of tombstones build a new array, publish it and
//!   retire the old one (its values move to the new array: only the array is freed). A
//!   reader still walking the old array reads the values as they were when it was
//!   replaced, kept alive by its pin.
//! * The position of a value is its tag's fast range (`tag * capacity >> 64`), so any
//!   capacity works: a rebuilt array starts at [`MIN_LOAD`], one whose live values and
//!   tombstones pass [`MAX_LOAD`] is rebuilt (doubled, when it holds no tombstones), and
//!   one whose live values fall below a quarter is rebuilt smaller.

use super::{Pin, Reclaimer, Unlinked};
use parking_lot::{Mutex, MutexGuard};
use seize::{Collector, Guard};
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The load (live values and tombstones over slots) above which an insert rebuilds the
/// array, as a fraction `n / d`.
pub(crate) const MAX_LOAD: (usize, usize) = (4, 5);
/// The load of live values a rebuilt array starts at: half of [`MAX_LOAD`], so a growing
/// table doubles and each value is moved about once while its table grows (~1 +
/// 1/2 + 1/4 + ...; from 3/5, growth by a third, it was ~3 times, with ~4 times the
/// final array's bytes allocated and first touched on the way: ~5 % of the 1 M
/// registration burst's samples went to rebuilds, 2.3 % in the moves and 2.5 % in the
/// page faults of the new arrays). A table holds ~16 / load bytes a value: 20-40 B.
pub(crate) const MIN_LOAD: (usize, usize) = (2, 5);
/// The smallest array.
pub(crate) const MIN_CAPACITY: usize = 8;

/// One slot: see the module's documentation.
struct Slot<T> {
    tag: AtomicU64,
    ptr: AtomicPtr<T>,
}

/// An array of slots, published through [`Core::array`].
struct Array<T> {
    slots: Box<[Slot<T>]>,
}

impl<T> Array<T> {
    fn new(capacity: usize) -> Box<Self> {
        Box::new(Self {
            slots: (0..capacity)
                .map(|_| Slot {
                    tag: AtomicU64::new(0),
                    ptr: AtomicPtr::new(ptr::null_mut()),
                })
                .collect(),
        })
    }

    /// The slot a probe for `tag` starts at (the array is never empty).
    #[inline]
    fn home(&self, tag: u64) -> usize {
        ((u128::from(tag) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot after `i`, wrapping.
    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }
}

/// Frees a retired array (not its values, which moved to the array that replaced it).
///
/// # Safety
///
/// `ptr` came from `Box::into_raw` of an array no reader or writer can reach any more.
#[allow(unsafe_code)]
unsafe fn release_array<T>(ptr: *mut Array<T>, _: &Collector) {
    // SAFETY: the caller's contract: the box is ours and unreachable (seize runs this only
    // after every pin that was active when it was retired has been dropped). Dropping it
    // frees the slots' memory only: a slot does not own what its pointer points at here.
    let array = unsafe { Box::from_raw(ptr) };
    drop(array);
}

/// A value of an [`IdTable`] on loan to a reader: dereferences to the `Arc<T>` the table
/// holds, without taking a reference of its own (clone it to keep the value beyond the
/// pin). Valid as long as the pin and the table it came from.
pub struct ArcRef<'a, T> {
    arc: ManuallyDrop<Arc<T>>,
    _pin: PhantomData<&'a T>,
}

impl<T> ArcRef<'_, T> {
    /// # Safety
    ///
    /// `p` came from `Arc::into_raw`, and the reference it stood for when it was loaded is
    /// not released while the returned value lives.
    #[allow(unsafe_code)]
    unsafe fn new(p: *const T) -> Self {
        Self {
            // SAFETY: the caller's contract; `ManuallyDrop` never releases the reference,
            // which stays the table's (or its reclaimer's).
            arc: ManuallyDrop::new(unsafe { Arc::from_raw(p) }),
            _pin: PhantomData,
        }
    }
}

impl<T> Deref for ArcRef<'_, T> {
    type Target = Arc<T>;
    #[inline]
    fn deref(&self) -> &Arc<T> {
        &self.arc
    }
}

/// A hash table of `Arc<T>` written under its lock and read without one (see the module's
/// documentation). `W` is what the lock guards besides the table.
///
/// Hashes are the caller's and must be spread over all 64 bits (positions come from the
/// high bits); values that can be chosen by others should be hashed with a per-process
/// seed mixed in, so that they cannot be made to collide. Values of equal hashes are told
/// apart by the equality the caller gives each lookup, which must compare the whole key
/// even where hashes never collide: a reader can meet a slot whose tag is still a removed
/// key's while its pointer is already another key's value (a tombstone taken by an
/// insert), and only the equality tells them apart.
///
/// A panic in the caller's equality (or anywhere a writer holds the lock) leaves the table
/// as it was before the `set` (the equality runs before anything changes), and the lock is
/// taken again afterwards as if nothing happened (the lock does not poison). `T: 'static`: a value let go of is
/// dropped whenever the reclaimer (which may outlive any borrow) gets to it.
pub struct IdTable<T: Send + Sync + 'static, W = ()> {
    core: Core<T>,
    lock: Mutex<Locked<W>>,
}

/// The table without its lock: what readers and the writer share.
struct Core<T: Send + Sync + 'static> {
    /// Null until the first insert. Every non-null pointer in a slot of the array came
    /// from `Arc::into_raw` and stands for one strong reference that the slot owns.
    array: AtomicPtr<Array<T>>,
    /// Live values (written under the lock, read without it).
    len: AtomicUsize,
    reclaimer: Arc<Collector>,
}

/// What the lock guards: the caller's `W` and the writer's own counts.
struct Locked<W> {
    data: W,
    /// Slots not empty (live values and tombstones) in the current array.
    used: usize,
}

impl<T: Send + Sync + 'static, W> IdTable<T, W> {
    /// An empty table whose replaced and removed values `reclaimer` frees; `data` is held
    /// under its lock.
    pub fn new(reclaimer: &Reclaimer, data: W) -> Self {
        Self {
            core: Core {
                array: AtomicPtr::new(ptr::null_mut()),
                len: AtomicUsize::new(0),
                reclaimer: reclaimer.0.clone(),
            },
            lock: Mutex::new(Locked { data, used: 0 }),
        }
    }

    /// Takes the table's lock (a writer's): the table can be changed through the guard,
    /// and the guard dereferences to `W`. Readers do not take it.
    pub fn lock(&self) -> WriteGuard<'_, T, W> {
        // The table's own state is consistent at every point a writer can panic (the
        // caller's equality runs before anything is changed): the lock does not poison
        // (parking_lot's: a write does not pay std's poison checks, ~15 instructions).
        let locked = self.lock.lock();
        WriteGuard {
            core: &self.core,
            locked,
        }
    }

    /// The value of hash `hash` for which `eq` holds, if any. `eq` must compare the whole
    /// key (see [`IdTable`]).
    #[inline]
    pub fn get<'a>(
        &'a self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        pin: &'a Pin<'_>,
    ) -> Option<ArcRef<'a, T>> {
        self.core.get(hash, eq, pin)
    }

    /// Every value held, in no particular order: a walk of the array as it is when the
    /// walk starts. Values replaced meanwhile may be seen old or new; values added meanwhile
    /// may be seen or not; a key removed and set again meanwhile may be seen twice (its old
    /// slot before the removal, the tombstone it took after) or not at all (the other way
    /// round). Values held throughout and not removed are seen exactly once.
    pub fn iter<'a>(&'a self, pin: &'a Pin<'_>) -> Iter<'a, T> {
        self.core.iter(pin)
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.core.len.load(Ordering::Relaxed)
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the processor to fetch the table itself (the pointer to its array, its lock)
    /// into its cache: the first of three hints ahead of a write of a known hash, each
    /// a step further along the chain a lookup follows (see
    /// [`crate::prefetch`](fn@crate::prefetch)); this one reads nothing.
    #[inline(always)]
    pub fn prefetch_table(&self) {
        crate::prefetch(&raw const self.core.array);
        crate::prefetch(&raw const self.lock);
    }

    /// Asks the processor to fetch the header of the table's current array (where its
    /// slots are, how many): the second hint. Reads the array's pointer, which
    /// [`IdTable::prefetch_table`] fetched.
    #[inline(always)]
    pub fn prefetch_array(&self) {
        crate::prefetch(self.core.array.load(Ordering::Relaxed));
    }

    /// Asks the processor to fetch the slot a lookup or insert of `hash` starts at: the
    /// third hint. Reads the array's header, which [`IdTable::prefetch_array`] fetched.
    #[inline(always)]
    pub fn prefetch_slot(&self, hash: u64, pin: &Pin<'_>) {
        if let Some(array) = self.core.array(pin) {
            crate::prefetch(&raw const array.slots[array.home(hash | 1)]);
        }
    }

    /// Slots of the current array: the table's footprint is 16 bytes each.
    pub fn capacity(&self, pin: &Pin<'_>) -> usize {
        self.core.array(pin).map_or(0, |a| a.slots.len())
    }
}

impl<T: Send + Sync + 'static> Core<T> {
    /// Panics unless `pin` is of this table's reclaimer: a pin of another collector would
    /// not hold back the freeing of what this table's writers retire.
    #[inline]
    fn check(&self, pin: &Pin<'_>) {
        assert!(
            ptr::eq(pin.0.collector(), &*self.reclaimer),
            "a pin of another reclaimer than the table's"
        );
    }

    /// The current array, if any, valid while `pin` is.
    #[inline]
    fn array<'a>(&'a self, pin: &'a Pin<'_>) -> Option<&'a Array<T>> {
        self.check(pin);
        let p = pin.0.protect(&self.array, Ordering::Acquire);
        #[allow(unsafe_code)]
        // SAFETY: a non-null `array` came from `Box::into_raw`; a writer that replaces it
        // retires it through this table's collector (the one `pin` is of, checked above),
        // which does not free it while `pin` is active.
        unsafe {
            p.as_ref()
        }
    }

    /// The value of slot `slot`, if it holds one, on loan for as long as `pin` and `self`.
    #[inline]
    fn load<'a>(&'a self, slot: &Slot<T>, pin: &'a Pin<'_>) -> Option<ArcRef<'a, T>> {
        let p = pin.0.protect(&slot.ptr, Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        #[allow(unsafe_code)]
        // SAFETY: `p` came from `Arc::into_raw` and the slot owned its reference when we
        // loaded it. A writer that has let go of it since retired it through this table's
        // collector (the one `pin` is of, checked by `array`), which does not release the
        // reference while `pin` is active; and the table, which could release it on drop,
        // is borrowed for as long as the loan.
        let value = unsafe { ArcRef::new(p) };
        Some(value)
    }

    #[inline]
    fn get<'a>(
        &'a self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        pin: &'a Pin<'_>,
    ) -> Option<ArcRef<'a, T>> {
        let array = self.array(pin)?;
        let tag = hash | 1;
        let mut i = array.home(tag);
        // At most one lap: an array always has an empty slot (see `MAX_LOAD`), but a
        // bound costs nothing here.
        for _ in 0..array.slots.len() {
            let slot = &array.slots[i];
            let t = slot.tag.load(Ordering::Acquire);
            if t == 0 {
                return None;
            }
            if t == tag
                && let Some(v) = self.load(slot, pin)
                && eq(&v)
            {
                return Some(v);
            }
            i = array.next(i);
        }
        None
    }

    /// [`Core::get`], with the value's slot (for the writer, see [`Writer::get`]). The
    /// same walk written again: through one shared walk, `get` stopped being inlined into
    /// the registry's heartbeat (+44 a beat).
    #[inline]
    fn get_at<'a>(
        &'a self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        pin: &'a Pin<'_>,
    ) -> Option<(usize, ArcRef<'a, T>)> {
        let array = self.array(pin)?;
        let tag = hash | 1;
        let mut i = array.home(tag);
        for _ in 0..array.slots.len() {
            let slot = &array.slots[i];
            let t = slot.tag.load(Ordering::Acquire);
            if t == 0 {
                return None;
            }
            if t == tag
                && let Some(v) = self.load(slot, pin)
                && eq(&v)
            {
                return Some((i, v));
            }
            i = array.next(i);
        }
        None
    }

    fn iter<'a>(&'a self, pin: &'a Pin<'_>) -> Iter<'a, T> {
        let slots = self.array(pin).map_or(&[][..], |a| &a.slots[..]);
        Iter {
            core: self,
            slots: slots.iter(),
            pin,
        }
    }
}

/// The values of an [`IdTable`]; see [`IdTable::iter`].
pub struct Iter<'a, T: Send + Sync + 'static> {
    core: &'a Core<T>,
    slots: std::slice::Iter<'a, Slot<T>>,
    pin: &'a Pin<'a>,
}

impl<'a, T: Send + Sync + 'static> Iterator for Iter<'a, T> {
    type Item = ArcRef<'a, T>;
    #[inline]
    fn next(&mut self) -> Option<ArcRef<'a, T>> {
        self.slots.find_map(|s| self.core.load(s, self.pin))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.slots.len()))
    }
}

/// The lock of an [`IdTable`], held: dereferences to the `W` it guards; [`WriteGuard::split`]
/// gives the table's writer beside it.
pub struct WriteGuard<'t, T: Send + Sync + 'static, W> {
    core: &'t Core<T>,
    locked: MutexGuard<'t, Locked<W>>,
}

impl<'t, T: Send + Sync + 'static, W> WriteGuard<'t, T, W> {
    /// The guarded `W` and the table's writer, to use side by side.
    pub fn split(&mut self) -> (&mut W, Writer<'_, 't, T>) {
        let Locked { data, used } = &mut *self.locked;
        (
            data,
            Writer {
                core: self.core,
                used,
                found: Cell::new(usize::MAX),
            },
        )
    }

    /// The table's writer.
    pub fn writer(&mut self) -> Writer<'_, 't, T> {
        self.split().1
    }
}

impl<T: Send + Sync + 'static, W> Deref for WriteGuard<'_, T, W> {
    type Target = W;
    fn deref(&self) -> &W {
        &self.locked.data
    }
}

impl<T: Send + Sync + 'static, W> DerefMut for WriteGuard<'_, T, W> {
    fn deref_mut(&mut self) -> &mut W {
        &mut self.locked.data
    }
}

/// Changes an [`IdTable`], its lock held (see [`WriteGuard::split`]).
pub struct Writer<'g, 't, T: Send + Sync + 'static> {
    core: &'t Core<T>,
    used: &'g mut usize,
    /// The slot [`Writer::get`] last found a value in (`usize::MAX`: none), where
    /// [`Writer::set`] looks first: a write nearly always replaces what it just read. Only
    /// a hint, checked at every use (in the current array, its tag and the value's `eq`).
    found: Cell<usize>,
}

impl<'t, T: Send + Sync + 'static> Writer<'_, 't, T> {
    /// [`IdTable::get`] (the slot of the value found noted for [`Writer::set`]).
    #[inline]
    pub fn get<'a>(
        &self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        pin: &'a Pin<'_>,
    ) -> Option<ArcRef<'a, T>>
    where
        't: 'a,
    {
        let (i, v) = self.core.get_at(hash, eq, pin)?;
        self.found.set(i);
        Some(v)
    }

    /// Sets the value of hash `hash` for which `eq` holds to `value`: replaces it in its
    /// slot, removes it (`None`), or inserts `value` if none is held. Returns the value
    /// let go of, retired when dropped (see [`crate::Unlinked`]).
    /// A replacement must have the same hash and satisfy `eq` (or lookups may miss it).
    ///
    /// A replacement of the value the last [`Writer::get`] found looks in its slot first,
    /// in line (one tag, one pointer and `eq` checked: the slot holds the value of `hash`
    /// for which `eq` holds, the only one, so the probe would find it there); anything
    /// else probes (out of line).
    #[inline(always)]
    pub fn set<'a>(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        value: Option<Arc<T>>,
        pin: &'a Pin<'a>,
    ) -> Option<Unlinked<'a, T>>
    where
        't: 'a,
    {
        let tag = hash | 1;
        if value.is_some()
            && let Some(array) = self.core.array(pin)
            && let Some(slot) = array.slots.get(self.found.get())
            && slot.tag.load(Ordering::Relaxed) == tag
            && let Some(old) = self.core.load(slot, pin)
            && eq(&old)
        {
            let new = value.map_or(ptr::null_mut(), |v| Arc::into_raw(v).cast_mut());
            let p = pin.0.swap(&slot.ptr, new, Ordering::AcqRel);
            debug_assert!(ptr::eq(p, Arc::as_ptr(&old)));
            #[allow(unsafe_code)]
            // SAFETY: as in `set_probed`'s replacement: `p` (not null: `old` was loaded from
            // it under the lock) came from `Arc::into_raw` and stands for the slot's
            // reference, which left the slot in the swap above; `pin` is of this table's
            // collector (checked by `array`), the one readers pin.
            return unsafe { Unlinked::new(p, pin) };
        }
        self.set_probed(hash, eq, value, pin)
    }

    /// [`Writer::set`] by a probe from the hash's home slot.
    #[inline(never)]
    fn set_probed<'a>(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        value: Option<Arc<T>>,
        pin: &'a Pin<'a>,
    ) -> Option<Unlinked<'a, T>>
    where
        't: 'a,
    {
        #[cfg(test)]
        tests::PROBED.with(|p| p.set(p.get() + 1));
        let core = self.core;
        let tag = hash | 1;
        let Some(array) = core.array(pin) else {
            if let Some(v) = value {
                self.rebuild(1, pin).insert_new(tag, v);
                *self.used += 1;
                core.len.store(1, Ordering::Relaxed);
            }
            return None;
        };
        // Probe: the slot of the value, or where a new one goes (the first tombstone on the
        // way, else the empty slot that ends the probe).
        let mut free = None;
        let mut i = array.home(tag);
        let mut found = None;
        for _ in 0..array.slots.len() {
            let slot = &array.slots[i];
            let t = slot.tag.load(Ordering::Relaxed);
            if t == 0 {
                free.get_or_insert(i);
                break;
            }
            // Another's tag: only whether it is a tombstone matters, and only until one
            // was found.
            if t == tag || free.is_none() {
                match core.load(slot, pin) {
                    None => {
                        free.get_or_insert(i);
                    }
                    Some(v) if t == tag && eq(&v) => {
                        found = Some((i, v));
                        break;
                    }
                    Some(_) => {}
                }
            }
            i = array.next(i);
        }
        let len = core.len.load(Ordering::Relaxed);
        match (found, value) {
            (Some((i, old)), value) => {
                let removed = value.is_none();
                let new = value.map_or(ptr::null_mut(), |v| Arc::into_raw(v).cast_mut());
                let slot = &array.slots[i];
                let p = pin.0.swap(&slot.ptr, new, Ordering::AcqRel);
                debug_assert!(ptr::eq(p, Arc::as_ptr(&old)));
                #[allow(unsafe_code)]
                // SAFETY: `p` (not null: `old` was loaded from it under the lock) came from
                // `Arc::into_raw` and stands for the slot's reference, which left the slot
                // in the swap above: no reader that pins after this can load it. `pin` is
                // of this table's collector (checked by `array`), the one readers pin.
                let old = unsafe { Unlinked::new(p, pin) };
                if removed {
                    core.len.store(len - 1, Ordering::Relaxed);
                    // A table mostly emptied shrinks (its tombstones go with it).
                    if (len - 1) * 4 < array.slots.len() && array.slots.len() > MIN_CAPACITY {
                        self.rebuild(len - 1, pin);
                    }
                }
                old
            }
            (None, None) => None,
            (None, Some(v)) => {
                let i = free.expect("an array always has an empty slot");
                let slot = &array.slots[i];
                let was_empty = slot.tag.load(Ordering::Relaxed) == 0;
                if was_empty && (*self.used + 1) * MAX_LOAD.1 > array.slots.len() * MAX_LOAD.0 {
                    self.rebuild(len + 1, pin).insert_new(tag, v);
                    *self.used += 1;
                } else {
                    // The pointer before the tag: a reader that sees the tag sees the value
                    // (one that sees the tag of a reused tombstone with another's value
                    // tells them apart by `eq`).
                    slot.ptr
                        .store(Arc::into_raw(v).cast_mut(), Ordering::Release);
                    slot.tag.store(tag, Ordering::Release);
                    if was_empty {
                        *self.used += 1;
                    }
                }
                core.len.store(len + 1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Moves the live values into a new array sized for `live` of them at [`MIN_LOAD`],
    /// publishes it and retires the old one; returns the new array (valid under `pin`).
    fn rebuild<'a>(&mut self, live: usize, pin: &'a Pin<'_>) -> &'a Array<T>
    where
        't: 'a,
    {
        let core = self.core;
        let capacity = (live * MIN_LOAD.1).div_ceil(MIN_LOAD.0).max(MIN_CAPACITY);
        let new = Array::new(capacity);
        let mut used = 0;
        if let Some(old) = core.array(pin) {
            for slot in old.slots.iter() {
                let p = slot.ptr.load(Ordering::Relaxed);
                if !p.is_null() {
                    // The slot's reference moves to the new array (the old one, retired
                    // below, owns none: freeing it frees no value).
                    new.insert_raw(slot.tag.load(Ordering::Relaxed), p);
                    used += 1;
                }
            }
        }
        *self.used = used;
        let new = Box::into_raw(new);
        let old = pin.0.swap(&core.array, new, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` left `core.array` in the swap above, so no reader that pins
            // after this can load it; it came from `Box::into_raw` and owns no value any
            // more (see above); seize frees it once every pin active now is dropped. `pin`
            // is of this table's collector (checked by `array`).
            #[allow(unsafe_code)]
            let () = unsafe { pin.0.defer_retire(old, release_array::<T>) };
        }
        #[allow(unsafe_code)]
        // SAFETY: `new` came from `Box::into_raw` just above and is published: only a
        // writer (we hold the lock) can retire it, through `pin`'s collector, so it stays
        // allocated while `pin` is active.
        let array = unsafe { &*new };
        array
    }
}

impl<T> Array<T> {
    /// Puts `p` into the first empty slot of `tag`'s probe, the pointer before the tag (as
    /// any insert): for an array without tombstones, one [`Writer::rebuild`] builds (before
    /// it publishes it, and the one insert after), under the lock.
    fn insert_raw(&self, tag: u64, p: *mut T) {
        let mut i = self.home(tag);
        while self.slots[i].tag.load(Ordering::Relaxed) != 0 {
            i = self.next(i);
        }
        self.slots[i].ptr.store(p, Ordering::Release);
        self.slots[i].tag.store(tag, Ordering::Release);
    }

    /// [`Array::insert_raw`] of a value (its reference moves into the slot).
    fn insert_new(&self, tag: u64, v: Arc<T>) {
        self.insert_raw(tag, Arc::into_raw(v).cast_mut());
    }
}

impl<T: Send + Sync + 'static, W> Drop for IdTable<T, W> {
    fn drop(&mut self) {
        let array = *self.core.array.get_mut();
        if array.is_null() {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: `&mut self`: no reader or writer can reach the array any more (a loan
        // borrows the table); it came from `Box::into_raw` and was never retired (only a
        // replaced array is).
        let array = unsafe { Box::from_raw(array) };
        for slot in array.slots.iter() {
            let p = slot.ptr.load(Ordering::Relaxed);
            if !p.is_null() {
                #[allow(unsafe_code)]
                // SAFETY: `p` stands for the slot's own reference (from `Arc::into_raw`),
                // released once, here.
                let value = unsafe { Arc::from_raw(p) };
                drop(value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
