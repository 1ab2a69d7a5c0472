//! The waker of everything an SDK-port connection polls on its own task (the socket, the
//! bridged streams' services and bodies, the keep-alive and shutdown timers), which drops
//! the wake-ups the task gives itself.
//!
//! A bridged stream's service often wakes the task from within the task's own poll (a
//! request body read, a message queued to the response stream the same round polls), and
//! the round that follows handles it anyway. Passed straight to the runtime, such a
//! wake-up costs a second poll of the whole task, finding nothing to do. Here a wake-up
//! that arrives while the task is polling only sets a flag; before the task returns
//! `Pending` it checks the flag and polls once more if it was set after the last round
//! began, so no wake-up is lost (a wake-up from another thread is either seen by that
//! check or, once the task has stopped polling, passed to the runtime).
//!
//! tokio's cooperative budget returns `Pending` and wakes the task at once when the
//! task has done its share of I/O; a second flagged round without progress hands that
//! wake-up to the runtime, so the task yields instead of spinning.

use futures::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Wakeups {
    /// The task's own waker, for wake-ups that arrive while it is not polling.
    task: AtomicWaker,
    /// The task is polling (or handling what it polled) and polls every source again
    /// before it returns `Pending`.
    polling: AtomicBool,
    /// A wake-up arrived since the current round began.
    woken: AtomicBool,
}

impl Wake for Wakeups {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst) {
            self.task.wake();
        }
    }
}

impl Wakeups {
    /// A new set of wake-ups and the waker to poll the connection's sources with.
    pub(crate) fn new() -> (Arc<Self>, Waker) {
        let w = Arc::new(Self::default());
        let waker = Waker::from(w.clone());
        (w, waker)
    }

    /// Polls `sources` (every source of the task, with `waker`, the waker of `self`)
    /// until one is ready or none was woken during the round. After `Ready` the task
    /// still counts as polling: the caller must handle the event without yielding and
    /// call this again (its own wake-ups meanwhile are then answered by that round).
    pub(crate) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        waker: &Waker,
        mut sources: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.task.register(cx.waker());
        let mut inner = Context::from_waker(waker);
        let mut again = false;
        loop {
            self.polling.store(true, SeqCst);
            self.woken.store(false, SeqCst);
            if let Poll::Ready(v) = sources(&mut inner) {
                return Poll::Ready(v);
            }
            self.polling.store(false, SeqCst);
            if !self.woken.swap(false, SeqCst) {
                return Poll::Pending;
            }
            if again {
                // Woken twice without progress: likely the cooperative budget. Yield.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            again = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wake-ups that reach the task.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn wakeups_while_polling_are_dropped_and_the_others_reach_the_task() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);
        let (w, waker) = Wakeups::new();
        // A source that wakes itself and is ready: no wake-up reaches the task.
        let r = w.poll(&mut cx, &waker, |icx| {
            icx.waker().wake_by_ref();
            Poll::Ready(1)
        });
        assert_eq!(r, Poll::Ready(1));
        assert_eq!(count.0.load(SeqCst), 0);
        // Woken during its round, then pending: polled once more, not handed to the task.
        let mut rounds = 0;
        let r: Poll<()> = w.poll(&mut cx, &waker, |icx| {
            rounds += 1;
            if rounds == 1 {
                icx.waker().wake_by_ref();
            }
            Poll::Pending
        });
        assert_eq!((r, rounds), (Poll::Pending, 2));
        assert_eq!(count.0.load(SeqCst), 0);
        // Once the task has stopped polling, a wake-up goes to the task.
        waker.wake_by_ref();
        assert_eq!(count.0.load(SeqCst), 1);
    }

    #[test]
    fn a_source_that_always_wakes_itself_yields_to_the_runtime() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);
        let (w, waker) = Wakeups::new();
        let mut rounds = 0;
        let r: Poll<()> = w.poll(&mut cx, &waker, |icx| {
            rounds += 1;
            icx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!((r, rounds), (Poll::Pending, 2));
        assert_eq!(
            count.0.load(SeqCst),
            1,
            "the task is woken to poll again later"
        );
    }
}
