#!/usr/bin/env bash
# Runs Strata's whole test suite, first installing the system packages it
# needs (QEMU for the cross-VMM tests, binutils for the guest-image gate) on
# a Debian machine. Run as root, or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v qemu-storage-daemon >/dev/null || missing+=(qemu-system-x86)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
command -v objdump >/dev/null || missing+=(binutils)
command -v unshare >/dev/null && command -v setpriv >/dev/null || missing+=(util-linux)

if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    # Some images carry a newer qemu-utils from backports that conflicts with
    # the distribution's qemu-system-x86; then take both from the release.
    if ! $sudo apt-get install -y -qq qemu-system-x86 qemu-utils binutils util-linux; then
        codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
        $sudo apt-get install -y -qq --allow-downgrades qemu-system-x86 \
            "qemu-utils/$codename" binutils util-linux
    fi
fi

# The layer parser under libFuzzer for a bounded time (installs cargo-fuzz).
# It runs first so that the test runner's summary is the last thing printed.
scripts/fuzz.sh "${STRATA_FUZZ_SECONDS:-30}"

cargo test --workspace --locked "$@"
