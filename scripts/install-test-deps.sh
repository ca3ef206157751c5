#!/usr/bin/env bash
# Installs what the end-to-end suites (tests/runtimes.rs, tests/servers.rs, tests/containers.rs)
# need on a fresh Debian 12 machine: the toolchains that build the test targets, the servers
# they skew, and podman for real containers (daemonless: nothing to start).
# Idempotent: packages already present are left alone, and apt is not touched at all when
# nothing is missing. Run as root; `sudo scripts/test.sh` (and so .ci/run) runs it first.
set -euo pipefail

packages=(
    build-essential     # cc -static (static glibc target)
    musl-tools          # musl-gcc (static musl target)
    golang-go           # Go targets, with and without cgo
    openjdk-17-jdk-headless
    nodejs
    python3
    redis-server redis-tools
    etcd-server etcd-client
    postgresql-15 postgresql-client-15
    # tests/containers.rs: podman runs the containers with runc (crun, podman's first choice,
    # refuses a hybrid cgroup v1/v2 layout; runc satisfies podman's "crun | runc"); the image is
    # busybox-static alone (it replaces a dynamic `busybox` package if one is installed).
    podman runc busybox-static
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-test-deps: everything present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
fi

echo "install-test-deps: installing ${missing[*]}"
# The suites start their own servers on free loopback ports with temporary data directories:
# keep the packages' system services from starting during the install (Debian's policy-rc.d
# convention), unless the machine already has a policy in place.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
