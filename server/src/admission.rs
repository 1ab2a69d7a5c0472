//! Connection admission on the three ports: a cap on open TCP connections per port, and a
//! deadline for a new connection's first request.
//!
//! * Beyond `--max-tcp-connections` open connections on a port, a new connection is
//!   answered and closed at once: the HTTP port writes a `503` naming the limit, the gRPC
//!   ports an HTTP/2 `GOAWAY` (`ENHANCE_YOUR_CALM`) whose debug data names it. The
//!   connections already open are not disturbed.
//! * A connection that has not sent its first request within `--header-read-timeout`
//!   (slow-loris: headers byte by byte, or nothing at all) is closed. On the HTTP port the
//!   deadline ends with the first response written (so it covers the request line, the
//!   headers and the body of the first request); on the gRPC ports it ends once the
//!   24-byte HTTP/2 connection preface has arrived (after that, HTTP/2 keepalive and the
//!   Nacos connection detection take over).
//! * On the HTTP port, every response written starts a new deadline,
//!   `--keep-alive-timeout`: the next request must be complete by then, or the connection
//!   is closed. That closes idle keep-alive connections and slow later requests alike.
//!
//! Refused and timed-out connections are counted (`distro_connections_refused_total`,
//! `distro_connections_timed_out_total`).

use crate::metrics::Metrics;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Default cap on open TCP connections, per port.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 30_000;
/// Default deadline of a new connection's first request.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an HTTP connection may take, after a response, to complete its next
/// request (idle keep-alive included).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Length of the HTTP/2 client connection preface.
const H2_PREFACE_LEN: usize = 24;

/// What a port speaks, which decides how it refuses and when the deadline ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 (the main port).
    Http,
    /// HTTP/2 only (the gRPC ports).
    Grpc,
}

/// The admission policy of one port.
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
    keep_alive: Duration,
    protocol: Protocol,
    port: &'static str,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// A policy for the port named `port` (for logs). `keep_alive` applies to HTTP only
    /// (zero: later requests are not timed).
    pub fn new(
        port: &'static str,
        protocol: Protocol,
        max: usize,
        timeout: Duration,
        keep_alive: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            timeout,
            keep_alive,
            protocol,
            port,
            metrics,
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Accepts the next connection that is admitted; refuses the others on the way.
    pub async fn accept(&self, listener: &TcpListener) -> Guarded {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(port = self.port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return self.guard(stream, permit),
                Err(_) => {
                    self.metrics.connections_refused.fetch_add(1, Relaxed);
                    tracing::debug!(port = self.port, %peer, max = self.max, "connection refused: too many connections");
                    tokio::spawn(refuse(stream, self.protocol, self.max, self.port));
                }
            }
        }
    }

    fn guard(&self, stream: TcpStream, permit: OwnedSemaphorePermit) -> Guarded {
        Guarded {
            inner: stream,
            _permit: permit,
            deadline: (!self.timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(self.timeout))),
            need: match self.protocol {
                Protocol::Http => usize::MAX,
                Protocol::Grpc => H2_PREFACE_LEN,
            },
            clear_on_write: self.protocol == Protocol::Http,
            keep_alive: (self.protocol == Protocol::Http && !self.keep_alive.is_zero())
                .then_some(self.keep_alive),
            first: true,
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        }
    }

    /// The connections of `listener` as a stream for tonic's `serve_with_incoming`.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl futures::Stream<Item = io::Result<Guarded>> + Send + 'static {
        futures::stream::unfold((self, listener), |(a, l)| async move {
            let g = a.accept(&l).await;
            Some((Ok(g), (a, l)))
        })
    }
}

/// Answers a connection over the limit with a clear refusal and closes it.
async fn refuse(mut stream: TcpStream, protocol: Protocol, max: usize, port: &str) {
    let msg = format!(
        "too many connections: this node accepts at most {max} on its {port} port (--max-tcp-connections)"
    );
    let bytes = match protocol {
        Protocol::Http => format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{msg}",
            msg.len()
        )
        .into_bytes(),
        Protocol::Grpc => {
            // An empty SETTINGS frame (the server preface), then GOAWAY(ENHANCE_YOUR_CALM)
            // with the reason as debug data.
            let mut b = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
            let len = 8 + msg.len();
            b.extend_from_slice(&[
                (len >> 16) as u8,
                (len >> 8) as u8,
                len as u8,
                0x7,
                0,
                0,
                0,
                0,
                0,
            ]);
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0b]);
            b.extend_from_slice(msg.as_bytes());
            b
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// An admitted connection: holds its slot until dropped, and fails its reads once the
/// first-request deadline (or, on HTTP, the keep-alive deadline) passes.
pub struct Guarded {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes still to read before the deadline ends.
    need: usize,
    /// Whether the first write ends the deadline.
    clear_on_write: bool,
    /// HTTP: the deadline a write (a response) starts for the next request.
    keep_alive: Option<Duration>,
    /// Whether the running deadline is the first request's.
    first: bool,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Guarded {
    /// A response was written: the first-request deadline ends, and on HTTP the next
    /// request's starts.
    fn wrote(&mut self) {
        if !self.clear_on_write {
            return;
        }
        self.first = false;
        match self.keep_alive {
            Some(d) => {
                let at = tokio::time::Instant::now() + d;
                match self.deadline.as_mut() {
                    Some(s) => s.as_mut().reset(at),
                    None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
            None => self.deadline = None,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if this.deadline.is_some() {
                    this.need = this.need.saturating_sub(n);
                    if this.need == 0 || n == 0 {
                        this.deadline = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    this.deadline = None;
                    this.metrics.connections_timed_out.fetch_add(1, Relaxed);
                    let msg = match (this.first, this.keep_alive) {
                        (false, Some(d)) => format!(
                            "no complete request within {d:?} of the last response (--keep-alive-timeout)"
                        ),
                        _ => format!(
                            "no complete request within {:?} (--header-read-timeout)",
                            this.timeout
                        ),
                    };
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, msg)))
                }
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The HTTP port's listener for `axum::serve`.
pub struct HttpListener {
    listener: TcpListener,
    admission: Arc<Admission>,
}

impl HttpListener {
    /// Admits connections of `listener` under `admission`.
    pub fn new(listener: TcpListener, admission: Arc<Admission>) -> Self {
        Self {
            listener,
            admission,
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Guarded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let g = self.admission.accept(&self.listener).await;
            if let Ok(a) = g.inner.peer_addr() {
                return (g, a);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
