//! Generated protobuf and gRPC code, the gRPC [`codec`] it uses, the write requests the
//! servers read by hand ([`writes`]) and the responses they write by hand ([`results`]).

pub mod codec;
pub mod results;
pub mod writes;

/// The Nacos 2.x `Payload`, `Metadata` and the `Request` / `BiRequestStream` services
/// (the proto has no package).
#[allow(missing_docs, unreachable_pub, non_camel_case_types, clippy::all)]
pub mod nacos {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// distro's own protocol: the peer service and the native client API
/// (`server/proto/distro.proto`): messages, clients, and the servers (in [`distro::server`]
/// re-exported: `peer_server` and `registry_server`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod distro {
    include!(concat!(env!("OUT_DIR"), "/distro.v1.rs"));

    /// The servers, generated on their own: the write requests they take are
    /// [`crate::proto::writes`]'s types, the other messages the ones above.
    pub mod server {
        include!(concat!(env!("OUT_DIR"), "/distro-server/distro.v1.rs"));
    }
    pub use server::{peer_server, registry_server};
}
