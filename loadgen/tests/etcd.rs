//! `--protocol etcd` against a real embedded etcd cluster (the installed `etcd` binary,
//! Debian package etcd-server): the cluster starts and is removed without a trace, a tiny
//! register run has no errors and converges on every member, and a missing binary is a
//! clear error.
//!
//! Without `etcd` on `PATH` the tests that need it say so and pass, unless `CI` is set:
//! CI installs etcd-server, so there a missing binary fails them.

use std::path::Path;
use std::time::Duration;

use loadgen::run::etcd_cluster::{ETCD_BINARY, EtcdCluster};
use loadgen::run::{ProtocolKind, RunConfig, RunOutcome, Scenario, run};

const SEED: u64 = 20_261_204;

/// Whether `etcd` can run here; when it cannot, panics under CI and returns false
/// otherwise (the caller skips).
fn etcd_available(test: &str) -> bool {
    let found = std::process::Command::new(ETCD_BINARY)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: `{ETCD_BINARY}` is not installed (Debian package etcd-server) and CI is set"
        );
        eprintln!("SKIPPED {test}: `{ETCD_BINARY}` is not installed (apt-get install etcd-server)");
    }
    found
}

fn describe(o: &RunOutcome) -> String {
    format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_cluster_starts_and_leaves_nothing_behind() {
    if !etcd_available("embedded_cluster_starts_and_leaves_nothing_behind") {
        return;
    }
    let cluster = EtcdCluster::start(3).await.expect("start 3 etcd members");
    assert_eq!(cluster.targets().len(), 3);
    let dir = cluster.dir().expect("a data directory").to_path_buf();
    assert!(dir.join("m0.data").is_dir(), "{}", dir.display());
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);
    let (ok, counts) = cluster
        .agree()
        .await
        .expect("count the keys on each member");
    assert!(ok, "{counts:?}");
    assert_eq!(counts, vec![0, 0, 0]);
    cluster.shutdown().await;
    assert!(!dir.exists(), "{} was not removed", dir.display());
    for pid in pids {
        // Killed and reaped: no /proc entry is left (not even a zombie).
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "etcd member {pid} still exists"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_names_the_debian_package() {
    let err = EtcdCluster::start_with(Path::new("/nonexistent/loadgen-test/etcd"), 3)
        .await
        .expect_err("no such binary");
    let msg = format!("{err:#}");
    assert!(msg.contains("etcd-server"), "{msg}");
    assert!(msg.contains("/nonexistent/loadgen-test/etcd"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_run_against_embedded_etcd_is_clean() {
    if !etcd_available("register_run_against_embedded_etcd_is_clean") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = RunConfig {
        protocol: ProtocolKind::Etcd,
        scenario: Scenario::Register,
        clients: 500,
        services: 20,
        seed: SEED,
        nodes: 3,
        duration: Duration::from_secs(2),
        heartbeat: Duration::from_secs(1),
        probe_interval: Duration::from_millis(200),
        converge_timeout: Duration::from_secs(10),
        out: Some(dir.path().to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    };
    let o = run(cfg).await.expect("run");
    let d = describe(&o);
    let s = &o.summary;
    assert_eq!(s.totals.errors, 0, "{d}");
    assert_eq!(s.op(loadgen::Op::Register).map(|r| r.ok), Some(500), "{d}");
    // Every probe was seen on the other members: after its acknowledgement (a lag sample)
    // or, as etcd often shows it, before (the quorum had it before the writer heard back).
    assert!(s.replication_lag.sightings() > 0, "{d}");
    assert_eq!(s.replication_lag.unreplicated, 0, "{d}");
    assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");
    assert!(o.node_instances.iter().all(|n| *n == 500), "{d}");
    assert!(o.is_clean(), "{d}");
}

/// The replication lag of a real run: every probe sighting on the other members is either
/// a lag sample (above 0: taken from the acknowledgement's arrival, never clamped) or
/// counted as visible before the acknowledgement; a steady run keeps one keep-alive stream
/// per client open (beats many times the clients, streams opened at most the clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_measured_and_keep_alive_streams_stay_open() {
    if !etcd_available("lag_is_measured_and_keep_alive_streams_stay_open") {
        return;
    }
    let cluster = EtcdCluster::start(3).await.expect("start 3 etcd members");
    let dir = tempfile::tempdir().expect("temp dir");
    let clients = 200;
    let cfg = RunConfig {
        protocol: ProtocolKind::Etcd,
        scenario: Scenario::Steady,
        clients,
        services: 10,
        seed: SEED,
        targets: cluster.targets().to_vec(),
        duration: Duration::from_secs(3),
        heartbeat: Duration::from_millis(250),
        probe_interval: Duration::from_millis(50),
        converge_timeout: Duration::from_secs(10),
        out: Some(dir.path().to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    };
    let population = std::sync::Arc::new(
        loadgen::population::Population::new(SEED, clients, 10, 1, 0).expect("population"),
    );
    let ctx = loadgen::protocol::Context {
        targets: cfg.targets.clone(),
        population,
        lanes: cfg.connections,
        timeout: cfg.timeout,
        query_batch: cfg.query_batch,
        tls: None,
        etcd_lease: cfg.etcd_lease,
        zk_sessions: cfg.zk_sessions,
    };
    let proto = std::sync::Arc::new(
        loadgen::protocol::etcd::EtcdProtocol::connect(&ctx)
            .await
            .expect("connect"),
    );
    let o = loadgen::run::run_with(proto.clone(), &ctx, &cfg, None)
        .await
        .expect("run");
    cluster.shutdown().await;
    let d = describe(&o);
    let s = &o.summary;
    assert_eq!(s.totals.errors, 0, "{d}");
    let lag = &s.replication_lag;
    assert_eq!(lag.unreplicated, 0, "{d}");
    // Two non-first members per probe, every probe seen by both.
    assert!(lag.sightings() >= 2 * 40, "{d}");
    if let Some(l) = &lag.latency {
        assert!(l.p50_us > 0, "a lag median of 0: {d}");
    }
    let beats = s.op(loadgen::Op::Beat).map_or(0, |b| b.ok);
    let streams = proto.keep_alive_streams_opened();
    eprintln!("{d}{streams} keep-alive streams opened");
    assert!(beats >= 4 * clients, "{beats} beats: {d}");
    assert!(
        streams <= clients,
        "{streams} keep-alive streams for {clients} clients ({beats} beats): {d}"
    );
}

/// `--etcd-lease shared:2`: every client's keys on one of two leases, each kept alive by a
/// task of its own every 5 s: a churn run longer than a renewal has no errors, every probe
/// replicated, every member holding every client's key at the end, and the leases renewed
/// on a handful of streams (at least one: a renewal succeeded; not one per client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_lease_run_is_clean() {
    if !etcd_available("shared_lease_run_is_clean") {
        return;
    }
    let cluster = EtcdCluster::start(3).await.expect("start 3 etcd members");
    let dir = tempfile::tempdir().expect("temp dir");
    let clients = 300;
    let cfg = RunConfig {
        protocol: ProtocolKind::Etcd,
        scenario: Scenario::Churn,
        etcd_lease: "shared:2".parse().expect("mode"),
        clients,
        services: 10,
        seed: SEED,
        targets: cluster.targets().to_vec(),
        duration: Duration::from_secs(7),
        heartbeat: Duration::from_millis(250),
        churn_rate: Some(20.0),
        churn_down: Duration::from_millis(200),
        probe_interval: Duration::from_millis(100),
        converge_timeout: Duration::from_secs(10),
        out: Some(dir.path().to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    };
    let population = std::sync::Arc::new(
        loadgen::population::Population::new(SEED, clients, 10, 1, 0).expect("population"),
    );
    let ctx = loadgen::protocol::Context {
        targets: cfg.targets.clone(),
        population,
        lanes: cfg.connections,
        timeout: cfg.timeout,
        query_batch: cfg.query_batch,
        tls: None,
        etcd_lease: cfg.etcd_lease,
        zk_sessions: cfg.zk_sessions,
    };
    let proto = std::sync::Arc::new(
        loadgen::protocol::etcd::EtcdProtocol::connect(&ctx)
            .await
            .expect("connect"),
    );
    let o = loadgen::run::run_with(proto.clone(), &ctx, &cfg, None)
        .await
        .expect("run");
    let (agree, counts) = cluster.agree().await.expect("count the keys");
    cluster.shutdown().await;
    let d = describe(&o);
    let streams = proto.keep_alive_streams_opened();
    eprintln!("{d}{streams} keep-alive streams opened; members hold {counts:?}");
    let s = &o.summary;
    assert_eq!(s.totals.errors, 0, "{d}");
    assert_eq!(s.replication_lag.unreplicated, 0, "{d}");
    assert!(s.replication_lag.sightings() > 0, "{d}");
    let beats = s.op(loadgen::Op::Beat).map_or(0, |b| b.ok);
    assert!(beats >= 4 * clients, "{beats} beats: {d}");
    // Two leases, each renewed on a stream (again on the next member after a failure).
    assert!(
        (1..=6).contains(&streams),
        "{streams} keep-alive streams for 2 leases: {d}"
    );
    assert!(agree, "{counts:?}: {d}");
    // Every client registered at the end (a churned client may be away: at most the
    // clients, at least those the churn did not take at the very end).
    assert!(
        counts
            .iter()
            .all(|n| *n as u64 <= clients && *n as u64 + 20 >= clients),
        "{counts:?}: {d}"
    );
    assert!(o.is_clean(), "{d}");
}

/// `--tls-cert`/`--tls-key`/`--tls-ca` with `--protocol etcd`: the embedded members serve
/// their client URLs over TLS with a certificate from a test CA (rcgen), and a register run
/// over it is clean; trusting another CA, the run fails at once naming the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_cluster_serves_tls_and_a_run_over_it_is_clean() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    if !etcd_available("embedded_cluster_serves_tls_and_a_run_over_it_is_clean") {
        return;
    }
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("self-signed");
        (cert.pem(), Issuer::new(p, key))
    };
    let (ca_pem, issuer) = ca("loadgen etcd test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "etcd member".to_string());
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &issuer).expect("signed");
    let files = loadgen::tls::NodeTlsFiles {
        cert: dir.path().join("member.crt"),
        key: dir.path().join("member.key"),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    let cfg = RunConfig {
        protocol: ProtocolKind::Etcd,
        scenario: Scenario::Register,
        clients: 200,
        services: 20,
        seed: SEED,
        nodes: 3,
        probe_interval: Duration::from_millis(200),
        converge_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(3),
        retries: 1,
        tls: Some(loadgen::tls::TargetTls::from_pem(&ca_pem).expect("CA PEM")),
        node_tls: Some(files),
        out: Some(dir.path().join("run")),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    };
    let o = run(cfg.clone()).await.expect("a run over TLS");
    let d = describe(&o);
    assert_eq!(o.summary.totals.errors, 0, "{d}");
    assert_eq!(
        o.summary.op(loadgen::Op::Register).map(|r| r.ok),
        Some(200),
        "{d}"
    );
    assert!(o.node_instances.iter().all(|n| *n == 200), "{d}");
    assert!(o.is_clean(), "{d}");

    // Trusting another CA: connecting to a member over TLS fails, naming it.
    let files = cfg.node_tls.clone().expect("files");
    let good = cfg.tls.clone().expect("CA");
    let cluster = EtcdCluster::start_tls(1, Some((&files, &good)))
        .await
        .expect("a TLS member");
    let other = loadgen::tls::TargetTls::from_pem(&ca("another CA").0).expect("CA PEM");
    let ctx = loadgen::protocol::Context {
        targets: cluster.targets().to_vec(),
        population: std::sync::Arc::new(
            loadgen::population::Population::new(SEED, 10, 1, 1, 0).expect("population"),
        ),
        lanes: 1,
        timeout: Duration::from_secs(3),
        query_batch: 1,
        tls: Some(other),
        etcd_lease: cfg.etcd_lease,
        zk_sessions: cfg.zk_sessions,
    };
    let e = loadgen::protocol::etcd::EtcdProtocol::connect(&ctx).await;
    cluster.shutdown().await;
    let e = format!("{:#}", e.expect_err("another CA"));
    assert!(
        e.contains("cannot connect to the etcd member https://127.0.0.1:"),
        "{e}"
    );
}
