//! Per-second timeline of a scenario (client counters and every node's instance count)
//! and its markdown report.

use super::load::Load;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Per-second samples: (second, instance count of each node; `None`: no answer).
pub(crate) type Rows = Vec<(u64, Vec<Option<u64>>)>;

/// Samples every node's `/health` instance count once a second.
pub(crate) struct Monitor {
    rows: Arc<Mutex<Rows>>,
    task: JoinHandle<()>,
}

async fn instances(http: &reqwest::Client, url: &str) -> Option<u64> {
    let r = http.get(format!("{url}/health")).send().await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
    v["instances"].as_u64()
}

impl Monitor {
    /// Starts sampling `urls`; seconds are counted from `start`.
    pub(crate) fn start(urls: Vec<String>, start: std::time::Instant) -> Monitor {
        let rows: Arc<Mutex<Rows>> = Arc::default();
        let r = rows.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(400))
                .build()
                .expect("http client");
            let mut next = start + Duration::from_millis(500);
            loop {
                tokio::time::sleep_until(next.into()).await;
                let sec = next.duration_since(start).as_secs();
                let counts =
                    futures::future::join_all(urls.iter().map(|u| instances(&http, u))).await;
                if let Ok(mut rows) = r.lock() {
                    rows.push((sec, counts));
                }
                next += Duration::from_secs(1);
            }
        });
        Monitor { rows, task }
    }

    /// The samples so far.
    pub(crate) fn rows(&self) -> Rows {
        self.rows.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a scenario measured.
pub(crate) struct Report {
    pub(crate) name: &'static str,
    pub(crate) title: &'static str,
    pub(crate) clients: usize,
    /// (second, what happened).
    pub(crate) events: Vec<(f64, String)>,
    /// Seconds of the fault: [begin, end).
    pub(crate) fault: (f64, f64),
    /// Time from the end of the fault until every node matched the history.
    pub(crate) converge: Duration,
    pub(crate) lost: usize,
    pub(crate) returned: usize,
    pub(crate) indeterminate: usize,
    pub(crate) present: usize,
    pub(crate) absent: usize,
    /// Extra figures (name, value).
    pub(crate) extra: Vec<(String, String)>,
}

impl Report {
    /// Sums a per-second counter over [from, to) seconds.
    pub(crate) fn sum(v: &[std::sync::atomic::AtomicU64], from: f64, to: f64) -> u64 {
        let (a, b) = (from.floor() as usize, (to.ceil() as usize).min(v.len()));
        v[a.min(b)..b]
            .iter()
            .map(|x| x.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// The markdown section: figures, then the per-second timeline.
    pub(crate) fn markdown(&self, load: &Load, rows: &[(u64, Vec<Option<u64>>)]) -> String {
        let ps = load.per_second();
        let (b, e) = self.fault;
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n", self.title);
        let _ = writeln!(
            out,
            "Command: `cargo nextest run -p distro-server --test it faults::{} --no-capture`\n",
            self.name
        );
        let _ = writeln!(out, "| figure | value |\n|---|---|");
        let _ = writeln!(
            out,
            "| clients (ip:port, HTTP API, heartbeat 1 s) | {} |",
            self.clients
        );
        for (t, what) in &self.events {
            let _ = writeln!(out, "| at {t:.1} s | {what} |");
        }
        let _ = writeln!(
            out,
            "| client requests failed on every node, during the fault ({b:.1}-{e:.1} s) | {} |",
            Self::sum(&ps.errors, b, e + 1.0)
        );
        let _ = writeln!(
            out,
            "| failovers to another node, during the fault | {} |",
            Self::sum(&ps.failovers, b, e + 1.0)
        );
        let _ = writeln!(
            out,
            "| re-registrations after a 20404 heartbeat (whole run) | {} |",
            Self::sum(&ps.reregistered, 0.0, 600.0)
        );
        for (k, v) in &self.extra {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        let _ = writeln!(
            out,
            "| time to converge after the fault ended | {:.2} s |",
            self.converge.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| acknowledged registrations of live clients lost | {} (of {} live) |",
            self.lost, self.present
        );
        let _ = writeln!(
            out,
            "| acknowledged deletions that came back | {} (of {} deleted) |",
            self.returned, self.absent
        );
        let _ = writeln!(
            out,
            "| clients left out of the check (a timed-out write of the other kind) | {} |",
            self.indeterminate
        );
        let n = rows.first().map_or(0, |r| r.1.len());
        let phase_of = |sec: u64| {
            if (sec as f64) + 1.0 <= b {
                "before"
            } else if (sec as f64) < e {
                "FAULT"
            } else {
                "after"
            }
        };
        let at = |v: &[std::sync::atomic::AtomicU64], s: usize| {
            v.get(s)
                .map_or(0, |x| x.load(std::sync::atomic::Ordering::Relaxed))
        };
        // A text chart of the same seconds: requests answered, failed and failed over,
        // and what each node held (`-`: it did not answer).
        let _ = writeln!(
            out,
            "\nTimeline chart, one line per second: `#` = 10 client requests answered, \
             `x` = 5 that failed on every node, `>` = 10 failovers; then each node's \
             instance count (`-`: no answer).\n\n```text"
        );
        for (sec, counts) in rows {
            let s = *sec as usize;
            let (ok, failed, over) = (at(&ps.ok, s), at(&ps.errors, s), at(&ps.failovers, s));
            let bar = format!(
                "{}{}{}",
                "#".repeat(((ok + 5) / 10) as usize),
                "x".repeat(failed.div_ceil(5) as usize),
                ">".repeat(over.div_ceil(10) as usize)
            );
            let nodes: Vec<String> = counts
                .iter()
                .map(|c| c.map_or("-".to_string(), |c| c.to_string()))
                .collect();
            let _ = writeln!(
                out,
                "{sec:>3} {:<6} {bar:<64} {}",
                phase_of(*sec),
                nodes.join(" ")
            );
        }
        out.push_str("```\n");
        let _ = write!(
            out,
            "\n| s | phase | ok | failed | failovers | re-registered |"
        );
        for i in 0..n {
            let _ = write!(out, " node{} instances |", i + 1);
        }
        let _ = write!(out, "\n|---|---|---|---|---|---|");
        for _ in 0..n {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for (sec, counts) in rows {
            let s = *sec as usize;
            let phase = phase_of(*sec);
            let get = |v: &[std::sync::atomic::AtomicU64]| at(v, s);
            let _ = write!(
                out,
                "| {sec} | {phase} | {} | {} | {} | {} |",
                get(&ps.ok),
                get(&ps.errors),
                get(&ps.failovers),
                get(&ps.reregistered)
            );
            for c in counts {
                match c {
                    Some(c) => {
                        let _ = write!(out, " {c} |");
                    }
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// Prints the section and, with `DISTRO_FAULTS_REPORT=<dir>`, writes it to
    /// `<dir>/<name>.md`.
    pub(crate) fn publish(&self, load: &Load, rows: &[(u64, Vec<Option<u64>>)]) {
        let md = self.markdown(load, rows);
        println!("{md}");
        if let Ok(dir) = std::env::var("DISTRO_FAULTS_REPORT") {
            let _ = std::fs::create_dir_all(&dir);
            let path = std::path::Path::new(&dir).join(format!("{}.md", self.name));
            if let Err(e) = std::fs::write(&path, md) {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
    }
}
