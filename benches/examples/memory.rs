//! Memory per registered instance on one node: the RSS growth of a process holding N
//! ip:port clients (one instance each, in 1,000 services), measured two ways: clients
//! this node owns (registered locally) and replicas (another node's clients, received as
//! encoded sync batches, decoded and applied), which is what two thirds of a 3-node
//! cluster's clients are on every node.
//!
//! It also prints how long each step took per client, one thread doing it all on a quiet
//! process (the registrations; the replica's encode, and its decode and apply): the
//! store's cost without the rest of a cluster around it, beside which the 1 M burst's
//! profile (`results/profile/`) shows what the same steps cost inside a running cluster.
//! The replica's batches hold the owner's clients in its table's order (a batch's clients
//! share a few shards); a second replica gets them shuffled (seeded), as a running
//! cluster's batches carry them (a batch's 1,000 clients spread over ~600 of the 1,024
//! shards), and its decode and apply time is printed beside: what the lost locality costs.
//!
//! ```sh
//! cargo run --release -p distro-benches --example memory -- 1000000
//! ```

use distro_benches::codec;
use distro_core::message::SyncBatch;
use distro_core::model::{ClientId, InstanceSpec, ServiceSpec};
use distro_core::registry::{Client, ClientChange};
use distro_core::{Config, MemberList, Node};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changes per sync batch (the benches' batch).
const BATCH: usize = 1000;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib * 1024.0)
}

fn address(k: usize) -> (String, u16) {
    (
        format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255),
        8080 + (k >> 24) as u16,
    )
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let members: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:8848")).collect();
    let now = 1_700_000_000_000;
    // Standalone: no sync is pending, so this is the steady-state cost of the store.
    let owner = Arc::new(
        Node::new(
            Config::default(),
            MemberList::new(&members[0], &[]).expect("valid"),
            now,
        )
        .expect("valid config"),
    );
    let services: Vec<ServiceSpec> = (0..1000)
        .map(|s| ServiceSpec::new("", "", &format!("service-{s}")))
        .collect();
    let base = rss_bytes();
    let started = Instant::now();
    for k in 0..n {
        let (ip, port) = address(k);
        let spec = InstanceSpec::new(&ip, port);
        owner
            .register(
                &ClientId::ip_port(&ip, port),
                &services[k % 1000],
                &spec,
                now,
            )
            .expect("valid");
    }
    let registering = started.elapsed();
    let owned = rss_bytes() - base;
    println!(
        "store:   {n} clients, RSS +{:.1} MiB, {:.0} bytes per instance",
        owned / 1048576.0,
        owned / n as f64
    );
    let stats = owner.registry().stats();
    println!(
        "         {} clients, {} instances, {} services",
        stats.clients, stats.instances, stats.services
    );
    // Replicas: a second node gets the owner's clients as a real replica does: sync
    // batches of the owner's stored clients, encoded with the server's peer codec
    // (`distro.v1.SyncRequest`, the compact layout), decoded (validated) and applied, so
    // it holds its own copies of every id, publication and instance.
    let replica = Node::new(
        Config::default(),
        MemberList::new(&members[1], &members).expect("valid"),
        now,
    )
    .expect("valid config");
    let mut clients = Vec::with_capacity(n);
    owner.registry().for_each(|c| clients.push(c.clone()));
    let applied = clients.len();
    let before = rss_bytes();
    let (encoding, applying) = replay(&owner, &replica, &clients, now);
    let replicas = rss_bytes() - before;
    let stats = replica.registry().stats();
    assert_eq!(stats.clients, n, "every client reached the replica");
    println!(
        "replica: {applied} clients, RSS +{:.1} MiB, {:.0} bytes per instance (decoded from the owner's encoded sync batches: its own copies)",
        replicas / 1048576.0,
        replicas / applied as f64
    );
    let per = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    println!(
        "time:    {:.0} ns per registration; {:.0} ns per client to encode and {:.0} ns to decode and apply (one thread)",
        per(registering),
        per(encoding),
        per(applying)
    );
    // The same clients in a random order (seeded: the same order every run).
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..clients.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        clients.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let shuffled = Node::new(
        Config::default(),
        MemberList::new(&members[2], &members).expect("valid"),
        now,
    )
    .expect("valid config");
    let (_, applying_shuffled) = replay(&owner, &shuffled, &clients, now);
    assert_eq!(shuffled.registry().stats().clients, n);
    println!(
        "         {:.0} ns to decode and apply when each batch's clients come in a random order (as in a cluster: spread over the shards)",
        per(applying_shuffled)
    );
}

/// Sends `clients` from `owner` to `replica` in batches of [`BATCH`], each encoded with the
/// server's peer codec, then decoded and applied; returns the time spent encoding and the
/// time spent decoding and applying.
fn replay(
    owner: &Arc<Node>,
    replica: &Node,
    clients: &[Arc<Client>],
    now: u64,
) -> (Duration, Duration) {
    let (mut encoding, mut applying) = (Duration::ZERO, Duration::ZERO);
    for chunk in clients.chunks(BATCH) {
        let batch = SyncBatch {
            changes: chunk
                .iter()
                .map(|c| ClientChange::Stored(c.clone()))
                .collect(),
            lowest: None,
            encoding: None,
        };
        let t = Instant::now();
        let encoded = codec::encode(owner, &batch);
        encoding += t.elapsed();
        drop(batch);
        let t = Instant::now();
        codec::apply(replica, owner.me(), &encoded, now);
        applying += t.elapsed();
    }
    (encoding, applying)
}
