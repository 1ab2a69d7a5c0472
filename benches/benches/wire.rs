//! Wire encodings on the hot paths, side by side:
//!
//! * `wire/nacos_instance_request`: decoding a Nacos `InstanceRequest` JSON payload into
//!   the core's request (what every SDK registration costs before the registry);
//! * `wire/nacos_query_response`: encoding the `QueryServiceResponse` of a 10-, 100- and
//!   1,000-instance service (what every SDK query and push costs);
//! * `wire/sync_batch`: encoding a 1,000-client sync batch as protobuf on the owner and
//!   decoding it (with validation) on the replica, against the same batch's size hint.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distro_benches::codec;
use distro_benches::fixture::{self, Kind};
use distro_core::{Command, Config, PeerRequest, ServiceSpec};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const INSTANCE_REQUEST: &[u8] = br#"{"headers":{},"requestId":"17","namespace":"public","serviceName":"demo-svc","groupName":"DEFAULT_GROUP","type":"registerInstance","instance":{"ip":"10.0.0.7","port":8080,"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","metadata":{"zone":"a","version":"1.4.2"},"instanceHeartBeatInterval":5000,"instanceHeartBeatTimeOut":15000,"ipDeleteTimeout":30000}}"#;

fn nacos(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("nacos_instance_request", |b| {
        b.iter(|| distro_server::nacos::decode_instance_request(black_box(INSTANCE_REQUEST)))
    });
    for n in [10usize, 100, 1_000] {
        let node = fixture::node(1, 0, Config::default());
        let spec = ServiceSpec::new("", "", "query-svc");
        for r in fixture::requests(Kind::IpPort, n, n) {
            node.register(&r.client, &spec, &r.instance, fixture::NOW_MS)
                .expect("valid request");
        }
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("nacos_query_response", n), &n, |b, _| {
            b.iter(|| distro_server::nacos::encode_query_response(&node, &spec, fixture::NOW_MS))
        });
    }
    g.finish();
}

fn sync_batch(c: &mut Criterion) {
    const BATCH: usize = 1_000;
    let config = Config {
        sync_delay: 0,
        batch_max_entries: BATCH,
        ..Config::default()
    };
    let owner = std::sync::Arc::new(fixture::node(2, 0, config.clone()));
    let replica = fixture::node(2, 1, config);
    for r in fixture::requests(Kind::IpPort, BATCH, BATCH) {
        owner
            .register(&r.client, &r.service, &r.instance, fixture::NOW_MS)
            .expect("valid request");
    }
    let batch = owner
        .tick(fixture::NOW_MS)
        .into_iter()
        .find_map(|c| match c {
            Command::Send {
                request: PeerRequest::Sync(batch),
                ..
            } => Some(batch),
            _ => None,
        })
        .expect("the registered clients are due");
    let encoded = codec::encode(&owner, &batch);
    let mut g = c.benchmark_group("wire/sync_batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("size_hint", |b| b.iter(|| black_box(&batch).size_hint()));
    g.bench_function("protobuf_encode", |b| {
        b.iter(|| codec::encode(&owner, black_box(&batch)).len)
    });
    g.bench_function("protobuf_decode", |b| {
        b.iter(|| codec::decode(&replica, black_box(&encoded)).len())
    });
    g.finish();
    println!(
        "wire/sync_batch: 1,000 clients encode to {} bytes of protobuf",
        encoded.len
    );
}

criterion_group!(benches, nacos, sync_batch);
criterion_main!(benches);
