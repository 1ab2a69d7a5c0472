//! Checks of the simulated cluster's state: what each node holds, whether the alive
//! nodes converged, and a readable account of how they differ when they did not.
//!
//! The property sweep (`core/tests/simulation.rs`) builds its assertions on these.

use super::SimCluster;
use crate::model::ClientId;
use std::collections::BTreeMap;

impl SimCluster {
    /// Every client `(id, revision)` held by node `i`, sorted.
    pub fn client_set(&self, i: usize) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        if let Some(n) = &self.nodes[i] {
            n.registry()
                .for_each(|c| v.push((c.id().as_str().to_string(), c.revision().0)));
        }
        v.sort();
        v
    }

    /// Whether every alive node finished loading and holds the same clients at the same
    /// revisions (compared through the sum of all owners' digests, then exactly).
    pub fn converged(&self) -> bool {
        let alive = self.alive();
        if alive
            .iter()
            .any(|&i| !self.nodes[i].as_ref().is_some_and(|n| n.is_loaded()))
        {
            return false;
        }
        let total = |i: usize| {
            let n = self.nodes[i].as_ref().expect("alive");
            let mut d = crate::digest::ShardDigest::default();
            // Every slot: replicas of a member that left count too.
            for m in 0..n.members().capacity() {
                for s in n
                    .registry()
                    .owner_digests(crate::member::MemberId(m as u16))
                {
                    d.add(s);
                }
            }
            d
        };
        let Some(&first) = alive.first() else {
            return true;
        };
        let t0 = total(first);
        if alive.iter().any(|&i| total(i) != t0) {
            return false;
        }
        let s0 = self.client_set(first);
        alive.iter().all(|&i| self.client_set(i) == s0)
    }

    /// A description of how the alive nodes differ (for failure messages).
    pub fn differences(&self) -> String {
        let alive = self.alive();
        let mut all: BTreeMap<String, Vec<Option<u64>>> = BTreeMap::new();
        for (k, &i) in alive.iter().enumerate() {
            for (id, rev) in self.client_set(i) {
                all.entry(id).or_insert_with(|| vec![None; alive.len()])[k] = Some(rev);
            }
        }
        let mut out = String::new();
        for (id, revs) in all {
            if revs.iter().any(|r| *r != revs[0]) {
                out.push_str(&format!("  {id}: "));
                for (k, r) in revs.iter().enumerate() {
                    let n = self.nodes[alive[k]].as_ref().expect("alive");
                    let owner = n.registry().get(&id).map(|c| c.owner().0);
                    let routed = ClientId::parse(&id)
                        .ok()
                        .and_then(|c| c.routing_key().map(|k| n.owner_of(k).0));
                    out.push_str(&format!(
                        "node{}={} (owner {owner:?}, routed {routed:?}, tombstone {:?}) ",
                        alive[k],
                        r.map_or("-".into(), |r| r.to_string()),
                        n.registry().tombstone(&id).map(|t| t.0)
                    ));
                }
                out.push('\n');
            }
        }
        for &i in &alive {
            let n = self.nodes[i].as_ref().expect("alive");
            out.push_str(&format!(
                "  node{i}: loaded={} isolated={} members={:?} pending={:?}\n",
                n.is_loaded(),
                self.isolated[i],
                n.member_states()
                    .iter()
                    .map(|(_, s)| s.as_str())
                    .collect::<Vec<_>>(),
                n.members()
                    .peers()
                    .map(|p| n.pending_sync(p))
                    .collect::<Vec<_>>()
            ));
        }
        out
    }
}
