//! Routing: who owns an `ip:port` client, with Nacos's modulo and with rendezvous hashing.
//!
//! * `route/owner`: one owner lookup (`Router::owner`) for 3, 16 and 64 members. Modulo is
//!   one `distro_hash` and a division whatever the size; rendezvous scores every member.
//! * `route/build`: building the routing table after a member change.
//! * `route/reattribute`: recomputing the owner of N clients' keys after a fourth member
//!   joins a three-member cluster (the pure routing part of a member change), counting
//!   the keys that move. Modulo moves about 3/4 of them, rendezvous about 1/4.
//! * `route/rehome`: the whole member change on a node holding N ip:port clients:
//!   `Node::set_member_state` marks member 2 DOWN (or UP again, alternately), which rebuilds
//!   the table and re-attributes every client, moving digests and scheduling hand-overs.
//!
//! N is `DISTRO_BENCH_CLIENTS` (1 M by default, small in `--test` mode).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distro_benches::fixture::{self, Kind};
use distro_core::router::RoutingTable;
use distro_core::{Config, MemberId, MemberState, Node, Router, RouterKind};
use std::hint::black_box;
use std::sync::LazyLock;
use std::time::Duration;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const KINDS: [RouterKind; 2] = [RouterKind::NacosModulo, RouterKind::Rendezvous];
const KEYS: usize = 1_024;

fn table(kind: RouterKind, members: usize) -> RoutingTable {
    let list = fixture::member_list(members, 0);
    let ids: Vec<MemberId> = list.ids().collect();
    kind.build(&list, &ids)
}

fn owner(c: &mut Criterion) {
    let keys: Vec<String> = fixture::spread(1 << 20, KEYS)
        .into_iter()
        .map(fixture::ip_port_key)
        .collect();
    let mut g = c.benchmark_group("route/owner");
    g.throughput(Throughput::Elements(KEYS as u64));
    for members in [3, 16, 64] {
        for kind in KINDS {
            let t = table(kind, members);
            g.bench_with_input(BenchmarkId::new(kind.as_str(), members), &t, |b, t| {
                b.iter(|| {
                    let mut acc = 0u16;
                    for k in &keys {
                        acc ^= t.owner(black_box(k)).map_or(0, |m| m.0);
                    }
                    acc
                })
            });
        }
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("route/build");
    for members in [3, 16, 64] {
        let list = fixture::member_list(members, 0);
        let ids: Vec<MemberId> = list.ids().collect();
        for kind in KINDS {
            g.bench_function(BenchmarkId::new(kind.as_str(), members), |b| {
                b.iter(|| kind.build(black_box(&list), black_box(&ids)))
            });
        }
    }
    g.finish();
}

/// The keys of every client of the large fixture.
static KEYS_N: LazyLock<Vec<String>> =
    LazyLock::new(|| (0..fixture::clients()).map(fixture::ip_port_key).collect());

fn reattribute(c: &mut Criterion) {
    let keys = &*KEYS_N;
    let n = keys.len();
    let mut g = c.benchmark_group("route/reattribute");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    let list = fixture::member_list(4, 0);
    let three = [MemberId(0), MemberId(1), MemberId(2)];
    let four = [MemberId(0), MemberId(1), MemberId(2), MemberId(3)];
    for kind in KINDS {
        let before = kind.build(&list, &three);
        let owners: Vec<MemberId> = keys
            .iter()
            .map(|k| before.owner(k).expect("members"))
            .collect();
        let moved = |after: &RoutingTable| {
            keys.iter()
                .zip(&owners)
                .filter(|(k, o)| after.owner(k) != Some(**o))
                .count()
        };
        let after = kind.build(&list, &four);
        let m = moved(&after);
        eprintln!(
            "route/reattribute/{}: {m} of {n} keys ({:.1} %) change owner when a 4th member joins",
            kind.as_str(),
            m as f64 * 100.0 / n as f64
        );
        g.bench_function(
            BenchmarkId::new(kind.as_str(), fixture::count_label(n)),
            |b| b.iter(|| moved(&kind.build(black_box(&list), &four))),
        );
    }
    g.finish();
}

/// A node of a 3-member cluster holding every client of the large fixture, attributed by
/// `kind`'s routing table.
fn rehome_node(kind: RouterKind) -> Node {
    let config = Config {
        router: kind,
        ..Config::default()
    };
    let node = fixture::node(3, 0, config);
    fixture::populate(
        node.registry(),
        fixture::clients(),
        Kind::IpPort,
        |_, id| node.owner_of(id.routing_key().expect("ip:port client")),
    );
    node
}

fn rehome(c: &mut Criterion) {
    let n = fixture::clients();
    let mut g = c.benchmark_group("route/rehome");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    for kind in KINDS {
        let node = rehome_node(kind);
        let mut down = false;
        let mut now = fixture::NOW_MS;
        g.bench_function(
            BenchmarkId::new(kind.as_str(), fixture::count_label(n)),
            |b| {
                b.iter(|| {
                    // Alternate: member 2 goes DOWN, then comes back UP.
                    down = !down;
                    now += 1;
                    let state = if down {
                        MemberState::Down
                    } else {
                        MemberState::Up
                    };
                    node.set_member_state(MemberId(2), state, now);
                })
            },
        );
        let stats = node.stats();
        eprintln!(
            "route/rehome/{}: adopted {} and released {} clients over the run",
            kind.as_str(),
            stats.clients_adopted,
            stats.clients_released
        );
    }
    g.finish();
}

criterion_group!(benches, owner, build, reattribute, rehome);
criterion_main!(benches);
