//! Where a run happened: the machine's cores, memory and CPU model, and the git revision
//! of the code that ran.
//!
//! Read from `/proc` (Linux); elsewhere the fields fall back to `unknown` or 0 rather than
//! failing, since a report without machine details is still worth writing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine a run was measured on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// `MemTotal` of `/proc/meminfo`, in MiB.
    pub memory_mib: u64,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel name and release, e.g. `Linux 6.8.0`.
    pub os: String,
    /// Host name.
    pub hostname: String,
}

impl Machine {
    /// Reads the current machine's details.
    pub fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let release = read("/proc/sys/kernel/osrelease");
        let hostname = read("/proc/sys/kernel/hostname");
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: mem_total_mib(&meminfo),
            cpu_model: cpu_model(&cpuinfo),
            os: format!("{} {}", std::env::consts::OS, release.trim())
                .trim()
                .to_owned(),
            hostname: non_empty(hostname.trim()),
        }
    }
}

fn non_empty(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        s.to_owned()
    }
}

fn cpu_model(cpuinfo: &str) -> String {
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim())
        })
        .unwrap_or("");
    non_empty(model)
}

fn mem_total_mib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// The short git revision of the work tree containing `dir`, with `-dirty` appended when
/// tracked files have uncommitted changes; `unknown` when git or the repository is
/// unavailable. Untracked files do not count (as with `git describe --dirty`), nor do
/// changes under the repository's `results/`: every run appends to the committed
/// `results/history.csv`, which says nothing about the code that ran.
pub fn git_revision(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(rev) = git(&["rev-parse", "--short", "HEAD"]).filter(|r| !r.is_empty()) else {
        return "unknown".to_owned();
    };
    let status = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ":(top)",
        ":(top,exclude)results",
    ]);
    match status {
        Some(status) if status.is_empty() => rev,
        _ => format!("{rev}-dirty"),
    }
}

/// What the driver tells the report about a run besides its measurements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// The scenario's name, e.g. `register` or `mixed-3-nodes`.
    pub scenario: String,
    /// Every parameter of the run (flags, cluster size, rates, seeds), as text.
    pub parameters: BTreeMap<String, String>,
    /// The machine the run was measured on.
    pub machine: Machine,
    /// The code's revision (see [`git_revision`]).
    pub git_revision: String,
}

impl RunInfo {
    /// A `RunInfo` for the current machine and the git work tree of the current directory.
    pub fn detect(scenario: &str, parameters: BTreeMap<String, String>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            parameters,
            machine: Machine::detect(),
            git_revision: git_revision(Path::new(".")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(cpu_model(cpuinfo), "Intel(R) Xeon(R) CPU @ 2.20GHz");
        assert_eq!(cpu_model(""), "unknown");
        let meminfo = "MemTotal:       24683832 kB\nMemFree:        23436504 kB\n";
        assert_eq!(mem_total_mib(meminfo), 24105);
    }

    #[test]
    fn detect_on_this_machine_finds_cores() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
    }

    #[test]
    fn git_revision_is_dirty_for_code_changes_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
                .args(args)
                .output()
                .expect("git runs");
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        git(&["init", "-q"]);
        write("src/lib.rs", "// code\n");
        write("results/history.csv", "timestamp\n");
        git(&["add", "."]);
        git(&["commit", "-qm", "first"]);
        let clean = git_revision(dir.path());
        assert!(clean.len() >= 7 && !clean.ends_with("-dirty"), "{clean}");
        write("results/history.csv", "timestamp\n2026\n");
        write("notes.txt", "untracked\n");
        assert_eq!(
            git_revision(dir.path()),
            clean,
            "results/ and untracked files"
        );
        write("src/lib.rs", "// changed\n");
        assert_eq!(git_revision(dir.path()), format!("{clean}-dirty"));
        // From a subdirectory too.
        assert_eq!(
            git_revision(&dir.path().join("src")),
            format!("{clean}-dirty")
        );
    }

    #[test]
    fn git_revision_outside_a_repository_is_unknown() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(git_revision(dir.path()), "unknown");
    }
}
