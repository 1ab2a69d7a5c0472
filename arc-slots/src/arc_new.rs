//! An `Arc` allocated before its value is made: [`ArcPlace`].

use std::mem::MaybeUninit;
use std::sync::Arc;

/// The allocation of an `Arc<T>`, made before its value: `place.write(value)` where
/// `Arc::new(value)` would be. `Arc::new(value)` computes the value, allocates, then
/// copies the value into the allocation; a large value made of parts the caller moves in
/// (the registry's client, ~100 bytes, its instance moved from the slot a registration
/// wrote it into) is copied through the caller's frame on the way. With the allocation
/// made first, the value's fields can be stored into it directly.
///
/// A place dropped without a write frees its allocation and drops no value.
pub struct ArcPlace<T>(Arc<MaybeUninit<T>>);

impl<T> ArcPlace<T> {
    /// A new allocation for one `T`.
    #[inline(always)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Arc::new(MaybeUninit::uninit()))
    }

    /// The `Arc` of `value`, written into this place.
    #[inline(always)]
    pub fn write(self, value: T) -> Arc<T> {
        let ptr = Arc::as_ptr(&self.0).cast::<T>().cast_mut();
        #[allow(unsafe_code)]
        // SAFETY: `self.0` was allocated by `new` and never cloned nor downgraded (the
        // field is private and `ArcPlace` is not `Clone`), so it is the only reference to
        // its value and nothing reads or writes the value while this writes it;
        // `Arc::as_ptr` points at the value in the allocation, aligned for `T`
        // (`MaybeUninit<T>` has `T`'s layout). Writing through it relies on std deriving
        // that pointer from the allocation's pointer, not from a shared reference (std
        // does so on purpose, for `into_raw` then `get_mut`; its docs do not promise it);
        // `Arc::get_mut` would be the documented way, at the cost of an atomic
        // compare-and-swap and store per value. Once written, the value is initialized,
        // so `assume_init` is sound.
        unsafe {
            ptr.write(value);
            self.0.assume_init()
        }
    }
}
