#!/usr/bin/env bash
# Fuzzes the storage engine's layer parser (src/storage/fuzz, target
# `layer_parser`) for a bounded time: the first argument, in seconds
# (default 30). Exits non-zero if the target crashes; the crashing input is
# kept under src/storage/fuzz/artifacts/layer_parser/.
#
# Runs on stable Rust: cargo-fuzz's default AddressSanitizer needs nightly,
# so the target is built with `--sanitizer none` (libFuzzer's coverage
# guidance, debug assertions and overflow checks stay on). Installs
# cargo-fuzz, and a C++ compiler for libFuzzer, if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
fuzz_dir=src/storage/fuzz
target=layer_parser

if ! command -v c++ >/dev/null; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "scripts/fuzz.sh: installing g++ (libFuzzer is C++)" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# The target keeps its fixture files under $TMPDIR (in memory if possible:
# every input is flushed with fdatasync); remove them afterwards.
work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work

# The virtio-blk request parser (src/blk/fuzz, target `request_parser`):
# guest-controlled descriptor chains and memory. It needs no seeds.
blk_seconds=$(( seconds / 3 > 5 ? seconds / 3 : 5 ))
seconds=$(( seconds - blk_seconds > 5 ? seconds - blk_seconds : 5 ))
cargo fuzz run --fuzz-dir src/blk/fuzz --sanitizer none request_parser -- \
    -max_total_time="$blk_seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

cargo fuzz build --fuzz-dir "$fuzz_dir" --sanitizer none "$target"

# Seeds: small valid layers the target writes itself, so they always match
# the current format. New inputs the fuzzer finds accumulate beside them.
host=$(rustc -vV | sed -n 's/^host: //p')
corpus=$fuzz_dir/corpus/$target
STRATA_FUZZ_WRITE_SEEDS=$corpus "$fuzz_dir/target/$host/release/$target"

cargo fuzz run --fuzz-dir "$fuzz_dir" --sanitizer none "$target" "$corpus" -- \
    -max_total_time="$seconds" -max_len=20480 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
