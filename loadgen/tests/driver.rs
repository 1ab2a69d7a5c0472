//! The driver end to end, against embedded clusters on loopback: a smoke run, a stalled
//! node seen by the corrected latency only (and by the service time too for queries sent
//! at their instants), two shards merged, and `loadgen check` exiting
//! non-zero on a regression.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_server::{LocalCluster, ServerConfig};
use loadgen::parse::Shard;
use loadgen::population::Population;
use loadgen::protocol::Context;
use loadgen::protocol::native::NativeProtocol;
use loadgen::run::timer::Pacing;
use loadgen::run::{RunConfig, RunOutcome, Scenario, run, run_with};
use loadgen::{LatencyKind, Op, SUMMARY_FILE};

const SEED: u64 = 20_251_125;

fn small(out: &Path, scenario: Scenario, clients: u64) -> RunConfig {
    RunConfig {
        scenario,
        clients,
        services: 50,
        seed: SEED,
        nodes: 3,
        duration: Duration::from_secs(2),
        probe_interval: Duration::from_millis(300),
        converge_timeout: Duration::from_secs(10),
        out: Some(out.to_path_buf()),
        history: None,
        progress: false,
        progress_every: Duration::from_secs(3600),
        ..RunConfig::default()
    }
}

fn describe(o: &RunOutcome) -> String {
    format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_registers_holds_and_converges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = small(dir.path(), Scenario::Steady, 3000);
    cfg.heartbeat = Duration::from_secs(1);
    cfg.query_rate = 200.0;
    let o = run(cfg).await.expect("run");
    let d = describe(&o);
    let s = &o.summary;
    assert_eq!(s.totals.errors, 0, "{d}");
    let reg = s.op(Op::Register).expect("register figures");
    assert_eq!(reg.ok, 3000, "{d}");
    assert!(reg.throughput_per_s > 0.0, "{d}");
    // No --rate: registration is closed-model. Its latency is service time (loadgen's own
    // queue is not counted as lateness or latency) and it has no target.
    assert_eq!(reg.model, loadgen::Model::Closed, "{d}");
    assert_eq!(reg.target_per_s, None, "{d}");
    assert_eq!(reg.late, 0, "{d}");
    assert_eq!(reg.corrected, reg.uncorrected, "{d}");
    assert!(d.contains("service"), "{d}");
    let beat = s.op(Op::Beat).expect("beat figures");
    assert!(beat.ok > 0 && beat.throughput_per_s > 0.0, "{d}");
    assert_eq!(beat.model, loadgen::Model::Open, "{d}");
    assert!(s.op(Op::Query).is_some_and(|q| q.ok > 0), "{d}");
    assert!(s.replication_lag.count > 0, "{d}");
    assert_eq!(s.replication_lag.unreplicated, 0, "{d}");
    assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");
    assert!(o.node_instances.iter().all(|n| *n == 3000), "{d}");
    assert!(o.is_clean(), "{d}");
    for f in [
        "summary.json",
        "timeline.csv",
        "latency.hlog",
        "report.html",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing\n{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_run_with_batch_asks_many_services_per_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = small(dir.path(), Scenario::Query, 1000);
    cfg.query_batch = 16;
    cfg.batch = 16;
    let o = run(cfg).await.expect("run");
    let d = describe(&o);
    let s = &o.summary;
    assert_eq!(s.totals.errors, 0, "{d}");
    let q = s.op(Op::Query).expect("query figures");
    assert!(q.ok >= 16, "{d}");
}

/// Runs `cfg` (its targets set here) against a 3-node cluster whose node 0 stalls for
/// one second once every one of `clients` is held by every node.
async fn run_through_a_stall(mut cfg: RunConfig, clients: u64) -> RunOutcome {
    let cluster = Arc::new(
        LocalCluster::start(3, ServerConfig::default(), 1)
            .await
            .expect("cluster"),
    );
    cfg.targets = cluster.server_list();
    let pop = Arc::new(Population::new(SEED, clients, 50, 1, 0).expect("population"));
    let ctx = Context {
        targets: cfg.targets.clone(),
        population: pop,
        lanes: cfg.connections,
        timeout: cfg.timeout,
        query_batch: 1,
        tls: None,
        etcd_lease: Default::default(),
        zk_sessions: Default::default(),
    };
    let proto = Arc::new(NativeProtocol::connect(&ctx).await.expect("connect"));
    // Once every client is registered and replicated (the hold phase), stall node 0 for
    // one second.
    let c = cluster.clone();
    let staller = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let all = (0..3).all(|i| {
                c.node(i)
                    .is_some_and(|n| n.registry().stats().instances >= clients as usize)
            });
            if all {
                c.pause(0, Duration::from_secs(1));
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    let o = run_with(proto, &ctx, &cfg, Some(&cluster))
        .await
        .expect("run");
    assert!(
        staller.await.expect("staller"),
        "the cluster never held every client"
    );
    if let Ok(c) = Arc::try_unwrap(cluster) {
        c.shutdown().await;
    }
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_shows_in_corrected_latency_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clients = 600;
    let mut cfg = small(dir.path(), Scenario::Steady, clients);
    cfg.duration = Duration::from_secs(6);
    cfg.heartbeat = Duration::from_secs(1);
    // Small batches, so that the requests caught in flight by the stall are few (at most
    // batch x concurrency) even when a loaded machine makes every request slow.
    cfg.connections = 1;
    cfg.concurrency = 2;
    cfg.batch = 32;
    let o = run_through_a_stall(cfg, clients).await;
    let d = describe(&o);
    let beat = o.summary.op(Op::Beat).expect("beat figures");
    let corrected = beat.latency(LatencyKind::Corrected).expect("corrected");
    let uncorrected = beat.latency(LatencyKind::Uncorrected).expect("uncorrected");
    assert_eq!(o.summary.totals.errors, 0, "{d}");
    // About a third of the clients beat node 0 and a sixth of the hold falls in the
    // stall: several percent of the beats waited up to a second, measured from when they
    // were due. Only the batch in flight when the stall began had a long service time.
    // (A busy shared machine also makes some requests slow; those count in both kinds,
    // the stall only in the corrected one.)
    let (slow_corrected, slow_uncorrected) = slow(dir.path(), "beat", 500_000);
    assert!(
        slow_corrected >= 60,
        "{slow_corrected} beats >= 500 ms corrected\n{d}"
    );
    assert!(
        slow_uncorrected * 2 <= slow_corrected,
        "{slow_uncorrected} beats >= 500 ms uncorrected, {slow_corrected} corrected\n{d}"
    );
    assert!(
        corrected.max_us >= 900_000,
        "corrected max {}\n{d}",
        corrected.max_us
    );
    assert!(
        uncorrected.p99_us < corrected.p99_us,
        "uncorrected p99 {} vs corrected {}\n{d}",
        uncorrected.p99_us,
        corrected.p99_us
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_of_their_own_go_out_at_their_instant_through_a_stall() {
    queries_through_a_stall(Pacing::Timerfd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_on_tokios_timer_go_out_at_their_instant_through_a_stall() {
    queries_through_a_stall(Pacing::Tick).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_paced_by_the_pacer_go_out_at_their_instant_through_a_stall() {
    queries_through_a_stall(Pacing::Thread).await;
}

async fn queries_through_a_stall(pacer: Pacing) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clients = 600;
    let mut cfg = small(dir.path(), Scenario::Query, clients);
    cfg.duration = Duration::from_secs(6);
    cfg.heartbeat = Duration::from_secs(1);
    cfg.rate = Some(300.0);
    // One lane, one request in flight per node for the closed model: the queries are
    // open-model requests of their own and are not held to it.
    cfg.connections = 1;
    cfg.concurrency = 1;
    cfg.pacer = pacer;
    let o = run_through_a_stall(cfg, clients).await;
    let d = describe(&o);
    assert_eq!(o.summary.totals.errors, 0, "{d}");
    let q = o.summary.op(Op::Query).expect("query figures");
    assert_eq!(q.model, loadgen::Model::Open, "{d}");
    // Every answered query has a send lateness (intended instant to send), which is part of
    // its corrected latency.
    let lateness = q.lateness.expect("lateness");
    let corrected = q.latency(LatencyKind::Corrected).expect("corrected");
    assert_eq!(lateness.count, corrected.count, "{d}");
    assert!(lateness.p50_us <= corrected.p50_us, "{d}");
    assert!(lateness.max_us <= corrected.max_us, "{d}");
    // A third of the queries go to node 0: in the stall's first half second about 50 are
    // due, and each is sent when due, so it waits on the node: slow in service time as
    // in corrected time. Held back by a one-request limit, all but one would have waited
    // in loadgen instead, slow only in corrected time.
    let (slow_corrected, slow_uncorrected) = slow(dir.path(), "query", 500_000);
    assert!(
        slow_corrected >= 20,
        "{slow_corrected} queries >= 500 ms corrected\n{d}"
    );
    assert!(
        slow_uncorrected * 10 >= slow_corrected * 8,
        "{slow_uncorrected} queries >= 500 ms uncorrected, {slow_corrected} corrected\n{d}"
    );
}

/// Operations `op` (its histograms' tag) at or above `us` microseconds, corrected and
/// uncorrected, from the run's interval log (whole histograms, not percentiles).
fn slow(dir: &Path, op: &str, us: u64) -> (u64, u64) {
    let log = loadgen::IntervalLog::open(&dir.join(loadgen::INTERVAL_LOG_FILE)).expect("hlog");
    let (mut c, mut u) = (0, 0);
    for h in log.intervals() {
        let h = h.expect("interval");
        let above = h.histogram.len() - h.histogram.count_between(0, us.saturating_sub(1));
        match h.tag.as_deref().and_then(|t| t.strip_prefix(op)) {
            Some(".corrected") => c += above,
            Some(".uncorrected") => u += above,
            _ => {}
        }
    }
    (c, u)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_merge_and_check_catches_a_regression() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = LocalCluster::start(3, ServerConfig::default(), 1)
        .await
        .expect("cluster");
    let shard = |i: u32| {
        let mut cfg = small(
            &dir.path().join(format!("shard{i}")),
            Scenario::Register,
            2000,
        );
        cfg.targets = cluster.server_list();
        cfg.shard = Shard { index: i, count: 2 };
        cfg
    };
    let (a, b) = tokio::join!(run(shard(0)), run(shard(1)));
    let (a, b) = (a.expect("shard 0"), b.expect("shard 1"));
    for o in [&a, &b] {
        assert_eq!(
            o.summary.op(Op::Register).map(|r| r.ok),
            Some(1000),
            "{}",
            describe(o)
        );
    }
    // Both shards' clients are in the cluster.
    let held = cluster.node(0).map(|n| n.registry().stats().instances);
    assert!(held.is_some_and(|n| n >= 2000), "{held:?}");
    cluster.shutdown().await;

    let exe = env!("CARGO_BIN_EXE_loadgen");
    let merged = dir.path().join("merged");
    let out = std::process::Command::new(exe)
        .arg("merge")
        .arg(&a.out_dir)
        .arg(&b.out_dir)
        .arg("--out")
        .arg(&merged)
        .output()
        .expect("loadgen merge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = loadgen::Summary::load(&merged.join(SUMMARY_FILE)).expect("merged summary");
    assert_eq!(summary.op(Op::Register).map(|r| r.ok), Some(2000));
    assert_eq!(summary.shards.len(), 2);

    // A run checked against itself passes; against a baseline ten times faster it fails.
    let check = |baseline: &Path| {
        std::process::Command::new(exe)
            .arg("check")
            .arg(&merged)
            .arg("--baseline")
            .arg(baseline)
            .output()
            .expect("loadgen check")
    };
    let same = check(&merged.join(SUMMARY_FILE));
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let text = std::fs::read_to_string(merged.join(SUMMARY_FILE)).expect("read");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let tp = &mut json["ops"]["register"]["throughput_per_s"];
    let faster = tp.as_f64().expect("throughput") * 10.0;
    *tp = serde_json::json!(faster);
    let baseline = dir.path().join("baseline.json");
    std::fs::write(&baseline, serde_json::to_string(&json).expect("encode")).expect("write");
    let worse = check(&baseline);
    let stdout = String::from_utf8_lossy(&worse.stdout);
    assert_eq!(worse.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
}

/// An unreachable target ends the run at once, naming the port and the target, for both
/// protocols (it used to retry for the whole run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_ends_the_run_quickly_with_a_clear_message() {
    // A main port whose SDK port (+ 1000) nothing listens on: bound, then closed.
    let sdk = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    for protocol in [
        loadgen::run::ProtocolKind::Native,
        loadgen::run::ProtocolKind::Nacos,
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = small(dir.path(), Scenario::Steady, 100);
        cfg.protocol = protocol;
        cfg.targets = vec![format!("127.0.0.1:{}", sdk - 1000)];
        let started = Instant::now();
        let err = run(cfg).await.expect_err("nothing listens there");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "connection refused to 127.0.0.1:{sdk} (the SDK port of target 1,"
            )),
            "{protocol:?}: {msg}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{protocol:?} took {:?}",
            started.elapsed()
        );
    }
}
