#!/usr/bin/env bash
# Does saving the state stall the SIP workers? (issue 6: "measure worker
# latency during a save of 1 M devices")
#
# Two sipreg runs, each with one worker pinned to SERVER_CPU and sipload on
# CLIENT_CPU: the table is filled with DEVICES registrations, then those
# devices re-register at RATE/s for SECS seconds (every re-REGISTER takes a
# write lock on its shard, the lock a save's reader contends with) and sipload
# reports the latency percentiles. Run `nostate` has no --state; run `state`
# saves every INTERVAL seconds, so several saves of the whole table fall in the
# measured window. The ratio of the two p99s is the figure.
#
#   perf/state_save.sh                          # 1 000 000 devices, 5 000/s, 30 s
#   DEVICES=100000 SECS=10 perf/state_save.sh
#
# SAVER_CPU=1 moves the saver thread off the worker's core (onto the
# generator's), separating lock contention from CPU sharing.
#
# Output under perf/out/state_save/ (git-ignored). Loopback only; every
# process started here is stopped by its PID.
set -euo pipefail

cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-1000000}
RATE=${RATE:-5000}
SECS=${SECS:-30}
INTERVAL=${INTERVAL:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-25060}
HTTP_PORT=${HTTP_PORT:-28080}
OUT=perf/out/state_save
SIPREG=${SIPREG:-target/release/sipreg}
SIPLOAD=${SIPLOAD:-target/release/sipload}
mkdir -p "$OUT"

if [[ ! -x $SIPREG || ! -x $SIPLOAD ]]; then
    cargo build --release --bin sipreg && cargo build --release -p sipload
fi

server_pid=""
stop_server() {
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        # The final save of a large table takes a moment.
        for _ in $(seq 1 200); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

metric() {
    curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

run() {
    local mode=$1
    local args=(--listen "127.0.0.1:$PORT" --http "127.0.0.1:$HTTP_PORT" --no-auth
        --threads 1 --min-expires 60 --max-expires 7200)
    rm -f "$OUT/sipreg.state" "$OUT/sipreg.state.tmp"
    if [[ $mode == state ]]; then
        args+=(--state "$OUT/sipreg.state" --state-interval "$INTERVAL")
    fi
    taskset -c "$SERVER_CPU" "$SIPREG" "${args[@]}" >"$OUT/$mode.stdout" 2>"$OUT/$mode.stderr" &
    server_pid=$!
    for _ in $(seq 1 100); do
        grep -q 'admin on' "$OUT/$mode.stdout" 2>/dev/null && break
        sleep 0.1
    done
    taskset -c "$CLIENT_CPU" "$SIPLOAD" --target "127.0.0.1:$PORT" --scenario register-noauth \
        --devices "$DEVICES" --count "$DEVICES" --duration 600 --window 512 --expires 3600 --quiet --json \
        >"$OUT/$mode.fill.json"
    if [[ $mode == state && -n ${SAVER_CPU:-} ]]; then
        # Give the saver thread a core of its own: what is left is lock
        # contention alone, not CPU sharing.
        local tid
        for tid in /proc/"$server_pid"/task/*; do
            if [[ $(cat "$tid/comm") == sipreg-state ]]; then
                taskset -p -c "$SAVER_CPU" "${tid##*/}" >/dev/null
            fi
        done
    fi
    local filled
    filled=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["completed"])' "$OUT/$mode.fill.json")
    if [[ $filled != "$DEVICES" ]]; then
        echo "$mode: only $filled of $DEVICES devices registered" >&2
        exit 1
    fi
    local t0 saves0
    t0=$(cpu_ticks "$server_pid")
    saves0=$(metric sipreg_state_saves_total)
    taskset -c "$CLIENT_CPU" "$SIPLOAD" --target "127.0.0.1:$PORT" --scenario register-noauth \
        --devices "$DEVICES" --rate "$RATE" --duration "$SECS" --expires 3600 --quiet --json \
        >"$OUT/$mode.json"
    local t1 saves1 save_us save_bytes rss
    t1=$(cpu_ticks "$server_pid")
    saves1=$(metric sipreg_state_saves_total)
    save_us=$(metric sipreg_state_last_save_microseconds)
    save_bytes=$(metric sipreg_state_last_save_bytes)
    rss=$(awk '/VmRSS/ { print $2 }' "/proc/$server_pid/status")
    python3 - "$OUT/$mode.json" "$mode" "$((t1 - t0))" "$((saves1 - saves0))" "$save_us" "$save_bytes" "$rss" <<'EOF'
import json, sys
path, mode, ticks, saves, save_us, save_bytes, rss = sys.argv[1:]
r = json.load(open(path))
lat = r["latency_us"]
ops = max(r["completed"], 1)
print(f"{mode:8} completed={r['completed']} timeouts={r['timeouts']} errors={r['errors']} "
      f"p50={lat['p50']}us p99={lat['p99']}us p99.9={lat['p999']}us max={lat['max']}us "
      f"server_cpu_us/op={int(ticks) * 10000 / ops:.1f} saves_in_window={saves} "
      f"last_save_ms={float(save_us or 0) / 1000:.0f} last_save_MB={float(save_bytes or 0) / 1e6:.0f} "
      f"rss_MB={int(rss) / 1024:.0f}")
EOF
    stop_server
}

echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) DEVICES=$DEVICES RATE=$RATE SECS=$SECS INTERVAL=$INTERVAL"
run nostate | tee "$OUT/summary.txt"
run state | tee -a "$OUT/summary.txt"
