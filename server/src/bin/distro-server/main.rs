//! The `distro-server` binary: parse the command line into a [`ServerConfig`] ([`cli`];
//! `--members-dns` in [`members_dns`]),
//! raise the open-file limit, run until SIGTERM or Ctrl-C.

mod cli;
mod members_dns;

use clap::Parser as _;
use distro_server::ServerConfig;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

/// Raises the soft open-file limit towards what `--max-tcp-connections` on three ports
/// needs (and the hard limit when allowed, as root); warns when it stays below, since
/// connections beyond it then fail at accept (which backs off) rather than being refused
/// with a clear error.
fn raise_open_file_limit(config: &ServerConfig) {
    let wanted = (config.max_tcp_connections as u64)
        .saturating_mul(3)
        .saturating_add(1_024);
    match distro_server::open_files::raise_nofile(wanted) {
        Ok(l) if l.is_enough() => {
            tracing::debug!(from = l.before, to = l.now, "open-file limit");
        }
        Ok(l) => tracing::warn!(
            limit = l.now,
            hard = l.hard,
            wanted,
            "the open-file limit is below what --max-tcp-connections needs on three ports; \
             connections beyond it fail at accept instead of being refused with a reason \
             (raise `ulimit -n` or lower --max-tcp-connections)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if cli.hash_password {
        return match cli::Cli::hash_password(&mut std::io::stdin().lock()) {
            Ok(hash) => {
                println!("{hash}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("distro-server: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(cli.log_filter())
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    // Before the runtime's threads start allocating (see alloc_trim).
    if let Err(e) = alloc_trim::set_transparent_huge_pages(cli.transparent_huge_pages) {
        tracing::warn!(error = %e, "cannot switch transparent huge pages for the process");
    }
    let cli_threads = cli.threads;
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("distro-server: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    raise_open_file_limit(&config);
    let threads = cli_threads.map_or_else(default_threads, usize::from);
    tracing::info!(threads, "runtime worker threads");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads);
    // A worker going idle gives the allocator's free pages back once after the store
    // shrank (see alloc_trim; one atomic load per park otherwise).
    builder.on_thread_park(alloc_trim::collect_if_requested);
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("distro-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(distro_server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distro-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The runtime's worker threads without `--threads`: one per CPU this process may use
/// (`available_parallelism`: its affinity mask, bounded by its cgroup's CPU quota), 1 if
/// that cannot be read. More threads than CPUs only add switches; fewer leave CPUs idle
/// under load.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
