#!/usr/bin/env bash
# bench/quality-ml1m.sh: the ml-1m quality experiments of issue 3 (RESULTS 7) as one run.
#
# `flame train` jobs on ml-1m with --protocol flame, one BLAS thread each at nice 10 (jobs that
# do not wait for one another run side by side: give them the cores), each writing <job>-s<seed>.json and .log under bench/results/quality-<stamp>/,
# then the table of bench/quality_table.py. Every job keeps a training state, so --resume
# continues an interrupted run (finished jobs are skipped).
#
# usage: bench/quality-ml1m.sh [--jobs LIST] [--seed N] [--build DIR] [--resume DIR]
#   --jobs  comma list of (default: sasrec,flame-e20,flame-conv,flame-warm):
#     sasrec       SASRec from scratch, L=50, to convergence (200 epochs, patience 20); its
#                  best checkpoint of epochs 1-20 is kept as the anchor of flame-e20
#     flame-e20    FLAME, the paper's settings (R = 200 epochs, patience 20), against that
#                  epoch-1-20 checkpoint
#     flame-conv   the same against the converged sasrec
#     flame-warm   FLAME as fine-tuning (what the daemon does): the learnable network starts
#                  as the converged sasrec (--init anchor), lambda 1 -> 1e-5 over 25 epochs,
#                  at most 25 epochs, patience 4
#     sasrec-L200  SASRec at L=200 to convergence (days of CPU)
#     budget-L200  the budget pair of 2026-11-22: SASRec at L=200 for 8 epochs of 51,200
#                  samples, then FLAME against it for 20 such epochs
#   --seed  training seed (42)
# The flame-* jobs need sasrec (in this run, or already in the --resume directory).
# Days of CPU: never run by CI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
data="$(cd "$root/../shared/data" && pwd)/ml-1m.txt"
build="$root/build"
jobs="sasrec,flame-e20,flame-conv,flame-warm"
seed=42
resume=
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --build) build="$2"; shift ;;
    --resume) resume="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/quality-ml1m.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
flame="$build/flame"
[ -x "$flame" ] || { echo "bench/quality-ml1m.sh: $flame not built" >&2; exit 2; }
for j in ${jobs//,/ }; do
  case "$j" in
    sasrec|flame-e20|flame-conv|flame-warm|sasrec-L200|budget-L200) ;;
    *) echo "bench/quality-ml1m.sh: unknown job '$j'" >&2; exit 2 ;;
  esac
done
if [ -n "$resume" ]; then
  out="$(cd "$resume" && pwd)"
else
  out="$here/results/quality-$(date -u +%Y%m%dT%H%M%SZ)-ml1m"
  mkdir -p "$out"
fi
echo "# writing $out" >&2
has() { [[ ",$jobs," == *",$1,"* ]]; }

run() { # name, then flame train arguments; a job with a result already is skipped
  local name="$1-s$seed"; shift
  grep -qs '^{' "$out/$name.json" && return 0
  nice -n 10 "$flame" train --data "$data" --protocol flame --threads 1 --seed "$seed" \
    --out "$out/$name.ckpt" --state "$out/$name.state" "$@" >> "$out/$name.json" \
    2>> "$out/$name.log"
}
flame_vs() { # name, anchor checkpoint, extra arguments
  local name="$1" anchor="$2"; shift 2
  run "$name" --method flame --anchor "$anchor" --epochs 200 "$@"
}

if has sasrec-L200; then run sasrec-L200 --method sasrec --maxlen 200 --epochs 200 & fi
if has budget-L200; then
  (
    run sasrec-L200-budget --method sasrec --maxlen 200 --epoch-samples 51200 --epochs 8
    run flame-L200-budget --method flame --anchor "$out/sasrec-L200-budget-s$seed.ckpt" \
      --epoch-samples 51200 --epochs 20
  ) &
fi
if has sasrec || has flame-e20 || has flame-conv || has flame-warm; then
  # the same state run to epoch 20 and then on: the result is the uninterrupted run's
  [ -f "$out/anchor-e20.ckpt" ] || {
    run sasrec --method sasrec --epochs 20
    rm -f "$out/sasrec-s$seed.json" # the 20-epoch line is not the run's result
    cp "$out/sasrec-s$seed.ckpt" "$out/anchor-e20.ckpt"
  }
  if has flame-e20; then flame_vs flame-e20 "$out/anchor-e20.ckpt" & fi
  run sasrec --method sasrec --epochs 200
  if has flame-conv; then flame_vs flame-conv "$out/sasrec-s$seed.ckpt" & fi
  if has flame-warm; then
    flame_vs flame-warm "$out/sasrec-s$seed.ckpt" --epochs 25 --schedule 25 --patience 4 \
      --init anchor &
  fi
fi
wait
rm -f "$out"/*.state "$out"/*.ckpt
/usr/bin/python3 "$here/quality_table.py" "$out"
