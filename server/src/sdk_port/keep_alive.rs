//! HTTP/2 PING keep-alive of an SDK-port connection: every `interval` the server sends a
//! PING; a connection that does not answer within `timeout` is dead and gets closed (what
//! the tonic server did with `http2_keepalive_interval(30 s)` and its default 20 s
//! timeout). It finds half-open TCP connections whose client vanished without a FIN.
//!
//! This is only the timing: the connection writes the PING [`KeepAlive::poll`] asks for
//! and hands every PING acknowledgement to [`KeepAlive::pong`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Interval between PINGs.
pub(crate) const INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may go unanswered.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// What the keep-alive asks of the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a PING with this payload.
    Ping([u8; 8]),
    /// The last PING went unanswered for the timeout: close the connection.
    Dead,
}

/// The keep-alive state of one connection.
pub(crate) struct KeepAlive {
    timer: Pin<Box<Sleep>>,
    /// The payload of the PING in flight.
    waiting: Option<[u8; 8]>,
    sent: u64,
    interval: Duration,
    timeout: Duration,
}

impl KeepAlive {
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(interval)),
            waiting: None,
            sent: 0,
            interval,
            timeout,
        }
    }

    /// Ready when a PING is due or the peer has left one unanswered for the timeout.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if self.waiting.is_some() {
            return Poll::Ready(Due::Dead);
        }
        self.sent += 1;
        let payload = self.sent.to_be_bytes();
        self.waiting = Some(payload);
        self.timer.as_mut().reset(Instant::now() + self.timeout);
        Poll::Ready(Due::Ping(payload))
    }

    /// The peer acknowledged a PING with `payload`.
    pub(crate) fn pong(&mut self, payload: [u8; 8]) {
        if self.waiting == Some(payload) {
            self.waiting = None;
            self.timer.as_mut().reset(Instant::now() + self.interval);
        }
    }

    /// The timeout, for the log line of a dead connection.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}
