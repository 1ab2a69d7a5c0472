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

use crate::sdk_port::grpc::{self, Code, Status};
use crate::sdk_port::keep_alive::KeepAlive;
use crate::sdk_port::unary::{self, ReadMessage};
use crate::sdk_port::{Inner, bridge};
use crate::tls::HANDSHAKE_TIMEOUT;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
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
    loop {
        tokio::select! {
            biased;
            Some((respond, read)) = reads.next(), if !reads.is_empty() => {
                unary::answer(&port.nacos, peer, respond, read);
            }
            Some(()) = calls.next(), if !calls.is_empty() => {}
            accepted = poll_fn(|cx| conn.poll_accept(cx)) => match accepted {
                Some(Ok((request, respond))) => {
                    let path = request.uri().path().as_bytes();
                    if path == NACOS_UNARY {
                        let body = request.into_body();
                        let mut read = ReadMessage::new(body, respond, port.max_message_bytes);
                        // Poll once right here: the body is usually in already.
                        match poll_fn(|cx| Poll::Ready(read.poll_unpin(cx))).await {
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
                Some(Err(e)) => {
                    tracing::debug!(?peer, error = %e, "SDK-port connection failed");
                    break;
                }
                None => break,
            },
            _ = poll_fn(|cx| keep_alive.poll_dead(cx)) => {
                tracing::debug!(?peer, timeout = ?keep_alive.timeout(),
                    "SDK-port connection closed: no answer to a keep-alive PING");
                break;
            }
            () = &mut stop_signal, if !stopping => {
                stopping = true;
                conn.graceful_shutdown();
                grace.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            () = &mut grace, if stopping => {
                tracing::debug!(?peer, "SDK-port connection closed: streams still open after the shutdown grace");
                break;
            }
        }
    }
}

/// Completes once the port stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
