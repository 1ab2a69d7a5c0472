//! Compiles every `.proto` under `proto/` with protox (no `protoc` needed) and generates
//! prost messages and tonic clients into `OUT_DIR`, the servers into its subdirectories
//! (the distro servers read some requests with their own types).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&dir])?;
    // The files of `fds` whose name starts with a prefix.
    let only = |prefix: &str| {
        let mut out = fds.clone();
        out.file.retain(|f| f.name().starts_with(prefix));
        out
    };
    // Every generated service and client uses prost messages decoded from one `Bytes`
    // rather than tonic's `BytesMut` (see src/proto/codec.rs).
    let codec = "crate::proto::codec::Codec";
    // Nacos: messages, clients and servers.
    tonic_prost_build::configure()
        .codec_path(codec)
        .compile_fds(only("nacos"))?;
    // distro: messages and clients.
    let mut messages = tonic_prost_build::configure()
        .build_server(false)
        .codec_path(codec);
    for (proto, rust) in SHARED_EXTERN {
        messages = messages.extern_path(*proto, *rust);
    }
    messages.compile_fds(only("distro"))?;
    // distro: the servers, in their own directory. Their messages are the ones generated
    // above, except the write requests, which the servers read with their own types.
    let mut servers = tonic_prost_build::configure()
        .build_client(false)
        .codec_path(codec)
        .out_dir(sub_dir("distro-server")?)
        .extern_path(".distro.v1", "crate::proto::distro");
    for (proto, rust) in SHARED_EXTERN.iter().chain(SERVER_EXTERN) {
        servers = servers.extern_path(*proto, *rust);
    }
    servers.compile_fds(only("distro"))?;
    Ok(())
}

/// Messages that are our own types on both ends.
const SHARED_EXTERN: &[(&str, &str)] = &[
    // The two bulk peer messages: encoded straight from the core's records and decoded
    // straight into them (see src/cluster/sync_codec.rs).
    (
        ".distro.v1.SyncRequest",
        "crate::cluster::sync_codec::SyncRequest",
    ),
    (
        ".distro.v1.SnapshotChunk",
        "crate::cluster::sync_codec::SnapshotChunk",
    ),
    // Query answers are kept encoded (src/api/query_answer.rs, src/answers.rs).
    (
        ".distro.v1.QueryResponse",
        "crate::api::query_answer::QueryResponse",
    ),
];

/// Requests the servers read with their own types (src/proto/writes.rs), and responses
/// they write with their own (src/proto/results.rs).
const SERVER_EXTERN: &[(&str, &str)] = &[
    (
        ".distro.v1.WriteResponse",
        "crate::proto::results::WriteResponse",
    ),
    (
        ".distro.v1.ForwardResponse",
        "crate::proto::results::ForwardResponse",
    ),
    (
        ".distro.v1.RegisterRequest",
        "crate::proto::writes::RegisterRequest",
    ),
    (
        ".distro.v1.DeregisterRequest",
        "crate::proto::writes::DeregisterRequest",
    ),
    (
        ".distro.v1.HeartbeatRequest",
        "crate::proto::writes::HeartbeatRequest",
    ),
    (
        ".distro.v1.ForwardRequest",
        "crate::proto::writes::ForwardRequest",
    ),
];

/// `OUT_DIR/name`, created.
fn sub_dir(name: &str) -> std::io::Result<PathBuf> {
    let d = PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?).join(name);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
