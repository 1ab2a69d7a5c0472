//! A push onto a `Vec` that never grows it: [`push_within_capacity`].

/// Appends `value` to `v` when `v` has room for it (no reallocation), else hands it back.
///
/// `Vec::push` is not inlined where its element is large (it calls `push_mut`, which
/// holds the growth path): a caller that reserved room first (a decoder reserves a
/// publication per record before its loop) still builds the element in its frame and
/// copies it through the call. Here the check and the write are in line, so the element's
/// fields can be stored straight into the vector's buffer. (`Vec::push_within_capacity`
/// is this, not stable yet.)
#[inline(always)]
pub fn push_within_capacity<T>(v: &mut Vec<T>, value: T) -> Result<(), T> {
    let len = v.len();
    if len == v.capacity() {
        return Err(value);
    }
    #[allow(unsafe_code)]
    // SAFETY: `len < v.capacity()`, so the slot at `len` lies within the vector's
    // allocation (for a zero-sized `T` the capacity is `usize::MAX` and any aligned
    // non-null pointer is valid for the write); it is past the initialized elements, so
    // the write overwrites no value (nothing is dropped or leaked) and `add(len)` stays in
    // the allocation. Once the slot is written, the first `len + 1` elements are
    // initialized and `len + 1 <= capacity`, which is what `set_len` requires.
    unsafe {
        v.as_mut_ptr().add(len).write(value);
        v.set_len(len + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::push_within_capacity;
    use std::sync::Arc;

    #[test]
    fn pushes_within_the_capacity_and_hands_back_past_it() {
        let mut v: Vec<Arc<String>> = Vec::with_capacity(3);
        let cap = v.capacity();
        let one = Arc::new("one".to_string());
        for i in 0..cap {
            assert!(
                push_within_capacity(&mut v, Arc::clone(&one)).is_ok(),
                "{i}"
            );
            assert_eq!(v.len(), i + 1);
        }
        assert_eq!(Arc::strong_count(&one), cap + 1);
        // Full: the value comes back, the vector neither grows nor changes.
        let back = push_within_capacity(&mut v, Arc::new("two".to_string()));
        assert_eq!(back.expect_err("full").as_str(), "two");
        assert_eq!((v.len(), v.capacity()), (cap, cap));
        assert!(v.iter().all(|s| Arc::ptr_eq(s, &one)));
        // The pushed values are owned by the vector: dropped with it.
        drop(v);
        assert_eq!(Arc::strong_count(&one), 1);
        // After a pop there is room again, at the end.
        let mut v = vec![1u64, 2];
        v.reserve(1);
        v.pop();
        assert_eq!(push_within_capacity(&mut v, 9), Ok(()));
        assert_eq!(v, [1, 9]);
        // Zero-sized elements: any number fits.
        let mut z: Vec<()> = Vec::new();
        for _ in 0..1000 {
            assert_eq!(push_within_capacity(&mut z, ()), Ok(()));
        }
        assert_eq!(z.len(), 1000);
        // An empty vector without an allocation has no room.
        let mut e: Vec<u8> = Vec::new();
        assert_eq!(push_within_capacity(&mut e, 1), Err(1));
    }
}
