#!/usr/bin/env bash
# bench/drain.sh: how long a SIGTERM drain takes under load (issue 6): flamed on the embedded
# broker with a synthetic clickstream arriving at 5,000 events/s, rounds every 5 s, and wrk
# sending /v1/recommend on 4 connections; SIGTERM after 8 s of that, and the time to exit 0.
# Never run by CI. usage: bench/drain.sh [--build DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$(dirname "$here")/build"
[ "${1:-}" = --build ] && build="$2"
. $here/lib.sh
bench_start drain
bench_broker
api=$((port+1))
"$flame" synth --out $work/d.txt --users 20000 --items 2000 --mean-len 20 > /dev/null
bench_flamed $work/d.log --state.dir=$work/st --api.port=$api --api.admin_port=0 --train.bootstrap_min_users=500 --train.bootstrap_min_events=5000 --train.bootstrap_epochs=2 --train.interval_s=5
fpid=${pids[-1]}
bench_wait_http $api
"$flame" produce --brokers 127.0.0.1:$port --topic clicks --data $work/d.txt --rate 5000 > /dev/null 2>&1 &
pids+=($!)
for i in $(seq 120); do curl -sf 127.0.0.1:$api/v1/model | grep -q '"has_model":true' && break; sleep 0.5; done
bench_users_lua
USERS=20000 wrk -t1 -c4 -d20s -s "$work/users.lua" "http://127.0.0.1:$api/" > "$work/wrk.txt" 2>&1 &
wpid=$!
sleep 8
t0=$(date +%s.%N)
kill -TERM $fpid
rc=0
wait $fpid || rc=$?
t1=$(date +%s.%N)
echo "drain: exit $rc after $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}') s, under 5,000 events/s and wrk with 4 connections"
grep -E "draining|consumer closed|stopped|round" $work/d.log | tail -4
wait $wpid || true
grep -E "Requests/sec|Non-2xx|Socket errors" $work/wrk.txt || true
