#!/usr/bin/env bash
# Instructions per scanned REGISTER, counted by callgrind: sipreg's scan alone,
# sipreg's scan plus the views a registrar reads, httparse::parse_headers on the
# same header bytes, and rsip. Instruction counts do not depend on machine load,
# so the ratios are stable on a shared machine. Usage: perf/scan_ir.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
bin=$(cargo bench -p sipreg --bench scan_ir --no-run 2>&1 | sed -n 's/.*(\(target\/[^)]*\)).*/\1/p' | tail -1)
ir() { # case capture iterations -> total instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" "$3" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-42s %14s %14s %14s %14s\n' capture sipreg-scan sipreg-views httparse rsip
for capture in hikvision-gb28181/03-register-auth.sip linphone-asterisk/03-register-auth.sip eyebeam-asterisk/03-register-auth.sip; do
    row=()
    for case in sipreg-scan sipreg-views httparse rsip; do
        base=$(ir "$case" "$capture" 0)
        total=$(ir "$case" "$capture" "$N")
        row+=($(( (total - base) / N )))
    done
    printf '%-42s %14s %14s %14s %14s\n' "$capture" "${row[@]}"
done
