#!/usr/bin/env python3
"""Table lines of a sitting run by ab.sh: per build, each round's rate visible on all
nodes (clients / (registration phase + agreement after the stop)), CPU per client (user +
system time of the whole process / clients), phase, agreement, user/system seconds, max
RSS and the load average at the start; medians. A run whose nodes never agreed counts 0/s.
Usage: sum.py OUT"""
import glob
import os
import re
import statistics
import sys


def run(path):
    out = open(path).read()
    tm = open(path[:-4] + ".time").read()
    up = open(path[:-4] + ".uptime").read()
    phase = float(re.search(r"registration phase: ([\d.]+) s", out).group(1))
    # "agreement at the end: yes, every node held the same clients N ms after" (now) or
    # "nodes converged: yes, N ms after" (d459ec7's loadgen).
    agreed = re.search(r"(?:held the same clients|converged: yes,) (\d+) ms", out)
    n = int(re.search(r"clients registered at the end: (\d+)", out).group(1))
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", tm).group(1))
    sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", tm).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", tm).group(1)) // 1024
    load = re.search(r"load average: ([\d.]+)", up).group(1)
    agree = int(agreed.group(1)) if agreed else None
    visible = n / (phase + agree / 1000) if agreed else 0.0
    return visible, (user + sys_) / n * 1e6, phase, agree, user, sys_, rss, load


def main():
    rows = {}
    for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.out"))):
        build, r = os.path.basename(f)[:-4].rsplit(".", 1)
        rows.setdefault(build, []).append((int(r), run(f)))
    for build, rs in rows.items():
        rs = [x for _, x in sorted(rs)]
        print(
            f"{build:8} visible " + " / ".join(f"{x[0]:,.0f}" for x in rs)
            + f" (median {statistics.median(x[0] for x in rs):,.0f}/s)"
            + " | CPU µs per client " + " / ".join(f"{x[1]:.2f}" for x in rs)
            + f" (median {statistics.median(x[1] for x in rs):.2f})"
            + " | phase s " + " / ".join(f"{x[2]:.2f}" for x in rs)
            + " | agreement ms " + " / ".join(str(x[3]) if x[3] is not None else "never" for x in rs)
            + " | user/sys s " + " ".join(f"{x[4]:.1f}/{x[5]:.1f}" for x in rs)
            + " | max RSS MB " + " / ".join(str(x[6]) for x in rs)
            + " | load " + " / ".join(x[7] for x in rs)
        )
    # Each pair of builds, round by round (the rounds both ran): how often the first was
    # faster and how often it used less CPU per client.
    names = sorted(rows)
    by_round = {b: dict(rs) for b, rs in rows.items()}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(set(by_round[a]) & set(by_round[b]))
            faster = sum(by_round[a][r][0] > by_round[b][r][0] for r in common)
            cheaper = sum(by_round[a][r][1] < by_round[b][r][1] for r in common)
            print(f"{a} against {b}: faster in {faster} of {len(common)} rounds, "
                  f"cheaper in {cheaper} of {len(common)}")


main()
