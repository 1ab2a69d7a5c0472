//! `loadgen compare`: the same workload against distro, etcd and ZooKeeper in turn, each
//! on an embedded 3-member cluster started for it on this machine, in one sitting; one
//! report of them side by side (`report/systems.rs`: [`SystemsReport`]).
//!
//! Each system's run is an ordinary run (its own directory `<out>/<system>/` with its
//! report), with the same scenario options and seed; the protocol is the system's
//! (distro: `native`, etcd: `etcd`, ZooKeeper: `zookeeper`). distro's nodes run in a child
//! process (`--cluster-process`), so that, like the etcd and ZooKeeper members, their CPU
//! and memory are read from processes of their own ([`super::server_usage`]).

use std::path::PathBuf;
use std::time::SystemTime;

use super::{ProtocolKind, RunConfig, run_measured};
use crate::report::systems::{SystemFigures, SystemsReport};

/// A system `loadgen compare` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// distro (this project), through its native API.
    Distro,
    /// etcd v3 (a loadgen built with `--features etcd`).
    Etcd,
    /// ZooKeeper.
    Zookeeper,
}

impl System {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            System::Distro => "distro",
            System::Etcd => "etcd",
            System::Zookeeper => "zookeeper",
        }
    }

    /// The protocol loadgen drives it with.
    pub fn protocol(self) -> ProtocolKind {
        match self {
            System::Distro => ProtocolKind::Native,
            System::Etcd => ProtocolKind::Etcd,
            System::Zookeeper => ProtocolKind::Zookeeper,
        }
    }

    /// How `config` maps a client onto its keep-alive unit, for etcd and ZooKeeper.
    pub fn mapping(self, config: &RunConfig) -> Option<String> {
        match self {
            System::Distro => None,
            System::Etcd => Some(config.etcd_lease.describe()),
            System::Zookeeper => Some(config.zk_sessions.describe()),
        }
    }

    /// What it promises, to read its figures by.
    pub fn promise(self) -> &'static str {
        match self {
            System::Distro => {
                "AP (Nacos's Distro protocol): each instance has an owner member that applies \
                 and acknowledges a write at once and replicates it to the others after; \
                 every member answers reads from its own copy, so a read may miss a write \
                 for the replication lag, and a member cut off keeps serving"
            }
            System::Etcd => {
                "CP, linearizable (Raft): every write goes through the leader and is \
                 acknowledged once a quorum holds it; reads here are linearizable (through \
                 the leader) except the probes' watches; without a quorum, no writes"
            }
            System::Zookeeper => {
                "CP (Zab): every write goes through the leader and is acknowledged once a \
                 quorum holds it, in one total order; a session reads from the member it is \
                 on (sequentially consistent, possibly behind the leader); without a \
                 quorum, no writes"
            }
        }
    }
}

/// Runs `base` against each of `systems` in turn (see the module documentation) and writes
/// the report under `out` (default `results/runs/<timestamp>-compare`). A system whose run
/// fails is in the report with its error; the others still run. Once `base.interrupt` is
/// set, the system under way stops early (see [`super`]) and the systems after it do not
/// run (in the report as not run).
pub async fn compare(
    base: &RunConfig,
    systems: &[System],
    out: Option<PathBuf>,
) -> anyhow::Result<(SystemsReport, PathBuf)> {
    anyhow::ensure!(
        base.targets.is_empty(),
        "--targets does not apply to compare, which starts each system's cluster itself"
    );
    anyhow::ensure!(
        base.protocol == ProtocolKind::Native,
        "--protocol does not apply to compare: each system is driven by its own (distro: native, \
         etcd: etcd, zookeeper: zookeeper)"
    );
    anyhow::ensure!(!systems.is_empty(), "--systems: name at least one system");
    // Refused before any system runs, not after the others.
    #[cfg(not(feature = "etcd"))]
    anyhow::ensure!(
        !systems.contains(&System::Etcd),
        "--systems etcd: {}",
        super::config::NO_ETCD
    );
    let out = out.unwrap_or_else(|| {
        PathBuf::from("results/runs").join(crate::run_dir_name(SystemTime::now(), "compare"))
    });
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let mut figures = Vec::new();
    for &system in systems {
        let dir = out.join(system.name());
        if base.interrupt.is_set() {
            println!("loadgen compare: {}: not run (interrupted)", system.name());
            figures.push(
                SystemFigures::failed(
                    system.name(),
                    system.protocol().name(),
                    system.promise(),
                    &dir,
                    "not run: the comparison was interrupted (Ctrl-C or SIGTERM)".to_owned(),
                )
                .with_mapping(system.mapping(base)),
            );
            continue;
        }
        let cfg = RunConfig {
            protocol: system.protocol(),
            cluster_process: system == System::Distro,
            out: Some(dir.clone()),
            history: None,
            ..base.clone()
        };
        println!("loadgen compare: {} ({})", system.name(), dir.display());
        let f = match run_measured(cfg).await {
            Ok((outcome, usage)) => {
                print!("{}", outcome.summary.table());
                print!("{}", outcome.epilogue());
                SystemFigures::of(
                    system.name(),
                    system.protocol().name(),
                    system.promise(),
                    &dir,
                    &outcome,
                    usage,
                    u64::from(base.instances_per_client),
                )
                .with_mapping(system.mapping(base))
            }
            Err(e) => {
                eprintln!("loadgen compare: {}: {e:#}", system.name());
                SystemFigures::failed(
                    system.name(),
                    system.protocol().name(),
                    system.promise(),
                    &dir,
                    format!("{e:#}"),
                )
                .with_mapping(system.mapping(base))
            }
        };
        figures.push(f);
    }
    let report = SystemsReport::new(base, figures);
    report.write(&out)?;
    Ok((report, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad input is refused before any cluster starts, naming the option.
    #[tokio::test]
    async fn options_that_do_not_apply_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Some(dir.path().join("cmp"));
        let nacos = RunConfig {
            protocol: ProtocolKind::Nacos,
            ..RunConfig::default()
        };
        let e = compare(&nacos, &[System::Distro], out.clone())
            .await
            .expect_err("--protocol refused");
        assert!(e.to_string().contains("--protocol"), "{e}");
        let targets = RunConfig {
            targets: vec!["127.0.0.1:1".to_owned()],
            ..RunConfig::default()
        };
        let e = compare(&targets, &[System::Distro], out.clone())
            .await
            .expect_err("--targets refused");
        assert!(e.to_string().contains("--targets"), "{e}");
        let e = compare(&RunConfig::default(), &[], out.clone())
            .await
            .expect_err("no system");
        assert!(e.to_string().contains("--systems"), "{e}");
        assert!(!dir.path().join("cmp").exists(), "nothing was written");
    }

    #[test]
    fn each_system_has_its_protocol_and_promise() {
        assert_eq!(System::Distro.protocol(), ProtocolKind::Native);
        assert_eq!(System::Etcd.protocol(), ProtocolKind::Etcd);
        assert_eq!(System::Zookeeper.protocol(), ProtocolKind::Zookeeper);
        assert!(System::Distro.promise().starts_with("AP"));
        assert!(System::Etcd.promise().contains("linearizable"));
        assert!(System::Zookeeper.promise().contains("quorum"));
    }
}
