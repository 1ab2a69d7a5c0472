//! gRPC calls on one HTTP/2 connection of our own, on the frames and HPACK of `h2wire`:
//! loadgen's Nacos and native clients, and this server's calls to its peers.
//!
//! Its callers need unary calls and one bidirectional stream (Nacos's
//! `/BiRequestStream/requestBiStream`), with pre-framed messages, so the connection is
//! built for exactly that: the request head of each method is encoded once ([`Method`]:
//! stateless HPACK, constant bytes, extra fields such as a token included); a call, on
//! the caller's task, appends its HEADERS and its one DATA+END_STREAM to the connection's
//! send buffer and writes every frame ready (its own and any other call's) in one write;
//! one task per connection reads the socket, decodes the responses (full HPACK: the server
//! may be grpc-java with Huffman and a dynamic table) and wakes the finished calls. Flow
//! control both ways, the peer's settings (frame size, initial window, concurrent
//! streams), PING and SETTINGS acks, GOAWAY (calls above its last stream fail, new calls
//! fail) and RST_STREAM are handled in `conn.rs`.
//!
//! An [`H2`] is never silently re-opened: when it is gone, its calls fail. A [`Link`]
//! holds one and dials a new one when it has ended.

mod conn;
mod grpc;
mod link;
mod stream;
mod waiters;

pub use link::{DialFuture, DialTls, Dialled, Link, dial, frame_buffer, keep_alive, seal};

use bytes::Bytes;
pub use conn::NACOS_MAX_MESSAGE;
#[cfg(test)]
use conn::{CONNECTION_WINDOW, STREAM_WINDOW};
use conn::{Headers, Inner, Kind};
use h2wire::frame;
use h2wire::hpack;
use parking_lot::Mutex;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

/// The length of a gRPC message's prefix (compressed flag and length).
pub const GRPC_PREFIX: usize = 5;

/// The read buffer: any frame we allow (16 KiB and its head) fits several times.
const READ_BUFFER: usize = 64 * 1024;

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the deadline task when a call opens with a deadline earlier than the one it
    /// sleeps until (or it sleeps until none).
    deadlines: tokio::sync::Notify,
}

/// One HTTP/2 connection to a gRPC server. Cheap to clone.
#[derive(Clone)]
pub struct H2 {
    shared: Arc<Shared>,
}

/// The request head of one gRPC method at one server (`:scheme`, `:authority`, `:path`,
/// the gRPC fields and any extra ones), HPACK-encoded once: every call of it sends the
/// same bytes.
#[derive(Clone, Debug)]
pub struct Method {
    head: Arc<[u8]>,
}

impl Method {
    /// The head of a POST of `path` to `authority` over `scheme` (`http` or `https`),
    /// with `extra` header fields after the gRPC ones (names in lower case).
    pub fn new(scheme: &str, authority: &str, path: &str, extra: &[(&str, &[u8])]) -> Method {
        let mut block = request_head(scheme, authority, path);
        for (name, value) in extra {
            hpack::encode_field(&mut block, name.as_bytes(), value);
        }
        Method { head: block.into() }
    }
}

fn unavailable(e: &(dyn std::error::Error + 'static)) -> Status {
    Status::unavailable(error_chain(e))
}

/// `e` and each of its sources, joined by `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The HPACK block of a gRPC POST to `path`.
fn request_head(scheme: &str, authority: &str, path: &str) -> Vec<u8> {
    let mut block = Vec::with_capacity(96);
    for (name, value) in [
        (":method", "POST"),
        (":scheme", scheme),
        (":authority", authority),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack::encode_field(&mut block, name.as_bytes(), value.as_bytes());
    }
    block
}

impl H2 {
    /// HTTP/2 handshake on `io` (a TCP or TLS stream): sends the preface and our settings;
    /// returns the connection and the task that reads it. A message from the server over
    /// `max_message` bytes resets its stream (its call fails `RESOURCE_EXHAUSTED`).
    pub async fn handshake<IO>(io: IO, max_message: usize) -> Result<(H2, JoinHandle<()>), Status>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (read, mut write) = tokio::io::split(io);
        let mut preface = Vec::new();
        conn::preface(&mut preface);
        write
            .write_all(&preface)
            .await
            .map_err(|e| unavailable(&e))?;
        write.flush().await.map_err(|e| unavailable(&e))?;
        let inner = Inner::new(Box::new(write), max_message);
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            deadlines: tokio::sync::Notify::new(),
        });
        let timers = tokio::spawn(deadlines(shared.clone())).abort_handle();
        let task = tokio::spawn(drive(shared.clone(), Box::new(read), AbortOnDrop(timers)));
        Ok((H2 { shared }, task))
    }

    /// Whether the connection has ended (every call on it fails from now on).
    pub fn is_closed(&self) -> bool {
        self.shared.inner.lock().closed.is_some()
    }

    /// A unary call of `method` with one pre-framed message (its [`GRPC_PREFIX`]
    /// included); returns the reply's protobuf bytes, or [`CallError::Timeout`] after
    /// `timeout` (the stream is then reset).
    pub async fn unary(
        &self,
        method: &Method,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        Call {
            shared: &self.shared,
            head: &method.head,
            frame,
            id: 0,
            deadline: Instant::now() + timeout,
            ticket: 0,
            waiting: None,
        }
        .await
    }

    /// Opens the bi-stream; frames sent on `outbound` go to the server (the first one is
    /// sent with the HEADERS: a server that answers only after the first message, as
    /// grpc-java does, needs it). The stream's request side ends when `outbound` closes.
    pub async fn open_stream(
        &self,
        method: &Method,
        mut outbound: mpsc::Receiver<Bytes>,
    ) -> Result<BiStream, Status> {
        let first = outbound.recv().await.unwrap_or_default();
        let shared = &self.shared;
        let mut ticket = Ticket { shared, ticket: 0 };
        let id = poll_fn(|cx| {
            let mut inner = shared.inner.lock();
            let opened = inner.open(
                cx,
                &mut ticket.ticket,
                Kind::Stream,
                &method.head,
                &first,
                None,
            );
            if opened.is_ready() {
                inner.flush_from_caller(cx);
            }
            opened
        })
        .await?;
        let stream = BiStream {
            shared: shared.clone(),
            id,
        };
        // The response headers (or a trailers-only error).
        poll_fn(|cx| {
            let mut inner = shared.inner.lock();
            let Some(slot) = inner.slot(id) else {
                return Poll::Ready(Err(Status::internal("the stream is gone")));
            };
            if let Some(e) = &slot.error {
                return Poll::Ready(Err(e.clone()));
            }
            if slot.headers {
                return Poll::Ready(Ok(()));
            }
            set_waker(&mut slot.waker, cx);
            Poll::Pending
        })
        .await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(frame) = outbound.recv().await {
                if !send_on(&shared, id, &frame, false) {
                    return;
                }
            }
            send_on(&shared, id, &[], true);
        });
        Ok(stream)
    }
}

/// The place of the bi-stream's opener in the queue for a stream, left when it is dropped.
struct Ticket<'a> {
    shared: &'a Shared,
    ticket: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.ticket != 0 {
            self.shared.inner.lock().leave(&mut self.ticket);
        }
    }
}

/// Queues DATA on stream `id` and has it written; false when the stream is gone.
fn send_on(shared: &Shared, id: u32, data: &[u8], end: bool) -> bool {
    let mut inner = shared.inner.lock();
    let queued = inner.send(id, data, end);
    if inner.has_output() {
        inner.wake_task();
    }
    queued
}

pub(super) fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Why a unary call failed.
#[derive(Debug)]
pub enum CallError {
    /// The transport, the stream or the server's gRPC status.
    Status(Status),
    /// No answer by the call's deadline.
    Timeout,
}

impl From<Status> for CallError {
    fn from(s: Status) -> CallError {
        CallError::Status(s)
    }
}

/// One unary call in flight: `id` 0 until its stream is open. Its deadline is kept by the
/// connection's deadline task (no timer per call); while it waits for a stream (the peer's
/// MAX_CONCURRENT_STREAMS), by a timer of its own. Dropped early, it resets its stream.
struct Call<'a> {
    shared: &'a Arc<Shared>,
    head: &'a [u8],
    frame: Bytes,
    id: u32,
    deadline: Instant,
    /// The call's place in the queue for a stream (0: none).
    ticket: u64,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for Call<'_> {
    type Output = Result<Bytes, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut inner = this.shared.inner.lock();
        if this.id == 0 {
            let deadline = Some(this.deadline);
            match inner.open(
                cx,
                &mut this.ticket,
                Kind::Unary,
                this.head,
                &this.frame,
                deadline,
            ) {
                Poll::Ready(Ok(id)) => this.id = id,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {
                    drop(inner);
                    let timer = this.waiting.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep_until(this.deadline.into()))
                    });
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.shared.inner.lock().leave(&mut this.ticket);
                    return Poll::Ready(Err(CallError::Timeout));
                }
            }
            this.waiting = None;
            if inner.armed.is_none_or(|at| this.deadline < at) {
                inner.armed = Some(this.deadline);
                this.shared.deadlines.notify_one();
            }
            inner.flush_from_caller(cx);
        }
        let id = this.id;
        let Some(slot) = inner.slot(id) else {
            return Poll::Ready(Err(Status::internal("the call's stream is gone").into()));
        };
        if !slot.finished() {
            set_waker(&mut slot.waker, cx);
            return Poll::Pending;
        }
        let result = if slot.timed_out && !slot.remote_end {
            Err(CallError::Timeout)
        } else {
            grpc::unary_result(slot).map_err(CallError::Status)
        };
        this.id = 0;
        inner.remove(id);
        Poll::Ready(result)
    }
}

/// Fails the calls whose deadline passed: sleeps until the earliest deadline of the calls
/// in flight, or until a call opens with an earlier one.
async fn deadlines(shared: Arc<Shared>) {
    let mut wake = Vec::new();
    loop {
        let next = {
            let mut inner = shared.inner.lock();
            let next = inner.expire(Instant::now(), &mut wake);
            inner.armed = next;
            next
        };
        wake_all(&mut wake);
        match next {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), shared.deadlines.notified()).await;
            }
            None => shared.deadlines.notified().await,
        }
    }
}

/// Aborts the deadline task when the reading task ends or is aborted.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.id != 0 {
            self.shared.inner.lock().remove(self.id);
        } else if self.ticket != 0 {
            self.shared.inner.lock().leave(&mut self.ticket);
        }
    }
}

/// The response side of the bi-stream. Dropped, it resets the stream.
pub struct BiStream {
    shared: Arc<Shared>,
    id: u32,
}

impl BiStream {
    /// The next message, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        poll_fn(|cx| {
            let mut inner = self.shared.inner.lock();
            let next = inner.poll_message(self.id, cx);
            if next.is_ready() && inner.has_output() {
                inner.flush_from_caller(cx);
            }
            next
        })
        .await
    }
}

impl Drop for BiStream {
    fn drop(&mut self) {
        self.shared.inner.lock().remove(self.id);
    }
}

/// Reads the connection: applies every frame, writes what must be written (acks, window
/// updates, writes the calls left), until the connection ends; then fails what is left.
async fn drive(
    shared: Arc<Shared>,
    mut read: Box<dyn AsyncRead + Send + Unpin>,
    _timers: AbortOnDrop,
) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut filled = 0usize;
    let mut headers = Headers::new();
    let mut wake: Vec<Waker> = Vec::new();
    let why = poll_fn(|cx| {
        loop {
            {
                let mut inner = shared.inner.lock();
                set_waker(&mut inner.task, cx);
                if inner.has_output() {
                    match inner.flush(cx) {
                        Poll::Ready(Err(e)) => return Poll::Ready(unavailable(&e)),
                        // Read on once the server takes some of what is queued.
                        Poll::Pending if inner.backlog() > conn::OUT_HIGH_WATER => {
                            return Poll::Pending;
                        }
                        _ => {}
                    }
                }
            }
            let mut rb = ReadBuf::new(&mut buf[filled..]);
            match Pin::new(&mut read).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(unavailable(&e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Poll::Ready(Status::unavailable("the server closed the connection"));
                }
                Poll::Ready(Ok(())) => filled += rb.filled().len(),
            }
            let mut inner = shared.inner.lock();
            let mut at = 0;
            let failed = loop {
                match frame::parse(&buf[at..filled], frame::DEFAULT_MAX_FRAME_SIZE) {
                    Ok(Some((f, n))) => {
                        at += n;
                        if let Err(e) = inner.frame(f, &mut headers, &mut wake) {
                            break Some((e.code, e.reason));
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some((e.code, e.reason)),
                }
            };
            if let Some((code, reason)) = failed {
                inner.goaway(code, reason);
                let _ = inner.flush(cx);
                drop(inner);
                wake_all(&mut wake);
                return Poll::Ready(Status::unavailable(format!(
                    "HTTP/2 connection error: {reason} ({code})"
                )));
            }
            buf.copy_within(at..filled, 0);
            filled -= at;
            drop(inner);
            wake_all(&mut wake);
        }
    })
    .await;
    let mut inner = shared.inner.lock();
    inner.close(&why, &mut wake);
    inner.shut();
    drop(inner);
    wake_all(&mut wake);
}

/// Wakes the tasks collected under the lock (after it is released).
fn wake_all(wake: &mut Vec<Waker>) {
    for w in wake.drain(..) {
        w.wake();
    }
}

#[cfg(test)]
mod tests;
