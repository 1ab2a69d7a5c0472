//! The Nacos unary call (`/Request/request`) answered on the connection's own task.
//!
//! [`ReadMessage`] is a future the connection polls beside its other work (never a task of
//! its own): it reads the request body, however it is split into DATA frames, until one
//! whole gRPC message is in, releasing the flow-control window as it goes. It checks the
//! declared length against `--max-message-bytes` as soon as the 5-byte prefix is in, so
//! an oversized message is refused with `RESOURCE_EXHAUSTED` before its body is read, and
//! it never holds more than one message plus one DATA frame. [`answer`] decodes the
//! `Payload` (without copying it), calls the synchronous handler and writes the reply (HEADERS, DATA and the
//! `grpc-status: 0` trailers) into the connection's send buffer; the connection writes
//! whatever is ready in one go the next time it is polled.

use crate::nacos::NacosFrontend;
use crate::sdk_port::grpc::{self, Code, PREFIX, Status};
use bytes::{Buf, Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// What reading a unary request gave.
pub(crate) enum Read {
    /// One whole message (without its prefix).
    Message(Bytes),
    /// The call is refused with this status.
    Refused(Status),
    /// The client reset the stream or the connection failed: nobody to answer.
    Gone,
}

/// Reads the one message of a unary request (see the module documentation).
pub(crate) struct ReadMessage {
    body: RecvStream,
    buf: BytesMut,
    max: usize,
    respond: Option<SendResponse<Bytes>>,
}

impl ReadMessage {
    pub(crate) fn new(body: RecvStream, respond: SendResponse<Bytes>, max: usize) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            max,
            respond: Some(respond),
        }
    }

    /// The declared length of the message in `b`, once its prefix is in; a refusal for a
    /// compressed or oversized message.
    fn declared(&self, b: &[u8]) -> Result<Option<usize>, Status> {
        if b.len() < PREFIX {
            return Ok(None);
        }
        if b[0] != 0 {
            return Err(Status::new(
                Code::Unimplemented,
                "compressed messages are not supported: send grpc-encoding identity",
            ));
        }
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if len > self.max {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "the request message is {len} bytes, more than this server accepts \
                     ({} bytes, --max-message-bytes)",
                    self.max
                ),
            ));
        }
        Ok(Some(len))
    }

    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        loop {
            match self.declared(&self.buf) {
                Err(s) => return Poll::Ready(Read::Refused(s)),
                Ok(Some(len)) if self.buf.len() >= PREFIX + len => {
                    self.buf.advance(PREFIX);
                    return Poll::Ready(Read::Message(self.buf.split_to(len).freeze()));
                }
                Ok(_) => {}
            }
            let chunk = match ready!(self.body.poll_data(cx)) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "nacos unary request failed while reading");
                    return Poll::Ready(Read::Gone);
                }
                None => {
                    return Poll::Ready(Read::Refused(Status::new(
                        Code::Unimplemented,
                        "the request ended before one whole message: /Request/request takes \
                         exactly one",
                    )));
                }
            };
            // The window is released at once: the buffer is bounded by the length check.
            let _ = self.body.flow_control().release_capacity(chunk.len());
            if self.buf.is_empty() {
                // The usual case: the whole message in one DATA frame, taken without a copy.
                match self.declared(&chunk) {
                    Err(s) => return Poll::Ready(Read::Refused(s)),
                    Ok(Some(len)) if chunk.len() >= PREFIX + len => {
                        return Poll::Ready(Read::Message(chunk.slice(PREFIX..PREFIX + len)));
                    }
                    Ok(_) => {}
                }
            }
            self.buf.extend_from_slice(&chunk);
        }
    }
}

impl Future for ReadMessage {
    type Output = (SendResponse<Bytes>, Read);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let read = ready!(this.read(cx));
        // Polled again after Ready is a bug of the caller; the respond handle is taken once.
        let respond = this
            .respond
            .take()
            .expect("ReadMessage polled after completion");
        Poll::Ready((respond, read))
    }
}

/// Answers a unary call whose body was read: decode, handle, write the reply.
pub(crate) fn answer(
    nacos: &NacosFrontend,
    peer: Option<SocketAddr>,
    mut respond: SendResponse<Bytes>,
    read: Read,
) {
    let message = match read {
        Read::Message(m) => m,
        Read::Refused(status) => return grpc::refuse(respond, &status),
        Read::Gone => return,
    };
    let data = match nacos.answer_unary(peer, message) {
        Ok(frame) => frame,
        Err(e) => {
            let status = Status::new(
                Code::Internal,
                format!("cannot decode the request as a Nacos Payload: {e}"),
            );
            return grpc::refuse(respond, &status);
        }
    };
    // An error means the client reset the stream or went away: nobody to answer.
    let Ok(mut send) = respond.send_response(grpc::response_head(), false) else {
        return;
    };
    if send.send_data(data, false).is_ok() {
        let _ = send.send_trailers(grpc::ok_trailers());
    }
}
