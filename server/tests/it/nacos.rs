//! Integration tests of the Nacos 2.x gRPC front end: the SDK port on port 0 with a
//! standalone node, driven by the real `nacos-sdk` crate and by raw tonic clients.

pub(crate) mod auth;
mod cluster_sdk;
pub(crate) mod harness;
mod leave_sdk;
mod python_sdk;
mod raw;
pub(crate) mod sdk;
mod sdk_tls;
mod transport;
pub(crate) mod wire;
mod wire_bounds;
