#!/usr/bin/env bash
# One measured run: start the server under test pinned to one core, drive it
# with sipload pinned to another, and report the server's CPU per operation
# from /proc/PID/stat (utime+stime) before/after, beside sipload's figures.
#
# usage: tools/sipload/scripts/measure.sh sipreg|sipreg-noauth|responder SCENARIO LOAD [DURATION] [sipload args...]
#   LOAD is "rate=R" (open loop) or "window=W" (closed loop)
# env:   SERVER_CPU (0) CLIENT_CPU (1) SERVER_ARGS (extra sipreg args) BIN (target/release)
set -euo pipefail
cd "$(dirname "$0")/../../.."
kind=$1 scenario=$2 load=$3 duration=${4:-5}
shift $(( $# < 4 ? $# : 4 ))
BIN=${BIN:-target/release}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
out=$(mktemp)
case $kind in
  sipreg) taskset -c "$SERVER_CPU" "$BIN/sipreg" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
            --password secret --threads 1 --min-expires 60 ${SERVER_ARGS:-} >"$out" 2>/dev/null & ;;
  sipreg-noauth) taskset -c "$SERVER_CPU" "$BIN/sipreg" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
            --no-auth --threads 1 --min-expires 60 ${SERVER_ARGS:-} >"$out" 2>/dev/null & ;;
  responder) taskset -c "$SERVER_CPU" "$BIN/sipload" --responder --listen 127.0.0.1:0 \
            --duration 600 ${SERVER_ARGS:-} >"$out" 2>/dev/null & ;;
  *) echo "unknown server kind $kind" >&2; exit 2 ;;
esac
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q 'listening on' "$out" && break; sleep 0.05; done
addr=$(head -1 "$out" | sed -E 's/.*listening on ([0-9.]+:[0-9]+).*/\1/')
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
case $load in rate=*) lflag="--rate ${load#rate=}" ;; window=*) lflag="--window ${load#window=}" ;; *) echo "bad LOAD $load" >&2; exit 2 ;; esac
before=$(ticks)
json=$(taskset -c "$CLIENT_CPU" "$BIN/sipload" --target "$addr" --scenario "$scenario" $lflag \
        --duration "$duration" --json --quiet "$@")
after=$(ticks)
python3 - "$json" "$before" "$after" "$hz" "$kind" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); b, a, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu = (a - b) / hz
done = r["completed"] or 1
# The warm-up (refresh) is inside the server's before/after window only if it ran
# after `before`; it did, so subtract nothing but say so.
print(f'{sys.argv[5]:<14} {r["scenario"]:<16} {r["load"]:<26} rate {r["rate_per_s"]:>9.0f}/s  '
      f'p50 {r["latency_us"]["p50"]:>6} p99 {r["latency_us"]["p99"]:>6} max {r["latency_us"]["max"]:>7} µs  '
      f'err {r["errors"]} to {r["timeouts"]} rtx {r["retransmissions"]}  '
      f'server {cpu:.2f}s = {cpu*1e6/done:.2f} µs/op  client {r["client_cpu_us_per_flow"]:.2f} µs/op'
      + (f'  (warm-up {r["warmup"]["registered"]} regs in server CPU)' if "warmup" in r else ''))
if r["errors"] or r["timeouts"]:
    print("  status:", r["status_counts"], "errors:", r["errors_detail"])
PY
