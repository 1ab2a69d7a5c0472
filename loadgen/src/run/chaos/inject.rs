//! Applying a schedule to the embedded cluster, and measuring each fault.
//!
//! [`run_schedule`] runs next to the lanes from the start of the hold phase. It applies
//! each fault at its time (kill, restart, partition then heal, freeze then thaw; a join
//! rewrites the members file with new nodes and starts them, a leave rewrites it without
//! the highest-numbered members, waits until they have handed everything over, then stops
//! them), marks it on the timeline, and from the fault's convergence reference (its end; a
//! kill's start; a join's or a leave's end: the joiners started, the leavers stopped)
//! checks the cluster every [`CHECK_EVERY`] with a [`Census`] until every running node holds
//! exactly the expected clients, or the convergence timeout passes. The last check gives
//! the fault's lost and returned counts (0 once converged), the largest counts seen over
//! the wait its peaks (lag and drops that replication or the clients repaired). The client
//! errors and failovers of a fault are the growth of the run's counters from its start to
//! the later of its end and its convergence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use distro_server::LocalCluster;
use tokio::sync::watch;

use super::census::{Census, Check};
use super::schedule::{Action, Fault, Schedule};
use crate::population::Population;
use crate::report::faults::FaultSummary;
use crate::run::driver::{Phase, Shared};

/// How often a fault's convergence is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// How long a freeze may take to hold every thread of a node.
const FREEZE_WITHIN: Duration = Duration::from_secs(5);

/// How often a leave looks whether its nodes have handed everything over.
const HANDOVER_POLL: Duration = Duration::from_millis(20);

/// The run's counters at one instant.
#[derive(Clone, Debug, Default)]
struct Counters {
    failovers: u64,
    errors: BTreeMap<String, u64>,
}

impl Counters {
    fn now(shared: &Shared) -> Self {
        Self {
            failovers: shared.failovers.load(Relaxed),
            errors: shared.errors.lock().clone(),
        }
    }
}

/// A fault being carried out.
#[derive(Debug)]
struct Live {
    fault: Fault,
    started: Option<Instant>,
    at_start: Counters,
    /// When the effect ended (set by the heal, resume or restart).
    ended: Option<Instant>,
    /// Where convergence counts from.
    reference: Option<Instant>,
    peak: Check,
    last_check: Check,
    converged: Option<Instant>,
    gave_up: Option<Instant>,
    window_end: Option<(Instant, Counters)>,
    failed: Option<String>,
    /// The nodes a join started or a leave stopped (0-based).
    nodes: Vec<usize>,
}

impl Live {
    fn settled(&self) -> bool {
        self.converged.is_some() || self.gave_up.is_some()
    }
}

/// What [`run_schedule`] found, with instants (turned into seconds on the timeline's axis
/// by [`Outcome::summaries`]).
#[derive(Debug, Default)]
pub struct Outcome {
    faults: Vec<Live>,
    hold_start: Option<Instant>,
}

/// A planned step: apply fault `f`'s start (`true`) or end (`false`).
#[derive(Clone, Copy, Debug)]
struct Step {
    at: Duration,
    fault: usize,
    start: bool,
}

/// What the schedule runs with.
pub struct Chaos<'a> {
    /// The embedded cluster.
    pub cluster: &'a LocalCluster,
    /// The schedule (checked).
    pub schedule: &'a Schedule,
    /// The run's shared state.
    pub shared: Arc<Shared>,
    /// The clients.
    pub population: Arc<Population>,
    /// How long to wait for a fault's convergence.
    pub converge_timeout: Duration,
}

/// Applies `chaos.schedule` from the start of the hold phase (read from `phase`) and
/// measures each fault; returns when every fault is settled (converged or timed out) after
/// the run stopped, or right away if the run stops before the hold phase.
pub async fn run_schedule(chaos: Chaos<'_>, mut phase: watch::Receiver<Phase>) -> Outcome {
    let mut out = Outcome {
        faults: chaos
            .schedule
            .faults
            .iter()
            .map(|f| Live {
                fault: f.clone(),
                started: None,
                at_start: Counters::default(),
                ended: None,
                reference: None,
                peak: Check::default(),
                last_check: Check::default(),
                converged: None,
                gave_up: None,
                window_end: None,
                failed: None,
                nodes: Vec::new(),
            })
            .collect(),
        hold_start: None,
    };
    let hold = loop {
        let ph = *phase.borrow_and_update();
        match ph {
            Phase::Hold(at) => break at,
            Phase::Stop => {
                for f in &mut out.faults {
                    f.failed = Some("the run stopped before the hold phase".into());
                }
                return out;
            }
            Phase::Register => {
                if phase.changed().await.is_err() {
                    return out;
                }
            }
        }
    };
    out.hold_start = Some(hold);
    let mut steps = plan(chaos.schedule);
    steps.reverse(); // popped from the end
    let mut census = Census::new(&chaos.population, &chaos.shared);
    let mut last_check = Instant::now() - CHECK_EVERY;
    let mut stopped: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopped.is_none() && *phase.borrow_and_update() == Phase::Stop {
            stopped = Some(now);
        }
        // Due steps. After a stop, faults not begun are not applied, and those in force
        // end now (heal, thaw), so that the final convergence can happen.
        while let Some(s) = steps.last().copied() {
            if stopped.is_none() && hold + s.at > now {
                break;
            }
            steps.pop();
            let f = &mut out.faults[s.fault];
            if stopped.is_some() && s.start {
                if f.started.is_none() {
                    f.failed = Some("the run stopped first".into());
                    continue;
                }
            } else if f.failed.is_some() {
                continue;
            }
            apply(&chaos, &mut out.faults, s).await;
        }
        // Kills never restarted end with the run.
        if let Some(stop) = stopped {
            for f in &mut out.faults {
                if f.started.is_some() && f.ended.is_none() {
                    f.ended = Some(stop);
                }
            }
        }
        // Convergence checks (the census keeps snapshots of the client states meanwhile).
        census.snapshot(&chaos.shared);
        let now = Instant::now();
        let waiting = out
            .faults
            .iter()
            .any(|f| f.failed.is_none() && !f.settled() && f.reference.is_some_and(|r| r <= now));
        if waiting && now.duration_since(last_check) >= CHECK_EVERY {
            last_check = now;
            let check = census.check(chaos.cluster, &chaos.shared);
            let done = Instant::now();
            for f in &mut out.faults {
                let Some(r) = f.reference else { continue };
                if f.failed.is_some() || f.settled() || r > now {
                    continue;
                }
                f.last_check = check;
                f.peak.lost = f.peak.lost.max(check.lost);
                f.peak.returned = f.peak.returned.max(check.returned);
                if check.converged() {
                    f.converged = Some(done);
                } else if done.duration_since(r) >= chaos.converge_timeout {
                    f.gave_up = Some(done);
                }
            }
        }
        // Windows: closed at the later of the end and the convergence.
        let now = Instant::now();
        for f in &mut out.faults {
            if f.window_end.is_some() || f.failed.is_some() {
                continue;
            }
            if let (Some(end), Some(settled)) = (f.ended, f.converged.or(f.gave_up))
                && now >= end
            {
                f.window_end = Some((end.max(settled), Counters::now(&chaos.shared)));
            }
        }
        let open = out
            .faults
            .iter()
            .any(|f| f.failed.is_none() && f.window_end.is_none());
        if !open && steps.is_empty() {
            break;
        }
        let next_step = steps.last().map(|s| hold + s.at);
        let wake = next_step
            .map_or(now + CHECK_EVERY, |t| t.min(now + CHECK_EVERY))
            .max(now + Duration::from_millis(5));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            r = phase.changed(), if stopped.is_none() => {
                if r.is_err() {
                    stopped = Some(Instant::now());
                }
            }
        }
    }
    out
}

/// The steps of `schedule` in time order; at one instant, ends before starts (a fault
/// that ends as the next begins on the same node).
fn plan(schedule: &Schedule) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, f) in schedule.faults.iter().enumerate() {
        steps.push(Step {
            at: f.at,
            fault: i,
            start: true,
        });
        if let Some(u) = f.until {
            steps.push(Step {
                at: u,
                fault: i,
                start: false,
            });
        }
    }
    steps.sort_by_key(|s| (s.at, s.start));
    steps
}

fn mark(shared: &Shared, at: Instant, label: &str) {
    if let Some(r) = shared.meter.get() {
        r.mark_at(at, label);
    }
}

async fn apply(chaos: &Chaos<'_>, faults: &mut [Live], step: Step) {
    let f = &faults[step.fault].fault;
    let i = f.index();
    let node = f.node;
    let cluster = chaos.cluster;
    let started = Instant::now();
    let counters = Counters::now(&chaos.shared);
    let mut changed = Vec::new();
    let result: Result<(), String> = match (f.action, step.start) {
        (Action::Join, _) => join(chaos, f.node, &mut changed).await,
        (Action::Leave, _) => leave(chaos, f.node, &mut changed).await,
        (Action::Kill, _) => {
            cluster.kill(i);
            mark(&chaos.shared, started, &format!("kill node {node}"));
            Ok(())
        }
        (Action::Restart, _) => {
            mark(&chaos.shared, started, &format!("restart node {node}"));
            cluster
                .restart(i)
                .await
                .map_err(|e| format!("restart failed: {e:#}"))
        }
        (Action::Partition, true) => {
            cluster.partition(i);
            mark(&chaos.shared, started, &format!("partition node {node}"));
            Ok(())
        }
        (Action::Partition, false) => {
            cluster.heal(i);
            mark(&chaos.shared, started, &format!("heal node {node}"));
            Ok(())
        }
        (Action::Pause, true) => {
            mark(&chaos.shared, started, &format!("pause node {node}"));
            cluster
                .freeze(i, FREEZE_WITHIN)
                .await
                .map_err(|e| format!("freeze failed: {e:#}"))
        }
        (Action::Pause, false) => {
            cluster.thaw(i);
            mark(&chaos.shared, started, &format!("resume node {node}"));
            Ok(())
        }
    };
    let action = f.action;
    let live = &mut faults[step.fault];
    live.nodes = changed;
    if let Err(e) = result {
        eprintln!("loadgen: --chaos {}: {e}", live.fault.entry);
        live.failed = Some(e);
        return;
    }
    if step.start {
        live.started = Some(started);
        live.at_start = counters;
    }
    match (action, step.start) {
        (Action::Kill, _) => live.reference = Some(started),
        (Action::Join | Action::Leave, _) => {
            let done = Instant::now();
            live.ended = Some(done);
            live.reference = Some(done);
        }
        (Action::Restart, _) => {
            live.ended = Some(started);
            live.reference = Some(started);
            // The kill it ends ends here.
            let node = live.fault.node;
            if let Some(k) = faults[..step.fault].iter_mut().rev().find(|k| {
                k.fault.node == node && k.fault.action == Action::Kill && k.ended.is_none()
            }) {
                k.ended = Some(started);
            }
        }
        (_, true) => {}
        (_, false) => {
            live.ended = Some(started);
            live.reference = Some(started);
        }
    }
}

/// Node numbers (1-based) for messages and marks, e.g. `4, 5`.
fn numbers(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|i| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `join:N`: the N lowest-numbered nodes that are neither members nor running join: the
/// members file names them, then they start (each loads a snapshot from a member).
async fn join(chaos: &Chaos<'_>, n: usize, changed: &mut Vec<usize>) -> Result<(), String> {
    let cluster = chaos.cluster;
    let mut members = cluster.member_nodes();
    let new: Vec<usize> = (0..cluster.len())
        .filter(|i| !members.contains(i) && !cluster.is_running(*i))
        .take(n)
        .collect();
    if new.len() < n {
        return Err(format!(
            "only {} of the cluster's {} nodes are free to join",
            new.len(),
            cluster.len()
        ));
    }
    members.extend(&new);
    members.sort_unstable();
    rewrite_members(chaos, &members, "join", &new, changed)?;
    for &i in &new {
        cluster
            .restart(i)
            .await
            .map_err(|e| format!("node {} did not start: {e:#}", i + 1))?;
    }
    Ok(())
}

/// Writes `members` as the cluster's members file and marks the timeline with `what`
/// (join, leave) and the nodes it moves, which are added to `changed`.
fn rewrite_members(
    chaos: &Chaos<'_>,
    members: &[usize],
    what: &str,
    moved: &[usize],
    changed: &mut Vec<usize>,
) -> Result<(), String> {
    chaos
        .cluster
        .write_members(members)
        .map_err(|e| format!("cannot rewrite the members file: {e:#}"))?;
    mark(
        &chaos.shared,
        Instant::now(),
        &format!("{what} node{} {}", plural(moved.len()), numbers(moved)),
    );
    changed.extend(moved);
    Ok(())
}

/// `leave:N`: the N highest-numbered members leave: the members file no longer names
/// them; once each has read it (it owns nothing then), has no client left to hand over and
/// no sync pending to a member, and the members that stay have read it too, it stops
/// (gracefully). Waits at most the convergence
/// timeout for the handover, then stops them anyway and says so.
async fn leave(chaos: &Chaos<'_>, n: usize, changed: &mut Vec<usize>) -> Result<(), String> {
    let cluster = chaos.cluster;
    let mut members = cluster.member_nodes();
    if members.len() <= n {
        return Err(format!(
            "the cluster has {} members: {n} cannot leave",
            members.len()
        ));
    }
    let gone = members.split_off(members.len() - n);
    rewrite_members(chaos, &members, "leave", &gone, changed)?;
    let deadline = Instant::now() + chaos.converge_timeout;
    let handed_over = |i: usize| {
        cluster.node(i).is_none_or(|node| {
            let list = node.members();
            list.is_leaving()
                && node.owned_clients() == 0
                && list.peers().all(|p| node.pending_sync(p) == 0)
        })
    };
    // The members that stay have read the new list too (they route nothing to the
    // leavers any more).
    let read = || {
        members.iter().all(|&m| {
            cluster
                .node(m)
                .is_none_or(|node| node.members().len() == members.len())
        })
    };
    let mut late = None;
    while !(read() && gone.iter().all(|&i| handed_over(i))) {
        if Instant::now() >= deadline {
            let waiting: Vec<usize> = gone.iter().copied().filter(|&i| !handed_over(i)).collect();
            late = Some(format!(
                "node{} {} had not handed over within {:?}; stopped anyway",
                plural(waiting.len()),
                numbers(&waiting),
                chaos.converge_timeout
            ));
            break;
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
    // Like a load balancer taking a drained node out: its clients go elsewhere, then it
    // stops.
    for &i in &gone {
        chaos.shared.leave(i);
    }
    for &i in &gone {
        cluster.stop(i).await;
    }
    mark(
        &chaos.shared,
        Instant::now(),
        &format!("node{} {} stopped", plural(n), numbers(&gone)),
    );
    late.map_or(Ok(()), Err)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl Outcome {
    /// The figures of every fault, with times in seconds since `origin` (the start of the
    /// measured run).
    pub fn summaries(&self, origin: Instant) -> Vec<FaultSummary> {
        let secs = |t: Instant| -> f64 {
            let s = if t >= origin {
                t.duration_since(origin).as_secs_f64()
            } else {
                -origin.duration_since(t).as_secs_f64()
            };
            (s * 1000.0).round() / 1000.0
        };
        self.faults
            .iter()
            .map(|f| {
                let start = f.started.or(self.hold_start.map(|h| h + f.fault.at));
                let start_s = start.map_or(0.0, secs);
                let end_s = f.ended.map_or(start_s, secs);
                let from_s = f.reference.map_or(end_s, secs);
                let (window_end_s, errors_by_code, failovers) = match &f.window_end {
                    Some((t, c)) => {
                        let mut codes = BTreeMap::new();
                        for (code, n) in &c.errors {
                            let d = n - f.at_start.errors.get(code).copied().unwrap_or(0);
                            if d > 0 {
                                codes.insert(code.clone(), d);
                            }
                        }
                        (secs(*t), codes, c.failovers - f.at_start.failovers)
                    }
                    None => (end_s, BTreeMap::new(), 0),
                };
                FaultSummary {
                    entry: f.fault.entry.clone(),
                    action: f.fault.action.name().to_owned(),
                    node: f.fault.node,
                    nodes: f.nodes.iter().map(|i| i + 1).collect(),
                    scheduled_s: f.fault.at.as_secs_f64(),
                    start_s,
                    end_s,
                    recovery_from_s: from_s,
                    recovered: f.converged.is_some() && f.failed.is_none(),
                    recovery_ms: match (f.converged, f.reference) {
                        (Some(c), Some(r)) => {
                            Some((c.duration_since(r).as_secs_f64() * 1e4).round() / 10.0)
                        }
                        _ => None,
                    },
                    window_end_s,
                    errors: errors_by_code.values().sum(),
                    errors_by_code,
                    failovers,
                    lost: f.last_check.lost,
                    returned: f.last_check.returned,
                    peak_missing: f.peak.lost,
                    peak_returned: f.peak.returned,
                    failed: f.failed.clone(),
                }
            })
            .collect()
    }
}
