//! Repeated failures of one node's watch stream, said once rather than once per retry.
//!
//! A watch stream to a killed or unreachable node fails again every 250 ms; printing each
//! failure buried the progress lines under one raw transport error. This keeps, per node,
//! the first error, when the outage began and how many attempts failed: the first failure
//! is printed, the end of the outage is printed with its count, and [`Outages::finish`]
//! prints the nodes still unreachable when the run stops. Nodes are numbered from 1, as in
//! `--chaos` and the *Faults* table; times are seconds since the start of the measured run
//! (the charts' axis), given by the caller.

use parking_lot::Mutex;

/// Per node, the outage in progress (if any).
#[derive(Debug)]
pub struct Outages {
    nodes: Mutex<Vec<Option<Outage>>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Outage {
    since_s: f64,
    attempts: u64,
    first_error: String,
}

impl Outages {
    /// For `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes: Mutex::new(vec![None; nodes]),
        }
    }

    /// A failed attempt on node `node` (0-based index) at `now_s`: the message to print,
    /// if this failure began an outage.
    pub fn failed(&self, node: usize, error: &str, now_s: f64) -> Option<String> {
        let mut nodes = self.nodes.lock();
        let slot = nodes.get_mut(node)?;
        match slot {
            Some(o) => {
                o.attempts += 1;
                None
            }
            None => {
                let error = short(error);
                let line = format!(
                    "node {} unreachable at {now_s:.1} s: {error} (retrying; repeats are counted)",
                    node + 1
                );
                *slot = Some(Outage {
                    since_s: now_s,
                    attempts: 1,
                    first_error: error,
                });
                Some(line)
            }
        }
    }

    /// A successful attempt on node `node` at `now_s`: the message to print, if it ended
    /// an outage.
    pub fn reached(&self, node: usize, now_s: f64) -> Option<String> {
        let o = self.nodes.lock().get_mut(node)?.take()?;
        Some(format!(
            "node {} reachable again at {now_s:.1} s (unreachable since {:.1} s, {} failed attempts)",
            node + 1,
            o.since_s,
            o.attempts
        ))
    }

    /// One line per node still unreachable: `node 2 unreachable since 10.2 s, 59 times
    /// (first error: ...)`.
    pub fn finish(&self) -> Vec<String> {
        self.nodes
            .lock()
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                o.as_ref().map(|o| {
                    format!(
                        "node {} unreachable since {:.1} s, {} times (first error: {})",
                        i + 1,
                        o.since_s,
                        o.attempts,
                        o.first_error
                    )
                })
            })
            .collect()
    }
}

/// A transport error in a few words: a refused connection says so; anything else is cut
/// to 100 characters (a tonic error nests the same cause three times).
fn short(error: &str) -> String {
    if error.contains("Connection refused") || error.contains("ConnectionRefused") {
        return "connection refused".to_owned();
    }
    match error.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &error[..i]),
        None => error.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_said_once_and_counted_with_nodes_from_1() {
        let o = Outages::new(3);
        let first = o
            .failed(1, "tcp connect error", 10.2)
            .expect("the first is said");
        assert_eq!(
            first,
            "node 2 unreachable at 10.2 s: tcp connect error (retrying; repeats are counted)"
        );
        for i in 0..58 {
            assert_eq!(o.failed(1, "tcp connect error", 10.5 + f64::from(i)), None);
        }
        assert_eq!(
            o.finish(),
            vec!["node 2 unreachable since 10.2 s, 59 times (first error: tcp connect error)"]
        );
        assert_eq!(
            o.reached(1, 70.0).as_deref(),
            Some("node 2 reachable again at 70.0 s (unreachable since 10.2 s, 59 failed attempts)")
        );
        assert_eq!(o.reached(1, 71.0), None);
        assert!(o.finish().is_empty());
        assert_eq!(o.failed(7, "out of range", 1.0), None);
        let tonic = "watch on node 1: code: 'The service is currently unavailable', message: \
            \"tcp connect error\", source: tonic::transport::Error(Transport, ConnectError(\
            ConnectError(\"tcp connect error\", 127.0.0.1:43043, Os { code: 111, kind: \
            ConnectionRefused, message: \"Connection refused\" })))";
        assert_eq!(
            o.failed(0, tonic, 2.0).as_deref(),
            Some("node 1 unreachable at 2.0 s: connection refused (retrying; repeats are counted)")
        );
        assert!(short(&"x".repeat(300)).len() < 110);
    }
}
