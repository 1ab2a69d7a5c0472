//! # distro-benches: what the benchmarks of distro share
//!
//! The criterion suites (`benches/{hashing,routing,checksum,store,sync,verify}.rs`) and the
//! instruction-count benches (`benches/instructions.rs`, run by `.ci/perf-gate`) measure the
//! hot paths of `distro-core`. This library holds what they have in common:
//!
//! * [`fixture`]: deterministic keys, names and populated registries, nodes and clusters;
//! * [`nacos`]: Nacos 1.x's MD5 service checksum, the baseline of the checksum benches;
//! * [`codec`]: the hook where the server's protobuf encoding of sync batches will go;
//! * [`gate`]: the instruction-count baseline file and its comparison (the perf gate).
//!
//! It benchmarks nothing by itself and is not used by the product.

pub mod bitcode_codec;
pub mod codec;
pub mod fixture;
pub mod gate;
pub mod nacos;
