//! gRPC calls on one HTTP/2 connection, straight over the `h2` crate.
//!
//! Nacos needs two methods only (`/Request/request` unary, `/BiRequestStream/
//! requestBiStream` bidirectional), with pre-framed messages. Going straight to `h2`
//! (neither a tonic `Channel` nor hyper's client) keeps a call on the caller's task: the
//! HEADERS and the one DATA+END_STREAM frame are queued on the connection together, with no
//! hop through a dispatch channel and task per request, so that the connection task writes
//! them in one `writev` and, when several calls are in flight on the connection, the
//! frames of all of them in one. It also means the connection is never silently
//! re-opened: when it is gone, calls fail.

use bytes::{Buf, Bytes, BytesMut};
use h2::RecvStream;
use h2::client::SendRequest;
use hyper::header::{CONTENT_TYPE, HeaderValue, TE};
use hyper::{HeaderMap, Method, Request, Uri};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use super::wire::GRPC_PREFIX;

/// Receive windows: large enough that window updates are rare (one per ~half a MiB
/// received) whatever the number of calls in flight.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 2 << 20;

/// One HTTP/2 connection to a Nacos SDK port. Cheap to clone.
#[derive(Clone)]
pub(crate) struct H2 {
    send: SendRequest<Bytes>,
    unary: Request<()>,
    stream: Request<()>,
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

fn request(uri: Uri) -> Request<()> {
    let mut r = Request::new(());
    *r.method_mut() = Method::POST;
    *r.uri_mut() = uri;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(TE, HeaderValue::from_static("trailers"));
    r
}

/// A copy of a prepared request head (a clone of its parts: refcounts and one small map).
fn copy(r: &Request<()>) -> Request<()> {
    let mut c = Request::new(());
    *c.method_mut() = r.method().clone();
    *c.uri_mut() = r.uri().clone();
    *c.headers_mut() = r.headers().clone();
    c
}

impl H2 {
    /// HTTP/2 handshake on `io` (a TCP stream, or a TLS stream when `scheme` is `https`);
    /// returns the connection and the task that drives it.
    pub(crate) async fn handshake<IO>(
        io: IO,
        server: SocketAddr,
        scheme: &str,
    ) -> Result<(H2, JoinHandle<()>), Status>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| unavailable(&e))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let uri = |path: &str| {
            Uri::try_from(format!("{scheme}://{server}{path}"))
                .map_err(|e| Status::invalid_argument(format!("bad server address: {e}")))
        };
        Ok((
            H2 {
                send,
                unary: request(uri("/Request/request")?),
                stream: request(uri("/BiRequestStream/requestBiStream")?),
            },
            task,
        ))
    }

    /// Opens a stream with `head`; `first` (if any) is queued with the HEADERS and ends the
    /// request when `end` is true. Returns the response body and, when the request stays
    /// open, its send half.
    async fn open(
        &self,
        head: &Request<()>,
        first: Bytes,
        end: bool,
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), Status> {
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| unavailable(&e))?;
        let (response, mut out) = send
            .send_request(copy(head), false)
            .map_err(|e| unavailable(&e))?;
        out.send_data(first, end).map_err(|e| unavailable(&e))?;
        Ok((response, out))
    }

    async fn response(response: h2::client::ResponseFuture) -> Result<RecvStream, Status> {
        let response = response.await.map_err(|e| unavailable(&e))?;
        let (parts, body) = response.into_parts();
        if parts.status != hyper::StatusCode::OK {
            return Err(Status::unknown(format!("HTTP status {}", parts.status)));
        }
        // A trailers-only response (an error before any message).
        if let Some(status) = grpc_status(&parts.headers) {
            return Err(if status.code() == Code::Ok {
                Status::internal("the call ended without a message")
            } else {
                status
            });
        }
        Ok(body)
    }

    /// A unary call with one pre-framed message; returns the reply's protobuf bytes.
    pub(crate) async fn unary(&self, frame: Bytes) -> Result<Bytes, Status> {
        let (response, _out) = self.open(&self.unary, frame, true).await?;
        let mut body = Self::response(response).await?;
        let mut reader = FrameReader::default();
        let message = reader.next(&mut body).await.transpose()?;
        // Read on to the trailers, which carry the status.
        while let Some(r) = reader.next(&mut body).await {
            r?;
        }
        match (message, reader.status) {
            (_, Some(s)) if s.code() != Code::Ok => Err(s),
            (Some(m), _) => Ok(m),
            (None, _) => Err(Status::internal("the call ended without a message")),
        }
    }

    /// Opens the bi-stream; frames sent on `outbound` go to the server (the first one is
    /// sent with the HEADERS: a server that answers only after the first message, as
    /// grpc-java does, needs it). The stream's request side ends when `outbound` closes.
    pub(crate) async fn open_stream(
        &self,
        mut outbound: mpsc::Receiver<Bytes>,
    ) -> Result<(RecvStream, FrameReader), Status> {
        let first = outbound.recv().await.unwrap_or_default();
        let (response, mut out) = self.open(&self.stream, first, false).await?;
        tokio::spawn(async move {
            while let Some(frame) = outbound.recv().await {
                if out.send_data(frame, false).is_err() {
                    return;
                }
            }
            let _ = out.send_data(Bytes::new(), true);
        });
        Ok((Self::response(response).await?, FrameReader::default()))
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Some(Status::new(Code::from_i32(code), message))
}

fn exactly_one_message(data: &[u8]) -> bool {
    data.len() >= GRPC_PREFIX
        && data[0] == 0
        && u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize
            == data.len() - GRPC_PREFIX
}

/// Splits a response body into gRPC messages.
#[derive(Default)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    /// The body (and trailers) were read to the end.
    ended: bool,
    /// The status from the trailers, once read.
    pub(crate) status: Option<Status>,
}

impl FrameReader {
    /// The next message, or `None` at the end of the body (then see `status`).
    pub(crate) async fn next(&mut self, body: &mut RecvStream) -> Option<Result<Bytes, Status>> {
        loop {
            if self.buf.len() >= GRPC_PREFIX {
                if self.buf[0] != 0 {
                    return Some(Err(Status::internal(
                        "compressed gRPC messages are not supported",
                    )));
                }
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= GRPC_PREFIX + len {
                    let mut frame = self.buf.split_to(GRPC_PREFIX + len);
                    frame.advance(GRPC_PREFIX);
                    return Some(Ok(frame.freeze()));
                }
            }
            if self.ended {
                return None;
            }
            match body.data().await {
                None => {
                    self.ended = true;
                    match body.trailers().await {
                        Ok(Some(trailers)) => self.status = grpc_status(&trailers),
                        Ok(None) => {}
                        Err(e) => return Some(Err(unavailable(&e))),
                    }
                    if !self.buf.is_empty() {
                        return Some(Err(Status::internal("the body ended inside a message")));
                    }
                    return None;
                }
                Some(Err(e)) => return Some(Err(unavailable(&e))),
                Some(Ok(data)) => {
                    // Give the window back at once (the data is ours now).
                    let _ = body.flow_control().release_capacity(data.len());
                    if self.buf.is_empty() && exactly_one_message(&data) {
                        // The usual case: take the chunk without copying.
                        return Some(Ok(data.slice(GRPC_PREFIX..)));
                    }
                    self.buf.extend_from_slice(&data);
                }
            }
        }
    }
}
