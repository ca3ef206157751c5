#!/usr/bin/env bash
# What the helper's scheduler weight buys (README, "The command line's helper at the highest
# scheduler weight"): the longest stop of a first `inject` and a `recover` of a fresh 6-thread
# target (tests/targets/live/stress.c: 1 spinner, 4 idle), with two busy loops in a session of
# their own, the same release binary run as is and without CAP_SYS_NICE (then its helper keeps
# the default weight), alternating round by round. As root. ROUNDS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "as root: timeskew attaches with ptrace" >&2; exit 1; }
command -v setpriv >/dev/null || { echo "setpriv (util-linux) is needed" >&2; exit 1; }
rounds=${ROUNDS:-16}
work=$(mktemp -d)
busy_sid=""
cleanup() {
    [ -n "$busy_sid" ] && pkill -s "$busy_sid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/timeskew
gcc -O2 -pthread -o "$work/stress" tests/targets/live/stress.c

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) CPUs, $(uname -r)," \
     "autogroups $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo n/a)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# The competing work: one busy loop per CPU, in a session of its own (as another service is).
setsid sh -c 'for i in $(seq '"$(nproc)"'); do (while :; do :; done) & done; wait' &
busy_sid=$!
sleep 0.5

# One round: a fresh target, then `inject` and `recover` by "$@"; prints "INJECT RECOVER" (µs).
round() {
    mkfifo "$work/in"
    "$work/stress" -s 1 -i 4 < "$work/in" > "$work/out" 2>&1 &
    local target=$!
    exec 4>"$work/in"
    until grep -q '^ready' "$work/out"; do sleep 0.01; done
    local i r
    i=$("$@" inject --pid "$target" --offset -600s | grep -o 'longest [0-9]* µs' | grep -o '[0-9]*')
    r=$("$@" recover --pid "$target" | grep -o 'longest [0-9]* µs' | grep -o '[0-9]*')
    exec 4>&-
    kill "$target" 2>/dev/null || true
    wait "$target" 2>/dev/null || true
    rm -f "$work/in"
    echo "$i $r"
}

for _ in $(seq "$rounds"); do
    echo "weighted $(round "$bin")" >> "$work/results"
    echo "default $(round setpriv --bounding-set -sys_nice --inh-caps -sys_nice "$bin")" >> "$work/results"
done

python3 - "$work/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, inject, recover = line.split()
    rows.setdefault(name, ([], []))
    rows[name][0].append(int(inject))
    rows[name][1].append(int(recover))
print(f"| helper ({len(rows['default'][0])} rounds, µs, median / worst) | first inject, longest stop | recover, longest stop |")
print("|---|---|---|")
for name, label in [("default", "default weight (no CAP_SYS_NICE)"), ("weighted", "autogroup nice -20")]:
    i, r = rows[name]
    print(f"| {label} | {statistics.median(i):.0f} / {max(i)} | {statistics.median(r):.0f} / {max(r)} |")
EOF
