//! A connection that is dialled again after it ends: the peer calls' and loadgen's native
//! lanes'.

use super::{CallError, H2, Method};
use bytes::Bytes;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::Status;

/// A dialled connection and the task that reads it.
pub type Dialled = (H2, JoinHandle<()>);

/// A dial in progress; its error is the reason, for an `UNAVAILABLE` status.
pub type DialFuture = Pin<Box<dyn Future<Output = Result<Dialled, String>> + Send>>;

/// A live connection and the task that reads it (aborted when this is dropped).
struct Live {
    h2: H2,
    task: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection to one server, dialled by the first call that finds none or finds it
/// ended. The calls behind that one wait for its dial rather than each dialling, and share
/// its failure: a server that cannot be reached costs each of them one dial at most, not
/// one each in turn.
pub struct Link {
    dial: Box<dyn Fn() -> DialFuture + Send + Sync>,
    live: Mutex<Option<Live>>,
    /// Held while dialling; the last failed dial's end and error.
    dialing: tokio::sync::Mutex<Option<(Instant, Status)>>,
}

impl Link {
    /// A link that dials with `dial` at its first call.
    pub fn new(dial: impl Fn() -> DialFuture + Send + Sync + 'static) -> Link {
        Link {
            dial: Box::new(dial),
            live: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(None),
        }
    }

    /// A link dialled now; the dial's error if it fails.
    pub async fn open(
        dial: impl Fn() -> DialFuture + Send + Sync + 'static,
    ) -> Result<Link, String> {
        let link = Link::new(dial);
        let (h2, task) = (link.dial)().await?;
        *link.live.lock() = Some(Live { h2, task });
        Ok(link)
    }

    /// The connection, if it is live.
    pub fn live(&self) -> Option<H2> {
        let live = self.live.lock();
        live.as_ref()
            .filter(|l| !l.h2.is_closed())
            .map(|l| l.h2.clone())
    }

    /// The live connection, dialled if there is none or it ended.
    pub async fn h2(&self) -> Result<H2, Status> {
        if let Some(h2) = self.live() {
            return Ok(h2);
        }
        let asked = Instant::now();
        let mut dialing = self.dialing.lock().await;
        if let Some(h2) = self.live() {
            return Ok(h2);
        }
        if let Some((at, e)) = dialing.as_ref()
            && *at >= asked
        {
            return Err(e.clone());
        }
        match (self.dial)().await {
            Ok((h2, task)) => {
                *dialing = None;
                *self.live.lock() = Some(Live {
                    h2: h2.clone(),
                    task,
                });
                Ok(h2)
            }
            Err(reason) => {
                let e = Status::unavailable(reason);
                *dialing = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// One unary call of `method` with a framed request (see [`frame_buffer`]); the
    /// reply's protobuf bytes. No answer within `timeout` is `DEADLINE_EXCEEDED`.
    pub async fn call(
        &self,
        method: &Method,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let h2 = self.h2().await?;
        match h2.unary(method, frame, timeout).await {
            Ok(reply) => Ok(reply),
            Err(CallError::Timeout) => Err(Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            ))),
            Err(CallError::Status(s)) => Err(s),
        }
    }
}

/// A buffer for one gRPC frame of about `body` bytes: room for the prefix, then the body
/// is written after it; [`seal`] sets the prefix.
pub fn frame_buffer(body: usize) -> bytes::BytesMut {
    let mut b = bytes::BytesMut::with_capacity(super::GRPC_PREFIX + body);
    b.resize(super::GRPC_PREFIX, 0);
    b
}

/// The frame of a [`frame_buffer`] once its body is written: its prefix (uncompressed,
/// the body's length) set in place.
///
/// # Panics
///
/// If the body is 4 GiB or more (no gRPC message is).
pub fn seal(mut b: bytes::BytesMut) -> Bytes {
    let len = u32::try_from(b.len() - super::GRPC_PREFIX).expect("a message under 4 GiB");
    b[1..super::GRPC_PREFIX].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

/// TLS for [`dial`]: the connector, and how a refused handshake's error is told.
pub type DialTls<'a> = (
    &'a tokio_rustls::TlsConnector,
    fn(&std::io::Error) -> String,
);

/// A new connection for a [`Link`]: TCP to `authority` (`host:port`; from `local` when
/// given), `TCP_NODELAY` and [`keep_alive`], then TLS when `tls` is given (its connector,
/// the server name being the authority's host; its error told by the given function), then
/// the HTTP/2 handshake, all within `timeout`. The error is the reason, naming the step.
pub async fn dial(
    authority: &str,
    local: Option<std::net::IpAddr>,
    tls: Option<DialTls<'_>>,
    max_message: usize,
    timeout: Duration,
) -> Result<Dialled, String> {
    use std::net::SocketAddr;
    let at = authority;
    let connect = async {
        let addr = tokio::net::lookup_host(at)
            .await
            .map_err(|e| format!("cannot resolve {at}: {e}"))?
            .next()
            .ok_or_else(|| format!("{at} has no address"))?;
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(local) = local {
            socket
                .bind(SocketAddr::new(local, 0))
                .map_err(|e| format!("cannot bind {local}: {e}"))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {at}: {e}"))?;
        tcp.set_nodelay(true)
            .and_then(|()| keep_alive(&tcp))
            .map_err(|e| format!("socket options: {e}"))?;
        let shaken = match tls {
            None => H2::handshake(tcp, max_message).await,
            Some((connector, reason)) => {
                let host = at.rsplit_once(':').map_or(at, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
                let io = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {at}: {}", reason(&e)))?;
                H2::handshake(io, max_message).await
            }
        };
        shaken.map_err(|s| s.message().to_owned())
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("no connection within {timeout:?} ({at})"))?
}

/// Has the kernel end a connection whose peer is gone without a word (a host powered
/// off, a path lost): after 30 s idle a probe every 10 s, 3 unanswered end it; data left
/// unacknowledged for 40 s ends it too. The reading task then fails its calls and the
/// [`Link`]'s next call dials again. (An HTTP/2 client would ping; the kernel's probes cost
/// no task and no frame.)
pub fn keep_alive(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10))
            .with_retries(3),
    )?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(Duration::from_secs(40)))?;
    Ok(())
}
