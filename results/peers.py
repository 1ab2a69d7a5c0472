#!/usr/bin/env python3
"""Helpers of results/peers.sh.

  peers.py half-query-rate COMPARE_JSON SYSTEM   half of SYSTEM's achieved query rate
  peers.py table OUT                             the Markdown tables of results/peers.md:
                                                 per client count, the median over the
                                                 seeds (and each seed's value)
"""

import json
import statistics
import sys
from pathlib import Path

SYSTEMS = ["distro", "etcd", "zookeeper"]


def load(path):
    with open(path) as f:
        return json.load(f)


def system(compare, name):
    for s in compare["systems"]:
        if s["system"] == name:
            return s
    raise SystemExit(f"{name} is not in the comparison")


def half_query_rate(path, name):
    s = system(load(path), name)
    q = s["ops"].get("query")
    if not q or not q["ok"]:
        raise SystemExit(f"{path}: {name} answered no query")
    return max(1, int(q["throughput_per_s"] / 2))


def p99_ms(op, kind="corrected"):
    stats = (op or {}).get(kind) or (op or {}).get("uncorrected")
    return stats["p99_us"] / 1e3 if stats else None


def figures(seed_dir, name):
    """One seed's figures of one system, or None where a run is missing."""
    f = {}
    reg = seed_dir / "register" / "compare.json"
    if reg.exists():
        s = system(load(reg), name)
        f["registrations/s"] = s["registration_per_s"]
        f["register p99 (ms)"] = p99_ms(s["ops"].get("register"))
        lag = s["replication_lag"]
        f["replication lag p99 (ms)"] = lag["latency"]["p99_us"] / 1e3 if lag["latency"] else None
        seen = lag["count"] + lag["visible_before_ack"]
        f["visible before ack (%)"] = 100 * lag["visible_before_ack"] / seen if seen else None
        f["server CPU per op (us), register run"] = s["cpu_s_per_op"] * 1e6 if s["cpu_s_per_op"] else None
        f["memory per instance (bytes)"] = s["rss_bytes_per_instance"]
    qmax = seed_dir / "query-max" / "compare.json"
    if qmax.exists():
        q = system(load(qmax), name)["ops"].get("query")
        f["max queries/s"] = q["throughput_per_s"] if q else None
    half = seed_dir / "query-half" / name / "summary.json"
    if half.exists():
        q = load(half)["ops"].get("query")
        f["query p99 at half max (ms)"] = p99_ms(q)
    push = seed_dir / "push" / "compare.json"
    if push.exists():
        f["push p99 (ms)"] = p99_ms(system(load(push), name)["ops"].get("push"))
    return f


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
    for n_dir in sorted((p for p in out.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
        seeds = sorted(p for p in n_dir.iterdir() if p.name.startswith("seed-"))
        per = {name: [figures(s, name) for s in seeds] for name in SYSTEMS}
        metrics = []
        for name in SYSTEMS:
            for f in per[name]:
                metrics += [m for m in f if m not in metrics]
        print(f"\n### {int(n_dir.name):,} clients ({len(seeds)} runs each: median, then each run)\n")
        print("| figure | " + " | ".join(SYSTEMS) + " | etcd / distro | zookeeper / distro |")
        print("|---|" + "---|" * (len(SYSTEMS) + 2))
        for m in metrics:
            cells, medians = [], {}
            for name in SYSTEMS:
                vals = [f.get(m) for f in per[name]]
                known = [v for v in vals if v is not None]
                med = statistics.median(known) if known else None
                medians[name] = med
                cells.append(f"**{fmt(med)}** ({', '.join(fmt(v) for v in vals)})")
            ratios = []
            for other in ("etcd", "zookeeper"):
                a, b = medians.get(other), medians.get("distro")
                ratios.append(f"{a / b:.2f}" if a is not None and b else "-")
            print(f"| {m} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


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
