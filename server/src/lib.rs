//! # distro-server: a Distro cluster node
//!
//! Runs a [`distro_core::Node`] behind gRPC and HTTP: the Nacos 2.x SDK protocol and the
//! native `distro.v1.Registry` API on the SDK port, the peer protocol `distro.v1.Peer` on
//! the cluster port, and the Nacos HTTP Open API v1 on the main port.
#![warn(missing_docs)]

pub mod nacos;
pub mod proto;
