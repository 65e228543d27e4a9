#!/usr/bin/env bash
# perf/generator.sh — the load generator's own CPU per digest registration:
# sipload against sipp (issue 5: sipload ≤ 1/3 of sipp's).
#
# sipreg (one worker, core SERVER_CPU, --password, MD5 challenges; a fresh
# process per run), the generators on core CLIENT_CPU, in one run:
#   1. sipp (tests/sipp/register_digest.xml, one user per call, -r SIPP_RATE
#      -l SIPP_LIMIT: flat out, as perf/compare.sh runs it): its rate R and its
#      CPU per successful call (rusage of the sipp process);
#   2. sipload `register` open loop at R (the rate sipp reached), DURATION s;
#   3. the same with --batch-us B for each B in BATCH_US (sipp itself paces
#      and reads in 1 ms steps by default: -timer_resol 1);
#   4. sipload `register` closed loop (WINDOW) at its maximum, MAX_DURATION s.
# Generator µs CPU/op = its user+system CPU / completed digest registrations
# (REGISTER → 401 → REGISTER → 200, the same exchange for both tools); the
# server's CPU per op is shown beside it. Uses lib.sh's measure.
#
# Environment (defaults):
#   SIPP_CALLS=100000 SIPP_RATE=100000 SIPP_LIMIT=100 SIPP_ARGS="" DURATION=10
#   BATCH_US="200 1000" WINDOW=256 MAX_DURATION=5 SERVER_CPU=0 CLIENT_CPU=1
#   QUIET_MAX=15 QUIET_WAIT=10 BIN=target/release OUT=perf/out/generator-YYYYmmdd-HHMMSS
set -euo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT"

SIPP_CALLS=${SIPP_CALLS:-100000}
SIPP_RATE=${SIPP_RATE:-100000}
SIPP_LIMIT=${SIPP_LIMIT:-100}
SIPP_ARGS=${SIPP_ARGS:-}
DURATION=${DURATION:-10}
BATCH_US=${BATCH_US:-"200 1000"}
WINDOW=${WINDOW:-256}
MAX_DURATION=${MAX_DURATION:-5}
OUT=${OUT:-$PERF_ROOT/perf/out/generator-$(date +%Y%m%d-%H%M%S)}
RESULTS=$OUT/results.jsonl

trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

(($(nproc) >= 2)) || die "needs 2 cores"
command -v sipp >/dev/null || die "sipp not installed (apt-get install sip-tester)"
perf_prepare_bins
{
    perf_env_header
    echo "sipp: $({ sipp -v 2>/dev/null || true; } | grep -m1 -o 'v[0-9][0-9.]*') -r $SIPP_RATE -l $SIPP_LIMIT, $SIPP_CALLS calls $SIPP_ARGS"
    echo "settings: DURATION=$DURATION BATCH_US='$BATCH_US' WINDOW=$WINDOW MAX_DURATION=$MAX_DURATION; sipreg 1 worker core $SERVER_CPU, generators core $CLIENT_CPU"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2

meta() { # generator phase load rate
    printf '{"server":"sipreg","scenario":"register","generator":"%s","phase":"%s","load":"%s","offered_rate":%s}' \
        "$1" "$2" "$3" "${4:-null}"
}

# A fresh sipreg for every run (its nonce-count table keeps every run's nonces
# for their lifetime).
start_sipreg "$OUT/logs/sipreg-sipp.log"
log "sipreg pid $SRV_PID on $SRV_ADDR"

# 1. sipp at its own ceiling
users=$OUT/sipp-users.csv
awk -v n="$SIPP_CALLS" 'BEGIN { print "SEQUENTIAL";
    for (i = 1; i <= n; i++) printf "sipp%07d;secret;[authentication username=sipp%07d password=secret]\n", i, i }' >"$users"
sipp_timeout=$((SIPP_CALLS / 2000 + 60))
MEASURE_TIMEOUT=$((sipp_timeout + 30))
# shellcheck disable=SC2086
measure sipp "$OUT/json/sipp.stat.csv" "$(meta sipp sipp "sipp -r $SIPP_RATE -l $SIPP_LIMIT" "$SIPP_RATE")" \
    -- sipp "$SRV_ADDR" -sf "$PERF_ROOT/tests/sipp/register_digest.xml" -inf "$users" \
    -key ctransport udp -t u1 -i 127.0.0.1 -bind_local \
    -m "$SIPP_CALLS" -r "$SIPP_RATE" -l "$SIPP_LIMIT" \
    -timeout "${sipp_timeout}s" -timeout_error -recv_timeout 5s \
    -default_behaviors all,-bye -nostdin \
    -trace_stat -stf "$OUT/json/sipp.stat.csv" -fd 1 \
    -trace_err -error_file "$OUT/logs/sipp-errors.log" $SIPP_ARGS
stop_server
rate=$(python3 -c 'import json,sys; print(int([json.loads(l) for l in open(sys.argv[1])][-1]["achieved_rate"]))' "$RESULTS")
((rate > 0)) || die "sipp completed no call"
devices=$((rate * DURATION > 300000 ? 300000 : rate * DURATION + 1000))

# 2.–4. sipload: at sipp's rate, batched, and at its maximum
MEASURE_TIMEOUT=$((DURATION + 120))
# sipload_run TAG PHASE LOAD RATE ARGS...: one sipload run against a fresh sipreg.
sipload_run() {
    local tag=$1 phase=$2 load=$3 r=$4
    shift 4
    start_sipreg "$OUT/logs/sipreg-$tag.log"
    measure sipload "$OUT/json/$tag.json" "$(meta sipload "$phase" "$load" "$r")" \
        -- "$BIN/sipload" --target "$SRV_ADDR" --scenario register --user-prefix gen \
        --devices "$devices" --password secret --realm sipreg --json --quiet "$@"
    stop_server
}
sipload_run sipload-rate "open loop at sipp's rate" "rate $rate/s" "$rate" --rate "$rate" --duration "$DURATION"
for batch in $BATCH_US; do
    sipload_run "sipload-batch$batch" "open loop, --batch-us $batch" "rate $rate/s" "$rate" \
        --rate "$rate" --duration "$DURATION" --batch-us "$batch"
done
sipload_run sipload-max "closed loop maximum" "window $WINDOW" null --window "$WINDOW" --duration "$MAX_DURATION"

python3 - "$RESULTS" "$OUT/env.txt" >"$OUT/table.md" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = open(sys.argv[2]).read().strip().splitlines()
print("## Generator cost: sipload vs sipp, digest registrations against sipreg\n")
for l in env:
    print(f"- {l}")
f = lambda v, d=1: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}")
sipp = next((r for r in recs if r["generator"] == "sipp"), {})
base = sipp.get("generator_cpu_us_per_op")
print("\n| generator | run | achieved/s | completed | failed/errors | **generator µs CPU/op** | generator CPU % | / sipp's | server µs CPU/op | p50 µs | p99 µs | other procs % |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in recs:
    g = r.get("generator_cpu_us_per_op")
    ratio = f"**{g / base:.2f}**" if g and base and r is not sipp else "1"
    print(f"| {r['generator']} | {r['phase']} | {f(r.get('achieved_rate'), 0)} | {f(r.get('completed'))} | {f(r.get('errors'))} | "
          f"**{f(g, 2)}** | {f(r.get('generator_cpu_pct'))} | {ratio} | {f(r.get('server_cpu_us_per_op'), 2)} | "
          f"{f(r.get('p50_us'))} | {f(r.get('p99_us'))} | {f(r.get('other_cpu_pct'))} |")
print("\nOne operation = one digest registration (REGISTER → 401 → REGISTER with Authorization → 200). "
      "Target (issue 5): sipload ≤ 1/3 of sipp's CPU per registration.")
PY
cat "$OUT/table.md"
log "raw JSON, logs and table.md in $OUT"
