#!/usr/bin/env python3
"""Instructions per client of the whole 1 M-burst pipeline (load generator and three
embedded nodes), from two Callgrind profiles of the same build at two client counts:
(count(big) - count(small)) / (big - small) clients, per function (self cost) and per
component. What every client costs, without the fixed costs of starting and stopping.
Caveat: under Valgrind a run is ~50x slower, so work paced by the clock (the nodes' 5 s
tick walking every client, the generator's per-second recorder) is counted more than in a
native burst; compare builds measured the same way, not with native figures.

Usage: marginal.py SMALL.out BIG.out CLIENTS_DIFFERENCE [TOP]   (see marginal.sh)"""
import collections
import re
import subprocess
import sys

COMPONENTS = [
    ("generator: formatting", ["core::fmt", "u8 as core::fmt", "String as core::fmt::Write"]),
    ("generator", ["loadgen::", "hdrhistogram"]),
    ("native API: reading requests", ["proto::writes", "varint::decode", "merge_loop",
                                      "from_utf8", "Message>::decode", "decode_varint"]),
    ("protobuf encoding", ["encode_varint", "Message::encode", "encode_raw", "prost::"]),
    ("peer codec (sync encode, decode)", ["cluster::compact", "sync_codec"]),
    ("forwarding", ["cluster::forward"]),
    ("native API", ["api::native", "proto::results"]),
    ("store (registry, tables, index)", ["distro_core::registry", "arc_slots", "seize"]),
    ("sync scheduling", ["distro_core::sync"]),
    ("core: other (routing hash, ids, validation, tick)", ["distro_core::"]),
    ("transport (h2, hyper, tonic, tower)", ["h2::", "hyper", "tonic", "http", "tower", "axum"]),
    ("tokio, futures", ["tokio", "futures"]),
    ("allocator", ["mi_", "mimalloc", "_mi", "rust_dealloc", "rust_alloc", "__rustc::"]),
    ("memcpy, memset", ["memcpy", "memset", "memmove", "memcmp"]),
    ("std, alloc, other libraries", ["alloc::", "core::", "std::", "compact_str", "foldhash",
                                     "bytes::", "itoa"]),
]


def self_costs(path):
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", path],
        capture_output=True, text=True, check=True).stdout
    d = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            s = re.sub(r" \[[^]]*\]$", "", m.group(2))
            fn = s.split(":", 1)[1] if ":" in s else s
            d[fn] += int(m.group(1).replace(",", ""))
    return d


def main():
    small, big, n = self_costs(sys.argv[1]), self_costs(sys.argv[2]), int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    per = {f: (big[f] - small[f]) / n for f in set(small) | set(big)}
    total = sum(per.values())
    print(f"instructions per client: {total:,.0f}")
    groups = collections.Counter()
    for f, v in per.items():
        name = next((c for c, pats in COMPONENTS if any(p in f for p in pats)), "other")
        groups[name] += v
    print("\nby component:")
    for name, v in groups.most_common():
        print(f"  {v:7,.0f}  {100 * v / total:5.1f} %  {name}")
    print(f"\ntop {top} functions (self):")
    for f, v in sorted(per.items(), key=lambda x: -x[1])[:top]:
        print(f"  {v:7,.0f}  {f[:120]}")


main()
