//! Wake-ups finer than tokio's timer, for open-model sources.
//!
//! tokio's timer wheel has a resolution of one millisecond: a task that sleeps until an
//! instant wakes at the first tick after it, up to a millisecond late. A lane whose queries
//! are due every few hundred microseconds would then send them late and in bunches, and the
//! corrected latency (counted from the intended instant) would charge loadgen's lateness to
//! the system under test. The pacer is one thread that sleeps until the earliest instant
//! any lane asked for (a futex wait with a timeout: the kernel's high-resolution timer,
//! within the thread's timer slack, 50 µs by default) and wakes the lanes whose instants
//! have come.
//!
//! Each lane has one [`Timer`], a slot in the pacer's table: a lane waits for one instant
//! at a time, and dropping the wait (the lane woke for another reason) clears its slot, so
//! no stale wake-up is left behind. The thread ends once every timer is gone.

use parking_lot::{Condvar, Mutex};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The longest the thread sleeps without being asked, to notice that every timer is gone.
const IDLE: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Slot {
    at: Option<Instant>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    /// The instant the thread sleeps until (None: idle).
    target: Option<Instant>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
}

/// The pacing thread (see the module docs); hands out one [`Timer`] per lane.
pub struct Pacer {
    inner: Arc<Inner>,
}

impl Pacer {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = inner.clone();
        std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || run(&thread))?;
        Ok(Self { inner })
    }

    /// A new timer (a slot of its own).
    pub fn timer(&self) -> Timer {
        let mut st = self.inner.state.lock();
        st.slots.push(Slot::default());
        Timer {
            inner: self.inner.clone(),
            slot: st.slots.len() - 1,
        }
    }
}

fn run(inner: &Arc<Inner>) {
    let mut st = inner.state.lock();
    loop {
        // Only the thread's own reference and the `Pacer` handle's, if kept, are left.
        if Arc::strong_count(inner) == 1 {
            return;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for slot in &mut st.slots {
            match slot.at {
                Some(at) if at <= now => {
                    slot.at = None;
                    if let Some(w) = slot.waker.take() {
                        w.wake();
                    }
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        st.target = next;
        let until = next.unwrap_or(now + IDLE).min(now + IDLE);
        inner.wake.wait_until(&mut st, until);
    }
}

/// One lane's timer.
pub struct Timer {
    inner: Arc<Inner>,
    slot: usize,
}

impl Timer {
    /// Completes at `at` (at once if it has passed), within the thread's timer slack.
    pub fn sleep_until(&mut self, at: Instant) -> Sleep<'_> {
        Sleep {
            timer: self,
            at,
            armed: false,
        }
    }
}

/// The wait of [`Timer::sleep_until`].
pub struct Sleep<'a> {
    timer: &'a mut Timer,
    at: Instant,
    armed: bool,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.at {
            return Poll::Ready(());
        }
        let inner = &this.timer.inner;
        let mut st = inner.state.lock();
        let slot = &mut st.slots[this.timer.slot];
        slot.at = Some(this.at);
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        this.armed = true;
        if st.target.is_none_or(|t| this.at < t) {
            st.target = Some(this.at);
            inner.wake.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.timer.inner.state.lock();
            let slot = &mut st.slots[self.timer.slot];
            slot.at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_timer_wakes_at_its_instant_and_not_before() {
        let pacer = Pacer::start().unwrap();
        let tasks: Vec<_> = (0..4u64)
            .map(|i| {
                let mut timer = pacer.timer();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let at = Instant::now() + Duration::from_micros(200 + 150 * i);
                        timer.sleep_until(at).await;
                        assert!(Instant::now() >= at, "timer {i} woke before its instant");
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("a timer never woke")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_dropped_wait_leaves_no_wake_up_and_the_thread_ends_with_the_timers() {
        let pacer = Pacer::start().unwrap();
        let mut timer = pacer.timer();
        {
            let sleep = timer.sleep_until(Instant::now() + Duration::from_secs(60));
            let mut sleep = std::pin::pin!(sleep);
            assert!(futures::poll!(sleep.as_mut()).is_pending());
        }
        assert!(pacer.inner.state.lock().slots[0].at.is_none());
        let inner = Arc::downgrade(&pacer.inner);
        drop(timer);
        drop(pacer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while inner.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the pacer thread did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
