#!/usr/bin/env bash
# bench/replay_screen.sh: screens round settings with `flame replay` on one seed's anchor
# (issue 28 part 4), one replay per line of stdin:
#   NAME POLICY [section.key=value | --replay-option:value ...]
# e.g.  ce_lr3 ce train.lr=0.0003        flame_re5k flame --round-events:5000
# Each line's JSON goes to OUT/NAME-s<seed>.json and a one-line summary (overall, new users,
# returning, new items NDCG@10, training CPU s, promoted rounds) is appended to
# OUT/screen.txt; OUT/commands.txt records every command. A screen is a single seed: keep a
# setting only after bench/replay.sh --anchors DIR --seeds "1 2 3" confirms it, paired.
# Never run by CI.
#
# usage: bench/replay_screen.sh --anchors DIR --out OUT [--seed N] [--threads N]
#                               [--data FILE] [--split F] [--build DIR] < LINES
#   --anchors DIR  the anchors, DIR/a<seed>.ckpt (bench/replay.sh --anchors DIR trains them)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
data="$(cd "$root/../shared/data" && pwd)/ml-100k/ml-100k.inter"
split=0.8
seed=1
threads=2
anchors=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --anchors) anchors="$2"; shift ;;
    --out) out="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --data) data="$2"; shift ;;
    --split) split="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/replay_screen.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$anchors" ] && [ -n "$out" ] || { echo "bench/replay_screen.sh: --anchors and --out are required" >&2; exit 2; }
[ -f "$anchors/a$seed.ckpt" ] || { echo "bench/replay_screen.sh: no $anchors/a$seed.ckpt" >&2; exit 2; }
mkdir -p "$out"
while read -r name pol sets; do
  [ -z "$name" ] && continue
  args=()
  for s in $sets; do
    case "$s" in
      --*) args+=("${s%%:*}" "${s#*:}") ;;
      *) args+=(--set "$s") ;;
    esac
  done
  cmd=(replay --data "$data" --split "$split" --policy "$pol" --anchor "$anchors/a$seed.ckpt"
       --seed "$seed" --threads "$threads" "${args[@]}")
  echo "flame ${cmd[*]}" | sed "s|$anchors/||g; s|$root/../shared/data/||g" >> "$out/commands.txt"
  "$build/flame" "${cmd[@]}" 2> /dev/null | tail -n 1 > "$out/$name-s$seed.json"
  /usr/bin/python3 - "$out/$name-s$seed.json" "$name" >> "$out/screen.txt" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); s = j["segments"]
print(sys.argv[2], "seed", j["seed"], "NDCG@10 %.4f" % j["NDCG@10"],
      "new_users %.4f" % s["new_users"]["NDCG@10"], "returning %.4f" % s["returning"]["NDCG@10"],
      "new_items %.4f" % s["new_items"]["NDCG@10"], "cpu_s %.0f" % j["cpu_s"],
      "promoted %d/%d" % (j["promoted"], j["rounds"]))
PY
done
cat "$out/screen.txt"
