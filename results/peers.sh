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
# Variables: CLIENTS (default "10000 100000"), SEEDS ("1 2 3"), HOLD (20s), QUERY_OFFER
# (50000), SYSTEMS (default "distro etcd etcd-shared1k zookeeper"): the systems, each with
# its mapping of a client (loadgen's --etcd-lease, --zk-sessions; README "Which client maps
# onto which lease or session"):
#   distro                native protocol, distro's nodes in a child process
#   etcd                  a lease per client (--etcd-lease per-client, loadgen's default)
#   etcd-shared1k         a lease per 1,000 clients (--etcd-lease shared:N, N = clients /
#                         1,000, at least 1): etcd 3.4.23 applies a put with a lease in
#                         time linear in the keys already on it (etcd issue 15993), so one
#                         lease for all the clients measures that bug (README)
#   etcd-shared           one lease shared by all clients (--etcd-lease shared)
# ETCD_OPTIONS (default none): loadgen options added to the etcd systems' runs, e.g.
# "--batch 100 --concurrency 1" (600 registrations in flight instead of 3,072: on the busy
# machine the same rate, 1,928/s with etcd-shared1k at 100,000 clients, but no backlog of
# committed entries the leader has not applied, which stops etcd's lease renewals; with
# 3,072 all 100 leases expired: README, "Which client maps onto which lease or session").
#   zookeeper             16 sessions per member shared (--zk-sessions shared:16, the default)
#   zookeeper-per-client  a session per client (--zk-sessions per-client; needs an open-file
#                         hard limit above the clients + 8,192)
#
# Per client count and repetition (seeds), step by step, each system in turn on its own
# embedded 3-member cluster started for each run, each run a `loadgen compare --systems
# <one>` in OUT/<clients>/seed-<seed>/<step>/<system>/:
#   1. register: --scenario register (closed model: as fast as each system takes them):
#      registrations/s, register latency, convergence (replication lag) under that load,
#      the servers' CPU per registration and memory per instance;
#   2. query-max: --scenario query --rate 50000 (QUERY_OFFER; far above what any of them
#      answers here): the achieved rate is each system's maximum with every client held
#      with heartbeats (the closed model would measure the lanes' 2 ms linger, not the
#      servers: results/loadgen.md); not --require-clean, as queries past --max-lag are
#      dropped by design;
#   3. query-half: --scenario query at half of the system's own maximum (from 2), open
#      model: the query p99 that the table reports;
#   4. push: --scenario push --rate 200 --subscribers 2: change-to-push latency on every
#      member.
# A run that is not clean (errors, e.g. etcd leases lost at 100,000 clients; unreplicated
# probes; members that disagree; a failed start) does not stop the sitting: its exit code
# goes to OUT/steps.tsv and its step's .rc file, the next runs go on, and peers.py shows
# it marked, out of the medians, with what it lost. A system whose query-max run answered
# no query has no query-half run (recorded as skipped). Ctrl-C stops the run under way
# within seconds (loadgen exits 130 after removing its members) and ends the sitting.
# How long (estimated from a 1,000-client sitting of all five systems, 2 min 54 s with
# HOLD=3s, about 6 s per run besides its hold, and the registration rates of the first
# quiet sitting at 100,000 clients): per seed, with HOLD=20s, about 1.5 min per system at
# 10,000 clients; at 100,000, distro ~2 min, zookeeper ~3 min, etcd ~7 min (4 x 55 s of
# registrations, and up to 30 s more per run waiting for members that disagree once leases
# are lost), etcd-shared ~4-5 min (one write per client instead of two); so the default
# sitting (10,000 and 100,000, 3 seeds, 4 systems) takes 65-75 minutes plus the build.
# Each run's directory holds its report; OUT/uptime.txt has the load average before each
# step.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-results/runs/peers-$(date -u +%Y%m%dT%H%M%SZ)}
clients_list=${CLIENTS:-10000 100000}
seeds=${SEEDS:-1 2 3}
hold=${HOLD:-20s}
offer=${QUERY_OFFER:-50000}
systems=${SYSTEMS:-distro etcd etcd-shared1k zookeeper}
systems=${systems//,/ }
mkdir -p "$out"

# The loadgen options of a system of SYSTEMS at CLIENTS clients (into the array `sys`), or
# an error: system_options SYSTEM CLIENTS.
system_options() {
  case $1 in
    distro) sys=(--systems distro) ;;
    etcd) sys=(--systems etcd --etcd-lease per-client ${ETCD_OPTIONS:-}) ;;
    etcd-shared1k) sys=(--systems etcd --etcd-lease "shared:$(($2 / 1000 > 1 ? $2 / 1000 : 1))" ${ETCD_OPTIONS:-}) ;;
    etcd-shared) sys=(--systems etcd --etcd-lease shared ${ETCD_OPTIONS:-}) ;;
    zookeeper) sys=(--systems zookeeper --zk-sessions shared:16) ;;
    zookeeper-per-client) sys=(--systems zookeeper --zk-sessions per-client) ;;
    *)
      echo "peers.sh: SYSTEMS: unknown system '$1' (distro, etcd, etcd-shared1k, etcd-shared, zookeeper, zookeeper-per-client)" >&2
      return 2
      ;;
  esac
}
for s in $systems; do system_options "$s" 1; done

if [ -z "${LOADGEN:-}" ]; then
  cargo build --release --locked -p loadgen -p distro-server --features loadgen/etcd
fi
lg=${LOADGEN:-target/release/loadgen}

note() {
  printf '%s %s | %s\n' "$(date -u +%H:%M:%S)" "$*" "$(uptime)" | tee -a "$out/uptime.txt"
}

# step N SEED STEP SYSTEM ARGS...: one `loadgen compare` of SYSTEM into
# OUT/N/seed-SEED/STEP/SYSTEM (its log beside it, STEP-SYSTEM.log); its exit code goes to
# STEP/SYSTEM.rc and to OUT/steps.tsv, and a non-zero one does not stop the sitting.
step() {
  local n=$1 seed=$2 name=$3 system=$4
  shift 4
  local d=$out/$n/seed-$seed
  mkdir -p "$d/$name"
  system_options "$system" "$n"
  local rc=0
  "$lg" compare "${sys[@]}" --clients "$n" --seed "$seed" "$@" \
    --out "$d/$name/$system" >"$d/$name-$system.log" 2>&1 || rc=$?
  echo "$rc" >"$d/$name/$system.rc"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%H:%M:%S)" "$n" "$seed" "$name" "$system" "$rc" \
    >>"$out/steps.tsv"
  if [ "$rc" -eq 130 ]; then
    note "$n clients, seed $seed: $name $system interrupted (Ctrl-C): the sitting stops here"
    exit 130
  fi
  if [ "$rc" -ne 0 ]; then
    note "$n clients, seed $seed: $name $system exited $rc (not clean; recorded, going on): $(tail -n 1 "$d/$name-$system.log")"
  fi
}

base=(--services 1000 --heartbeat 5s --plain --no-history)
common=("${base[@]}" --require-clean)

for n in $clients_list; do
  for seed in $seeds; do
    d=$out/$n/seed-$seed
    for system in $systems; do
      note "$n clients, seed $seed: $system register"
      step "$n" "$seed" register "$system" --scenario register "${common[@]}"
    done
    for system in $systems; do
      note "$n clients, seed $seed: $system query, saturated at $offer/s offered"
      step "$n" "$seed" query-max "$system" --scenario query --rate "$offer" \
        --duration "$hold" "${base[@]}"
    done
    for system in $systems; do
      if half=$(python3 results/peers.py half-query-rate "$d/query-max/$system/compare.json" \
        "$system" 2>"$d/query-half-$system.skipped"); then
        rm -f "$d/query-half-$system.skipped"
        note "$n clients, seed $seed: $system queries at $half/s (half its maximum)"
        step "$n" "$seed" query-half "$system" --scenario query --rate "$half" \
          --duration "$hold" "${common[@]}"
      else
        note "$n clients, seed $seed: $system query-half skipped: $(cat "$d/query-half-$system.skipped")"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%H:%M:%S)" "$n" "$seed" query-half \
          "$system" skipped >>"$out/steps.tsv"
      fi
    done
    for system in $systems; do
      note "$n clients, seed $seed: $system push"
      step "$n" "$seed" push "$system" --scenario push --rate 200 --subscribers 2 \
        --duration "$hold" "${common[@]}"
    done
  done
done
note "done"
python3 results/peers.py table "$out"
