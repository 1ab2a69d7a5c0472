//! The Nacos 2.x gRPC front end: what real Nacos SDKs (Java, Go, Python, Rust) speak to
//! register, discover and subscribe against a Distro node.
//!
//! ```text
//!  SDK ──unary Payload──▶ service ─▶ handler ─▶ Node (register / deregister / query)
//!      ◀─bi-stream──────▶ stream   (setup, acks)      │ ChangeListener
//!                          ▲                          ▼
//!                          └──── push (merged, acked, retried) ◀── subscriptions
//!                          └──── detection (probe idle connections, drop the silent)
//! ```
//!
//! Where each concept lives: `codec` (the `Payload` envelope), `message` (request and
//! response JSON), `view` (`ServiceInfo`), `error` (every failure → `ErrorResponse` code),
//! `connection` (one TCP connection = one connection client), `handler` (unary requests),
//! `stream` (the bi-stream), `subscription`, `hub` and `push` (subscribers, pending pushes
//! and `NotifySubscriberRequest`), `detection` (`ClientDetectionRequest`), `metrics`,
//! `config`, `state` (the state all of them share) and `frontend` ([`NacosFrontend`], the
//! public handle).
//!
//! Deliberately not here: persistent instances (refused with a 400: they are not Distro
//! data), the config-center messages, TLS and the HTTP/2 transport (the SDK port,
//! [`crate::sdk_port`]), and `ConnectResetRequest` redirects.
//!
//! ```no_run
//! # async fn serve(node: std::sync::Arc<distro_core::Node>) -> anyhow::Result<()> {
//! use distro_server::nacos::{NacosConfig, NacosFrontend};
//! use distro_server::sdk_port::SdkPort;
//! use std::sync::Arc;
//! let nacos = Arc::new(NacosFrontend::new(node, NacosConfig::default(), distro_server::clock::system())?);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9848").await?;
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop_tx);
//! SdkPort::new(nacos.clone())
//!     .serve(listener, async {
//!         let _ = stop_rx.await;
//!         nacos.shutdown().await; // ends the bi-streams so the port can stop
//!     })
//!     .await;
//! # Ok(()) }
//! ```

mod codec;
mod config;
mod connection;
mod detection;
mod error;
mod frontend;
mod handler;
mod hub;
mod message;
mod metrics;
mod push;
mod service;
mod state;
mod stream;
mod subscription;
pub(crate) mod view;

pub use config::{
    DEFAULT_CACHE_MILLIS, DEFAULT_DETECTION_IDLE, DEFAULT_DETECTION_INTERVAL,
    DEFAULT_DETECTION_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PUSH_FAILURES, DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION, DEFAULT_OUTBOUND_QUEUE,
    DEFAULT_PUSH_ACK_TIMEOUT, DEFAULT_PUSH_DELAY, DEFAULT_PUSH_RETRY_DELAY, DEFAULT_SETUP_TIMEOUT,
    NacosConfig, NacosConfigError,
};
pub use frontend::NacosFrontend;
pub use handler::{decode_instance_request, encode_query_response, encode_query_response_cached};
pub use metrics::{NacosStats, RequestCount};
pub use service::{NacosBiStreamService, NacosRequestService};
