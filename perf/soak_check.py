#!/usr/bin/env python3
"""perf/soak_check.py OUT — the end of perf/soak.sh: checks and summary.

Reads what soak.sh left in OUT (run.env, events.tsv, rss.csv, the generators'
JSON, sipload A's time-stamped progress lines, /metrics of both sipreg processes,
their logs), asks the running sipreg for its whole table, prints the summary
(also OUT/summary.txt) and exits 1 when the verdict is FAIL.

Checks:
  * restart: the second sipreg logged "state restored from …: N devices with M live
    bindings" with N ≥ A_DEVICES + CAMERAS, and samples of A, the cameras and the
    live B and C rounds, looked up right after it, were all there;
  * clients: no error and no timeout outside the restart window (sipload A by its
    stamped progress lines; every B/C round and gbsim as a whole), every A device
    warmed up, every camera registered, every catalog request accepted (202);
  * table: exactly the A devices and the cameras, each with a binding; every camera
    online with CHANNELS channels and a complete catalog; no B device (expired), no
    C device (unregistered); sampled B rounds gone on time; /metrics gauges agree;
    no more bindings added than the clients created (a lost binding re-created
    by a refresh), no more expiries than B registrations, no more removals than
    C unregistrations;
  * server: no parse error, no auth failure or lockout, no 5xx, no failed save, no
    UDP send error, no dropped worker command, no panic or ERROR in its logs;
  * RSS: in each half, the highest sample of the last churn period is within
    RSS_TOL % of the highest of the churn period a quarter of the run after that
    half's start (single samples would land on different points of the churn).
"""

import glob
import json
import os
import re
import sys
import urllib.error
import urllib.request

OUT = sys.argv[1]
fails = []
notes = []


def fail(msg):
    fails.append(msg)


def read_env(path):
    env = {}
    for line in open(path):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            env[k] = v
    return env


env = read_env(os.path.join(OUT, "run.env"))
I = lambda k: int(env[k])
DURATION, RESTART_AT = I("DURATION"), I("RESTART_AT")
A_DEVICES, CAMERAS, CHANNELS = I("A_DEVICES"), I("CAMERAS"), I("CHANNELS")
B_DEVICES, C_DEVICES = I("B_DEVICES"), I("C_DEVICES")
RSS_TOL, RESTART_WINDOW = float(env["RSS_TOL"]), I("RESTART_WINDOW")
HTTP = env["HTTP"]

# ---- events -----------------------------------------------------------------
events = []
for line in open(os.path.join(OUT, "events.tsv")):
    f = line.rstrip("\n").split("\t")
    events.append((float(f[0]), f[1], f[2:]))
t0 = next(t for t, k, _ in events if k == "start")
ev = lambda kind: [(t, a) for t, k, a in events if k == kind]
gen_start = {a[0]: t for t, a in ev("gen_start")}

sigterm = ev("sigterm")
restarted = ev("restarted")
exited = ev("exited")
if sigterm and restarted:
    win = (sigterm[0][0] - 2, restarted[0][0] + RESTART_WINDOW)
else:
    win = (float("inf"), float("inf"))
    fail("no restart happened")


def in_window(start, end):
    return start <= win[1] and end >= win[0]


# ---- metrics ----------------------------------------------------------------
def parse_metrics(path):
    m = {}
    if not os.path.exists(path):
        return m
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            m[name] = float(value)
        except ValueError:
            pass
    return m


m1 = parse_metrics(os.path.join(OUT, "phase1.metrics"))
m2 = parse_metrics(os.path.join(OUT, "phase2.metrics"))
if not m1:
    fail("no /metrics from the first sipreg before the restart")
if not m2:
    fail("no /metrics from the second sipreg at the end")


def total(name):
    """A counter summed over both processes (each starts from 0)."""
    return int(m1.get(name, 0) + m2.get(name, 0))


def fam(prefix):
    """Every sample of a family, summed over both processes."""
    out = {}
    for m in (m1, m2):
        for k, v in m.items():
            if k.startswith(prefix + "{"):
                out[k[len(prefix):]] = out.get(k[len(prefix):], 0) + int(v)
    return out


# ---- the restart ------------------------------------------------------------
restore = {}
log2 = os.path.join(OUT, "sipreg-2.log")
if os.path.exists(log2):
    for line in open(log2):
        mm = re.search(r"state restored from (\S+): (\d+) devices with (\d+) live bindings"
                       r"(?: \((\d+) of (\d+) saved devices had expired\))?", line)
        if mm:
            restore = dict(file=mm.group(1), devices=int(mm.group(2)),
                           bindings=int(mm.group(3)),
                           expired=int(mm.group(4) or 0), saved=int(mm.group(5) or 0))
            break
if restarted and not restore:
    fail("the restarted sipreg did not log 'state restored from …'")
elif restore and restore["devices"] < A_DEVICES + CAMERAS:
    fail(f"restored {restore['devices']} devices, fewer than the {A_DEVICES} A devices "
         f"+ {CAMERAS} cameras registered before the restart")
stop_rc = int(exited[0][1][1]) if exited else None
stop_ms = int(exited[0][1][2]) if exited else None
gap_ms = int(restarted[0][1][1]) if restarted else None
if stop_rc not in (0, None):
    fail(f"sipreg exited with code {stop_rc} on SIGTERM")
if ev("sigkill"):
    fail("sipreg needed SIGKILL at the restart")
samples = [(a_[0], a_[1], int(a_[2]), int(a_[3])) for _, a_ in ev("restore_sample")]
if restarted and not samples:
    fail("no device was sampled right after the restart")
for kind, prefix, sampled, present in samples:
    if present != sampled:
        fail(f"right after the restart only {present} of {sampled} sampled {kind} devices "
             f"({prefix}…) were in the table")
devices_before = int(m1.get("sipreg_devices", -1))
bindings_before = int(m1.get("sipreg_registrations", -1))

# ---- sipload A --------------------------------------------------------------
def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


a = load_json(os.path.join(OUT, "a.json"))
a_win = {"errors": 0, "timeouts": 0}
if a is None:
    fail("sipload A left no JSON summary (see a.progress)")
    a = {}
else:
    prog = []
    for line in open(os.path.join(OUT, "a.progress")):
        mm = re.match(r"(\d+\.\d+) \[.*\].* timeouts (\d+)\s+errors (\d+)", line)
        if mm:
            prog.append((float(mm.group(1)), int(mm.group(2)), int(mm.group(3))))

    def cum_at(t):
        last = (0, 0)
        for ts, to, er in prog:
            if ts > t:
                break
            last = (to, er)
        return last

    before, after = cum_at(win[0]), cum_at(win[1])
    a_win = {"timeouts": after[0] - before[0], "errors": after[1] - before[1]}
    warm = a.get("warmup") or {}
    if int(warm.get("registered", 0)) != A_DEVICES:
        fail(f"sipload A warmed up {warm.get('registered')} of {A_DEVICES} devices")
    out_err = a.get("errors", 0) - a_win["errors"]
    out_to = a.get("timeouts", 0) - a_win["timeouts"]
    if out_err or out_to:
        fail(f"sipload A: {out_err} errors and {out_to} timeouts outside the restart window "
             f"(errors_detail {a.get('errors_detail')})")

for _, a_ in ev("gen_killed"):
    fail(f"generator {a_[0]} had not finished 60 s after the loads ended and was killed")

# ---- B and C rounds ---------------------------------------------------------
def rounds(pattern):
    rs = []
    for path in sorted(glob.glob(os.path.join(OUT, pattern))):
        name = os.path.basename(path)[:-5]
        r = load_json(path)
        start = gen_start.get(name, 0)
        end = os.path.getmtime(path)
        rs.append((name, r, start, end))
    return rs


def round_totals(rs, label, want_each):
    tot = dict(rounds=len(rs), completed=0, errors=0, timeouts=0, win_errors=0,
               win_timeouts=0, retrans=0)
    for name, r, start, end in rs:
        if r is None:
            fail(f"{label} round {name} left no JSON summary")
            continue
        w = in_window(start, end)
        tot["completed"] += r.get("completed", 0)
        tot["retrans"] += r.get("retransmissions", 0)
        if w:
            tot["win_errors"] += r.get("errors", 0)
            tot["win_timeouts"] += r.get("timeouts", 0)
        else:
            tot["errors"] += r.get("errors", 0)
            tot["timeouts"] += r.get("timeouts", 0)
            if r.get("completed", 0) != want_each:
                fail(f"{label} round {name}: {r.get('completed')} of {want_each} completed")
            if r.get("errors", 0) or r.get("timeouts", 0):
                fail(f"{label} round {name}: {r.get('errors')} errors, {r.get('timeouts')} "
                     f"timeouts ({r.get('errors_detail')}, {r.get('status_counts')})")
    return tot


b_rounds = rounds("b[0-9]*.json")
c_reg = rounds("c[0-9]*-reg.json")
c_unreg = rounds("c[0-9]*-unreg.json")
bt = round_totals(b_rounds, "B", B_DEVICES)
crt = round_totals(c_reg, "C register", C_DEVICES)
cut = round_totals(c_unreg, "C unregister", C_DEVICES)
if len(c_unreg) != len(c_reg):
    fail(f"{len(c_reg)} C rounds registered but {len(c_unreg)} unregistered")
late = [(a_[0], int(a_[1]), int(a_[2])) for _, a_ in ev("bcheck")]
for name, sampled, present in late:
    if present:
        fail(f"B round {name}: {present} of {sampled} sampled bindings outlived their expiry by 6 s")

# ---- gbsim ------------------------------------------------------------------
g = load_json(os.path.join(OUT, "gbsim.json"))
if g is None:
    fail("gbsim left no JSON summary (see gbsim.log)")
    g = {}
else:
    reg = g.get("register", {})
    ka = g.get("keepalives", {})
    rs = g.get("responses", {})
    if g.get("registered_ok") != CAMERAS or g.get("registered_now") != CAMERAS:
        fail(f"gbsim: {g.get('registered_ok')} cameras registered, {g.get('registered_now')} "
             f"registered at the end, of {CAMERAS}")
    bad = {k: v for k, v in (ka.get("answered") or {}).items() if k != "200"}
    probs = dict(errors=g.get("errors", 0), register_failed=reg.get("failed", 0),
                 register_timeouts=reg.get("timeouts", 0), keepalive_timeouts=ka.get("timeouts", 0),
                 response_timeouts=rs.get("timeouts", 0), abandoned=g.get("abandoned", 0))
    probs = {k: v for k, v in probs.items() if v}
    if bad:
        probs["keepalive_answers_not_200"] = bad
    bad_r = {k: v for k, v in (rs.get("answered") or {}).items() if k != "200"}
    if bad_r:
        probs["response_answers_not_200"] = bad_r
    if probs:
        fail(f"gbsim: {probs} (samples: {g.get('error_samples')})")

cat = ev("catalog")
cat_ok = sum(1 for _, a_ in cat if a_[1] == "202")
if cat_ok != len(cat):
    codes = {}
    for _, a_ in cat:
        codes[a_[1]] = codes.get(a_[1], 0) + 1
    fail(f"catalog requests through the API: {cat_ok} of {len(cat)} accepted ({codes})")

# Every binding ever added is one the clients created: A's warm-up, the cameras'
# first REGISTER, every B and C registration. More means a binding was lost and
# created again (e.g. by a refresh after a restart that dropped it); more
# expirations than B registrations means something else expired; more removals
# than C unregistrations, something else was removed. (Fewer can only be the
# last moment of the first process, read just before SIGTERM.)
added, expired = total("sipreg_bindings_added_total"), total("sipreg_expirations_total")
removed = total("sipreg_bindings_removed_total")
want_added = A_DEVICES + CAMERAS + bt["completed"] + crt["completed"]
if added > want_added:
    fail(f"sipreg added {added} bindings, {added - want_added} more than the clients created "
         f"({want_added}): bindings were lost and registered again")
if expired > bt["completed"]:
    fail(f"{expired} bindings expired, more than the {bt['completed']} B registrations")
if removed > cut["completed"]:
    fail(f"{removed} bindings removed, more than the {cut['completed']} C unregistrations")

# ---- the table --------------------------------------------------------------
def get(path):
    try:
        with urllib.request.urlopen(f"http://{HTTP}{path}", timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError) as e:  # refused, timed out, not JSON
        return f"no answer ({e})", None


table = {}
table_ok = False
try:
    offset, total_rows = 0, None
    while True:
        st, page = get(f"/api/devices?offset={offset}&limit=1000")
        if st != 200:
            raise RuntimeError(f"/api/devices answered {st}")
        total_rows = page["total"]
        for d in page["devices"]:
            table[d["id"]] = d
        offset += len(page["devices"])
        if not page["devices"] or offset >= total_rows:
            break
    if len(table) != total_rows:
        fail(f"paging returned {len(table)} distinct devices of a total of {total_rows}")
    table_ok = True
except Exception as e:  # noqa: BLE001 — any failure here is a FAIL with its reason
    fail(f"cannot read the table: {e}")

a_ids = [f"{env['A_PREFIX']}{i:08d}@127.0.0.1" for i in range(A_DEVICES)]
g_ids = [f"{env['GB_PREFIX']}{i:0{20 - len(env['GB_PREFIX'])}d}" for i in range(1, CAMERAS + 1)]
a_missing = [i for i in a_ids if table.get(i, {}).get("bindings", 0) < 1]
g_missing = [i for i in g_ids if table.get(i, {}).get("bindings", 0) < 1]
known = set(a_ids) | set(g_ids)
extra = sorted(k for k in table if k not in known)
b_left = [k for k in extra if re.match(r"b\d+-", k)]
c_left = [k for k in extra if re.match(r"c\d+-", k)]
other = [k for k in extra if k not in b_left and k not in c_left]
if not table_ok:
    a_missing, g_missing = a_ids, g_ids  # unknown: shown as such in the summary
elif a_missing:
    fail(f"{len(a_missing)} A devices lost their binding (e.g. {a_missing[:5]})")
if g_missing and table_ok:
    fail(f"{len(g_missing)} cameras lost their binding (e.g. {g_missing[:5]})")
if b_left:
    fail(f"{len(b_left)} B devices did not expire (e.g. {b_left[:5]})")
if c_left:
    fail(f"{len(c_left)} C devices are still there after unregistering (e.g. {c_left[:5]})")
if other:
    fail(f"{len(other)} devices nobody registered (e.g. {other[:5]})")

g_bad = []
channels_seen = 0
for gid in g_ids if table_ok else []:
    st, d = get(f"/api/devices/{gid}")
    if st != 200 or d is None:
        g_bad.append((gid, f"HTTP {st}"))
        continue
    gb = d.get("gb", {})
    n = len(gb.get("channels", []))
    channels_seen += n
    why = []
    if not gb.get("online"):
        why.append("offline")
    if n != CHANNELS:
        why.append(f"{n} channels")
    if (gb.get("catalog") or {}).get("state") != "complete":
        why.append(f"catalog {gb.get('catalog')}")
    if why:
        g_bad.append((gid, ", ".join(why)))
if not table_ok:
    g_bad = [(gid, "table unreadable") for gid in g_ids]
elif g_bad:
    fail(f"{len(g_bad)} cameras not online with {CHANNELS} channels and a complete catalog "
         f"(e.g. {g_bad[:5]})")

want = A_DEVICES + CAMERAS
for gauge in ("sipreg_devices", "sipreg_registrations"):
    if m2 and int(m2.get(gauge, -1)) != want:
        fail(f"{gauge} is {int(m2.get(gauge, -1))} at the end, not {want}")
if m2 and int(m2.get("sipreg_gb_devices_online", -1)) != CAMERAS:
    fail(f"sipreg_gb_devices_online is {int(m2.get('sipreg_gb_devices_online', -1))}, not {CAMERAS}")

# ---- the server -------------------------------------------------------------
requests = fam("sipreg_requests_total")
responses = fam("sipreg_responses_total")
codes = {k: v for k, v in fam("sipreg_responses_by_code_total").items() if v}
drops = {k: v for k, v in fam("sipreg_drops_total").items() if v}
parse_errors = total("sipreg_parse_errors_total")
server_bad = dict(
    parse_errors=parse_errors,
    auth_failures=total("sipreg_auth_failures_total"),
    auth_lockouts=total("sipreg_auth_lockouts_total"),
    auth_locked_rejections=total("sipreg_auth_locked_rejections_total"),
    rate_limited=total("sipreg_rate_limited_total"),
    responses_5xx=sum(v for k, v in responses.items() if "5xx" in k),
    udp_send_errors=total("sipreg_udp_send_errors_total"),
    worker_commands_dropped=total("sipreg_worker_commands_dropped_total"),
    state_save_failures=total("sipreg_state_save_failures_total"),
    keepalives_rejected=total("sipreg_keepalives_rejected_total"),
    xml_errors=total("sipreg_xml_errors_total"),
    catalog_timeouts=total("sipreg_catalog_timeouts_total"),
    devices_went_offline=total("sipreg_devices_went_offline_total"),
)
server_bad = {k: v for k, v in server_bad.items() if v}
if server_bad:
    fail(f"sipreg counted {server_bad}")
unparseable = {k: v for k, v in drops.items() if "unparseable" in k or "bad_stream" in k}
if unparseable:
    fail(f"sipreg dropped {unparseable}")

log_issues = []
for n in (1, 2):
    path = os.path.join(OUT, f"sipreg-{n}.log")
    if not os.path.exists(path):
        continue
    for line in open(path, errors="replace"):
        if re.search(r"\b(ERROR|WARN)\b|panicked", line):
            log_issues.append(f"sipreg-{n}: {line.strip()}")
if log_issues:
    fail(f"{len(log_issues)} WARN/ERROR lines in sipreg's logs (first: {log_issues[0]})")

# ---- RSS --------------------------------------------------------------------
# The churn makes RSS go up and down within each churn period (B and C rounds
# come and go), so single samples at a fixed time would compare different points
# of that cycle: compare the highest sample of one churn period after warm-up
# (from a quarter of the run after the half's start) with the highest of the
# half's last churn period.
rss = []
for line in list(open(os.path.join(OUT, "rss.csv")))[1:]:
    f = line.strip().split(",")
    rss.append(dict(t=float(f[0]), phase=int(f[1]), rss=int(f[3]), hwm=int(f[4])))
load_end = I("LOAD_END")
period = I("CHURN_PERIOD")
rss_rows = []
for phase, start, end in ((1, 0, RESTART_AT), (2, RESTART_AT, load_end)):
    rows = [r for r in rss if r["phase"] == phase and r["t"] <= end + 1]
    if not rows:
        fail(f"no RSS samples in half {phase}")
        continue
    w0 = start + 0.25 * DURATION
    warm = [r for r in rows if w0 <= r["t"] <= w0 + period] or rows[-1:]
    tail = [r for r in rows if r["t"] >= rows[-1]["t"] - period]
    ref = max(warm, key=lambda r: r["rss"])
    last = max(tail, key=lambda r: r["rss"])
    growth = 100.0 * (last["rss"] - ref["rss"]) / ref["rss"]
    rss_rows.append((phase, rows[0], (warm[0]["t"], warm[-1]["t"], ref),
                     (tail[0]["t"], tail[-1]["t"], last), growth, rows[-1]))
    if growth > RSS_TOL:
        fail(f"RSS grew {growth:.1f} % in half {phase} after warm-up (highest "
             f"{ref['rss']} kB at t={warm[0]['t']:.0f}–{warm[-1]['t']:.0f} s, "
             f"{last['rss']} kB at t={tail[0]['t']:.0f}–{tail[-1]['t']:.0f} s)")

# ---- summary ----------------------------------------------------------------
def fmt(n):
    return f"{n:,}".replace(",", " ")


def label(k):
    """The value of a sample's only label: '{method="register"}' → register."""
    mm = re.search(r'"(.*)"', k)
    return mm.group(1) if mm else k


L = []
p = L.append
p(f"# sipreg soak — {DURATION} s, restart at {RESTART_AT} s ({env['SIP']})")
p("")
p("| what | figure |")
p("|---|---|")
p(f"| duration | {DURATION} s (loads until {load_end} s) |")
p(f"| SIP requests served | {fmt(sum(requests.values()))} "
  f"({', '.join(f'{label(k)} {fmt(v)}' for k, v in requests.items() if v)}) |")
p(f"| responses | {', '.join(f'{label(k)} {fmt(v)}' for k, v in responses.items() if v)}; "
  f"by code {', '.join(f'{label(k)} {fmt(v)}' for k, v in codes.items())} |")
p(f"| bindings added / refreshed / removed | {fmt(added)} (clients created {fmt(want_added)}) / "
  f"{fmt(total('sipreg_bindings_refreshed_total'))} / {fmt(removed)} (C unregistered "
  f"{fmt(cut['completed'])}) |")
p(f"| expirations | {fmt(expired)} (B registered {fmt(bt['completed'])}) |")
p(f"| A: {fmt(A_DEVICES)} devices, refresh | {fmt(a.get('completed', 0))} of {fmt(a.get('sent', 0))} refreshes at "
  f"{a.get('rate_per_s', 0):.0f}/s after warm-up of {fmt((a.get('warmup') or {}).get('registered', 0))} "
  f"in {(a.get('warmup') or {}).get('seconds', 0):.1f} s; rechallenges {fmt(a.get('rechallenges', 0))}, "
  f"retransmissions {fmt(a.get('retransmissions', 0))}, errors {a.get('errors', 0)} "
  f"(restart window {a_win['errors']}), timeouts {a.get('timeouts', 0)} (restart window "
  f"{a_win['timeouts']}; {(a.get('errors_detail') or {})}); p50/p99/max {(a.get('latency_us') or {}).get('p50')}/"
  f"{(a.get('latency_us') or {}).get('p99')}/{(a.get('latency_us') or {}).get('max')} µs |")
p(f"| B: register, expire | {bt['rounds']} rounds × {fmt(B_DEVICES)}: {fmt(bt['completed'])} registered, "
  f"errors {bt['errors']} + {bt['win_errors']} in the restart window, timeouts {bt['timeouts']} + "
  f"{bt['win_timeouts']}; on-time expiry samples: "
  f"{sum(s - pr for _, s, pr in late)} of {sum(s for _, s, _ in late)} gone |")
p(f"| C: register, unregister | {crt['rounds']} rounds × {fmt(C_DEVICES)}: {fmt(crt['completed'])} "
  f"registered, {fmt(cut['completed'])} unregistered; errors {crt['errors'] + cut['errors']} + "
  f"{crt['win_errors'] + cut['win_errors']} in the restart window, timeouts "
  f"{crt['timeouts'] + cut['timeouts']} + {crt['win_timeouts'] + cut['win_timeouts']} |")
ka = g.get("keepalives", {})
p(f"| G: {CAMERAS} cameras (gbsim) | REGISTER sent {fmt(g.get('register', {}).get('sent', 0))}, "
  f"keep-alives {fmt(ka.get('sent', 0))} (answers {ka.get('answered')}), catalog queries received "
  f"{g.get('queries')}, Response MESSAGEs {fmt(g.get('responses', {}).get('sent', 0))}, "
  f"retransmits {g.get('retransmits', 0)}, errors {g.get('errors', 0)} |")
p(f"| keep-alives (sipreg) | {fmt(total('sipreg_keepalives_total'))}, rejected "
  f"{total('sipreg_keepalives_rejected_total')} |")
p(f"| catalog queries (sipreg) | {fmt(total('sipreg_catalog_queries_total'))} "
  f"({cat_ok} of {len(cat)} API requests accepted), timeouts {total('sipreg_catalog_timeouts_total')}; "
  f"channels at the end {fmt(channels_seen)} (sipreg_gb_channels {int(m2.get('sipreg_gb_channels', -1))}) |")
p(f"| drops / parse errors / auth failures | {drops or 0} / {parse_errors} / "
  f"{total('sipreg_auth_failures_total')} (challenges {fmt(total('sipreg_auth_challenges_total'))}, "
  f"retransmissions absorbed {fmt(total('sipreg_retransmissions_total'))}) |")
p(f"| state saves | {total('sipreg_state_saves_total')} (failures "
  f"{total('sipreg_state_save_failures_total')}), last {int(m2.get('sipreg_state_last_save_devices', 0))} "
  f"devices / {fmt(int(m2.get('sipreg_state_last_save_bytes', 0)))} B in "
  f"{int(m2.get('sipreg_state_last_save_microseconds', 0))} µs |")
if restore:
    p(f"| restart | SIGTERM → exit {stop_rc} in {stop_ms} ms, serving again after {gap_ms} ms; "
      f"{fmt(devices_before)} devices / {fmt(bindings_before)} bindings just before, restored "
      f"{fmt(restore['devices'])} devices with {fmt(restore['bindings'])} live bindings "
      f"({restore['expired']} of {fmt(restore['saved'])} saved had expired); sampled right after: "
      f"{', '.join(f'{k} {pr}/{sa}' for k, _, sa, pr in samples)} present |")
else:
    p(f"| restart | SIGTERM → exit {stop_rc} in {stop_ms} ms; NOTHING RESTORED |")
p(f"| table at the end | {fmt(len(table))} devices: A {A_DEVICES - len(a_missing)}/{A_DEVICES}, "
  f"cameras {CAMERAS - len(g_missing)}/{CAMERAS} ({CAMERAS - len(g_bad)} online with "
  f"{CHANNELS} channels), B left {len(b_left)}, C left {len(c_left)}, other {len(other)}; "
  f"sipreg_devices {int(m2.get('sipreg_devices', -1))}, sipreg_registrations "
  f"{int(m2.get('sipreg_registrations', -1))} |")
for phase, first, (wa, wb, ref), (ta, tb, last), growth, final in rss_rows:
    p(f"| RSS half {phase} | {fmt(first['rss'])} kB at t={first['t']:.0f} s; highest after warm-up "
      f"{fmt(ref['rss'])} kB (t={wa:.0f}–{wb:.0f} s), highest at the end {fmt(last['rss'])} kB "
      f"(t={ta:.0f}–{tb:.0f} s): {growth:+.1f} % (limit +{RSS_TOL:g} %); last sample "
      f"{fmt(final['rss'])} kB, peak {fmt(max(r['hwm'] for r in rss if r['phase'] == phase))} kB |")
p(f"| verdict | **{'FAIL' if fails else 'PASS'}** |")
if fails:
    p("")
    p("Why:")
    for f_ in fails:
        p(f"- {f_}")
if log_issues:
    p("")
    p("sipreg log lines:")
    for li in log_issues[:20]:
        p(f"    {li}")
text = "\n".join(L) + "\n"
sys.stdout.write(text)
with open(os.path.join(OUT, "summary.txt"), "w") as f:
    f.write(text)
sys.exit(1 if fails else 0)
