#!/usr/bin/env bash
# Issue 11's wall time at 1,000 threads, from the command line (README, "Where a 1,000-thread
# command's time goes"): per round a fresh target (tests/targets/live/stress.c: main, 2
# spinners, 997 threads blocked in read(), in a session of its own as a server would be), then
# a first `inject`, `recover`, `inject` again (pages there, no registration to wait for) and
# `recover`; for each, the whole command's wall time (from before its exec to its exit, as a
# shell sees it) and the session's own (`live.wall_us` of --json). As root.
#
#   ROUNDS (default 12); THREADS (idle threads, default 997);
#   BIN_B=path: a second binary, run round by round after the first (an A/B; each binary gets
#   a fresh target of its own every round). BIN_A overrides the first (default: a release
#   build of this tree).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "as root: timeskew attaches with ptrace" >&2; exit 1; }
rounds=${ROUNDS:-12}
idle=${THREADS:-997}
work=$(mktemp -d)
target=""
cleanup() {
    exec 4>&- 2>/dev/null || true
    if [ -n "$target" ]; then
        kill "$target" 2>/dev/null || true
        wait "$target" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${BIN_A:-}" ]; then
    cargo build --release --quiet
    BIN_A=${CARGO_TARGET_DIR:-target}/release/timeskew
fi
gcc -O2 -pthread -o "$work/stress" tests/targets/live/stress.c

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) CPUs, $(uname -r)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds, $((idle + 3)) threads"

now_ns() { date +%s%N; }

# One timed command: appends "NAME STEP COMMAND_MS SESSION_US" to the results.
timed() {
    local name=$1 step=$2 bin=$3 op=$4 a b
    a=$(now_ns)
    "$bin" "$op" --pid "$target" "${@:5}" --json > "$work/out.json"
    b=$(now_ns)
    local session
    session=$(python3 -c 'import json,sys; print((json.load(open(sys.argv[1])).get("live") or {}).get("wall_us", 0))' "$work/out.json")
    echo "$name $step $(( (b - a) / 1000 )) $session" >> "$work/results"
}

round() {
    local name=$1 bin=$2
    rm -f "$work/in" "$work/ready"
    mkfifo "$work/in"
    setsid "$work/stress" -s 2 -i "$idle" < "$work/in" > "$work/ready" 2>&1 &
    target=$!
    exec 4>"$work/in"
    until grep -q '^ready pid=' "$work/ready"; do sleep 0.01; done
    # setsid may fork: the target is the pid it prints.
    target=$(grep -o 'ready pid=[0-9]*' "$work/ready" | grep -o '[0-9]*$')
    # Its threads have reached their read() (the line comes once every thread runs).
    sleep 0.3
    timed "$name" inject "$bin" inject --offset -600s
    timed "$name" recover "$bin" recover
    timed "$name" again "$bin" inject --offset -600s
    timed "$name" recover-again "$bin" recover
    exec 4>&-
    kill "$target" 2>/dev/null || true
    # Not our child after setsid's fork: wait until it is gone.
    while kill -0 "$target" 2>/dev/null; do sleep 0.01; done
    target=""
}

for _ in $(seq "$rounds"); do
    round A "$BIN_A"
    if [ -n "${BIN_B:-}" ]; then round B "$BIN_B"; fi
done

python3 - "$work/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, step, ms, us = line.split()
    rows.setdefault((name, step), ([], []))
    rows[(name, step)][0].append(int(ms) / 1000)
    rows[(name, step)][1].append(int(us) / 1000)
def fig(v):
    v = sorted(v)
    q = lambda f: v[min(len(v) - 1, int(f * len(v)))]
    return f"{statistics.median(v):.1f} ({q(0.25):.1f}–{q(0.75):.1f}) / {v[-1]:.1f}"
names = sorted({n for n, _ in rows})
print("| binary | step | command, ms: median (quartiles) / worst | session, ms |")
print("|---|---|---|---|")
for step in ["inject", "recover", "again", "recover-again"]:
    for name in names:
        if (name, step) in rows:
            c, s = rows[(name, step)]
            print(f"| {name} | {step} | {fig(c)} | {fig(s)} |")
EOF
