#!/usr/bin/env bash
# Instructions per request on the whole sans-IO request path (scan, digest auth,
# registry update, response writing), counted by callgrind: benches/registrar.rs
# run as `registrar ir CASE N` does N operations of one case, and callgrind
# collects only inside `Harness::handle` (--toggle-collect), so building the
# requests, setting up the case and the process's start and exit are not
# counted. Instruction counts do not depend on machine load, so they serve as
# regression checks on a shared, noisy machine; they do depend on the compiler
# and the dependencies, so compare figures from the same toolchain. Each case
# runs with N and 2N operations: the per-operation figures must agree within
# 1 %, otherwise the script fails (a cost that grows with the run, such as a
# table that keeps resizing, would show here). Needs valgrind
# (apt-get install -y valgrind). Usage: perf/register_ir.sh [N]   (N: 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
CASES=(options/retransmission register-noauth/new register/challenge register-digest/refresh)

if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [N]   (N: operations per case, a positive number)" >&2
    exit 2
fi
if ! command -v valgrind >/dev/null; then
    echo "valgrind not found: apt-get install -y valgrind" >&2
    exit 1
fi

build=$(cargo bench -p sipreg --bench registrar --no-run 2>&1) || {
    printf '%s\n' "$build" >&2
    echo "cargo bench --bench registrar --no-run failed" >&2
    exit 1
}
bin=$(printf '%s\n' "$build" | sed -n 's/.*(\(target\/[^)]*\)).*/\1/p' | tail -1)
if [[ ! -x $bin ]]; then
    printf '%s\n' "$build" >&2
    echo "no bench binary found in cargo's output" >&2
    exit 1
fi

ir() { # case operations -> instructions collected inside Harness::handle
    local out total
    if ! out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect='*Harness*handle*' "$bin" ir "$1" "$2" 2>&1); then
        printf '%s\n' "$out" | tail -20 >&2
        echo "callgrind run of '$1' ($2 operations) failed" >&2
        return 1
    fi
    total=$(printf '%s\n' "$out" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    if [[ -z $total || $total -eq 0 ]]; then
        echo "nothing collected for '$1': did Harness::handle get inlined or renamed?" >&2
        return 1
    fi
    echo "$total"
}

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- || commit="$commit+dirty"
echo "# perf/register_ir.sh  $(date '+%Y-%m-%d %H:%M:%S %z')  commit $commit"
echo "# $(rustc --version)  $(valgrind --version)"
echo "# instructions per Harness::handle, N=$N and 2N=$((2 * N)) operations per case"
printf '%-26s %12s %12s %8s\n' case "Ir/op N" "Ir/op 2N" "diff"
unstable=0
for case in "${CASES[@]}"; do
    one=$(ir "$case" "$N")
    two=$(ir "$case" "$((2 * N))")
    row=$(awk -v a="$one" -v b="$two" -v n="$N" -v name="$case" 'BEGIN {
        x = a / n; y = b / (2 * n); d = (y - x) / x * 100
        printf "%-26s %12.1f %12.1f %+7.2f%%", name, x, y, d
        exit (d > 1 || d < -1)
    }') || unstable=1
    echo "$row"
done
if ((unstable)); then
    echo "UNSTABLE: a per-operation figure differs by more than 1 % between N and 2N" >&2
    exit 1
fi
echo "# stable: every per-operation figure agrees within 1 % between N and 2N"
