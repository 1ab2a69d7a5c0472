//! The checker: what the history of acknowledged writes says every node must hold, what
//! each node holds, and what differs.

use super::load::{Key, Op, Outcome, SERVICES, Write, key};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

/// What the history implies.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    /// Clients whose last acknowledged write is a registration and that still heartbeat.
    pub(crate) present: BTreeSet<Key>,
    /// Clients whose last acknowledged write is a deregistration.
    pub(crate) absent: BTreeSet<Key>,
    /// Clients with a write of the other kind that no node acknowledged (a timeout: it may
    /// be applied late), or with no acknowledged write: either state is correct.
    pub(crate) indeterminate: BTreeSet<Key>,
}

/// Derives the expected state from the histories (index = client).
pub(crate) fn expected(histories: &[Vec<Op>]) -> Expected {
    let mut e = Expected::default();
    for (i, ops) in histories.iter().enumerate() {
        let k = key(i);
        let last = ops.iter().rev().find(|o| o.outcome == Outcome::Acked);
        match last {
            None => {
                e.indeterminate.insert(k);
            }
            Some(l) => {
                let doubtful = ops
                    .iter()
                    .any(|o| o.outcome == Outcome::Unknown && o.write != l.write);
                if doubtful {
                    e.indeterminate.insert(k);
                } else if l.write == Write::Register {
                    e.present.insert(k);
                } else {
                    e.absent.insert(k);
                }
            }
        }
    }
    e
}

/// Every instance a node lists in the clients' services, or `None` if it does not answer.
pub(crate) async fn node_state(http: &reqwest::Client, url: &str) -> Option<BTreeSet<Key>> {
    let mut out = BTreeSet::new();
    for service in SERVICES {
        let r = http
            .get(format!(
                "{url}/nacos/v1/ns/instance/list?serviceName={service}"
            ))
            .send()
            .await
            .ok()?;
        if r.status().as_u16() != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
        for h in v["hosts"].as_array()? {
            out.insert(Key {
                service,
                ip: h["ip"].as_str()?.to_string(),
                port: h["port"].as_u64()? as u16,
            });
        }
    }
    Some(out)
}

/// How one node differs from the expected state.
#[derive(Debug, Default, Clone)]
pub(crate) struct Diff {
    /// Acknowledged registrations of live clients the node lacks.
    pub(crate) lost: Vec<Key>,
    /// Acknowledged deletions the node still (or again) lists.
    pub(crate) returned: Vec<Key>,
    /// Instances nobody registered.
    pub(crate) unknown: Vec<Key>,
    /// The node did not answer.
    pub(crate) unreachable: bool,
}

impl Diff {
    /// Whether the node matches.
    pub(crate) fn is_clean(&self) -> bool {
        !self.unreachable
            && self.lost.is_empty()
            && self.returned.is_empty()
            && self.unknown.is_empty()
    }
}

/// Compares a node's state with the expectation.
pub(crate) fn diff(e: &Expected, state: Option<&BTreeSet<Key>>) -> Diff {
    let Some(s) = state else {
        return Diff {
            unreachable: true,
            ..Diff::default()
        };
    };
    Diff {
        lost: e
            .present
            .iter()
            .filter(|k| !s.contains(*k))
            .cloned()
            .collect(),
        returned: e
            .absent
            .iter()
            .filter(|k| s.contains(*k))
            .cloned()
            .collect(),
        unknown: s
            .iter()
            .filter(|k| {
                !e.present.contains(*k) && !e.absent.contains(*k) && !e.indeterminate.contains(*k)
            })
            .cloned()
            .collect(),
        unreachable: false,
    }
}

fn sample(keys: &[Key]) -> String {
    let mut s: Vec<String> = keys.iter().take(5).map(ToString::to_string).collect();
    if keys.len() > 5 {
        s.push(format!("... {} more", keys.len() - 5));
    }
    s.join(", ")
}

/// A readable report of every node's differences (empty when all match).
pub(crate) fn describe(diffs: &[(String, Diff)]) -> String {
    let mut out = String::new();
    for (node, d) in diffs {
        if d.is_clean() {
            continue;
        }
        if d.unreachable {
            let _ = writeln!(out, "{node}: does not answer");
            continue;
        }
        if !d.lost.is_empty() {
            let _ = writeln!(
                out,
                "{node}: lacks {} live registrations: {}",
                d.lost.len(),
                sample(&d.lost)
            );
        }
        if !d.returned.is_empty() {
            let _ = writeln!(
                out,
                "{node}: lists {} deleted clients: {}",
                d.returned.len(),
                sample(&d.returned)
            );
        }
        if !d.unknown.is_empty() {
            let _ = writeln!(
                out,
                "{node}: lists {} instances nobody registered: {}",
                d.unknown.len(),
                sample(&d.unknown)
            );
        }
    }
    out
}

/// Compares every node in `urls` (named by `names`) with the histories.
pub(crate) async fn check_all(
    http: &reqwest::Client,
    urls: &[String],
    histories: &[Vec<Op>],
) -> (Expected, Vec<(String, Diff)>) {
    let e = expected(histories);
    let mut diffs = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        // A node busy on a loaded machine may be slow: ask three times before calling
        // it unreachable.
        let mut s = None;
        for _ in 0..3 {
            s = node_state(http, url).await;
            if s.is_some() {
                break;
            }
        }
        diffs.push((format!("node{}", i + 1), diff(&e, s.as_ref())));
    }
    (e, diffs)
}

/// A client for reading state.
pub(crate) fn reader() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client")
}
