//! The SDK port (main port + 1000) and the cluster port (main port + 1001): HTTP/2 served
//! by a connection of its own on `h2wire` (frames and HPACK, no I/O), one task per
//! connection and no task per stream. The cluster port ([`SdkPort::cluster`]) serves the
//! peer protocol's tonic service on the same connections, bridged, and nothing else (no
//! Nacos call, no native API).
//!
//! ```text
//!  accept (one loop per socket) ─▶ admission (cap, GOAWAY, slow-loris deadline) ─▶ one task per connection
//!     connection task: TLS handshake (--tls-cert; --cluster-tls-* on the cluster port),
//!     then rounds of: read, handle every whole frame, poll the woken bridged streams,
//!     write every ready frame in one write
//!       per stream, by :path (bytes, no header map)
//!       /Request/request        message read + decode + handler + reply, inline (unary)
//!       /BiRequestStream/…      tonic service, polled on the connection's task (bridge)
//!       /distro.v1.Registry/…   tonic service, polled on the connection's task (bridge)
//!       /distro.v1.Peer/…       (the cluster port's only paths) the same, bridged
//!       anything else           trailers-only UNIMPLEMENTED
//!     PINGs every 30 s, closed when one is unanswered for 20 s (keep_alive)
//! ```
//!
//! hyper (under tonic) spawns a task for every HTTP/2 stream, and the `h2` crate decodes
//! every header block into a header map and keeps a general stream store; the Nacos SDKs
//! send every registration, query and health check as one unary call, so those were most
//! of the cost of a call. Here the connection's task reads the call's message, calls the
//! synchronous Nacos handler and appends the reply (constant HPACK blocks around the
//! DATA) to the connection's output, which goes out, with every other ready frame, at the
//! end of the round.
//!
//! Files: `connection` (the task's loop: I/O, back-pressure, keep-alive, shutdown),
//! `http2` (the HTTP/2 server state: streams, settings, flow control, routing, errors;
//! `http2/recv` its receiving side of flow control),
//! `fields` (a request's header fields, checked), `unary` (the Nacos unary message),
//! `bridge` (streams handed to tonic services), `keep_alive` (PING timing), `grpc` (the
//! message prefix, response blocks and statuses), `wakeups` (the connection task's waker,
//! which drops the wake-ups it gives itself).

mod bridge;
mod connection;
mod fields;
pub(crate) mod grpc;
mod http2;
mod keep_alive;
mod unary;
mod wakeups;

pub use connection::{connection_panics, largest_buffers};

use crate::admission::Admission;
use crate::nacos::NacosFrontend;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;

/// Most streams open at once on one connection (`SETTINGS_MAX_CONCURRENT_STREAMS`); a
/// client that opens more before it has read the server's SETTINGS gets `REFUSED_STREAM`
/// for the excess, which gRPC clients retry.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Flow-control window of a stream and of a connection, as the tonic server had (1 MiB).
const WINDOW: u32 = 1024 * 1024;
/// Largest header list a client may send (hyper's default, 16 KiB).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// The SDK port: the Nacos front end, the tonic services beside it, and the admission
/// policy of its connections (or the cluster port: its tonic service alone). Build it, add
/// services, then [`SdkPort::serve`].
pub struct SdkPort {
    nacos: Option<Arc<NacosFrontend>>,
    /// The port's name in logs (`SDK`, `cluster`).
    name: &'static str,
    max_message_bytes: usize,
    routes: Routes,
    bridged: Vec<Vec<u8>>,
    admission: Option<Arc<Admission>>,
    keep_alive_interval: Duration,
    keep_alive_timeout: Duration,
    tls: Option<TlsAcceptor>,
}

/// What every connection task reads.
pub(crate) struct Inner {
    /// The Nacos unary calls' handler (`None`: the cluster port, which serves none).
    pub(crate) nacos: Option<Arc<NacosFrontend>>,
    /// The port's name in logs.
    pub(crate) name: &'static str,
    pub(crate) routes: Routes,
    /// `/<service>/` of every service in `routes`.
    pub(crate) bridged: Vec<Vec<u8>>,
    pub(crate) max_message_bytes: usize,
    pub(crate) keep_alive_interval: Duration,
    pub(crate) keep_alive_timeout: Duration,
    /// TLS before HTTP/2 (`None`: plaintext).
    pub(crate) tls: Option<TlsAcceptor>,
}

impl SdkPort {
    /// The port of `nacos` (its unary calls inline, its bi-stream service bridged).
    pub fn new(nacos: Arc<NacosFrontend>) -> Self {
        let bi_stream = nacos.bi_stream_service();
        let max_message_bytes = nacos.config().max_message_bytes;
        Self::with(Some(nacos), "SDK", max_message_bytes).add_service(bi_stream)
    }

    /// The cluster port: no Nacos call (`/Request/request` is answered UNIMPLEMENTED, as
    /// any path no added service serves), only the services added (the peer protocol),
    /// whose own limits bound their messages. `max_message_bytes` bounds what one
    /// connection holds of messages that are not its services'.
    pub fn cluster(max_message_bytes: usize) -> Self {
        Self::with(None, "cluster", max_message_bytes)
    }

    /// A port with no service added yet, the defaults of the rest.
    fn with(
        nacos: Option<Arc<NacosFrontend>>,
        name: &'static str,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            nacos,
            name,
            max_message_bytes,
            routes: Routes::default(),
            bridged: Vec::new(),
            admission: None,
            keep_alive_interval: keep_alive::INTERVAL,
            keep_alive_timeout: keep_alive::TIMEOUT,
            tls: None,
        }
    }

    /// Serves the tonic service `svc` (such as the native `distro.v1.Registry`) beside the
    /// Nacos services, its streams polled on their connection's task.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.bridged.push(format!("/{}/", S::NAME).into_bytes());
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Admits connections under `admission` (connection cap, first-request deadline);
    /// without it every connection is accepted.
    pub fn admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// TLS on every connection with `acceptor` (which should offer ALPN `h2`, as
    /// [`HttpTls::sdk_acceptor`](crate::tls::HttpTls::sdk_acceptor) does), before HTTP/2.
    /// The handshake runs on the connection's task, bounded by
    /// [`HANDSHAKE_TIMEOUT`](crate::tls::HANDSHAKE_TIMEOUT); a refused one is logged.
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// PING every `interval`; close a connection that leaves one unanswered for `timeout`
    /// (defaults: 30 s and 20 s).
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
        self
    }

    /// Serves `listener` until `shutdown` completes; then stops accepting, closes every
    /// connection gracefully (GOAWAY; open streams finish) and returns once all are closed.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve_all(vec![listener], shutdown).await;
    }

    /// [`Self::serve`] on several sockets of one port (`SO_REUSEPORT`, see
    /// [`crate::ServerConfig::sdk_reuseport`]): one accept loop per socket, each a task of
    /// its own, sharing the admission's connection cap.
    pub async fn serve_all(self, listeners: Vec<TcpListener>, shutdown: impl Future<Output = ()>) {
        let inner = Arc::new(Inner {
            max_message_bytes: self.max_message_bytes,
            nacos: self.nacos,
            name: self.name,
            routes: self.routes.prepare(),
            bridged: self.bridged,
            keep_alive_interval: self.keep_alive_interval,
            keep_alive_timeout: self.keep_alive_timeout,
            tls: self.tls,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let (accepting_tx, accepting_rx) = watch::channel(true);
        let mut loops = AbortOnDrop(Vec::new());
        loops.0 = listeners
            .into_iter()
            .map(|listener| {
                tokio::spawn(accept_loop(
                    listener,
                    self.admission.clone(),
                    inner.clone(),
                    (stop_rx.clone(), accepting_rx.clone()),
                    alive_tx.clone(),
                ))
            })
            .collect();
        shutdown.await;
        // The accept loops drop their sockets first, then the connections close.
        accepting_tx.send_replace(false);
        for l in &mut loops.0 {
            let _ = l.await;
        }
        stop_tx.send_replace(true);
        drop(alive_tx);
        // Every connection task holds a sender: this returns once all have ended.
        let _ = alive_rx.recv().await;
    }
}

/// The accept loops' tasks, aborted when the port's future is dropped unfinished (they
/// hold the sockets).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Accepts connections on `listener`, a task each, until `accepting` turns false.
async fn accept_loop(
    listener: TcpListener,
    admission: Option<Arc<Admission>>,
    inner: Arc<Inner>,
    (stop, mut accepting): (watch::Receiver<bool>, watch::Receiver<bool>),
    alive: mpsc::Sender<()>,
) {
    let stopping = async move {
        let _ = accepting.wait_for(|a| !*a).await;
    };
    tokio::pin!(stopping);
    loop {
        let accepted = tokio::select! {
            a = accept(&listener, admission.as_deref(), inner.name) => a,
            () = &mut stopping => break,
        };
        let Some((io, info)) = accepted else { continue };
        let (port, stop, alive) = (inner.clone(), stop.clone(), alive.clone());
        match io {
            Io::Plain(s) => tokio::spawn(connection::run(s, info, port, stop, alive)),
            Io::Guarded(g) => tokio::spawn(connection::run(g, info, port, stop, alive)),
        };
    }
}

/// An accepted connection, under admission when there is one.
enum Io {
    Plain(tokio::net::TcpStream),
    Guarded(crate::admission::Guarded),
}

async fn accept(
    listener: &TcpListener,
    admission: Option<&Admission>,
    port: &'static str,
) -> Option<(Io, TcpConnectInfo)> {
    use tonic::transport::server::Connected as _;
    match admission {
        Some(a) => {
            let g = a.accept(listener).await;
            let info = g.connect_info();
            Some((Io::Guarded(g), info))
        }
        None => match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                let info = s.connect_info();
                Some((Io::Plain(s), info))
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        },
    }
}
