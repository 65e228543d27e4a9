#!/usr/bin/env bash
# perf/expiry.sh — a million bindings expiring in the same second while
# refreshes keep arriving.
#
#   1. sipreg (one worker, core SERVER_CPU, --min-expires 1) gets MASS devices
#      registered by sipload (core CLIENT_CPU, closed loop) with
#      `--expires-until D`: each REGISTER asks for the whole seconds left until
#      the Unix time D, so every binding ends within [D, D+1 s).
#   2. Baseline: a refresher (sipload `refresh`: REFRESH_DEVICES other devices,
#      digest with nonce reuse, REFRESH_RATE/s open loop) runs BASE_S seconds
#      well before D — same server, same table size, nothing expiring.
#   3. Expiry: the same refresher runs from D−PRE to D+POST while a poller
#      (core CLIENT_CPU) reads the device count every POLL_MS ms through
#      `/api/devices?limit=0` (its `total` is the table's length, read without
#      walking it; /metrics walks the whole table per scrape) and the CPU of
#      every sipreg thread from /proc/PID/task/*/stat.
#   Reported: when the first mass binding went (after D), when the last went
#   (the count back at REFRESH_DEVICES), so the time from the deadline until
#   all are gone; sipreg_expirations_total afterwards (must be MASS); the timer
#   thread's CPU per expired binding; the refresh latency p50/p99/max over the
#   expiry run, and per 100 ms interval (sipload --series-ms) beside the
#   baseline's. Targets (issue 5): all gone within 2 s of the deadline, refresh
#   p99 < 5 ms meanwhile.
#
# Environment (defaults):
#   MASS=1000000 REFRESH_DEVICES=10000 REFRESH_RATE=2000 BASE_S=10 PRE=5 POST=5
#                    (the refresher's warm-up — registering its devices — takes
#                    1–2 s of PRE before its measured phase starts)
#   AUTH=digest      digest: mass `register` against --password;
#                    noauth: mass `register-noauth` and an open-loop
#                    `register-noauth` refresher over pre-registered devices
#   LEAD=auto        seconds from start to D (auto: MASS/15000 + 40 + BASE_S)
#   WINDOW=256 POLL_MS=20 SERIES_MS=100 SIPREG_ARGS="" (e.g. "--threads 2")
#   QUIET_MAX=15 QUIET_WAIT=300   wait up to 300 s for other processes to use < 15 % of a core
#   PERF=0           1: perf record sipreg (all threads, DWARF) from D−0.5 s for
#                    PERF_S (3) seconds → OUT/expiry.perf.data + top functions
#   TIMER_NICE=""    e.g. 10: renice sipreg's timer thread (an experiment: does a
#                    lower-priority timer thread keep refresh latency down?)
#   SERVER_CPU=0 CLIENT_CPU=1 BIN=target/release OUT=perf/out/expiry-YYYYmmdd-HHMMSS
set -euo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT"

MASS=${MASS:-1000000}
REFRESH_DEVICES=${REFRESH_DEVICES:-10000}
REFRESH_RATE=${REFRESH_RATE:-2000}
BASE_S=${BASE_S:-10}
PRE=${PRE:-5}
POST=${POST:-5}
AUTH=${AUTH:-digest}
LEAD=${LEAD:-auto}
WINDOW=${WINDOW:-256}
POLL_MS=${POLL_MS:-20}
SERIES_MS=${SERIES_MS:-100}
SIPREG_ARGS=${SIPREG_ARGS:-}
PERF=${PERF:-0}
PERF_S=${PERF_S:-3}
TIMER_NICE=${TIMER_NICE:-}
OUT=${OUT:-$PERF_ROOT/perf/out/expiry-$(date +%Y%m%d-%H%M%S)}

trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

case $AUTH in
digest) mass_scenario=register refresh_scenario=refresh ;;
noauth) mass_scenario=register-noauth refresh_scenario=register-noauth ;;
*) die "AUTH is digest or noauth, not $AUTH" ;;
esac
[[ $LEAD == auto ]] && LEAD=$((MASS / 15000 + 40 + BASE_S))
(($(nproc) >= 2)) || die "needs 2 cores (server on $SERVER_CPU, generator on $CLIENT_CPU)"
command -v curl >/dev/null || die "curl missing"
if ((PERF)) && ! command -v perf >/dev/null; then die "PERF=1 needs perf (apt-get install linux-perf)"; fi
if [[ ! -x $BIN/sipreg || ! -x $BIN/sipload ]]; then
    log "building sipreg and sipload (release)"
    timeout 1200 cargo build --release -p sipreg -p sipload >&2 || die "cargo build failed"
fi
"$BIN/sipload" --help 2>&1 | grep -q -- --expires-until || die "$BIN/sipload has no --expires-until (rebuild it)"
mkdir -p "$OUT/logs" "$OUT/json" "$OUT/bin"
cp "$BIN/sipreg" "$BIN/sipload" "$OUT/bin/"
BIN=$OUT/bin

now() { date +%s.%N; }
# sleep_until T: until Unix time T (no-op when past).
sleep_until() {
    local s
    s=$(python3 -c "import sys,time; print(max(0.0, float(sys.argv[1]) - time.time()))" "$1")
    sleep "$s"
}

# The deadline cannot wait once set: start on a quiet machine.
wait_quiet "${QUIET_MAX:-15}" "${QUIET_WAIT:-300}"
args=(--min-expires 1 --max-expires 7200 --default-expires 3600)
[[ $AUTH == noauth ]] && args+=(--no-auth)
# shellcheck disable=SC2206
args+=($SIPREG_ARGS)
start_sipreg "$OUT/logs/sipreg.log" "${args[@]}"
timer_note=
if [[ -n $TIMER_NICE ]]; then
    # An experiment, not a server setting: lower the timer thread's priority, so
    # that on a shared core the worker preempts a long expiry batch.
    tid=$(grep -l '^sipreg-timer$' /proc/"$SRV_PID"/task/*/comm | head -1 | cut -d/ -f5)
    [[ -n $tid ]] || die "no sipreg-timer thread in $SRV_PID"
    renice -n "$TIMER_NICE" -p "$tid" >/dev/null
    timer_note="; timer thread (tid $tid) reniced to $TIMER_NICE"
fi
D=$(python3 -c "import time; print(int(time.time()) + $LEAD)")
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$PERF_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$PERF_ROOT" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; kernel $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "sipreg: ${args[*]} (pid $SRV_PID, core $SERVER_CPU$timer_note); generator and poller on core $CLIENT_CPU"
    echo "settings: MASS=$MASS ($mass_scenario) REFRESH_DEVICES=$REFRESH_DEVICES REFRESH_RATE=$REFRESH_RATE/s ($refresh_scenario) BASE_S=$BASE_S PRE=$PRE POST=$POST LEAD=$LEAD POLL_MS=$POLL_MS"
    echo "deadline D: $D ($(date -u -d "@$D" +%H:%M:%SZ))"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2

# ---- 1. the mass registration -------------------------------------------------
log "registering $MASS devices (mass*, Expires counting down to D)"
t0=$(now)
timeout $((LEAD + 60)) taskset -c "$CLIENT_CPU" "$BIN/sipload" --target "$SRV_ADDR" \
    --scenario "$mass_scenario" --user-prefix mass --devices "$MASS" --count "$MASS" \
    --window "$WINDOW" --duration "$((LEAD - 10))" --drain 5 --expires-until "$D" \
    --password secret --realm sipreg --json --quiet >"$OUT/json/mass.json" ||
    die "mass registration failed: $(tail -3 "$OUT/json/mass.json")"
t1=$(now)
read -r completed errors rate < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["completed"], r["errors"], round(r["rate_per_s"]))' "$OUT/json/mass.json")
log "  $completed registered in $(python3 -c "print(round($t1 - $t0, 1))") s ($rate/s), errors $errors"
((completed == MASS)) || log "  warning: only $completed of $MASS registered"
devices_now() { curl -sf --max-time 5 "http://$SRV_HTTP/api/devices?limit=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
left=$(python3 -c "print(int($D - $(now)))")
((left > PRE + 5)) || die "registration ended only $left s before the deadline: raise LEAD"

# ---- 2. baseline refresh run, nothing expiring ----------------------------------
# The poller: every POLL_MS ms, the table's device count and the CPU ticks of every
# sipreg thread, as CSV lines "t,devices,{thread: ticks}" until END (or until the
# count has stayed at FLOOR for 2 s); its own CPU time goes to the last line.
cat >"$OUT/poll.py" <<'PY'
import json, os, resource, sys, time, urllib.request
pid, http, step, end, floor, cpu = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000, float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
os.sched_setaffinity(0, {cpu})
url = f"http://{http}/api/devices?limit=0"
def threads():
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        rest = st.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0) + int(rest[11]) + int(rest[12])
    return out
print("t,devices,cpu", flush=True)
at_floor = None
while time.time() < end:
    t = time.time()
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            n = json.load(r)["total"]
    except Exception:
        n = -1
    print(f"{t:.3f},{n},{json.dumps(threads(), separators=(',', ':'))}", flush=True)
    if floor >= 0 and n == floor:
        at_floor = at_floor or t
        if t - at_floor > 2:        # all gone, and stayed gone: stop early
            break
    else:
        at_floor = None
    time.sleep(max(0.0, step - (time.time() - t)))
r = resource.getrusage(resource.RUSAGE_SELF)
print(f"#poller_cpu_s,{r.ru_utime + r.ru_stime:.3f}", flush=True)
PY
# user+nice+system ticks of every core, and sipreg's own ticks.
cpu_snap() { echo "$(awk '$1 == "cpu" { print $2 + $3 + $4 }' /proc/stat) $(ticks "$SRV_PID")"; }
# refresher TAG DURATION FLOOR: the refresh load for DURATION s, the poller beside it
# (FLOOR: stop polling once the table holds that many devices; -1: never).
refresher() {
    local tag=$1 secs=$2 floor=$3 end poller rc=0
    end=$(python3 -c "import time; print(time.time() + $secs + ((4) if $floor < 0 else 30))")
    python3 "$OUT/poll.py" "$SRV_PID" "$SRV_HTTP" "$POLL_MS" "$end" "$floor" "$CLIENT_CPU" >"$OUT/poll-$tag.csv" &
    poller=$!
    PERF_PIDS+=("$poller")
    echo "$(now) $(cpu_snap)" >"$OUT/logs/cpu-$tag.txt"
    taskset -c "$CLIENT_CPU" "$BIN/sipload" --target "$SRV_ADDR" --scenario "$refresh_scenario" \
        --user-prefix ref --devices "$REFRESH_DEVICES" --rate "$REFRESH_RATE" --duration "$secs" \
        --drain 3 --expires 3600 --password secret --realm sipreg --series-ms "$SERIES_MS" \
        --json --quiet >"$OUT/json/$tag.json" || rc=$?
    echo "$(now) $(cpu_snap)" >>"$OUT/logs/cpu-$tag.txt"
    wait "$poller" || true
    return "$rc"
}
if [[ $AUTH == noauth ]]; then
    # register-noauth has no warm-up: register the refresh devices first, so the
    # measured flows are refreshes of existing bindings
    taskset -c "$CLIENT_CPU" "$BIN/sipload" --target "$SRV_ADDR" --scenario register-noauth \
        --user-prefix ref --devices "$REFRESH_DEVICES" --count "$REFRESH_DEVICES" --window 64 \
        --duration 30 --expires 3600 --json --quiet >"$OUT/json/ref-register.json"
fi
if ((left > BASE_S + PRE + 10)); then
    log "baseline: $refresh_scenario at $REFRESH_RATE/s for $BASE_S s, $(devices_now) devices in the table"
    refresher baseline "$BASE_S" -1
else
    log "no time for the baseline before D (raise LEAD)"
fi
log "devices in the table: $(devices_now); waiting for D−$PRE"

# ---- 3. the expiry, with refreshes and the poller --------------------------------
sleep_until "$(python3 -c "print($D - $PRE)")"
log "expiry run: refresher from D−$PRE s for $((PRE + POST)) s"
if ((PERF)); then
    (
        sleep_until "$(python3 -c "print($D - 0.5)")"
        perf record -F 999 --call-graph dwarf -o "$OUT/expiry.perf.data" -p "$SRV_PID" -- sleep "$PERF_S" \
            >"$OUT/logs/perf.log" 2>&1 || log "perf record failed: $(tail -2 "$OUT/logs/perf.log")"
    ) &
    PERF_PIDS+=("$!")
fi
refresher expiry "$((PRE + POST))" "$REFRESH_DEVICES" || die "refresher failed"
((PERF)) && { wait "${PERF_PIDS[-1]}" || true; }
expirations=$(metric sipreg_expirations_total || echo "?")
devices_after=$(devices_now)
log "after: $devices_after devices, sipreg_expirations_total $expirations"
if ((PERF)) && [[ -s $OUT/expiry.perf.data ]]; then
    perf report -i "$OUT/expiry.perf.data" --no-children --sort comm,symbol -g none --stdio 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -40 >"$OUT/top-self.txt" || true
    log "top functions by self time: $OUT/top-self.txt"
fi

# ---- report ------------------------------------------------------------------------
python3 - "$OUT" "$D" "$MASS" "$REFRESH_DEVICES" "$expirations" "$(getconf CLK_TCK)" >"$OUT/table.md" <<'PY'
import json, os, sys
out, D, mass, floor, expirations, hz = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
env = open(f"{out}/env.txt").read().strip().splitlines()
def poll(tag):
    rows, cpu_s = [], 0.0
    p = f"{out}/poll-{tag}.csv"
    if not os.path.exists(p):
        return rows, cpu_s
    for line in open(p).read().splitlines()[1:]:
        if line.startswith("#poller_cpu_s,"):
            cpu_s = float(line.split(",")[1])
            continue
        t, n, cpu = line.split(",", 2)
        rows.append((float(t), int(n), json.loads(cpu)))
    return rows, cpu_s
rows, _ = poll("expiry")
full = mass + floor
first = next((t for t, n, _ in rows if 0 <= n < full), None)
gone = next((t for t, n, _ in rows if n == floor and t > D - 1), None)
last_full = max((t for t, n, _ in rows if n >= full), default=None)
def cpu_between(a, b):
    ca = min(rows, key=lambda r: abs(r[0] - a))[2]
    cb = min(rows, key=lambda r: abs(r[0] - b))[2]
    return {k: (cb.get(k, 0) - ca.get(k, 0)) / hz for k in cb}
print("## Mass expiry\n")
for l in env:
    print(f"- {l}")
print()
if first is None or gone is None:
    print(f"**Not all gone** while polled (first drop {first}, back to {floor} devices: {gone}); see poll.csv.")
else:
    print("| bindings | deadline D | first gone | all gone | **all gone − D** | all gone − (D+1 s, the latest deadline) | expirations_total |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    print(f"| {mass:,} | {D:.0f} | D{first - D:+.2f} s | D{gone - D:+.2f} s | **{gone - D:.2f} s** | {gone - D - 1:+.2f} s | {expirations} |")
    cpu = cpu_between(D - 0.2, gone + 0.1)
    timer = sum(v for k, v in cpu.items() if "timer" in k)
    print(f"\nsipreg CPU from D−0.2 s until all gone ({gone - D + 0.2:.2f} s): " +
          ", ".join(f"{k} {v:.2f} s" for k, v in sorted(cpu.items()) if v > 0) +
          (f"; timer thread {timer * 1e6 / mass:.2f} µs per expired binding." if mass else ""))
def lat(tag):
    p = f"{out}/json/{tag}.json"
    if not os.path.exists(p):
        return None
    return json.load(open(p))
def other_pct(tag, r):
    # CPU of everything but sipreg, sipload and the poller while the run lasted
    p = f"{out}/logs/cpu-{tag}.txt"
    if not os.path.exists(p) or not r:
        return None
    (t0, b0, s0), (t1, b1, s1) = [tuple(map(float, l.split())) for l in open(p).read().splitlines()[:2]]
    other = (b1 - b0 - (s1 - s0)) / hz - r.get("client_cpu_s", 0) - poll(tag)[1]
    return max(other, 0) * 100 / (t1 - t0)
def window(r, a, b):
    # the 100-ms intervals of flows started in [a, b): flows, worst p99, worst max
    bins = [x for x in (r.get("series") or {}).get("bins") or [] if a - 0.05 <= x["t"] < b]
    if not bins:
        return None
    return sum(x["count"] for x in bins), max(x["p99"] for x in bins), max(x["max"] for x in bins)
print("\n| refresher run | flows | rate/s | p50 µs | p99 µs | p99.9 µs | max µs | errors | timeouts | retrans | other procs % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for tag in ("baseline", "expiry"):
    r = lat(tag)
    if not r:
        continue
    l = r["latency_us"]
    o = other_pct(tag, r)
    print(f"| {tag} | {r['completed']:,} | {r['rate_per_s']:,.0f} | {l['p50']:,} | {l['p99']:,} | {l['p999']:,} | {l['max']:,} | "
          f"{r['errors']} | {r['timeouts']} | {r['retransmissions']} | {'–' if o is None else f'{o:.0f}'} |")
r = lat("expiry")
if r and first is not None and gone is not None:
    w = window(r, D, gone)
    if w:
        print(f"\n**During the mass expiry** (flows started from D to all gone, {gone - D:.2f} s): {w[0]:,} refreshes, "
              f"worst 100-ms-interval p99 **{w[1]:,} µs**, max **{w[2]:,} µs**.")
    else:
        print("\n**No refresh flow started during the mass expiry** (raise PRE: the refresher's warm-up ran into it).")
r = lat("expiry")
if r and (r.get("series") or {}).get("bins"):
    print("\nRefresh latency around the deadline (100-ms intervals of flow start, p99 / max µs):\n")
    print("| t − D (s) | flows | p50 | p99 | max | devices in table |")
    print("|---:|---:|---:|---:|---:|---:|")
    for b in r["series"]["bins"]:
        dt = b["t"] - D
        if -1.05 <= dt <= (gone - D + 1.0 if gone else 4.0):
            n = min(rows, key=lambda x: abs(x[0] - b["t"]))[1] if rows else "–"
            print(f"| {dt:+.1f} | {b['count']} | {b['p50']:,} | {b['p99']:,} | {b['max']:,} | {n:,} |")
PY
cat "$OUT/table.md"
log "poll.csv, sipload JSON and logs in $OUT"
