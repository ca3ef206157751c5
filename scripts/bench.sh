#!/usr/bin/env bash
# Runs the benchmark report (as root). `cargo bench` does not build examples, and the benchmark
# drives the `probe` example as its target process, so build it first.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v faketime >/dev/null || echo "note: install faketime (apt-get install faketime) for the libfaketime column" >&2
cargo build --release --examples
cargo bench --bench timeskew
