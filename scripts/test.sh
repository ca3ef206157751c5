#!/usr/bin/env bash
# The whole test run, on a fresh machine too: `sudo scripts/test.sh`.
#
#   1. installs what the end-to-end suites need and is missing (scripts/install-test-deps.sh:
#      Go, musl, Java, Node, Python, Redis, etcd, PostgreSQL; apt is not touched when nothing
#      is missing);
#   2. cargo fmt --check and cargo clippy (warnings are errors);
#   3. cargo test: every suite — unit, core and end-to-end (README.md lists which needs what).
#
# As root: the tests ptrace real processes, and the installs use apt. `.ci/run` calls exactly
# this script. Extra arguments go to `cargo test` (e.g. `sudo scripts/test.sh --test run`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: run as root (sudo scripts/test.sh): the tests ptrace real processes and" \
         "the set-up installs packages" >&2
    exit 1
fi

# sudo's secure_path usually leaves out the invoking user's ~/.cargo/bin.
if ! command -v cargo >/dev/null; then
    for home in ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)"} "$HOME" /root; do
        if [ -x "$home/.cargo/bin/cargo" ]; then
            export PATH="$home/.cargo/bin:$PATH"
            break
        fi
    done
fi
command -v cargo >/dev/null || {
    echo "test.sh: cargo not found: install a Rust toolchain (https://rustup.rs)" >&2
    exit 1
}

step() { printf '\n==> %s\n' "$*"; }

step "installing what is missing"
bash scripts/install-test-deps.sh
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null; then
            rustup component add "$component"
        else
            echo "test.sh: cargo ${component/rustfmt/fmt} is missing: install the $component component" >&2
            exit 1
        fi
    fi
done
# (Further set-up — e.g. podman for container targets — goes here, idempotent like the above.)

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# The library alone, as a dependency without the `cli` feature, builds clean too.
step "cargo clippy --lib --no-default-features --locked -- -D warnings"
cargo clippy --lib --no-default-features --locked -- -D warnings

# The README's demo runs the release build: its assembly must assemble there too.
step "cargo build --release --locked"
cargo build --release --locked

# The crate docs are the library's user guide: no broken links in them.
step "cargo doc --no-deps --locked (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked

step "python3 scripts/module-cycles.py"
python3 scripts/module-cycles.py

# --no-fail-fast: every suite runs and reports, also after one has failed.
step "cargo test --locked --no-fail-fast $*"
cargo test --locked --no-fail-fast "$@"
