#!/usr/bin/env bash
# perf/flamegraph.sh SCENARIO [SECONDS] — where sipreg spends its CPU under load.
#
# Starts sipreg (one worker, pinned to core SERVER_CPU=0; --no-auth for
# register-noauth), drives it with sipload SCENARIO (pinned to core CLIENT_CPU=1),
# and once the load is steady (after refresh's warm-up) samples sipreg with
# `perf record` for SECONDS (10). The samples are folded and rendered with inferno
# (`cargo install inferno`) into an SVG; the CPU share of each sipreg thread and the
# top functions by self and inclusive time are printed as text (perf report).
# Output under perf/out/ (git-ignored).
#
# Environment (defaults):
#   RATE=20000       open-loop rate of sipload; WINDOW=W instead runs closed loop
#   DEVICES=100000   distinct devices
#   FREQ=999         samples per second
#   CALLGRAPH=dwarf  perf --call-graph mode: dwarf (works without frame pointers,
#                    the release profile has none) | fp | lbr
#   SIPREG_ARGS=""   extra sipreg arguments; SIPLOAD_ARGS="" extra sipload arguments
#   OUT=perf/out/flame-SCENARIO-YYYYmmdd-HHMMSS
set -uo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT" || exit 1

usage() { echo "usage: perf/flamegraph.sh register|refresh|register-noauth|options|keepalive|mixed [SECONDS]" >&2; exit 2; }
SCENARIO=${1:-}
SECS=${2:-10}
[[ -n $SCENARIO && $SECS =~ ^[0-9]+$ ]] || usage
((SECS >= 1 && SECS <= 120)) || die "SECONDS must be 1..120"
RATE=${RATE:-20000}
WINDOW=${WINDOW:-}
DEVICES=${DEVICES:-100000}
FREQ=${FREQ:-999}
CALLGRAPH=${CALLGRAPH:-dwarf}
SIPREG_ARGS=${SIPREG_ARGS:-}
SIPLOAD_ARGS=${SIPLOAD_ARGS:-}
OUT=${OUT:-$PERF_ROOT/perf/out/flame-$SCENARIO-$(date +%Y%m%d-%H%M%S)}

command -v perf >/dev/null || die "perf not installed (apt-get install linux-perf)"
if [[ ! -x $BIN/sipreg || ! -x $BIN/sipload ]]; then
    log "building sipreg and sipload (release)"
    timeout 1200 cargo build --release -p sipreg -p sipload >&2 || die "cargo build failed"
fi
mkdir -p "$OUT"
trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

auth=()
[[ $SCENARIO == register-noauth ]] && auth=(--no-auth)
# shellcheck disable=SC2086
start_sipreg "$OUT/sipreg.log" "${auth[@]}" $SIPREG_ARGS
log "sipreg pid $SRV_PID on $SRV_ADDR (core $SERVER_CPU)"

if [[ -n $WINDOW ]]; then load=(--window "$WINDOW"); else load=(--rate "$RATE"); fi
# sipload runs 3 s longer than the sampling and reports progress on stderr; the
# sampling starts at its first progress line (after any warm-up).
# shellcheck disable=SC2086
taskset -c "$CLIENT_CPU" "$BIN/sipload" --target "$SRV_ADDR" --scenario "$SCENARIO" \
    --devices "$DEVICES" --password secret --realm sipreg "${load[@]}" \
    --duration $((SECS + 3)) --json $SIPLOAD_ARGS >"$OUT/sipload.json" 2>"$OUT/sipload.stderr" &
gen=$!
PERF_PIDS+=("$gen")
for ((i = 0; i < 1200; i++)); do
    grep -qv '^warming up' "$OUT/sipload.stderr" 2>/dev/null && break
    kill -0 "$gen" 2>/dev/null || die "sipload ended early: $(tail -3 "$OUT/sipload.stderr")"
    sleep 0.1
done
log "load running ($SCENARIO, ${load[*]}); perf record -F $FREQ --call-graph $CALLGRAPH for $SECS s"
c0=$(ticks "$SRV_PID")
# perf itself runs on the generator's core, away from sipreg
timeout $((SECS + 60)) taskset -c "$CLIENT_CPU" perf record -F "$FREQ" --call-graph "$CALLGRAPH" \
    -p "$SRV_PID" -o "$OUT/perf.data" -- sleep "$SECS" 2>"$OUT/perf-record.log" ||
    die "perf record failed: $(tail -5 "$OUT/perf-record.log")"
c1=$(ticks "$SRV_PID")
wait "$gen"
stop_server
log "sipreg used $(awk -v d=$((c1 - c0)) -v hz="$HZ" -v s="$SECS" 'BEGIN { printf "%.0f", 100 * d / hz / s }') % of its core while sampled"
python3 - "$OUT/sipload.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_us"]
print(f"sipload: {r['completed']} {r['scenario']} flows at {r['rate_per_s']:.0f}/s, p50 {lat['p50']} "
      f"p99 {lat['p99']} µs, errors {r['errors']} timeouts {r['timeouts']} "
      f"retransmissions {r['retransmissions']}", file=sys.stderr)
PY

# perf script and report run on the generator's core too (nothing is measured now)
log "folding the samples"
timeout 600 perf script -i "$OUT/perf.data" >"$OUT/perf.script" 2>"$OUT/perf-script.log" ||
    die "perf script failed: $(tail -5 "$OUT/perf-script.log")"
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
    inferno-collapse-perf <"$OUT/perf.script" >"$OUT/folded.txt" &&
        inferno-flamegraph --title "sipreg: $SCENARIO, ${load[*]}, $SECS s" <"$OUT/folded.txt" >"$OUT/flamegraph.svg" &&
        log "flamegraph: $OUT/flamegraph.svg"
else
    log "inferno not found (cargo install inferno): no SVG; text report only"
fi
rm -f "$OUT/perf.script"

# perf report's table without comments, blank lines and the padding to the right
tidy_report() { grep -v '^#' | grep -v '^[[:space:]]*$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//'; }
echo "== CPU samples by thread =="
timeout 600 perf report -i "$OUT/perf.data" --stdio --no-children --sort comm -g none 2>/dev/null |
    tidy_report | head -10 | tee "$OUT/threads.txt"
echo "== top functions by self time (perf report --no-children) =="
timeout 600 perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol \
    --percent-limit 0.7 -g none 2>/dev/null | tidy_report | head -40 | tee "$OUT/top-self.txt"
echo "== top functions including callees (perf report --children) =="
timeout 600 perf report -i "$OUT/perf.data" --stdio --children --sort symbol \
    --percent-limit 3 -g none 2>/dev/null | grep -v '0xffffffffffffffff' | tidy_report | head -30 | tee "$OUT/top-children.txt"
log "output in $OUT"
