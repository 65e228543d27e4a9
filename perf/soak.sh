#!/usr/bin/env bash
# perf/soak.sh — a long run with continuous churn and a restart in the middle
# (issue 6 point 6): ends with no error, no lost binding (the table matches what
# the clients believe they registered) and RSS flat after warm-up.
#
# One release sipreg (2 workers, core SERVER_CPU, fixed loopback ports, --state
# OUT/sipreg.state saved every 10 s) serves for DURATION seconds while, from core
# CLIENT_CPU:
#   A  sipload --scenario refresh: A_DEVICES devices registered at the start and
#      refreshed round-robin at A_RATE/s for the whole run (Expires A_EXPIRES,
#      longer than a refresh period plus the restart gap);
#   B  every B_PERIOD s a round of B_DEVICES new AORs registers with Expires
#      B_EXPIRES and is never refreshed: the bindings must expire (a sample of each
#      round is checked 404 a few seconds after its expiry);
#   C  every C_PERIOD s a round of C_DEVICES new AORs registers, and C_HOLD s later
#      unregisters (the same Contact with Expires: 0);
#   G  gbsim: CAMERAS GB28181 cameras register, refresh at 80 % of G_EXPIRES, send
#      keep-alives every G_KEEPALIVE s and answer catalog queries (CHANNELS
#      channels, 8 per Response MESSAGE); every CAT_PERIOD s the admin API asks
#      CAT_BATCH of them for their catalog (POST /api/devices/{id}/catalog).
# At RESTART_AT (DURATION/2) sipreg gets SIGTERM (it saves its state) and is
# started again on the same ports with the same --state file while every client
# keeps running (UDP retransmissions cover the gap); its log must say
# "state restored from …: N devices with M live bindings". One B round and one C
# round are placed across the restart on purpose (B registered before, expiring
# after; C registered before, unregistered after).
# Every 10 s sipreg's VmRSS/VmHWM and its gauges go to OUT/rss.csv. When the loads
# have ended (END_MARGIN s before DURATION) and the last B round has expired,
# perf/soak_check.py pages through the table and checks it against the clients,
# sums /metrics over both processes, compares RSS after warm-up with the end of
# each half, prints the summary (also OUT/summary.txt) and the verdict; the script
# exits 1 on FAIL.
#
# Usage:
#   perf/soak.sh                          # 30 minutes (DURATION=1800)
#   DURATION=180 perf/soak.sh             # a short trial
#   BUILD=1 DURATION=180 perf/soak.sh     # cargo build --release first
#
# Environment (defaults):
#   DURATION=1800 RESTART_AT=DURATION/2 END_MARGIN=10 RSS_EVERY=10 RSS_TOL=10 (%)
#   A_DEVICES=20000 A_RATE=1000 A_EXPIRES=120
#   B_DEVICES=2000 B_RATE=500 B_EXPIRES=30 B_PERIOD=60
#   C_DEVICES=1000 C_RATE=500 C_HOLD=20 C_PERIOD=60 C_EXPIRES=600
#   CAMERAS=200 CHANNELS=16 G_KEEPALIVE=10 G_EXPIRES=120
#   CAT_PERIOD=10 CAT_BATCH=10
#   RESTART_WINDOW=40   client errors/timeouts within [stop-2 s, ready+this] are
#                       attributed to the restart and reported, not failed
#                       (a UDP timeout is declared 32 s after the request)
#   SIPREG_ARGS=""      extra sipreg arguments   THREADS=2
#   BUILD=0 (1: cargo build --release first; the binaries are built if missing)
#   SERVER_CPU=0 CLIENT_CPU=1   OUT=perf/out/soak
# Everything on 127.0.0.1; every load is bounded by --duration/--count; every
# process is started here and stopped by its PID (also on Ctrl-C).
set -euo pipefail
# shellcheck source=perf/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PERF_ROOT"

DURATION=${DURATION:-1800}
RESTART_AT=${RESTART_AT:-$((DURATION / 2))}
END_MARGIN=${END_MARGIN:-10}
RSS_EVERY=${RSS_EVERY:-10}
RSS_TOL=${RSS_TOL:-10}
A_DEVICES=${A_DEVICES:-20000}
A_RATE=${A_RATE:-1000}
A_EXPIRES=${A_EXPIRES:-120}
B_DEVICES=${B_DEVICES:-2000}
B_RATE=${B_RATE:-500}
B_EXPIRES=${B_EXPIRES:-30}
B_PERIOD=${B_PERIOD:-60}
C_DEVICES=${C_DEVICES:-1000}
C_RATE=${C_RATE:-500}
C_HOLD=${C_HOLD:-20}
C_PERIOD=${C_PERIOD:-60}
C_EXPIRES=${C_EXPIRES:-600}
CAMERAS=${CAMERAS:-200}
CHANNELS=${CHANNELS:-16}
G_KEEPALIVE=${G_KEEPALIVE:-10}
G_EXPIRES=${G_EXPIRES:-120}
CAT_PERIOD=${CAT_PERIOD:-10}
CAT_BATCH=${CAT_BATCH:-10}
RESTART_WINDOW=${RESTART_WINDOW:-40}
THREADS=${THREADS:-2}
SIPREG_ARGS=${SIPREG_ARGS:-}
BUILD=${BUILD:-0}
OUT=${OUT:-$PERF_ROOT/perf/out/soak}

# Names the clients register (sipload: PREFIX + 8-digit index from 0, at the
# target's IP; gbsim: GB_PREFIX + index from 1, 20 digits in all).
A_PREFIX=a-
GB_PREFIX=3402000000132
PLATFORM_ID=34020000002000000001
MIN_EXPIRES=10

LOAD_END=$((DURATION - END_MARGIN))
((DURATION >= 120)) || die "DURATION must be at least 120 s"
((RESTART_AT > 30 && RESTART_AT < LOAD_END - 30)) || die "RESTART_AT must leave 30 s on either side"
((B_EXPIRES >= MIN_EXPIRES && C_EXPIRES >= MIN_EXPIRES && A_EXPIRES >= MIN_EXPIRES)) ||
    die "every Expires must be at least $MIN_EXPIRES (sipreg --min-expires)"
((A_EXPIRES > A_DEVICES / A_RATE + 10)) ||
    die "A_EXPIRES ($A_EXPIRES s) must exceed a refresh period (A_DEVICES/A_RATE = $((A_DEVICES / A_RATE)) s) plus the restart gap"

trap perf_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

if [[ $BUILD == 1 || ! -x $BIN/sipreg || ! -x $BIN/sipload || ! -x $BIN/gbsim ]]; then
    log "building sipreg, sipload and gbsim (release)"
    timeout 1200 cargo build --release -p sipreg -p sipload -p gbsim --bins >&2 ||
        die "cargo build failed"
fi
mkdir -p "$OUT/bin"
# Only what a previous run of this script left: never a stale state file (it
# would restore devices this run did not register).
rm -f "$OUT"/sipreg.state* "$OUT"/*.json "$OUT"/*.log "$OUT"/*.txt "$OUT"/*.csv \
    "$OUT"/*.tsv "$OUT"/*.env "$OUT"/*.progress "$OUT"/*.metrics
# A snapshot of the binaries: a concurrent `cargo build` must not swap them mid-run
# (sipreg is started twice).
cp "$BIN/sipreg" "$BIN/sipload" "$BIN/gbsim" "$OUT/bin/" || die "cannot copy the binaries"
BIN=$OUT/bin
STATE=$OUT/sipreg.state
EVENTS=$OUT/events.tsv
RSS_CSV=$OUT/rss.csv

# free_tcp_udp_port: a port free on 127.0.0.1 for both UDP and TCP right now.
free_tcp_udp_port() {
    python3 - <<'PY'
import socket
for _ in range(100):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
        u.close()
    print(port)
    break
PY
}

SIP_PORT=$(free_tcp_udp_port)
HTTP_PORT=$(free_tcp_udp_port)
[[ -n $SIP_PORT && -n $HTTP_PORT && $SIP_PORT != "$HTTP_PORT" ]] || die "no free ports"
SIP=127.0.0.1:$SIP_PORT
HTTP=127.0.0.1:$HTTP_PORT

now_us() { echo "${EPOCHREALTIME/./}"; }
# t(): seconds since T0, with milliseconds.
t() {
    local us
    us=$(($(now_us) - T0_US))
    printf '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000))
}
# event KIND FIELDS...: one tab-separated line in EVENTS (epoch seconds first).
event() {
    local IFS=$'\t'
    echo "$EPOCHREALTIME	$*" >>"$EVENTS"
}

# start_sipreg_soak N: the Nth sipreg process (1, then 2 after the restart).
start_sipreg_soak() {
    local n=$1
    SRV_LOG=$OUT/sipreg-$n.log
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" "$BIN/sipreg" --listen "$SIP" --http "$HTTP" \
        --password secret --platform-id "$PLATFORM_ID" --threads "$THREADS" \
        --min-expires "$MIN_EXPIRES" --state "$STATE" --state-interval 10 \
        $SIPREG_ARGS >"$SRV_LOG" 2>&1 &
    SRV_PID=$!
    SRV_PIDS=$SRV_PID
    SRV_HTTP=$HTTP
    PERF_PIDS+=("$SRV_PID")
    wait_for_line "$SRV_LOG" '^sipreg admin on 127\.0\.0\.1:[0-9]+ ' 30 ||
        die "sipreg ($n) did not start: $(tail -5 "$SRV_LOG")"
    event sipreg_started "$n" "$SRV_PID"
}

# metrics_to FILE: sipreg's /metrics now.
metrics_to() {
    curl -sf --max-time 10 "http://$HTTP/metrics" >"$1" || {
        log "warning: /metrics did not answer"
        return 1
    }
}

# gauge FILE NAME: an unlabelled sample from a /metrics dump.
gauge() { awk -v n="$2" '$1 == n { print $2 }' "$1"; }

# rss_sample: one CSV row (t, phase, pid, VmRSS, VmHWM, bindings, devices, online GB devices).
RSS_TMP=$OUT/rss-sample.metrics
rss_sample() {
    local rss hwm regs='' devs='' gbon=''
    rss=$(status_kb "$SRV_PID" VmRSS 2>/dev/null) || return 0
    hwm=$(status_kb "$SRV_PID" VmHWM 2>/dev/null) || return 0
    if metrics_to "$RSS_TMP"; then
        regs=$(gauge "$RSS_TMP" sipreg_registrations)
        devs=$(gauge "$RSS_TMP" sipreg_devices)
        gbon=$(gauge "$RSS_TMP" sipreg_gb_devices_online)
    fi
    echo "$(t),$PHASE,$SRV_PID,$rss,$hwm,$regs,$devs,$gbon" >>"$RSS_CSV"
}

# gen NAME ARGS...: a generator in the background on CLIENT_CPU; JSON on
# OUT/NAME.json, stderr on OUT/NAME.log; its PID in GEN_PID.
gen() {
    local name=$1
    shift
    taskset -c "$CLIENT_CPU" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" &
    GEN_PID=$!
    PERF_PIDS+=("$GEN_PID")
    event gen_start "$name" "$GEN_PID"
}

# stamp_lines FILE: copies stdin to FILE, each line prefixed by the epoch time
# (sipload's progress lines carry cumulative timeouts and errors: stamped, they
# tell which errors fell in the restart window).
stamp_lines() {
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done >"$1"
}

# restart_sipreg: SIGTERM (sipreg saves its state), wait for the exit (SIGKILL
# after 30 s, recorded), start it again on the same ports and state file.
restart_sipreg() {
    local stop_t0 i rc=0 stop_ms gap_ms restored
    rss_sample
    # the first process's counters, as late as possible before it stops
    metrics_to "$OUT/phase1.metrics" || true
    stop_t0=$(now_us)
    kill -TERM "$SRV_PID"
    event sigterm "$SRV_PID"
    log "restart: SIGTERM to sipreg $SRV_PID at t=$(t)"
    for ((i = 0; i < 300; i++)); do
        [[ $(awk '{print $3}' "/proc/$SRV_PID/stat" 2>/dev/null || echo X) =~ ^[ZX]$ ]] && break
        sleep 0.1
    done
    if ((i == 300)); then
        event sigkill "$SRV_PID"
        log "sipreg did not exit within 30 s of SIGTERM: SIGKILL"
        kill -KILL "$SRV_PID" 2>/dev/null || true
    fi
    wait "$SRV_PID" || rc=$?
    stop_ms=$((($(now_us) - stop_t0) / 1000))
    event exited "$SRV_PID" "$rc" "$stop_ms"
    PHASE=2
    start_sipreg_soak 2
    gap_ms=$((($(now_us) - stop_t0) / 1000))
    restored=$(grep -m1 -o 'state restored from .*' "$SRV_LOG" || true)
    event restarted "$SRV_PID" "$gap_ms" "$restored"
    log "restart: exit code $rc after ${stop_ms} ms; serving again after ${gap_ms} ms: ${restored:-NO 'state restored' LINE}"
}

# b_check_due NOW_S: on-time expiry — a sample of each B round must be gone
# (404) a few seconds after its Expires (the round straddling the restart expires
# on the restored timers).
b_check_due() {
    local due p name present=0 sampled=0 idx code
    ((${#B_CHECK[@]})) || return 0
    read -r due p name <<<"${B_CHECK[0]}"
    (($1 >= due)) || return 0
    B_CHECK=("${B_CHECK[@]:1}")
    # 20 spread over the round, and its last one
    for idx in $(seq 0 $(((B_DEVICES + 19) / 20)) $((B_DEVICES - 1))) $((B_DEVICES - 1)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
            "http://$HTTP/api/devices/$p$(printf '%08d' "$idx")@127.0.0.1" || true)
        sampled=$((sampled + 1))
        [[ $code == 404 ]] || present=$((present + 1))
    done
    event bcheck "$name" "$sampled" "$present"
    ((present == 0)) || log "warning: $present of $sampled sampled $name bindings still there ${B_EXPIRES}+ s after they were registered"
}

# sample_present KIND PREFIX FIRST COUNT SUFFIX: right after the restart (before
# refreshes could heal anything), GET a sample of ids PREFIX + index + SUFFIX
# (indices FIRST..FIRST+COUNT-1, 10 spread over them); logs an event with how
# many are present.
sample_present() {
    local kind=$1 p=$2 first=$3 count=$4 suffix=$5 width=8 idx code sampled=0 present=0
    [[ $kind == G ]] && width=$((20 - ${#p}))
    for idx in $(seq "$first" $(((count + 9) / 10)) $((first + count - 1))); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
            "http://$HTTP/api/devices/$p$(printf '%0*d' "$width" "$idx")$suffix" || true)
        sampled=$((sampled + 1))
        [[ $code == 200 ]] && present=$((present + 1))
    done
    event restore_sample "$kind" "$p" "$sampled" "$present"
    ((present == sampled)) || log "warning: after the restart only $present of $sampled sampled $kind devices ($p…) are there"
}

# restore_samples NOW_S: samples of every population that must be in the table
# right after the restart: A, the cameras, B rounds registered and not yet
# expiring, C rounds registered and not yet unregistered.
restore_samples() {
    local now=$1 e due p name start
    sample_present A "$A_PREFIX" 0 "$A_DEVICES" @127.0.0.1
    sample_present G "$GB_PREFIX" 1 "$CAMERAS" ""
    for e in "${B_CHECK[@]}"; do
        read -r due p name <<<"$e"
        start=$((due - B_LEN - B_EXPIRES - 6))
        ((start + B_LEN + 1 < now && start + B_EXPIRES > now + 3)) &&
            sample_present B "$p" 0 "$B_DEVICES" @127.0.0.1
    done
    for e in "${C_UNREG[@]}"; do
        read -r due p name <<<"$e"
        kill -0 "${ROUND_PID[$name]}" 2>/dev/null ||
            sample_present C "$p" 0 "$C_DEVICES" @127.0.0.1
    done
    return 0
}

# A schedule anchored on the restart, so that one round always straddles it:
# first_slot ANCHOR PERIOD FIRST → the earliest ANCHOR + k·PERIOD ≥ FIRST.
first_slot() {
    local s=$1
    while ((s - $2 >= $3)); do s=$((s - $2)); done
    while ((s < $3)); do s=$((s + $2)); done
    echo "$s"
}
B_LEN=$(((B_DEVICES + B_RATE - 1) / B_RATE))
C_LEN=$(((C_DEVICES + C_RATE - 1) / C_RATE))
B_TIMES=()
s=$(first_slot $((RESTART_AT - B_EXPIRES / 2)) "$B_PERIOD" 5)
while ((s + B_LEN + 3 <= LOAD_END && s + B_LEN + B_EXPIRES + 8 <= DURATION - 2)); do
    B_TIMES+=("$s")
    s=$((s + B_PERIOD))
done
C_TIMES=()
s=$(first_slot $((RESTART_AT - C_HOLD / 2)) "$C_PERIOD" 8)
while ((s + C_HOLD + C_LEN + 5 <= LOAD_END)); do
    C_TIMES+=("$s")
    s=$((s + C_PERIOD))
done
((C_HOLD >= C_LEN + 4)) || die "C_HOLD must leave a C round time to register (C_DEVICES/C_RATE + 4 s)"

cat >"$OUT/run.env" <<EOF
DURATION=$DURATION
RESTART_AT=$RESTART_AT
LOAD_END=$LOAD_END
RSS_TOL=$RSS_TOL
CHURN_PERIOD=$((B_PERIOD > C_PERIOD ? B_PERIOD : C_PERIOD))
RESTART_WINDOW=$RESTART_WINDOW
A_DEVICES=$A_DEVICES
A_RATE=$A_RATE
A_EXPIRES=$A_EXPIRES
A_PREFIX=$A_PREFIX
B_DEVICES=$B_DEVICES
B_EXPIRES=$B_EXPIRES
C_DEVICES=$C_DEVICES
CAMERAS=$CAMERAS
CHANNELS=$CHANNELS
GB_PREFIX=$GB_PREFIX
HTTP=$HTTP
SIP=$SIP
STATE=$STATE
EOF

log "soak: ${DURATION} s against sipreg on $SIP (admin $HTTP), restart at ${RESTART_AT} s; output in $OUT"
log "  A ${A_DEVICES} devices refreshed at ${A_RATE}/s (Expires ${A_EXPIRES}); G ${CAMERAS} cameras"
log "  B rounds of ${B_DEVICES} (Expires ${B_EXPIRES}) at t=${B_TIMES[*]:-none}"
log "  C rounds of ${C_DEVICES} (unregistered ${C_HOLD} s later) at t=${C_TIMES[*]:-none}"

echo "t_s,phase,pid,vmrss_kb,vmhwm_kb,registrations,devices,gb_online" >"$RSS_CSV"
: >"$EVENTS"
T0_US=$(now_us)
event start "$DURATION" "$RESTART_AT"
PHASE=1
start_sipreg_soak 1
event ports "$SIP" "$HTTP"

# A: refresh for the whole run (the warm-up registers every device first).
a_dur=$((LOAD_END - EPOCHSECONDS + T0_US / 1000000))
taskset -c "$CLIENT_CPU" "$BIN/sipload" --target "$SIP" --scenario refresh \
    --devices "$A_DEVICES" --user-prefix "$A_PREFIX" --expires "$A_EXPIRES" \
    --rate "$A_RATE" --duration "$a_dur" --sockets 2 --drain 35 --warmup-timeout 120 \
    --json >"$OUT/a.json" 2> >(stamp_lines "$OUT/a.progress") &
A_PID=$!
PERF_PIDS+=("$A_PID")
event gen_start a "$A_PID"

# G: the cameras (gbsim starts them over --ramp seconds).
g_dur=$((LOAD_END - EPOCHSECONDS + T0_US / 1000000))
gen gbsim "$BIN/gbsim" --server "$SIP" --devices "$CAMERAS" --id-prefix "$GB_PREFIX" \
    --password secret --realm sipreg --platform-id "$PLATFORM_ID" \
    --expires "$G_EXPIRES" --keepalive-interval "$G_KEEPALIVE" --channels "$CHANNELS" \
    --catalog-split 8 --ramp 10 --duration "$g_dur" --json

# The main loop: one tick a second until LOAD_END.
bi=0 ci=0 cat_next=$((CAT_PERIOD + 10)) rss_next=0 cat_idx=1
restarted=0
C_UNREG=() # "due prefix" of C rounds waiting for their unregister
B_CHECK=() # "due prefix" of B rounds whose expiry gets a sampled check
declare -A ROUND_PID=()
tick=0
while ((tick < LOAD_END)); do
    now_s=$((($(now_us) - T0_US) / 1000000))
    if ((now_s < tick)); then
        sleep "0.$(printf '%06d' $((1000000 - ($(now_us) - T0_US) % 1000000)))"
        continue
    fi
    tick=$((now_s + 1))

    kill -0 "$SRV_PID" 2>/dev/null || die "sipreg ($PHASE) exited: $(tail -5 "$SRV_LOG")"

    if ((now_s >= rss_next)); then
        rss_sample
        rss_next=$((rss_next + RSS_EVERY))
    fi

    if ((!restarted && now_s >= RESTART_AT)); then
        restart_sipreg
        restarted=1
        restore_samples "$now_s"
        rss_sample
    fi

    # B rounds: register, never refresh.
    if ((bi < ${#B_TIMES[@]} && now_s >= B_TIMES[bi])); then
        p=$(printf 'b%03d-' "$bi")
        gen "b$bi" "$BIN/sipload" --target "$SIP" --scenario register \
            --devices "$B_DEVICES" --count "$B_DEVICES" --user-prefix "$p" \
            --expires "$B_EXPIRES" --rate "$B_RATE" --duration $((B_LEN + 5)) --drain 35 \
            --json --quiet
        ROUND_PID[b$bi]=$GEN_PID
        B_CHECK+=("$((now_s + B_LEN + B_EXPIRES + 6)) $p b$bi")
        bi=$((bi + 1))
    fi
    # C rounds: register now, unregister C_HOLD s later.
    if ((ci < ${#C_TIMES[@]} && now_s >= C_TIMES[ci])); then
        p=$(printf 'c%03d-' "$ci")
        gen "c$ci-reg" "$BIN/sipload" --target "$SIP" --scenario register \
            --devices "$C_DEVICES" --count "$C_DEVICES" --user-prefix "$p" \
            --expires "$C_EXPIRES" --rate "$C_RATE" --duration $((C_LEN + 5)) --drain 35 \
            --json --quiet
        ROUND_PID[c$ci]=$GEN_PID
        C_UNREG+=("$((now_s + C_HOLD)) $p c$ci")
        ci=$((ci + 1))
    fi
    if ((${#C_UNREG[@]})); then
        read -r due p name <<<"${C_UNREG[0]}"
        # after its registrations are done (the round's sipload has exited)
        if ((now_s >= due)) && ! kill -0 "${ROUND_PID[$name]}" 2>/dev/null; then
            C_UNREG=("${C_UNREG[@]:1}")
            gen "$name-unreg" "$BIN/sipload" --target "$SIP" --scenario register \
                --devices "$C_DEVICES" --count "$C_DEVICES" --user-prefix "$p" \
                --expires 0 --rate "$C_RATE" --duration $((C_LEN + 5)) --drain 35 \
                --json --quiet
        fi
    fi
    b_check_due "$now_s"
    # Catalog queries through the admin API, CAT_BATCH cameras in turn, not
    # within 5 s of the restart (a query open at SIGTERM is lost with the process).
    if ((now_s >= cat_next)); then
        cat_next=$((cat_next + CAT_PERIOD))
        if ((now_s < RESTART_AT - 5 || now_s > RESTART_AT + 5)); then
            for ((i = 0; i < CAT_BATCH; i++)); do
                id=$GB_PREFIX$(printf '%0*d' $((20 - ${#GB_PREFIX})) "$cat_idx")
                cat_idx=$((cat_idx % CAMERAS + 1))
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
                    "http://$HTTP/api/devices/$id/catalog" || true)
                event catalog "$id" "$code"
            done
        fi
    fi
done

log "loads end; waiting for the generators to drain"
# Every generator is bounded (--duration + --drain); give them that, then stop.
deadline=$((EPOCHSECONDS + 60))
for pid in "${PERF_PIDS[@]}"; do
    [[ $pid == "$SRV_PID" ]] && continue
    while kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] &&
        ((EPOCHSECONDS < deadline)); do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
        log "warning: generator $pid still running: stopping it"
        event gen_killed "$pid"
    fi
    stop_pid "$pid"
done
# Until DURATION: the last B round must have expired.
while (($(now_us) - T0_US < DURATION * 1000000)); do
    kill -0 "$SRV_PID" 2>/dev/null || die "sipreg exited: $(tail -5 "$SRV_LOG")"
    b_check_due $((($(now_us) - T0_US) / 1000000))
    sleep 1
done
while ((${#B_CHECK[@]})); do b_check_due "$DURATION"; done
rss_sample
metrics_to "$OUT/phase2.metrics" || true
event end

rc=0
python3 "$PERF_ROOT/perf/soak_check.py" "$OUT" || rc=$?
metrics_to "$OUT/phase2-after-check.metrics" || true
exit "$rc"
