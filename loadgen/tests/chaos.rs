//! `--chaos` end to end: a run against an embedded cluster with every kind of fault,
//! schedules refused with their reason, and a frozen node that answers nothing until it
//! is thawed.

use std::path::Path;
use std::time::Duration;

use distro_server::{LocalCluster, ServerConfig};
use loadgen::run::chaos::Schedule;
use loadgen::run::{RunConfig, Scenario, run};
use loadgen::{FAULTS_FILE, REPORT_FILE, SUMMARY_FILE, Summary};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SEED: u64 = 20_251_126;

fn config(out: &Path, schedule: &str) -> RunConfig {
    RunConfig {
        scenario: Scenario::Steady,
        clients: 2000,
        services: 50,
        seed: SEED,
        nodes: 3,
        duration: Duration::from_secs(9),
        heartbeat: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        probe_interval: Duration::from_millis(300),
        converge_timeout: Duration::from_secs(15),
        out: Some(out.to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        chaos: Some(Schedule::parse(schedule).expect("schedule")),
        ..RunConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_applied_measured_and_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schedule = "kill:2@1s,restart:2@3s,partition:1@4s-5500ms,pause:3@6500ms-7500ms";
    let mut cfg = config(dir.path(), schedule);
    // Clients leave and come back meanwhile, so that deleted clients are checked too.
    cfg.churn_rate = Some(20.0);
    cfg.churn_down = Duration::from_millis(500);
    let o = run(cfg).await.expect("run");
    let d = format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue());
    println!("{d}");
    assert_eq!(o.faults.len(), 4, "{d}");
    let entries: Vec<&str> = o.faults.iter().map(|f| f.entry.as_str()).collect();
    assert_eq!(
        entries,
        [
            "kill:2@1s",
            "restart:2@3s",
            "partition:1@4s-5500ms",
            "pause:3@6500ms-7500ms"
        ],
        "{d}"
    );
    for f in &o.faults {
        assert_eq!(f.failed, None, "{d}");
        assert!(f.recovered, "{} did not converge\n{d}", f.entry);
        assert_eq!(f.lost, 0, "{} lost registrations\n{d}", f.entry);
        assert!(f.start_s > 0.0 && f.end_s >= f.start_s, "{d}");
        assert!(f.window_end_s >= f.end_s, "{d}");
    }
    // Node 2's clients failed over while it was down.
    let kill = &o.faults[0];
    assert!(kill.failovers > 0, "{d}");
    assert!(
        (kill.end_s - o.faults[1].start_s).abs() < 0.01,
        "a kill ends at its restart\n{d}"
    );
    // The windows follow the schedule (1.5 s partition, 1 s pause), give or take the
    // time it takes to apply them.
    let partition = &o.faults[2];
    assert!(
        (partition.end_s - partition.start_s - 1.5).abs() < 0.5,
        "{d}"
    );
    assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");

    // The figures are in summary.json, faults.csv, the table and the report.
    let summary = Summary::load(&dir.path().join(SUMMARY_FILE)).expect("summary");
    assert_eq!(summary.faults, o.faults);
    assert_eq!(
        summary.parameters.get("chaos").map(String::as_str),
        Some("kill:2@1s,restart:2@3s,partition:1@4s-5500ms,pause:3@6500ms-7500ms")
    );
    let csv = std::fs::read_to_string(dir.path().join(FAULTS_FILE)).expect("faults.csv");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(
        d.contains("failovers") && d.contains("partition:1@4s-5500ms"),
        "{d}"
    );
    let page = std::fs::read_to_string(dir.path().join(REPORT_FILE)).expect("report");
    for want in [
        "kill node 2",
        "restart node 2",
        "heal node 1",
        "resume node 3",
        "pause:3@6500ms-7500ms",
        "class=\"faults\"",
    ] {
        assert!(page.contains(want), "{want} missing from report.html");
    }
}

/// Two nodes join, then three leave (the two joiners and node 3, which has clients):
/// nothing acknowledged is lost, every probe replicates, the two members present at the
/// end agree, and the report names the nodes each change moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_without_losing_a_registration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(dir.path(), "join:2@1s,leave:3@6s");
    cfg.duration = Duration::from_secs(12);
    let o = run(cfg).await.expect("run");
    let d = format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue());
    println!("{d}");
    let moved: Vec<(&str, &[usize])> = o
        .faults
        .iter()
        .map(|f| (f.entry.as_str(), f.nodes.as_slice()))
        .collect();
    assert_eq!(
        moved,
        [("join:2@1s", &[4, 5][..]), ("leave:3@6s", &[3, 4, 5][..])],
        "{d}"
    );
    for f in &o.faults {
        assert_eq!(f.failed, None, "{d}");
        assert!(f.recovered, "{} did not converge\n{d}", f.entry);
        assert_eq!(f.lost, 0, "{} lost registrations\n{d}", f.entry);
        assert!(f.end_s >= f.start_s, "{d}");
    }
    assert_eq!(o.summary.totals.errors, 0, "{d}");
    assert_eq!(o.summary.replication_lag.unreplicated, 0, "{d}");
    assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");
    // Counted over the members present at the end: nodes 1 and 2.
    assert_eq!(o.node_instances.len(), 2, "{d}");
    assert!(o.is_clean(), "{d}");
    assert!(d.contains("leave:3@6s (nodes 3, 4, 5)"), "{d}");
    let page = std::fs::read_to_string(dir.path().join(REPORT_FILE)).expect("report");
    for want in [
        "join nodes 4, 5",
        "leave nodes 3, 4, 5",
        "join:2@1s (nodes 4, 5)",
    ] {
        assert!(page.contains(want), "{want} missing from report.html");
    }
    let summary = Summary::load(&dir.path().join(SUMMARY_FILE)).expect("summary");
    assert_eq!(summary.faults, o.faults);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refuse = |cfg: RunConfig| async move {
        match run(cfg).await {
            Ok(_) => panic!("the run should have been refused"),
            Err(e) => format!("{e:#}"),
        }
    };
    let mut with_targets = config(dir.path(), "kill:1@1s");
    with_targets.targets = vec!["127.0.0.1:1".into()];
    assert!(
        refuse(with_targets)
            .await
            .contains("cannot be used with --targets")
    );
    let e = refuse(config(dir.path(), "kill:4@1s")).await;
    assert!(
        e.contains("\"kill:4@1s\"") && e.contains("out of range"),
        "{e}"
    );
    let e = refuse(config(dir.path(), "join:1@1s,leave:4@2s")).await;
    assert!(
        e.contains("\"leave:4@2s\"") && e.contains("leaves no member"),
        "{e}"
    );
    let e = refuse(config(dir.path(), "restart:2@1s")).await;
    assert!(e.contains("no earlier entry kills"), "{e}");
    let e = refuse(config(dir.path(), "pause:1@8s-10s")).await;
    assert!(e.contains("after the end of the hold phase"), "{e}");
    let mut register = config(dir.path(), "kill:1@1s");
    register.scenario = Scenario::Register;
    assert!(refuse(register).await.contains("no hold phase"));

    // The command line names the entry and the reason, and exits 2.
    let exe = env!("CARGO_BIN_EXE_loadgen");
    for (schedule, reason) in [
        ("stop:1@2s", "unknown action \"stop\""),
        ("partition:1@9s-8s", "ends (8s) before it starts (9s)"),
        (
            "partition:1@1s-3s,pause:1@2s-4s",
            "overlaps \"partition:1@1s-3s\"",
        ),
    ] {
        let out = std::process::Command::new(exe)
            .args(["--no-history", "--clients", "10", "--chaos", schedule])
            .arg("--out")
            .arg(dir.path().join("cli"))
            .output()
            .expect("loadgen");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{schedule}: {stderr}");
        assert!(stderr.contains(reason), "{schedule}: {stderr}");
    }
}

/// Sends a bare HTTP request to `addr` and waits up to `wait` for the first byte back.
async fn answers_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(1))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_answers_nothing_until_thawed() {
    let cluster = LocalCluster::start(2, ServerConfig::default(), 2)
        .await
        .expect("cluster");
    cluster
        .freeze(0, Duration::from_secs(10))
        .await
        .expect("freeze holds both threads");
    assert!(cluster.is_frozen(0) && !cluster.is_frozen(1));
    let request = b"GET /nacos/v1/ns/instance/list?serviceName=x HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut frozen = tokio::net::TcpStream::connect(cluster.http_addr(0))
        .await
        .expect("the kernel still accepts");
    frozen.write_all(request).await.expect("send");
    let mut live = tokio::net::TcpStream::connect(cluster.http_addr(1))
        .await
        .expect("connect");
    live.write_all(request).await.expect("send");
    assert!(answers_within(&mut live, Duration::from_secs(10)).await);
    assert!(
        !answers_within(&mut frozen, Duration::from_millis(500)).await,
        "a frozen node answered"
    );
    assert!(cluster.freeze(0, Duration::from_secs(1)).await.is_err());
    cluster.thaw(0);
    assert!(
        answers_within(&mut frozen, Duration::from_secs(10)).await,
        "the request held by the freeze was not served after the thaw"
    );
    // A frozen node can still be killed.
    cluster
        .freeze(1, Duration::from_secs(10))
        .await
        .expect("freeze");
    cluster.kill(1);
    assert!(!cluster.is_running(1));
    cluster.shutdown().await;
}
