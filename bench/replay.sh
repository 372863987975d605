#!/usr/bin/env bash
# bench/replay.sh: issue 28's judge of online learning, `flame replay`, over policies and seeds.
# For each seed: an anchor pretrained on the part before the split (`flame train --split`,
# kept in a temp dir: no checkpoints in the results), then `flame replay --anchor` with each
# policy on the stream after it. Never run by CI.
#
# usage: bench/replay.sh [--data FILE] [--split F] [--split-by time|user] [--seeds "1 2 3"]
#                        [--policies "frozen flame ce retrain"] [--epochs N] [--patience N]
#                        [--round-events N] [--retrain-events K] [--threads N] [--tag T]
#                        [--anchors DIR] [--build DIR] [-- REPLAY-OPTIONS...]
#   --data        default ../shared/data/ml-100k/ml-100k.inter; --split 0.8, --split-by: the
#                 replay's default (time when the data has timestamps)
#   --epochs N    the anchor's pretraining epochs (20), early stopping after --patience (5);
#                 also the retrain policy's epochs (its --pretrain-epochs)
#   --anchors DIR  reuse the anchors in DIR (a<seed>.ckpt, with their training line in
#                 a<seed>.json) instead of training them: to compare round settings on the
#                 same anchors; without it they are trained into DIR when DIR is given
#   anything after -- goes to every flame replay (e.g. -- --set train.steps=100)
# Output: bench/results/replay-<stamp>[-<tag>]/: commands.txt (every command run), for each
# policy and seed <policy>-s<seed>.json (the replay's JSON line) and .log (its stderr), the
# anchors' training lines anchor-s<seed>.json, seed<seed>/replay-<policy>.csv and replay.svg
# (the curves), and summary.md (bench/replay_table.py: mean and 95% interval over seeds).
# A full default run on ml-100k takes about 20 minutes per seed on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
data="$(cd "$root/../shared/data" && pwd)/ml-100k/ml-100k.inter"
split=0.8
split_by=""
seeds="1 2 3"
policies="frozen flame ce retrain"
epochs=20
patience=5
round_events=1000
retrain_events=10000
threads=2
tag=""
anchors=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift ;;
    --split) split="$2"; shift ;;
    --split-by) split_by="$2"; shift ;;
    --seeds) seeds="$2"; shift ;;
    --policies) policies="$2"; shift ;;
    --epochs) epochs="$2"; shift ;;
    --patience) patience="$2"; shift ;;
    --round-events) round_events="$2"; shift ;;
    --retrain-events) retrain_events="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --tag) tag="-$2"; shift ;;
    --build) build="$2"; shift ;;
    --anchors) anchors="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/replay.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
flame="$build/flame"
[ -x "$flame" ] || { echo "bench/replay.sh: build first (./scripts/dev.sh build)" >&2; exit 2; }
out="$here/results/replay-$(date -u +%Y%m%dT%H%M%SZ)$tag"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
splitargs=(--split "$split")
[ -n "$split_by" ] && splitargs+=(--split-by "$split_by")
run() { # LOGFILE JSONFILE ARGS...: records the command, runs flame, keeps stderr and the JSON line
  local log="$1" json="$2"
  shift 2
  echo "flame $*" | sed "s|$work/||g; s|$root/../shared/data/||g; s|${anchors:-/nonexistent}/||g" >> "$out/commands.txt"
  "$flame" "$@" 2> "$log" | tail -n 1 > "$json"
}
for seed in $seeds; do
  akpt="$work/anchor-s$seed.ckpt"
  if [ -n "$anchors" ] && [ -f "$anchors/a$seed.ckpt" ]; then
    akpt="$anchors/a$seed.ckpt"
    cp "$anchors/a$seed.json" "$out/anchor-s$seed.json"
    echo "# anchor of seed $seed reused from $anchors" >> "$out/commands.txt"
  else
    [ -n "$anchors" ] && mkdir -p "$anchors" && akpt="$anchors/a$seed.ckpt"
    echo "seed $seed: anchor ($(date -u +%H:%M:%S))"
    run "$out/anchor-s$seed.log" "$out/anchor-s$seed.json" train --data "$data" "${splitargs[@]}" \
      --method sasrec --out "$akpt" --epochs "$epochs" --patience "$patience" \
      --seed "$seed" --threads "$threads"
    [ -n "$anchors" ] && cp "$out/anchor-s$seed.json" "$anchors/a$seed.json"
  fi
  mkdir -p "$out/seed$seed"
  for p in $policies; do
    echo "seed $seed: $p ($(date -u +%H:%M:%S))"
    run "$out/$p-s$seed.log" "$out/$p-s$seed.json" replay --data "$data" "${splitargs[@]}" \
      --policy "$p" --anchor "$akpt" --pretrain-epochs "$epochs" \
      --round-events "$round_events" --retrain-events "$retrain_events" --seed "$seed" \
      --threads "$threads" --out-dir "$out/seed$seed" "${extra[@]}" || echo "  $p failed: see $p-s$seed.log"
  done
  /usr/bin/python3 "$here/replay_table.py" "$out" > "$out/summary.md"
done
cat "$out/summary.md"
