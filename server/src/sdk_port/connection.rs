//! One SDK-port connection, driven on its own task: the TLS handshake when the port has
//! TLS, the HTTP/2 handshake, then a loop that
//! accepts streams, answers the Nacos unary calls inline, hands the other streams to the
//! tonic services ([`bridge`](super::bridge)), keeps the connection alive with PINGs, and
//! closes gracefully (GOAWAY, then the open streams finish) when the port stops.
//!
//! Streams are routed on the `:path` bytes: `/Request/request` is read and answered here
//! ([`unary`](super::unary)); `/BiRequestStream/…` and `/distro.v1.Registry/…` go to the
//! services; anything else is refused with `UNIMPLEMENTED`. A Nacos unary call whose body
//! is already in (the usual case: HEADERS and DATA arrive together) is answered before
//! the next stream is accepted; the others wait, polled by this task, in a set of pending
//! reads. The native API's unary calls (register, query, query batch, ...) are polled by
//! this task too, in a set of their own; only the long-lived streams (the Nacos
//! bi-stream, the native watch) get a task each.
//!
//! Everything is polled with the waker of [`Wakeups`]: the wake-up h2 gives the task when
//! an inline answer is queued is dropped (the next round of the loop writes the answer),
//! so a call costs one poll of the task, not two.

use crate::sdk_port::grpc::{self, Code, Status};
use crate::sdk_port::keep_alive::KeepAlive;
use crate::sdk_port::unary::{self, ReadMessage};
use crate::sdk_port::wakeups::Wakeups;
use crate::sdk_port::{Inner, bridge};
use crate::tls::HANDSHAKE_TIMEOUT;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use h2::RecvStream;
use h2::server::SendResponse;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tonic::transport::server::TcpConnectInfo;

/// How long open streams may take to finish once the port stops; then the connection is
/// dropped (a client that never completes a request cannot hold the shutdown).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Streams that live as long as their client wants (the Nacos bi-stream, the native
/// watch): a task each. Every other call of a service is polled on the connection's task.
const SPAWNED: [&[u8]; 2] = [
    b"/BiRequestStream/requestBiStream",
    b"/distro.v1.Registry/Watch",
];
/// The Nacos unary method.
const NACOS_UNARY: &[u8] = b"/Request/request";

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
    let Some(acceptor) = port.tls.clone() else {
        return serve(io, info, port, stop, alive).await;
    };
    let peer = info.remote_addr;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(tls)) => serve(tls, info, port, stop, alive).await,
        Ok(Err(e)) => tracing::warn!(port = "SDK", ?peer, error = %e, "TLS handshake refused"),
        Err(_) => tracing::warn!(port = "SDK", ?peer, "TLS handshake timed out"),
    }
}

/// Serves `io` until the connection closes. `_alive` is dropped at the end, which tells
/// the port this connection is done.
pub(crate) async fn serve<T>(
    io: T,
    info: TcpConnectInfo,
    port: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.remote_addr;
    let handshake = port.h2.handshake::<T, Bytes>(io);
    let mut conn = tokio::select! {
        r = handshake => match r {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(?peer, error = %e, "SDK-port HTTP/2 handshake failed");
                return;
            }
        },
        () = stopped(&mut stop) => return,
    };
    let mut keep_alive = KeepAlive::new(
        conn.ping_pong(),
        port.keep_alive_interval,
        port.keep_alive_timeout,
    );
    let mut reads: FuturesUnordered<ReadMessage> = FuturesUnordered::new();
    let mut calls: FuturesUnordered<bridge::Call> = FuturesUnordered::new();
    let mut stopping = false;
    let grace = tokio::time::sleep(std::time::Duration::MAX);
    tokio::pin!(grace);
    // Made once (not per turn of the loop): it stays registered with the watch.
    let stop_signal = async move { stopped(&mut stop).await };
    tokio::pin!(stop_signal);
    let (wakeups, waker) = Wakeups::new();
    loop {
        // In this order (the first ready wins), as a biased select; the task's own
        // wake-ups are dropped (see `wakeups`), so nothing below may yield.
        let event = poll_fn(|cx| {
            wakeups.poll(cx, &waker, |cx| {
                if !reads.is_empty()
                    && let Poll::Ready(Some(r)) = reads.poll_next_unpin(cx)
                {
                    return Poll::Ready(Event::Read(r));
                }
                if !calls.is_empty() && calls.poll_next_unpin(cx).is_ready() {
                    return Poll::Ready(Event::CallDone);
                }
                if let Poll::Ready(a) = conn.poll_accept(cx) {
                    return Poll::Ready(Event::Accepted(a));
                }
                if keep_alive.poll_dead(cx).is_ready() {
                    return Poll::Ready(Event::Dead);
                }
                if !stopping && stop_signal.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Stop);
                }
                if stopping && grace.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::GraceOver);
                }
                Poll::Pending
            })
        })
        .await;
        match event {
            Event::Read((respond, read)) => unary::answer(&port.nacos, peer, respond, read),
            Event::CallDone => {}
            Event::Accepted(Some(Ok((request, respond)))) => {
                let path = request.uri().path().as_bytes();
                if path == NACOS_UNARY {
                    let body = request.into_body();
                    let mut read = ReadMessage::new(body, respond, port.max_message_bytes);
                    // Poll once right here: the body is usually in already.
                    match read.poll_unpin(&mut Context::from_waker(&waker)) {
                        Poll::Ready((respond, r)) => unary::answer(&port.nacos, peer, respond, r),
                        Poll::Pending => reads.push(read),
                    }
                } else if port.bridged.iter().any(|p| path.starts_with(p)) {
                    let long_lived = SPAWNED.contains(&path);
                    let call = bridge::call(&port.routes, request, respond, &info);
                    if long_lived {
                        tokio::spawn(call);
                    } else {
                        calls.push(call);
                    }
                } else {
                    let status = Status::new(
                        Code::Unimplemented,
                        format!("this port serves no method {}", request.uri().path()),
                    );
                    grpc::refuse(respond, &status);
                }
            }
            Event::Accepted(Some(Err(e))) => {
                tracing::debug!(?peer, error = %e, "SDK-port connection failed");
                break;
            }
            Event::Accepted(None) => break,
            Event::Dead => {
                tracing::debug!(?peer, timeout = ?keep_alive.timeout(),
                    "SDK-port connection closed: no answer to a keep-alive PING");
                break;
            }
            Event::Stop => {
                stopping = true;
                conn.graceful_shutdown();
                grace
                    .as_mut()
                    .reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            Event::GraceOver => {
                tracing::debug!(
                    ?peer,
                    "SDK-port connection closed: streams still open after the shutdown grace"
                );
                break;
            }
        }
    }
}

/// A stream the client opened: its request (head and body) and the handle to answer it.
type Stream = (http::Request<RecvStream>, SendResponse<Bytes>);

/// What the connection's task found ready, in [`serve`]'s loop.
enum Event {
    /// A pending unary read completed.
    Read((SendResponse<Bytes>, unary::Read)),
    /// A native unary call completed.
    CallDone,
    /// A new stream, the connection's failure, or its end.
    Accepted(Option<Result<Stream, h2::Error>>),
    /// A keep-alive PING went unanswered.
    Dead,
    /// The port is stopping.
    Stop,
    /// The shutdown grace is over.
    GraceOver,
}

/// Completes once the port stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
