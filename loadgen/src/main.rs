//! `loadgen`: run a scenario, merge shard runs, or check a run against a baseline.
//! See `loadgen --help` and the README's "Load testing with loadgen".

use std::process::ExitCode;

use clap::Parser as _;
use loadgen::cli::{Cli, Command, thresholds};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Merge { dirs, out }) => match loadgen::merge_runs(&dirs, &out) {
            Ok(summary) => {
                print!("{}", summary.table());
                println!("merged {} runs into {}", dirs.len(), out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen merge: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Check {
            run,
            baseline,
            max_throughput_drop,
            max_p99_rise,
            max_convergence_p99_rise,
            p99_slack_us,
        }) => {
            let current = if run.is_dir() {
                run.join(loadgen::SUMMARY_FILE)
            } else {
                run
            };
            let t = thresholds(
                max_throughput_drop,
                max_p99_rise,
                max_convergence_p99_rise,
                p99_slack_us,
            );
            match loadgen::check_files(&current, &baseline, &t) {
                Ok(report) => {
                    print!("{report}");
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("loadgen check: {e}");
                    ExitCode::from(2)
                }
            }
        }
        None => run(&cli.run),
    }
}

fn run(args: &loadgen::cli::RunArgs) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadgen")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(loadgen::run::run(config));
    runtime.shutdown_background();
    match result {
        Ok(outcome) => {
            print!("{}", outcome.summary.table());
            print!("{}", outcome.epilogue());
            if args.require_clean && !outcome.is_clean() {
                eprintln!(
                    "loadgen: --require-clean: the run had errors, unconverged probes, no probe, or nodes that disagree"
                );
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
