#!/usr/bin/env bash
# perf/compare.sh — sipreg side by side with Kamailio 5.6 and the bare responder.
#
# One command, one run, servers alternating per scenario; each server pinned to
# core SERVER_CPU (0) with one worker, the generator (sipload, sipp) pinned to core
# CLIENT_CPU (1). For every (server, scenario):
#   1. open loop: sipload --rate R --duration DURATION for each R in RATE; the server's CPU time
#      (utime+stime from /proc/PID/stat, summed over its processes) in the window,
#      divided by the operations completed = µs of server CPU per operation;
#   2. closed loop: sipload --window WINDOW --duration MAX_DURATION, the maximum,
#      and which side saturated (its core ≥ 90 % busy, softirq included).
# Then sipp's own REGISTER-with-digest scenario against sipreg (and Kamailio) at
# sipp's ceiling, with its failed-call count.
# Prints markdown tables; raw JSON, logs and the tables go to OUT (perf/out/…,
# git-ignored). Everything on 127.0.0.1; every process started is stopped by PID.
#
# Environment (defaults):
#   RATE=5000 (a list runs one open-loop pass per rate: RATE="5000 20000")
#   DURATION=10 DEVICES=highest RATE × DURATION (capped at 200000)
#   WINDOW=256 MAX_DURATION=5 MAX=1 (0: skip the closed-loop runs)
#   SERVERS="sipreg kamailio responder responder-plain"
#   SCENARIOS="register refresh register-noauth options"   (keepalive: sipreg/responders;
#                    none: only sipp)
#   GEN_THREADS=1 SIPLOAD_ARGS=""   (extra sipload arguments, every run)
#   SIPP=1 SIPP_SERVERS="sipreg kamailio" SIPP_CALLS=100000
#   SIPP_RATE=100000 SIPP_LIMIT=100   (-r far above sipp's ceiling, at most 100 calls
#                     in flight: sipp runs flat out without overrunning itself; a
#                     larger -l makes sipp fall behind its own timers → failed calls)
#   SIPP_ARGS=""     extra sipp arguments
#   KAM_MEM=tlsf KAM_SHM_MB=512 KAM_PKG_MB=16 KAM_DEFINES=""   SERVER_CPU=0 CLIENT_CPU=1
#   QUIET_MAX=15 QUIET_WAIT=10   (wait for other processes to calm down, see lib.sh)
#   OUT=perf/out/compare-YYYYmmdd-HHMMSS
set -uo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT" || exit 1

RATE=${RATE:-5000}
DURATION=${DURATION:-10}
top_rate=$(printf '%s\n' $RATE | sort -n | tail -1)
DEVICES=${DEVICES:-$((top_rate * DURATION > 200000 ? 200000 : top_rate * DURATION))}
WINDOW=${WINDOW:-256}
MAX_DURATION=${MAX_DURATION:-5}
MAX=${MAX:-1}
SERVERS=${SERVERS:-"sipreg kamailio responder responder-plain"}
SCENARIOS=${SCENARIOS:-"register refresh register-noauth options"}
GEN_THREADS=${GEN_THREADS:-1}
SIPLOAD_ARGS=${SIPLOAD_ARGS:-}
SIPP=${SIPP:-1}
SIPP_SERVERS=${SIPP_SERVERS:-"sipreg kamailio"}
SIPP_RATE=${SIPP_RATE:-100000}
SIPP_CALLS=${SIPP_CALLS:-100000}
SIPP_LIMIT=${SIPP_LIMIT:-100}
SIPP_ARGS=${SIPP_ARGS:-}
OUT=${OUT:-$PERF_ROOT/perf/out/compare-$(date +%Y%m%d-%H%M%S)}
RESULTS=$OUT/results.jsonl

trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- prerequisites -------------------------------------------------------------
(($(nproc) >= 2)) || die "needs 2 cores (server on $SERVER_CPU, generator on $CLIENT_CPU)"
command -v taskset >/dev/null || die "taskset missing (util-linux)"
if [[ ! -x $BIN/sipreg || ! -x $BIN/sipload ]]; then
    log "building sipreg and sipload (release)"
    timeout 1200 cargo build --release -p sipreg -p sipload >&2 || die "cargo build failed"
fi
if [[ " $SERVERS $SIPP_SERVERS " == *" kamailio "* ]] && ! command -v kamailio >/dev/null; then
    die "kamailio not installed: apt-get install kamailio (or SERVERS/SIPP_SERVERS without it)"
fi
if ((SIPP)) && ! command -v sipp >/dev/null; then
    log "sipp not installed (apt-get install sip-tester): skipping the sipp runs"
    SIPP=0
fi
mkdir -p "$OUT/json" "$OUT/logs" "$OUT/bin"
: >"$RESULTS"
# A snapshot of the binaries: a concurrent `cargo build` must not swap them mid-run.
cp "$BIN/sipreg" "$BIN/sipload" "$OUT/bin/" || die "cannot copy the binaries"
BIN=$OUT/bin

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$PERF_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$PERF_ROOT" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    echo "kernel: $(uname -r)"
    echo "kamailio: $(kamailio -v 2>/dev/null | head -1 | sed 's/^version: //;s/ *$//') (-x $KAM_MEM -m $KAM_SHM_MB -M $KAM_PKG_MB${KAM_DEFINES:+ -A $KAM_DEFINES})"
    echo "sipp: $({ sipp -v 2>/dev/null || true; } | grep -m1 -o 'v[0-9][0-9.]*')"
    echo "settings: RATE=$RATE DURATION=$DURATION DEVICES=$DEVICES WINDOW=$WINDOW MAX_DURATION=$MAX_DURATION GEN_THREADS=$GEN_THREADS SIPLOAD_ARGS='$SIPLOAD_ARGS'"
    echo "pinning: server core $SERVER_CPU, generator core $CLIENT_CPU; quiet gate: wait up to ${QUIET_WAIT:-10} s for other processes < ${QUIET_MAX:-15} % of a core"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2

[[ $SCENARIOS == none ]] && SCENARIOS= # SCENARIOS=none: only the sipp runs
for scenario in $SCENARIOS; do
    case $scenario in
    register | refresh | register-noauth | options | keepalive) ;;
    *) die "unknown scenario $scenario (register refresh register-noauth options keepalive)" ;;
    esac
done
for server in $SERVERS $SIPP_SERVERS; do
    case $server in
    sipreg | kamailio | responder | responder-plain) ;;
    *) die "unknown server $server (sipreg kamailio responder responder-plain)" ;;
    esac
done

# The server kind that serves SCENARIO for SERVER, or nothing (skip).
kind_for() {
    local server=$1 scenario=$2
    case $server:$scenario in
    sipreg:register-noauth) echo sipreg-noauth ;;
    sipreg:*) echo sipreg ;;
    kamailio:register-noauth) echo kamailio-noauth ;;
    kamailio:keepalive) ;; # no GB28181 in the Kamailio config
    kamailio:*) echo kamailio ;;
    responder*:register-noauth | responder*:options | responder*:keepalive) echo "$server" ;;
    responder*:*) ;; # the responder answers 200 to anything: no digest flow
    *) die "unknown server $server" ;;
    esac
}

meta() { # server kind scenario phase load
    printf '{"server":"%s","kind":"%s","scenario":"%s","phase":"%s","load":"%s","offered_rate":%s,"window":%s,"devices":%s}' \
        "$1" "$2" "$3" "$4" "$5" "${6:-null}" "${7:-null}" "$DEVICES"
}

sipload_cmd() { # scenario, then --rate R | --window W, --duration S
    local scenario=$1
    shift
    # shellcheck disable=SC2086
    echo "$BIN/sipload" --target "$SRV_ADDR" --scenario "$scenario" --devices "$DEVICES" \
        --password secret --realm sipreg --threads "$GEN_THREADS" "$@" --json --quiet $SIPLOAD_ARGS
}

# ---- sipload: every scenario, servers alternating -------------------------------
started=$(date +%s)
for scenario in $SCENARIOS; do
    for server in $SERVERS; do
        kind=$(kind_for "$server" "$scenario")
        [[ -n $kind ]] || continue
        tag=$server-$scenario
        log "== $tag ($kind)"
        start_server "$kind" "$OUT/logs/$tag.log"
        log "   $kind pid $SRV_PID (cpu from pids: $SRV_PIDS) on $SRV_ADDR"
        MEASURE_TIMEOUT=$((DURATION + 120))
        for rate in $RATE; do
            # shellcheck disable=SC2046
            measure sipload "$OUT/json/$tag-open-$rate.json" "$(meta "$server" "$kind" "$scenario" open "rate $rate/s" "$rate")" \
                -- $(sipload_cmd "$scenario" --rate "$rate" --duration "$DURATION")
        done
        if ((MAX)); then
            MEASURE_TIMEOUT=$((MAX_DURATION + 120))
            # shellcheck disable=SC2046
            measure sipload "$OUT/json/$tag-max.json" "$(meta "$server" "$kind" "$scenario" max "window $WINDOW" null "$WINDOW")" \
                -- $(sipload_cmd "$scenario" --window "$WINDOW" --duration "$MAX_DURATION")
        fi
        stop_server
    done
done

# ---- sipp at its own ceiling ----------------------------------------------------
if ((SIPP)); then
    users=$OUT/sipp-users.csv
    awk -v n="$SIPP_CALLS" 'BEGIN { print "SEQUENTIAL";
        for (i = 1; i <= n; i++) printf "sipp%07d;secret;[authentication username=sipp%07d password=secret]\n", i, i }' >"$users"
    for server in $SIPP_SERVERS; do
        tag=$server-sipp
        log "== $tag: sipp register_digest.xml, $SIPP_CALLS calls at up to $SIPP_RATE/s"
        start_server "$server" "$OUT/logs/$tag.log"
        sipp_timeout=$((SIPP_CALLS / 2000 + 60))
        MEASURE_TIMEOUT=$((sipp_timeout + 30))
        measure sipp "$OUT/json/$tag.stat.csv" "$(meta "$server" "$server" register sipp "sipp -r $SIPP_RATE -l $SIPP_LIMIT" "$SIPP_RATE")" \
            -- sipp "$SRV_ADDR" -sf "$PERF_ROOT/tests/sipp/register_digest.xml" -inf "$users" \
            -key ctransport udp -t u1 -i 127.0.0.1 -bind_local \
            -m "$SIPP_CALLS" -r "$SIPP_RATE" -l "$SIPP_LIMIT" \
            -timeout "${sipp_timeout}s" -timeout_error -recv_timeout 5s \
            -default_behaviors all,-bye -nostdin \
            -trace_stat -stf "$OUT/json/$tag.stat.csv" -fd 1 \
            -trace_err -error_file "$OUT/logs/$tag.sipp-errors.log" $SIPP_ARGS
        stop_server
    done
fi
log "measurements took $(($(date +%s) - started)) s"

# ---- tables ---------------------------------------------------------------------
python3 - "$RESULTS" "$OUT/env.txt" >"$OUT/table.md" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = open(sys.argv[2]).read().strip().splitlines()

def f(v, d=1):
    if v is None: return "–"
    if isinstance(v, float): return f"{v:,.{d}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"

print("## sipreg vs Kamailio vs bare responder\n")
for line in env: print(f"- {line}")
open_all = [r for r in recs if r["phase"] == "open"]
for rate in dict.fromkeys(r["offered_rate"] for r in open_all):
    open_ = [r for r in open_all if r["offered_rate"] == rate]
    r0 = open_[0]
    print(f"\n### Open loop {rate:,}/s, {r0['devices']:,} devices: µs of server CPU per completed operation\n")
    print("| server | scenario | achieved/s | completed | server µs CPU/op | server CPU % | p50 µs | p99 µs | errors | timeouts | retrans | other procs % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in open_:
        print(f"| {r['server']} | {r['scenario']} | {f(r.get('achieved_rate'),0)} | {f(r.get('completed'))} | "
              f"**{f(r.get('server_cpu_us_per_op'),2)}** | {f(r.get('server_cpu_pct'))} | {f(r.get('p50_us'))} | "
              f"{f(r.get('p99_us'))} | {f(r.get('errors'))} | {f(r.get('timeouts'))} | {f(r.get('retransmissions'))} | {f(r.get('other_cpu_pct'))} |")
    servers = list(dict.fromkeys(r["server"] for r in open_))
    others = [s for s in servers if s != "sipreg"]
    if "sipreg" in servers and others:
        print(f"\n### Ratios of server CPU per operation at {rate:,}/s (< 1 means sipreg is cheaper)\n")
        print("| scenario | " + " | ".join(f"{s} µs/op" for s in servers) + " | "
              + " | ".join(f"sipreg/{s}" for s in others) + " |")
        print("|---|" + "---:|" * (len(servers) + len(others)))
        for sc in dict.fromkeys(r["scenario"] for r in open_):
            cpo = {r["server"]: r.get("server_cpu_us_per_op") for r in open_ if r["scenario"] == sc}
            print(f"| {sc} | " + " | ".join(f(cpo.get(s), 2) for s in servers) + " | "
                  + " | ".join(ratio(cpo.get("sipreg"), cpo.get(s)) for s in others) + " |")
mx = [r for r in recs if r["phase"] == "max"]
if mx:
    print(f"\n### Maximum: {mx[0]['load']} (outstanding flows)\n")
    print("| server | scenario | achieved/s | completed | server µs CPU/op | server CPU % | core 0 busy % | generator µs/op | generator CPU % | core 1 busy % | p50 µs | p99 µs | errors | timeouts | other procs % | saturated |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in mx:
        sp, gp = r.get("server_cpu_pct") or 0, r.get("generator_cpu_pct") or 0
        # a core is saturated when it is busy ≥ 90 % (its process plus the softirq
        # work of loopback delivery) — with the process itself the main user
        sb = r.get("server_core_busy_pct") or sp
        gb = r.get("generator_core_busy_pct") or gp
        other = r.get("other_cpu_pct") or 0
        s_sat, g_sat = sb >= 90 and sp >= 60, gb >= 90 and gp >= 60
        sat = ("both" if s_sat and g_sat else "server" if s_sat else "generator" if g_sat
               else "neither: other processes" if other >= 15 else "neither (window/latency)")
        print(f"| {r['server']} | {r['scenario']} | {f(r.get('achieved_rate'),0)} | {f(r.get('completed'))} | "
              f"{f(r.get('server_cpu_us_per_op'),2)} | {f(sp)} | {f(r.get('server_core_busy_pct'))} | "
              f"{f(r.get('generator_cpu_us_per_op'),2)} | {f(gp)} | {f(r.get('generator_core_busy_pct'))} | "
              f"{f(r.get('p50_us'))} | {f(r.get('p99_us'))} | {f(r.get('errors'))} | {f(r.get('timeouts'))} | {f(r.get('other_cpu_pct'))} | {sat} |")
sp_ = [r for r in recs if r["phase"] == "sipp"]
if sp_:
    print(f"\n### sipp (tests/sipp/register_digest.xml: REGISTER → 401 → REGISTER+digest → 200), {sp_[0]['load']}\n")
    print("| server | calls created | successful | failed | achieved/s | retrans | server µs CPU/call | server CPU % | sipp µs CPU/call | sipp CPU % | other procs % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sp_:
        print(f"| {r['server']} | {f(r.get('sent'))} | {f(r.get('completed'))} | **{f(r.get('failed_calls'))}** | "
              f"{f(r.get('achieved_rate'),0)} | {f(r.get('retransmissions'))} | {f(r.get('server_cpu_us_per_op'),2)} | "
              f"{f(r.get('server_cpu_pct'))} | {f(r.get('generator_cpu_us_per_op'),2)} | {f(r.get('generator_cpu_pct'))} | {f(r.get('other_cpu_pct'))} |")
bad = [r for r in recs if r.get("error") or r.get("killed") or r.get("server_died") or (r.get("exit_code") not in (0, None))]
if bad:
    print("\n### Problems\n")
    for r in bad:
        print(f"- {r['server']}/{r['scenario']}/{r['phase']}: exit {r.get('exit_code')}"
              f"{' killed at the time limit' if r.get('killed') else ''}{' server died' if r.get('server_died') else ''}"
              f" {r.get('error', '')}")
print("\nserver µs CPU/op = (utime+stime of every server process over the window) / completed; "
      "register = one full digest flow (2 transactions); CPU % = the process's share of one core while load was offered; "
      "core busy % = that core's busy time incl. softirq (loopback delivery, charged to no process); "
      "other procs % = CPU used by unrelated processes meanwhile (should be ~0: else the figures are disturbed).")
PY
cat "$OUT/table.md"
log "raw JSON, logs and table.md in $OUT"
