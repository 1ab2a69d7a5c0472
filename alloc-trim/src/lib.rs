//! Gives the allocator's free memory back to the operating system after the store shrank.
//!
//! The binaries allocate with mimalloc. mimalloc keeps the pages a thread freed in that
//! thread's heap, and returns (purges) the ones it gave back to its arenas only on later
//! allocations: a node that freed a burst of a million clients and then went idle keeps
//! holding the memory. [`collect`] makes the calling thread's heap give back its free pages
//! and purges the arenas of every thread; [`request`] asks every thread that calls
//! [`collect_if_requested`] (the runtime's workers, from their park hook) to do the same
//! once, the next time it is idle.
//!
//! Before it collects, a thread runs the hooks registered with [`before_collect`]: the
//! server's frees what its lock-free maps retired on that thread but had not freed yet
//! (they free in batches per thread; a few entries left in each thread's batches of a
//! thousand maps pin pages all over the heap).
//!
//! [`set_transparent_huge_pages`] switches the kernel's transparent huge pages for the
//! process (the binaries turn them off).
//!
//! [`Mimalloc`] is the binaries' (and the benches') global allocator.
//!
//! These are the workspace's unsafe calls to the allocator and the kernel, kept in a crate
//! of their own so that every other crate (but `arc-slots`) keeps `unsafe_code = "forbid"`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

/// Something to run on a thread before it collects.
pub type Hook = dyn Fn() + Send + Sync;

/// The hooks, held weakly: a hook whose owner dropped it is skipped and forgotten.
static HOOKS: Mutex<Vec<Weak<Hook>>> = Mutex::new(Vec::new());

/// Runs `hook` on every thread before it collects, for as long as the caller keeps it.
pub fn before_collect(hook: &Arc<Hook>) {
    HOOKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Arc::downgrade(hook));
}

fn run_hooks() {
    let hooks: Vec<Arc<Hook>> = {
        let mut all = HOOKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|h| h.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    for hook in hooks {
        hook();
    }
}

/// Bumped by [`request`]; a thread that saw an older value collects.
static REQUESTED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last request this thread honoured.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Runs the [`before_collect`] hooks, then makes the calling thread's heap give its free
/// pages back to the operating system and purges the free memory of mimalloc's arenas
/// (which every thread's heap draws from). Costs time in proportion to the pages the
/// thread holds: call it after a burst of frees, not per operation. Harmless when mimalloc
/// is not the global allocator (it then collects its own, empty, heap).
pub fn collect() {
    run_hooks();
    // SAFETY: `mi_collect(bool force)` (mimalloc.h) takes no pointer and has no
    // precondition: it frees only blocks and pages that are already free, of the calling
    // thread's heap, and purges free arena memory, under mimalloc's own synchronization.
    // mimalloc initializes itself on first use, so calling it before any allocation, from
    // any thread, is valid. No Rust invariant is involved.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// Asks every thread that calls [`collect_if_requested`] to [`collect`] once, and collects
/// on the calling thread now.
pub fn request() {
    REQUESTED.fetch_add(1, Relaxed);
    SEEN.with(|s| s.set(REQUESTED.load(Relaxed)));
    collect();
}

/// [`collect`]s if a [`request`] came since this thread last did; one atomic load
/// otherwise. Meant for a runtime's hook that runs when a worker thread goes idle
/// (tokio's `on_thread_park`).
pub fn collect_if_requested() {
    let requested = REQUESTED.load(Relaxed);
    if SEEN.with(|s| s.replace(requested)) != requested {
        collect();
    }
}

/// Whether the kernel may back this process's memory with transparent huge pages (2 MiB
/// pages, where the system allows them: `/sys/kernel/mm/transparent_hugepage/enabled`
/// `always`, or `madvise` and mimalloc, which asks for them on its arenas). Affects every
/// thread and the later page faults of memory already mapped; inherited by children.
///
/// Off is what the binaries choose by default: each huge page's first touch zeroes 2 MiB,
/// and a process that allocates and frees in bursts (mimalloc gives freed pages back and
/// touches them again) spent 27 % of its CPU zeroing them in a Nacos registration run on
/// a 2-vCPU VM (`results/side-by-side-2026-12-05.md`); fewer TLB misses with huge pages
/// did not make up for it. An error on kernels without `PR_SET_THP_DISABLE` (before 3.15)
/// or off Linux.
pub fn set_transparent_huge_pages(enabled: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_THP_DISABLE, flag, 0, 0, 0) takes plain integers, touches no
        // memory of ours and only sets a flag of the process (man 2 PR_SET_THP_DISABLE).
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                libc::c_ulong::from(!enabled),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = enabled;
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// Whether transparent huge pages are disabled for this process (`PR_GET_THP_DISABLE`).
pub fn transparent_huge_pages_disabled() -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) takes plain integers and returns
        // the flag; it touches no memory of ours.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::prctl(
                libc::PR_GET_THP_DISABLE,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r == 1)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hooks_run_before_a_collection_while_they_are_kept() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let hook: Arc<Hook> = Arc::new(move || {
            counter.fetch_add(1, Relaxed);
        });
        before_collect(&hook);
        collect();
        assert_eq!(runs.load(Relaxed), 1);
        drop(hook);
        collect();
        assert_eq!(runs.load(Relaxed), 1, "a dropped hook does not run");
    }

    #[test]
    fn a_request_is_honoured_once_per_thread() {
        let before = REQUESTED.load(Relaxed);
        request();
        assert_eq!(REQUESTED.load(Relaxed), before + 1);
        // This thread collected with the request: nothing more to do.
        assert_eq!(SEEN.with(Cell::get), before + 1);
        collect_if_requested();
        // Another thread has not seen it yet, and honours it once.
        std::thread::spawn(|| {
            assert_ne!(SEEN.with(Cell::get), REQUESTED.load(Relaxed));
            collect_if_requested();
            assert_eq!(SEEN.with(Cell::get), REQUESTED.load(Relaxed));
        })
        .join()
        .expect("thread");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_switched_off_and_on_for_the_process() {
        set_transparent_huge_pages(false).expect("PR_SET_THP_DISABLE");
        assert!(transparent_huge_pages_disabled().expect("PR_GET_THP_DISABLE"));
        set_transparent_huge_pages(true).expect("PR_SET_THP_DISABLE");
        assert!(!transparent_huge_pages_disabled().expect("PR_GET_THP_DISABLE"));
    }
}

/// mimalloc as the global allocator, asking for a plain allocation (`mi_malloc`) when the
/// alignment asked for is at most 8 bytes, which every mimalloc block has, and for an
/// aligned one (`mi_malloc_aligned`) otherwise.
///
/// The `mimalloc` crate's allocator asks for an aligned allocation every time. mimalloc's
/// aligned path serves it from the size class's free list while that list holds a block,
/// but once the list is empty it refills nothing: for a size that is not a power of two
/// (96 bytes, say: a stored client, a publication) it over-allocates from the next class
/// instead (an aligned block of 96 bytes taken from the 112-byte class through the
/// generic path), and keeps doing so for as long as the 96-byte list stays empty. A plain
/// allocation refills the list (`_mi_malloc_generic` extends the page) and stays on the
/// fast path.
pub struct Mimalloc;

/// Every mimalloc block is aligned to at least this (its size classes are multiples of
/// the word, in pages aligned further).
const PLAIN_ALIGN: usize = 8;

#[allow(unsafe_code)]
// SAFETY: the methods below forward to mimalloc's own allocation functions, which meet
// `GlobalAlloc`'s contract for the layouts they are given: a plain allocation only for
// alignments of at most `PLAIN_ALIGN`, which every mimalloc block meets; `mi_free` frees
// what either function returned.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: `layout` has a non-zero size (the caller's contract); the plain form is
        // asked only for an alignment every block has.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract); the
        // plain form keeps an alignment every block has.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::Mimalloc;
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn blocks_have_the_alignment_asked_for_and_keep_their_bytes() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 24, 88, 96, 100, 1000, 5000] {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                #[allow(unsafe_code)]
                // SAFETY: non-zero sizes; every block is freed once, with its layout.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size} / {align}"
                    );
                    p.write_bytes(0xa5, size);
                    let q = Mimalloc.realloc(p, layout, size * 3);
                    assert!(
                        !q.is_null() && (q as usize).is_multiple_of(align),
                        "{size} / {align}"
                    );
                    assert!((0..size).all(|k| *q.add(k) == 0xa5));
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).expect("valid"));
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && (z as usize).is_multiple_of(align),
                        "{size} / {align}"
                    );
                    assert!((0..size).all(|k| *z.add(k) == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
