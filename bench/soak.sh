#!/usr/bin/env bash
# bench/soak.sh: a soak of the real daemon under injected faults, then an exactly-once audit.
# Never run by CI.
#
# On loopback: the embedded broker (`flame broker`, its own process, fixed port, topic clicks
# in 4 partitions); flamed with training on (it bootstraps a SASRec anchor from the stored
# clicks, then runs FLAME rounds every 15 s, as scripts/demo.sh does) and its state on a small
# tmpfs; `flame produce` replaying a `flame synth` dataset at a steady --rate, a known number
# of events, each user's events in order and each (user, item, ts) distinct (ts is the produce
# time in ms and a user's events are users/rate seconds apart); wrk on /v1/recommend (random
# users, 2 connections) and on /healthz (1 connection), run in back-to-back 5 s slices so that
# each request's slice can be placed against the kill windows. Once a model serves, a
# scheduler (seeded with --seed) waits 8-25 s, injects a fault, and so on, the four kinds in
# a shuffled order per cycle:
#   kill    kill -9 flamed and restart it on the same state; its window runs from the kill
#           until /readyz is 200 again (stream.static_membership=false: the embedded broker
#           does not implement static membership; session timeout 6 s, heartbeat 500 ms)
#   stall   the state writer held 5-20 s (FLAMED_TEST_HOLD_WRITES, a test hook of flamed)
#   freeze  the broker SIGSTOPped 5-15 s, then SIGCONT. Not a restart: the embedded broker
#           keeps its messages in memory only, so a restarted one has lost the topic
#   full    the state's tmpfs filled to 4 MiB free (state.min_free_mb=8) for 10-20 s, then
#           freed; skipped, with the reason, when tmpfs cannot be mounted
# When the replay is over: faults and load stop, flamed catches up (lag 0 and nothing stored
# for 3 s, 180 s at most), gets SIGTERM, and is started again with training off to read the
# state back: GET /v1/users/<id>/history of every user (state.seq_len is set above the
# longest user sequence, so nothing is trimmed) against what was produced. There is no
# offline command that dumps the state; flamed_events_stored_total is per process lifetime.
#
# Bars: duplicated 0 (an (item, ts) stored twice for a user), lost 0 (produced, not stored),
# request success (2xx within wrk's 4 s timeout) outside the kill windows >= 99.9%, and the
# daemon never dying unasked. Also reported: latency percentiles outside the kill windows,
# each fault and its effect (events stored during it), the kill windows.
#
# usage: bench/soak.sh [--minutes N] [--seed S] [--rate R] [--build DIR]
#   --minutes N  the replay lasts about N + 1 minutes (the first one or so bootstraps the
#                model; faults start once it serves) (default 30)
#   --seed S     the scheduler's and the dataset's seed (1)
#   --rate R     events per second (300)
# Output: a summary on stdout; bench/results/soak-<stamp>.jsonl (one JSON object per fault,
# per route and scope of the HTTP figures, the audit, and a final summary) and
# bench/results/soak-<stamp>.log (the summary, the fault timeline, flamed's warnings and
# errors), and flamed's whole log (every process, starts and kills marked) in
# bench/results/soak-<stamp>.flamed.log. Exit status 0 when every bar is met, 1 otherwise, 2 on bad usage.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
minutes=30
seed=1
rate=300
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/soak.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
for v in "$minutes" "$seed" "$rate"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "bench/soak.sh: '$v' is not a number" >&2; exit 2; }
done
[ "$minutes" -gt 0 ] && [ "$rate" -gt 0 ] || { echo "bench/soak.sh: --minutes and --rate must be > 0" >&2; exit 2; }
for t in wrk curl jq; do
  command -v $t >/dev/null || { echo "bench/soak.sh: $t missing (scripts/setup.sh)" >&2; exit 2; }
done
python=/usr/bin/python3
flame="$build/flame"
flamed="$build/flamed"
[ -x "$flame" ] && [ -x "$flamed" ] || { echo "bench/soak.sh: build first (./scripts/dev.sh build)" >&2; exit 2; }

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
jsonl="$here/results/soak-$stamp.jsonl"
logf="$here/results/soak-$stamp.log"
work="$(mktemp -d)"
hold="$work/hold"
disk="$work/disk"
flog="$work/flamed.log"
pids=()
bpid=""
fpid=""
loadpid=""
mounted=0
failed=0

# Release every fault first (a stopped broker ignores SIGTERM until SIGCONT), then every
# child, newest first, each stopped within 15 s, then the tmpfs.
cleanup() {
  set +e
  rm -f "$hold" "$disk/filler"
  [ -n "$bpid" ] && kill -CONT "$bpid" 2>/dev/null
  touch "$work/stop-load"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}" 15; done
  [ -f "$flog" ] && cp "$flog" "$here/results/soak-$stamp.flamed.log"
  [ "$mounted" = 1 ] && umount "$disk"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=bench/proc.sh
. "$here/proc.sh"

has_model() { curl -sf -m 2 "127.0.0.1:$api/v1/model" 2>/dev/null | grep -q '"has_model":true'; }
fail() { failed=1; say "FAIL: $*"; }
json() { jq -cn "$@" >> "$jsonl"; }

# --- the state disk: a small tmpfs, or a plain directory without the disk-full fault ---
full_skip=""
mkdir -p "$disk"
if ! mount -t tmpfs -o size=128m tmpfs "$disk" 2> "$work/mount.err"; then
  full_skip="cannot mount a tmpfs: $(tail -n 1 "$work/mount.err")"
else
  mounted=1
fi
state="$disk/state"

kport=$(free_port)
api=$(free_port)
while [ "$api" = "$kport" ]; do api=$(free_port); done
RANDOM=$seed # from here on the scheduler's draws depend on the seed alone

# --- the dataset: (minutes + 1) * 60 s of events at the rate, 20 events per user on average ---
users=$(((rate * (minutes + 1) * 60 + 19) / 20))
"$flame" synth --out "$work/clicks.txt" --users "$users" --items 300 --mean-len 20 --seed "$seed" > /dev/null
read -r total longest < <(awk '{n += NF - 1; if (NF - 1 > m) m = NF - 1} END {print n, m}' "$work/clicks.txt")
seq_len=$((longest + 16 > 200 ? longest + 16 : 200))

say "soak: $stamp, seed $seed, $total events of $users users at $rate/s (~$((total / rate)) s), state.seq_len $seq_len, state on $([ "$mounted" = 1 ] && echo "a 128 MiB tmpfs" || echo "$state (disk-full fault skipped: $full_skip)")"
json --arg stamp "$stamp" --argjson seed "$seed" --argjson rate "$rate" --argjson total "$total" \
  --argjson users "$users" --argjson minutes "$minutes" --argjson seq_len "$seq_len" \
  --arg full_skip "$full_skip" \
  '{kind: "config", stamp: $stamp, seed: $seed, minutes: $minutes, rate: $rate, events: $total,
    users: $users, seq_len: $seq_len, static_membership: false, session_timeout_ms: 6000,
    disk_full_skipped: (if $full_skip == "" then null else $full_skip end)}'

"$flame" broker --port "$kport" --partitions 4 --topics clicks,clicks.dlq > "$work/broker.out" 2>&1 &
bpid=$!
pids+=("$bpid")
wait_for 10 grep -q bootstrap "$work/broker.out" || { cat "$work/broker.out" >&2; exit 1; }

fargs=("--kafka.bootstrap.servers=127.0.0.1:$kport" --stream.topic=clicks
  --stream.dead_letter_topic=clicks.dlq --stream.group=soak --state.dir="$state"
  --state.seq_len="$seq_len" --state.min_free_mb=8 --api.listen=127.0.0.1 --api.port="$api"
  --api.admin_port=0 --api.max_conns_per_peer=0
  --stream.static_membership=false --kafka.session.timeout.ms=6000 --kafka.heartbeat.interval.ms=500
  --train.bootstrap_min_users=300 --train.bootstrap_min_events=3000 --train.bootstrap_epochs=3
  --train.interval_s=15 --log.stats_interval_s=10)
start_flamed() { # more settings...; sets $fpid
  echo "=== soak: flamed start at $(date -u +%FT%T.%3NZ) ===" >> "$flog"
  FLAMED_TEST_HOLD_WRITES="$hold" "$flamed" "${fargs[@]}" "$@" >> "$flog" 2>&1 &
  fpid=$!
  pids+=("$fpid")
}
start_flamed
wait_for 30 healthy "$api" || { fail "flamed does not answer 30 s after its start"; tail -n 20 "$flog"; exit 1; }

"$flame" produce --brokers 127.0.0.1:$kport --topic clicks --data "$work/clicks.txt" --rate "$rate" \
  > "$work/produce.out" 2>&1 &
prod=$!
pids+=("$prod")
t_prod=$(now_ms)
say "soak: replay started; waiting (5 min at most) for the bootstrapped model and /readyz 200"
if ! wait_for 300 has_model || ! wait_for 60 ready "$api"; then
  fail "no model serves, or /readyz is not 200, 6 minutes after the start"
  tail -n 30 "$flog" | tee -a "$logf"
  exit 1
fi
say "soak: a model serves after $(secs "$t_prod" "$(now_ms)") s: $(curl -sf -m 2 "127.0.0.1:$api/v1/model" | head -c 100)"

# --- the load: wrk slices; done() writes counts and the latency histogram (µs, count) ---
cat > "$work/slice.lua" <<'LUA'
local users = tonumber(os.getenv("USERS") or "0")
local n = 0
setup = function(thread) n = n + 1; thread:set("id", n) end
init = function() math.randomseed(os.time() * 100 + (id or 0)) end
if users > 0 then
  request = function()
    return wrk.format("GET", "/v1/recommend?user=user-" .. math.random(1, users) .. "&k=10")
  end
end
done = function(s, lat, req)
  local e = s.errors
  local f = assert(io.open(os.getenv("WRK_OUT"), "w"))
  f:write(string.format('{"requests":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"hist":[',
    s.requests, e.status, e.connect, e.read, e.write, e.timeout))
  local i = 1
  while true do
    local v, c = lat(i)
    if v == 0 or c == 0 then break end
    f:write((i > 1 and "," or "") .. string.format("[%d,%d]", v, c))
    i = i + 1
  end
  f:write("]}\n")
  f:close()
end
LUA
mkdir -p "$work/slices"
(
  w1="" w2=""
  trap 'kill $w1 $w2 2>/dev/null; exit 0' TERM
  k=0
  while [ ! -e "$work/stop-load" ]; do
    k=$((k + 1))
    s=$(now_ms)
    WRK_OUT="$work/slices/$k-recommend.json" USERS=$users wrk -t1 -c2 -d5s --timeout 4s \
      -s "$work/slice.lua" "http://127.0.0.1:$api/" > /dev/null 2>&1 &
    w1=$!
    WRK_OUT="$work/slices/$k-healthz.json" wrk -t1 -c1 -d5s --timeout 4s \
      -s "$work/slice.lua" "http://127.0.0.1:$api/healthz" > /dev/null 2>&1 &
    w2=$!
    wait $w1 $w2 || true
    echo "$k $s $(now_ms)" >> "$work/slices.txt"
  done
) &
loadpid=$!
pids+=("$loadpid")

# --- the faults ---
kinds=(kill stall freeze full)
order=()
shuffle() { # a fresh cycle of the four kinds in a seeded random order
  order=("${kinds[@]}")
  local i j t
  for ((i = ${#order[@]} - 1; i > 0; i--)); do
    j=$((RANDOM % (i + 1))); t=${order[i]}; order[i]=${order[j]}; order[j]=$t
  done
}
ftimeline="$work/faults.txt"
: > "$ftimeline"
: > "$work/kills.txt"
died=0
fault_json() { # kind start_ms end_ms seconds-asked stored-during extra-json
  json --arg k "$1" --argjson s "$2" --argjson e "$3" --argjson d "$4" --argjson st "$5" \
    --argjson x "$6" '{kind: "fault", fault: $k, start_ms: $s, end_ms: $e, asked_s: $d,
    window_s: (($e - $s) / 1000), stored_during: $st} + $x'
  echo "$(date -u -d "@$(($2 / 1000))" +%T) $1 $(secs "$2" "$3") s (asked $4 s), events stored during it: $5 $(jq -c . <<< "$6")" >> "$ftimeline"
}
stored_now() { local v; v=$(metric "$api" flamed_events_stored_total); echo "${v:-0}"; }

deadline=$(($(now_ms) + (minutes * 60 + total / rate + 600) * 1000))
n_faults=0
while alive "$prod" && [ "$(now_ms)" -lt "$deadline" ]; do
  gap=$((8 + RANDOM % 18))
  for ((g = 0; g < gap; g++)); do alive "$prod" || break; sleep 1; done
  alive "$prod" || break
  if ! alive "$fpid"; then
    died=1; fail "flamed died unasked (before fault $((n_faults + 1)))"; break
  fi
  [ ${#order[@]} -gt 0 ] || shuffle
  kind=${order[0]}
  order=("${order[@]:1}")
  if [ "$kind" = full ] && [ -n "$full_skip" ]; then
    fault_json full "$(now_ms)" "$(now_ms)" 0 0 "$(jq -cn --arg w "$full_skip" '{skipped: $w}')"
    continue
  fi
  n_faults=$((n_faults + 1))
  st0=$(stored_now)
  t0=$(now_ms)
  case "$kind" in
    kill)
      kill -KILL "$fpid"; wait "$fpid" 2>/dev/null || true
      echo "=== soak: kill -9 at $(date -u +%FT%T.%3NZ) ===" >> "$flog"
      start_flamed
      ok=true
      wait_for 90 ready "$api" || { ok=false; fail "kill: /readyz not 200 90 s after the restart"; tail -n 15 "$flog" | tee -a "$logf"; }
      t1=$(now_ms)
      echo "$t0 $t1" >> "$work/kills.txt"
      fault_json kill "$t0" "$t1" 0 "$(stored_now)" "{\"ready\":$ok,\"note\":\"stored_during: the new process's counter\"}"
      [ "$ok" = true ] || break
      ;;
    stall)
      d=$((5 + RANDOM % 16))
      touch "$hold"; sleep "$d"
      stf=$(($(stored_now) - st0))
      rm -f "$hold"
      t1=$(now_ms)
      fault_json stall "$t0" "$t1" "$d" "$stf" '{}'
      ;;
    freeze)
      d=$((5 + RANDOM % 11))
      kill -STOP "$bpid"; sleep "$d"
      stf=$(($(stored_now) - st0))
      kill -CONT "$bpid"
      t1=$(now_ms)
      fault_json freeze "$t0" "$t1" "$d" "$stf" '{}'
      ;;
    full)
      d=$((10 + RANDOM % 11))
      avail=$(df --output=avail -B1 "$disk" | tail -n 1)
      fill=$((avail - 4 * 1024 * 1024))
      if [ "$fill" -gt 0 ]; then fallocate -l "$fill" "$disk/filler" || say "full: fallocate failed"; fi
      left=$(df --output=avail -B1M "$disk" | tail -n 1)
      sleep "$d"
      stf=$(($(stored_now) - st0))
      rm -f "$disk/filler"
      t1=$(now_ms)
      fault_json full "$t0" "$t1" "$d" "$stf" "{\"free_mib_during\":${left// /}}"
      ;;
  esac
  if [ "$kind" != kill ] && ! alive "$fpid"; then
    died=1; fail "flamed died during the $kind fault"; tail -n 20 "$flog" | tee -a "$logf"; break
  fi
done
alive "$prod" && [ "$(now_ms)" -ge "$deadline" ] && fail "the replay was still running at the deadline"
say "soak: $n_faults faults injected; the replay is over ($(tail -n 1 "$work/produce.out"))"

# --- the end: load off, catch up, stop, read the state back ---
touch "$work/stop-load"
for _ in $(seq 100); do alive "$loadpid" || break; sleep 0.1; done
stop_pid "$loadpid" 5
stop_pid "$prod" 70
sent=$(sed -nE 's/.*"sent":([0-9]+).*/\1/p' "$work/produce.out" | tail -n 1)
pfailed=$(sed -nE 's/.*"failed":([0-9]+).*/\1/p' "$work/produce.out" | tail -n 1)
caught=false
if [ "$died" = 0 ] && alive "$fpid"; then
  prev=-1 same=0
  end=$(($(now_ms) + 180000))
  while [ "$(now_ms)" -lt "$end" ]; do
    st=$(stored_now); lag=$(metric "$api" flamed_consumer_lag)
    if [ "$st" = "$prev" ] && [ "${lag:-x}" = 0 ]; then same=$((same + 1)); else same=0; fi
    [ "$same" -ge 3 ] && { caught=true; break; }
    prev=$st
    sleep 1
  done
  [ "$caught" = true ] || fail "flamed did not catch up within 180 s (lag ${lag:-?})"
  t_stop=$(now_ms)
  stop_pid "$fpid" 60
  say "soak: flamed caught up: $caught; SIGTERM: exit $stop_rc after $(secs "$t_stop" "$(now_ms)") s"
  [ "$stop_rc" = 0 ] || fail "flamed exited $stop_rc on SIGTERM"
fi
start_flamed --train.enabled=false
wait_for 60 healthy "$api" || { fail "flamed (read-back) does not answer"; tail -n 20 "$flog" | tee -a "$logf"; }
# lets a read-back instance consume whatever the soak instance left (it shows as a
# difference of the audit, not as a hidden catch-up)
sleep 3

cat > "$work/audit.py" <<'PY'
"""Audit: every user's stored history against the replayed dataset; HTTP figures per slice."""
import collections, http.client, json, sys

data, port, seq_len, slices_dir, slices_txt, kills_txt = sys.argv[1:7]
seq_len = int(seq_len)
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
produced = stored = dup = lost = extra = misordered = trimmed = missing_users = 0
examples = []
for line in open(data):
    f = line.split()
    if len(f) < 2:
        continue
    user, want = "user-" + f[0], ["item-" + x for x in f[1:]]
    produced += len(want)
    conn.request("GET", "/v1/users/%s/history" % user)
    r = conn.getresponse()
    body = r.read()
    ev = json.loads(body)["events"] if r.status == 200 else []
    if r.status not in (200, 404):
        raise SystemExit("GET history of %s: %d %s" % (user, r.status, body[:200]))
    if r.status == 404:
        missing_users += 1
    got = [e["item"] for e in ev]
    stored += len(got)
    if len(got) >= seq_len:
        trimmed += 1
    pairs = collections.Counter((e["item"], e["ts_ms"]) for e in ev)
    d = sum(c - 1 for c in pairs.values() if c > 1)
    dup += d
    cw, cg = collections.Counter(want), collections.Counter(got)
    lo = sum((cw - cg).values())
    lost += lo
    extra += sum((cg - cw).values())
    if got != want:
        misordered += 1
        if len(examples) < 5:
            examples.append({"user": user, "produced": len(want), "stored": len(got),
                             "duplicated": d, "lost": lo})
audit = {"produced": produced, "stored": stored, "duplicated": dup, "lost": lost,
         "extra": extra, "users_differing": misordered, "users_missing": missing_users,
         "users_at_seq_len": trimmed, "examples": examples}

kills = [tuple(map(int, l.split())) for l in open(kills_txt) if l.strip()]
def merge(names):
    out = {"slices": 0, "requests": 0, "non2xx": 0, "socket_errors": 0, "empty_slices": 0}
    h = collections.Counter()
    for n in names:
        try:
            j = json.load(open(n))
        except (OSError, ValueError):
            out["empty_slices"] += 1
            continue
        out["slices"] += 1
        out["requests"] += j["requests"]
        out["non2xx"] += j["non2xx"]
        out["socket_errors"] += j["connect"] + j["read"] + j["write"] + j["timeout"]
        if j["requests"] == 0:
            out["empty_slices"] += 1
        for v, c in j["hist"]:
            h[v] += c
    ok = out["requests"] - out["non2xx"]
    tried = out["requests"] + out["socket_errors"]
    out["ok"] = ok
    out["success_rate"] = round(ok / tried, 6) if tried else None
    tot = sum(h.values())
    acc, pct, marks = 0, {}, [50, 90, 99, 99.9]
    for v in sorted(h):
        acc += h[v]
        for m in marks:
            if m not in pct and acc >= tot * m / 100:
                pct[m] = v / 1000
    for m in marks:
        out["p%s_ms" % str(m).replace(".", "_")] = pct.get(m)
    out["max_ms"] = max(h) / 1000 if h else None
    return out

http_rows = []
rows = [l.split() for l in open(slices_txt) if l.strip()]
for route in ("recommend", "healthz"):
    inside, outside = [], []
    for k, s, e in rows:
        s, e = int(s), int(e)
        hit = any(s < b and e > a for a, b in kills)
        (inside if hit else outside).append("%s/%s-%s.json" % (slices_dir, k, route))
    for scope, names in (("outside_kill", outside), ("inside_kill", inside)):
        r = merge(names)
        r.update(route="/v1/recommend" if route == "recommend" else "/healthz", scope=scope)
        http_rows.append(r)
print(json.dumps({"audit": audit, "http": http_rows}))
PY
if ! $python "$work/audit.py" "$work/clicks.txt" "$api" "$seq_len" "$work/slices" \
  "$work/slices.txt" "$work/kills.txt" > "$work/audit.json" 2> "$work/audit.err"; then
  fail "the audit failed: $(tail -n 3 "$work/audit.err")"
  echo '{"audit":{},"http":[]}' > "$work/audit.json"
fi
stop_pid "$fpid" 60

# --- the report ---
jq -c '.http[] | {kind: "http"} + .' "$work/audit.json" >> "$jsonl"
jq -c --argjson sent "${sent:-null}" --argjson pf "${pfailed:-null}" --argjson total "$total" \
  '{kind: "exactly_once", events_in_dataset: $total, producer_sent: $sent,
    producer_failed: $pf} + .audit' "$work/audit.json" >> "$jsonl"
read -r produced stored dup lost extra differ < <(jq -r '.audit | "\(.produced) \(.stored) \(.duplicated) \(.lost) \(.extra) \(.users_differing)"' "$work/audit.json")
say ""
say "=== soak summary ($stamp, seed $seed) ==="
say "faults (time kind window, events stored during it):"
sed 's/^/  /' "$ftimeline" | tee -a "$logf"
say "kill windows (kill -9 until /readyz 200): $(awk '{printf "%s%.1f s", (NR > 1 ? ", " : ""), ($2 - $1) / 1000}' "$work/kills.txt")"
say "events: $total in the dataset ($produced audited), producer sent ${sent:-?} (failed ${pfailed:-?}); stored $stored, duplicated $dup, lost $lost, extra $extra; users whose history differs from their replay: $differ"
jq -r '.http[] | "http \(.route) \(.scope): \(.requests) requests, \(.ok) ok, \(.non2xx) non-2xx, \(.socket_errors) socket errors, success \(.success_rate), p50 \(.p50_ms) ms p90 \(.p90_ms) p99 \(.p99_ms) p99.9 \(.p99_9_ms) max \(.max_ms) ms (\(.slices) slices, \(.empty_slices) empty)"' "$work/audit.json" | tee -a "$logf"
jq -r '.audit.examples[]? | "  e.g. \(.user): produced \(.produced), stored \(.stored), duplicated \(.duplicated), lost \(.lost)"' "$work/audit.json" | tee -a "$logf"

[ "$dup" = 0 ] || fail "$dup duplicated events"
[ "$lost" = 0 ] || fail "$lost events lost"
[ "${sent:-0}" = "$total" ] || fail "the producer sent ${sent:-?} of $total events"
while read -r route rate_ok empty; do
  awk -v r="$rate_ok" 'BEGIN {exit !(r != "null" && r >= 0.999)}' || fail "$route: success outside the kill windows $rate_ok < 0.999"
  [ "$empty" = 0 ] || fail "$route: $empty wrk slices outside the kill windows with no request at all"
done < <(jq -r '.http[] | select(.scope == "outside_kill") | "\(.route) \(.success_rate) \(.empty_slices)"' "$work/audit.json")
json --argjson failed "$failed" --argjson died "$died" --argjson faults "$n_faults" \
  --argjson caught "$caught" '{kind: "summary", pass: ($failed == 0), flamed_died_unasked: ($died == 1),
  faults: $faults, caught_up: $caught}'

{
  echo "--- flamed: warnings, errors, starts and kills ---"
  grep -E " (warn|error) |=== soak|writes flow again|disk space back|resum|assigned|revoked|lost" "$flog" | head -n 300
} >> "$logf"
if [ "$failed" = 0 ]; then say "soak: every bar met"; else say "soak: some bars FAILED (above)"; fi
say "soak: $jsonl, $logf, $here/results/soak-$stamp.flamed.log"
exit "$failed"
