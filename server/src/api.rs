//! The client APIs: the Nacos HTTP Open API v1 on the main port ([`http`]) and the native
//! `distro.v1.Registry` on the SDK port ([`native`]).
//!
//! Both take ip:port writes (register, deregister, heartbeat) as core types and hand them
//! to [`crate::cluster::forward`], which applies those this node owns and forwards the
//! rest; reads are answered from the local registry. The Nacos 2.x gRPC front end, also
//! on the SDK port, is its own module, [`crate::nacos`].

pub mod http;
pub mod native;
pub mod query_answer;
