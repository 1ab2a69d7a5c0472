//! How a lane sleeps until its next item is due (`--pacer`).
//!
//! * [`Pacing::Tick`]: tokio's timer. Its wheel has a resolution of one millisecond and
//!   rounds a deadline up to the next tick, so an item goes out 0–1 ms late, and the items
//!   due within a tick go out together.
//! * [`Pacing::Timerfd`]: a `timerfd` of the lane's own, registered with the runtime's
//!   I/O driver ([`AsyncFd`]) and armed at the next item's instant to the nanosecond
//!   (`TFD_TIMER_ABSTIME` on `CLOCK_MONOTONIC`, the clock of [`Instant`]). The worker that
//!   parks on the driver wakes from `epoll_wait` when it fires and runs the lane itself:
//!   no thread of its own and no wake-up across threads. Costs one `timerfd_settime` per
//!   wake; the fd is never read (the runtime's registration is edge-triggered and every
//!   expiry is a new edge).
//! * [`Pacing::Thread`]: the pacing thread of [`super::pacer`] (a futex wait, then a
//!   wake-up of the lane's worker from another thread).
//!
//! Whichever the pacing, the items due when the lane wakes go out together.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Instant;

use rustix::time::{
    ClockId, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, clock_gettime,
    timerfd_create, timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::pacer::{Pacer, Timer};

/// How the lanes of open-model queries sent as requests of their own wake (`--pacer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Pacing {
    /// tokio's timer: 1 ms resolution, deadlines rounded up to the next tick. The default:
    /// the cheapest in CPU per query (the queries due within a tick share a wake-up).
    #[default]
    Tick,
    /// A timerfd per lane, armed at the next query's instant; woken by the lane's own
    /// runtime worker from epoll.
    Timerfd,
    /// A pacing thread that wakes the lanes (futex timeouts, a cross-thread wake-up each).
    Thread,
}

impl Pacing {
    /// Its name, as `--pacer` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Pacing::Tick => "tick",
            Pacing::Timerfd => "timerfd",
            Pacing::Thread => "thread",
        }
    }
}

/// The timers of one run's lanes, each lane's drawn by [`Timers::lane`].
pub(crate) enum Timers {
    /// tokio's timer.
    Tick,
    /// A timerfd per lane.
    Timerfd,
    /// The pacing thread.
    Thread(Pacer),
}

impl Timers {
    /// The timers of `pacing` (tokio's when a thread or timerfd cannot be had, said on
    /// stderr).
    pub(crate) fn start(pacing: Pacing) -> Self {
        match pacing {
            Pacing::Tick => Timers::Tick,
            Pacing::Timerfd => Timers::Timerfd,
            Pacing::Thread => match Pacer::start() {
                Ok(p) => Timers::Thread(p),
                Err(e) => {
                    eprintln!("loadgen: no pacer thread ({e}); lanes use tokio's timer");
                    Timers::Tick
                }
            },
        }
    }

    /// A lane's timer. Call it inside the runtime (a timerfd registers with its driver).
    pub(crate) fn lane(&self) -> LaneTimer {
        match self {
            Timers::Tick => LaneTimer::Tick,
            Timers::Timerfd => match FdTimer::new() {
                Ok(t) => LaneTimer::Fd(t),
                Err(e) => {
                    eprintln!("loadgen: no timerfd ({e}); the lane uses tokio's timer");
                    LaneTimer::Tick
                }
            },
            Timers::Thread(p) => LaneTimer::Thread(p.timer()),
        }
    }
}

/// One lane's timer.
pub enum LaneTimer {
    /// tokio's timer.
    Tick,
    /// A timerfd of its own.
    Fd(FdTimer),
    /// A slot of the pacing thread.
    Thread(Timer),
}

impl LaneTimer {
    /// Whether it wakes within microseconds of an instant (not on a millisecond tick).
    pub fn is_precise(&self) -> bool {
        !matches!(self, LaneTimer::Tick)
    }

    /// Completes at `at` or soon after (at once if it has passed). Cancel-safe: dropping
    /// the wait leaves the timer ready for another.
    pub async fn sleep_until(&mut self, at: Instant) {
        match self {
            LaneTimer::Tick => tokio::time::sleep_until(at.into()).await,
            LaneTimer::Fd(t) => t.sleep_until(at).await,
            LaneTimer::Thread(t) => t.sleep_until(at).await,
        }
    }
}

/// A timerfd registered with the runtime's I/O driver; see the module docs.
pub struct FdTimer {
    fd: AsyncFd<OwnedFd>,
    /// An instant and the `CLOCK_MONOTONIC` reading taken just after it (the same clock,
    /// so the reading is the instant plus the tens of nanoseconds between the two reads:
    /// an expiry computed from it is never early).
    base: Instant,
    base_ns: u128,
    /// The instant the timer is armed at (None: disarmed or fired).
    armed: Option<Instant>,
}

impl FdTimer {
    /// A new, disarmed timer. Call it inside the runtime.
    pub fn new() -> io::Result<Self> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        let base = Instant::now();
        let now = clock_gettime(ClockId::Monotonic);
        let base_ns = u128::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
            + u128::try_from(now.tv_nsec).unwrap_or(0);
        // The safe constructor, deprecated because an arbitrary `AsRawFd` may close or swap
        // its descriptor while registered (unsafe code is forbidden here): an `OwnedFd`,
        // owned by the `AsyncFd` and never handed out mutably, keeps the one descriptor open
        // for the registration's whole life, which is what `register_with_interest` asks.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(fd, Interest::READABLE)?;
        Ok(Self {
            fd,
            base,
            base_ns,
            armed: None,
        })
    }

    /// `at` on `CLOCK_MONOTONIC`.
    fn timespec(&self, at: Instant) -> Timespec {
        let ns = self.base_ns + at.saturating_duration_since(self.base).as_nanos();
        Timespec {
            tv_sec: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
            tv_nsec: (ns % 1_000_000_000) as _,
        }
    }

    fn arm(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: self.timespec(at),
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::ABSTIME, &spec)?;
        self.armed = Some(at);
        Ok(())
    }

    /// Completes at `at` (at once if it has passed). If the timerfd fails (it does not,
    /// short of a closed descriptor), falls back to tokio's timer for this wait.
    pub async fn sleep_until(&mut self, at: Instant) {
        loop {
            if Instant::now() >= at {
                return;
            }
            if self.arm(at).is_err() {
                self.armed = None;
                tokio::time::sleep_until(at.into()).await;
                return;
            }
            match self.fd.readable().await {
                // Readiness may be from an earlier expiry (the lane woke for something
                // else before it, then re-armed): clear it and check the time again; a
                // later expiry is a new edge, so it is not lost.
                Ok(mut ready) => {
                    ready.clear_ready();
                    if Instant::now() >= at {
                        self.armed = None;
                        return;
                    }
                }
                Err(_) => {
                    self.armed = None;
                    tokio::time::sleep_until(at.into()).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timerfd_wakes_at_its_instant_and_not_before() {
        let tasks: Vec<_> = (0..4u64)
            .map(|i| {
                tokio::spawn(async move {
                    let mut timer = LaneTimer::Fd(FdTimer::new().expect("timerfd"));
                    assert!(timer.is_precise());
                    let mut late = Vec::new();
                    for _ in 0..50 {
                        let at = Instant::now() + Duration::from_micros(200 + 150 * i);
                        timer.sleep_until(at).await;
                        assert!(Instant::now() >= at, "timer {i} woke before its instant");
                        late.push(Instant::now().saturating_duration_since(at));
                    }
                    late
                })
            })
            .collect();
        let mut late = Vec::new();
        for t in tasks {
            late.extend(
                tokio::time::timeout(Duration::from_secs(30), t)
                    .await
                    .expect("a timer never woke")
                    .expect("task"),
            );
        }
        // Not a timing assertion (a busy machine delays any wake-up): only that the waits
        // do not round to tokio's millisecond ticks every time.
        late.sort();
        assert!(
            late[late.len() / 2] < Duration::from_millis(50),
            "median overshoot {:?}",
            late[late.len() / 2]
        );
    }

    #[tokio::test]
    async fn a_dropped_wait_and_an_earlier_expiry_leave_no_early_wake_up() {
        let mut timer = FdTimer::new().expect("timerfd");
        // Armed far ahead, then dropped.
        {
            let far = timer.sleep_until(Instant::now() + Duration::from_secs(60));
            let mut far = std::pin::pin!(far);
            assert!(futures::poll!(far.as_mut()).is_pending());
        }
        // Armed, left to expire unobserved, then re-armed later: the stale readiness of the
        // first expiry does not end the second wait early.
        let first = Instant::now() + Duration::from_micros(100);
        {
            let w = timer.sleep_until(first);
            let mut w = std::pin::pin!(w);
            assert!(futures::poll!(w.as_mut()).is_pending());
        }
        std::thread::sleep(Duration::from_millis(2));
        let second = Instant::now() + Duration::from_millis(20);
        timer.sleep_until(second).await;
        assert!(Instant::now() >= second, "woke before the second instant");
        // A past instant completes at once.
        tokio::time::timeout(
            Duration::from_secs(5),
            timer.sleep_until(Instant::now() - Duration::from_millis(1)),
        )
        .await
        .expect("a past instant completes at once");
    }
}
