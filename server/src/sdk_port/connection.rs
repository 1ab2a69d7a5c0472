//! One SDK-port connection, driven on its own task: the TLS handshake when the port has
//! TLS, then a loop that reads what the client sent, hands every whole frame to the
//! connection's HTTP/2 state ([`Conn`]: streams, flow control, the inline Nacos answers),
//! polls the bridged streams that were woken, sends the keep-alive PINGs, and writes
//! every frame that is ready in one write; it closes gracefully (GOAWAY, then the open
//! streams finish, for at most [`SHUTDOWN_GRACE`]) when the port stops.
//!
//! Back-pressure: once more than [`HIGH_WATER`] bytes wait to be written (a client that
//! does not read), the loop stops handling frames (between two frames: the rest wait in
//! the input, handled once the output has room, with no new read), stops reading, polling
//! the bridged streams and writing stream DATA; so the output exceeds the mark by at most
//! what one frame or one stream's answer adds (a header block, a refusal), and the input
//! holds one read.
//!
//! Everything is polled with the waker of [`Wakeups`], which drops the wake-ups the task
//! gives itself while it is polling.

use crate::sdk_port::Inner;
use crate::sdk_port::bridge::Woken;
use crate::sdk_port::http2::{Conn, ConnError, MAX_FRAME};
use crate::sdk_port::keep_alive::{Due, KeepAlive};
use crate::sdk_port::wakeups::Wakeups;
use crate::tls::HANDSHAKE_TIMEOUT;
use futures::FutureExt as _;
use h2wire::frame;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{mpsc, watch};
use tonic::transport::server::TcpConnectInfo;

/// How long open streams may take to finish once the port stops; then the connection is
/// dropped (a client that never completes a request cannot hold the shutdown).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Output waiting to be written above which the connection stops reading.
const HIGH_WATER: usize = 256 * 1024;
/// Capacity of the output buffer kept once it is drained (from over 4 times as much).
const KEPT_OUTPUT: usize = 4 * 1024;
/// The read buffer's first size; it grows to hold the largest frame.
const READ_BUFFER: usize = 8 * 1024;
/// The size the read buffer grows to, doubling, while reads keep filling it: a client that
/// sends more than it holds (a peer's sync batches, a native write of a thousand
/// instances: 30-50 KB each) is read 64 KiB a system call, not 8 KiB; a client of small
/// requests (a Nacos SDK) keeps 8 KiB.
const BULK_READ_BUFFER: usize = 64 * 1024;
/// How long the last frames (a GOAWAY) may take to be written at the end.
const LAST_WRITE: Duration = Duration::from_secs(1);
/// Rounds of the loop in one poll before the task yields to others.
const ROUNDS: usize = 32;
/// The Nacos unary method.
pub(crate) const NACOS_UNARY: &[u8] = b"/Request/request";

/// Runs a connection: the TLS handshake first when the port has TLS, then [`serve`].
pub(crate) async fn run<T>(
    io: T,
    info: TcpConnectInfo,
    port: Arc<Inner>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.remote_addr;
    let Some(acceptor) = port.tls.clone() else {
        return unwound(serve(io, info, port, stop, alive), peer).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(tls)) => unwound(serve(tls, info, port, stop, alive), peer).await,
        Ok(Err(e)) => tracing::warn!(port = port.name, ?peer, error = %e, "TLS handshake refused"),
        Err(_) => tracing::warn!(port = port.name, ?peer, "TLS handshake timed out"),
    }
}

/// Connections whose task panicked (a bug: the fuzz test asserts there is none).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// The most output one connection ever had waiting to be written, and its input buffer's
/// largest size (noted only above [`HIGH_WATER`] and [`READ_BUFFER`]: tests assert the
/// bounds; [`BULK_READ_BUFFER`] is reached by a connection whose reads fill its buffer).
static LARGEST: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The largest output waiting and the largest input buffer of any SDK- or cluster-port connection in
/// this process, if over 256 KiB and 8 KiB (else 0).
pub fn largest_buffers() -> (usize, usize) {
    (
        LARGEST[0].load(Ordering::Relaxed),
        LARGEST[1].load(Ordering::Relaxed),
    )
}

/// How many SDK- and cluster-port connection tasks have panicked in this process.
pub fn connection_panics() -> usize {
    PANICS.load(Ordering::Relaxed)
}

/// Runs `serve`, counting and logging a panic (which closes only this connection).
async fn unwound(serve: impl Future<Output = ()>, peer: Option<std::net::SocketAddr>) {
    if std::panic::AssertUnwindSafe(serve)
        .catch_unwind()
        .await
        .is_err()
    {
        PANICS.fetch_add(1, Ordering::Relaxed);
        tracing::error!(?peer, "a gRPC-port connection panicked");
    }
}

/// What the client sent and the connection has not handled yet.
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    preface: bool,
    /// Whole frames may be left: the last [`Input::process`] stopped at the output's
    /// high-water mark.
    more: bool,
}

impl Input {
    fn new() -> Self {
        Self {
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            preface: false,
            more: false,
        }
    }

    /// Room to read into (made by moving the unread bytes to the front, or growing).
    fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            // Still full (one frame larger than the buffer), or reads that fill it.
            if self.end == self.buf.len() || self.buf.len() < BULK_READ_BUFFER {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
                LARGEST[1].fetch_max(len, Ordering::Relaxed);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Hands every whole frame to `conn`, until its output is at the high-water mark.
    fn process(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        self.more = false;
        if !self.preface {
            let got = &self.buf[self.start..self.end];
            let n = got.len().min(h2wire::PREFACE.len());
            if got[..n] != h2wire::PREFACE[..n] {
                return Err(ConnError {
                    code: h2wire::frame::ErrorCode::PROTOCOL_ERROR,
                    reason: "not the HTTP/2 connection preface",
                });
            }
            if n < h2wire::PREFACE.len() {
                return Ok(());
            }
            self.start += n;
            self.preface = true;
        }
        loop {
            if conn.over() {
                self.more = true;
                return Ok(());
            }
            match frame::parse(&self.buf[self.start..self.end], MAX_FRAME) {
                Ok(None) => return Ok(()),
                Ok(Some((f, n))) => {
                    conn.handle(f)?;
                    self.start += n;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// How the connection ends.
enum Ending {
    /// Write what is left (a GOAWAY), then close.
    Close,
    /// Close at once (the socket failed or the client vanished).
    Drop,
}

/// A connection error: its GOAWAY, then the end.
fn failed(conn: &mut Conn, e: ConnError, peer: Option<std::net::SocketAddr>) -> Ending {
    tracing::debug!(
        ?peer,
        code = e.code.name(),
        reason = e.reason,
        "gRPC-port connection error"
    );
    conn.fail(e);
    Ending::Close
}

/// Serves `io` until the connection closes. `_alive` is dropped at the end, which tells
/// the port this connection is done.
pub(crate) async fn serve<T>(
    mut io: T,
    info: TcpConnectInfo,
    port: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.remote_addr;
    let (wakeups, waker) = Wakeups::new();
    let mut conn = Conn::new(port.clone(), info, Woken::new(waker.clone()));
    let mut input = Input::new();
    let mut written = 0;
    let mut unflushed = false;
    let mut keep_alive = KeepAlive::new(port.keep_alive_interval, port.keep_alive_timeout);
    let mut stopping = false;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    // Made once (not per turn of the loop): it stays registered with the watch.
    let stop_signal = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stop_signal);
    let end = poll_fn(|cx| {
        wakeups.poll(cx, &waker, |cx| {
            if !stopping && stop_signal.as_mut().poll(cx).is_ready() {
                stopping = true;
                conn.go_away();
                grace
                    .as_mut()
                    .reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            if stopping && grace.as_mut().poll(cx).is_ready() {
                tracing::debug!(
                    ?peer,
                    "gRPC-port connection closed: streams still open after the shutdown grace"
                );
                return Poll::Ready(Ending::Drop);
            }
            match keep_alive.poll(cx) {
                Poll::Ready(Due::Ping(payload)) => frame::write_ping(&mut conn.out, false, payload),
                Poll::Ready(Due::Dead) => {
                    tracing::debug!(?peer, timeout = ?keep_alive.timeout(),
                        "gRPC-port connection closed: no answer to a keep-alive PING");
                    return Poll::Ready(Ending::Drop);
                }
                Poll::Pending => {}
            }
            for _ in 0..ROUNDS {
                let mut progress = false;
                conn.limit = written + HIGH_WATER;
                if input.more && !conn.over() {
                    // Frames left by a read that filled the output.
                    let start = input.start;
                    if let Err(e) = input.process(&mut conn) {
                        return Poll::Ready(failed(&mut conn, e, peer));
                    }
                    progress |= input.start != start;
                }
                if !input.more && !conn.over() {
                    let mut buf = ReadBuf::new(input.space());
                    match Pin::new(&mut io).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) => {
                            let n = buf.filled().len();
                            if n == 0 {
                                return Poll::Ready(Ending::Close);
                            }
                            input.end += n;
                            progress = true;
                            if let Err(e) = input.process(&mut conn) {
                                return Poll::Ready(failed(&mut conn, e, peer));
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!(?peer, error = %e, "gRPC-port connection failed");
                            return Poll::Ready(Ending::Drop);
                        }
                        Poll::Pending => {}
                    }
                }
                if let Some(payload) = conn.pong.take() {
                    keep_alive.pong(payload);
                }
                conn.poll_bridged();
                if conn.out.len() - written > HIGH_WATER {
                    LARGEST[0].fetch_max(conn.out.len() - written, Ordering::Relaxed);
                }
                if written < conn.out.len() {
                    match Pin::new(&mut io).poll_write(cx, &conn.out[written..]) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            return Poll::Ready(Ending::Drop);
                        }
                        Poll::Ready(Ok(n)) => {
                            written += n;
                            progress = true;
                            unflushed = true;
                            if written == conn.out.len() {
                                conn.out.clear();
                                written = 0;
                                // An idle connection keeps a small buffer (and one
                                // that writes a little each round is not reallocated).
                                if conn.out.capacity() > 4 * KEPT_OUTPUT {
                                    conn.out.shrink_to(KEPT_OUTPUT);
                                }
                            } else if written >= HIGH_WATER {
                                // Never fully drained (a busy, slow client): drop what
                                // went out, so the buffer stays bounded.
                                conn.out.drain(..written);
                                written = 0;
                            }
                        }
                        Poll::Pending => {}
                    }
                }
                if unflushed {
                    match Pin::new(&mut io).poll_flush(cx) {
                        Poll::Ready(Ok(())) => unflushed = false,
                        Poll::Ready(Err(_)) => return Poll::Ready(Ending::Drop),
                        Poll::Pending => {}
                    }
                }
                if conn.finished() && conn.out.is_empty() && !unflushed {
                    return Poll::Ready(Ending::Close);
                }
                if !progress {
                    return Poll::Pending;
                }
            }
            // Busy: let the runtime's other tasks run, and come back.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    })
    .await;
    if let Ending::Close = end {
        let rest = &conn.out[written..];
        let _ = tokio::time::timeout(LAST_WRITE, async {
            io.write_all(rest).await?;
            io.shutdown().await
        })
        .await;
    }
}
