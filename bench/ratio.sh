#!/usr/bin/env bash
# bench/ratio.sh: the FLAME step against the SASRec step of the same binary (issue 3, item 3:
# the time ratio at most 1.25x the FLOP ratio).
#
# For each case (dataset, L) it runs `flame bench --method sasrec` and `--method flame` in
# turn, ROUNDS times, on one BLAS thread, so that both see the same machine; a random frozen
# network stands in for the anchor. Every JSON line goes to bench/results/<stamp>-ratio.jsonl
# and bench/summarize.py prints the medians over the rounds: ms/step and useful GFLOP per
# step of each method, the time ratio, the FLOP ratio, and time / FLOP.
#
# usage: bench/ratio.sh [--quick] [--rounds N] [--steps N] [--build DIR]
#   --quick     only amazon-beauty at L=50 (about a minute)
#   --rounds N  alternations per case (5)
#   --steps N   steps per run, including 2 warm-up (22)
# Never run by CI. Stop other jobs first: the ratio is only as good as the machine is quiet.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
shared="$(cd "$root/../shared" && pwd)"
build="$root/build"
quick=0
rounds=5
steps=22
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds="$2"; shift ;;
    --steps) steps="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/ratio.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ "$rounds" =~ ^[1-9][0-9]*$ && "$steps" =~ ^[1-9][0-9]*$ ]] ||
  { echo "bench/ratio.sh: --rounds and --steps take a positive integer" >&2; exit 2; }
flame="$build/flame"
[ -x "$flame" ] || { echo "bench/ratio.sh: $flame not built (./scripts/dev.sh build)" >&2; exit 2; }

mkdir -p "$here/results"
out="$here/results/$(date -u +%Y%m%dT%H%M%SZ)-ratio.jsonl"
: > "$out"
echo "# writing $out" >&2

cases=("amazon-beauty.txt 50")
[ "$quick" = 1 ] || cases+=("ml-1m.txt 50" "ml-1m.txt 200")
for c in "${cases[@]}"; do
  set -- $c
  for ((r = 1; r <= rounds; r++)); do
    echo "# $1 L=$2 round $r/$rounds" >&2
    for method in sasrec flame; do
      "$flame" bench --data "$shared/data/$1" --method "$method" --maxlen "$2" --threads 1 \
        --steps "$steps" | tail -n 1 >> "$out"
    done
  done
done
/usr/bin/python3 "$here/summarize.py" "$out"
