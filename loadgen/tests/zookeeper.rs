//! The embedded ZooKeeper ensemble (the Debian package zookeeper's jar, run with `java`):
//! it starts, elects a leader, and is removed without a trace; a missing jar names the
//! package; `--protocol zookeeper` against it registers every client with no error and
//! every probe replicated, every member holding the same count. Without the jar the tests
//! that need it say so and pass, unless `CI` is set.

use std::path::Path;
use std::time::Duration;

use loadgen::run::zookeeper_cluster::{ZOOKEEPER_JAR, ZookeeperEnsemble};
use loadgen::run::{ProtocolKind, RunConfig, RunOutcome, Scenario, run};

const SEED: u64 = 20_261_204;

/// Whether the jar is installed; when it is not, panics under CI and returns false
/// otherwise (the caller skips).
fn zookeeper_available(test: &str) -> bool {
    let found = Path::new(ZOOKEEPER_JAR).is_file();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {ZOOKEEPER_JAR} is not installed (Debian package zookeeper) and CI is set"
        );
        eprintln!("SKIPPED {test}: {ZOOKEEPER_JAR} is not installed (apt-get install zookeeper)");
    }
    found
}

fn describe(o: &RunOutcome) -> String {
    format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_ensemble_elects_a_leader_and_leaves_nothing_behind() {
    if !zookeeper_available("embedded_ensemble_elects_a_leader_and_leaves_nothing_behind") {
        return;
    }
    let ensemble = ZookeeperEnsemble::start(3).await.expect("start 3 members");
    let modes = ensemble.modes().await;
    let leaders = modes
        .iter()
        .filter(|m| m.as_deref() == Some("leader"))
        .count();
    let followers = modes
        .iter()
        .filter(|m| m.as_deref() == Some("follower"))
        .count();
    assert_eq!((leaders, followers), (1, 2), "{modes:?}");
    let dir = ensemble.dir().expect("a directory");
    let pids = ensemble.pids();
    ensemble.shutdown().await;
    assert!(!dir.exists(), "{} was not removed", dir.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "ZooKeeper member {pid} still exists"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_jar_names_the_debian_package() {
    let err = ZookeeperEnsemble::start_with(
        Path::new("/nonexistent/loadgen-test/zookeeper.jar"),
        Path::new("java"),
        3,
    )
    .await
    .expect_err("no such jar");
    let msg = format!("{err:#}");
    assert!(msg.contains("package zookeeper"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_run_against_embedded_zookeeper_is_clean() {
    if !zookeeper_available("register_run_against_embedded_zookeeper_is_clean") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = RunConfig {
        protocol: ProtocolKind::Zookeeper,
        scenario: Scenario::Steady,
        clients: 500,
        services: 20,
        seed: SEED,
        nodes: 3,
        duration: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        query_rate: 50.0,
        probe_interval: Duration::from_millis(100),
        converge_timeout: Duration::from_secs(10),
        out: Some(dir.path().to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    };
    let o = run(cfg).await.expect("run");
    let d = describe(&o);
    eprintln!("{d}");
    let s = &o.summary;
    assert_eq!(s.totals.errors, 0, "{d}");
    assert_eq!(s.op(loadgen::Op::Register).map(|r| r.ok), Some(500), "{d}");
    assert!(s.op(loadgen::Op::Beat).map_or(0, |r| r.ok) >= 500, "{d}");
    assert!(s.op(loadgen::Op::Query).map_or(0, |r| r.ok) > 0, "{d}");
    let lag = &s.replication_lag;
    assert_eq!(lag.unreplicated, 0, "{d}");
    // Every probe seen on the two members that did not show it first.
    assert!(lag.sightings() >= 2 * 10, "{d}");
    assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");
    assert_eq!(o.node_instances, vec![500, 500, 500], "{d}");
    assert!(o.is_clean(), "{d}");
}

/// `--zk-sessions per-client` (Curator's model): a session per client, opened in the
/// connect phase; a steady run has no errors, every probe replicated, every member holding
/// every client's znode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_per_client_run_is_clean() {
    if !zookeeper_available("session_per_client_run_is_clean") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let clients = 300;
    let cfg = RunConfig {
        protocol: ProtocolKind::Zookeeper,
        zk_sessions: "per-client".parse().expect("mode"),
        scenario: Scenario::Steady,
        clients,
        services: 20,
        seed: SEED,
        nodes: 3,
        duration: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        query_rate: 50.0,
        probe_interval: Duration::from_millis(100),
        converge_timeout: Duration::from_secs(10),
        out: Some(dir.path().to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    };
    let o = run(cfg).await.expect("run");
    let d = describe(&o);
    eprintln!("{d}");
    let connect = o
        .connect
        .as_ref()
        .unwrap_or_else(|| panic!("no connect phase: {d}"));
    assert_eq!((connect.attempted, connect.failed), (clients, 0), "{d}");
    let s = &o.summary;
    assert_eq!(s.totals.errors, 0, "{d}");
    assert_eq!(
        s.op(loadgen::Op::Register).map(|r| r.ok),
        Some(clients),
        "{d}"
    );
    assert!(
        s.op(loadgen::Op::Beat).map_or(0, |r| r.ok) >= clients,
        "{d}"
    );
    assert_eq!(s.replication_lag.unreplicated, 0, "{d}");
    assert!(s.replication_lag.sightings() >= 2 * 10, "{d}");
    assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");
    assert_eq!(o.node_instances, vec![clients as usize; 3], "{d}");
    assert!(o.is_clean(), "{d}");
}
