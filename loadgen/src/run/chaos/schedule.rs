//! The `--chaos` schedule: its syntax and its checks.
//!
//! A schedule is a comma-separated list of entries `kill:N@T`, `restart:N@T`,
//! `partition:N@T1-T2` and `pause:N@T1-T2`, where `N` is a node number from 1 (the first
//! node of the embedded cluster) to `--nodes`, and the membership changes `join:N@T` and
//! `leave:N@T`, where `N` is a number of nodes (start N new nodes and add them to the
//! member list; take the N highest-numbered members out of it, let them hand over, stop
//! them). Times are durations (`500ms`, `20s`, `1m`) from the start of the hold phase
//! (every client registered). [`Schedule::parse`] checks the syntax; [`Schedule::check`]
//! checks the schedule against the run: nodes in range, every fault inside the hold phase,
//! a restart only of a killed node, no two faults of one node at once, at least one node
//! running and one member at any time, at most [`MAX_NODES`] nodes in all, and membership
//! changes not mixed with node faults (a leave picks its nodes by number, which a kill or
//! a partition of the same node would contradict).

use std::fmt;
use std::time::Duration;

use crate::parse::parse_duration;

/// What a fault does to its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Stop the node at once, as `kill -9` would (nothing flushed).
    Kill,
    /// Start a killed node again with an empty state (it loads a snapshot from a peer).
    Restart,
    /// Cut the node's peer traffic both ways; its clients still reach it.
    Partition,
    /// Freeze the node, as `kill -STOP` then `kill -CONT` would.
    Pause,
    /// Start N new nodes and add them to every node's member list.
    Join,
    /// Take N members out of the list, let them hand over, then stop them.
    Leave,
}

/// The most nodes a run may have, those that join included (as `--nodes`).
pub const MAX_NODES: usize = 32;

impl Action {
    /// Its name in a schedule.
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Partition => "partition",
            Action::Pause => "pause",
            Action::Join => "join",
            Action::Leave => "leave",
        }
    }

    /// Whether it changes the member list (its `N` is a number of nodes, not a node).
    pub fn changes_members(self) -> bool {
        matches!(self, Action::Join | Action::Leave)
    }

    /// Whether the entry takes a window `T1-T2` (otherwise an instant `T`).
    pub fn has_window(self) -> bool {
        matches!(self, Action::Partition | Action::Pause)
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Action::Kill,
            Action::Restart,
            Action::Partition,
            Action::Pause,
            Action::Join,
            Action::Leave,
        ]
        .into_iter()
        .find(|a| a.name() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The entry as written (trimmed), for messages and reports.
    pub entry: String,
    /// What happens.
    pub action: Action,
    /// The node, 1-based as written (for join and leave: the number of nodes).
    pub node: usize,
    /// When it happens, from the start of the hold phase.
    pub at: Duration,
    /// When a window fault ends (partition healed, pause resumed).
    pub until: Option<Duration>,
}

impl Fault {
    /// The node's index in the cluster (0-based).
    pub fn index(&self) -> usize {
        self.node.saturating_sub(1)
    }

    /// A label for charts and tables, e.g. `pause node 3`, `join 2 nodes`.
    pub fn label(&self) -> String {
        if self.action.changes_members() {
            let s = if self.node == 1 { "" } else { "s" };
            format!("{} {} node{s}", self.action, self.node)
        } else {
            format!("{} node {}", self.action, self.node)
        }
    }
}

/// A parsed `--chaos` schedule, in time order (entries at the same time keep their order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The faults.
    pub faults: Vec<Fault>,
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

impl Schedule {
    /// Parses a schedule (syntax only: see [`Self::check`]). Errors name the entry.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut faults = Vec::new();
        for (n, raw) in s.split(',').enumerate() {
            let entry = raw.trim();
            let at = |reason: String| format!("--chaos: entry {} {entry:?}: {reason}", n + 1);
            if entry.is_empty() {
                return Err(at("empty entry (a stray comma?)".into()));
            }
            let (action, rest) = entry.split_once(':').ok_or_else(|| {
                at("expected ACTION:NODE@TIME, e.g. kill:2@20s or partition:1@60s-90s".into())
            })?;
            let action = Action::parse(action.trim()).ok_or_else(|| {
                at(format!(
                    "unknown action {:?} (kill, restart, partition, pause, join or leave)",
                    action.trim()
                ))
            })?;
            let (node, when) = rest
                .split_once('@')
                .ok_or_else(|| at("missing @TIME after the node number".into()))?;
            let what = if action.changes_members() {
                "a number of nodes"
            } else {
                "a node number"
            };
            let node: usize = node
                .trim()
                .parse()
                .map_err(|_| at(format!("{:?} is not {what} (1, 2, ...)", node.trim())))?;
            if node == 0 {
                return Err(at(if action.changes_members() {
                    format!("{action} takes a number of nodes from 1")
                } else {
                    "node numbers start at 1".into()
                }));
            }
            let (start, until) = match (action.has_window(), when.split_once('-')) {
                (true, Some((a, b))) => {
                    let a = parse_duration(a).map_err(&at)?;
                    let b = parse_duration(b).map_err(&at)?;
                    if b <= a {
                        return Err(at(format!(
                            "ends ({}) before it starts ({})",
                            secs(b),
                            secs(a)
                        )));
                    }
                    (a, Some(b))
                }
                (true, None) => {
                    return Err(at(format!(
                        "{action} takes a window START-END, e.g. {action}:{node}@60s-90s"
                    )));
                }
                (false, Some(_)) => {
                    return Err(at(format!(
                        "{action} takes one time, not a window, e.g. {action}:{node}@20s"
                    )));
                }
                (false, None) => (parse_duration(when).map_err(&at)?, None),
            };
            faults.push(Fault {
                entry: entry.to_owned(),
                action,
                node,
                at: start,
                until,
            });
        }
        faults.sort_by_key(|f| f.at);
        Ok(Self { faults })
    }

    /// Checks the schedule against a run of `nodes` nodes holding for `hold`: every node
    /// in `1..=nodes`, every fault starting before and ending by the end of the hold, a
    /// restart only of a node killed before, a kill only of a running node, no two faults
    /// of one node overlapping (a killed node is under its kill until its restart), and
    /// never every node down at once. Membership changes: not mixed with node faults, at
    /// least one member left by every leave, at most [`MAX_NODES`] nodes in all.
    pub fn check(&self, nodes: usize, hold: Duration) -> Result<(), String> {
        let err = |f: &Fault, reason: String| format!("--chaos: entry {:?}: {reason}", f.entry);
        let (changes, node_faults): (Vec<&Fault>, Vec<&Fault>) =
            self.faults.iter().partition(|f| f.action.changes_members());
        if let (Some(c), Some(f)) = (changes.first(), node_faults.first()) {
            return Err(err(
                c,
                format!(
                    "join and leave cannot be mixed with {} in one schedule (a leave picks its \
                     nodes by number)",
                    f.action
                ),
            ));
        }
        let mut members = nodes;
        for f in &changes {
            if f.at >= hold {
                return Err(err(
                    f,
                    format!(
                        "starts at {}, not before the end of the hold phase (--duration {})",
                        secs(f.at),
                        secs(hold)
                    ),
                ));
            }
            if f.action == Action::Leave {
                if f.node >= members {
                    return Err(err(
                        f,
                        format!(
                            "leaves no member: the cluster has {members} then (--nodes and \
                             the joins before)"
                        ),
                    ));
                }
                members -= f.node;
            } else {
                members += f.node;
            }
        }
        let total = nodes + self.joined();
        if let Some(last_join) = changes.iter().rev().find(|f| f.action == Action::Join)
            && total > MAX_NODES
        {
            return Err(err(
                last_join,
                format!("{total} nodes in all (--nodes and every join): at most {MAX_NODES}"),
            ));
        }
        // The window each fault keeps its node busy: a kill until its restart (or the end).
        let mut busy: Vec<(usize, Duration, Duration, &Fault)> = Vec::new();
        let mut killed: Vec<Option<usize>> = vec![None; nodes];
        for f in node_faults {
            if f.node > nodes {
                return Err(err(
                    f,
                    format!(
                        "node {} is out of range: the cluster has nodes 1 to {nodes} (--nodes)",
                        f.node
                    ),
                ));
            }
            if f.at >= hold {
                return Err(err(
                    f,
                    format!(
                        "starts at {}, not before the end of the hold phase (--duration {})",
                        secs(f.at),
                        secs(hold)
                    ),
                ));
            }
            if let Some(u) = f.until
                && u > hold
            {
                return Err(err(
                    f,
                    format!(
                        "ends at {}, after the end of the hold phase (--duration {})",
                        secs(u),
                        secs(hold)
                    ),
                ));
            }
            let i = f.index();
            match f.action {
                Action::Kill => {
                    if killed[i].is_some() {
                        return Err(err(f, format!("node {} is already killed", f.node)));
                    }
                    killed[i] = Some(busy.len());
                    busy.push((i, f.at, hold, f));
                }
                Action::Restart => {
                    let Some(k) = killed[i].take() else {
                        return Err(err(
                            f,
                            format!("restart of node {}, which no earlier entry kills", f.node),
                        ));
                    };
                    if busy[k].1 == f.at {
                        return Err(err(
                            f,
                            format!("restart of node {} at the instant it is killed", f.node),
                        ));
                    }
                    busy[k].2 = f.at;
                }
                Action::Partition | Action::Pause => {
                    busy.push((i, f.at, f.until.unwrap_or(hold), f));
                }
                Action::Join | Action::Leave => {}
            }
        }
        for (a, x) in busy.iter().enumerate() {
            for y in &busy[a + 1..] {
                if x.0 == y.0 && x.1 < y.2 && y.1 < x.2 {
                    let (first, second) = if x.1 <= y.1 { (x, y) } else { (y, x) };
                    return Err(err(
                        second.3,
                        format!(
                            "overlaps {:?} on node {} (one fault per node at a time)",
                            first.3.entry, second.3.node
                        ),
                    ));
                }
            }
        }
        // Never every node down: count the kills in force at each kill.
        for x in busy.iter().filter(|b| b.3.action == Action::Kill) {
            let down = busy
                .iter()
                .filter(|y| y.3.action == Action::Kill && y.1 <= x.1 && x.1 < y.2)
                .count();
            if down >= nodes {
                return Err(err(x.3, "leaves no node running".into()));
            }
        }
        Ok(())
    }

    /// How many nodes the joins start in all (the cluster reserves their ports).
    pub fn joined(&self) -> usize {
        self.faults
            .iter()
            .filter(|f| f.action == Action::Join)
            .map(|f| f.node)
            .sum()
    }

    /// Whether the schedule changes the member list (the nodes then read it from a file).
    pub fn changes_members(&self) -> bool {
        self.faults.iter().any(|f| f.action.changes_members())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn checked(text: &str, nodes: usize, hold: u64) -> Result<Schedule, String> {
        let sch = Schedule::parse(text)?;
        sch.check(nodes, s(hold))?;
        Ok(sch)
    }

    #[test]
    fn parses_the_example_in_time_order() {
        let sch = checked(
            "pause:3@100s-105s, kill:2@20s,restart:2@40s,partition:1@1m-90s",
            3,
            120,
        )
        .expect("valid");
        let got: Vec<(Action, usize, Duration, Option<Duration>)> = sch
            .faults
            .iter()
            .map(|f| (f.action, f.node, f.at, f.until))
            .collect();
        assert_eq!(
            got,
            vec![
                (Action::Kill, 2, s(20), None),
                (Action::Restart, 2, s(40), None),
                (Action::Partition, 1, s(60), Some(s(90))),
                (Action::Pause, 3, s(100), Some(s(105))),
            ]
        );
        assert_eq!(sch.faults[3].entry, "pause:3@100s-105s");
        assert_eq!(sch.faults[3].index(), 2);
        assert_eq!(sch.faults[0].label(), "kill node 2");
        let ms = Schedule::parse("pause:1@500ms-1500ms").expect("ms");
        assert_eq!(ms.faults[0].until, Some(Duration::from_millis(1500)));
    }

    /// Each bad schedule fails, and its message names the entry and the reason.
    #[test]
    fn rejects_bad_schedules_with_the_entry_and_the_reason() {
        let cases = [
            ("kill:2@20s,", "\"\"", "empty entry"),
            ("stop:2@20s", "stop:2@20s", "unknown action \"stop\""),
            ("kill 2@20s", "kill 2@20s", "expected ACTION:NODE@TIME"),
            ("kill:2", "kill:2", "missing @TIME"),
            ("kill:x@2s", "kill:x@2s", "\"x\" is not a node number"),
            ("kill:0@2s", "kill:0@2s", "node numbers start at 1"),
            ("kill:4@2s", "kill:4@2s", "node 4 is out of range"),
            ("kill:1@2q", "kill:1@2q", "unknown unit"),
            (
                "partition:1@60s-50s",
                "partition:1@60s-50s",
                "ends (50s) before it starts (60s)",
            ),
            (
                "pause:1@5s-5s",
                "pause:1@5s-5s",
                "ends (5s) before it starts (5s)",
            ),
            ("pause:1@5s", "pause:1@5s", "takes a window"),
            ("kill:1@5s-6s", "kill:1@5s-6s", "takes one time"),
            (
                "restart:2@40s",
                "restart:2@40s",
                "which no earlier entry kills",
            ),
            (
                "restart:2@1s,kill:2@2s",
                "restart:2@1s",
                "which no earlier entry kills",
            ),
            ("kill:2@1s,kill:2@2s", "kill:2@2s", "already killed"),
            (
                "kill:2@1s,restart:2@1s",
                "restart:2@1s",
                "at the instant it is killed",
            ),
            (
                "partition:1@10s-20s,pause:1@15s-25s",
                "pause:1@15s-25s",
                "overlaps \"partition:1@10s-20s\" on node 1",
            ),
            (
                "kill:3@10s,restart:3@20s,pause:3@19s-22s",
                "pause:3@19s-22s",
                "overlaps \"kill:3@10s\" on node 3",
            ),
            (
                "kill:3@10s,partition:3@50s-55s",
                "partition:3@50s-55s",
                "overlaps",
            ),
            (
                "kill:1@1s,kill:2@2s,kill:3@3s",
                "kill:3@3s",
                "leaves no node running",
            ),
            (
                "kill:1@60s",
                "kill:1@60s",
                "not before the end of the hold phase",
            ),
            (
                "pause:1@50s-61s",
                "pause:1@50s-61s",
                "after the end of the hold phase",
            ),
        ];
        for (text, entry, reason) in cases {
            let e = checked(text, 3, 60).expect_err(text);
            assert!(e.starts_with("--chaos: entry"), "{text}: {e}");
            assert!(e.contains(entry), "{text}: {e} should name {entry}");
            assert!(e.contains(reason), "{text}: {e} should say {reason}");
        }
    }

    #[test]
    fn accepts_faults_that_only_touch_and_faults_on_other_nodes() {
        checked(
            "partition:1@10s-20s,pause:1@20s-25s,kill:2@10s,restart:2@20s,kill:2@30s,pause:3@10s-60s",
            3,
            60,
        )
        .expect("touching windows and separate nodes are fine");
        // A kill without a restart lasts to the end, and two nodes of three may be down.
        checked("kill:1@1s,kill:2@2s", 3, 60).expect("one node left");
    }

    #[test]
    fn parses_joins_and_leaves_as_numbers_of_nodes() {
        let sch = checked("leave:3@20s, join:2@5s", 3, 30).expect("valid");
        let got: Vec<(Action, usize, Duration)> = sch
            .faults
            .iter()
            .map(|f| (f.action, f.node, f.at))
            .collect();
        assert_eq!(
            got,
            vec![(Action::Join, 2, s(5)), (Action::Leave, 3, s(20))]
        );
        assert_eq!(sch.joined(), 2);
        assert!(sch.changes_members());
        assert_eq!(sch.faults[0].label(), "join 2 nodes");
        assert_eq!(
            Schedule::parse("leave:1@1s").expect("one").faults[0].label(),
            "leave 1 node"
        );
        assert!(
            !Schedule::parse("kill:1@1s")
                .expect("kill")
                .changes_members()
        );
        // Several joins and leaves, down to one member.
        checked("join:1@1s,join:1@2s,leave:4@3s,join:26@4s", 3, 10).expect("valid");
    }

    #[test]
    fn rejects_bad_membership_changes_with_the_entry_and_the_reason() {
        let cases = [
            (
                "join:0@2s",
                "join:0@2s",
                "join takes a number of nodes from 1",
            ),
            ("leave:x@2s", "leave:x@2s", "\"x\" is not a number of nodes"),
            ("join:1@5s-6s", "join:1@5s-6s", "takes one time"),
            (
                "leave:3@2s",
                "leave:3@2s",
                "leaves no member: the cluster has 3",
            ),
            (
                "join:1@1s,leave:2@2s,leave:2@3s",
                "leave:2@3s",
                "leaves no member: the cluster has 2",
            ),
            ("join:30@1s", "join:30@1s", "33 nodes in all"),
            (
                "join:1@60s",
                "join:1@60s",
                "not before the end of the hold phase",
            ),
            (
                "kill:1@1s,join:1@2s",
                "join:1@2s",
                "cannot be mixed with kill",
            ),
        ];
        for (text, entry, reason) in cases {
            let e = checked(text, 3, 60).expect_err(text);
            assert!(e.starts_with("--chaos: entry"), "{text}: {e}");
            assert!(e.contains(entry), "{text}: {e} should name {entry}");
            assert!(e.contains(reason), "{text}: {e} should say {reason}");
        }
    }
}
