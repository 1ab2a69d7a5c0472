//! Streams that are not the Nacos unary call (the Nacos bi-stream and the native
//! `distro.v1.Registry` API on the SDK port, the peer protocol `distro.v1.Peer` on the
//! cluster port) handed to tonic-generated services, every one polled on the connection's
//! task (no task per stream).
//!
//! The request body is an [`InBody`]: the connection pushes each DATA frame's payload
//! into it; the service (or a task of its own it gave the body to) reads it, and what it
//! has read is handed back to the client as stream window, so a service that does not
//! read stalls its client, never the server's memory. The request gets the connection's
//! [`TcpConnectInfo`] (so `tonic::Request::remote_addr` works, which identifies a Nacos
//! connection). The service's response is [`Bridged`]: its head, then each body frame
//! as the connection asks for one, only once the previous one went out within the
//! client's flow-control window, then its trailers.
//!
//! Each bridged stream polls with a waker of its own ([`Woken`]), which notes the stream
//! and wakes the connection's task: the task polls only the streams that were woken.

use bytes::Bytes;
use h2wire::hpack::encode_field;
use http_body::{Body, Frame};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;

/// The streams woken since the connection last looked, and the connection's waker.
pub(crate) struct Woken {
    any: AtomicBool,
    ids: Mutex<Vec<u32>>,
    conn: Waker,
}

impl Woken {
    pub(crate) fn new(conn: Waker) -> Arc<Self> {
        Arc::new(Self {
            any: AtomicBool::new(false),
            ids: Mutex::new(Vec::new()),
            conn,
        })
    }

    /// The waker of stream `id`.
    pub(crate) fn waker(self: &Arc<Self>, id: u32) -> Waker {
        Waker::from(Arc::new(StreamWaker {
            id,
            woken: self.clone(),
        }))
    }

    /// Moves the woken streams to `into`.
    pub(crate) fn drain_into(&self, into: &mut Vec<u32>) {
        if self.any.swap(false, Ordering::AcqRel) {
            into.append(&mut self.ids.lock());
        }
    }
}

struct StreamWaker {
    id: u32,
    woken: Arc<Woken>,
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.ids.lock().push(self.id);
        self.woken.any.store(true, Ordering::Release);
        self.woken.conn.wake_by_ref();
    }
}

/// The request body of a bridged stream, shared by the connection and the [`InBody`].
pub(crate) struct BodyShared {
    q: Mutex<BodyQ>,
    /// The stream's waker: the connection learns that read bytes can be released.
    conn: Waker,
}

#[derive(Default)]
struct BodyQ {
    chunks: VecDeque<Bytes>,
    end: bool,
    reset: bool,
    /// The service dropped the body: DATA is no longer kept.
    abandoned: bool,
    /// Bytes read (or dropped with the body) and not yet handed back to the client as window.
    consumed: u32,
    reader: Option<Waker>,
}

impl BodyShared {
    pub(crate) fn new(conn: Waker, end: bool) -> Arc<Self> {
        Arc::new(Self {
            q: Mutex::new(BodyQ {
                end,
                ..BodyQ::default()
            }),
            conn,
        })
    }

    fn update(&self, f: impl FnOnce(&mut BodyQ)) {
        let reader = {
            let mut q = self.q.lock();
            f(&mut q);
            q.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// A DATA frame's payload arrived; `false`: the body was dropped, and so is `data`.
    pub(crate) fn push(&self, data: Bytes) -> bool {
        let mut kept = true;
        self.update(|q| {
            if q.abandoned {
                kept = false;
            } else {
                q.chunks.push_back(data);
            }
        });
        kept
    }

    /// The client ended the stream.
    pub(crate) fn end(&self) {
        self.update(|q| q.end = true);
    }

    /// The stream is gone (reset, or the connection closed).
    pub(crate) fn reset(&self) {
        self.update(|q| q.reset = true);
    }

    /// The bytes read since the last call.
    pub(crate) fn take_consumed(&self) -> u32 {
        std::mem::take(&mut self.q.lock().consumed)
    }
}

/// A bridged stream's request body as an [`http_body::Body`].
pub(crate) struct InBody(pub(crate) Arc<BodyShared>);

impl Drop for InBody {
    /// The service is done with the body: what it did not read counts as read (the
    /// connection hands it back to the client), and later DATA is dropped.
    fn drop(&mut self) {
        let mut q = self.0.q.lock();
        q.abandoned = true;
        let dropped: usize = q.chunks.drain(..).map(|c| c.len()).sum();
        if dropped == 0 {
            return;
        }
        q.consumed += dropped as u32;
        drop(q);
        self.0.conn.wake_by_ref();
    }
}

/// The body's error: the stream is gone before its end.
#[derive(Debug)]
pub(crate) struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stream was reset or its connection closed")
    }
}

impl std::error::Error for Reset {}

impl Body for InBody {
    type Data = Bytes;
    type Error = Reset;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Reset>>> {
        let mut q = self.0.q.lock();
        if let Some(c) = q.chunks.pop_front() {
            let first = q.consumed == 0;
            q.consumed += c.len() as u32;
            drop(q);
            if first {
                self.0.conn.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        if q.end {
            return Poll::Ready(None);
        }
        if q.reset {
            return Poll::Ready(Some(Err(Reset)));
        }
        q.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let q = self.0.q.lock();
        q.end && q.chunks.is_empty()
    }
}

type Call = Pin<Box<dyn Future<Output = http::Response<tonic::body::Body>> + Send>>;

/// The response side of a bridged stream.
pub(crate) struct Bridged {
    state: State,
    waker: Waker,
}

enum State {
    Call(Call),
    Body(tonic::body::Body),
    Done,
}

/// What a bridged stream has for the client.
pub(crate) enum Out {
    /// Nothing yet.
    Pending,
    /// The response head (an HPACK block); `true`: it ends the stream (trailers-only).
    Head(Vec<u8>, bool),
    Data(Bytes),
    /// The trailers (an HPACK block), ending the stream.
    Trailers(Vec<u8>),
    /// The end of the stream, without trailers.
    End,
    /// The response failed: reset the stream.
    Failed,
}

impl Bridged {
    /// Calls the service of `routes` with `request` (its head and body), polled with `waker`.
    pub(crate) fn call(
        routes: &Routes,
        request: http::Request<InBody>,
        info: &TcpConnectInfo,
        waker: Waker,
    ) -> Self {
        let mut request = request;
        request.extensions_mut().insert(info.clone());
        let mut routes = routes.clone();
        let call = Box::pin(async move {
            let response: Result<_, Infallible> = routes.call(request).await;
            let Ok(response) = response;
            response
        });
        Self {
            state: State::Call(call),
            waker,
        }
    }

    /// The next thing to send, if there is one.
    pub(crate) fn poll(&mut self) -> Out {
        let mut cx = Context::from_waker(&self.waker);
        loop {
            match &mut self.state {
                State::Call(call) => {
                    let Poll::Ready(response) = call.as_mut().poll(&mut cx) else {
                        return Out::Pending;
                    };
                    let (parts, body) = response.into_parts();
                    let end = body.is_end_stream();
                    let mut block = Vec::new();
                    encode_field(&mut block, b":status", parts.status.as_str().as_bytes());
                    encode_headers(&mut block, &parts.headers);
                    self.state = if end { State::Done } else { State::Body(body) };
                    return Out::Head(block, end);
                }
                State::Body(body) => {
                    let frame = match Pin::new(body).poll_frame(&mut cx) {
                        Poll::Pending => return Out::Pending,
                        Poll::Ready(f) => f,
                    };
                    let frame = match frame {
                        None => {
                            self.state = State::Done;
                            return Out::End;
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "a response body failed");
                            self.state = State::Done;
                            return Out::Failed;
                        }
                        Some(Ok(frame)) => frame,
                    };
                    match frame.into_data() {
                        Ok(data) if data.is_empty() => {}
                        Ok(data) => return Out::Data(data),
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                let mut block = Vec::new();
                                encode_headers(&mut block, &trailers);
                                self.state = State::Done;
                                return Out::Trailers(block);
                            }
                        }
                    }
                }
                State::Done => return Out::Pending,
            }
        }
    }
}

/// Appends `headers` to an HPACK block, leaving out the fields HTTP/2 forbids.
fn encode_headers(block: &mut Vec<u8>, headers: &http::HeaderMap) {
    for (name, value) in headers {
        if super::fields::connection_specific(name.as_str().as_bytes()) {
            continue;
        }
        encode_field(block, name.as_str().as_bytes(), value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_body_counts_its_unread_data_as_read_and_drops_later_data() {
        let shared = BodyShared::new(Waker::noop().clone(), false);
        assert!(shared.push(Bytes::from_static(b"abc")));
        drop(InBody(shared.clone()));
        assert_eq!(shared.take_consumed(), 3);
        assert!(!shared.push(Bytes::from_static(b"de")));
        assert_eq!(shared.take_consumed(), 0);
        assert!(shared.q.lock().chunks.is_empty());
    }
}
