//! [`prefetch`]: a hint that asks the processor to bring a cache line in ahead of its use.
//!
//! The registry's writes are memory-bound at a million clients: a replica applying a sync
//! batch waits on memory for each client's shard, its table's array and the slot a probe
//! starts at (three dependent loads, each a miss in tables far larger than the cache). A
//! batch knows its next clients, so it can ask for their lines a few clients ahead
//! ([`IdTable::prefetch_table`](crate::IdTable::prefetch_table) and the two after it) and
//! find them in the cache when it gets there.

/// Asks the processor to fetch the cache line of `p` into its caches. Only a hint: it
/// reads nothing the program sees, so any address is fine (dangling, null, unmapped), and
/// it does nothing on other targets (only x86-64's `prefetcht0` is wired up here).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `prefetcht0` is a hint: it does not fault, on any address, and changes no
    // state the program can observe (only what the caches hold).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] of the reference counts of the `Arc` (or `Weak`) whose value is at
/// `value` (what `Arc::as_ptr` gives): std's `Arc` keeps its two counts in the 16 bytes
/// before its value, so the hint asks for the allocation's first line, ahead of a clone
/// or a drop.
#[inline(always)]
pub fn prefetch_arc_counts<T>(value: *const T) {
    prefetch(
        value
            .cast::<u8>()
            .wrapping_sub(2 * std::mem::size_of::<usize>()),
    );
}
