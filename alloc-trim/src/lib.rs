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
