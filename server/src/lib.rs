//! # distro-server: a Distro cluster node
//!
//! Runs a [`distro_core::Node`] behind gRPC and HTTP:
//!
//! | port | default | serves |
//! |---|---|---|
//! | main `P` | 8848 | HTTP: Nacos Open API v1 (`/nacos/v1/ns/...`), `/metrics`, `/health` ([`api::http`]) |
//! | `P+1000` | 9848 | SDK gRPC: Nacos 2.x `Request` / `BiRequestStream` ([`nacos`]) and the native `distro.v1.Registry` ([`api::native`]) |
//! | `P+1001` | 9849 | cluster gRPC: the peer protocol `distro.v1.Peer` ([`cluster`]), never served elsewhere |
//!
//! The modules follow the ports: [`api`] (HTTP and native client APIs), [`nacos`] (the
//! Nacos 2.x SDK front end) and [`cluster`] (driver, peer service and client, peer
//! codecs, forwarding of writes to their owner). [`server::start`] assembles one node on
//! bound listeners; [`local_cluster::LocalCluster`] runs N of them in one process.
//! Beside them: [`sdk_port`] (the SDK port's HTTP/2 transport, answering Nacos unary
//! calls on the connection's task), [`admission`] (connection limits on every port), [`metrics`] (the
//! `/metrics` page), [`clock`], [`fault`] (LocalCluster's fault switches),
//! [`open_files`], [`h2_client`] (gRPC calls on an HTTP/2 connection of our own: the
//! peer calls, loadgen's clients) and the generated [`proto`] code.
#![warn(missing_docs)]

pub mod admission;
pub mod answers;
pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod fault;
pub mod h2_client;
pub mod local_cluster;
pub mod metrics;
pub mod nacos;
pub mod open_files;
pub mod proto;
pub mod sdk_port;
pub mod server;
pub mod tls;

// The paths of the flat layout that loadgen and the benches import.
pub use api::native;
pub use cluster::sync_codec;

pub use local_cluster::{LocalCluster, NodePorts};
pub use server::{Listeners, RunningServer, ServerConfig, run, start};
