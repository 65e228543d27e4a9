#!/usr/bin/env bash
# perf/memory.sh — memory per registered device: sipreg vs Kamailio 5.6.
#
# For each server and each N in COUNTS, a fresh server (one worker, core
# SERVER_CPU) gets N distinct devices registered once each by sipload (core
# CLIENT_CPU, closed loop, Expires EXPIRES so nothing expires meanwhile); then
#   sipreg:   VmRSS before and after, VmHWM (peak), the /metrics gauge
#             sipreg_registrations (must be N) and SPOT random AORs looked up
#             through /api/lookup (each must have a binding);
#   Kamailio: the RSS and PSS of all its processes before and after (its
#             shared-memory pool is mapped by every process: PSS counts each
#             page once), its shm pool use from `kamcmd core.shmmem`
#             (real_used: what the allocator handed out plus its own headers),
#             and usrloc:location_contacts (must be N);
#   bytes per device = (after − before) / N.
# Prints a markdown table (also OUT/table.md); raw records in OUT/results.jsonl.
# Everything on 127.0.0.1; every process started is stopped by PID.
#
# Environment (defaults):
#   COUNTS="100000 1000000" SERVERS="sipreg kamailio"
#   AUTH=noauth      noauth: register-noauth against --no-auth / -A NOAUTH;
#                    digest: the full digest flow (register) with one shared password
#   EXPIRES=7200 WINDOW=256 SPOT=200 GEN_THREADS=1 SIPLOAD_ARGS=""
#   SIPREG_ARGS=""   extra sipreg arguments (e.g. --threads 2)
#   KAM_SHM_MB=2048 (about 1.1 KB per registration) KAM_PKG_MB=16 KAM_MEM=tlsf
#   KAM_UL_HASH=14   usrloc hash_size (2^14 slots)
#   SERVER_CPU=0 CLIENT_CPU=1 BIN=target/release OUT=perf/out/memory-YYYYmmdd-HHMMSS
set -euo pipefail
KAM_SHM_MB=${KAM_SHM_MB:-2048} # before lib.sh, whose default (512) is too small for 1 M
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT"

COUNTS=${COUNTS:-"100000 1000000"}
SERVERS=${SERVERS:-"sipreg kamailio"}
AUTH=${AUTH:-noauth}
EXPIRES=${EXPIRES:-7200}
WINDOW=${WINDOW:-256}
SPOT=${SPOT:-200}
GEN_THREADS=${GEN_THREADS:-1}
SIPLOAD_ARGS=${SIPLOAD_ARGS:-}
SIPREG_ARGS=${SIPREG_ARGS:-}
KAM_UL_HASH=${KAM_UL_HASH:-14}
OUT=${OUT:-$PERF_ROOT/perf/out/memory-$(date +%Y%m%d-%H%M%S)}
RESULTS=$OUT/results.jsonl

trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

case $AUTH in
noauth) scenario=register-noauth ;;
digest) scenario=register ;;
*) die "AUTH is noauth or digest, not $AUTH" ;;
esac
(($(nproc) >= 2)) || die "needs 2 cores (server on $SERVER_CPU, generator on $CLIENT_CPU)"
command -v curl >/dev/null || die "curl missing"
if [[ ! -x $BIN/sipreg || ! -x $BIN/sipload ]]; then
    log "building sipreg and sipload (release)"
    timeout 1200 cargo build --release -p sipreg -p sipload >&2 || die "cargo build failed"
fi
if [[ " $SERVERS " == *" kamailio "* ]]; then
    command -v kamailio >/dev/null || die "kamailio not installed (apt-get install kamailio)"
    command -v kamcmd >/dev/null || die "kamcmd not installed (comes with kamailio)"
fi
mkdir -p "$OUT/logs" "$OUT/json" "$OUT/bin"
: >"$RESULTS"
cp "$BIN/sipreg" "$BIN/sipload" "$OUT/bin/"
BIN=$OUT/bin
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$PERF_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$PERF_ROOT" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; $(free -g | awk '/^Mem:/ {print $2}') GiB RAM; kernel $(uname -r)"
    echo "kamailio: $(kamailio -v 2>/dev/null | head -1 | sed 's/^version: //;s/ *$//') (-x $KAM_MEM -m $KAM_SHM_MB -M $KAM_PKG_MB, usrloc hash_size $KAM_UL_HASH, ctl for kamcmd)"
    echo "settings: COUNTS='$COUNTS' AUTH=$AUTH ($scenario) EXPIRES=$EXPIRES WINDOW=$WINDOW GEN_THREADS=$GEN_THREADS SIPREG_ARGS='$SIPREG_ARGS' SIPLOAD_ARGS='$SIPLOAD_ARGS'"
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2

# register N TAG: every device once, closed loop; sipload's JSON to OUT/json/TAG.json.
register() {
    local n=$1 tag=$2 limit
    limit=$((n / 10000 + 60)) # seconds: ≥ 10 000/s, which both servers exceed
    # shellcheck disable=SC2086
    timeout $((limit + 60)) taskset -c "$CLIENT_CPU" "$BIN/sipload" --target "$SRV_ADDR" \
        --scenario "$scenario" --devices "$n" --count "$n" --window "$WINDOW" \
        --duration "$limit" --drain 5 --expires "$EXPIRES" --password secret --realm sipreg \
        --threads "$GEN_THREADS" --json --quiet $SIPLOAD_ARGS >"$OUT/json/$tag.json" ||
        die "sipload failed ($tag): $(tail -3 "$OUT/json/$tag.json")"
}

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$1" "$2"; }

# record KEY=VALUE...: one JSON object appended to RESULTS (numbers stay numbers).
record() {
    python3 - "$@" >>"$RESULTS" <<'PY'
import json, sys
rec = {}
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    try:
        rec[k] = int(v)
    except ValueError:
        try:
            rec[k] = float(v)
        except ValueError:
            rec[k] = v
print(json.dumps(rec, sort_keys=True))
PY
}

measure_sipreg() {
    local n=$1 tag=sipreg-$1 args=() rss0 hwm0 rss1 hwm1 anon1 regs ok=0 i idx code t0 settle
    [[ $AUTH == noauth ]] && args+=(--no-auth)
    # shellcheck disable=SC2206
    args+=(--max-expires "$EXPIRES" $SIPREG_ARGS)
    start_sipreg "$OUT/logs/$tag.log" "${args[@]}"
    sleep 1
    rss0=$(status_kb "$SRV_PID" VmRSS) hwm0=$(status_kb "$SRV_PID" VmHWM)
    log "sipreg pid $SRV_PID: $n devices ($scenario), RSS before ${rss0} kB"
    t0=$(date +%s.%N)
    register "$n" "$tag"
    log "  sipload: $(json_field "$OUT/json/$tag.json" completed) completed in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s, errors $(json_field "$OUT/json/$tag.json" errors)"
    # The timer thread may still be taking expiry timers off its channel: wait
    # until the gauge shows every device and RSS stops moving.
    settle=0
    for ((i = 0; i < 120; i++)); do
        regs=$(metric sipreg_registrations || echo 0)
        rss1=$(status_kb "$SRV_PID" VmRSS)
        sleep 1
        [[ $regs == "$n" && $(status_kb "$SRV_PID" VmRSS) == "$rss1" ]] && { settle=1; break; }
    done
    ((settle)) || log "  warning: RSS or the gauge still moving after 120 s (registrations $regs)"
    rss1=$(status_kb "$SRV_PID" VmRSS) hwm1=$(status_kb "$SRV_PID" VmHWM) anon1=$(status_kb "$SRV_PID" RssAnon)
    # Spot checks: random devices must be in the table with a binding.
    for ((i = 0; i < SPOT; i++)); do
        idx=$(((RANDOM * 32768 + RANDOM) % n))
        code=$(curl -s -o "$OUT/logs/lookup.json" -w '%{http_code}' --max-time 5 \
            "http://$SRV_HTTP/api/lookup/$(printf 'dev%08d' "$idx")@127.0.0.1")
        [[ $code == 200 ]] && grep -q '"contact"' "$OUT/logs/lookup.json" && ok=$((ok + 1))
    done
    log "  RSS after ${rss1} kB (peak ${hwm1} kB), registrations gauge $regs, spot checks $ok/$SPOT"
    record server=sipreg n="$n" auth="$AUTH" completed="$(json_field "$OUT/json/$tag.json" completed)" \
        errors="$(json_field "$OUT/json/$tag.json" errors)" timeouts="$(json_field "$OUT/json/$tag.json" timeouts)" \
        rate="$(json_field "$OUT/json/$tag.json" rate_per_s)" \
        rss_before_kb="$rss0" rss_after_kb="$rss1" hwm_before_kb="$hwm0" hwm_after_kb="$hwm1" \
        anon_after_kb="$anon1" registrations="$regs" spot_ok="$ok" spot="$SPOT"
    stop_server
}

# kam_field CMD... FIELD: the value of FIELD in kamcmd's output, whose lines read
# "\tname: value" (core.shmmem) or "group:name = value" (stats.get_statistics).
kam_field() {
    local f=${*: -1}
    kamcmd_ "${@:1:$#-1}" | awk -v f="$f" '
        { sub(/^[ \t]+/, "") }
        index($0, f ": ") == 1 { print substr($0, length(f) + 3); exit }
        index($0, f " = ") == 1 { print substr($0, length(f) + 4); exit }'
}

measure_kamailio() {
    local n=$1 tag=kamailio-$1 mode=auth m0 m1 shm0 shm1 contacts t0 settle=0 i prev
    [[ $AUTH == noauth ]] && mode=noauth
    KAM_CTL=$OUT/logs/$tag.ctl KAM_SHM_MB=$KAM_SHM_MB KAM_DEFINES="${KAM_DEFINES:-} UL_HASH_SIZE=$KAM_UL_HASH" \
        start_kamailio "$OUT/logs/$tag.log" "$mode"
    KAM_CTL=$OUT/logs/$tag.ctl
    SRV_PIDS="$SRV_PID $(children_of "$SRV_PID")"
    sleep 1
    # shellcheck disable=SC2086
    m0=$(mem_kb $SRV_PIDS)
    shm0=$(kam_field core.shmmem real_used)
    log "kamailio pids $SRV_PIDS: $n devices ($scenario), RSS/PSS before ${m0// //} kB, shm real_used $shm0"
    t0=$(date +%s.%N)
    register "$n" "$tag"
    log "  sipload: $(json_field "$OUT/json/$tag.json" completed) completed in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s, errors $(json_field "$OUT/json/$tag.json" errors)"
    prev=
    for ((i = 0; i < 60; i++)); do
        # shellcheck disable=SC2086
        m1=$(mem_kb $SRV_PIDS)
        [[ $m1 == "$prev" ]] && { settle=1; break; }
        prev=$m1
        sleep 1
    done
    ((settle)) || log "  warning: memory still moving after 60 s"
    shm1=$(kam_field core.shmmem real_used)
    contacts=$(kam_field stats.get_statistics usrloc: usrloc:location_contacts)
    log "  RSS/PSS after ${m1// //} kB, shm real_used $shm1, usrloc contacts $contacts"
    record server=kamailio n="$n" auth="$AUTH" completed="$(json_field "$OUT/json/$tag.json" completed)" \
        errors="$(json_field "$OUT/json/$tag.json" errors)" timeouts="$(json_field "$OUT/json/$tag.json" timeouts)" \
        rate="$(json_field "$OUT/json/$tag.json" rate_per_s)" \
        rss_before_kb="${m0% *}" pss_before_kb="${m0#* }" rss_after_kb="${m1% *}" pss_after_kb="${m1#* }" \
        shm_before="$shm0" shm_after="$shm1" registrations="$contacts" processes="$(wc -w <<<"$SRV_PIDS")"
    stop_server
    KAM_CTL=
}

for n in $COUNTS; do
    for server in $SERVERS; do
        case $server in
        sipreg) measure_sipreg "$n" ;;
        kamailio) measure_kamailio "$n" ;;
        *) die "unknown server $server (sipreg kamailio)" ;;
        esac
    done
done

python3 - "$RESULTS" "$OUT/env.txt" >"$OUT/table.md" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = open(sys.argv[2]).read().strip().splitlines()
print("## Memory per registered device\n")
for line in env:
    print(f"- {line}")
print("\n| server | devices | completed | errors | reg/s | in table | RSS before MiB | RSS after MiB | peak MiB | **RSS B/device** | PSS B/device | shm B/device | check |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
per = {}
for r in recs:
    n = r["n"]
    rss = (r["rss_after_kb"] - r["rss_before_kb"]) * 1024 / n
    pss = (r["pss_after_kb"] - r["pss_before_kb"]) * 1024 / n if "pss_after_kb" in r else None
    shm = (r["shm_after"] - r["shm_before"]) / n if "shm_after" in r else None
    main = pss if pss is not None else rss
    per[(r["server"], n)] = main
    ok = r.get("registrations") == n and r.get("completed") == n and not r.get("errors")
    check = "ok" if ok else "MISMATCH"
    if "spot" in r:
        check += f", {r['spot_ok']}/{r['spot']} lookups"
    peak = f"{r['hwm_after_kb'] / 1024:,.0f}" if "hwm_after_kb" in r else "–"
    fmt = lambda v: "–" if v is None else f"{v:,.0f}"
    print(f"| {r['server']} | {n:,} | {r.get('completed', 0):,} | {r.get('errors')} | {r.get('rate', 0):,.0f} | "
          f"{r.get('registrations')} | {r['rss_before_kb'] / 1024:,.1f} | {r['rss_after_kb'] / 1024:,.1f} | {peak} | "
          f"**{rss:,.0f}** | {fmt(pss)} | {fmt(shm)} | {check} |")
print("\nB/device = (after − before) / devices. Kamailio: RSS summed over its processes counts its shared "
      "pool once per process; PSS (each shared page divided among the processes mapping it) is the real total, "
      "and shm = `core.shmmem` real_used.")
ns = sorted({n for _, n in per})
for n in ns:
    s, k = per.get(("sipreg", n)), per.get(("kamailio", n))
    if s and k:
        print(f"\nAt {n:,} devices: sipreg {s:,.0f} B/device (RSS) vs Kamailio {k:,.0f} B/device (PSS): ratio {s / k:.2f}.")
PY
cat "$OUT/table.md"
log "raw records, sipload JSON and logs in $OUT"
