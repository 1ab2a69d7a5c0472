//! Streams that are not the Nacos unary call (the Nacos bi-stream and the native
//! `distro.v1.Registry` API) handed to tonic-generated services: the long-lived streams
//! (the bi-stream, `Watch`) on a task each, the native unary calls polled on the
//! connection's task (see `connection`).
//!
//! The h2 request body becomes an [`http_body::Body`] ([`H2Body`], releasing the
//! flow-control window as the service reads), the request gets the connection's
//! [`TcpConnectInfo`] (so `tonic::Request::remote_addr` works, which identifies a Nacos
//! connection), and the service's response is written back: the head, every DATA frame
//! within the client's flow-control window (so a client that stops reading stalls its own
//! stream, never the server's memory), and the trailers. A stream the client resets ends
//! the response at once.

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http_body::{Body, Frame};
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;

/// An h2 request body as an [`http_body::Body`].
pub(crate) struct H2Body {
    recv: RecvStream,
    data_done: bool,
}

impl H2Body {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(b)) => {
                    let _ = this.recv.flow_control().release_capacity(b.len());
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// A stream served by a tonic service: a future the caller spawns (long-lived streams)
/// or polls on the connection's task (unary calls).
pub(crate) type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves one stream with `routes`: calls the service, then writes its response.
pub(crate) fn call(
    routes: &Routes,
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    info: &TcpConnectInfo,
) -> Call {
    let mut request = request.map(H2Body::new);
    request.extensions_mut().insert(info.clone());
    let mut routes = routes.clone();
    Box::pin(async move {
        let response: Result<_, Infallible> = routes.call(request).await;
        let Ok(response) = response;
        write(response, respond).await;
    })
}

/// Writes `response` on the stream of `respond`.
async fn write(response: http::Response<tonic::body::Body>, mut respond: SendResponse<Bytes>) {
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    let Ok(mut send) = respond.send_response(http::Response::from_parts(parts, ()), end) else {
        return;
    };
    if end {
        return;
    }
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(r) = send.poll_reset(cx) {
                tracing::debug!(reason = ?r.ok(), "the client reset a stream");
                return Poll::Ready(None);
            }
            Pin::new(&mut body).poll_frame(cx).map(Some)
        })
        .await;
        let Some(frame) = frame else { return };
        match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a response body failed");
                send.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if send_within_window(&mut send, data).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers);
                    }
                    return;
                }
            },
        }
    }
}

/// Sends `data`, a piece at a time as the client's window allows.
async fn send_within_window(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), ()> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let n = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a stream failed while writing");
                return Err(());
            }
            None => return Err(()),
        };
        let piece = data.split_to(n.min(data.len()));
        send.send_data(piece, false).map_err(|_| ())?;
    }
    Ok(())
}
