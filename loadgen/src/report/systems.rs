//! The report of `loadgen compare`: each system's figures side by side, from its own run
//! (its `summary.json`) and from its servers' processes (CPU, memory). Written as
//! [`SYSTEMS_JSON`] and [`SYSTEMS_HTML`] in the comparison's directory and printed as a
//! table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::html::escape;
use super::summary::{OpSummary, ReplicationLagSummary, Totals};
use super::table::Table;
use crate::measure::latency::{LatencyStats, human_rate, human_us};
use crate::measure::op::Op;
use crate::run::server_usage::ServerUsage;
use crate::run::{RunConfig, RunOutcome};

/// The comparison's figures, in the comparison's directory.
pub const SYSTEMS_JSON: &str = "compare.json";
/// The comparison's page, in the comparison's directory.
pub const SYSTEMS_HTML: &str = "compare.html";
/// The format of [`SYSTEMS_JSON`].
pub const SYSTEMS_FORMAT: &str = "loadgen-compare/1";

/// What the comparison says of the figures, whatever they are.
pub const CAVEATS: &str = "The systems do not promise the same things. etcd and ZooKeeper \
    are linearizable CP stores with a leader: a write is acknowledged once a quorum holds \
    it, so it is usually visible on the other members before the writer hears back \
    (counted as \"visible before ack\"), and without a quorum they take no writes. distro \
    is AP: the owner member acknowledges at once and replicates after, every member answers \
    reads locally, and a cut-off member keeps serving. All ran on the same machine, one \
    after the other, with the load generator beside them: the figures compare the systems \
    under this load on this machine, nothing more.";

/// One system's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemFigures {
    /// `distro`, `etcd`, `zookeeper`.
    pub system: String,
    /// The loadgen protocol that drove it.
    pub protocol: String,
    /// What it promises.
    pub promise: String,
    /// How a client maps onto its keep-alive unit (`--etcd-lease`, `--zk-sessions`), for
    /// etcd and ZooKeeper.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Its run's directory.
    pub run_dir: String,
    /// Why its run failed, if it did (no figures then).
    pub error: Option<String>,
    /// No errors, every probe replicated, members agreeing at the end.
    pub clean: bool,
    /// Clients registered at the end.
    pub registered: i64,
    /// Instances registered at the end (clients x instances per client).
    pub instances: u64,
    /// The registration phase's rate (clients per second), if it ended.
    pub registration_per_s: Option<f64>,
    /// The run's totals (from its summary).
    pub totals: Totals,
    /// Per operation (from its summary).
    pub ops: BTreeMap<Op, OpSummary>,
    /// Replication lag (from its summary).
    pub replication_lag: ReplicationLagSummary,
    /// Whether the members agreed at the end, and their instance counts.
    pub members_agreed: Option<bool>,
    /// Instances each member held at the end.
    pub member_instances: Vec<usize>,
    /// Its servers' CPU and memory.
    pub server: Option<ServerUsage>,
    /// Server CPU seconds per acknowledged operation.
    pub cpu_s_per_op: Option<f64>,
    /// Resident memory the run added to the servers, per registered instance (bytes).
    pub rss_bytes_per_instance: Option<f64>,
}

impl SystemFigures {
    /// The figures of a finished run.
    pub fn of(
        system: &str,
        protocol: &str,
        promise: &str,
        dir: &Path,
        o: &RunOutcome,
        server: Option<ServerUsage>,
        instances_per_client: u64,
    ) -> Self {
        let s = &o.summary;
        let instances = o.registered.max(0) as u64 * instances_per_client;
        Self {
            system: system.to_owned(),
            protocol: protocol.to_owned(),
            promise: promise.to_owned(),
            mapping: None,
            run_dir: dir.display().to_string(),
            error: None,
            clean: o.is_clean(),
            registered: o.registered,
            instances,
            registration_per_s: o
                .registration
                .map(|t| o.registered.max(0) as f64 / t.as_secs_f64().max(1e-9)),
            totals: s.totals.clone(),
            ops: s.ops.clone(),
            replication_lag: s.replication_lag.clone(),
            members_agreed: o.nodes_converged.map(|(ok, _)| ok),
            member_instances: o.node_instances.clone(),
            cpu_s_per_op: server.as_ref().and_then(|u| u.cpu_s_per_op(s.totals.ok)),
            rss_bytes_per_instance: server
                .as_ref()
                .and_then(|u| u.rss_bytes_per_instance(instances)),
            server,
        }
    }

    /// A system whose run failed.
    pub fn failed(system: &str, protocol: &str, promise: &str, dir: &Path, error: String) -> Self {
        Self {
            system: system.to_owned(),
            protocol: protocol.to_owned(),
            promise: promise.to_owned(),
            mapping: None,
            run_dir: dir.display().to_string(),
            error: Some(error),
            clean: false,
            registered: 0,
            instances: 0,
            registration_per_s: None,
            totals: Totals::default(),
            ops: BTreeMap::new(),
            replication_lag: ReplicationLagSummary::default(),
            members_agreed: None,
            member_instances: Vec::new(),
            server: None,
            cpu_s_per_op: None,
            rss_bytes_per_instance: None,
        }
    }

    /// With the mapping of the client onto the system's keep-alive unit.
    pub fn with_mapping(mut self, mapping: Option<String>) -> Self {
        self.mapping = mapping;
        self
    }

    /// An operation's achieved throughput, if it ran.
    pub fn throughput(&self, op: Op) -> Option<f64> {
        self.ops
            .get(&op)
            .filter(|o| o.ok > 0)
            .map(|o| o.throughput_per_s)
    }

    /// An operation's corrected latency (service time for a closed-model operation).
    pub fn latency(&self, op: Op) -> Option<&LatencyStats> {
        let o = self.ops.get(&op)?;
        o.corrected.as_ref().or(o.uncorrected.as_ref())
    }
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemsReport {
    /// [`SYSTEMS_FORMAT`].
    pub format: String,
    /// What the figures mean and do not.
    pub caveats: String,
    /// The workload every system ran (the run parameters but the protocol).
    pub parameters: BTreeMap<String, String>,
    /// One entry per system, in the order run.
    pub systems: Vec<SystemFigures>,
}

/// A cell: the value, or `-`.
fn or_dash<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

fn mib(bytes: u64) -> String {
    format!("{:.0}MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl SystemsReport {
    /// The report of `systems`, which ran `base`'s workload.
    pub fn new(base: &RunConfig, systems: Vec<SystemFigures>) -> Self {
        let mut parameters = base.parameters(base.nodes, true);
        parameters.remove("protocol");
        parameters.insert("etcd_lease".into(), base.etcd_lease.to_string());
        parameters.insert("zk_sessions".into(), base.zk_sessions.to_string());
        Self {
            format: SYSTEMS_FORMAT.to_owned(),
            caveats: CAVEATS.to_owned(),
            parameters,
            systems,
        }
    }

    /// Every system ran and was clean.
    pub fn all_clean(&self) -> bool {
        self.systems.iter().all(|s| s.clean && s.error.is_none())
    }

    /// The operations any system ran, in order.
    fn ops(&self) -> Vec<Op> {
        Op::ALL
            .iter()
            .copied()
            .filter(|op| self.systems.iter().any(|s| s.ops.contains_key(op)))
            .collect()
    }

    /// The table of the main figures, one row per system.
    fn main_table(&self) -> Table {
        let mut t = Table::new([
            "system",
            "clean",
            "errors",
            "registered",
            "reg. phase",
            "total ok/s",
            "repl. lag p50",
            "p99",
            "visible<ack",
            "unrepl.",
            "CPU s",
            "CPU us/op",
            "RSS start",
            "RSS end",
            "bytes/inst.",
        ]);
        for s in &self.systems {
            if let Some(e) = &s.error {
                t.row([s.system.clone(), format!("FAILED: {e}")]);
                continue;
            }
            let lag = s.replication_lag.latency.as_ref();
            let server = s.server.as_ref();
            t.row([
                s.system.clone(),
                if s.clean { "yes" } else { "NO" }.to_owned(),
                s.totals.errors.to_string(),
                s.registered.to_string(),
                or_dash(s.registration_per_s, human_rate),
                human_rate(s.totals.throughput_per_s),
                or_dash(lag, |l| human_us(l.p50_us)),
                or_dash(lag, |l| human_us(l.p99_us)),
                format!(
                    "{}/{}",
                    s.replication_lag.visible_before_ack,
                    s.replication_lag.sightings()
                ),
                s.replication_lag.unreplicated.to_string(),
                or_dash(server, |u| format!("{:.2}", u.cpu_s)),
                or_dash(s.cpu_s_per_op, |c| format!("{:.1}", c * 1e6)),
                or_dash(server, |u| mib(u.rss_start_bytes)),
                or_dash(server, |u| mib(u.rss_end_bytes)),
                or_dash(s.rss_bytes_per_instance, |b| format!("{b:.0}")),
            ]);
        }
        t
    }

    /// The table of each operation's throughput and latency, system by system.
    fn ops_table(&self) -> Table {
        let mut t = Table::new([
            "op",
            "system",
            "achieved",
            "ok",
            "errors",
            "late",
            "latency",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "service p50",
            "service p99",
        ]);
        for op in self.ops() {
            for s in &self.systems {
                let Some(o) = s.ops.get(&op) else { continue };
                let (kind, lat) = match (&o.corrected, &o.uncorrected) {
                    (Some(c), _) => ("corrected", Some(c)),
                    (None, u) => ("service", u.as_ref()),
                };
                let svc = o.uncorrected.as_ref();
                t.row([
                    op.to_string(),
                    s.system.clone(),
                    human_rate(o.throughput_per_s),
                    o.ok.to_string(),
                    o.errors.to_string(),
                    o.late.to_string(),
                    kind.to_owned(),
                    or_dash(lat, |l| human_us(l.p50_us)),
                    or_dash(lat, |l| human_us(l.p90_us)),
                    or_dash(lat, |l| human_us(l.p99_us)),
                    or_dash(lat, |l| human_us(l.p99_9_us)),
                    or_dash(lat, |l| human_us(l.max_us)),
                    or_dash(svc, |l| human_us(l.p50_us)),
                    or_dash(svc, |l| human_us(l.p99_us)),
                ]);
            }
        }
        t
    }

    /// The text printed at the end of `loadgen compare`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let p = &self.parameters;
        let get = |k: &str| p.get(k).map_or("-", String::as_str);
        let _ = writeln!(
            out,
            "compare | scenario {} | clients {} | duration {} | seed {}",
            get("scenario"),
            get("clients"),
            get("duration"),
            get("seed")
        );
        out.push_str(&self.main_table().render());
        out.push('\n');
        out.push_str(&self.ops_table().render());
        out.push('\n');
        for s in &self.systems {
            let _ = writeln!(out, "{}: {}", s.system, s.promise);
            if let Some(m) = &s.mapping {
                let _ = writeln!(out, "  mapping: {m}");
            }
            if let Some(u) = &s.server
                && u.in_loadgen_process
            {
                let _ = writeln!(
                    out,
                    "  (its CPU and memory are the load generator's own process, load side included)"
                );
            }
        }
        let _ = writeln!(out, "{CAVEATS}");
        out
    }

    /// The HTML page.
    pub fn html(&self) -> String {
        let mut h = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>loadgen compare</title>\n\
             <style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}td.l,th.l{text-align:left}\
             .bad{color:#b00;font-weight:bold}.bar{background:#4a7;height:.8em;display:inline-block}\
             .note{color:#444;font-size:.9em}</style></head><body>\n<h1>distro, etcd and ZooKeeper under the same load</h1>\n",
        );
        let _ = writeln!(h, "<p>{}</p>", escape(&self.caveats));
        h.push_str("<h2>What each system promises</h2>\n<ul>\n");
        for s in &self.systems {
            let _ = writeln!(
                h,
                "<li><b>{}</b> (loadgen <code>--protocol {}</code>, run in <code>{}</code>): {}",
                escape(&s.system),
                escape(&s.protocol),
                escape(&s.run_dir),
                escape(&s.promise)
            );
            if let Some(m) = &s.mapping {
                let _ = writeln!(h, "<br>mapping: {}", escape(m));
            }
            h.push_str("</li>\n");
        }
        h.push_str("</ul>\n<h2>Workload</h2>\n<table>\n");
        for (k, v) in &self.parameters {
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                escape(k),
                escape(v)
            );
        }
        h.push_str("</table>\n<h2>Side by side</h2>\n");
        h.push_str(&table_html(&self.main_table()));
        h.push_str(
            "<p class=\"note\"><b>visible&lt;ack</b>: probe sightings on the other members that \
             came before the write's acknowledgement, of all sightings (no lag sample; the lag \
             percentiles are the others). <b>CPU</b>: user and system seconds of the servers' \
             processes over the run (from /proc), per acknowledged operation; <b>RSS</b>: their \
             resident memory at the start and at the end; <b>bytes/inst.</b>: what the run \
             added, per instance registered at the end.</p>\n",
        );
        let bars: [Bar; 3] = [
            (
                "registration phase, clients/s",
                |s| s.registration_per_s,
                human_rate,
            ),
            (
                "replication lag p99",
                |s| s.replication_lag.latency.as_ref().map(|l| l.p99_us as f64),
                |v| human_us(v as u64),
            ),
            (
                "server CPU per operation",
                |s| s.cpu_s_per_op.map(|c| c * 1e6),
                |v| format!("{v:.1} us"),
            ),
        ];
        for (title, value, show) in bars {
            let max = self.systems.iter().filter_map(value).fold(0.0f64, f64::max);
            let _ = writeln!(h, "<h3>{}</h3>\n<table>", escape(title));
            for s in &self.systems {
                let v = value(s);
                let width = v.map_or(0.0, |v| if max > 0.0 { 30.0 * v / max } else { 0.0 });
                let _ = writeln!(
                    h,
                    "<tr><td class=\"l\">{}</td><td class=\"l\"><span class=\"bar\" style=\"width:{width:.1}em\"></span> {}</td></tr>",
                    escape(&s.system),
                    escape(&or_dash(v, show))
                );
            }
            h.push_str("</table>\n");
        }
        h.push_str("<h2>Per operation</h2>\n");
        h.push_str(&table_html(&self.ops_table()));
        h.push_str(
            "<p class=\"note\"><b>corrected</b> latency counts from the schedule's intended send \
             time (coordinated omission corrected); <b>service</b> from the actual send. Each \
             system's own report has the full figures and charts.</p>\n</body></html>\n",
        );
        h
    }

    /// Writes [`SYSTEMS_JSON`] and [`SYSTEMS_HTML`] into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let json = dir.join(SYSTEMS_JSON);
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", json.display()))?;
        let html = dir.join(SYSTEMS_HTML);
        std::fs::write(&html, self.html())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", html.display()))?;
        Ok(())
    }
}

/// A bar chart of the page: its title, a system's value, how a value reads.
type Bar = (
    &'static str,
    fn(&SystemFigures) -> Option<f64>,
    fn(f64) -> String,
);

/// A plain table as HTML (the first column left-aligned).
fn table_html(t: &Table) -> String {
    let (header, rows) = t.cells();
    let mut h = String::from("<table><tr>");
    for (i, c) in header.iter().enumerate() {
        let _ = write!(
            h,
            "<th{}>{}</th>",
            if i < 2 { " class=\"l\"" } else { "" },
            escape(c)
        );
    }
    h.push_str("</tr>\n");
    for r in rows {
        h.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if i < 2 {
                " class=\"l\""
            } else if c == "NO" || c.starts_with("FAILED") {
                " class=\"bad\""
            } else {
                ""
            };
            let _ = write!(h, "<td{class}>{}</td>", escape(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(system: &str, reg: f64, cpu: f64) -> SystemFigures {
        let mut f = SystemFigures::failed(system, system, "promise", Path::new("x"), String::new());
        f.error = None;
        f.clean = true;
        f.registered = 10;
        f.instances = 10;
        f.registration_per_s = Some(reg);
        f.cpu_s_per_op = Some(cpu);
        f.server = Some(ServerUsage {
            pids: vec![1],
            in_loadgen_process: false,
            cpu_s: 1.5,
            rss_start_bytes: 10 << 20,
            rss_end_bytes: 12 << 20,
        });
        f
    }

    #[test]
    fn table_html_and_json_carry_every_system() {
        let r = SystemsReport {
            format: SYSTEMS_FORMAT.to_owned(),
            caveats: CAVEATS.to_owned(),
            parameters: BTreeMap::from([("clients".to_owned(), "10".to_owned())]),
            systems: vec![
                figures("distro", 5000.0, 20e-6),
                figures("etcd", 1000.0, 80e-6),
                SystemFigures::failed("zookeeper", "zookeeper", "p", Path::new("z"), "boom".into())
                    .with_mapping(Some("a session per client".into())),
            ],
        };
        assert!(!r.all_clean());
        let t = r.table();
        for s in [
            "distro",
            "etcd",
            "zookeeper",
            "FAILED: boom",
            "5000/s",
            "20.0",
            "80.0",
            "mapping: a session per client",
        ] {
            assert!(t.contains(s), "{s} missing:\n{t}");
        }
        let h = r.html();
        assert!(h.contains("<td class=\"bad\">FAILED: boom</td>") || h.contains("FAILED: boom"));
        assert!(h.contains("linearizable"));
        let back: SystemsReport =
            serde_json::from_slice(&serde_json::to_vec(&r).expect("json")).expect("parse");
        assert_eq!(back, r);
    }
}
