# shellcheck shell=bash
# perf/lib.sh — shell helpers shared by the perf/ scripts (compare.sh,
# flamegraph.sh, memory.sh, expiry.sh).
# Source it (bash); it defines functions and a few variables, runs nothing else.
#
# Rules every helper keeps: traffic only to 127.0.0.1; every process it starts is
# recorded in PERF_PIDS and stopped by its PID (perf_cleanup, installed as a trap
# by the scripts); every run is bounded in time.

PERF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$PERF_ROOT/target/release}
SERVER_CPU=${SERVER_CPU:-0}   # core the server under test is pinned to
CLIENT_CPU=${CLIENT_CPU:-1}   # core the load generator (and sipp) is pinned to
HZ=$(getconf CLK_TCK)
KAM_CFG=${KAM_CFG:-$PERF_ROOT/perf/kamailio/kamailio.cfg}
KAM_MEM=${KAM_MEM:-tlsf}      # kamailio -x: tlsf | qm | fm (pkg follows shm)
KAM_SHM_MB=${KAM_SHM_MB:-512} # kamailio -m (about 1.1 KB per registration)
KAM_PKG_MB=${KAM_PKG_MB:-16}  # kamailio -M
KAM_DEFINES=${KAM_DEFINES:-}  # extra kamailio.cfg defines, e.g. "NONCE_COUNT"
KAM_CTL=${KAM_CTL:-}          # a unix socket path: load ctl so kamcmd can ask it (memory.sh)

PERF_PIDS=()      # every process started here, stopped by perf_cleanup
SRV_PID=          # the server currently running (the process we exec'd)
SRV_PIDS=         # the processes whose CPU counts as the server's (space-separated)
SRV_ADDR=         # 127.0.0.1:PORT
SRV_LOG=          # its stdout+stderr
SRV_HTTP=         # sipreg's admin API, 127.0.0.1:PORT

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A UDP port on 127.0.0.1 that is free right now (the kernel picks it).
free_udp_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_line FILE ERE SECONDS: until a line of FILE matches, or fail.
wait_for_line() {
    local file=$1 re=$2 secs=$3 i
    for ((i = 0; i < secs * 20; i++)); do
        grep -Eq "$re" "$file" 2>/dev/null && return 0
        [[ -n $SRV_PID ]] && ! kill -0 "$SRV_PID" 2>/dev/null && return 1
        sleep 0.05
    done
    return 1
}

# ticks PID...: utime+stime (clock ticks) summed over the processes (all threads).
ticks() {
    local pid line sum=0
    for pid in "$@"; do
        read -r line <"/proc/$pid/stat" || return 1
        line=${line##*) }
        # shellcheck disable=SC2086
        set -- $line
        sum=$((sum + ${12} + ${13}))
    done
    echo "$sum"
}

# The children of a process (kamailio forks its workers and timers).
children_of() { ps -o pid= --ppid "$1" | tr -s ' \n' ' '; }

# start_sipreg LOGFILE [extra sipreg args]: one worker on SERVER_CPU, ephemeral port.
# Without extra args it serves digest auth with the shared password "secret",
# challenging with SIPREG_DIGEST (md5: what Kamailio's config, sipp and sipload
# answer; sipreg's own default offers SHA-256 first and MD5 second — set
# SIPREG_DIGEST= to measure that).
SIPREG_DIGEST=${SIPREG_DIGEST-md5}
start_sipreg() {
    SRV_LOG=$1
    shift
    local auth=(--password secret)
    [[ -n $SIPREG_DIGEST ]] && auth+=(--digest-algorithms "$SIPREG_DIGEST")
    [[ " $* " == *" --no-auth "* ]] && auth=()
    taskset -c "$SERVER_CPU" "$BIN/sipreg" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
        "${auth[@]}" --threads 1 --min-expires 60 "$@" >"$SRV_LOG" 2>&1 &
    SRV_PID=$!
    PERF_PIDS+=("$SRV_PID")
    wait_for_line "$SRV_LOG" '^sipreg listening on 127\.0\.0\.1:[0-9]+ ' 10 ||
        die "sipreg did not start: $(tail -5 "$SRV_LOG")"
    SRV_ADDR=$(sed -nE 's/^sipreg listening on (127\.0\.0\.1:[0-9]+) .*/\1/p' "$SRV_LOG" | head -1)
    wait_for_line "$SRV_LOG" '^sipreg admin on 127\.0\.0\.1:[0-9]+ ' 10 ||
        die "sipreg's admin API did not start: $(tail -5 "$SRV_LOG")"
    SRV_HTTP=$(sed -nE 's/^sipreg admin on (127\.0\.0\.1:[0-9]+) .*/\1/p' "$SRV_LOG" | head -1)
    SRV_PIDS=$SRV_PID
}

# start_responder LOGFILE [extra args, e.g. --no-mmsg]: sipload's bare responder.
start_responder() {
    SRV_LOG=$1
    shift
    taskset -c "$SERVER_CPU" "$BIN/sipload" --responder --listen 127.0.0.1:0 \
        --duration 3600 "$@" >"$SRV_LOG" 2>&1 &
    SRV_PID=$!
    PERF_PIDS+=("$SRV_PID")
    wait_for_line "$SRV_LOG" '^sipload responder listening on 127\.0\.0\.1:[0-9]+' 10 ||
        die "the responder did not start: $(tail -5 "$SRV_LOG")"
    SRV_ADDR=$(sed -nE 's/^sipload responder listening on (127\.0\.0\.1:[0-9]+).*/\1/p' "$SRV_LOG" | head -1)
    SRV_PIDS=$SRV_PID
}

# start_kamailio LOGFILE [auth|noauth]: perf/kamailio/kamailio.cfg in the foreground
# (-DD: the process we start stays the main process), logging to stderr (-E),
# allocator KAM_MEM for shm and pkg, on a free port. Its CPU is the sum over the
# main process and every child it forked (UDP worker, timers).
start_kamailio() {
    SRV_LOG=$1
    local mode=${2:-auth} port defs=() i
    command -v kamailio >/dev/null || die "kamailio not installed (apt-get install kamailio)"
    port=$(free_udp_port)
    defs=(-A "SIP_PORT=$port")
    [[ $mode == noauth ]] && defs+=(-A NOAUTH)
    for i in $KAM_DEFINES; do defs+=(-A "$i"); done
    [[ -n $KAM_CTL ]] && defs+=(-A "CTL_SOCKET=\"unix:$KAM_CTL\"")
    mkdir -p "$(dirname "$SRV_LOG")/kamailio-run"
    # shellcheck disable=SC2094 # -Y names a directory beside the log, not the log
    taskset -c "$SERVER_CPU" kamailio -f "$KAM_CFG" -DD -E -x "$KAM_MEM" \
        -m "$KAM_SHM_MB" -M "$KAM_PKG_MB" -Y "$(dirname "$SRV_LOG")/kamailio-run" \
        "${defs[@]}" >"$SRV_LOG" 2>&1 &
    SRV_PID=$!
    PERF_PIDS+=("$SRV_PID")
    SRV_ADDR=127.0.0.1:$port
    # Ready when it answers OPTIONS (a few requests, outside any measured window).
    for ((i = 0; i < 50; i++)); do
        kill -0 "$SRV_PID" 2>/dev/null || die "kamailio exited: $(tail -5 "$SRV_LOG")"
        if timeout 5 "$BIN/sipload" --target "$SRV_ADDR" --scenario options --count 3 \
            --duration 1 --drain 1 --json --quiet 2>/dev/null | grep -q '"completed":3'; then
            break
        fi
        sleep 0.2
    done
    ((i < 50)) || die "kamailio does not answer on $SRV_ADDR: $(tail -5 "$SRV_LOG")"
    SRV_PIDS="$SRV_PID $(children_of "$SRV_PID")"
}

# start_server KIND LOGFILE: KIND is sipreg | sipreg-noauth | kamailio |
# kamailio-noauth | responder | responder-plain.
start_server() {
    case $1 in
    sipreg) start_sipreg "$2" ;;
    sipreg-noauth) start_sipreg "$2" --no-auth ;;
    kamailio) start_kamailio "$2" auth ;;
    kamailio-noauth) start_kamailio "$2" noauth ;;
    responder) start_responder "$2" ;;
    responder-plain) start_responder "$2" --no-mmsg ;;
    *) die "unknown server kind $1" ;;
    esac
}

# stop_pid PID [children...]: SIGTERM, up to 10 s, then SIGKILL; reaps our child.
stop_pid() {
    local pid=$1 p i
    shift
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            # our own child turns into a zombie until reaped: done as well
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true # its exit status (143 after SIGTERM) is no error here
    for p in "$@"; do
        [[ $p == "$pid" ]] && continue
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    return 0
}

stop_server() {
    [[ -n $SRV_PID ]] || return 0
    # shellcheck disable=SC2086
    stop_pid "$SRV_PID" $SRV_PIDS
    SRV_PID='' SRV_PIDS='' SRV_ADDR='' SRV_HTTP=''
}

# mem_kb PID...: "RSS PSS" in kB, summed over the processes (smaps_rollup).
# RSS counts a shared page once per process that maps it (Kamailio's shared
# memory pool is mapped by all of its processes); PSS divides it among them, so
# the PSS sum is the memory the whole server really holds.
mem_kb() {
    local pid rss=0 pss=0 k v _
    for pid in "$@"; do
        while read -r k v _; do
            case $k in
            Rss:) rss=$((rss + v)) ;;
            Pss:) pss=$((pss + v)) ;;
            esac
        done <"/proc/$pid/smaps_rollup"
    done
    echo "$rss $pss"
}

# status_kb PID FIELD: one field of /proc/PID/status in kB (VmRSS, VmHWM, RssAnon…).
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# metric NAME: the value of an unlabelled sample in sipreg's /metrics (SRV_HTTP).
metric() {
    curl -sf --max-time 10 "http://$SRV_HTTP/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

# kamcmd_ CMD...: kamcmd against the running Kamailio's ctl socket (KAM_CTL).
kamcmd_() { timeout 30 kamcmd -s "unix:$KAM_CTL" "$@"; }

# Trap handler: stop everything started here, by PID.
perf_cleanup() {
    local pid
    stop_server
    for pid in "${PERF_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && stop_pid "$pid"
    done
    return 0
}

# measure KIND JSON_OUT META_JSON -- COMMAND...
#   Runs COMMAND (pinned to CLIENT_CPU, a core or a list such as "0,1"), sampling the server's CPU (SRV_PIDS) every
#   20 ms, and appends one JSON record to $RESULTS: META merged with the server CPU
#   spent in the measured window, per operation, and the generator's figures.
#   KIND=sipload: COMMAND prints sipload --json on stdout (saved to JSON_OUT); the
#     window starts after sipload's warm-up (refresh registers every device first)
#     and ends when sipload exits.
#   KIND=sipp: JSON_OUT is sipp's -trace_stat file (read after it exits);
#     operations are successful calls. The window is the whole sipp run.
#   The command is killed (by PID) after MEASURE_TIMEOUT seconds. Before it starts,
#   waits up to QUIET_WAIT (10) s until other processes use < QUIET_MAX (15) % of a
#   core; the record keeps how busy the rest of the machine was meanwhile.
measure() {
    local kind=$1 out=$2 meta=$3
    shift 4
    M_KIND=$kind M_OUT=$out M_META=$meta M_PIDS=$SRV_PIDS M_HZ=$HZ M_CPU=$CLIENT_CPU M_SCPU=$SERVER_CPU \
        M_RESULTS=$RESULTS M_TIMEOUT=${MEASURE_TIMEOUT:-300} python3 - "$@" <<'PY' &
import json, os, resource, signal, subprocess, sys, time

env = os.environ
# core lists ("1" or "0,1"): the generator's cores, the server's cores
gcpus = [int(c) for c in env["M_CPU"].split(",")]
scpus = [int(c) for c in env["M_SCPU"].split(",")]
os.sched_setaffinity(0, set(gcpus))          # the sampler stays off the server's core
pids = env["M_PIDS"].split()
hz = int(env["M_HZ"])
kind, out = env["M_KIND"], env["M_OUT"]
meta = json.loads(env["M_META"])
cmd = ["taskset", "-c", env["M_CPU"]] + sys.argv[1:]

def ticks():
    total = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        total += int(rest[11]) + int(rest[12])   # utime, stime
    return total

def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError):
        return None

def stat_lines():
    with open("/proc/stat") as f:
        return {l.split()[0]: [int(x) for x in l.split()[1:]] for l in f if l.startswith("cpu")}

def sys_ticks():
    # user+nice+system of every core: processes' CPU, without irq/softirq/idle
    v = stat_lines()["cpu"]
    return v[0] + v[1] + v[2]

def core_busy(v):
    # everything but idle and iowait: processes, irq, softirq, steal
    return sum(v[:8]) - v[3] - v[4]

def cores():
    # busy ticks of the server's cores, of the generator's cores, softirq of the
    # server's cores (a list of several cores adds up: 200 % = two busy cores)
    st = stat_lines()
    return (sum(core_busy(st[f"cpu{c}"]) for c in scpus),
            sum(core_busy(st[f"cpu{c}"]) for c in gcpus),
            sum(st[f"cpu{c}"][6] for c in scpus))

def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

# Wait (bounded) for a quiet machine: other processes (builds, other benchmarks)
# on these two cores distort CPU per operation. Recorded either way.
quiet_max = float(env.get("QUIET_MAX", "15"))      # % of one core used by others
quiet_wait = float(env.get("QUIET_WAIT", "10"))    # seconds to wait at most
waited, busy = 0.0, None
while True:
    a, sa = sys_ticks(), ticks()
    time.sleep(0.5)
    b, sb = sys_ticks(), ticks()
    busy = 100.0 * ((b - a) - (sb - sa)) / hz / 0.5
    if busy <= quiet_max or waited >= quiet_wait:
        break
    if waited == 0:
        print(f"  machine busy ({busy:.0f}% of a core used by other processes): waiting up to {quiet_wait:.0f} s", file=sys.stderr)
    waited += 0.5

stdout = open(out if kind == "sipload" else out + ".stdout", "wb")
stderr = open(out + ".stderr", "wb")
c0, s0 = child_cpu(), self_cpu()
t_launch = time.time()
samples = [(t_launch, ticks(), sys_ticks())]
core_s = [(t_launch, cores())]
proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
gen = [(t_launch, 0)]        # the generator's own CPU ticks, sampled like the server's

def on_term(signum, frame):  # the script is being stopped: stop the generator too
    proc.kill()
    sys.exit(1)
signal.signal(signal.SIGTERM, on_term)
killed = False
deadline = t_launch + float(env["M_TIMEOUT"])
server_died = False
while proc.poll() is None:
    time.sleep(0.02)
    try:
        samples.append((time.time(), ticks(), sys_ticks()))
    except (OSError, IndexError):
        server_died = True
    core_s.append((time.time(), cores()))
    g = proc_ticks(proc.pid)
    if g is not None:
        gen.append((time.time(), g))
    if time.time() > deadline and not killed:
        proc.kill()                               # by PID: the process we started
        killed = True
proc.wait()
t_end = time.time()
try:
    samples.append((t_end, ticks(), sys_ticks()))
except (OSError, IndexError):
    server_died = True
core_s.append((t_end, cores()))
client_cpu_s = child_cpu() - c0
sampler_cpu_s = self_cpu() - s0
stdout.close(); stderr.close()
# CPU of everything else (user+nice+system, all cores) while the run lasted
other_s = ((samples[-1][2] - samples[0][2]) - (samples[-1][1] - samples[0][1])) / hz \
    - client_cpu_s - sampler_cpu_s
other_pct = round(max(other_s, 0.0) * 100 / max(t_end - t_launch, 1e-9), 1)

def ticks_at(t, samples=samples):
    # linear interpolation between the samples around t
    prev = samples[0]
    for s in samples:
        if s[0] >= t:
            if s[0] == prev[0]:
                return s[1]
            return prev[1] + (s[1] - prev[1]) * (t - prev[0]) / (s[0] - prev[0])
        prev = s
    return samples[-1][1]

rec = dict(meta)
rec.update(command=" ".join(sys.argv[1:]), exit_code=proc.returncode, killed=killed,
           server_died=server_died, generator_cpu_s=round(client_cpu_s, 3),
           other_cpu_pct=other_pct, busy_before_pct=round(busy, 1), waited_for_quiet_s=waited)
if kind == "sipload":
    try:
        r = json.load(open(out))
    except Exception as e:
        r = None
        rec["error"] = f"no JSON from sipload: {e}"
    warm = 0.0
    if r:
        warm = float((r.get("warmup") or {}).get("seconds") or 0.0)
        lat = r.get("latency_us") or {}
        rec.update(completed=r.get("completed", 0), sent=r.get("sent", 0),
                   achieved_rate=r.get("rate_per_s", 0.0), active_s=r.get("duration_s", 0.0),
                   p50_us=lat.get("p50"), p99_us=lat.get("p99"), max_us=lat.get("max"),
                   errors=r.get("errors", 0), timeouts=r.get("timeouts", 0),
                   retransmissions=r.get("retransmissions", 0),
                   status_counts=r.get("status_counts", {}), load=r.get("load"),
                   sipload_client_cpu_s=r.get("client_cpu_s"),
                   warmup_s=round(warm, 3))
    t_start = t_launch + warm
    ops = rec.get("completed", 0)
else:  # sipp -trace_stat file: cumulative counters in its last row
    row = {}
    try:
        lines = [l for l in open(out).read().splitlines() if l.strip()]
        row = dict(zip(lines[0].split(";"), lines[-1].split(";")))
    except Exception as e:
        rec["error"] = f"no sipp statistics: {e}"
    num = lambda k: int(row.get(k, "0").strip() or 0)
    ok, failed = num("SuccessfulCall(C)"), num("FailedCall(C)")
    wall = t_end - t_launch
    rec.update(completed=ok, failed_calls=failed, sent=num("TotalCallCreated"),
               retransmissions=num("Retransmissions(C)"), errors=failed, timeouts=0,
               achieved_rate=ok / wall if wall else 0.0, active_s=wall,
               p50_us=None, p99_us=None, max_us=None, load=meta.get("load"))
    t_start = t_launch
    ops = ok
cpu_s = (samples[-1][1] - ticks_at(t_start)) / hz
window = max(t_end - t_start, 1e-9)
active = rec.get("active_s") or window
# the generator's CPU in the same window (its total at exit from rusage)
gen_s = max(client_cpu_s - ticks_at(t_start, gen) / hz, 0.0)
rec.update(generator_cpu_s=round(gen_s, 3),
           generator_cpu_us_per_op=round(gen_s * 1e6 / ops, 3) if ops else None)
# how busy each core was (incl. softirq: loopback delivery runs there, charged to
# no process), over the same window
def core_pct(i):
    a = ticks_at(t_start, [(t, c[i]) for t, c in core_s])
    return round(100 * (core_s[-1][1][i] - a) / hz / active, 1) if active else None
rec.update(server_core_busy_pct=core_pct(0), generator_core_busy_pct=core_pct(1),
           server_core_softirq_pct=core_pct(2))
rec.update(server_cpu_s=round(cpu_s, 3), window_s=round(window, 3),
           server_cpu_us_per_op=round(cpu_s * 1e6 / ops, 3) if ops else None,
           # busy share of one core while load was offered (first to last event)
           server_cpu_pct=round(100 * cpu_s / active, 1) if active else None,
           generator_cpu_pct=round(100 * gen_s / active, 1) if active else None)
with open(env["M_RESULTS"], "a") as f:
    f.write(json.dumps(rec, sort_keys=True) + "\n")
cpo = rec["server_cpu_us_per_op"]
print(f'  {meta.get("server")}/{meta.get("scenario")} {meta.get("phase")}: '
      f'{rec.get("completed", 0)} ops at {rec.get("achieved_rate", 0):.0f}/s, server '
      f'{cpo if cpo is not None else "-"} µs/op ({rec["server_cpu_pct"]}% of a core), '
      f'p50 {rec.get("p50_us")} p99 {rec.get("p99_us")} µs, errors {rec.get("errors")} '
      f'timeouts {rec.get("timeouts")}; other processes {other_pct}% of a core', file=sys.stderr)
PY
    # in the background and waited for, so that a signal reaches the script's trap
    # at once; perf_cleanup then stops the sampler (which stops the generator)
    local mpid=$!
    PERF_PIDS+=("$mpid")
    wait "$mpid"
}

# wait_quiet [MAX_PCT] [MAX_WAIT_S]: wait (bounded) until the whole machine is
# nearly idle — less than MAX_PCT (QUIET_MAX, 15) % of one core busy over a 1 s
# window — so a run that cannot pause mid-way (memory.sh, expiry.sh) starts on
# a quiet machine. Logs what it saw; never fails.
wait_quiet() {
    local max=${1:-${QUIET_MAX:-15}} limit=${2:-${QUIET_WAIT:-10}} waited=0 busy
    while :; do
        busy=$(python3 -c '
import time
def b():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return v[0] + v[1] + v[2], sum(v)
a = b(); time.sleep(1); c = b()
import os
print(round(100 * (c[0] - a[0]) / os.sysconf("SC_CLK_TCK"), 0))')
        if ((${busy%.*} <= max)); then
            ((waited == 0)) || log "machine quiet after ${waited} s (${busy}% of a core busy)"
            return 0
        fi
        if ((waited >= limit)); then
            log "machine still busy after ${waited} s (${busy}% of a core used by other processes): going ahead"
            return 0
        fi
        ((waited == 0)) && log "machine busy (${busy}% of a core used by other processes): waiting up to ${limit} s"
        sleep 4
        waited=$((waited + 5))
    done
}

# Builds sipreg and sipload when missing, makes OUT's json/, logs/ and bin/,
# empties RESULTS, and runs from a copy of the binaries in OUT/bin (BIN points
# there afterwards), so a build during the run cannot swap them.
perf_prepare_bins() {
    if [[ ! -x $BIN/sipreg || ! -x $BIN/sipload ]]; then
        log "building sipreg and sipload (release)"
        timeout 1200 cargo build --release -p sipreg -p sipload >&2 || die "cargo build failed"
    fi
    mkdir -p "$OUT/json" "$OUT/logs" "$OUT/bin"
    : >"$RESULTS"
    cp "$BIN/sipreg" "$BIN/sipload" "$OUT/bin/"
    BIN=$OUT/bin
}

# The first lines of every env.txt: date, commit (marked when the tree has
# uncommitted changes), CPU and kernel.
perf_env_header() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$PERF_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$PERF_ROOT" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; kernel $(uname -r)"
}
