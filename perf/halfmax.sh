#!/usr/bin/env bash
# perf/halfmax.sh — latency at half the maximum rate (issue 5: p99 < 1 ms).
#
# For each scenario, sipreg (one worker, core SERVER_CPU, a fresh process for
# every run) is driven by sipload (core CLIENT_CPU):
#   1. closed loop (WINDOW flows outstanding, MAX_DURATION s): the maximum R;
#   2. open loop at R/2 (FRACTION) for DURATION s: p50/p99/p99.9/max of a whole
#      flow (register: REGISTER → 401 → REGISTER → 200, two round trips), with
#      the server's CPU per operation and its share of its core;
#   3. the same open loop again with BATCH_US (the generator wakes every
#      BATCH_US µs instead of per datagram; the server then sees bursts), when
#      BATCH_US is not empty;
#   4. for register-noauth (and options), each open loop also against the bare
#      responder (sipload --responder) at the same rate: the latency floor of
#      this machine, kernel and generator.
# Uses lib.sh's measure (server CPU from /proc/PID/stat, generator CPU, other
# processes' CPU meanwhile, a bounded wait for a quiet machine before each run).
# Prints a markdown table (also OUT/table.md); raw records in OUT/results.jsonl.
#
# Environment (defaults):
#   SCENARIOS="register register-noauth" WINDOW=256 MAX_DURATION=5 DURATION=10
#   FRACTION=0.5 BATCH_US="" (e.g. 200) GEN_THREADS=1 SIPLOAD_ARGS=""
#   REPEAT=1         runs of each kind (max, then each open loop), alternating;
#                    the half rate comes from the highest maximum
#   SIPREG_ARGS="" SERVER_CPU=0 CLIENT_CPU=1 QUIET_MAX=15 QUIET_WAIT=10
#   BIN=target/release OUT=perf/out/halfmax-YYYYmmdd-HHMMSS
set -euo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT"

SCENARIOS=${SCENARIOS:-"register register-noauth"}
WINDOW=${WINDOW:-256}
MAX_DURATION=${MAX_DURATION:-5}
DURATION=${DURATION:-10}
FRACTION=${FRACTION:-0.5}
BATCH_US=${BATCH_US:-}
GEN_THREADS=${GEN_THREADS:-1}
REPEAT=${REPEAT:-1}
SIPLOAD_ARGS=${SIPLOAD_ARGS:-}
SIPREG_ARGS=${SIPREG_ARGS:-}
OUT=${OUT:-$PERF_ROOT/perf/out/halfmax-$(date +%Y%m%d-%H%M%S)}
RESULTS=$OUT/results.jsonl

trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

(($(nproc) >= 2)) || die "needs 2 cores (server on $SERVER_CPU, generator on $CLIENT_CPU)"
perf_prepare_bins
{
    perf_env_header
    echo "settings: SCENARIOS='$SCENARIOS' WINDOW=$WINDOW MAX_DURATION=$MAX_DURATION DURATION=$DURATION FRACTION=$FRACTION BATCH_US='$BATCH_US' REPEAT=$REPEAT GEN_THREADS=$GEN_THREADS SIPREG_ARGS='$SIPREG_ARGS' SIPLOAD_ARGS='$SIPLOAD_ARGS'"
    echo "pinning: sipreg (1 worker) core $SERVER_CPU, sipload core $CLIENT_CPU"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2

meta() { # scenario phase load rate devices run [server]
    printf '{"server":"%s","scenario":"%s","phase":"%s","load":"%s","offered_rate":%s,"devices":%s,"run":%s}' \
        "${7:-sipreg}" "$1" "$2" "$3" "${4:-null}" "$5" "$6"
}

for scenario in $SCENARIOS; do
    case $scenario in
    register | refresh | options | keepalive) kind=sipreg ;;
    register-noauth) kind=sipreg-noauth ;;
    *) die "unknown scenario $scenario" ;;
    esac
    log "== $scenario"
    args=()
    [[ $kind == sipreg-noauth ]] && args+=(--no-auth)
    # shellcheck disable=SC2206
    args+=($SIPREG_ARGS)
    # A fresh server for every run: each digest registration leaves its nonce in
    # sipreg's nonce-count table for the nonce's lifetime, so runs on one server
    # would see each other's load (and a full table refuses new nonces).
    devices=50000
    MEASURE_TIMEOUT=$((MAX_DURATION + 120))
    max=0
    for ((i = 1; i <= REPEAT; i++)); do
        start_sipreg "$OUT/logs/$scenario-max-$i.log" "${args[@]}"
        # shellcheck disable=SC2086
        measure sipload "$OUT/json/$scenario-max-$i.json" "$(meta "$scenario" max "window $WINDOW" null "$devices" "$i")" \
            -- "$BIN/sipload" --target "$SRV_ADDR" --scenario "$scenario" --devices "$devices" \
            --window "$WINDOW" --duration "$MAX_DURATION" --threads "$GEN_THREADS" \
            --password secret --realm sipreg --json --quiet $SIPLOAD_ARGS
        stop_server
        max=$(python3 -c 'import json,sys; print(max(float(sys.argv[2]), json.load(open(sys.argv[1]))["rate_per_s"]))' \
            "$OUT/json/$scenario-max-$i.json" "$max")
    done
    rate=$(python3 -c "print(int($max * $FRACTION))")
    # every open-loop flow a different device, at most 300 000
    devices=$(python3 -c "print(max(1000, min(300000, int($rate * $DURATION * 1.05))))")
    MEASURE_TIMEOUT=$((DURATION + 120))
    for ((i = 1; i <= REPEAT; i++)); do
        for batch in "" $BATCH_US; do
            extra=()
            [[ -n $batch ]] && extra=(--batch-us "$batch")
            # sipreg, then (for the scenarios it can answer) the bare responder at
            # the same rate: the floor this machine and generator impose
            for server in sipreg responder; do
                [[ $server == responder && $scenario != register-noauth && $scenario != options ]] && continue
                tag=$scenario-half${batch:+-batch$batch}-$i
                [[ $server == responder ]] && tag+=-responder
                if [[ $server == sipreg ]]; then
                    start_sipreg "$OUT/logs/$tag.log" "${args[@]}"
                else
                    start_responder "$OUT/logs/$tag.log"
                fi
                # shellcheck disable=SC2086
                measure sipload "$OUT/json/$tag.json" \
                    "$(meta "$scenario" "half${batch:+ batch $batch µs}" "rate $rate/s" "$rate" "$devices" "$i" "$server")" \
                    -- "$BIN/sipload" --target "$SRV_ADDR" --scenario "$scenario" --devices "$devices" \
                    --rate "$rate" --duration "$DURATION" --threads "$GEN_THREADS" "${extra[@]}" \
                    --password secret --realm sipreg --json --quiet $SIPLOAD_ARGS
                stop_server
            done
        done
    done
done

python3 - "$RESULTS" "$OUT/env.txt" "$OUT/json" >"$OUT/table.md" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = open(sys.argv[2]).read().strip().splitlines()
print("## Latency at half the maximum rate (one worker)\n")
for l in env:
    print(f"- {l}")
print("\n| server | scenario | run | # | offered/s | achieved/s | completed | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | server µs CPU/op | server CPU % | generator CPU % | errors | timeouts | retrans | other procs % | p99 < 1 ms |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for r in recs:
    tag = r["scenario"] + ("-max" if r["phase"] == "max" else "-half" + (("-batch" + r["phase"].split()[2]) if "batch" in r["phase"] else "")) + f"-{r['run']}" + ("-responder" if r["server"] == "responder" else "")
    try:
        lat = json.load(open(f"{sys.argv[3]}/{tag}.json"))["latency_us"]
    except Exception:
        lat = {}
    f = lambda v, d=0: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}")
    ok = "" if r["phase"] == "max" else ("**yes**" if (lat.get("p99") or 1e9) < 1000 else "**no**")
    print(f"| {r['server']} | {r['scenario']} | {r['phase']} | {r['run']} | {f(r.get('offered_rate'))} | {f(r.get('achieved_rate'))} | {f(r.get('completed'))} | "
          f"{f(lat.get('p50'))} | {f(lat.get('p90'))} | {f(lat.get('p99'))} | {f(lat.get('p999'))} | {f(lat.get('max'))} | "
          f"{f(r.get('server_cpu_us_per_op'), 2)} | {f(r.get('server_cpu_pct'))} | {f(r.get('generator_cpu_pct'))} | {f(r.get('errors'))} | "
          f"{f(r.get('timeouts'))} | {f(r.get('retransmissions'))} | {f(r.get('other_cpu_pct'))} | {ok} |")
print("\nLatency = a whole flow as sipload sees it (register: two round trips); the generator's own scheduling is "
      "included. other procs % = CPU used by unrelated processes during the run (≫ 0: disturbed, rerun).")
PY
cat "$OUT/table.md"
log "raw JSON, logs and table.md in $OUT"
