//! Generated protobuf and gRPC code.

/// The Nacos 2.x `Payload`, `Metadata` and the `Request` / `BiRequestStream` services
/// (the proto has no package).
#[allow(missing_docs, unreachable_pub, non_camel_case_types, clippy::all)]
pub mod nacos {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}
