//! `perf-gate`: the comparison and bookkeeping half of `.ci/perf-gate`.
//!
//! The bash script installs the tools, runs the gungraun benches and picks the reference;
//! this binary reads their JSON output (see `distro_benches::gate`):
//!
//! ```text
//! perf-gate compare --current RUN.jsonl --baseline results/instructions/baseline.json
//! perf-gate compare --current RUN.jsonl --reference REF.jsonl --label L [--baseline FILE]
//! perf-gate bless --current RUN.jsonl --out FILE --rustc S --valgrind S --gungraun S --commit S
//! perf-gate baseline-field FILE (rustc|valgrind|gungraun|commit)
//! perf-gate criterion-medians target/criterion
//! ```
//!
//! `compare` prints the table and exits 1 when a benchmark grew by more than 5 % or one is
//! missing from the run. With `--reference` the counts are those of a re-measured commit;
//! a `--baseline` given too still names the benchmarks that must run.

use distro_benches::gate::{self, Baseline};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("perf-gate: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// The value of `--name` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn required<'a>(args: &'a [String], name: &str) -> Result<&'a str, String> {
    flag(args, name).ok_or_else(|| format!("missing {name}"))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let Some(cmd) = args.first() else {
        return Err("usage: perf-gate compare|bless|baseline-field|criterion-medians ...".into());
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "compare" => {
            let current = gate::parse_gungraun(&read(required(rest, "--current")?)?)?;
            let baseline = match flag(rest, "--baseline") {
                Some(b) => Some(Baseline::from_json(&read(b)?)?.benchmarks),
                None => None,
            };
            let (reference, label): (BTreeMap<String, u64>, String) =
                match (&baseline, flag(rest, "--reference")) {
                    (_, Some(r)) => (
                        gate::parse_gungraun(&read(r)?)?,
                        flag(rest, "--label").unwrap_or("reference").to_string(),
                    ),
                    (Some(b), None) => (b.clone(), "baseline".into()),
                    (None, None) => return Err("give --baseline or --reference".into()),
                };
            let mut report = gate::compare(&reference, &current);
            if let Some(b) = &baseline {
                report.require(b.keys());
            }
            print!("{}", report.table(&label));
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        "bless" => {
            let current = gate::parse_gungraun(&read(required(rest, "--current")?)?)?;
            let out = required(rest, "--out")?;
            let baseline = Baseline {
                format: gate::FORMAT,
                metric:
                    "Callgrind Ir: instructions executed by the benchmark function (setup excluded)"
                        .into(),
                rustc: required(rest, "--rustc")?.to_string(),
                valgrind: required(rest, "--valgrind")?.to_string(),
                gungraun: required(rest, "--gungraun")?.to_string(),
                commit: required(rest, "--commit")?.to_string(),
                command: ".ci/perf-gate --bless".into(),
                benchmarks: current,
            };
            std::fs::write(out, baseline.to_json())
                .map_err(|e| format!("cannot write {out}: {e}"))?;
            println!("wrote {out} ({} benchmarks)", baseline.benchmarks.len());
            Ok(ExitCode::SUCCESS)
        }
        "baseline-field" => {
            let (Some(file), Some(field)) = (rest.first(), rest.get(1)) else {
                return Err("usage: perf-gate baseline-field FILE FIELD".into());
            };
            let b = Baseline::from_json(&read(file)?)?;
            let v = match field.as_str() {
                "rustc" => b.rustc,
                "valgrind" => b.valgrind,
                "gungraun" => b.gungraun,
                "commit" => b.commit,
                other => return Err(format!("unknown field {other}")),
            };
            println!("{v}");
            Ok(ExitCode::SUCCESS)
        }
        "criterion-medians" => {
            let dir = rest.first().map_or("target/criterion", String::as_str);
            print!("{}", criterion_medians(Path::new(dir))?);
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command {other}")),
    }
}

/// A markdown table of the medians of every benchmark criterion saved under `dir`.
fn criterion_medians(dir: &Path) -> Result<String, String> {
    let mut rows = Vec::new();
    collect(dir, &mut rows)?;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::from(
        "| benchmark | median | 95 % CI of the median | per element |\n|---|---:|---:|---:|\n",
    );
    for (id, median, lo, hi, per) in rows {
        s.push_str(&format!(
            "| `{id}` | {} | {} – {} | {} |\n",
            fmt_ns(median),
            fmt_ns(lo),
            fmt_ns(hi),
            per.map_or_else(|| "".to_string(), fmt_ns)
        ));
    }
    Ok(s)
}

type MedianRow = (String, f64, f64, f64, Option<f64>);

fn collect(dir: &Path, rows: &mut Vec<MedianRow>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let (bench, est) = (
            path.join("new/benchmark.json"),
            path.join("new/estimates.json"),
        );
        if bench.is_file() && est.is_file() {
            let b: serde_json::Value = serde_json::from_str(&read(&bench.to_string_lossy())?)
                .map_err(|e| e.to_string())?;
            let e: serde_json::Value =
                serde_json::from_str(&read(&est.to_string_lossy())?).map_err(|e| e.to_string())?;
            let id = b["full_id"].as_str().unwrap_or("?").to_string();
            let m = &e["median"];
            let median = m["point_estimate"].as_f64().unwrap_or(f64::NAN);
            let lo = m["confidence_interval"]["lower_bound"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let hi = m["confidence_interval"]["upper_bound"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let elements = b["throughput"]["Elements"].as_f64();
            rows.push((id, median, lo, hi, elements.map(|n| median / n)));
        } else if path.file_name().is_some_and(|n| n != "report") {
            collect(&path, rows)?;
        }
    }
    Ok(())
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}
