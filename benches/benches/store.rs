//! The store: register, heartbeat, query and snapshot on a node holding N clients.
//!
//! The fixture is node 0 of a three-member cluster holding N ip:port clients (1 M by
//! default, `DISTRO_BENCH_CLIENTS` to change), each publishing one instance to one of
//! N/100 services of 100 instances. Operations go through the public `Node` API, as the
//! server's handlers call it:
//!
//! * `store/register`: `Node::register` of an existing client with a changed weight
//!   (validation, a new revision, copy-on-write client, service index, digest update and
//!   sync scheduling for both peers), over 65,536 clients spread across the registry;
//! * `store/beat`: `Node::beat` (lookup and an atomic heartbeat time);
//! * `store/query`: `Node::query` of a 100-instance service (collect and sort);
//! * `store/snapshot_chunk`: `Node::snapshot_chunk` from one shard on (one 1 MiB chunk,
//!   which spans several shards at 1 M clients; throughput counts its clients).
//!
//! Every operation runs single-threaded (`threads_1`) and contended from 2 and 4 threads
//! at once (`iter_custom` with scoped std threads on disjoint clients). Contended times are
//! wall time divided by the operations of all threads: the cost per operation of the whole
//! node. This machine has 2 cores, so 4 threads also measure oversubscription.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distro_benches::fixture::{self, Kind, Request};
use distro_core::{Config, Node, ServiceSpec, SnapshotCursor};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Barrier, LazyLock};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const POOL: usize = 65_536;
const THREADS: [usize; 3] = [1, 2, 4];

static NODE: LazyLock<Node> = LazyLock::new(|| {
    let started = Instant::now();
    let node = fixture::node(3, 0, Config::default());
    fixture::populate(node.registry(), fixture::clients(), Kind::IpPort, |_, _| {
        node.me()
    });
    eprintln!(
        "store: fixture of {} clients built in {:.1?}",
        fixture::clients(),
        started.elapsed()
    );
    node
});

/// A logical clock shared by the threads (heartbeat times must not go backwards).
static NOW: AtomicU64 = AtomicU64::new(fixture::NOW_MS);

/// Runs `op` `iters` times split over `threads` threads, each over its own slice of
/// `pool`, and returns the wall time from the common start to the last thread's end.
fn contended<T: Send>(
    threads: usize,
    iters: u64,
    pool: &mut [T],
    op: impl Fn(&mut T) + Sync,
) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let chunk = pool.len() / threads;
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = pool
            .chunks_mut(chunk)
            .take(threads)
            .map(|slice| {
                let (start, op) = (&start, &op);
                s.spawn(move || {
                    start.wait();
                    for k in 0..per_thread as usize {
                        op(&mut slice[k % slice.len()]);
                    }
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for h in handles {
            h.join().expect("bench thread");
        }
        t.elapsed()
    })
}

fn register(c: &mut Criterion) {
    let node = &*NODE;
    let n = fixture::clients();
    let mut pool = fixture::requests(Kind::IpPort, n, POOL);
    let mut g = c.benchmark_group("store/register");
    for threads in THREADS {
        g.bench_function(BenchmarkId::new(fixture::count_label(n), threads), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, &mut pool, |r: &mut Request| {
                    r.change();
                    let now = NOW.load(Relaxed);
                    black_box(node.register(&r.client, &r.service, &r.instance, now))
                        .expect("valid request");
                })
            })
        });
    }
    g.finish();
}

fn beat(c: &mut Criterion) {
    let node = &*NODE;
    let n = fixture::clients();
    let mut pool = fixture::requests(Kind::IpPort, n, POOL);
    let mut g = c.benchmark_group("store/beat");
    for threads in THREADS {
        g.bench_function(BenchmarkId::new(fixture::count_label(n), threads), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, &mut pool, |r: &mut Request| {
                    let now = NOW.fetch_add(1, Relaxed);
                    let res = node.beat(&r.client, &r.service, now).expect("valid");
                    black_box(res);
                })
            })
        });
    }
    g.finish();
}

fn query(c: &mut Criterion) {
    let node = &*NODE;
    let n = fixture::clients();
    let services = fixture::services_for(n);
    let mut pool: Vec<ServiceSpec> = fixture::spread(services, 4_096)
        .into_iter()
        .map(fixture::service_spec)
        .collect();
    let instances = node
        .query(&pool[0])
        .expect("valid")
        .expect("exists")
        .instance_count();
    let mut g = c.benchmark_group("store/query");
    for threads in THREADS {
        g.bench_function(
            BenchmarkId::new(
                format!("{}_{instances}_instances", fixture::count_label(n)),
                threads,
            ),
            |b| {
                b.iter_custom(|iters| {
                    contended(threads, iters, &mut pool, |s: &mut ServiceSpec| {
                        let view = node.query(s).expect("valid").expect("exists");
                        black_box(view);
                    })
                })
            },
        );
    }
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let node = &*NODE;
    let n = fixture::clients();
    let shards = node.registry().shard_count();
    let mut pool: Vec<SnapshotCursor> = fixture::spread(shards as usize, 256)
        .into_iter()
        .map(|s| SnapshotCursor::start_of(s as u32))
        .collect();
    let records = node.snapshot_chunk(pool[0].clone()).records.len();
    let mut g = c.benchmark_group("store/snapshot_chunk");
    g.throughput(Throughput::Elements(records as u64));
    for threads in THREADS {
        g.bench_function(BenchmarkId::new(fixture::count_label(n), threads), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, &mut pool, |cursor: &mut SnapshotCursor| {
                    black_box(node.snapshot_chunk(cursor.clone()));
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, register, beat, query, snapshot);
criterion_main!(benches);
