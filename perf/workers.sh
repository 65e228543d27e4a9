#!/usr/bin/env bash
# perf/workers.sh — two sipreg workers against one (issue 5: ≥ 1.7× when the
# generator is not the limit), on a machine that has only two cores.
#
# A 2-core machine cannot give two workers a core each *and* run the generator
# elsewhere, so this measures what it can, for THREADS_LIST (1 2), same run,
# fresh server each time (SCENARIOS: register-noauth, register):
#   A. cost: open loop at RATE/s, sipreg on both cores (0,1), sipload on core
#      CLIENT_CPU: the server's CPU per operation with 1 and with 2 workers.
#      Equal cost means the second worker adds no contention (shared table,
#      timer channel, cache lines): two workers on two free cores would then
#      serve 2 × one worker's maximum minus nothing.
#   B. spread: the share of requests each worker handled in A (/metrics
#      sipreg_worker_requests_total; SO_REUSEPORT hashes each of sipload's
#      SOCKETS source ports to one worker): 50/50 is needed for 2×.
#   C. shared-core throughput: closed loop at the maximum with server and
#      generator both free to run on cores 0 and 1 (the generator batched,
#      --batch-us BATCH_US, to make it cheap): what the whole machine does.
#      Here the generator always takes a share of the two cores, so the ratio
#      bounds what this machine can show, not what two workers can do.
#   D. one-core check: both workers pinned to core SERVER_CPU, generator on
#      CLIENT_CPU, closed loop: two workers on one core should equal one
#      worker (no loss from the second worker's scheduling).
# Prints a markdown table (also OUT/table.md); raw records in OUT/results.jsonl.
#
# Environment (defaults):
#   SCENARIOS="register-noauth register" THREADS_LIST="1 2" RATE=20000 DURATION=10
#   WINDOW=256 MAX_DURATION=5 SOCKETS=64 GEN_THREADS=1 BATCH_US=200
#   PARTS="A C D" SERVER_CPU=0 CLIENT_CPU=1 QUIET_MAX=15 QUIET_WAIT=10
#   BIN=target/release OUT=perf/out/workers-YYYYmmdd-HHMMSS
set -euo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT"

SCENARIOS=${SCENARIOS:-"register-noauth register"}
THREADS_LIST=${THREADS_LIST:-"1 2"}
RATE=${RATE:-20000}
DURATION=${DURATION:-10}
WINDOW=${WINDOW:-256}
MAX_DURATION=${MAX_DURATION:-5}
SOCKETS=${SOCKETS:-64}
GEN_THREADS=${GEN_THREADS:-1}
BATCH_US=${BATCH_US:-200}
PARTS=${PARTS:-"A C D"}
OUT=${OUT:-$PERF_ROOT/perf/out/workers-$(date +%Y%m%d-%H%M%S)}
RESULTS=$OUT/results.jsonl
BOTH_CORES="$SERVER_CPU,$CLIENT_CPU"

trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

(($(nproc) >= 2)) || die "needs 2 cores"
perf_prepare_bins
{
    perf_env_header
    echo "settings: SCENARIOS='$SCENARIOS' THREADS_LIST='$THREADS_LIST' RATE=$RATE DURATION=$DURATION WINDOW=$WINDOW MAX_DURATION=$MAX_DURATION SOCKETS=$SOCKETS GEN_THREADS=$GEN_THREADS BATCH_US=$BATCH_US PARTS='$PARTS'"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2

meta() { # part scenario threads load rate server_cores generator_cores
    printf '{"server":"sipreg","part":"%s","scenario":"%s","threads":%s,"phase":"%s","load":"%s","offered_rate":%s,"server_cores":"%s","generator_cores":"%s"}' \
        "$1" "$2" "$3" "$1" "$4" "${5:-null}" "$6" "$7"
}

# worker_spread: "n0 n1 …" requests per worker from /metrics.
worker_spread() {
    curl -sf --max-time 10 "http://$SRV_HTTP/metrics" |
        awk '/^sipreg_worker_requests_total\{/ { print $2 }' | tr '\n' ' '
}

# run PART SCENARIO THREADS SERVER_CORES GENERATOR_CORES LOADFLAGS...
run() {
    local part=$1 scenario=$2 threads=$3 score=$4 gcore=$5 tag args=() load
    shift 5
    tag=$part-$scenario-t$threads
    args=(--threads "$threads")
    [[ $scenario == register-noauth ]] && args+=(--no-auth)
    # start_sipreg pins to SERVER_CPU; here the cores vary per part
    SERVER_CPU=$score start_sipreg "$OUT/logs/$tag.log" "${args[@]}"
    load="$*"
    local before after
    before=$(worker_spread)
    # shellcheck disable=SC2046
    SERVER_CPU=$score CLIENT_CPU=$gcore measure sipload "$OUT/json/$tag.json" \
        "$(meta "$part" "$scenario" "$threads" "$load" "$(sed -nE 's/.*--rate ([0-9]+).*/\1/p' <<<"$load")" "$score" "$gcore")" \
        -- "$BIN/sipload" --target "$SRV_ADDR" --scenario "$scenario" --devices 200000 \
        --threads "$GEN_THREADS" --sockets "$SOCKETS" --password secret --realm sipreg \
        --json --quiet "$@"
    after=$(worker_spread)
    python3 - "$RESULTS" "$before" "$after" <<'PY'
import json, sys
path, before, after = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
recs = [json.loads(l) for l in open(path) if l.strip()]
d = [int(float(a)) - int(float(b)) for a, b in zip(after, before + ["0"] * len(after))]
recs[-1]["worker_requests"] = d
with open(path, "w") as f:
    for r in recs:
        f.write(json.dumps(r, sort_keys=True) + "\n")
PY
    stop_server
}

MEASURE_TIMEOUT=$((DURATION + MAX_DURATION + 120))
for scenario in $SCENARIOS; do
    for threads in $THREADS_LIST; do
        for part in $PARTS; do
            case $part in
            A) run A "$scenario" "$threads" "$BOTH_CORES" "$CLIENT_CPU" --rate "$RATE" --duration "$DURATION" ;;
            C) run C "$scenario" "$threads" "$BOTH_CORES" "$BOTH_CORES" --window "$WINDOW" \
                --duration "$MAX_DURATION" --batch-us "$BATCH_US" ;;
            D) run D "$scenario" "$threads" "$SERVER_CPU" "$CLIENT_CPU" --window "$WINDOW" --duration "$MAX_DURATION" ;;
            *) die "unknown part $part (A C D)" ;;
            esac
        done
    done
done

python3 - "$RESULTS" "$OUT/env.txt" >"$OUT/table.md" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = open(sys.argv[2]).read().strip().splitlines()
names = {"A": "A: cost at a fixed rate (server on cores 0+1, generator on core 1)",
         "C": "C: maximum, server and batched generator sharing cores 0+1",
         "D": "D: maximum, every worker on core 0, generator on core 1"}
print("## Two workers against one\n")
for l in env:
    print(f"- {l}")
f = lambda v, d=1: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}")
for part in dict.fromkeys(r["part"] for r in recs):
    rows = [r for r in recs if r["part"] == part]
    print(f"\n### {names.get(part, part)}\n")
    print("| scenario | workers | achieved/s | server µs CPU/op | server CPU % | generator µs/op | generator CPU % | requests per worker | p50 µs | p99 µs | errors | timeouts | other procs % |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        wr = r.get("worker_requests") or []
        tot = sum(wr) or 1
        spread = " / ".join(f"{100 * x / tot:.0f} %" for x in wr)
        print(f"| {r['scenario']} | {r['threads']} | {f(r.get('achieved_rate'), 0)} | {f(r.get('server_cpu_us_per_op'), 2)} | "
              f"{f(r.get('server_cpu_pct'))} | {f(r.get('generator_cpu_us_per_op'), 2)} | {f(r.get('generator_cpu_pct'))} | {spread} | "
              f"{f(r.get('p50_us'))} | {f(r.get('p99_us'))} | {f(r.get('errors'))} | {f(r.get('timeouts'))} | {f(r.get('other_cpu_pct'))} |")
    print("\n| scenario | 2 workers / 1 worker: throughput | CPU per op |")
    print("|---|---:|---:|")
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        one = next((r for r in rows if r["scenario"] == sc and r["threads"] == 1), None)
        two = next((r for r in rows if r["scenario"] == sc and r["threads"] == 2), None)
        if one and two:
            ratio = lambda k: f"{two[k] / one[k]:.2f}" if two.get(k) and one.get(k) else "–"
            print(f"| {sc} | {ratio('achieved_rate')} | {ratio('server_cpu_us_per_op')} |")
print("\nserver µs CPU/op = CPU of all sipreg threads / completed flows; requests per worker = "
      "sipreg_worker_requests_total deltas; other procs % = unrelated CPU during the run.")
PY
cat "$OUT/table.md"
log "raw JSON, logs and table.md in $OUT"
