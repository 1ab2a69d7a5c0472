//! Verify: one digest round between an owner and a replica, in sync and diverged.
//!
//! The fixture is a four-member cluster in which node 0 owns N connection clients (1 M by
//! default) and each other node holds replicas:
//!
//! * node 1 holds all of them (in sync);
//! * node 2 lacks 1 % of them, spread evenly (`i % 100 == 0`), as after lost sync
//!   batches: nearly every shard differs;
//! * node 3 lacks 1 % of them concentrated in 1 % of the shards (every client of shards
//!   0..10 of 1,024), as after a partial failure.
//!
//! Measured:
//!
//! * `verify/digests`: step 1 only: the owner reads its 1,024 shard digests into a
//!   `VerifyDigests` and the replica's `Node::handle_request` compares them, answering
//!   `VerifyMismatch` with the shards that differ. Independent of N;
//! * `verify/round`: the whole round: step 1, then the owner's `handle_response` lists its
//!   clients of every mismatched shard (`VerifyList` requests), the replica checks them
//!   (`VerifyReport` with the missing clients) and the owner schedules the repairs. In sync
//!   the round is step 1 alone.
//!
//! Repairs are only scheduled, never sent, so every iteration sees the same divergence.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use distro_benches::fixture::{self, Cluster};
use distro_core::hash::shard_of;
use distro_core::message::{VerifyDigests, VerifyList};
use distro_core::{Command, Config, Node, PeerRequest, PeerResponse};
use std::hint::black_box;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

static CLUSTER: LazyLock<Cluster> = LazyLock::new(|| {
    let started = Instant::now();
    let config = Config::default();
    let shards = config.shards;
    let c = Cluster::new(4, fixture::clients(), &config, |node, i| match node {
        2 => i % 100 == 0,
        3 => shard_of(fixture::connection_client(i).as_str(), shards) < shards / 100,
        _ => false,
    });
    eprintln!(
        "verify: four nodes of {} clients built in {:.1?}",
        c.clients,
        started.elapsed()
    );
    c
});

/// Step 1: the owner's digests, compared by the replica.
fn digests(owner: &Node, replica: &Node) -> (PeerRequest, PeerResponse) {
    let now = fixture::NOW_MS;
    let request = PeerRequest::VerifyDigests(VerifyDigests {
        digests: owner.registry().owner_digests(owner.me()),
    });
    let response = replica.handle_request(owner.me(), request.clone(), now);
    (request, response)
}

/// A whole round; returns the number of clients the replica reported missing.
fn round(owner: &Node, replica: &Node) -> usize {
    let now = fixture::NOW_MS;
    let (request, response) = digests(owner, replica);
    let mut missing = 0;
    for command in owner.handle_response(replica.me(), request, Ok(response), now) {
        let Command::Send {
            request: list @ PeerRequest::VerifyList(_),
            ..
        } = command
        else {
            continue;
        };
        let report = replica.handle_request(owner.me(), list, now);
        if let PeerResponse::VerifyReport { needs, .. } = &report {
            missing += needs.len();
        }
        let sent = PeerRequest::VerifyList(VerifyList { shards: Vec::new() });
        owner.handle_response(replica.me(), sent, Ok(report), now);
    }
    missing
}

fn verify(c: &mut Criterion) {
    let cluster = &*CLUSTER;
    let n = cluster.clients;
    let owner = &cluster.nodes[0];
    let cases = [
        ("in_sync", 1usize),
        ("diverged_1pct_spread", 2),
        ("diverged_1pct_in_1pct_shards", 3),
    ];
    for (name, k) in cases {
        let replica = &cluster.nodes[k];
        let (_, response) = digests(owner, replica);
        let PeerResponse::VerifyMismatch { shards } = response else {
            panic!("unexpected answer {response:?}");
        };
        let missing = round(owner, replica);
        eprintln!(
            "verify/{name}: {} of 1024 shards differ; the round reports {missing} missing clients",
            shards.len()
        );
    }

    let label = fixture::count_label(n);
    let mut g = c.benchmark_group("verify/digests");
    for (name, k) in cases {
        let replica = &cluster.nodes[k];
        g.bench_function(BenchmarkId::new(name, &label), |b| {
            b.iter(|| black_box(digests(owner, replica)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("verify/round");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    for (name, k) in cases {
        let replica = &cluster.nodes[k];
        g.bench_function(BenchmarkId::new(name, &label), |b| {
            b.iter(|| round(owner, replica))
        });
    }
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
