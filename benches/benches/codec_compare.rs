//! Instructions of a sync batch's wire codec: the server's compact layout against a
//! serialization library (bitcode, `distro_benches::bitcode_codec`), on the same 1,000
//! changed clients as `instructions.rs`'s sync benches (issue 13: "if a library beats
//! your own layout in instructions per client, use it: measure both").
//!
//! Not part of the CI gate. Run by hand (valgrind and gungraun-runner as for the gate):
//! `cargo bench -p distro-benches --bench codec_compare`; the figures are in
//! `results/instructions/codec-compare.md`.

use distro_benches::bitcode_codec;
use distro_benches::fixture::{self, Cluster};
use distro_core::ClientChange;
use distro_server::cluster::compact;
use gungraun::{library_benchmark, library_benchmark_group, main};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const CLIENTS: usize = 10_000;
const BATCH: usize = 1_000;

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// Two nodes; 1,000 of the owner's clients changed and due: their batch.
fn changes() -> (&'static Cluster, &'static [ClientChange]) {
    let (cluster, batch) = fixture::changed_batch(CLIENTS, BATCH);
    assert_eq!(batch.changes.len(), BATCH);
    (leak(cluster), Box::leak(batch.changes.into_boxed_slice()))
}

fn compact_bytes() -> (&'static Cluster, &'static [u8]) {
    let (cluster, changes) = changes();
    let b = compact::encode_changes(&cluster.nodes[0], changes);
    println!("compact: {} bytes for {BATCH} clients", b.len());
    (cluster, Box::leak(b.into_boxed_slice()))
}

fn bitcode_bytes() -> (&'static Cluster, &'static [u8]) {
    let (cluster, changes) = changes();
    let b = bitcode_codec::encode(&cluster.nodes[0], changes);
    println!("bitcode: {} bytes for {BATCH} clients", b.len());
    (cluster, Box::leak(b.into_boxed_slice()))
}

#[library_benchmark]
#[bench::changes_1000(setup = changes)]
fn encode_compact((cluster, changes): (&'static Cluster, &'static [ClientChange])) -> usize {
    compact::encode_changes(&cluster.nodes[0], black_box(changes)).len()
}

#[library_benchmark]
#[bench::changes_1000(setup = changes)]
fn encode_bitcode((cluster, changes): (&'static Cluster, &'static [ClientChange])) -> usize {
    bitcode_codec::encode(&cluster.nodes[0], black_box(changes)).len()
}

// Decoding with every check and name resolution: bytes to the core's changes.
#[library_benchmark]
#[bench::changes_1000(setup = compact_bytes)]
fn decode_compact((cluster, bytes): (&'static Cluster, &'static [u8])) -> usize {
    compact::decode_changes(&cluster.nodes[1], black_box(bytes))
        .expect("valid")
        .len()
}

#[library_benchmark]
#[bench::changes_1000(setup = bitcode_bytes)]
fn decode_bitcode((cluster, bytes): (&'static Cluster, &'static [u8])) -> usize {
    bitcode_codec::decode(&cluster.nodes[1], black_box(bytes))
        .expect("valid")
        .len()
}

// bitcode's own share: bytes to its borrowed structs, nothing checked or resolved.
#[library_benchmark]
#[bench::changes_1000(setup = bitcode_bytes)]
fn decode_bitcode_structs_only((_, bytes): (&'static Cluster, &'static [u8])) -> usize {
    bitcode_codec::decode_wire(black_box(bytes))
        .expect("valid")
        .len()
}

library_benchmark_group!(
    name = codec;
    benchmarks = encode_compact, encode_bitcode, decode_compact, decode_bitcode,
        decode_bitcode_structs_only
);

main!(library_benchmark_groups = codec);
