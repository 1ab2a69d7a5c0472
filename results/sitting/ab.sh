#!/bin/bash
# The 1 M registration burst, builds alternating, for a side-by-side sitting.
#
#   results/sitting/ab.sh OUT ROUNDS NAME...
#
# Runs `$BUILDS/b-NAME/loadgen --scenario register --clients 1m --heartbeat 15s --seed R
# --plain --no-history` for each NAME in turn, ROUNDS times (seed 7 r + 3 in round r), each
# under /usr/bin/time -v, writing OUT/NAME.R.{out,time,uptime}; then sum.py OUT. BUILDS
# defaults to /work/sitting; b-NAME/loadgen may be a wrapper script (flags, environment).
# Before each run 4 GiB are touched and freed, so that the run starts on memory the VM
# has not handed back to its host (see results/side-by-side-2026-12-05c.md); hold page
# reporting off for the sitting first:
#   echo 120000 > /sys/module/page_reporting/parameters/min_free_ms   (0 after)
# Stop everything else and check `uptime` before starting. With ORDER=rotate the builds'
# order turns by one each round (round r starts with the r-th build), so that no build
# always runs first or last after the memory touch: the twenty-eighth session found the
# build in a round's second place winning most rounds of its sittings.
set -eu
out=$1
rounds=$2
shift 2
builds=${BUILDS:-/work/sitting}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
names=("$@")
n=${#names[@]}
for r in $(seq 1 "$rounds"); do
  for i in $(seq 0 $((n - 1))); do
    if [ "${ORDER:-fixed}" = rotate ]; then
      b=${names[$(((i + r - 1) % n))]}
    else
      b=${names[$i]}
    fi
    python3 -c "b = bytearray(4 * 1024**3)"
    sleep 1
    uptime > "$out/$b.$r.uptime"
    (cd /tmp && /usr/bin/time -v "$builds/b-$b/loadgen" --scenario register --clients 1m \
      --heartbeat 15s --seed $((r * 7 + 3)) --plain --no-history \
      > "$out/$b.$r.out" 2> "$out/$b.$r.time") || true
  done
done
python3 "$here/sum.py" "$out"
