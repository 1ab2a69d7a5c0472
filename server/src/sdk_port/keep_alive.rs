//! HTTP/2 PING keep-alive of an SDK-port connection: every `interval` the server sends a
//! PING; a connection that does not answer within `timeout` is dead and gets closed (what
//! the tonic server did with `http2_keepalive_interval(30 s)` and its default 20 s
//! timeout). It finds half-open TCP connections whose client vanished without a FIN.

use h2::{Ping, PingPong};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Interval between PINGs.
pub(crate) const INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may go unanswered.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// The keep-alive state of one connection.
pub(crate) struct KeepAlive {
    ping: Option<PingPong>,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
    interval: Duration,
    timeout: Duration,
}

impl KeepAlive {
    /// Keep-alive on `ping` (`None`: never pings, never fires).
    pub(crate) fn new(ping: Option<PingPong>, interval: Duration, timeout: Duration) -> Self {
        Self {
            ping,
            timer: Box::pin(tokio::time::sleep(interval)),
            waiting: false,
            interval,
            timeout,
        }
    }

    /// Ready once the peer has left a PING unanswered for `timeout`.
    pub(crate) fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(ping) = self.ping.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if self.waiting {
                match ping.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.waiting = false;
                        self.timer.as_mut().reset(Instant::now() + self.interval);
                    }
                    Poll::Ready(Err(_)) => {
                        // The connection is failing: its own error ends it.
                        self.ping = None;
                        return Poll::Pending;
                    }
                    Poll::Pending => {}
                }
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.waiting {
                return Poll::Ready(());
            }
            if ping.send_ping(Ping::opaque()).is_err() {
                self.ping = None;
                return Poll::Pending;
            }
            self.waiting = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
    }

    /// The timeout, for the log line of a dead connection.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}
