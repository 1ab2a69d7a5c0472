//! Checksums and digests: what verifying replicas costs, Nacos 1.x against ours.
//!
//! * `checksum/service`: Nacos 1.x's per-service checksum (build the sorted instance string
//!   `ip:port_weight_healthy_enabled_cluster_<metadata>,...` and MD5-hex it, see
//!   `distro_benches::nacos`) against xxh3-128 of the same string, for services of 10, 100
//!   and 1,000 instances; `string_only` isolates the cost of building the string.
//! * `digest/update`: our per-shard digest is a sum, so a change costs one
//!   `ShardDigest::of` (xxh3-128 of id + revision) and an add, whatever the shard holds;
//!   `recompute_shard` is what a full recomputation of one shard of a 1 M-client owner
//!   (~1,000 clients at 1,024 shards) would cost instead.
//! * `digest/full`: the digests of all 1,024 shards over N clients computed from scratch
//!   (as after a snapshot load or for an audit), single-threaded and with rayon.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distro_benches::{fixture, nacos};
use distro_core::hash::shard_of;
use distro_core::name::Interner;
use distro_core::{ClientId, Instance, Revision, ShardDigest};
use rayon::prelude::*;
use std::hint::black_box;
use std::sync::LazyLock;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const SHARDS: u32 = 1024;

fn service_checksum(c: &mut Criterion) {
    let interner = Interner::new();
    let mut g = c.benchmark_group("checksum/service");
    for n in [10, 100, 1_000] {
        // Registration order is not address order: the checksum has to sort.
        let instances: Vec<Instance> = fixture::spread(n, n)
            .into_iter()
            .map(|i| fixture::bare_instance(&interner, i))
            .collect();
        let mut buf = String::new();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("nacos_md5", n), &instances, |b, inst| {
            b.iter(|| nacos::nacos_checksum(black_box(inst), &mut buf))
        });
        g.bench_with_input(BenchmarkId::new("xxh3_128", n), &instances, |b, inst| {
            b.iter(|| {
                nacos::checksum_string(black_box(inst), &mut buf);
                nacos::xxh3_128(&buf)
            })
        });
        g.bench_with_input(BenchmarkId::new("string_only", n), &instances, |b, inst| {
            b.iter(|| {
                nacos::checksum_string(black_box(inst), &mut buf);
                buf.len()
            })
        });
    }
    g.finish();
}

/// `(client id, revision)` of every client of the large fixture.
static PAIRS: LazyLock<Vec<(ClientId, Revision)>> = LazyLock::new(|| {
    (0..fixture::clients())
        .into_par_iter()
        .map(|i| {
            (
                fixture::connection_client(i),
                Revision(0x1234_5678 + i as u64),
            )
        })
        .collect()
});

fn digest_update(c: &mut Criterion) {
    let pairs = &*PAIRS;
    // The clients of one shard of a 1 M-client owner.
    let per_shard = (1_000_000 / SHARDS as usize).min(pairs.len());
    let shard: Vec<&(ClientId, Revision)> = pairs[..per_shard].iter().collect();
    let (id, rev) = &pairs[0];
    let mut g = c.benchmark_group("digest/update");
    g.bench_function("o1_update", |b| {
        let mut d = ShardDigest::default();
        b.iter(|| {
            d.add(ShardDigest::of(black_box(id.as_str()), black_box(*rev)));
            d
        })
    });
    g.bench_function(BenchmarkId::new("recompute_shard", per_shard), |b| {
        b.iter(|| {
            let mut d = ShardDigest::default();
            for (id, rev) in &shard {
                d.add(ShardDigest::of(id.as_str(), *rev));
            }
            d
        })
    });
    g.finish();
}

fn digest_of(acc: &mut [ShardDigest], id: &ClientId, rev: Revision) {
    acc[shard_of(id.as_str(), SHARDS) as usize].add(ShardDigest::of(id.as_str(), rev));
}

fn full_digest_single(pairs: &[(ClientId, Revision)]) -> Vec<ShardDigest> {
    let mut acc = vec![ShardDigest::default(); SHARDS as usize];
    for (id, rev) in pairs {
        digest_of(&mut acc, id, *rev);
    }
    acc
}

fn full_digest_rayon(pairs: &[(ClientId, Revision)]) -> Vec<ShardDigest> {
    pairs
        .par_iter()
        .fold(
            || vec![ShardDigest::default(); SHARDS as usize],
            |mut acc, (id, rev)| {
                digest_of(&mut acc, id, *rev);
                acc
            },
        )
        .reduce(
            || vec![ShardDigest::default(); SHARDS as usize],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.add(y);
                }
                a
            },
        )
}

fn digest_full(c: &mut Criterion) {
    let pairs = &*PAIRS;
    assert_eq!(full_digest_single(pairs), full_digest_rayon(pairs));
    let label = fixture::count_label(pairs.len());
    let mut g = c.benchmark_group("digest/full");
    g.throughput(Throughput::Elements(pairs.len() as u64));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("single_thread", &label), |b| {
        b.iter(|| full_digest_single(black_box(pairs)))
    });
    g.bench_function(
        BenchmarkId::new(
            format!("rayon_{}_threads", rayon::current_num_threads()),
            &label,
        ),
        |b| b.iter(|| full_digest_rayon(black_box(pairs))),
    );
    g.finish();
}

criterion_group!(benches, service_checksum, digest_update, digest_full);
criterion_main!(benches);
