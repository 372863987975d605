#!/usr/bin/env bash
# scripts/demo.sh BUILD_DIR: the flamed demo (`./scripts/dev.sh demo` installs and builds, then
# runs this). On loopback: the embedded Kafka broker, flamed (which bootstraps its own anchor
# from the clicks it stores, then fine-tunes it with FLAME rounds), and a generated clickstream
# (users with 1-3 tastes whose interests drift, a catalogue that doubles halfway, one
# malformed message in 200). Waits until a model serves, prints recommendations for a few
# users and the curl commands to try, and runs until Ctrl-C, which stops everything cleanly.
#
# Environment: DEMO_PORT (8080; the admin API on DEMO_PORT + 1), DEMO_KAFKA_PORT (19092).
# Everything it writes is under BUILD_DIR/demo (fresh at each start).
set -euo pipefail
build=$(cd "${1:?usage: scripts/demo.sh BUILD_DIR}" && pwd)
dir="$build/demo"
port=${DEMO_PORT:-8080}
admin=$((port + 1))
kport=${DEMO_KAFKA_PORT:-19092}
if [[ -t 1 && -z "${NO_COLOR:-}" && "${CI:-}" != true ]]; then
  B=$'\033[1m' G=$'\033[32m' R=$'\033[0m'
else
  B="" G="" R=""
fi

for p in "$port" "$admin" "$kport"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "demo: port $p on 127.0.0.1 is taken; set DEMO_PORT / DEMO_KAFKA_PORT" >&2
    exit 1
  fi
done
rm -rf "$dir"
mkdir -p "$dir"

pids=()
stopped=0
stop_all() { # newest first, each waited for: flamed drains while its broker is still up
  ((stopped)) && return
  stopped=1
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    { kill "${pids[i]}" && wait "${pids[i]}"; } 2>/dev/null || true
  done
}
# the first INT or TERM stops everything; more of them (timeout(1) signals the script and its
# process group, a second Ctrl-C) must not re-enter the trap and exit before the broker is down
trap 'trap "" INT TERM; echo; echo "demo: stopping (flamed drains: batch, offsets, group, requests)"; stop_all;
      echo "${G}demo: stopped cleanly${R}; logs and state in $dir"; exit 0' INT TERM
trap stop_all EXIT

echo "${B}1/4 the embedded Kafka broker${R} on 127.0.0.1:$kport (topics events, events.dlq)"
# its own session: a terminal's Ctrl-C reaches flamed, which drains, while the broker stays up
# for it until stop_all
setsid "$build/flame" broker --port "$kport" --topics events,events.dlq > "$dir/broker.log" 2>&1 &
pids+=($!)

echo "${B}2/4 a clickstream${R}: 1,500 users over 300 items, then the same users over 600 items"
"$build/flame" synth --out "$dir/clicks-1.txt" --users 1500 --items 300 --mean-len 12 --seed 1 \
  > /dev/null
"$build/flame" synth --out "$dir/clicks-2.txt" --users 1500 --items 600 --mean-len 12 --seed 2 \
  > /dev/null

echo "${B}3/4 flamed${R}: API 127.0.0.1:$port, admin API 127.0.0.1:$admin, state $dir/state"
echo "demo-admin-token-0123456789" > "$dir/admin.token" && chmod 600 "$dir/admin.token"
"$build/flamed" --kafka.bootstrap.servers="127.0.0.1:$kport" --stream.topic=events \
  --stream.dead_letter_topic=events.dlq --state.dir="$dir/state" --api.listen=127.0.0.1 \
  --api.port="$port" --api.admin_port="$admin" --api.admin_token_file="$dir/admin.token" \
  --stream.static_membership=false \
  --train.bootstrap_min_users=300 --train.bootstrap_min_events=3000 \
  --train.bootstrap_epochs=5 --train.interval_s=15 --log.stats_interval_s=15 \
  > "$dir/flamed.log" 2>&1 &
flamed=$!
pids+=($flamed)
for _ in $(seq 300); do
  curl -sf "127.0.0.1:$port/healthz" > /dev/null && break
  kill -0 "$flamed" 2> /dev/null || { tail -n 20 "$dir/flamed.log" >&2; exit 1; }
  sleep 0.2
done
(
  "$build/flame" produce --brokers "127.0.0.1:$kport" --topic events --data "$dir/clicks-1.txt" \
    --rate 2000 --malformed-every 200
  "$build/flame" produce --brokers "127.0.0.1:$kport" --topic events --data "$dir/clicks-2.txt" \
    --rate 200 --malformed-every 200
) > "$dir/produce.log" 2>&1 &
pids+=($!)

echo "${B}4/4 waiting for a model${R} (flamed bootstraps a SASRec anchor from the stored clicks)"
for i in $(seq 600); do
  model=$(curl -sf "127.0.0.1:$port/v1/model" || true)
  [[ "$model" == *'"has_model":true'* ]] && break
  kill -0 "$flamed" 2> /dev/null || { tail -n 20 "$dir/flamed.log" >&2; exit 1; }
  ((i % 25 == 0)) && echo "  ... $(curl -sf "127.0.0.1:$port/metrics" |
    awk '$1 == "flamed_events_stored_total" {printf "%d events stored", $2}')"
  sleep 0.2
done
[[ "$model" == *'"has_model":true'* ]] || { echo "demo: no model after 2 minutes" >&2; exit 1; }
echo
echo "${G}A model serves.${R} $model"
for u in 1 2 3; do
  echo
  echo "${B}curl '127.0.0.1:$port/v1/recommend?user=user-$u&k=5&exclude_seen=true'${R}"
  curl -s "127.0.0.1:$port/v1/recommend?user=user-$u&k=5&exclude_seen=true"
done
cat << EOF

${B}Try:${R}
  curl '127.0.0.1:$port/v1/recommend?user=user-7&k=10'          # a user's next items
  curl '127.0.0.1:$port/v1/users/user-7/history'                # what flamed stored for them
  curl -X POST 127.0.0.1:$port/v1/recommend -d '{"history":["item-3","item-4"],"k":5}'
  curl 127.0.0.1:$port/v1/model                                 # version, holdout, rounds
  curl -s 127.0.0.1:$port/metrics | grep -E '^flamed_(events|train|online|model)'
  curl -X POST -H 'Authorization: Bearer demo-admin-token-0123456789' 127.0.0.1:$admin/v1/admin/train-now
  tail -f $dir/flamed.log   # rounds, promotions, rejects
The clickstream goes on (new items arrive in its second half; one message in 200 is malformed
and lands in events.dlq); a FLAME round runs every 15 s. ${B}Ctrl-C stops everything.${R}
EOF
wait "$flamed"
