//! `loadgen`: run a scenario, merge shard runs, or check a run against a baseline.
//! See `loadgen --help` and the README's "Load testing with loadgen".

use std::process::ExitCode;

use clap::Parser as _;
use loadgen::cli::{Cli, Command, thresholds};

// As the server binary: the embedded cluster (in this process or in the child of
// --cluster-process) allocates as it would in production, and so does the load side.
#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let huge_pages = match &cli.command {
        Some(Command::Compare { run, .. }) => run.transparent_huge_pages,
        _ => cli.run.transparent_huge_pages,
    };
    if let Err(e) = alloc_trim::set_transparent_huge_pages(huge_pages) {
        eprintln!("loadgen: cannot switch transparent huge pages for the process: {e}");
    }
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
            max_replication_lag_p99_rise,
            p99_slack_us,
            limit,
        }) => {
            let current = if run.is_dir() {
                run.join(loadgen::SUMMARY_FILE)
            } else {
                run
            };
            let t = thresholds(
                max_throughput_drop,
                max_p99_rise,
                max_replication_lag_p99_rise,
                p99_slack_us,
                &limit,
            );
            match loadgen::check_files(&current, &baseline, &t) {
                Ok(report) => {
                    print!("{report}");
                    match loadgen::write_comparison(&current, &baseline, &report) {
                        Ok(path) => println!("comparison: {}", path.display()),
                        Err(e) => eprintln!("loadgen check: comparison page not written: {e}"),
                    }
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
        Some(Command::ClusterServe {
            nodes,
            node_threads,
            sdk_reuseport,
            descriptors,
            tls_cert,
            tls_key,
        }) => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| loadgen::tls::NodeTlsFiles { cert, key });
            let runtime = loadgen::run::embedded::NodeRuntime {
                threads: node_threads,
                sdk_reuseport,
            };
            cluster_serve(nodes, runtime, descriptors, tls)
        }
        Some(Command::Compare { systems, run }) => compare(&systems, &run),
        None => run(&cli.run),
    }
}

/// The run's configuration from `args` and the load generator's runtime, or the exit code
/// after saying (prefixed by `who`) why there are none.
fn prepare(
    args: &loadgen::cli::RunArgs,
    who: &str,
) -> Result<(loadgen::run::RunConfig, tokio::runtime::Runtime), ExitCode> {
    let mut config = args.config().map_err(|e| {
        eprintln!("{who}: {e}");
        ExitCode::from(2)
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{who}: cannot start a runtime: {e}");
            ExitCode::from(2)
        })?;
    // Listening before anything starts: from now on Ctrl-C or SIGTERM stops the run (and the
    // members it started) within seconds instead of killing this process.
    config.interrupt = loadgen::run::interrupt::Interrupt::default();
    runtime.spawn(config.interrupt.clone().listen());
    Ok((config, runtime))
}

/// `loadgen compare`.
fn compare(systems: &[loadgen::run::systems::System], args: &loadgen::cli::RunArgs) -> ExitCode {
    let (config, runtime) = match prepare(args, "loadgen compare") {
        Ok(p) => p,
        Err(code) => return code,
    };
    let result = runtime.block_on(loadgen::run::systems::compare(
        &config,
        systems,
        args.out.clone(),
    ));
    runtime.shutdown_background();
    let interrupted = config.interrupt.is_set();
    match result {
        Ok((report, dir)) => {
            print!("{}", report.table());
            println!(
                "report: {} and {}",
                dir.join(loadgen::SYSTEMS_HTML).display(),
                dir.join(loadgen::SYSTEMS_JSON).display()
            );
            if interrupted {
                eprintln!(
                    "loadgen compare: interrupted: the report covers what was measured until then"
                );
                return ExitCode::from(loadgen::run::interrupt::EXIT_CODE);
            }
            if args.require_clean && !report.all_clean() {
                eprintln!(
                    "loadgen compare: --require-clean: a system's run failed, had errors or unreplicated probes, or its members disagreed at the end"
                );
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen compare: {e:#}");
            if interrupted {
                return ExitCode::from(loadgen::run::interrupt::EXIT_CODE);
            }
            ExitCode::from(2)
        }
    }
}

/// The child side of `--cluster-process`.
fn cluster_serve(
    nodes: usize,
    node_runtime: loadgen::run::embedded::NodeRuntime,
    descriptors: u64,
    tls: Option<loadgen::tls::NodeTlsFiles>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cluster-process")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen cluster process: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(loadgen::run::cluster_process::serve(
        nodes,
        node_runtime,
        descriptors,
        tls,
    ));
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen cluster process: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &loadgen::cli::RunArgs) -> ExitCode {
    let (config, runtime) = match prepare(args, "loadgen") {
        Ok(p) => p,
        Err(code) => return code,
    };
    let interrupt = config.interrupt.clone();
    let result = runtime.block_on(loadgen::run::run(config));
    runtime.shutdown_background();
    let interrupted = interrupt.is_set();
    match result {
        Ok(outcome) => {
            print!("{}", outcome.summary.table());
            print!("{}", outcome.epilogue());
            if interrupted {
                return ExitCode::from(loadgen::run::interrupt::EXIT_CODE);
            }
            if args.require_clean && !outcome.is_clean() {
                eprintln!(
                    "loadgen: --require-clean: the run had errors, unreplicated probes, no probe, nodes that disagree, or a fault the nodes did not recover from or that lost registrations"
                );
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            if interrupted {
                return ExitCode::from(loadgen::run::interrupt::EXIT_CODE);
            }
            ExitCode::from(2)
        }
    }
}
