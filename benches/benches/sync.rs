//! Sync: an owner builds a batch of 1,000 changed clients and a replica applies it.
//!
//! The fixture is a two-member cluster: node 0 owns N connection clients (1 M by default)
//! and node 1 holds a replica of each. Every iteration, unmeasured, re-registers 1,000 of
//! node 0's clients with a changed weight (new revisions, scheduled for node 1; the sync
//! delay is 0 so they are due at once). Then:
//!
//! * `sync/build_and_encode`: `Node::tick` on the owner takes the 1,000 due clients from
//!   the sync scheduler and builds the batch (a full `ClientRecord` per client, size-hinted),
//!   then `codec::encode` encodes it;
//! * `sync/decode_and_apply`: `codec::apply` (decode, then `Node::handle_sync`)
//!   on the replica, which applies the 1,000 newer states (copy-on-write clients, service
//!   index, digests).
//!
//! Encoding is only the size-hinted record build for now: `distro_benches::codec` is the
//! hook where the server's protobuf encoding goes (TODO there).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distro_benches::codec;
use distro_benches::fixture::{self, Cluster, Kind, Request};
use distro_core::message::SyncBatch;
use distro_core::{Command, Config, PeerRequest, PeerResponse};
use std::hint::black_box;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const BATCH: usize = 1_000;
const POOL: usize = 65_536;

fn config() -> Config {
    Config {
        sync_delay: 0,
        batch_max_entries: BATCH,
        ..Config::default()
    }
}

static CLUSTER: LazyLock<Cluster> = LazyLock::new(|| {
    let started = Instant::now();
    let c = Cluster::new(2, fixture::clients(), &config(), |_, _| false);
    eprintln!(
        "sync: two nodes of {} clients built in {:.1?}",
        c.clients,
        started.elapsed()
    );
    c
});

/// One sync round; returns the time spent building + encoding and decoding + applying.
fn round(cluster: &Cluster, pool: &mut [Request], next: &mut usize) -> (Duration, Duration) {
    let (owner, replica) = (&cluster.nodes[0], &cluster.nodes[1]);
    let now = fixture::NOW_MS;
    for _ in 0..BATCH {
        let r = &mut pool[*next % pool.len()];
        *next += 1;
        r.change();
        owner
            .register(&r.client, &r.service, &r.instance, now)
            .expect("valid request");
    }

    let t = Instant::now();
    let batch = owner
        .tick(now)
        .into_iter()
        .find_map(|c| match c {
            Command::Send {
                request: PeerRequest::Sync(batch),
                ..
            } => Some(batch),
            _ => None,
        })
        .expect("the changed clients are due");
    let encoded = codec::encode(owner, &batch);
    let build = t.elapsed();
    black_box(encoded.len);

    let t = Instant::now();
    let response = codec::apply(replica, owner.me(), &encoded, now);
    let apply = t.elapsed();
    debug_assert!(matches!(response, PeerResponse::SyncAck { stale: 0, .. }));
    // Acknowledge, so the owner's in-flight window stays open.
    owner.handle_response(
        replica.me(),
        PeerRequest::Sync(SyncBatch::default()),
        Ok(response),
        now,
    );
    (build, apply)
}

fn sync(c: &mut Criterion) {
    let cluster = &*CLUSTER;
    let n = cluster.clients;
    let mut pool = fixture::requests(Kind::Connection, n, POOL);
    let mut next = 0;
    // Check once that a round carries the whole batch.
    round(cluster, &mut pool, &mut next);
    let stats = cluster.nodes[0].stats();
    assert_eq!(stats.sync_changes_sent, BATCH as u64, "{stats:?}");

    let mut g = c.benchmark_group("sync");
    g.throughput(Throughput::Elements(BATCH as u64));
    let id = |name: &str| BenchmarkId::new(name, format!("{BATCH}_of_{}", fixture::count_label(n)));
    g.bench_function(id("build_and_encode"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| round(cluster, &mut pool, &mut next).0)
                .sum()
        })
    });
    g.bench_function(id("decode_and_apply"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| round(cluster, &mut pool, &mut next).1)
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
