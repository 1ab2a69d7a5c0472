//! The driver: runs the core's timers and carries out its commands.
//!
//! Every tick (100 ms, as Nacos's delay engine) it calls [`Node::tick`] with the wall
//! clock, on the blocking pool (a tick's health check walks every client), and executes
//! the returned [`Command`]s: each peer request runs in its own task (bounded per peer),
//! and its answer or failure goes back to [`Node::handle_response`] (a verify answer's and
//! a long verify report's on the blocking pool too: the one may build lists of whole
//! shards, the other adopt or repair thousands of clients), whose commands are executed
//! in turn. Between ticks, every 20 ms (`sync_flush`), it sends what is due to peers
//! ([`Node::flush_syncs`]) from the runtime, so a burst's tail does not wait for a tick.
//! A snapshot load streams chunks from the chosen peer, decoding and applying each on the
//! blocking pool.
//! The driver also logs member state changes, one line each.

use crate::clock::Clock;
use crate::cluster::peer::SNAPSHOT_NOT_LOADED;
use crate::cluster::peer_client::PeerClients;
use crate::cluster::sync_codec::SnapshotChunk;
use crate::metrics::Metrics;
use distro_core::message::{Command, PeerRequest, PeerResponse, SnapshotCursor};
use distro_core::{MemberId, MemberState, Node};
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Most requests in flight to one peer (per-client verify can emit one per client).
const MAX_INFLIGHT_PER_PEER: usize = 256;
/// A verify report with more entries than this is handled on the blocking pool (each
/// entry may adopt a newer state or schedule a repair: up to a whole list's, thousands).
const INLINE_REPORT_ENTRIES: usize = 64;
/// How long a snapshot load may wait for its next chunk (Nacos: 30 s load timeout).
const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a snapshot load ended without the snapshot.
enum LoadError {
    /// The peer has not loaded its own snapshot yet.
    Refused,
    /// Anything else (unreachable, timed out, a broken stream).
    Failed(String),
}

/// Runs one node's protocol timers and peer traffic.
pub struct Driver {
    node: Arc<Node>,
    peers: Arc<PeerClients>,
    clock: Clock,
    metrics: Arc<Metrics>,
    permits: Vec<Arc<Semaphore>>,
}

impl Driver {
    /// A driver for `node`.
    pub fn new(
        node: Arc<Node>,
        peers: Arc<PeerClients>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let permits = (0..node.members().capacity())
            .map(|_| Arc::new(Semaphore::new(MAX_INFLIGHT_PER_PEER)))
            .collect();
        Arc::new(Self {
            node,
            peers,
            clock,
            metrics,
            permits,
        })
    }

    /// Ticks every `period` until `stop` resolves.
    pub async fn run(
        self: Arc<Self>,
        period: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut states = self.node.member_states();
        let mut loaded = self.node.is_loaded();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = interval.tick() => {}
            }
            // On a blocking thread, not the runtime's: a tick's health check and lease
            // sweep walk every client (a million-client node spends a few hundred ms
            // there every 5 s), and the runtime's threads answer clients and peers
            // meanwhile. The next tick waits for this one, as before. What the tick
            // retired (expired clients, services and names nobody uses any more) is
            // freed from its thread's batch at once: a blocking thread has no park hook
            // to flush it when memory is to be given back, and the next tick may run on
            // another one (a memory barrier per tick, ten a second).
            let me = self.clone();
            let Some(cmds) = blocking(move || {
                let cmds = me.node.tick((me.clock)());
                me.node.registry().flush_retired();
                cmds
            })
            .await
            else {
                return;
            };
            self.execute(cmds);
            let now_states = self.node.member_states();
            for (m, after) in &now_states {
                let before = states.iter().find(|(b, _)| b == m).map(|(_, s)| s);
                if before.is_some_and(|b| b != after) {
                    let addr = self.node.member_addr(*m);
                    match after {
                        MemberState::Up => tracing::info!(member = %addr, "member is UP"),
                        MemberState::Suspicious => {
                            tracing::warn!(member = %addr, "member is SUSPICIOUS")
                        }
                        MemberState::Down => tracing::warn!(member = %addr, "member is DOWN"),
                    }
                }
            }
            states = now_states;
            if !loaded && self.node.is_loaded() {
                loaded = true;
                if self.node.cold_started() {
                    tracing::info!(
                        "every reachable peer is itself loading (cold start): starting with an empty registry"
                    );
                } else if self.node.loaded_from().is_none() {
                    tracing::info!("no peer reachable: starting with an empty registry");
                }
            }
        }
    }

    /// Every `period` until `stop` resolves, sends what is due to peers
    /// ([`Node::flush_syncs`]): the rest of a burst leaves once the burst's writes have
    /// stopped for `burst_quiet` (20 ms by default) instead of at the next tick (100 ms,
    /// after a linger of 100 ms), and a trickle about when its delay ends. On the runtime's thread, beside the ticks (which
    /// run on the blocking pool, where a health check may walk every client for a while):
    /// a flush only takes what is due, as the refill after an answer does here.
    pub async fn run_flushes(
        self: Arc<Self>,
        period: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = interval.tick() => {}
            }
            let cmds = self.node.flush_syncs((self.clock)());
            self.execute(cmds);
        }
    }

    /// Sends everything pending now and waits for the answers, at most `bound`. What the
    /// answers give back (a refill of a slot, a retry) and what was written meanwhile is
    /// sent in further rounds, as long as the last round delivered something.
    pub async fn drain(self: &Arc<Self>, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        let mut cmds = self.node.drain((self.clock)());
        let mut batches = 0;
        loop {
            let sends: Vec<_> = cmds
                .into_iter()
                .filter_map(|c| match c {
                    Command::Send { to, request } => Some((to, request)),
                    Command::LoadSnapshot { .. } | Command::ReleaseMemory => None,
                })
                .collect();
            if sends.is_empty() {
                break;
            }
            batches += sends.len();
            let round = futures::future::join_all(sends.into_iter().map(|(to, request)| {
                let me = self.clone();
                async move {
                    let r = me.peers.call(to, &request).await;
                    let delivered = r.is_ok();
                    (
                        delivered,
                        me.node.handle_response(to, request, r, (me.clock)()),
                    )
                }
            }));
            let Ok(answers) = tokio::time::timeout_at(deadline, round).await else {
                tracing::warn!(
                    batches,
                    "shutdown: not every pending sync was delivered in time"
                );
                return;
            };
            if !answers.iter().any(|(delivered, _)| *delivered) {
                tracing::warn!(batches, "shutdown: no peer took the pending syncs");
                return;
            }
            cmds = answers.into_iter().flat_map(|(_, more)| more).collect();
            cmds.extend(self.node.drain((self.clock)()));
        }
        if batches > 0 {
            tracing::info!(batches, "shutdown: pending syncs delivered");
        }
    }

    /// Carries out `cmds` (each in its own task).
    pub fn execute(self: &Arc<Self>, cmds: Vec<Command>) {
        for c in cmds {
            match c {
                Command::Send { to, request } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let Ok(_permit) = me.permits[to.index()].clone().acquire_owned().await
                        else {
                            return;
                        };
                        let r = me.peers.call(to, &request).await;
                        // A verify answer can make this node walk every client of the
                        // shards that differ (to build their lists), and a long verify
                        // report adopt or repair thousands of clients: off the runtime's
                        // threads, as a tick (see `run`). Other answers are handled here.
                        let long_report = match (&request, &r) {
                            (
                                PeerRequest::VerifyList(_),
                                Ok(PeerResponse::VerifyReport { needs, .. }),
                            ) => needs.len() > INLINE_REPORT_ENTRIES,
                            _ => false,
                        };
                        if long_report {
                            me.metrics.verify_long_reports.fetch_add(1, Relaxed);
                        }
                        let long = long_report || matches!(request, PeerRequest::VerifyDigests(_));
                        let more = if long {
                            let (node, clock) = (me.node.clone(), me.clock.clone());
                            let answer =
                                blocking(move || node.handle_response(to, request, r, clock()));
                            let Some(more) = answer.await else { return };
                            more
                        } else {
                            me.node.handle_response(to, request, r, (me.clock)())
                        };
                        me.execute(more);
                    });
                }
                Command::LoadSnapshot { from } => {
                    let me = self.clone();
                    tokio::spawn(async move { me.load(from).await });
                }
                Command::ReleaseMemory => {
                    let start = Instant::now();
                    alloc_trim::request();
                    // A worker that is asleep does not park again (and so run the park
                    // hook) until it is woken: a task per worker wakes the idle ones to
                    // steal it, and whichever worker runs one collects there.
                    for _ in 0..tokio::runtime::Handle::current().metrics().num_workers() {
                        tokio::spawn(async { alloc_trim::collect_if_requested() });
                    }
                    tracing::debug!(
                        millis = start.elapsed().as_millis() as u64,
                        "store shrank after a burst of removals: allocator collected"
                    );
                }
            }
        }
    }

    async fn load(self: Arc<Self>, from: MemberId) {
        let addr = self.node.members().addr(from).to_string();
        let start = Instant::now();
        let result = self.load_inner(from).await;
        let now = (self.clock)();
        match result {
            Ok((clients, bytes, chunks)) => {
                self.node.load_finished(from, true, now);
                tracing::info!(
                    peer = %addr,
                    clients,
                    bytes,
                    chunks,
                    millis = start.elapsed().as_millis() as u64,
                    "snapshot loaded"
                );
            }
            Err(LoadError::Refused) => {
                self.node.load_refused(from, now);
                tracing::info!(peer = %addr, "the peer is still loading its own snapshot; trying another peer");
            }
            Err(LoadError::Failed(e)) => {
                self.metrics.snapshot_load_failures.fetch_add(1, Relaxed);
                self.node.load_finished(from, false, now);
                tracing::warn!(peer = %addr, error = %e, "snapshot load failed; trying another peer");
            }
        }
    }

    async fn load_inner(&self, from: MemberId) -> Result<(u64, u64, u64), LoadError> {
        let mut stream = self
            .peers
            .snapshot(from, SnapshotCursor::default())
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::FailedPrecondition && s.message() == SNAPSHOT_NOT_LOADED
                {
                    LoadError::Refused
                } else {
                    LoadError::Failed(s.message().to_string())
                }
            })?;
        self.stream_chunks(from, &mut stream)
            .await
            .map_err(LoadError::Failed)
    }

    async fn stream_chunks(
        &self,
        from: MemberId,
        stream: &mut tonic::Streaming<SnapshotChunk>,
    ) -> Result<(u64, u64, u64), String> {
        let (mut clients, mut bytes, mut chunks) = (0u64, 0u64, 0u64);
        // Chunks hold disjoint clients and the registry is concurrent, so chunks are
        // decoded and applied in parallel (one per core) while the next ones stream in.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let permits = Arc::new(Semaphore::new(parallel));
        let mut applying = tokio::task::JoinSet::new();
        loop {
            let next = tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT, stream.message())
                .await
                .map_err(|_| "timed out waiting for the next chunk".to_string())?
                .map_err(|s| s.message().to_string())?;
            let Some(chunk) = next else {
                return Err(format!(
                    "the stream ended after {chunks} chunks, before the last one"
                ));
            };
            bytes += chunk.encoded_len() as u64;
            chunks += 1;
            clients += chunk.len() as u64;
            let last = chunk.next_shard.is_none();
            let node = self.node.clone();
            let now = (self.clock)();
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            applying.spawn_blocking(move || {
                let _permit = permit;
                let mut records = chunk.decode_chunk(&node).map_err(|e| e.to_string())?;
                node.load_states(from, records.states().map_err(|e| e.to_string())?, now);
                Ok::<_, String>(())
            });
            // Surface a failed chunk early.
            while let Some(done) = applying.try_join_next() {
                done.map_err(|e| e.to_string())??;
            }
            if last {
                while let Some(done) = applying.join_next().await {
                    done.map_err(|e| e.to_string())??;
                }
                return Ok((clients, bytes, chunks));
            }
        }
    }
}

/// Runs `work` on the blocking pool and waits for it, as if it ran here: its panic goes
/// on unwinding in the caller; `None` if the runtime shuts down before it ran.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(t) => Some(t),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}
