#!/usr/bin/env bash
# bench/faults.sh: the real daemon under three faults, against the embedded broker (`flame
# broker`, one process, fixed loopback port, 4 partitions per topic). Never run by CI.
#
#  a. disk stall: flamed (an untrained `flame init` anchor, training off) ingests a synthetic
#     clickstream at --rate events/s while wrk (1 thread, 2 connections each) asks /healthz
#     and /v1/recommend?user=user-1&k=10. Two windows of --stall-s seconds: a baseline, then
#     one with the state writer held (flamed's test hook: FLAMED_TEST_HOLD_WRITES=<file>, it
#     waits before every RocksDB write while <file> exists). Per window and route: p50, p99,
#     max latency (wrk's --timeout is stall-s + 10 s, so a request held through the stall is
#     measured, not dropped) and ok / failed requests. Then, the replay over, nothing lost:
#     flamed_events_stored_total must equal the producer's "sent"; then flamed is stopped,
#     started again on the same state, and every user's history (GET /v1/users/<id>/history)
#     is audited against the replayed dataset: no event lost, none stored twice.
#     a2. the same with a real frozen disk when the machine lets us mount one: the state on a
#     loop-mounted 256 MiB ext4 image (state.min_free_mb=16, the default 256 being the whole
#     image), `fsfreeze -f` for --stall-s seconds, then `fsfreeze -u`; skipped with the reason
#     when losetup/mount/fsfreeze fail.
#  b. restart after kill -9, --runs times on the same state dir: seconds from the restart
#     (right after the kill) until /healthz answers, until flamed_partitions_assigned > 0 and
#     until /readyz is 200; each run, the median and the max. Run with
#     --stream.static_membership=false (the embedded broker does not implement static
#     membership), --kafka.session.timeout.ms=6000 --kafka.heartbeat.interval.ms=500 (as the
#     tests do): a kill -9'd member's partitions come back after its session timeout.
#  c. idle topic: flamed with the default settings except the broker address (and, because
#     they must be, state.dir, api.listen=127.0.0.1 and a free api.port), a few events on the
#     default topic `events`, then --idle-min minutes without any, sampling
#     flamed_partitions_assigned every second: samples below the assignment at the start, and
#     whether the log says "MAXPOLL" or "leaving group". librdkafka's max.poll.interval.ms is
#     300 s: an idle run shorter than ~6 minutes cannot show a MAXPOLL problem.
#
# usage: bench/faults.sh [--runs N] [--stall-s S] [--idle-min M] [--rate R] [--only a|b|c]
#                        [--build DIR]
#   --runs N      kill -9 restarts (10)          --stall-s S   stall length, seconds (30)
#   --idle-min M  idle minutes (30; e.g. 1 or 2 for a quick run)
#   --rate R      ingest rate during the stall, events/s (2000)
#   --only P      run only part a (a and a2), b or c
# Output: a human summary on stdout (also in bench/results/faults-<stamp>.log, with the
# daemon log lines that matter), and one JSON object per measurement in
# bench/results/faults-<stamp>.jsonl ("part": stall|freeze|restart|idle); each part's whole
# flamed log in bench/results/faults-<stamp>.<part>.flamed.log. Exit status 0 when
# every check passed, 1 when one failed (lost events, a daemon that died or never got
# ready), 2 on bad usage. Bounded: every wait has a deadline; a full default run takes about
# 40 minutes (30 of them idle), `--runs 2 --stall-s 5 --idle-min 1` about 3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
runs=10
stall_s=30
idle_min=30
rate=2000
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift ;;
    --stall-s) stall_s="$2"; shift ;;
    --idle-min) idle_min="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --only) only="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/faults.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
for v in "$runs" "$stall_s" "$idle_min" "$rate"; do
  [[ "$v" =~ ^[0-9]+$ && "$v" -gt 0 ]] || { echo "bench/faults.sh: '$v' is not a positive integer" >&2; exit 2; }
done
case "$only" in ""|a|b|c) ;; *) echo "bench/faults.sh: --only a|b|c" >&2; exit 2 ;; esac
for t in wrk curl jq; do
  command -v $t >/dev/null || { echo "bench/faults.sh: $t missing (scripts/setup.sh)" >&2; exit 2; }
done
flame="$build/flame"
flamed="$build/flamed"
[ -x "$flame" ] && [ -x "$flamed" ] || { echo "bench/faults.sh: build first (./scripts/dev.sh build)" >&2; exit 2; }

mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
jsonl="$here/results/faults-$stamp.jsonl"
logf="$here/results/faults-$stamp.log"
work="$(mktemp -d)"
hold="$work/hold"
pids=()
mnt=""
frozen=0
failed=0

# Thaw and release first (a process blocked on a frozen disk cannot die), then every child,
# newest first, each stopped within 15 s, then the mount.
cleanup() {
  set +e
  rm -f "$hold"
  [ "$frozen" = 1 ] && fsfreeze -u "$mnt"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}" 15; done
  [ -n "$mnt" ] && mountpoint -q "$mnt" && umount "$mnt"
  for f in "$work"/*.log; do [ -f "$f" ] && cp "$f" "$here/results/faults-$stamp.$(basename "$f" .log).flamed.log"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=bench/proc.sh
. "$here/proc.sh"

# caught_up PORT T_START_MS TOTAL: stored >= what a replay paced at $rate from T_START_MS
# had sent 1 s ago (at most TOTAL)
caught_up() {
  local s want
  s=$(metric "$1" flamed_events_stored_total)
  want=$(( ($(now_ms) - $2 - 1000) * rate / 1000 )); [ "$want" -gt "$3" ] && want=$3
  [ -n "$s" ] && [ "$s" -ge "$want" ]
}
stored_is() { [ "$(metric "$1" flamed_events_stored_total)" = "$2" ]; }
fail() { failed=1; say "FAIL: $*"; }

# --- the broker: every part's topics, created up front ---
kport=$(free_port)
"$flame" broker --port "$kport" --partitions 4 \
  --topics clicks,clicks.dlq,freeze,freeze.dlq,restart,restart.dlq,events,events.dlq \
  > "$work/broker.out" 2>&1 &
pids+=("$!")
wait_for 10 grep -q bootstrap "$work/broker.out" || { cat "$work/broker.out" >&2; exit 1; }
say "faults: broker 127.0.0.1:$kport ($(date -u +%FT%TZ)), results $jsonl"

# start_flamed LOG ENV ARGS...: flamed on the broker (ENV: a FLAMED_TEST_HOLD_WRITES value or
# ""); sets $fpid
start_flamed() {
  local log=$1 env=$2
  shift 2
  if [ -n "$env" ]; then
    FLAMED_TEST_HOLD_WRITES="$env" "$flamed" --kafka.bootstrap.servers=127.0.0.1:$kport \
      --api.listen=127.0.0.1 "$@" >> "$log" 2>&1 &
  else
    "$flamed" --kafka.bootstrap.servers=127.0.0.1:$kport --api.listen=127.0.0.1 "$@" >> "$log" 2>&1 &
  fi
  fpid=$!
  pids+=("$fpid")
}

# wrk's own summary, as JSON, written by done() to $WRK_OUT: counts and latency in µs
cat > "$work/stats.lua" <<'LUA'
done = function(s, lat, req)
  local e = s.errors
  local f = assert(io.open(os.getenv("WRK_OUT"), "w"))
  f:write(string.format('{"requests":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"duration_us":%d}\n', s.requests,
    e.status, e.connect, e.read, e.write, e.timeout, lat:percentile(50), lat:percentile(99),
    lat.max, s.duration))
  f:close()
end
LUA

# window PART NAME API SECONDS: wrk on /healthz and /v1/recommend at once for SECONDS; one
# JSON line per route
window() {
  local part=$1 name=$2 api=$3 d=$4 r
  local -A url=([healthz]="/healthz" [recommend]="/v1/recommend?user=user-1&k=10")
  local w=()
  for r in healthz recommend; do
    WRK_OUT="$work/$part-$name-$r.json" timeout $((d + 30)) wrk -t1 -c2 -d"${d}s" \
      --timeout "$((d + 10))s" -s "$work/stats.lua" "http://127.0.0.1:$api${url[$r]}" \
      > "$work/$part-$name-$r.wrk" 2>&1 &
    w+=($!)
  done
  for r in "${w[@]}"; do wait "$r" || true; done
  for r in healthz recommend; do
    local j="$work/$part-$name-$r.json"
    [ -s "$j" ] || echo '{"requests":0,"non2xx":0,"connect":0,"read":0,"write":0,"timeout":0,"p50_us":0,"p99_us":0,"max_us":0,"duration_us":0}' > "$j"
    jq -c --arg part "$part" --arg w "$name" --arg r "${url[$r]}" --arg stamp "$(date -u +%FT%TZ)" \
      '{part: $part, window: $w, route: $r, seconds: (.duration_us / 1e6), requests,
        ok: (.requests - .non2xx), failed: (.non2xx + .connect + .read + .write + .timeout),
        non2xx, socket_errors: {connect, read, write, timeout},
        p50_ms: (.p50_us / 1000), p99_ms: (.p99_us / 1000), max_ms: (.max_us / 1000),
        stamp: $stamp}' "$j" | tee -a "$jsonl" |
      jq -r '"  \(.window | . + " " * (9 - length)) \(.route | . + " " * (30 - length)) p50 \(.p50_ms) ms  p99 \(.p99_ms) ms  max \(.max_ms) ms  ok \(.ok)  failed \(.failed)"' |
      tee -a "$logf"
  done
}

# produced FILE: the "sent" of flame produce's last JSON line
produced() { sed -nE 's/.*"sent":([0-9]+).*/\1/p' "$1" | tail -n 1; }

"$flame" init --items 501 --out "$work/anchor.ckpt" > /dev/null
anchor=(--model.anchor="$work/anchor.ckpt" --model.anchor_item_ids='item-{}' --train.enabled=false)
group_fast=(--stream.static_membership=false --kafka.session.timeout.ms=6000 --kafka.heartbeat.interval.ms=500)

# stall_part PART TOPIC STATE_DIR HOLD_ENV EXTRA...: part a (hold file) or a2 (fsfreeze)
stall_part() {
  local part=$1 topic=$2 dir=$3 env=$4
  shift 4
  local api log="$work/$part.log"
  api=$(free_port)
  # enough events for both windows and 15 s more, at the rate
  local users=$(((rate * (2 * stall_s + 15) + 19) / 20))
  [ -f "$work/stall.txt" ] || "$flame" synth --out "$work/stall.txt" --users "$users" --items 500 \
    --mean-len 20 --seed 1 > /dev/null
  local args=("--stream.topic=$topic" "--stream.dead_letter_topic=$topic.dlq"
    "--stream.group=faults-$part" --state.dir="$dir" --api.port="$api" --api.admin_port=0
    --api.max_conns_per_peer=0 "${anchor[@]}" "${group_fast[@]}" "$@")
  start_flamed "$log" "$env" "${args[@]}"
  local f=$fpid
  if ! wait_for 30 healthy "$api" || ! wait_for 30 assigned "$api"; then
    fail "$part: flamed not up or no partitions after 30 s"; tail -n 20 "$log" | tee -a "$logf"; return
  fi
  "$flame" produce --brokers 127.0.0.1:$kport --topic $topic --data "$work/stall.txt" --rate "$rate" \
    > "$work/$part-produce.out" 2>&1 &
  local prod=$!
  pids+=("$prod")
  local t_prod total
  t_prod=$(now_ms)
  total=$(awk '{n += NF - 1} END {print n}' "$work/stall.txt")
  sleep 3
  say "$part: baseline window ($stall_s s, ingest at $rate events/s)"
  window "$part" baseline "$api" "$stall_s"
  local s0 s1 t0 t1 lagmax=0
  s0=$(metric "$api" flamed_events_stored_total)
  t0=$(now_ms)
  if [ "$part" = stall ]; then
    touch "$hold"
  else
    fsfreeze -f "$mnt" && frozen=1 || { fail "freeze: fsfreeze -f $mnt failed"; return; }
  fi
  say "$part: stall window ($stall_s s, $([ "$part" = stall ] && echo "hold file present" || echo "$mnt frozen"))"
  ( # the ingest during the stall, once a second: the largest lag
    m=0
    for _ in $(seq "$stall_s"); do
      l=$(metric "$api" flamed_consumer_lag); [ "${l:-0}" -gt "$m" ] 2>/dev/null && m=$l
      sleep 1
    done
    echo "$m" > "$work/$part-lagmax"
  ) &
  local sampler=$!
  window "$part" stall "$api" "$stall_s"
  s1=$(metric "$api" flamed_events_stored_total)
  if [ "$part" = stall ]; then rm -f "$hold"; else fsfreeze -u "$mnt"; frozen=0; fi
  t1=$(now_ms)
  wait "$sampler" 2>/dev/null || true
  lagmax=$(cat "$work/$part-lagmax" 2>/dev/null || echo -1)
  alive "$f" || { fail "$part: flamed died during the stall"; tail -n 20 "$log" | tee -a "$logf"; return; }
  # caught up: stored at least what the paced replay had sent 1 s earlier (flame produce
  # paces event n to its start + n / rate; flamed_consumer_lag cannot tell, see the summary)
  local caught=-1 t_c
  if wait_for 120 caught_up "$api" "$t_prod" "$total"; then
    t_c=$(now_ms); caught=$(secs "$t1" "$t_c")
  fi
  say "$part: stored $((${s1:-0} - ${s0:-0})) events during the $(secs "$t0" "$t1") s stall (largest flamed_consumer_lag read: $lagmax); caught up with the replay $caught s after the release"
  # the replay over (its nominal length plus 90 s at most), every event stored (120 s more)
  local nominal
  nominal=$((total / rate + 90))
  local left=$(( nominal - ($(now_ms) - t_prod) / 1000 )); [ "$left" -gt 5 ] || left=5
  wait_for "$left" exited "$prod" ||
    fail "$part: flame produce still running after ${nominal} s"
  stop_pid "$prod" 5
  local sent stored
  sent=$(produced "$work/$part-produce.out")
  wait_for 120 stored_is "$api" "${sent:-x}" || true
  stored=$(metric "$api" flamed_events_stored_total)
  local rejected
  rejected=$(metric "$api" flamed_events_rejected_total)
  jq -cn --arg part "$part" --argjson sent "${sent:-null}" --argjson stored "${stored:-null}" \
    --argjson rejected "${rejected:-null}" --argjson during "$((${s1:-0} - ${s0:-0}))" \
    --argjson stall_s "$stall_s" --argjson lagmax "${lagmax:--1}" --argjson caught "$caught" \
    --argjson rate "$rate" --arg stamp "$(date -u +%FT%TZ)" \
    '{part: $part, check: "exactly_once", rate: $rate, stall_s: $stall_s, sent: $sent,
      stored: $stored, rejected: $rejected, lost: (if $sent and $stored then $sent - $stored else null end),
      stored_during_stall: $during, max_lag_during_stall: $lagmax,
      catch_up_s: (if $caught < 0 then null else $caught end), stamp: $stamp}' >> "$jsonl"
  if [ -n "$sent" ] && [ "$sent" = "$stored" ]; then
    say "$part: nothing lost: $sent events produced, $stored stored"
  else
    fail "$part: $sent events produced (flame produce: $(tail -n 1 "$work/$part-produce.out")), $stored stored"
  fi
  grep -E " (warn|error) |writes flow again|disk space back|resuming" "$log" | head -n 12 | sed "s/^/  $part log: /" | tee -a "$logf" || true
  stop_pid "$f" 30
  say "$part: SIGTERM: exit $stop_rc; $(grep -E 'consumer closed' "$log" | tail -n 1 | cut -d' ' -f4-)"
  # what the state holds: the same state and group again, then every user's history
  echo "=== faults: restart on the same state for the audit ===" >> "$log"
  start_flamed "$log" "" "${args[@]}"
  f=$fpid
  local again=""
  if wait_for 30 healthy "$api" && wait_for 30 assigned "$api"; then
    sleep 3
    again=$(metric "$api" flamed_events_stored_total)
    audit "$api" "$work/stall.txt" > "$work/$part-audit.json" 2> "$work/$part-audit.err" ||
      echo '{"error":"audit failed"}' > "$work/$part-audit.json"
    jq -c --arg part "$part" --argjson again "${again:-null}" --arg stamp "$(date -u +%FT%TZ)" \
      '{part: $part, check: "state_audit", stored_by_restart: $again} + . + {stamp: $stamp}' \
      "$work/$part-audit.json" >> "$jsonl"
    read -r ap as ad al < <(jq -r '"\(.produced) \(.stored) \(.duplicated) \(.lost)"' "$work/$part-audit.json")
    say "$part: state audit after a restart on it: $as events in the users' histories for $ap produced (duplicated $ad, lost $al); the restarted flamed stored $again on start"
    [ "$ad" = 0 ] && [ "$al" = 0 ] || fail "$part: the state holds $as of $ap events (duplicated $ad, lost $al)"
  else
    fail "$part: flamed not up on the same state after 30 s"; tail -n 20 "$log" | tee -a "$logf"
  fi
  stop_pid "$f" 30
}

# audit API DATA: JSON of every user's stored history (GET /v1/users/<id>/history) against
# DATA, which was replayed in full: produced, stored, duplicated ((item, ts) twice), lost
audit() {
  /usr/bin/python3 - "$@" <<'PY'
import collections, http.client, json, sys
port, data = sys.argv[1:3]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
out = collections.Counter()
for line in open(data):
    f = line.split()
    if len(f) < 2:
        continue
    want = ["item-" + x for x in f[1:]]
    conn.request("GET", "/v1/users/user-%s/history" % f[0])
    r = conn.getresponse()
    body = r.read()
    if r.status not in (200, 404):
        raise SystemExit("history of user-%s: %d %s" % (f[0], r.status, body[:200]))
    ev = json.loads(body)["events"] if r.status == 200 else []
    got = [e["item"] for e in ev]
    pairs = collections.Counter((e["item"], e["ts_ms"]) for e in ev)
    out["produced"] += len(want)
    out["stored"] += len(got)
    out["duplicated"] += sum(c - 1 for c in pairs.values() if c > 1)
    out["lost"] += sum((collections.Counter(want) - collections.Counter(got)).values())
    out["users_differing"] += got != want
    out["users_missing"] += r.status == 404
print(json.dumps(dict(out, produced=out["produced"], stored=out["stored"],
                      duplicated=out["duplicated"], lost=out["lost"])))
PY
}

# --- a: disk stall (the hold file) ---
if [ -z "$only" ] || [ "$only" = a ]; then
  stall_part stall clicks "$work/stall-state" "$hold"
  # --- a2: a real frozen disk ---
  mnt="$work/mnt"
  why=""
  mkdir -p "$mnt"
  if ! command -v fsfreeze >/dev/null; then why="fsfreeze not installed"
  elif ! truncate -s 256M "$work/disk.img" 2>"$work/mount.err" || ! mkfs.ext4 -q -F "$work/disk.img" 2>>"$work/mount.err"; then
    why="cannot make an ext4 image: $(tail -n 1 "$work/mount.err")"
  elif ! mount -o loop "$work/disk.img" "$mnt" 2>>"$work/mount.err"; then
    why="mount -o loop failed: $(tail -n 1 "$work/mount.err")"
  fi
  if [ -n "$why" ]; then
    mnt=""
    say "freeze: skipped: $why"
    jq -cn --arg why "$why" --arg stamp "$(date -u +%FT%TZ)" '{part: "freeze", skipped: $why, stamp: $stamp}' >> "$jsonl"
  else
    stall_part freeze freeze "$mnt/state" "" --state.min_free_mb=16
    umount "$mnt" || say "freeze: umount $mnt failed"
  fi
fi

# --- b: restart after kill -9 ---
if [ -z "$only" ] || [ "$only" = b ]; then
  say "restart: $runs kill -9 runs (stream.static_membership=false: the embedded broker does not implement static membership; kafka.session.timeout.ms=6000, heartbeat 500 ms)"
  api=$(free_port)
  rlog="$work/restart.log"
  rargs=(--stream.topic=restart --stream.dead_letter_topic=restart.dlq --stream.group=faults-restart
    --state.dir="$work/restart-state" --api.port="$api" --api.admin_port=0 "${anchor[@]}" "${group_fast[@]}")
  "$flame" synth --out "$work/restart.txt" --users 250 --items 500 --mean-len 20 --seed 2 > /dev/null
  start_flamed "$rlog" "" "${rargs[@]}"
  "$flame" produce --brokers 127.0.0.1:$kport --topic restart --data "$work/restart.txt" \
    > "$work/restart-produce.out" 2>&1 || true
  sent=$(produced "$work/restart-produce.out")
  if ! wait_for 60 ready "$api" || ! wait_for 60 stored_is "$api" "${sent:-x}"; then
    fail "restart: not ready, or not every event stored, 60 s after the start"
    tail -n 20 "$rlog" | tee -a "$logf"
  else
    up=(); asg=(); rdy=()
    for i in $(seq "$runs"); do
      kill -KILL "$fpid"; wait "$fpid" 2>/dev/null || true
      echo "--- run $i: kill -9 at $(date -u +%FT%T.%3NZ), restart ---" >> "$rlog"
      t0=$(now_ms)
      start_flamed "$rlog" "" "${rargs[@]}"
      tu=-1 ta=-1 tr=-1
      end=$((t0 + 90000))
      while [ "$(now_ms)" -lt "$end" ]; do
        t=$(now_ms)
        [ "$tu" = -1 ] && healthy "$api" && tu=$(secs "$t0" "$t")
        [ "$tu" != -1 ] && [ "$ta" = -1 ] && assigned "$api" && ta=$(secs "$t0" "$t")
        [ "$tu" != -1 ] && [ "$tr" = -1 ] && ready "$api" && tr=$(secs "$t0" "$(now_ms)")
        [ "$ta" != -1 ] && [ "$tr" != -1 ] && break
        alive "$fpid" || break
        sleep 0.1
      done
      say "  run $i: healthz ${tu} s, partitions assigned ${ta} s, readyz 200 ${tr} s$(alive "$fpid" || echo ", flamed exited")"
      jq -cn --argjson run "$i" --argjson up "$tu" --argjson a "$ta" --argjson r "$tr" \
        --arg stamp "$(date -u +%FT%TZ)" '{part: "restart", run: $run, static_membership: false,
        session_timeout_ms: 6000, healthz_s: (if $up < 0 then null else $up end),
        assigned_s: (if $a < 0 then null else $a end), ready_s: (if $r < 0 then null else $r end),
        stamp: $stamp}' >> "$jsonl"
      if [ "$ta" = -1 ] || [ "$tr" = -1 ]; then
        fail "restart run $i: not ready within 90 s"; tail -n 15 "$rlog" | tee -a "$logf"
        alive "$fpid" || break
      fi
      up+=("$tu"); asg+=("$ta"); rdy+=("$tr")
    done
    med_max() { printf '%s\n' "$@" | grep -v '^-1$' | sort -g | awk '{v[NR] = $1} END {if (NR) printf "%s %s", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR]; else print "null null"}'; }
    read -r am ax <<< "$(med_max "${asg[@]}")"
    read -r rm_ rx <<< "$(med_max "${rdy[@]}")"
    read -r um ux <<< "$(med_max "${up[@]}")"
    say "restart: median/max over ${#rdy[@]} runs: healthz $um/$ux s, partitions assigned $am/$ax s, readyz $rm_/$rx s"
    jq -cn --argjson n "${#rdy[@]}" --argjson am "$am" --argjson ax "$ax" --argjson rm "$rm_" \
      --argjson rx "$rx" --argjson um "$um" --argjson ux "$ux" --arg stamp "$(date -u +%FT%TZ)" \
      '{part: "restart", summary: true, runs: $n, static_membership: false, healthz_median_s: $um,
        healthz_max_s: $ux, assigned_median_s: $am, assigned_max_s: $ax, ready_median_s: $rm,
        ready_max_s: $rx, stamp: $stamp}' >> "$jsonl"
  fi
  stop_pid "$fpid" 30
fi

# --- c: idle topic, default settings ---
if [ -z "$only" ] || [ "$only" = c ]; then
  api=$(free_port)
  ilog="$work/idle.log"
  say "idle: flamed with default settings (static membership on, topic events, group flamed) but kafka.bootstrap.servers, state.dir, api.listen=127.0.0.1, api.port=$api; $idle_min min idle"
  start_flamed "$ilog" "" --state.dir="$work/idle-state" --api.port="$api"
  "$flame" synth --out "$work/idle.txt" --users 10 --items 50 --mean-len 5 --seed 3 > /dev/null
  if ! wait_for 30 assigned "$api"; then
    fail "idle: no partitions 30 s after the start"; tail -n 20 "$ilog" | tee -a "$logf"
  else
    "$flame" produce --brokers 127.0.0.1:$kport --topic events --data "$work/idle.txt" \
      > "$work/idle-produce.out" 2>&1 || true
    sent=$(produced "$work/idle-produce.out")
    wait_for 30 stored_is "$api" "${sent:-x}" || fail "idle: $sent produced, $(metric "$api" flamed_events_stored_total) stored after 30 s"
    a0=$(metric "$api" flamed_partitions_assigned)
    say "idle: $sent events stored, $a0 partitions assigned; idle from $(date -u +%FT%TZ)"
    n=0 drops=0 amin=$a0 dead=0
    end=$(($(now_ms) + idle_min * 60000))
    while [ "$(now_ms)" -lt "$end" ]; do
      a=$(metric "$api" flamed_partitions_assigned)
      n=$((n + 1))
      if [ -z "$a" ]; then
        drops=$((drops + 1))
        alive "$fpid" || { dead=1; break; }
      elif [ "$a" -lt "$a0" ]; then
        drops=$((drops + 1))
        [ "$a" -lt "$amin" ] && amin=$a
      fi
      sleep 1
    done
    grep -iE "MAXPOLL|leaving group" "$ilog" > "$work/idle-grep" || true
    hits=$(wc -l < "$work/idle-grep")
    say "idle: $n samples over $idle_min min: $drops below $a0 (min $amin)$([ "$dead" = 1 ] && echo ", flamed died"); log lines with MAXPOLL or 'leaving group': $hits"
    sed 's/^/  idle log: /' "$work/idle-grep" | head -n 10 | tee -a "$logf"
    [ "$idle_min" -lt 6 ] && say "idle: note: under 6 minutes idle, librdkafka's max.poll.interval.ms (300 s) is never exceeded"
    jq -cn --argjson m "$idle_min" --argjson n "$n" --argjson d "$drops" --argjson a0 "${a0:-0}" \
      --argjson amin "${amin:-0}" --argjson hits "$hits" --argjson dead "$dead" \
      --arg stamp "$(date -u +%FT%TZ)" '{part: "idle", idle_min: $m, samples: $n,
      assigned_at_start: $a0, samples_dropped: $d, min_assigned: $amin,
      log_maxpoll_or_leaving_group: $hits, flamed_died: ($dead == 1), stamp: $stamp}' >> "$jsonl"
    [ "$drops" = 0 ] && [ "$hits" = 0 ] || fail "idle: the assignment dropped or the group was left"
  fi
  stop_pid "$fpid" 30
fi

if [ "$failed" = 0 ]; then say "faults: every check passed"; else say "faults: some checks FAILED (above)"; fi
say "faults: $jsonl"
exit "$failed"
