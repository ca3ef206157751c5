#!/bin/sh
# Issue 11's figures (benches/stops.rs): longest stop of any thread for a first injection and
# a recover, one thread at a time against all at once, at 6 and 1,000 threads, idle and with
# busy CPUs. As root. TIMESKEW_STOPS_ROUNDS sets the rounds (default 7).
set -e
cd "$(dirname "$0")/.."
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) CPUs, $(uname -r)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench stops
