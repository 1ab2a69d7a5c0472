//! A lean Nacos 2.x gRPC client for load generation (`--protocol nacos`).
//!
//! Each simulated client is a [`NacosClient`]: one real TCP connection and HTTP/2 channel
//! of its own, the Java SDK's handshake (`ServerCheckRequest`, then
//! `ConnectionSetupRequest` on the bi-stream, then the server's `SetupAckRequest`), unary
//! requests with any number in flight, and a bi-stream reader that acks
//! `NotifySubscriberRequest` pushes and answers `ClientDetectionRequest`s. The wire format
//! follows `shared/docs/nacos-reference.md` §4 field for field, so the same client drives
//! distro or a real Nacos 2.x server.
//!
//! Lean on the hot path: a request is encoded once ([`Requests`] → [`Prepared`]) and
//! re-sent by reference count; replies are decoded without copying, and a reply's result
//! fields are read by a scan of its top-level object that steps over the rest (a query's
//! `serviceInfo` is not parsed; `head.rs`). HTTP/2 is a connection of our own on the
//! `h2wire` crate (the server's `distro_server::h2_client`): the request heads are encoded once, and a call
//! writes its HEADERS and DATA+END_STREAM from its own task in one write (a tonic client
//! makes three, and hands each call to a connection task).
//!
//! Scale: [`Dialer`] spreads connections over source addresses 127.0.0.2, 127.0.0.3, …
//! when the server is on loopback (one address has ~28,000 ephemeral ports), and
//! [`raise_nofile`] lifts the open-file limit; [`connect_many`] opens thousands of
//! connections with bounded parallelism.
//!
//! ```no_run
//! use loadgen::protocol::nacos::{ClientConfig, Dialer, Instance, NacosClient, ServiceName};
//! # async fn demo(server: std::net::SocketAddr) -> Result<(), loadgen::protocol::nacos::NacosError> {
//! let config = ClientConfig::default();
//! let dialer = Dialer::for_target(server.ip(), config.connect_timeout);
//! let client = NacosClient::connect(&config, &dialer, server, 0).await?;
//! let service = ServiceName::new("demo-svc");
//! let register = client.requests().register(&service, &Instance::new("10.0.0.7", 8080));
//! client.call(&register).await?; // send it as often as needed
//! let view = client.call(&client.requests().query(&service, "", false)).await?;
//! assert!(view.service_info()?.contains("10.0.0.7", 8080));
//! # Ok(()) }
//! ```

mod client;
mod dial;
mod error;
mod head;
mod many;
mod message;
mod protocol;
mod wire;

pub use client::{ClientConfig, NacosClient, Push, PushHandler, Reply, ServerTls, StreamCounters};
pub use dial::{DEFAULT_LOOPBACK_SOURCES, Dialer, loopback_sources};
pub use distro_server::open_files::{NofileLimit, raise_nofile};
pub use error::NacosError;
pub use many::{ConnectPlan, connect_many};
pub use message::{
    DEFAULT_CLUSTER, DEFAULT_GROUP, DEFAULT_NAMESPACE, Host, Instance, Prepared, Requests,
    ServiceInfo, ServiceName,
};
pub use protocol::{DESCRIPTOR_MARGIN, NacosProtocol};
pub use wire::{Encoded, Incoming, PayloadError};
