#!/usr/bin/env python3
"""Helpers of results/peers.sh.

  peers.py half-query-rate COMPARE_JSON SYSTEM   half of SYSTEM's achieved query rate
  peers.py table OUT                             the Markdown tables of results/peers.md:
                                                 per client count, the median over the
                                                 clean runs (and each run's value), then
                                                 the runs that were not clean and what
                                                 they lost

OUT is peers.sh's output: OUT/<clients>/seed-<seed>/<step>/<system>/compare.json (one
system per comparison; <step>/<system>.rc its exit code). The layout of the first
sittings (OUT/<clients>/seed-<seed>/<step>/compare.json with every system, and
query-half/<system>/summary.json) is read too.
"""

import json
import statistics
import sys
from pathlib import Path

# The systems of peers.sh's SYSTEMS, in the order the tables show them.
SYSTEMS = [
    "distro",
    "etcd",
    "etcd-shared1k",
    "etcd-shared",
    "zookeeper",
    "zookeeper-per-client",
]
STEPS = ["register", "query-max", "query-half", "push"]
# Steps whose runs must be clean to count. A saturated query run drops queries past
# --max-lag by design, so it counts unless it failed or answered no query.
MUST_BE_CLEAN = {"register", "query-half", "push"}


def load(path):
    with open(path) as f:
        return json.load(f)


def pick(compare, label):
    """The figures of `label` in a comparison: the system of that name, or the only one
    (peers.sh runs one system per comparison; `etcd-shared` and `etcd-shared1k` are
    loadgen's `etcd`)."""
    for s in compare["systems"]:
        if s["system"] == label:
            return s
    if len(compare["systems"]) == 1:
        return compare["systems"][0]
    return None


def half_query_rate(path, label):
    try:
        s = pick(load(path), label)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: no comparison ({e})")
    if s is None:
        raise SystemExit(f"{path}: {label} is not in the comparison")
    if s.get("error"):
        raise SystemExit(f"{path}: {label} failed: {s['error']}")
    q = s["ops"].get("query")
    if not q or not q["ok"]:
        raise SystemExit(f"{path}: {label} answered no query")
    return max(1, int(q["throughput_per_s"] / 2))


def p99_ms(op, kind="corrected"):
    stats = (op or {}).get(kind) or (op or {}).get("uncorrected")
    return stats["p99_us"] / 1e3 if stats else None


def rc_of(step_dir, label):
    try:
        return int((step_dir / f"{label}.rc").read_text().strip())
    except (OSError, ValueError):
        return None


def lost(s, clients):
    """What a run that is not clean lost, in words (empty for a clean one)."""
    if s.get("error"):
        return [f"failed: {s['error']}"]
    why = []
    errors = s["totals"]["errors"]
    if errors:
        codes = []
        for op, o in sorted(s["ops"].items()):
            for code, n in sorted(o.get("errors_by_code", {}).items(), key=lambda kv: -kv[1]):
                hint = ""
                if op == "beat" and code == "404":
                    hint = ": lease or session expired, the client registered again"
                codes.append(f"{op} {code} x{n:,}{hint}")
        why.append(f"{errors:,} errors ({'; '.join(codes)})" if codes else f"{errors:,} errors")
    registered = s.get("registered")
    if clients and registered is not None and registered < clients:
        why.append(f"held {registered:,} of {clients:,} clients at the end")
    members = s.get("member_instances") or []
    if s.get("members_agreed") is False or len(set(members)) > 1:
        why.append("members disagreed at the end, holding " + " / ".join(f"{m:,}" for m in members))
    elif members and s.get("instances") and members[0] < s["instances"]:
        why.append(f"members held {members[0]:,} instances of the {s['instances']:,} registered")
    lag = s["replication_lag"]
    if lag.get("unreplicated"):
        why.append(f"{lag['unreplicated']:,} probes unreplicated")
    if lag.get("count", 0) + lag.get("visible_before_ack", 0) == 0:
        why.append("no probe seen on another member")
    return why


def run_of(seed_dir, step, label, clients):
    """One run: (its system's figures or None, clean, what it lost)."""
    step_dir = seed_dir / step
    rc = rc_of(step_dir, label)
    path = step_dir / label / "compare.json"
    if not path.exists():
        path = step_dir / "compare.json"  # the first sittings' layout
    s = None
    if path.exists():
        s = pick(load(path), label)
    if s is None:
        if step == "query-half" and (step_dir / label / "summary.json").exists():
            # The first sittings' query-half: a plain run, kept only when clean.
            summary = load(step_dir / label / "summary.json")
            return {"ops": summary["ops"]}, True, []
        skipped = seed_dir / f"{step}-{label}.skipped"
        if skipped.exists():
            return None, False, [f"skipped: {skipped.read_text().strip()}"]
        if rc is None:
            return None, True, []  # not run (another SYSTEMS)
        return None, False, [f"no report (exit {rc}; see {step}-{label}.log)"]
    why = lost(s, clients)
    if step == "query-max":
        q = s["ops"].get("query")
        clean = not s.get("error") and bool(q and q["ok"])
        return s, clean, ([] if clean else why or ["answered no query"])
    clean = s.get("clean", False) and not s.get("error")
    if not clean and not why:
        why = [f"exit {rc}" if rc else "not clean"]
    if clean and rc:
        clean, why = False, [f"exit {rc}"]
    return s, clean, why


# The figures each step gives.
STEP_METRICS = {
    "register": [
        "registrations/s",
        "register p99 (ms)",
        "replication lag p99 (ms)",
        "visible before ack (%)",
        "server CPU per op (us), register run",
        "memory per instance (bytes)",
    ],
    "query-max": ["max queries/s"],
    "query-half": ["query p99 at half max (ms)"],
    "push": ["push p99 (ms)"],
}


def figures(seed_dir, label, clients):
    """One seed's figures of one system: {metric: (value, clean)}, and the runs that were
    not clean as (step, what they lost)."""
    f, unclean = {}, []

    def put(metric, value, clean):
        f[metric] = (value, clean)

    runs = {step: run_of(seed_dir, step, label, clients) for step in STEPS}
    for step, (s, clean, why) in runs.items():
        if not clean:
            unclean.append((step, why))
            if s is None:  # failed or skipped: its figures show as "-*"
                for metric in STEP_METRICS[step]:
                    put(metric, None, False)
    s, clean, _ = runs["register"]
    if s is not None and "registration_per_s" in s:
        put("registrations/s", s["registration_per_s"], clean)
        put("register p99 (ms)", p99_ms(s["ops"].get("register")), clean)
        lag = s["replication_lag"]
        put("replication lag p99 (ms)", lag["latency"]["p99_us"] / 1e3 if lag["latency"] else None, clean)
        seen = lag["count"] + lag["visible_before_ack"]
        put("visible before ack (%)", 100 * lag["visible_before_ack"] / seen if seen else None, clean)
        cpu = s["cpu_s_per_op"]
        put("server CPU per op (us), register run", cpu * 1e6 if cpu else None, clean)
        put("memory per instance (bytes)", s["rss_bytes_per_instance"], clean)
    s, clean, _ = runs["query-max"]
    if s is not None:
        q = s["ops"].get("query")
        put("max queries/s", q["throughput_per_s"] if q else None, clean)
    s, clean, _ = runs["query-half"]
    if s is not None:
        put("query p99 at half max (ms)", p99_ms(s["ops"].get("query")), clean)
    s, clean, _ = runs["push"]
    if s is not None:
        put("push p99 (ms)", p99_ms(s["ops"].get("push")), clean)
    return f, unclean


def mapping_of(seed_dirs, label):
    for d in seed_dirs:
        for step in STEPS:
            for path in (d / step / label / "compare.json", d / step / "compare.json"):
                if path.exists():
                    s = pick(load(path), label)
                    if s is not None:
                        return s.get("mapping")
    return None


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(out):
    out = Path(out)
    counts = sorted((p for p in out.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for n_dir in counts:
        clients = int(n_dir.name)
        seeds = sorted(p for p in n_dir.iterdir() if p.name.startswith("seed-"))
        per = {}
        for label in SYSTEMS:
            runs = [figures(s, label, clients) for s in seeds]
            if any(f or u for f, u in runs):
                per[label] = runs
        labels = list(per)
        metrics = []
        for label in labels:
            for f, _ in per[label]:
                metrics += [m for m in f if m not in metrics]
        others = [label for label in labels if label != "distro"]
        print(f"\n### {clients:,} clients ({len(seeds)} runs each: median of the clean runs, then each run)\n")
        print("| figure | " + " | ".join(labels) + " | " + " | ".join(f"{o} / distro" for o in others) + " |")
        print("|---|" + "---|" * (len(labels) + len(others)))
        any_unclean = False
        for m in metrics:
            cells, medians = [], {}
            for label in labels:
                vals = [f.get(m, (None, True)) for f, _ in per[label]]
                known = [v for v, clean in vals if v is not None and clean]
                medians[label] = statistics.median(known) if known else None
                shown = []
                for v, clean in vals:
                    shown.append(fmt(v) if clean else f"{fmt(v)}*")
                    any_unclean |= not clean
                cells.append(f"**{fmt(medians[label])}** ({', '.join(shown)})")
            ratios = []
            for other in others:
                a, b = medians.get(other), medians.get("distro")
                ratios.append(f"{a / b:.2f}" if a is not None and b else "-")
            print(f"| {m} | " + " | ".join(cells) + (" | " + " | ".join(ratios) if ratios else "") + " |")
        mappings = [(label, mapping_of(seeds, label)) for label in labels]
        mappings = [(label, m) for label, m in mappings if m]
        if mappings:
            print("\nMappings: " + "; ".join(f"{label}: {m}" for label, m in mappings) + ".")
        lines = []
        for label in labels:
            for seed, (_, unclean) in zip(seeds, per[label]):
                for step, why in unclean:
                    lines.append(f"- {seed.name}, {label}, {step}: " + "; ".join(why))
        if lines or any_unclean:
            print("\n`*`: a run that was not clean, left out of the median. Runs not clean:\n")
            print("\n".join(lines))


def main(argv):
    if len(argv) == 4 and argv[1] == "half-query-rate":
        print(half_query_rate(argv[2], argv[3]))
    elif len(argv) == 3 and argv[1] == "table":
        table(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
