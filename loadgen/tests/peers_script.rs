//! `results/peers.py` (the tables of `results/peers.md`) on a sitting's output made of real
//! `compare.json` files ([`SystemsReport`], so a change of the format shows here): a run
//! that was not clean is marked and left out of the medians, and what it lost is listed;
//! a comparison that answered no query has no half rate. Needs `python3`; without it the
//! test says so and passes, unless `CI` is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use loadgen::{LatencyStats, Op, OpSummary, SystemFigures, SystemsReport};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/peers.py")
}

fn python() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is not installed and CI is set"
        );
        eprintln!("SKIPPED: python3 is not installed");
    }
    found
}

fn latency(p99_ms: u64) -> LatencyStats {
    let us = p99_ms * 1000;
    LatencyStats {
        count: 100,
        min_us: 1,
        mean_us: us as f64 / 2.0,
        p50_us: us / 2,
        p90_us: us,
        p99_us: us,
        p99_9_us: us,
        p99_99_us: us,
        max_us: us,
    }
}

/// A system's figures: `rate` registrations/s, `p99_ms` for every operation's p99.
fn system(name: &str, rate: f64, p99_ms: u64, clients: i64) -> SystemFigures {
    let mut f = SystemFigures::failed(name, name, "promise", Path::new("x"), String::new());
    f.error = None;
    f.clean = true;
    f.registered = clients;
    f.instances = clients as u64;
    f.member_instances = vec![clients as usize; 3];
    f.members_agreed = Some(true);
    f.registration_per_s = Some(rate);
    f.cpu_s_per_op = Some(20e-6);
    f.rss_bytes_per_instance = Some(1000.0);
    f.replication_lag.count = 10;
    f.replication_lag.latency = Some(latency(p99_ms));
    for op in [Op::Register, Op::Beat, Op::Query, Op::Push] {
        let o = OpSummary {
            ok: 100,
            throughput_per_s: rate,
            corrected: Some(latency(p99_ms)),
            ..OpSummary::default()
        };
        f.ops.insert(op, o);
    }
    f
}

/// Writes `f` as the comparison of one system, as peers.sh lays them out, with its exit code.
fn write(out: &Path, seed: u32, step: &str, label: &str, f: SystemFigures, rc: i32) {
    let dir = out.join(format!("100/seed-{seed}/{step}"));
    std::fs::create_dir_all(dir.join(label)).expect("mkdir");
    let report = SystemsReport {
        format: loadgen::SYSTEMS_FORMAT.to_owned(),
        caveats: String::new(),
        parameters: BTreeMap::new(),
        systems: vec![f],
    };
    std::fs::write(
        dir.join(label).join("compare.json"),
        serde_json::to_vec(&report).expect("json"),
    )
    .expect("write compare.json");
    std::fs::write(dir.join(format!("{label}.rc")), format!("{rc}\n")).expect("write rc");
}

#[test]
fn unclean_runs_are_marked_left_out_of_the_medians_and_explained() {
    if !python() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path();
    for seed in 1..=3 {
        for step in ["register", "query-max", "query-half", "push"] {
            let rate = 1000.0 * f64::from(seed);
            write(
                out,
                seed,
                step,
                "distro",
                system("distro", rate, 10, 100),
                0,
            );
            // etcd's seed 2 register run lost leases: 30 beats answered 404, 80 clients
            // held at the end, the members disagreeing.
            let mut etcd = system("etcd", 100.0 * f64::from(seed), 20, 100)
                .with_mapping(Some("a lease per client".into()));
            let mut rc = 0;
            if seed == 2 && step == "register" {
                etcd.clean = false;
                etcd.registration_per_s = Some(99_999.0);
                etcd.totals.errors = 30;
                if let Some(beat) = etcd.ops.get_mut(&Op::Beat) {
                    beat.errors = 30;
                    beat.errors_by_code.insert("404".into(), 30);
                }
                etcd.registered = 80;
                etcd.member_instances = vec![80, 80, 79];
                etcd.members_agreed = Some(false);
                rc = 3;
            }
            write(out, seed, step, "etcd", etcd, rc);
        }
    }
    let run = Command::new("python3")
        .arg(script())
        .arg("table")
        .arg(out)
        .output()
        .expect("run peers.py");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let said = format!(
        "{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{said}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| registrations/s |"))
        .unwrap_or_else(|| panic!("no registrations row: {said}"));
    // distro: all clean, median 2,000; etcd: seed 2 marked and left out, so the median of
    // 100 and 300 is 200, not 300 (99,999 would have made it the median).
    assert!(row.contains("**2,000** (1,000, 2,000, 3,000)"), "{row}");
    assert!(row.contains("**200** (100, 99,999*, 300)"), "{row}");
    assert!(row.contains("| 0.10 |"), "the ratio of the medians: {row}");
    let lost = stdout
        .lines()
        .find(|l| l.starts_with("- seed-2, etcd, register:"))
        .unwrap_or_else(|| panic!("the unclean run is not listed: {said}"));
    for part in [
        "30 errors (beat 404 x30: lease or session expired",
        "held 80 of 100 clients at the end",
        "members disagreed at the end, holding 80 / 80 / 79",
    ] {
        assert!(lost.contains(part), "{part} missing: {lost}");
    }
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("- seed-")).count(),
        1,
        "only that run is listed: {said}"
    );
    assert!(
        stdout.contains("etcd: a lease per client"),
        "the mapping: {said}"
    );
}

#[test]
fn half_query_rate_refuses_a_system_that_answered_no_query() {
    if !python() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut answered = system("etcd", 5000.0, 10, 100);
    write(
        dir.path(),
        1,
        "query-max",
        "etcd-shared",
        answered.clone(),
        0,
    );
    let path = dir
        .path()
        .join("100/seed-1/query-max/etcd-shared/compare.json");
    let half = |path: &Path| {
        Command::new("python3")
            .arg(script())
            .args(["half-query-rate"])
            .arg(path)
            .arg("etcd-shared")
            .output()
            .expect("run peers.py")
    };
    // `etcd-shared` is loadgen's `etcd`, the only system of its comparison.
    let o = half(&path);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2500");
    answered.ops.remove(&Op::Query);
    write(dir.path(), 1, "query-max", "etcd-shared", answered, 3);
    let o = half(&path);
    assert!(!o.status.success(), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("answered no query"), "{e}");
}

/// `results/peers.sh` with a stand-in for loadgen (`LOADGEN`) that records its arguments:
/// `etcd-shared1k` puts a lease per 1,000 clients (`--etcd-lease shared:100` at 100,000),
/// `ETCD_OPTIONS` go to the etcd systems' runs only, and a run that exits 130 (interrupted by Ctrl-C) ends the sitting with 130, no further
/// run started.
#[test]
fn peers_sh_shares_a_lease_per_thousand_clients_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (fake, calls, out) = (
        dir.path().join("loadgen"),
        dir.path().join("calls"),
        dir.path().join("out"),
    );
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in *'--systems distro'*) exit 130 ;; esac\n",
            calls.display()
        ),
    )
    .expect("write the stand-in");
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/peers.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .env("LOADGEN", &fake)
        .env("SYSTEMS", "etcd-shared1k distro zookeeper")
        .env("CLIENTS", "100000")
        .env("SEEDS", "1")
        .env("ETCD_OPTIONS", "--batch 100 --concurrency 1")
        .output()
        .expect("run peers.sh");
    let said = format!("{o:?}");
    assert_eq!(o.status.code(), Some(130), "{said}");
    let calls = std::fs::read_to_string(&calls).expect("the calls");
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "no run after the interrupted one: {calls}");
    assert!(
        lines[0].contains("--systems etcd --etcd-lease shared:100 --batch 100 --concurrency 1 ")
            && lines[0].contains("--clients 100000"),
        "{calls}"
    );
    assert!(
        lines[1].contains("--systems distro") && !lines[1].contains("--batch 100"),
        "ETCD_OPTIONS are etcd's only: {calls}"
    );
    let notes = std::fs::read_to_string(out.join("uptime.txt")).expect("uptime.txt");
    assert!(notes.contains("interrupted"), "{notes}");
}
