//! Hashing: Nacos's `distro_hash` against xxh3 and the in-memory map hasher.
//!
//! Three hashes run on every request path: `distro_hash` (Java's `String.hashCode`, mod
//! `Integer.MAX_VALUE`) routes an `ip:port` client to its owner exactly as Nacos does;
//! `stable_hash64` (xxh3, fixed seed) picks a client's shard; foldhash (process-seeded)
//! hashes every key of the in-memory maps. Each group hashes the same 1,024 realistic keys
//! with all three, so the ratios are measured side by side in one run:
//!
//! * `hash/ip_port`: `10.x.y.z:port` routing keys (12–20 bytes);
//! * `hash/service`: grouped service names `DEFAULT_GROUP@@payment-service-00042` (Nacos
//!   1.x routes services by this name);
//! * `hash/connection_id`: gRPC connection client ids `<millis>_<ip>_<port>`, which only
//!   the shard hash and the maps see (connection clients are never routed).
//!
//! Throughput is in keys; the per-key time is the median divided by 1,024.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distro_benches::fixture;
use distro_core::hash::{distro_hash, shard_of, stable_hash64};
use std::hash::BuildHasher;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const KEYS: usize = 1_024;

fn compare(c: &mut Criterion, group: &str, keys: &[String]) {
    let map_hasher = foldhash::fast::RandomState::default();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("distro_hash", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in keys {
                acc ^= distro_hash(black_box(k));
            }
            acc
        })
    });
    g.bench_function("xxh3_stable_hash64", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in keys {
                acc ^= stable_hash64(black_box(k).as_bytes());
            }
            acc
        })
    });
    g.bench_function("xxh3_shard_of_1024", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in keys {
                acc ^= shard_of(black_box(k), 1024);
            }
            acc
        })
    });
    g.bench_function("foldhash_map_hasher", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in keys {
                acc ^= map_hasher.hash_one(black_box(k.as_str()));
            }
            acc
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let ip_port: Vec<String> = fixture::spread(1 << 20, KEYS)
        .into_iter()
        .map(fixture::ip_port_key)
        .collect();
    let services: Vec<String> = (0..KEYS).map(fixture::grouped_service_name).collect();
    let connections: Vec<String> = fixture::spread(1 << 20, KEYS)
        .into_iter()
        .map(|i| fixture::connection_client(i).as_str().to_string())
        .collect();
    compare(c, "hash/ip_port", &ip_port);
    compare(c, "hash/service", &services);
    compare(c, "hash/connection_id", &connections);
}

criterion_group!(benches, hashing);
criterion_main!(benches);
