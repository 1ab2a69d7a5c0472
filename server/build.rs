//! Compiles every `.proto` under `proto/` with protox (no `protoc` needed) and generates
//! prost messages plus tonic clients and servers into `OUT_DIR`.

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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost messages decoded from one `Bytes` rather than tonic's `BytesMut` (see
        // src/proto/codec.rs).
        .codec_path("crate::proto::codec::Codec")
        // The two bulk peer messages are our own types: encoded straight from the core's
        // records and decoded straight into them (see src/cluster/sync_codec.rs).
        .extern_path(
            ".distro.v1.SyncRequest",
            "crate::cluster::sync_codec::SyncRequest",
        )
        .extern_path(
            ".distro.v1.SnapshotChunk",
            "crate::cluster::sync_codec::SnapshotChunk",
        )
        // Query answers are kept encoded (src/api/query_answer.rs, src/answers.rs).
        .extern_path(
            ".distro.v1.QueryResponse",
            "crate::api::query_answer::QueryResponse",
        )
        .compile_fds(fds)?;
    Ok(())
}
