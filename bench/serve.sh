#!/usr/bin/env bash
# bench/serve.sh: /v1/recommend latency and throughput under wrk (issue 5, item 2).
#
# For each catalogue: the embedded broker, one flamed, a replayed clickstream (every event
# stored before measuring), then wrk (loopback, --threads 2, --conns C, --duration D, users
# drawn at random) twice: with training paused, and with training running (rounds back to
# back on a trickle of new events). Catalogues:
#   beauty  the released amazon-beauty anchor (12,101 items), amazon-beauty replayed
#   1m      an untrained anchor of 1,000,000 items (`flame init`), a synthetic clickstream
#           over those items; its rounds have the default size and, the catalogue being above
#           train.sampled_items, train with the sampled softmax
# Prints p50/p99, requests/s and non-2xx counts; appends JSON lines to
# bench/results/serve.jsonl. Never run by CI.
#
# usage: bench/serve.sh [--catalogue beauty|1m|both] [--conns C] [--threads T] [--duration S]
#                       [--build DIR] [--set section.key=value]... [--swaps]
#   --threads  wrk's threads (2)
#   --set      an extra flamed setting, for both catalogues (repeatable)
#   --swaps    while training is on, ask for a round every second (admin train-now) and
#              count the model swaps and failed requests (item 3: zero failures across 10+
#              swaps; pair with --set train.margin=1 so that every round is promoted)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
shared="$(cd "$root/../shared" && pwd)"
build="$root/build"
which=both
conns=16
threads=2
swaps=0
duration=20
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --catalogue) which="$2"; shift ;;
    --conns) conns="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --set) extra+=("--$2"); shift ;;
    --swaps) swaps=1 ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/serve.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk >/dev/null || { echo "bench/serve.sh: wrk missing (scripts/setup.sh)" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_start bench/serve.sh
mkdir -p "$here/results"
bench_users_lua
echo "bench-admin-token-0123456789" > "$work/token" && chmod 600 "$work/token"

measure() { # name, api port, users, training (on|off)
  local out
  out=$(USERS=$3 wrk --latency -t"$threads" -c"$conns" -d"${duration}s" -s "$work/users.lua" "http://127.0.0.1:$2/")
  local p50 p99 rps bad
  p50=$(awk '$1 == "50%" {print $2}' <<< "$out")
  p99=$(awk '$1 == "99%" {print $2}' <<< "$out")
  rps=$(awk '$1 == "Requests/sec:" {print $2}' <<< "$out")
  bad=$(awk '/Non-2xx/ {print $NF}' <<< "$out"); bad=${bad:-0}
  # "Socket errors: connect 0, read 0, write 0, timeout 0": failed requests too
  sock=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<< "$out"); sock=${sock:-0}
  echo "$1 training $4: p50 $p50 p99 $p99, $rps requests/s, non-2xx $bad, socket errors $sock"
  printf '{"catalogue":"%s","training":"%s","conns":%s,"threads":%s,"duration_s":%s,"p50":"%s","p99":"%s","rps":%s,"non2xx":%s,"socket_errors":%s,"stamp":"%s"}\n' \
    "$1" "$4" "$conns" "$threads" "$duration" "$p50" "$p99" "$rps" "$bad" "$sock" "$(date -u +%FT%TZ)" >> "$here/results/serve.jsonl"
}

trainer_cpu() { # pid -> CPU ticks (1/100 s) of its flamed-trainer thread so far
  local t
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = flamed-trainer ]; then
      awk '{sub(/^.*\) /, ""); print $12 + $13}' "$t/stat"
      return
    fi
  done
  echo 0
}

run_catalogue() { # name, anchor ckpt, data file, users, with-training (0|1), settings...
  local name=$1 anchor=$2 data=$3 users=$4 train=$5
  shift 5
  local api admin
  bench_broker
  api=$((port + 1)); admin=$((port + 2))
  # wrk's connections all come from loopback: no per-peer cap, whatever --conns is
  bench_flamed "$work/$name.log" --state.dir="$work/$name" --model.anchor="$anchor" \
    --model.anchor_item_ids='item-{}' --api.port=$api --api.admin_port=$admin \
    --api.admin_token_file="$work/token" --train.enabled=false --train.interval_s=1 \
    --api.max_conns_per_peer=0 --train.min_users=1 "$@" ${extra[@]+"${extra[@]}"}
  bench_wait_http "$api"
  local sent
  sent=$("$flame" produce --brokers 127.0.0.1:$port --topic clicks --data "$data" |
    sed -nE 's/.*"sent":([0-9]+).*/\1/p')
  for _ in $(seq 1200); do
    [ "$(bench_metric $api flamed_events_stored_total)" = "$sent" ] && break
    sleep 0.5
  done
  echo "$name: $sent events stored; $(curl -s 127.0.0.1:$api/v1/model | head -c 120)"
  measure "$name" "$api" "$users" off
  if [ "$train" = 1 ]; then
    curl -sf -X POST -H "Authorization: Bearer bench-admin-token-0123456789" "127.0.0.1:$admin/v1/admin/resume-training" >/dev/null
    "$flame" produce --brokers 127.0.0.1:$port --topic clicks --data "$data" --rate 200 > /dev/null 2>&1 &
    local trickle=$!
    pids+=($trickle)
    sleep 3
    local fpid c0 c1
    fpid=$(pgrep -f -- "--api.port=$api" | head -n 1)
    c0=$(trainer_cpu "$fpid")
    local s0 forcer=""
    s0=$(bench_metric "$api" flamed_model_swaps_total)
    if [ "$swaps" = 1 ]; then # a round asked for every second (they queue up: one at a time)
      (while :; do
        curl -sf -X POST -H "Authorization: Bearer bench-admin-token-0123456789" "127.0.0.1:$admin/v1/admin/train-now" >/dev/null || true
        sleep 1
      done) &
      forcer=$!
      pids+=($forcer)
    fi
    measure "$name" "$api" "$users" on
    [ -n "$forcer" ] && kill "$forcer" 2>/dev/null
    echo "$name: $(( $(bench_metric "$api" flamed_model_swaps_total) - s0 )) model swaps during the run"
    c1=$(trainer_cpu "$fpid")
    echo "$name: the trainer thread used $(awk -v a="$c0" -v b="$c1" -v d="$duration" \
      'BEGIN {printf "%.0f%%", (b - a) / d}') of a core during the run (train.nice keeps it behind serving)"
    kill "$trickle" 2>/dev/null || true
    grep -cE "round [0-9]+:" "$work/$name.log" | sed "s/^/$name: rounds during the run: /" || true
  fi
}

if [ "$which" = beauty ] || [ "$which" = both ]; then
  "$flame" import-pt --in "$shared/data/flame-anchors/amazon-beauty.pt" --out "$work/beauty.ckpt" >/dev/null 2>&1
  run_catalogue beauty "$work/beauty.ckpt" "$shared/data/amazon-beauty.txt" 22363 1
fi
if [ "$which" = 1m ] || [ "$which" = both ]; then
  "$flame" init --items 1000000 --out "$work/1m.ckpt" > /dev/null
  "$flame" synth --out "$work/1m.txt" --users 20000 --items 1000000 --mean-len 10 > /dev/null
  run_catalogue 1m "$work/1m.ckpt" "$work/1m.txt" 20000 1
fi
