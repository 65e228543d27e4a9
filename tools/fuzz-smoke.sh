#!/usr/bin/env bash
# A bounded libFuzzer run of every fuzz target (issue 6: "a bounded run, under a
# minute per target"), seeded with the device captures, RFC 4475's messages and
# the saved regressions. Exits non-zero on the first crash, leak or timeout and
# says where libFuzzer put the input; copy it into fuzz/regressions/ with a
# descriptive name (without the leading selector byte of `request`/`frame`
# inputs, see tests/fuzz_replay.rs) and fix the cause.
#
# Usage: tools/fuzz-smoke.sh [SECONDS_PER_TARGET] [TARGET...]
#   defaults: 30 seconds; targets scan, frame and request.
# Needs: the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags
# cargo-fuzz passes) and cargo-fuzz, installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(scan frame request)
fi
for dir in ../shared/fixtures ../shared/rfc4475; do
    [ -d "$dir" ] || { echo "fuzz-smoke: seed directory $dir missing" >&2; exit 2; }
done
shared=$(cd ../shared && pwd)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
# Build every target first, so a build failure is not reported as a crash and
# the per-target time below is fuzzing time only. -O -a: optimised, but with
# overflow checks and debug assertions, so arithmetic that would silently wrap
# in a release build is a finding too.
start=$(date +%s)
for t in "${targets[@]}"; do
    cargo fuzz build -O -a "$t"
done
echo "fuzz-smoke: build took $(( $(date +%s) - start ))s" >&2

for t in "${targets[@]}"; do
    # libFuzzer writes new inputs into its first corpus directory: a fresh one
    # per run keeps the shared seeds (and fuzz/corpus/, if any) untouched.
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "fuzz-smoke: $t for ${secs}s" >&2
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: memory
    # growth is a finding too (the request target rebuilds its table).
    if ! cargo fuzz run -O -a "$t" "$work" "$shared/fixtures" "$shared/rfc4475" "$PWD/regressions" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -dict="$PWD/sip.dict" \
        -print_final_stats=1; then
        echo "fuzz-smoke: target $t failed; the input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
    rm -rf "$work"
    trap - EXIT
done
echo "fuzz-smoke: ${targets[*]}: no findings in ${secs}s each" >&2
