//! # distro-server: a Distro cluster node
//!
//! Runs a [`distro_core::Node`] behind gRPC and HTTP:
//!
//! | port | default | serves |
//! |---|---|---|
//! | main `P` | 8848 | HTTP: Nacos Open API v1 (`/nacos/v1/ns/...`), `/metrics`, `/health` ([`http`]) |
//! | `P+1000` | 9848 | SDK gRPC: Nacos 2.x `Request` / `BiRequestStream` ([`nacos`]) and the native `distro.v1.Registry` ([`native`]) |
//! | `P+1001` | 9849 | cluster gRPC: the peer protocol `distro.v1.Peer` ([`peer`]), never served elsewhere |
//!
//! [`server::start`] runs one node on bound listeners; [`local_cluster::LocalCluster`]
//! runs N of them in one process. The [`driver`] ticks the core and carries its messages
//! ([`peer_client`]); [`ops`] routes ip:port writes to their owner; [`wire`] converts
//! between the core and protobuf.
#![warn(missing_docs)]

pub mod admission;
pub mod clock;
pub mod driver;
pub mod http;
pub mod local_cluster;
pub mod metrics;
pub mod nacos;
pub mod native;
pub mod open_files;
pub mod ops;
pub mod peer;
pub mod peer_client;
pub mod proto;
pub mod server;
pub mod sync_codec;
pub mod wire;

pub use local_cluster::{LocalCluster, NodePorts};
pub use server::{Listeners, RunningServer, ServerConfig, run, start};
