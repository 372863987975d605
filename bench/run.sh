#!/usr/bin/env bash
# bench/run.sh: side-by-side training-speed comparison of `flame bench` with the PyTorch
# reference (../shared/bench/torch_ref.py) on the same machine, in one run.
#
# For each case (dataset, L) it alternates the two implementations over the thread
# settings, then measures what packing and the last-position shortcut buy, and the
# machine's sgemm throughput. Every JSON line goes to bench/results/<stamp>.jsonl and a
# markdown summary (medians, best thread setting of each, ratios, GFLOP/s) is printed.
#
# With --ratio it measures instead the FLAME step against the SASRec step of flame itself
# (issue 3, item 3: the time ratio at most 1.25x the FLOP ratio): per case, `flame bench
# --method sasrec` and `--method flame` in turn on one thread, ROUNDS times, so both see
# the same machine; the summary gives the medians, time ratio, FLOP ratio and time / FLOP.
#
# usage: bench/run.sh [--quick] [--method sasrec|flame] [--ratio [--rounds N]] [--build DIR]
#   --quick     only amazon-beauty at L=50 (a few minutes)
#   --rounds N  with --ratio: alternations per case (5)
# Needs python3-torch (scripts/setup.sh --bench), except with --ratio. Never run by CI.
# Stop other jobs first: the figures are only as good as the machine is quiet.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
shared="$(cd "$root/../shared" && pwd)"
build="$root/build"
method=sasrec
quick=0
ratio=0
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --method) method="$2"; shift ;;
    --ratio) ratio=1 ;;
    --rounds) rounds="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench/run.sh: --rounds takes a positive integer" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
if [ "$ratio" = 1 ]; then bench_need bench/run.sh; else bench_need bench/run.sh torch; fi

mkdir -p "$here/results"
kind=$method; [ "$ratio" = 0 ] || kind=ratio
out="$here/results/$(date -u +%Y%m%dT%H%M%SZ)-$kind.jsonl"
: > "$out"
echo "# writing $out" >&2

cases=("amazon-beauty.txt 50")
[ "$quick" = 1 ] || cases+=("ml-1m.txt 50" "ml-1m.txt 200")

for c in "${cases[@]}"; do
  set -- $c
  data="$shared/data/$1"; L="$2"
  if [ "$ratio" = 1 ]; then
    for ((r = 1; r <= rounds; r++)); do
      echo "# $1 L=$L round $r/$rounds" >&2
      for m in sasrec flame; do
        "$flame" bench --data "$data" --method "$m" --maxlen "$L" --threads 1 --steps 22 |
          tail -n 1 >> "$out"
      done
    done
    continue
  fi
  for threads in 1 2; do
    echo "# $1 L=$L threads=$threads" >&2
    "$python" "$shared/bench/torch_ref.py" bench --data "$data" --method "$method" --maxlen "$L" \
      --threads "$threads" --steps 12 | tail -n 1 >> "$out"
    "$flame" bench --data "$data" --method "$method" --maxlen "$L" --threads "$threads" \
      --steps 22 | tail -n 1 >> "$out"
  done
  for variant in --no-last-only --no-pack "--no-pack --no-last-only"; do
    # shellcheck disable=SC2086
    "$flame" bench --data "$data" --method "$method" --maxlen "$L" --threads 1 --steps 12 \
      $variant | tail -n 1 >> "$out"
  done
done
if [ "$ratio" = 0 ]; then
  for threads in 1 2; do
    "$flame" bench --sgemm --threads "$threads" --steps 12 | tail -n 1 >> "$out"
  done
fi
"$python" "$here/summarize.py" "$out"
