//! Membership that changes at run time, with real nodes: a members file rewritten while
//! registrations go on through HTTP scales the cluster 3 → 5 → 3; joining nodes load the
//! snapshot and take their share, leaving nodes hand their clients over, no acknowledged
//! registration is lost and every node agrees at the end.

use crate::cluster::{eventually, fast_config, register_http};
use distro_core::model::ClientId;
use distro_core::{Node, Route};
use distro_server::LocalCluster;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Writes the members file naming nodes `nodes` of `c`, atomically (write, rename).
fn write_members(path: &Path, c: &LocalCluster, nodes: &[usize]) {
    let text: String = nodes
        .iter()
        .map(|&i| format!("{}\n", c.member_addr(i)))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("# written by the test\n{text}")).expect("write members");
    std::fs::rename(&tmp, path).expect("rename members");
}

/// Registrations acknowledged so far, and where new ones enter.
struct Load {
    acked: Mutex<Vec<(String, u16)>>,
    entries: Mutex<Vec<usize>>,
    attempts: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self) -> usize {
        self.acked.lock().len()
    }
}

/// Registers new ip:port clients one after another through the entry nodes (round
/// robin), until told to stop; a client is counted when a node answered 200.
async fn write_load(c: Arc<LocalCluster>, load: Arc<Load>, writer: u32) {
    let mut k = 0u32;
    while !load.stop.load(Relaxed) {
        let entries = load.entries.lock().clone();
        let via = entries[k as usize % entries.len()];
        let ip = format!("10.{}.{}.{}", 100 + writer, (k / 250) % 250, k % 250);
        let port = 7000 + (k / 62_500) as u16;
        load.attempts.fetch_add(1, Relaxed);
        let (status, _) = register_http(&c, via, "scaled", &ip, port).await;
        if status == 200 {
            load.acked.lock().push((ip, port));
        } else {
            // Not acknowledged (e.g. two nodes disagreeing on the owner for a moment):
            // the client would retry; this one moves on and is not counted.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        k += 1;
    }
}

async fn grows_by(load: &Load, n: usize, what: &str) {
    let target = load.acked() + n;
    eventually(what, Duration::from_secs(30), || load.acked() >= target).await;
}

/// The nodes' logs (this test's process runs them all), kept in memory and printed if
/// the test fails, so that a rare failure can be read afterwards.
struct LogsOnFailure(Arc<Mutex<Vec<u8>>>);

#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogsOnFailure {
    /// Collects every log line at `info` and above (or as `RUST_LOG` says) from now on.
    fn start() -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogBuffer(buf.clone());
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // One test per process (nextest): the global subscriber is this test's.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        Self(buf)
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.0.lock();
            eprintln!(
                "---- the nodes' logs ({} bytes) ----\n{}",
                logs.len(),
                String::from_utf8_lossy(&logs)
            );
        }
    }
}

fn owner_of(n: &Node, ip: &str, port: u16) -> distro_core::MemberId {
    match n.route(&format!("{ip}:{port}")) {
        Route::Local => n.me(),
        Route::Remote(m) => m,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_3_to_5_to_3_under_load_loses_no_registration() {
    let _logs = LogsOnFailure::start();
    let dir = std::env::temp_dir().join(format!("distro-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("cluster.conf");
    let mut config = fast_config();
    // No heartbeats in this test: registrations stay for its whole length.
    config.protocol.heartbeat_timeout = 600_000;
    config.protocol.delete_timeout = 1_200_000;
    config.members_file = Some(file.clone());
    config.members_file_interval = Duration::from_millis(200);
    // Nodes see a rewritten file within 200 ms (+ 50 ms for the second read) of each
    // other; verify settles for longer (the binary takes twice the longer period).
    config.protocol.member_change_settle = 1_000;
    // As the defaults (probes every 2 s, DOWN after 3) relate to a 1 s file period: a
    // joining node is not marked DOWN while it starts (its runtime and listeners take
    // a moment on a busy machine); divergent views of member states are the fault
    // suite's subject, not this test's.
    config.protocol.probe_down_after = 10;
    config.cluster_token = Some("scale-test".into());
    let c = Arc::new(
        LocalCluster::start_some(5, config, 1, 0)
            .await
            .expect("ports reserved"),
    );
    let node = |i: usize| c.node(i).expect("runs");
    let started = Instant::now();
    write_members(&file, &c, &[0, 1, 2]);
    for i in 0..3 {
        c.restart(i).await.expect("start");
    }
    eventually("3 nodes loaded", Duration::from_secs(10), || {
        (0..3).all(|i| node(i).is_loaded())
    })
    .await;
    let load = Arc::new(Load {
        acked: Mutex::default(),
        entries: Mutex::new(vec![0, 1, 2]),
        attempts: Default::default(),
        stop: AtomicBool::new(false),
    });
    let writers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(write_load(c.clone(), load.clone(), w)))
        .collect();
    grows_by(&load, 200, "200 registrations on 3 nodes").await;

    // Scale up: the file names 5 nodes; the two new ones start with it.
    let t = Instant::now();
    write_members(&file, &c, &[0, 1, 2, 3, 4]);
    for i in 3..5 {
        c.restart(i).await.expect("start");
    }
    eventually(
        "5 nodes loaded, each listing 5",
        Duration::from_secs(15),
        || (0..5).all(|i| node(i).is_loaded() && node(i).members().len() == 5),
    )
    .await;
    let joined_in = t.elapsed();
    for i in 3..5 {
        assert!(
            node(i).loaded_from().is_some(),
            "node {i} loaded a snapshot"
        );
    }
    let joiners: Vec<String> = (3..5)
        .map(|i| {
            let n = node(i);
            format!(
                "node {i}: loaded from {:?}, {} snapshot clients, {} clients now",
                n.loaded_from().map(|m| n.member_addr(m).to_string()),
                n.stats().snapshot_clients,
                n.registry().stats().clients
            )
        })
        .collect();
    load.entries.lock().extend([3, 4]);
    grows_by(&load, 200, "200 registrations on 5 nodes").await;
    eventually(
        "the new nodes own their share",
        Duration::from_secs(10),
        || (3..5).all(|i| node(i).owned_clients() > 0),
    )
    .await;

    // Scale down: the file names 3 nodes again; the two leave, hand over, then stop.
    let t = Instant::now();
    load.entries.lock().retain(|&i| i < 3);
    write_members(&file, &c, &[0, 1, 2]);
    eventually(
        "3 members again, the other two leaving",
        Duration::from_secs(15),
        || {
            (0..3).all(|i| node(i).members().len() == 3)
                && (3..5).all(|i| node(i).members().is_leaving())
        },
    )
    .await;
    eventually(
        "the leaving nodes handed everything over",
        Duration::from_secs(15),
        || {
            (3..5).all(|i| {
                let n = node(i);
                n.owned_clients() == 0 && n.members().peers().all(|p| n.pending_sync(p) == 0)
            })
        },
    )
    .await;
    for i in 3..5 {
        c.stop(i).await;
    }
    let left_in = t.elapsed();
    grows_by(&load, 200, "200 registrations on 3 nodes again").await;
    load.stop.store(true, Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    // Every acknowledged registration is on every node, with one agreed owner.
    let acked = load.acked.lock().clone();
    let holds_all = |i: usize| {
        let n = node(i);
        n.registry().stats().clients == acked.len()
            && acked.iter().all(|(ip, port)| {
                n.registry()
                    .get(ClientId::ip_port(ip, *port).as_str())
                    .is_some()
            })
    };
    let t = Instant::now();
    while !(0..3).all(holds_all) {
        if t.elapsed() > Duration::from_secs(20) {
            let mut report = String::new();
            for i in 0..3 {
                let n = node(i);
                let missing: Vec<String> = acked
                    .iter()
                    .filter(|(ip, port)| {
                        n.registry()
                            .get(ClientId::ip_port(ip, *port).as_str())
                            .is_none()
                    })
                    .map(|(ip, port)| format!("{ip}:{port}"))
                    .collect();
                report.push_str(&format!(
                    "node {i}: {} clients, {} acked missing (first {:?}), stats {:?}\n",
                    n.registry().stats().clients,
                    missing.len(),
                    &missing[..missing.len().min(5)],
                    n.stats()
                ));
            }
            panic!(
                "not every acknowledged registration is on every node:\n{report}joiners: {joiners:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converged = t.elapsed();
    for (ip, port) in &acked {
        let id = ClientId::ip_port(ip, *port);
        let owners: Vec<String> = (0..3)
            .map(|i| {
                let n = node(i);
                let c = n.registry().get(id.as_str()).expect("held");
                assert_eq!(c.owner(), owner_of(&n, ip, *port), "node {i}: {id}");
                n.member_addr(c.owner()).to_string()
            })
            .collect();
        assert!(owners.windows(2).all(|w| w[0] == w[1]), "{id}: {owners:?}");
    }
    // /health shows the current members.
    let body = reqwest::get(format!("http://{}/health", c.http_addr(0)))
        .await
        .expect("health")
        .text()
        .await
        .expect("body");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        health["members"].as_array().map(Vec::len),
        Some(3),
        "{health}"
    );
    println!(
        "scale 3 -> 5 -> 3: {} registrations acknowledged of {} attempts, 0 lost; \
         join of 2 took {joined_in:?}, leave of 2 (list change to stopped) {left_in:?}, \
         converged {converged:?} after the load stopped; {:?} in all",
        acked.len(),
        load.attempts.load(Relaxed),
        started.elapsed()
    );
    std::fs::remove_dir_all(&dir).ok();
    if let Ok(c) = Arc::try_unwrap(c) {
        c.shutdown().await;
    }
}

/// A members file that does not parse is logged and ignored (the list in force stays);
/// once fixed, it is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_members_file_keeps_the_list_in_force() {
    let dir = std::env::temp_dir().join(format!("distro-badfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("cluster.conf");
    let mut config = fast_config();
    config.members_file = Some(file.clone());
    config.members_file_interval = Duration::from_millis(100);
    let c = LocalCluster::start_some(3, config, 1, 0)
        .await
        .expect("ports reserved");
    write_members(&file, &c, &[0, 1]);
    for i in 0..2 {
        c.restart(i).await.expect("start");
    }
    let n0 = c.node(0).expect("runs");
    eventually("2 members", Duration::from_secs(10), || {
        n0.members().len() == 2 && n0.is_loaded()
    })
    .await;
    // A bad line (no port): the whole file is refused, nothing changes.
    let text = format!(
        "{}\n{}\n{}\n",
        c.member_addr(0),
        c.member_addr(1),
        "127.0.0.1"
    );
    std::fs::write(&file, text).expect("write");
    let version = n0.members().version();
    tokio::time::sleep(Duration::from_millis(600)).await; // several reads of the file
    assert_eq!(n0.members().len(), 2);
    assert_eq!(
        n0.members().version(),
        version,
        "the bad file changed nothing"
    );
    // Fixed: node 2 joins.
    write_members(&file, &c, &[0, 1, 2]);
    c.restart(2).await.expect("start");
    eventually("3 members after the fix", Duration::from_secs(10), || {
        (0..3).all(|i| {
            c.node(i)
                .is_some_and(|n| n.members().len() == 3 && n.is_loaded())
        })
    })
    .await;
    std::fs::remove_dir_all(&dir).ok();
    c.shutdown().await;
}
