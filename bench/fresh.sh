#!/usr/bin/env bash
# bench/fresh.sh: freshness (issue 5, item 1): produce-to-visible latency of single events, and
# the delay from a round's end to its version serving. One flamed on the embedded broker with
# the released amazon-beauty anchor and amazon-beauty replayed first (so the state and the
# model are full size); rounds only when asked (train-now), each promoted (margin 1), so the
# delay is measured on every one. Runs bench/fresh.py; appends its JSON lines to
# bench/results/fresh.jsonl. Never run by CI.
#
# usage: bench/fresh.sh [--events N] [--build DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
shared="$(cd "$root/../shared" && pwd)"
build="$root/build"
events=200
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/fresh.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
command -v kcat >/dev/null || { echo "bench/fresh.sh: kcat missing (scripts/setup.sh)" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_start bench/fresh.sh
mkdir -p "$here/results"
"$flame" import-pt --in "$shared/data/flame-anchors/amazon-beauty.pt" --out "$work/anchor.ckpt" >/dev/null 2>&1
echo bench-admin-token-0123456789 > "$work/token" && chmod 600 "$work/token"
bench_broker
api=$((port + 1)); admin=$((port + 2))
bench_flamed "$work/flamed.log" --state.dir="$work/state" --model.anchor="$work/anchor.ckpt" \
  --model.anchor_item_ids='item-{}' --api.port=$api --api.admin_port=$admin \
  --api.admin_token_file="$work/token" --train.interval_s=86400 --train.margin=1
bench_wait_http "$api"
sent=$("$flame" produce --brokers 127.0.0.1:$port --topic clicks --data "$shared/data/amazon-beauty.txt" |
  sed -nE 's/.*"sent":([0-9]+).*/\1/p')
for _ in $(seq 1200); do
  [ "$(bench_metric "$api" flamed_events_stored_total)" = "$sent" ] && break
  sleep 0.5
done
/usr/bin/python3 "$here/fresh.py" "127.0.0.1:$port" clicks "$api" "$admin" bench-admin-token-0123456789 "$events" |
  tee -a "$here/results/fresh.jsonl"
