//! gRPC calls on one HTTP/2 connection, straight over hyper's HTTP/2 client.
//!
//! Nacos needs two methods only (`/Request/request` unary, `/BiRequestStream/
//! requestBiStream` bidirectional), with pre-framed messages. Going straight to hyper
//! (instead of a tonic `Channel`) saves a buffer task hop per call and, above all, lets the
//! request body say that it ends with its one DATA frame: hyper then writes HEADERS and
//! DATA+END_STREAM in one flush, one `writev` per request where a tonic client makes three
//! (HEADERS, DATA, an empty END_STREAM DATA). It also means the connection is never
//! silently re-opened: when it is gone, calls fail.

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming as ResponseBody, SizeHint};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{CONTENT_TYPE, HeaderValue, TE};
use hyper::{HeaderMap, Method, Request, Uri};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use crate::nacos::wire::GRPC_PREFIX;

/// A request body: one ready gRPC frame (unary) or the frames of a channel (bi-stream).
pub(crate) enum OutBody {
    Unary(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            OutBody::Unary(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            OutBody::Stream(rx) => rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, OutBody::Unary(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Unary(Some(b)) => SizeHint::with_exact(b.len() as u64),
            OutBody::Unary(None) => SizeHint::with_exact(0),
            OutBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// One HTTP/2 connection to a Nacos SDK port. Cheap to clone.
#[derive(Clone)]
pub(crate) struct H2 {
    send: SendRequest<OutBody>,
    unary_uri: Uri,
    stream_uri: Uri,
}

fn unavailable(e: &(dyn std::error::Error + 'static)) -> Status {
    Status::unavailable(crate::nacos::client::error_chain(e))
}

impl H2 {
    /// HTTP/2 handshake on `io`; returns the connection and the task that drives it.
    pub(crate) async fn handshake(
        io: TcpStream,
        server: SocketAddr,
    ) -> Result<(H2, JoinHandle<()>), Status> {
        let (send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| unavailable(&e))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let uri = |path: &str| {
            Uri::try_from(format!("http://{server}{path}"))
                .map_err(|e| Status::invalid_argument(format!("bad server address: {e}")))
        };
        Ok((
            H2 {
                send,
                unary_uri: uri("/Request/request")?,
                stream_uri: uri("/BiRequestStream/requestBiStream")?,
            },
            task,
        ))
    }

    fn request(uri: &Uri, body: OutBody) -> Request<OutBody> {
        let mut r = Request::new(body);
        *r.method_mut() = Method::POST;
        *r.uri_mut() = uri.clone();
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        r
    }

    async fn call(&self, uri: &Uri, body: OutBody) -> Result<ResponseBody, Status> {
        let mut send = self.send.clone();
        send.ready().await.map_err(|e| unavailable(&e))?;
        let response = send
            .send_request(Self::request(uri, body))
            .await
            .map_err(|e| unavailable(&e))?;
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
        let mut body = self
            .call(&self.unary_uri, OutBody::Unary(Some(frame)))
            .await?;
        let mut reader = FrameReader::default();
        let message = reader.next(&mut body).await.transpose()?;
        // Drain to the trailers, which carry the status.
        while let Some(r) = reader.next(&mut body).await {
            r?;
        }
        match (message, reader.status) {
            (_, Some(s)) if s.code() != Code::Ok => Err(s),
            (Some(m), _) => Ok(m),
            (None, _) => Err(Status::internal("the call ended without a message")),
        }
    }

    /// Opens the bi-stream; frames sent on `outbound` go to the server.
    pub(crate) async fn open_stream(
        &self,
        outbound: mpsc::Receiver<Bytes>,
    ) -> Result<(ResponseBody, FrameReader), Status> {
        let body = self
            .call(&self.stream_uri, OutBody::Stream(outbound))
            .await?;
        Ok((body, FrameReader::default()))
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
    /// The status from the trailers, once read.
    pub(crate) status: Option<Status>,
}

impl FrameReader {
    /// The next message, or `None` at the end of the body (then see `status`).
    pub(crate) async fn next(&mut self, body: &mut ResponseBody) -> Option<Result<Bytes, Status>> {
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
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
            match frame {
                None => {
                    if !self.buf.is_empty() {
                        return Some(Err(Status::internal("the body ended inside a message")));
                    }
                    return None;
                }
                Some(Err(e)) => return Some(Err(unavailable(&e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if self.buf.is_empty() && exactly_one_message(&data) {
                            // The usual case: take the chunk without copying.
                            return Some(Ok(data.slice(GRPC_PREFIX..)));
                        }
                        self.buf.extend_from_slice(&data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.status = grpc_status(&trailers);
                        }
                    }
                },
            }
        }
    }
}
