//! Stopping a run early: Ctrl-C (SIGINT) or SIGTERM.
//!
//! [`Interrupt`] is a flag that every long wait of a run also watches: starting an embedded
//! cluster, opening the clients' connections, the measured phases, the wait for the last
//! probes and for the members to agree, the lanes' drain, and the systems still to run in
//! `loadgen compare`. Once it is set, a run stops what it does, writes the report of what
//! it measured, stops every member process it started and removes their files; the binary
//! then exits with [`EXIT_CODE`]. [`Interrupt::listen`] sets it on the first SIGINT or
//! SIGTERM; the binary spawns it before anything starts, so that a signal never kills the
//! process while members it started are running (they run in process groups of their own
//! and would be left behind).

use std::sync::Arc;

use tokio::sync::watch;

/// The exit code of a run that was interrupted (128 + SIGINT, as a shell reports it).
pub const EXIT_CODE: u8 = 130;

/// The error of a run interrupted before its load started (nothing was measured).
pub const STOPPED_BEFORE_LOAD: &str =
    "interrupted (Ctrl-C or SIGTERM) before the load started: nothing was measured";

/// Whether the run was asked to stop early. Clones share the flag; the default one is
/// never set unless [`trigger`](Interrupt::trigger) is called.
#[derive(Clone, Debug)]
pub struct Interrupt {
    flag: Arc<watch::Sender<bool>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self {
            flag: Arc::new(watch::channel(false).0),
        }
    }
}

impl Interrupt {
    /// Sets the flag (what a signal does).
    pub fn trigger(&self) {
        self.flag.send_replace(true);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        *self.flag.borrow()
    }

    /// Resolves once the flag is set (at once if it is).
    pub async fn wait(&self) {
        let mut rx = self.flag.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = rx.wait_for(|set| *set).await;
    }

    /// Runs `f` unless the flag is set first: `None` when interrupted (`f` is dropped).
    pub async fn or_stop<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.wait() => None,
            out = f => Some(out),
        }
    }

    /// Sets the flag on the first SIGINT or SIGTERM, saying so on stderr. Spawn it on the
    /// run's runtime before anything starts. Once it is installed, further signals no longer
    /// kill the process: the run stops within seconds.
    pub async fn listen(self) {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let signal = match term {
            Ok(mut term) => {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r.map(|()| "interrupted (Ctrl-C)"),
                    _ = term.recv() => Ok("terminated (SIGTERM)"),
                }
            }
            Err(_) => tokio::signal::ctrl_c()
                .await
                .map(|()| "interrupted (Ctrl-C)"),
        };
        match signal {
            Ok(what) => {
                eprintln!(
                    "loadgen: {what}: stopping the load, writing the report of what was \
                     measured, stopping the members and removing their files"
                );
                self.trigger();
            }
            Err(e) => eprintln!("loadgen: WARNING: cannot listen for Ctrl-C: {e}"),
        }
    }
}
