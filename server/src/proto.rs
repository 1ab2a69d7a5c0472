//! Generated protobuf and gRPC code, and the gRPC [`codec`] it uses.

pub mod codec;

/// The Nacos 2.x `Payload`, `Metadata` and the `Request` / `BiRequestStream` services
/// (the proto has no package).
#[allow(missing_docs, unreachable_pub, non_camel_case_types, clippy::all)]
pub mod nacos {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// distro's own protocol: the peer service and the native client API
/// (`server/proto/distro.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod distro {
    include!(concat!(env!("OUT_DIR"), "/distro.v1.rs"));
}
