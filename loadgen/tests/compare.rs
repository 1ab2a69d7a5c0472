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

/// Ctrl-C (SIGINT) in the middle of a comparison: loadgen stops within seconds, exits with
/// 130, writes the report of what it measured (the system under way marked interrupted, the
/// next one not run), and leaves no member process and no file behind (its temporary
/// directory, TMPDIR here, is empty).
#[test]
fn ctrl_c_stops_a_comparison_within_seconds_and_cleans_up() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    if !installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, tmp) = (dir.path().join("cmp"), dir.path().join("tmp"));
    std::fs::create_dir(&tmp).expect("TMPDIR");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["compare", "--systems", "etcd,zookeeper"])
        .args([
            "--clients",
            "1000",
            "--services",
            "20",
            "--duration",
            "120s",
        ])
        .args(["--heartbeat", "1s", "--seed", &SEED.to_string()])
        .args(["--plain", "--no-history", "--out"])
        .arg(&out)
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen compare");
    let pid = child.id();
    // Read stdout on a thread: the members' pids, then the first progress line (the load
    // is under way).
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut said, mut members) = (String::new(), Vec::<u32>::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no progress line ({e}), seed {SEED}: {said}"));
        said.push_str(&line);
        said.push('\n');
        if let Some(list) = line
            .split_once("processes [")
            .and_then(|(_, rest)| rest.split_once(']'))
        {
            members = list
                .0
                .split(", ")
                .map(|p| p.parse().expect("a pid"))
                .collect();
        }
        if line.starts_with('[') {
            break;
        }
    }
    assert_eq!(members.len(), 3, "seed {SEED}: {said}");
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -INT {pid}");
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for loadgen") {
            break status;
        }
        assert!(
            interrupted.elapsed() < Duration::from_secs(15),
            "loadgen still running 15 s after Ctrl-C, seed {SEED}: {said}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = interrupted.elapsed();
    let _ = reader.join();
    said.extend(rx.try_iter().map(|l| l + "\n"));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    let said = format!("seed {SEED}, stopped in {took:?}\nstdout:\n{said}\nstderr:\n{stderr}");
    assert_eq!(status.code(), Some(130), "{said}");
    for pid in &members {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "etcd member {pid} left: {said}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .expect("read TMPDIR")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "files left in TMPDIR {left:?}: {said}");
    let report: SystemsReport =
        serde_json::from_slice(&std::fs::read(out.join(SYSTEMS_JSON)).expect("compare.json"))
            .expect("parse compare.json");
    let (etcd, zk) = (&report.systems[0], &report.systems[1]);
    assert!(etcd.error.is_none() && !etcd.clean, "{said}");
    assert!(
        zk.error.as_deref().is_some_and(|e| e.contains("not run")),
        "{said}"
    );
    assert!(said.contains("interrupted (Ctrl-C or SIGTERM)"), "{said}");
    assert!(said.contains("zookeeper: not run (interrupted)"), "{said}");
}
