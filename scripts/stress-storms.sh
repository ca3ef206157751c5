#!/bin/bash
# Inject / update / recover cycles against a process that forks, vforks, posix_spawns and makes
# threads all the time (tests/targets/campaign/spawner.c), every timeskew run logged at
# RUST_LOG (default timeskew=debug); stops at the first failed run (its log kept in $OUT/fail.log)
# and at the end asks the target whether any child crashed. Finds what the campaign's storms
# test finds, with the logs to see why. As root:
#   scripts/stress-storms.sh [CYCLES]     (TIMESKEW=path/to/timeskew, default target/debug)
set -u
cd "$(dirname "$0")/.."
N=${1:-300}
TS=${TIMESKEW:-${CARGO_TARGET_DIR:-target}/debug/timeskew}
OUT=$(mktemp -d /tmp/stress-storms.XXXXXX)
cc -O2 -g -pthread -Wall -o "$OUT/spawner" tests/targets/campaign/spawner.c || exit 1
coproc T { exec "$OUT/spawner" -f 300 -v 200 -S 200 -T 500 -t 1 \
    -o -600000000000 -o 3600000000000 -m 3600000000000 2>"$OUT/target.err"; }
read -r -t 5 line <&"${T[0]}" || { echo "target did not get ready"; exit 1; }
pid=${line##*pid=}
finish() { kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; echo "logs: $OUT"; exit "$1"; }
for c in $(seq 1 "$N"); do
  for a in "inject --pid $pid --offset -600s" \
           "inject --pid $pid --offset +1h --clock realtime,monotonic" "recover --pid $pid"; do
    # shellcheck disable=SC2086
    RUST_LOG=${RUST_LOG:-timeskew=debug} timeout -k 1 10 "$TS" $a >"$OUT/out" 2>"$OUT/log"
    rc=$?
    if [ $rc != 0 ]; then
      echo "cycle $c: timeskew $a: exit $rc"; tail -2 "$OUT/log" | cut -c1-400
      cp "$OUT/log" "$OUT/fail.log"; finish 1
    fi
  done
done
echo storms >&"${T[1]}"; read -r -t 2 l <&"${T[0]}"; echo "$N cycles; $l"
grep CRASH "$OUT/target.err" | head -3
case "$l" in *"child_errors=0 child_crashes=0"*) finish 0 ;; *) finish 1 ;; esac
