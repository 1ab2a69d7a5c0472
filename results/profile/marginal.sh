#!/bin/bash
# Instructions per client of the whole registration burst (load generator and three
# embedded nodes), measured with Callgrind at two client counts (see marginal.py):
#
#   results/profile/marginal.sh LOADGEN [SMALL BIG]     (default 40000 80000)
#
# Both counts stay well inside one heartbeat interval under Valgrind (a 100,000-client
# run takes ~13 s there, near the 15 s interval; past it the beats of the registered
# clients pile up and the run stops measuring registrations). Takes ~2 minutes.
set -eu
bin=$(realpath "$1")
small=${2:-40000}
big=${3:-80000}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
for c in "$small" "$big"; do
  (cd "$dir" && valgrind --tool=callgrind --cache-sim=no --callgrind-out-file="$dir/$c.out" \
    "$bin" --scenario register --clients "$c" --heartbeat 15s --seed 10 --plain --no-history \
    > "$dir/$c.log" 2> "$dir/$c.err")
  grep -h "registration phase\|failovers" "$dir/$c.log" | sed "s/^/$c clients: /"
done
python3 "$here/marginal.py" "$dir/$small.out" "$dir/$big.out" $((big - small))
echo "profiles and logs: $dir"
