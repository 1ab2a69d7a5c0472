#!/usr/bin/env bash
# The figures of results/peers.md: distro, etcd and ZooKeeper under the same load, one
# sitting, medians of 3, at 10,000 and 100,000 clients (CLIENTS="10000 100000 1000000" to
# add a million). Run it on a quiet machine (nothing else building or running), from the
# repository's top, as a user who may start etcd and java (the Debian packages etcd-server
# and zookeeper, and protobuf-compiler for the build):
#
#   bash results/peers.sh [OUT]        # OUT defaults to results/runs/peers-<UTC time>
#   python3 results/peers.py table OUT # the Markdown tables for results/peers.md
#
# Per client count and repetition (seeds 1, 2, 3), each system on its own embedded 3-member
# cluster started for the run (distro's nodes in a child process):
#   1. register: `loadgen compare --scenario register` (closed model: as fast as each
#      system takes them): registrations/s, register latency, convergence (replication
#      lag) under that load, the servers' CPU per registration and memory per instance;
#   2. query, saturated: `loadgen compare --scenario query --rate 50000` (QUERY_OFFER; far
#      above what any of them answers here): the achieved rate is each system's maximum
#      with every client held with heartbeats (the closed model would measure the lanes'
#      2 ms linger, not the servers: results/loadgen.md); no --require-clean here, as
#      queries past --max-lag are dropped by design;
#   3. query at half of each system's own maximum (from 2), open model: one run per
#      system (`loadgen --protocol ...`): the query p99 that the table reports;
#   4. push: `loadgen compare --scenario push --rate 200 --subscribers 2`: change-to-push
#      latency on every member.
# Takes about 40 minutes at 10,000 and 100,000 clients on a 2-core machine. Each run's
# directory holds its report; OUT/uptime.txt has the load average before each step.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-results/runs/peers-$(date -u +%Y%m%dT%H%M%SZ)}
clients_list=${CLIENTS:-10000 100000}
seeds=${SEEDS:-1 2 3}
hold=${HOLD:-20s}
offer=${QUERY_OFFER:-50000}
mkdir -p "$out"

cargo build --release --locked -p loadgen -p distro-server --features loadgen/etcd
lg=target/release/loadgen

note() {
  printf '%s %s | %s\n' "$(date -u +%H:%M:%S)" "$*" "$(uptime)" | tee -a "$out/uptime.txt"
}

base=(--services 1000 --heartbeat 5s --plain --no-history)
common=("${base[@]}" --require-clean)

for n in $clients_list; do
  for seed in $seeds; do
    d=$out/$n/seed-$seed
    mkdir -p "$d"
    note "$n clients, seed $seed: register"
    "$lg" compare --scenario register --clients "$n" --seed "$seed" "${common[@]}" \
      --out "$d/register" >"$d/register.log" 2>&1
    note "$n clients, seed $seed: query, saturated at $offer/s offered"
    "$lg" compare --scenario query --rate "$offer" --clients "$n" --seed "$seed" \
      --duration "$hold" "${base[@]}" --out "$d/query-max" >"$d/query-max.log" 2>&1
    for system in distro etcd zookeeper; do
      half=$(python3 results/peers.py half-query-rate "$d/query-max/compare.json" "$system")
      case $system in
        distro) proto=(--protocol native --cluster-process) ;;
        etcd) proto=(--protocol etcd) ;;
        zookeeper) proto=(--protocol zookeeper) ;;
      esac
      note "$n clients, seed $seed: $system queries at $half/s (half its maximum)"
      "$lg" "${proto[@]}" --scenario query --rate "$half" --clients "$n" --seed "$seed" \
        --duration "$hold" "${common[@]}" --out "$d/query-half/$system" \
        >"$d/query-half-$system.log" 2>&1
    done
    note "$n clients, seed $seed: push"
    "$lg" compare --scenario push --rate 200 --subscribers 2 --clients "$n" --seed "$seed" \
      --duration "$hold" "${common[@]}" --out "$d/push" >"$d/push.log" 2>&1
  done
done
note "done"
python3 results/peers.py table "$out"
