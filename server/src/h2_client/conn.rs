//! The state of one client HTTP/2 connection, shared by the calling tasks and the task
//! that reads the socket: the send buffer and the write half of the socket, the streams in
//! flight, both directions' flow-control windows, the peer's settings, GOAWAY.
//!
//! Every write to the socket goes through [`Inner::flush`] under the connection's lock,
//! from whichever task has frames to send: a call writes its own HEADERS and DATA at once
//! (and the frames of any call queued meanwhile), and hands a write that would block to the
//! reading task. The reading task applies frames with [`Inner::frame`]. No I/O waits while
//! the lock is held: writes are single non-blocking polls.

use bytes::Bytes;
use h2wire::frame::{self, ErrorCode, Frame};
use h2wire::hpack;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::io::AsyncWrite;
use tonic::{Code, Status};

use super::GRPC_PREFIX;
use super::grpc::{Fields, message_len, next_message};
use super::stream::write_within;
pub(super) use super::stream::{Kind, Slot};
use super::waiters::Waiters;

/// Receive windows: large enough that window updates are rare (one per ~half a MiB
/// received) whatever the number of calls in flight.
pub(super) const STREAM_WINDOW: u32 = 1 << 20;
pub(super) const CONNECTION_WINDOW: u32 = 2 << 20;
/// The largest header block (HEADERS and CONTINUATIONs) accepted from the server: a
/// larger one is a connection error.
const MAX_HEADER_BLOCK: usize = 64 << 10;
/// Bytes queued to the server over which the reading task stops reading (a server that
/// sends PINGs or SETTINGS but does not read our acks cannot grow the send buffer further).
pub(super) const OUT_HIGH_WATER: usize = 256 << 10;
/// The largest header list accepted from the server (a larger one fails its call).
const MAX_HEADER_LIST: usize = 1 << 20;
/// The largest message the Nacos Java client accepts from a server (Nacos callers' limit).
pub const NACOS_MAX_MESSAGE: usize = 10 << 20;
/// Buffers of finished streams kept for new ones.
const SPARE_BUFFERS: usize = 16;

pub(super) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

pub(super) struct Inner {
    w: Option<Writer>,
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes written since the last flush of the writer (TLS buffers them).
    unflushed: bool,
    /// The reading task, to hand it a write that would block.
    pub(super) task: Option<Waker>,
    next_id: u32,
    /// The streams in flight (the bi-stream among them) by id, until their caller is done.
    slots: HashMap<u32, Slot, foldhash::fast::FixedState>,
    /// The deadlines of the unary calls, earliest first; an entry whose stream is gone or
    /// finished is dropped when it reaches the top.
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Open streams, against the peer's MAX_CONCURRENT_STREAMS.
    active: u32,
    max_concurrent: u32,
    /// Calls waiting for a stream.
    waiting: Waiters,
    send_window: i64,
    peer_initial_window: i64,
    peer_max_frame: u32,
    /// A dynamic table size update owed at the start of our next header block.
    table_size_update: Option<usize>,
    /// Received connection-level bytes not yet given back.
    recv_unacked: u32,
    /// Why the connection can take no new call.
    pub(super) closed: Option<Status>,
    /// Where the write half is in closing after our GOAWAY (out of stream ids).
    shut: Shut,
    spare: Vec<Vec<u8>>,
    /// The deadline the deadline task sleeps until (it is notified of an earlier one).
    pub(super) armed: Option<Instant>,
    /// The largest message accepted from the server: a larger one resets its stream.
    max_message: usize,
}

/// Closing our write half after a GOAWAY of ours (out of stream ids).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shut {
    No,
    /// Once every unary call open has its answer and everything queued is written.
    AfterCalls,
    /// Done: what is queued later (acks, window updates) is dropped.
    Done,
}

/// A connection error: the GOAWAY we send.
pub(super) type ConnError = h2wire::frame::FrameError;

fn conn_error(code: ErrorCode, reason: &'static str) -> ConnError {
    ConnError::new(code, reason)
}

fn stream_error(code: ErrorCode, reason: &str) -> Status {
    Status::unavailable(format!("stream error: {reason} ({code})"))
}

/// The connection preface, our settings and the connection window.
pub(super) fn preface(out: &mut Vec<u8>) {
    out.extend_from_slice(h2wire::PREFACE);
    frame::write_settings(
        out,
        &[
            (frame::ENABLE_PUSH, 0),
            (frame::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
        ],
    );
    frame::write_window_update(out, 0, CONNECTION_WINDOW - frame::DEFAULT_WINDOW);
}

impl Inner {
    pub(super) fn new(w: Writer, max_message: usize) -> Inner {
        Inner {
            w: Some(w),
            out: Vec::with_capacity(4096),
            out_pos: 0,
            unflushed: false,
            task: None,
            next_id: 1,
            shut: Shut::No,
            slots: HashMap::default(),
            deadlines: BinaryHeap::new(),
            active: 0,
            max_concurrent: u32::MAX,
            waiting: Waiters::default(),
            send_window: i64::from(frame::DEFAULT_WINDOW),
            peer_initial_window: i64::from(frame::DEFAULT_WINDOW),
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            table_size_update: None,
            recv_unacked: 0,
            closed: None,
            spare: Vec::new(),
            armed: None,
            max_message,
        }
    }

    /// Queues a GOAWAY for a connection error of ours.
    pub(super) fn goaway(&mut self, code: ErrorCode, reason: &str) {
        frame::write_goaway(&mut self.out, 0, code, reason.as_bytes());
    }

    /// Bytes queued and not written yet.
    pub(super) fn backlog(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub(super) fn has_output(&self) -> bool {
        self.out_pos < self.out.len() || self.unflushed || self.shut == Shut::AfterCalls
    }

    /// Whether a unary call is still waiting for its answer.
    fn unary_open(&self) -> bool {
        self.slots
            .values()
            .any(|s| s.kind == Kind::Unary && !s.finished())
    }

    /// Writes the send buffer out, then flushes the writer. `Pending` leaves the rest for
    /// the next call (the waker of `cx` is woken when the socket takes more).
    pub(super) fn flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut_now = self.shut == Shut::AfterCalls && !self.unary_open();
        let Some(w) = self.w.as_mut() else {
            if self.shut == Shut::Done {
                // Our side is closed on purpose: nothing more is sent.
                self.out.clear();
                self.out_pos = 0;
                return Poll::Ready(Ok(()));
            }
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        while self.out_pos < self.out.len() {
            match Pin::new(&mut *w).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.out_pos += n;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.unflushed {
            match Pin::new(&mut *w).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if shut_now {
            match Pin::new(&mut *w).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    self.shut = Shut::Done;
                    self.w = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is queued from a calling task: what would block (or fail) is left to
    /// the reading task, which is woken.
    pub(super) fn flush_from_caller(&mut self, cx: &mut Context<'_>) {
        if !matches!(self.flush(cx), Poll::Ready(Ok(()))) {
            self.wake_task();
        }
    }

    pub(super) fn wake_task(&self) {
        if let Some(t) = &self.task {
            t.wake_by_ref();
        }
    }

    pub(super) fn slot(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.get_mut(&id)
    }

    /// Opens a stream: HEADERS with `head`, then `first` as DATA (with END_STREAM for a
    /// unary call, which has a `deadline`).
    /// `Pending` while the peer's MAX_CONCURRENT_STREAMS are all open, the caller queued
    /// under `ticket` (see [`Waiters`]).
    pub(super) fn open(
        &mut self,
        cx: &mut Context<'_>,
        ticket: &mut u64,
        kind: Kind,
        head: &[u8],
        first: &[u8],
        deadline: Option<Instant>,
    ) -> Poll<Result<u32, Status>> {
        let end = kind == Kind::Unary;
        if let Some(why) = self.closed.clone() {
            self.leave(ticket);
            return Poll::Ready(Err(why));
        }
        if !self
            .waiting
            .has_room(*ticket, self.active, self.max_concurrent)
        {
            self.waiting.wait(ticket, cx);
            return Poll::Pending;
        }
        self.waiting.leave(ticket);
        let id = self.next_id;
        if id > frame::MAX_WINDOW {
            // No stream can be opened here any more: the connection ends. A GOAWAY now;
            // once the unary calls in flight have their answers, our write half closes,
            // the server closes its side, the bi-stream ends with it and the client stops
            // being open, so a scenario reconnects as an SDK does.
            let why = Status::unavailable("the connection has used all its stream ids");
            if self.closed.is_none() {
                self.closed = Some(why.clone());
                self.goaway(ErrorCode::NO_ERROR, "stream ids exhausted");
                self.shut = Shut::AfterCalls;
                self.wake_task();
            }
            return Poll::Ready(Err(why));
        }
        self.next_id += 2;
        let data = self.spare.pop().unwrap_or_default();
        let mut slot = Slot {
            kind,
            local_end: false,
            remote_end: false,
            closed: false,
            headers: false,
            data,
            taken: 0,
            error: None,
            waker: None,
            send_window: self.peer_initial_window,
            pending: Vec::new(),
            pending_end: false,
            unacked: 0,
            timed_out: false,
        };
        self.active += 1;
        match self.table_size_update.take() {
            None => frame::write_headers(&mut self.out, id, head, false, self.peer_max_frame),
            Some(size) => {
                let mut block = Vec::with_capacity(head.len() + 4);
                hpack::encode_table_size_update(&mut block, size);
                block.extend_from_slice(head);
                frame::write_headers(&mut self.out, id, &block, false, self.peer_max_frame);
            }
        }
        // Usually the whole message goes out at once; what the windows hold back waits.
        let window = self.send_window.min(slot.send_window);
        let max_frame = self.peer_max_frame as usize;
        let n = write_within(&mut self.out, id, first, end, window, max_frame);
        self.send_window -= n as i64;
        slot.send_window -= n as i64;
        if n == first.len() {
            slot.local_end = end;
        } else {
            slot.pending.extend_from_slice(&first[n..]);
            slot.pending_end = end;
        }
        self.slots.insert(id, slot);
        if let Some(d) = deadline {
            self.deadlines.push(Reverse((d, id)));
        }
        Poll::Ready(Ok(id))
    }

    /// Queues `data` on stream `id` as far as the windows allow, keeping the rest for
    /// WINDOW_UPDATEs. False when the stream is gone or ended.
    pub(super) fn send(&mut self, id: u32, data: &[u8], end: bool) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        if slot.local_end || slot.error.is_some() {
            return false;
        }
        slot.pending.extend_from_slice(data);
        slot.pending_end |= end;
        self.send_pending(id);
        true
    }

    /// Sends what the windows allow of stream `id`'s pending DATA.
    fn send_pending(&mut self, id: u32) {
        let max_frame = self.peer_max_frame as usize;
        let conn_window = self.send_window;
        let out = &mut self.out;
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.local_end {
            return;
        }
        let window = conn_window.min(slot.send_window);
        let n = write_within(out, id, &slot.pending, slot.pending_end, window, max_frame);
        if n == slot.pending.len() && slot.pending_end {
            slot.local_end = true;
        }
        slot.pending.drain(..n);
        slot.send_window -= n as i64;
        self.send_window -= n as i64;
        self.close_if_done(id);
    }

    /// Counts the stream out of MAX_CONCURRENT_STREAMS once both sides ended.
    fn close_if_done(&mut self, id: u32) {
        let Some(slot) = self.slot(id) else {
            return;
        };
        if slot.closed || !(slot.local_end && slot.remote_end) {
            return;
        }
        slot.closed = true;
        self.active -= 1;
        self.waiting.grant(self.active, self.max_concurrent);
    }

    /// Takes a call waiting for a stream out of the queue (it gave up or failed).
    pub(super) fn leave(&mut self, ticket: &mut u64) {
        if self.waiting.leave(ticket) {
            self.waiting.grant(self.active, self.max_concurrent);
        }
    }

    /// Removes stream `id` (its caller is done with it): a stream still open is reset
    /// (CANCEL).
    pub(super) fn remove(&mut self, id: u32) {
        let Some(mut slot) = self.slots.remove(&id) else {
            return;
        };
        if !slot.closed {
            // After a GOAWAY too: only a connection gone takes no RST_STREAM.
            if !(slot.local_end && slot.remote_end) && self.w.is_some() {
                frame::write_rst_stream(&mut self.out, id, ErrorCode::CANCEL);
                self.wake_task();
            }
            self.active -= 1;
            self.waiting.grant(self.active, self.max_concurrent);
        }
        if self.spare.len() < SPARE_BUFFERS && slot.data.capacity() <= STREAM_WINDOW as usize {
            slot.data.clear();
            self.spare.push(std::mem::take(&mut slot.data));
        }
        self.prune_deadlines();
    }

    /// The bi-stream's next message, its error (reported once: the stream is then over),
    /// or `None` at its end; `Pending` (the waker kept) until one of them.
    pub(super) fn poll_message(
        &mut self,
        id: u32,
        cx: &Context<'_>,
    ) -> Poll<Option<Result<Bytes, Status>>> {
        if let Some(m) = self.take_message(id) {
            return Poll::Ready(Some(m));
        }
        let Some(slot) = self.slot(id) else {
            return Poll::Ready(None);
        };
        if let Some(e) = slot.error.take() {
            slot.remote_end = true;
            return Poll::Ready(Some(Err(e)));
        }
        if slot.remote_end {
            if slot.taken < slot.data.len() {
                slot.taken = slot.data.len();
                return Poll::Ready(Some(Err(Status::internal(
                    "the body ended inside a message",
                ))));
            }
            return Poll::Ready(None);
        }
        super::set_waker(&mut slot.waker, cx);
        Poll::Pending
    }

    /// Takes the next whole message of a bi-stream (its window is given back as it
    /// arrived, or now if the reader was behind: see [`give_back`]).
    fn take_message(&mut self, id: u32) -> Option<Result<Bytes, Status>> {
        let slot = self.slots.get_mut(&id)?;
        let message = match next_message(&slot.data[slot.taken..]) {
            Ok(Some(m)) => Bytes::copy_from_slice(m),
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let used = GRPC_PREFIX + message.len();
        slot.taken += used;
        if slot.taken == slot.data.len() {
            slot.data.clear();
            slot.taken = 0;
        } else if slot.taken > slot.data.len() / 2 {
            slot.data.drain(..slot.taken);
            slot.taken = 0;
        }
        give_back(slot, id, &mut self.out);
        Some(Ok(message))
    }

    /// Marks the calls whose deadline passed (their wakers go to `wake`); returns the
    /// earliest deadline still to come.
    pub(super) fn expire(&mut self, now: Instant, wake: &mut Vec<Waker>) -> Option<Instant> {
        while let Some(&Reverse((d, id))) = self.deadlines.peek() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if let Some(slot) = self.slots.get_mut(&id).filter(|s| !s.finished()) {
                slot.timed_out = true;
                wake.extend(slot.waker.take());
            }
        }
        self.prune_deadlines();
        self.deadlines.peek().map(|Reverse((d, _))| *d)
    }

    /// Drops the earliest deadlines while their calls are gone or finished.
    fn prune_deadlines(&mut self) {
        while let Some(&Reverse((_, id))) = self.deadlines.peek() {
            if self.slots.get(&id).is_some_and(|s| !s.finished()) {
                break;
            }
            self.deadlines.pop();
        }
    }

    /// Makes `next` the id of the next stream opened (tests of running out of ids).
    #[cfg(test)]
    pub(super) fn skip_stream_ids(&mut self, next: u32) {
        self.next_id = next;
    }

    /// The number of streams kept (tests).
    #[cfg(test)]
    pub(super) fn table_len(&self) -> (usize, usize) {
        (self.slots.len(), self.deadlines.len())
    }

    /// Ends the connection: every call not finished fails with `why`.
    pub(super) fn close(&mut self, why: &Status, wake: &mut Vec<Waker>) {
        if self.closed.is_none() {
            self.closed = Some(why.clone());
        }
        for slot in self.slots.values_mut() {
            slot.fail(why.clone());
            wake.extend(slot.waker.take());
        }
        self.waiting.wake_all(wake);
    }

    /// Drops the write half (the socket closes once the reading task ends too).
    pub(super) fn shut(&mut self) {
        self.w = None;
    }

    /// Applies one frame from the server; wakers of the calls it finishes go to `wake`.
    pub(super) fn frame(
        &mut self,
        f: Frame<'_>,
        headers: &mut Headers,
        wake: &mut Vec<Waker>,
    ) -> Result<(), ConnError> {
        if headers.stream != 0 && !matches!(f, Frame::Continuation { .. }) {
            return Err(conn_error(
                ErrorCode::PROTOCOL_ERROR,
                "a frame between HEADERS and their CONTINUATION",
            ));
        }
        match f {
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => self.data(stream, end_stream, data, flow_len, wake)?,
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
            } => {
                self.opened(stream, "HEADERS on a stream we did not open")?;
                if end_headers {
                    // The whole block in one frame (the usual case): decoded where it is.
                    self.header_block(&mut headers.decoder, stream, end_stream, block, wake)?;
                } else {
                    headers.block.clear();
                    headers.block.extend_from_slice(block);
                    headers.stream = stream;
                    headers.end_stream = end_stream;
                }
            }
            Frame::Continuation {
                stream,
                end_headers,
                block,
            } => {
                if headers.stream == 0 || stream != headers.stream {
                    return Err(conn_error(
                        ErrorCode::PROTOCOL_ERROR,
                        "CONTINUATION without HEADERS",
                    ));
                }
                if headers.block.len() + block.len() > MAX_HEADER_BLOCK {
                    return Err(conn_error(
                        ErrorCode::ENHANCE_YOUR_CALM,
                        "a header block over 64 KiB",
                    ));
                }
                headers.block.extend_from_slice(block);
                if end_headers {
                    let stream = std::mem::take(&mut headers.stream);
                    let Headers {
                        decoder,
                        end_stream,
                        block,
                        ..
                    } = headers;
                    self.header_block(decoder, stream, *end_stream, block, wake)?;
                }
            }
            Frame::RstStream { stream, code } => {
                self.opened(stream, "RST_STREAM on a stream we did not open")?;
                if self.slots.contains_key(&stream) {
                    let why = Status::unavailable(format!("stream reset by the server: {code}"));
                    self.end_stream(stream, why, wake);
                }
            }
            Frame::Settings { ack: true, .. } => {}
            Frame::Settings { ack: false, params } => {
                for (id, value) in frame::settings_params(params) {
                    self.setting(id, value)?;
                }
                frame::write_settings_ack(&mut self.out);
            }
            Frame::Ping { ack: false, data } => frame::write_ping(&mut self.out, true, data),
            Frame::Ping { ack: true, .. } => {}
            Frame::GoAway {
                last_stream,
                code,
                debug,
            } => {
                let why = Status::unavailable(format!(
                    "the server sent GOAWAY ({code}): {}",
                    String::from_utf8_lossy(debug)
                ));
                for (_, slot) in self.slots.iter_mut().filter(|(id, _)| **id > last_stream) {
                    slot.fail(why.clone());
                    wake.extend(slot.waker.take());
                }
                if self.closed.is_none() {
                    self.closed = Some(why);
                }
                self.waiting.wake_all(wake);
            }
            Frame::WindowUpdate {
                stream: 0,
                increment,
            } => {
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(conn_error(
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "connection window over 2^31-1",
                    ));
                }
                self.send_all_pending();
            }
            Frame::WindowUpdate { stream, increment } => {
                self.opened(stream, "WINDOW_UPDATE on a stream we did not open")?;
                let Some(slot) = self.slot(stream) else {
                    return Ok(());
                };
                let bad = if increment == 0 {
                    Some((ErrorCode::PROTOCOL_ERROR, "zero WINDOW_UPDATE increment"))
                } else {
                    slot.send_window += i64::from(increment);
                    (slot.send_window > i64::from(frame::MAX_WINDOW))
                        .then_some((ErrorCode::FLOW_CONTROL_ERROR, "stream window over 2^31-1"))
                };
                match bad {
                    Some((code, reason)) => self.reset(stream, code, reason, wake),
                    None => self.send_pending(stream),
                }
            }
            Frame::PushPromise { .. } => {
                return Err(conn_error(
                    ErrorCode::PROTOCOL_ERROR,
                    "PUSH_PROMISE with push disabled",
                ));
            }
            Frame::Priority { .. } | Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    /// A connection error unless `stream` is one of ours (odd: no push) already opened: a
    /// frame on any other is on an idle stream (RFC 9113 §5.1).
    fn opened(&self, stream: u32, what: &'static str) -> Result<(), ConnError> {
        if stream >= self.next_id || stream.is_multiple_of(2) {
            return Err(conn_error(ErrorCode::PROTOCOL_ERROR, what));
        }
        Ok(())
    }

    /// `what` (a frame) on stream `id` after the server ended it: a stream error (RFC 9113
    /// §5.1, half-closed (remote)).
    fn after_end(&mut self, id: u32, what: &str, wake: &mut Vec<Waker>) {
        let reason = format!("{what} after the end of the stream");
        self.reset(id, ErrorCode::STREAM_CLOSED, &reason, wake);
    }

    /// Resets stream `id` from our side and fails its call.
    fn reset(&mut self, id: u32, code: ErrorCode, reason: &str, wake: &mut Vec<Waker>) {
        self.reset_with(id, code, stream_error(code, reason), wake);
    }

    /// Resets stream `id` from our side and fails its call with `why`.
    fn reset_with(&mut self, id: u32, code: ErrorCode, why: Status, wake: &mut Vec<Waker>) {
        frame::write_rst_stream(&mut self.out, id, code);
        self.end_stream(id, why, wake);
    }

    /// Ends stream `id` both ways (a reset) and fails its call with `why`.
    fn end_stream(&mut self, id: u32, why: Status, wake: &mut Vec<Waker>) {
        if let Some(slot) = self.slot(id) {
            slot.fail(why);
            slot.local_end = true;
            slot.remote_end = true;
            wake.extend(slot.waker.take());
        }
        self.close_if_done(id);
    }

    fn setting(&mut self, id: u16, value: u32) -> Result<(), ConnError> {
        frame::check_setting(id, value)?;
        match id {
            // We never index, but a lowered limit must be acknowledged in our next header
            // block (RFC 7541 §4.2).
            frame::HEADER_TABLE_SIZE if (value as usize) < hpack::DEFAULT_TABLE_SIZE => {
                self.table_size_update = Some(value as usize);
            }
            // A server may not enable push (RFC 9113 §6.5.2).
            frame::ENABLE_PUSH if value != 0 => {
                return Err(conn_error(
                    ErrorCode::PROTOCOL_ERROR,
                    "ENABLE_PUSH from a server not 0",
                ));
            }
            frame::MAX_CONCURRENT_STREAMS => {
                self.max_concurrent = value;
                self.waiting.grant(self.active, self.max_concurrent);
            }
            frame::INITIAL_WINDOW_SIZE => {
                let delta = i64::from(value) - self.peer_initial_window;
                self.peer_initial_window = i64::from(value);
                for slot in self.slots.values_mut() {
                    slot.send_window += delta;
                    if slot.send_window > i64::from(frame::MAX_WINDOW) {
                        return Err(conn_error(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "stream window over 2^31-1",
                        ));
                    }
                }
                if delta > 0 {
                    self.send_all_pending();
                }
            }
            frame::MAX_FRAME_SIZE => self.peer_max_frame = value,
            _ => {}
        }
        Ok(())
    }

    fn send_all_pending(&mut self) {
        let ids: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.local_end && !s.pending.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send_pending(id);
        }
    }

    fn data(
        &mut self,
        stream: u32,
        end_stream: bool,
        data: &[u8],
        flow_len: u32,
        wake: &mut Vec<Waker>,
    ) -> Result<(), ConnError> {
        self.opened(stream, "DATA on a stream we did not open")?;
        // Bytes not given back yet are the windows the server used.
        if self.recv_unacked + flow_len > CONNECTION_WINDOW {
            return Err(conn_error(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            ));
        }
        // The connection window is given back at once: what arrives is buffered with its
        // call (a stream's own window bounds that).
        frame::hand_back(
            &mut self.out,
            0,
            &mut self.recv_unacked,
            flow_len,
            CONNECTION_WINDOW,
        );
        let max_message = self.max_message;
        let Some(slot) = self.slots.get_mut(&stream) else {
            return Ok(());
        };
        if slot.unacked + flow_len > STREAM_WINDOW {
            return Err(conn_error(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the stream window",
            ));
        }
        if slot.remote_end {
            self.after_end(stream, "DATA", wake);
            return Ok(());
        }
        if !slot.headers {
            self.reset(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "DATA before the response headers",
                wake,
            );
            return Ok(());
        }
        slot.data.extend_from_slice(data);
        // Padding included.
        slot.unacked += flow_len;
        let buffered = &slot.data[slot.taken..];
        let too_large = if slot.kind == Kind::Unary {
            buffered.len() > GRPC_PREFIX + max_message
        } else {
            buffered.len() >= GRPC_PREFIX && message_len(buffered) > max_message
        };
        if too_large {
            let why = Status::resource_exhausted(format!(
                "a message from the server over {max_message} bytes"
            ));
            self.reset_with(stream, ErrorCode::CANCEL, why, wake);
            return Ok(());
        }
        if end_stream {
            slot.end_remote(wake);
            self.close_if_done(stream);
        } else {
            give_back(slot, stream, &mut self.out);
            if slot.kind == Kind::Stream {
                wake.extend(slot.waker.take());
            }
        }
        Ok(())
    }

    /// A whole header block (HEADERS and any CONTINUATIONs) of `stream`.
    fn header_block(
        &mut self,
        decoder: &mut hpack::Decoder,
        stream: u32,
        end_stream: bool,
        block: &[u8],
        wake: &mut Vec<Waker>,
    ) -> Result<(), ConnError> {
        let mut fields = Fields::default();
        let decoded = decoder.decode(block, MAX_HEADER_LIST, |name, value| {
            fields.add(name, value)
        });
        if let Err(e) = decoded {
            if e.kind == hpack::HpackErrorKind::Compression {
                return Err(conn_error(ErrorCode::COMPRESSION_ERROR, e.reason));
            }
            self.reset(stream, ErrorCode::PROTOCOL_ERROR, e.reason, wake);
            return Ok(());
        }
        let Some(slot) = self.slot(stream) else {
            return Ok(());
        };
        if slot.remote_end {
            self.after_end(stream, "HEADERS", wake);
            return Ok(());
        }
        if !slot.headers {
            slot.headers = true;
            if fields.status != Some(200) {
                let status = fields.status.unwrap_or(0);
                slot.fail(Status::unknown(format!(
                    "HTTP status {}",
                    tonic::codegen::http::StatusCode::from_u16(status)
                        .map_or_else(|_| status.to_string(), |s| s.to_string())
                )));
            } else if let Some(status) = fields.grpc_status() {
                // A trailers-only response: an error before any message.
                slot.fail(if status.code() == Code::Ok {
                    Status::internal("the call ended without a message")
                } else {
                    status
                });
            }
            // The bi-stream's opener waits for the headers; a unary call only for its end
            // (or an error).
            if slot.kind == Kind::Stream || slot.error.is_some() {
                wake.extend(slot.waker.take());
            }
        } else if !end_stream {
            self.reset(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "trailers without END_STREAM",
                wake,
            );
            return Ok(());
        } else {
            // An OK status adds nothing to the message; without a status the call failed.
            match fields.grpc_status() {
                Some(status) if status.code() == Code::Ok => {}
                Some(status) => slot.fail(status),
                None => slot.fail(Status::internal("trailers without grpc-status")),
            }
        }
        if end_stream {
            slot.end_remote(wake);
            self.close_if_done(stream);
        }
        Ok(())
    }
}

/// Gives the bytes received on stream `id` (its `slot`) back to its window once half of it
/// is used: always for a unary call (its size is bounded by the connection's largest message) and for the
/// bi-stream while its reader keeps up (less than a window buffered) or while the message
/// buffered is not whole yet (its reader cannot make room).
fn give_back(slot: &mut Slot, id: u32, out: &mut Vec<u8>) {
    if slot.unacked < STREAM_WINDOW / 2 || slot.remote_end {
        return;
    }
    let buffered = &slot.data[slot.taken..];
    if slot.kind == Kind::Stream
        && buffered.len() >= STREAM_WINDOW as usize
        && matches!(next_message(buffered), Ok(Some(_)))
    {
        return;
    }
    let n = std::mem::take(&mut slot.unacked);
    frame::write_window_update(out, id, n);
}

/// The header block being received (HEADERS then CONTINUATIONs) and the decoder of every
/// block of the connection; the reading task's own.
pub(super) struct Headers {
    pub(super) decoder: hpack::Decoder,
    /// The stream of the block in progress; 0 when none is.
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

impl Headers {
    pub(super) fn new() -> Headers {
        Headers {
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            stream: 0,
            end_stream: false,
            block: Vec::new(),
        }
    }
}
