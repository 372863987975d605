#!/usr/bin/env bash
# bench/online.sh: does online learning pay? (issue 5, item 4)
#
# Replays a dataset (default amazon-beauty) through the embedded broker at --rate events/s
# into two flamed instances that start from the same imported anchor (the released FLAME
# weights, rows mapped through item-{} ids): one fine-tunes (FLAME rounds every --interval
# seconds), the other has training paused (the anchor's weights serve throughout). Both rank
# a sample of the incoming events before applying them (online, prequential HR@10 and
# NDCG@10). Their /metrics are scraped every --every seconds into a CSV; at the end the
# script prints both curves' final values and writes an SVG of the two curves (NDCG@10 over
# windows of events seen, and cumulative) next to the CSV in bench/results/. Never run by CI.
#
# usage: bench/online.sh [--data FILE] [--anchor FILE.pt] [--rate N] [--interval S] [--every S]
#                        [--align start|end] [--train-from N|tail] [--head-rate N] [--build DIR]
#   --anchor  default: ../shared/data/flame-anchors/<data's name>.pt
#   --align   the replay's interleaving (`flame produce --align`). Default end: every user's
#             last event comes in the last round, the time the leave-last-out protocol (and
#             so the anchor's training split) assumes: the anchor was trained on the rounds
#             before the last two and has never seen those. start: every user's first
#             event, then every user's second, ...; the events the anchor never saw are
#             then interleaved with those it trained on, over the last two thirds.
#   --train-from  the fine-tuned daemon starts with training paused and resumes it (admin
#             API) once it has stored N events; tail: once the tail starts (--align end
#             only), so that rounds learn only from events the anchor never saw. Default 0:
#             training on from the first event.
#   --head-rate  replay the head (the events before the tail, --align end only) at this rate
#             and only the tail at --rate: with --train-from tail the head is only history
#             to store, and a slow tail gives the rounds time between the validation and the
#             test events.
#   --set section.key=value   a setting for the fine-tuned daemon (repeatable), e.g.
#             --set train.lr=0.0001
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
shared="$(cd "$root/../shared" && pwd)"
build="$root/build"
data="$shared/data/amazon-beauty.txt"
rate=1000
interval=20
every=5
align=end
train_from=0
head_rate=""
pt=""
tuned_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --anchor) pt="$2"; shift ;;
    --set) tuned_args+=("--$2"); shift ;;
    --interval) interval="$2"; shift ;;
    --every) every="$2"; shift ;;
    --align) align="$2"; shift ;;
    --train-from) train_from="$2"; shift ;;
    --head-rate) head_rate="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/online.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_start bench/online.sh
[ -n "$pt" ] || pt="$shared/data/flame-anchors/$(basename "${data%.txt}").pt"
[ -f "$pt" ] || { echo "bench/online.sh: no released anchor $pt" >&2; exit 2; }
mkdir -p "$here/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
csv="$here/results/online-$stamp.csv"
svg="$here/results/online-$stamp.svg"

# aligned at the end, the last two rounds are every user's last two events: the ones the
# anchor never trained on (the leave-last-out split), reported on their own as the tail
tail_from=0
if [ "$align" = end ]; then
  tail_from=$(awk '{u[$1] = 1; n += NF - 1} END {print n - 2 * length(u)}' "$data")
fi
if [ -n "$head_rate" ] && [ "$tail_from" -eq 0 ]; then
  echo "bench/online.sh: --head-rate needs --align end" >&2; exit 2
fi
if [ "$train_from" = tail ]; then
  [ "$tail_from" -gt 0 ] || { echo "bench/online.sh: --train-from tail needs --align end" >&2; exit 2; }
  train_from=$tail_from
fi
"$flame" import-pt --in "$pt" --out "$work/anchor.ckpt" >/dev/null 2>&1
bench_broker
start() { # name, api port, train.enabled, more settings
  local name=$1 api=$2 on=$3
  shift 3
  bench_flamed "$work/$name.log" --stream.group="online-$name" --state.dir="$work/$name" \
    --model.anchor="$work/anchor.ckpt" --model.anchor_item_ids='item-{}' --api.port="$api" \
    --train.enabled="$on" --train.interval_s="$interval" --train.min_new_events=1000000000 \
    --api.online_eval_per_s=100000 --api.online_eval_share=0.25 "$@"
}
pa=$((port + 1)); pb=$((port + 2)); padm=$((port + 3))
if [ "$train_from" -gt 0 ]; then
  echo bench-admin-token-0123456789 > "$work/token" && chmod 600 "$work/token"
  start tuned "$pa" false --api.admin_port="$padm" --api.admin_token_file="$work/token" \
    "${tuned_args[@]}"
else
  start tuned "$pa" true "${tuned_args[@]}"
fi
start frozen "$pb" false
bench_wait_http "$pa"
bench_wait_http "$pb"
sleep 4 # partitions assigned
replay() { # extra produce arguments
  "$flame" produce --brokers "127.0.0.1:$port" --topic clicks --data "$data" --align "$align" "$@" \
    >> "$work/produce.out" 2>&1
}
if [ -n "$head_rate" ]; then
  (replay --rate "$head_rate" --limit "$tail_from" && replay --rate "$rate" --skip "$tail_from") &
else
  replay --rate "$rate" &
fi
prod=$!
pids+=($prod)
if [ "$train_from" -gt 0 ]; then
  # resume the tuned daemon's training once it has stored train_from events (within 0.2 s)
  (
    while :; do
      st=$(bench_metric "$pa" flamed_events_stored_total)
      if [ "${st:-0}" -ge "$train_from" ]; then
        curl -sf -X POST -H "Authorization: Bearer bench-admin-token-0123456789" "127.0.0.1:$padm/v1/admin/resume-training" >/dev/null
        echo "training resumed at $st events stored" >&2
        break
      fi
      kill -0 "$prod" 2>/dev/null || break
      sleep 0.2
    done
  ) &
  pids+=($!)
fi
scrape() { # port -> "events hits ndcg_sum version baseline_events baseline_hits baseline_ndcg_sum stored"
  curl -sf "127.0.0.1:$1/metrics" | awk '
    /^flamed_online_events_total / {e=$2} /^flamed_online_hits10_total / {h=$2}
    /^flamed_online_ndcg10_sum / {n=$2} /^flamed_model_version / {v=$2}
    /^flamed_online_baseline_events_total / {be=$2} /^flamed_online_baseline_hits10_total / {bh=$2}
    /^flamed_online_baseline_ndcg10_sum / {bn=$2} /^flamed_events_stored_total / {st=$2}
    END {print e+0, h+0, n+0, v+0, be+0, bh+0, bn+0, st+0}'
}
# baseline_*: the tuned daemon ranks every sampled event with the anchor's weights too (the
# same events, hence a paired comparison); frozen_*: the second daemon, training paused
echo "t,tuned_events,tuned_hits10,tuned_ndcg10_sum,tuned_version,baseline_events,baseline_hits10,baseline_ndcg10_sum,tuned_stored,frozen_events,frozen_hits10,frozen_ndcg10_sum,frozen_version,frozen_baseline_events,frozen_baseline_hits10,frozen_baseline_ndcg10_sum,frozen_stored" > "$csv"
t0=$(date +%s)
done_at=0
while :; do
  sleep "$every"
  a=$(scrape "$pa"); b=$(scrape "$pb")
  echo "$(( $(date +%s) - t0 )),${a// /,},${b// /,}" >> "$csv"
  if ! kill -0 "$prod" 2>/dev/null; then
    # the replay is over: stop once both daemons have stored everything (10 minutes at most)
    [ "$done_at" = 0 ] && done_at=$(date +%s)
    sent=$(sed -nE 's/.*"sent":([0-9]+).*/\1/p' "$work/produce.out" | awk '{n += $1} END {print n}')
    sa=$(bench_metric "$pa" flamed_events_stored_total)
    sb=$(bench_metric "$pb" flamed_events_stored_total)
    [ "$sa" = "$sent" ] && [ "$sb" = "$sent" ] && break
    [ $(( $(date +%s) - done_at )) -ge 600 ] && { echo "bench/online.sh: daemons still behind" >&2; break; }
  fi
done
cat "$work/produce.out" | tail -n 1
# every round's line (loss, holdout figures, promoted or rejected) beside the CSV
grep -E "round [0-9]+:|training (paused|resumed)" "$work/tuned.log" > "${csv%.csv}.rounds.txt" || true
tail -n 3 "${csv%.csv}.rounds.txt"
/usr/bin/python3 "$here/plot_online.py" "$csv" "$svg" "$tail_from"
