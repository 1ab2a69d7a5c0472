//! The two tonic services, `Request/request` and `BiRequestStream/requestBiStream`.
//!
//! Thin glue: each call is identified by the peer address of its HTTP/2 connection
//! (`tonic::Request::remote_addr`) and handed to `handler.rs` (unary) or `stream.rs`
//! (bi-stream). A unary call always gets a `Payload` back, errors included, as Nacos
//! clients expect; only a stream that cannot be identified fails with a gRPC status.

use crate::nacos::codec::Envelope;
use crate::nacos::state::Shared;
use crate::nacos::{handler, stream};
use crate::proto::nacos::Payload;
use crate::proto::nacos::bi_request_stream_server::BiRequestStream;
use crate::proto::nacos::request_server::Request;
use std::sync::Arc;
use tonic::{Response, Status, Streaming};

/// The unary Nacos service (`/Request/request`).
pub struct NacosRequestService {
    shared: Arc<Shared>,
}

impl NacosRequestService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl Request for NacosRequestService {
    async fn request(&self, request: tonic::Request<Payload>) -> Result<Response<Payload>, Status> {
        let addr = request.remote_addr();
        let env = Envelope::from_payload(request.into_inner());
        let answer = handler::handle_unary(&self.shared, addr, &env);
        Ok(Response::new(answer.into_payload()))
    }
}

/// The bi-stream Nacos service (`/BiRequestStream/requestBiStream`).
pub struct NacosBiStreamService {
    shared: Arc<Shared>,
}

impl NacosBiStreamService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl BiRequestStream for NacosBiStreamService {
    type requestBiStreamStream = stream::Outgoing;

    async fn request_bi_stream(
        &self,
        request: tonic::Request<Streaming<Payload>>,
    ) -> Result<Response<Self::requestBiStreamStream>, Status> {
        let addr = request.remote_addr();
        stream::open(self.shared.clone(), addr, request.into_inner()).map(Response::new)
    }
}
