#!/usr/bin/env bash
# The figures of `inject --follow` in the README, from the release build and a real podman
# container: 200 programs exec'd in a tight loop inside the container (each skewed at its exec
# stop), then 20 `podman exec` of a static program entering from outside. Prints how many read
# the skewed clock and the follow summary (--json). Needs root, podman, runc, busybox-static and
# cc (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/timeskew
work=$(mktemp -d)
name=timeskew-figures-$$
pm() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }
cleanup() {
    pm rm -f -t 0 "$name" >/dev/null 2>&1 || true
    pm rmi -f "localhost/timeskew-figures:$$" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The image: busybox-static and a static program that prints its clock once.
mkdir -p "$work/root/bin"
cp /bin/busybox "$work/root/bin/busybox"
for applet in sh sleep date seq; do ln -s busybox "$work/root/bin/$applet"; done
cc -static -O2 -pthread -o "$work/root/bin/clocks" tests/targets/run/clocks.c
tar -C "$work/root" -cf "$work/root.tar" .
pm import -q "$work/root.tar" "localhost/timeskew-figures:$$" >/dev/null
id=$(pm run -d --name "$name" --network none --ulimit nofile=1024:1024 \
    --ulimit nproc=1024:1024 "localhost/timeskew-figures:$$" /bin/sleep 1000000)

"$bin" inject --container "$id" --offset -600s --follow --json >"$work/summary.json" &
follower=$!
main=$(pm inspect --format '{{.State.Pid}}' "$id")
while grep -q "TracerPid:	0" "/proc/$main/status"; do sleep 0.01; done

pm exec "$name" sh -c 'i=0; while [ $i -lt 200 ]; do /bin/clocks; i=$((i+1)); done' >"$work/loop.txt"
for _ in $(seq 20); do pm exec "$name" /bin/clocks >>"$work/exec.txt"; done
kill -INT "$follower"
wait "$follower" || true

real=$(date +%s)
skewed() { awk -v r="$real" '{ split($2, a, "="); if (a[2] < r - 300) n++ } END { print n + 0 }' "$1"; }
echo "loop: $(skewed "$work/loop.txt") of $(wc -l <"$work/loop.txt") programs skewed"
echo "podman exec: $(skewed "$work/exec.txt") of $(wc -l <"$work/exec.txt") programs skewed"
cat "$work/summary.json"
