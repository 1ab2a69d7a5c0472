//! `loadgen compare` over distro, etcd and ZooKeeper (the `loadgen` binary, built with the
//! `etcd` feature): a small comparison whose report's figures are each system's own run's
//! (its `summary.json`), with the servers' CPU and memory read from their processes, which
//! are all gone afterwards.
//!
//! Without etcd or ZooKeeper installed the test says so and passes, unless `CI` is set.

use std::path::Path;
use std::process::Command;

use loadgen::run::etcd_cluster::ETCD_BINARY;
use loadgen::run::zookeeper_cluster::ZOOKEEPER_JAR;
use loadgen::{SYSTEMS_HTML, SYSTEMS_JSON, Summary, SystemsReport};

const SEED: u64 = 20_261_204;

fn installed() -> bool {
    let etcd = Command::new(ETCD_BINARY)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let zk = Path::new(ZOOKEEPER_JAR).is_file();
    if !(etcd && zk) {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd ({etcd}) or ZooKeeper ({zk}) is not installed and CI is set"
        );
        eprintln!("SKIPPED: install etcd-server and zookeeper to run the comparison");
    }
    etcd && zk
}

#[test]
fn a_small_comparison_reports_each_systems_own_figures() {
    if !installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("cmp");
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["compare", "--systems", "distro,etcd,zookeeper"])
        .args(["--clients", "500", "--services", "20", "--duration", "3s"])
        .args([
            "--heartbeat",
            "1s",
            "--query-rate",
            "100",
            "--probe-interval",
            "200ms",
        ])
        .args(["--seed", &SEED.to_string(), "--plain", "--require-clean"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run loadgen compare");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let said = format!("seed {SEED}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(run.status.success(), "{}: {said}", run.status);
    assert!(out.join(SYSTEMS_HTML).is_file(), "{said}");
    let report: SystemsReport =
        serde_json::from_slice(&std::fs::read(out.join(SYSTEMS_JSON)).expect("compare.json"))
            .expect("parse compare.json");
    assert!(report.all_clean(), "{said}");
    let names: Vec<&str> = report.systems.iter().map(|s| s.system.as_str()).collect();
    assert_eq!(names, ["distro", "etcd", "zookeeper"]);
    for s in &report.systems {
        // The figures are the system's own run's.
        let own: Summary = serde_json::from_slice(
            &std::fs::read(out.join(&s.system).join(loadgen::SUMMARY_FILE))
                .expect("the system's summary.json"),
        )
        .expect("parse summary.json");
        assert_eq!(s.totals, own.totals, "{}: {said}", s.system);
        assert_eq!(s.ops, own.ops, "{}: {said}", s.system);
        assert_eq!(
            s.replication_lag, own.replication_lag,
            "{}: {said}",
            s.system
        );
        let reg = s.ops.get(&loadgen::Op::Register).expect("registrations");
        assert_eq!(reg.ok, 500, "{}: {said}", s.system);
        assert!(
            s.ops.get(&loadgen::Op::Query).is_some_and(|q| q.ok > 0),
            "{said}"
        );
        assert_eq!(
            s.member_instances,
            vec![500, 500, 500],
            "{}: {said}",
            s.system
        );
        assert!(s.replication_lag.sightings() > 0, "{}: {said}", s.system);
        // The servers' own processes (distro's cluster in a child process), gone now.
        let server = s.server.as_ref().expect("server figures");
        assert!(!server.in_loadgen_process, "{}: {said}", s.system);
        assert!(
            server.cpu_s > 0.0 && server.rss_end_bytes > 0,
            "{}: {said}",
            s.system
        );
        let per_op = s.cpu_s_per_op.expect("CPU per operation");
        assert!(
            (per_op - server.cpu_s / own.totals.ok as f64).abs() < 1e-12,
            "{}: {said}",
            s.system
        );
        for pid in &server.pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{pid} left: {said}"
            );
        }
        // The table printed shows the system's registrations.
        assert!(stdout.contains(&s.system), "{said}");
    }
    assert!(stdout.contains("linearizable"), "{said}");
}
