//! The client's side of one stream, the hasher of the stream table, and the writing of
//! DATA within the flow-control windows.

use h2wire::frame;
use std::task::Waker;
use tonic::Status;

/// What a stream is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// One request message, one reply message.
    Unary,
    /// The bi-stream: messages both ways for the connection's life.
    Stream,
}

/// One stream in flight.
pub(super) struct Slot {
    pub(super) kind: Kind,
    /// We sent END_STREAM (or reset).
    pub(super) local_end: bool,
    /// The server sent END_STREAM (or reset).
    pub(super) remote_end: bool,
    /// The stream no longer counts against MAX_CONCURRENT_STREAMS.
    pub(super) closed: bool,
    /// The response headers arrived.
    pub(super) headers: bool,
    /// Response DATA not yet taken, from `taken` on.
    pub(super) data: Vec<u8>,
    pub(super) taken: usize,
    /// Why the call failed (reset, GOAWAY, a bad response, the connection's end).
    pub(super) error: Option<Status>,
    pub(super) waker: Option<Waker>,
    pub(super) send_window: i64,
    /// DATA the windows did not let out yet, and whether END_STREAM follows it.
    pub(super) pending: Vec<u8>,
    pub(super) pending_end: bool,
    /// Received bytes taken by the reader but not yet given back (the bi-stream).
    pub(super) unacked: u32,
    /// The call's deadline passed.
    pub(super) timed_out: bool,
}

impl Slot {
    /// Whether the caller has all it will get.
    pub(super) fn finished(&self) -> bool {
        self.remote_end || self.error.is_some() || self.timed_out
    }

    pub(super) fn fail(&mut self, status: Status) {
        if self.error.is_none() && !self.remote_end {
            self.error = Some(status);
        }
    }

    /// The server ended the stream: its caller is woken.
    pub(super) fn end_remote(&mut self, wake: &mut Vec<Waker>) {
        self.remote_end = true;
        wake.extend(self.waker.take());
    }
}

/// Writes as much of `data` as `window` allows as DATA frames of stream `id` (of at most
/// `max_frame` bytes), END_STREAM on the last when `end` and all of it went; returns the
/// bytes written.
pub(super) fn write_within(
    out: &mut Vec<u8>,
    id: u32,
    data: &[u8],
    end: bool,
    window: i64,
    max_frame: usize,
) -> usize {
    let n = data.len().min(window.max(0) as usize);
    let end = end && n == data.len();
    if n == 0 {
        if end {
            frame::write_data(out, id, &[], true);
        }
        return 0;
    }
    let mut sent = 0;
    while sent < n {
        let len = (n - sent).min(max_frame);
        frame::write_data(out, id, &data[sent..sent + len], end && sent + len == n);
        sent += len;
    }
    n
}
