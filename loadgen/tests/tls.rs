//! `--tls-ca` against nodes serving TLS on their SDK ports, with certificates made here
//! (rcgen): both protocols run with no errors when the CA is the nodes'; another CA, an
//! expired node certificate or a plaintext node ends the run at once with the reason. The
//! embedded cluster serves TLS with `--tls-cert`/`--tls-key`, in this process or a child.

use distro_server::tls::HttpTls;
use distro_server::{LocalCluster, ServerConfig};
use loadgen::run::{ProtocolKind, RunConfig, Scenario, run};
use loadgen::tls::TargetTls;
use loadgen::{Op, OpSummary};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::time::{Duration, Instant};

const SEED: u64 = 20_261_204;

/// A CA: its PEM certificate and the issuer that signs leaves.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A node certificate for 127.0.0.1 signed by `ca`; an expired one was valid in 2020 only.
fn node_tls(ca: &Ca, expired: bool) -> HttpTls {
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.issuer).expect("signed");
    HttpTls::from_pem(&cert.pem(), &key.serialize_pem()).expect("valid PEM")
}

async fn cluster(n: usize, tls: Option<HttpTls>) -> LocalCluster {
    let config = ServerConfig {
        http_tls: tls,
        ..ServerConfig::default()
    };
    LocalCluster::start(n, config, 1).await.expect("cluster")
}

fn config(out: &Path, protocol: ProtocolKind, targets: Vec<String>, ca: &Ca) -> RunConfig {
    RunConfig {
        protocol,
        scenario: Scenario::Steady,
        clients: 200,
        services: 20,
        seed: SEED,
        targets,
        tls: Some(TargetTls::from_pem(&ca.pem).expect("CA PEM")),
        duration: Duration::from_secs(2),
        heartbeat: Duration::from_secs(1),
        query_rate: 50.0,
        probe_interval: Duration::from_millis(300),
        out: Some(out.to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    }
}

fn ok(s: &loadgen::Summary, op: Op) -> u64 {
    s.op(op).map_or(0, |o: &OpSummary| o.ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocols_run_over_tls_with_no_errors() {
    let good = ca("loadgen test CA");
    let c = cluster(2, Some(node_tls(&good, false))).await;
    for protocol in [ProtocolKind::Native, ProtocolKind::Nacos] {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = config(dir.path(), protocol, c.server_list(), &good);
        let o = run(cfg).await.expect("run over TLS");
        let s = &o.summary;
        let d = format!("{protocol:?}, seed {SEED}\n{}{}", s.table(), o.epilogue());
        assert_eq!(s.totals.errors, 0, "{d}");
        assert_eq!(ok(s, Op::Register), 200, "{d}");
        assert!(ok(s, Op::Beat) > 0, "{d}");
        assert!(ok(s, Op::Query) > 0, "{d}");
        assert!(s.replication_lag.count > 0, "{d}");
    }
    c.shutdown().await;
}

/// Runs `cfg`, which must fail within a few seconds; its error text.
async fn refused(cfg: RunConfig) -> String {
    let started = Instant::now();
    let e = run(cfg).await.expect_err("the run must be refused");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}: {e:#}");
    format!("{e:#}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_an_expired_certificate_or_a_plaintext_node_ends_the_run_at_once() {
    let good = ca("loadgen test CA");
    let other = ca("another CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(1, Some(node_tls(&good, false))).await;
    let target = c.server_list()[0].clone();
    let sdk = c.sdk_addr(0);
    for protocol in [ProtocolKind::Native, ProtocolKind::Nacos] {
        let e = refused(config(dir.path(), protocol, c.server_list(), &other)).await;
        println!("{protocol:?}, another CA: {e}");
        assert!(
            e.starts_with(&format!(
                "TLS to {sdk} failed (the SDK port of target 1, {target}): "
            )),
            "{e}"
        );
        assert!(e.contains("UnknownIssuer"), "{e}");
        assert!(e.contains("not signed by a CA of --tls-ca"), "{e}");
    }

    // The binary: a nonzero exit with the reason on stderr.
    let ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, &other.pem).expect("write CA");
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--targets", &target, "--clients", "10", "--duration", "1s"])
        .args(["--plain", "--no-history", "--tls-ca"])
        .arg(&ca_file)
        .arg("--out")
        .arg(dir.path().join("cli"))
        .output()
        .expect("loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    c.shutdown().await;

    let expired = cluster(1, Some(node_tls(&good, true))).await;
    let e = refused(config(
        dir.path(),
        ProtocolKind::Native,
        expired.server_list(),
        &good,
    ))
    .await;
    println!("expired: {e}");
    assert!(e.contains("Expired") || e.contains("expired"), "{e}");
    expired.shutdown().await;

    let plain = cluster(1, None).await;
    let e = refused(config(
        dir.path(),
        ProtocolKind::Nacos,
        plain.server_list(),
        &good,
    ))
    .await;
    println!("plaintext node: {e}");
    assert!(e.contains("is the target serving TLS"), "{e}");
    plain.shutdown().await;
}

#[tokio::test]
async fn tls_flags_without_their_cluster_are_refused() {
    let good = ca("loadgen test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(dir.path(), ProtocolKind::Native, Vec::new(), &good);
    let e = run(cfg.clone()).await.expect_err("no targets");
    assert!(e.to_string().starts_with("--tls-ca: "), "{e}");
    cfg.targets = vec!["127.0.0.1:8848".into()];
    cfg.node_tls = Some(loadgen::tls::NodeTlsFiles {
        cert: dir.path().join("node.crt"),
        key: dir.path().join("node.key"),
    });
    let e = run(cfg).await.expect_err("node TLS with targets");
    assert!(e.to_string().starts_with("--tls-cert/--tls-key: "), "{e}");
}

/// Writes `ca`'s node certificate and key under `dir`; their paths.
fn node_files(dir: &Path, ca: &Ca) -> loadgen::tls::NodeTlsFiles {
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "node".to_string());
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.issuer).expect("signed");
    let files = loadgen::tls::NodeTlsFiles {
        cert: dir.join("node.crt"),
        key: dir.join("node.key"),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_cluster_serves_tls_with_tls_cert_and_key() {
    let good = ca("loadgen test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let files = node_files(dir.path(), &good);
    let mut cfg = config(
        &dir.path().join("native"),
        ProtocolKind::Native,
        Vec::new(),
        &good,
    );
    cfg.node_tls = Some(files.clone());
    cfg.nodes = 2;
    cfg.converge_timeout = Duration::from_secs(10);
    let o = run(cfg.clone()).await.expect("an embedded run over TLS");
    let s = &o.summary;
    let d = format!("seed {SEED}\n{}{}", s.table(), o.epilogue());
    assert_eq!(s.totals.errors, 0, "{d}");
    assert_eq!(ok(s, Op::Register), 200, "{d}");
    assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");

    // Trusting another CA: refused at once, by the preflight.
    cfg.tls = Some(TargetTls::from_pem(&ca("another CA").pem).expect("CA PEM"));
    let e = refused(cfg).await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // Nacos with the cluster in a child process (the binary re-executes itself with the
    // certificate and key).
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &good.pem).expect("write CA");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--protocol", "nacos", "--cluster-process", "--nodes", "2"])
        .args(["--clients", "200", "--services", "20", "--seed", "20261204"])
        .args(["--duration", "2s", "--heartbeat", "1s"])
        .args(["--probe-interval", "300ms", "--converge-timeout", "10s"])
        .args(["--no-history", "--plain", "--require-clean"])
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .arg("--tls-ca")
        .arg(&ca_file)
        .arg("--out")
        .arg(dir.path().join("nacos"))
        .output()
        .expect("loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let d = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{d}");
    assert!(stdout.contains("agreement at the end: yes"), "{d}");
    assert!(stdout.contains("[200, 200]"), "{d}");
}
