#!/usr/bin/env bash
# bench/round_scale.sh: what a daemon's round costs as the stored state grows (issue 28 part 4:
# rounds O(users with new events + sample), not O(stored users)).
#
# For each user count N: a synthetic clickstream of N users (`flame synth --mean-len 10`,
# 2,000 items) is stored by a flamed on the embedded broker with training paused, from an
# untrained anchor (`flame init`: the round's cost, not its quality, is measured); the daemon
# is restarted (its set of touched users starts empty); then
#   round 1: train-now with nothing new (the first round after start, which reads every stored
#            sequence to fill the replay pool);
#   round 2: 1,000 new events of 1,000 random stored users, then train-now: a steady-state round.
# Printed per N and round, one JSON line: the round's seconds, the users it read and the
# seconds reading took (read_users / read_seconds: absent from builds before they existed,
# when only the round's seconds compare). Rounds use train.steps=5, so that reading is not
# hidden behind learning. Never run by CI.
#
# usage: bench/round_scale.sh [--users "10000 100000 1000000"] [--build DIR] [--tag T]
#   --build   the build to run (e.g. one of an older commit, to compare)
#   --tag     a label written into every line (e.g. the commit)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
users="10000 100000 1000000"
tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --users) users="$2"; shift ;;
    --build) build="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/round_scale.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_start bench/round_scale.sh
tok=bench-admin-token-0123456789
echo "$tok" > "$work/token" && chmod 600 "$work/token"
"$flame" init --items 2000 --out "$work/anchor.ckpt" > /dev/null

last_round() { # api-port -> the newest round's JSON
  curl -sf "127.0.0.1:$1/v1/model" | "$python" -c '
import json, sys
r = json.load(sys.stdin)["training"]["recent_rounds"]
print(json.dumps(r[-1]) if r else "{}")'
}
rounds() { curl -sf "127.0.0.1:$1/v1/model" | "$python" -c 'import json,sys; print(int(json.load(sys.stdin)["training"]["rounds"]))'; }
wait_stored() { # port n
  for _ in $(seq 36000); do
    [ "$(bench_metric "$1" flamed_events_stored_total)" = "$2" ] && return 0
    sleep 0.1
  done
  echo "bench/round_scale.sh: never stored $2 events" >&2
  return 1
}
round_now() { # api admin -> waits for the next round, prints its JSON
  local n
  n=$(rounds "$1")
  curl -sf -X POST -H "Authorization: Bearer $tok" "127.0.0.1:$2/v1/admin/train-now" > /dev/null
  for _ in $(seq 36000); do
    [ "$(rounds "$1")" -gt "$n" ] && break
    sleep 0.2
  done
  last_round "$1"
}

for n in $users; do
  "$flame" synth --out "$work/s.txt" --users "$n" --items 2000 --mean-len 10 --seed 1 > /dev/null
  total=$(awk '{s += NF - 1} END {print s}' "$work/s.txt")
  awk -v n="$n" 'BEGIN {srand(7); for (i = 0; i < 1000; i++) print 1 + int(rand() * n), 1 + int(rand() * 2000)}' \
    > "$work/new.txt"
  bench_broker
  broker=${pids[-1]}
  api=$((port + 1)); adm=$((port + 2))
  args=(--state.dir="$work/st-$n" --api.port="$api" --api.admin_port="$adm"
    --api.admin_token_file="$work/token" --model.anchor="$work/anchor.ckpt"
    --model.anchor_item_ids='item-{}' --train.steps=5 --train.min_users=1
    --train.interval_s=86400 --train.min_new_events=100000000 --log.stats_interval_s=0)
  bench_flamed "$work/d-$n.log" "${args[@]}" --train.enabled=false
  bench_wait_http "$api"
  sleep 3
  t0=$(date +%s.%N)
  # in parts, each stored before the next: the embedded broker keeps a bounded log per
  # partition, and a producer far ahead of the consumer would have the oldest parts dropped
  for ((k = 0; k < total; k += 200000)); do
    "$flame" produce --brokers "127.0.0.1:$port" --topic clicks --data "$work/s.txt" --skip "$k" \
      --limit 200000 > /dev/null 2>&1
    wait_stored "$api" $((k + 200000 < total ? k + 200000 : total))
  done
  ingest_s=$(echo "$(date +%s.%N) - $t0" | bc)
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  bench_flamed "$work/d-$n.log" "${args[@]}" --train.enabled=false
  bench_wait_http "$api"
  r1=$(round_now "$api" "$adm")
  "$flame" produce --brokers "127.0.0.1:$port" --topic clicks --data "$work/new.txt" --data-format seq > /dev/null 2>&1
  wait_stored "$api" 1000
  r2=$(round_now "$api" "$adm")
  mem=$(awk '/VmHWM/ {print $2}' "/proc/${pids[-1]}/status")
  for r in 1 2; do
    j=$([ $r = 1 ] && echo "$r1" || echo "$r2")
    "$python" -c '
import json, sys
r = json.loads(sys.argv[1])
print(json.dumps({"tag": sys.argv[2], "users": int(sys.argv[3]), "events": int(sys.argv[4]),
                  "round": int(sys.argv[5]), "seconds": r.get("seconds"),
                  "read_users": r.get("read_users"), "read_seconds": r.get("read_seconds"),
                  "trained_users": r.get("users"), "outcome": r.get("outcome"),
                  "ingest_s": float(sys.argv[6]), "daemon_peak_rss_kb": int(sys.argv[7])}))' \
      "$j" "$tag" "$n" "$total" "$r" "$ingest_s" "$mem"
  done
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  kill "$broker"; wait "$broker" 2>/dev/null || true
  rm -rf "$work/st-$n"
done
