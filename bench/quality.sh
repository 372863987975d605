#!/usr/bin/env bash
# bench/quality.sh: the quality experiments of issues 2 and 3 as one reproducible run.
#
# Runs `flame train` jobs (two at a time on two cores, one BLAS thread each, at nice 19),
# each writing its JSON line and per-epoch log under bench/results/quality-<stamp>/, then
# prints a table: best epoch, test HR/NDCG@10/20, wall seconds and seconds to the best
# validation NDCG@20; and, per seed, each FLAME job's test NDCG@20 against the plain SASRec
# of the same seed, with the mean gain over the seeds and its standard error.
#
# usage: bench/quality.sh [--data FILE] [--maxlen L] [--epochs N] [--jobs LIST]
#                         [--seeds LIST] [--build DIR] [--resume DIR]
#   --jobs    comma list of: sasrec (from scratch; also the anchor of flame-own),
#             flame-released (anchor = the imported flame-anchors/<data>.pt, the paper's
#             settings), and variants of it with the released anchor:
#               flame-released-d03   the learnable network's dropout at 0.3 (the anchor keeps 0.5)
#               flame-released-a0    the anchor's dropout off (--anchor-dropout 0)
#               flame-released-tau2, flame-released-tau5   NT-Xent temperature 2 or 5
#               flame-released-lambdar1e-2   lambda decaying to 1e-2 instead of 1e-5
#               flame-blocks         per-block modules, 4 random paths of 8 per step
#               flame-blocks8        per-block modules, all 8 paths every step
#               flame-blockdiag      the block-diagonal mask (independent paths, an ablation)
#               flame-warm           warm start (the learnable network starts as the anchor)
#               flame-warm-l1        warm start, lambda held at 1, 10 epochs, patience 4
#               flame-warm-l1-lr3e-4 the same at learning rate 3e-4
#             flame-own (anchor = this run's sasrec of the same seed)
#             default: sasrec,flame-released,flame-own
#   --seeds   comma list of training seeds, every job run once per seed (default 42)
#   --data    default ../shared/data/amazon-beauty.txt; --protocol flame throughout
#   --resume  continue an interrupted run in its results DIR, with the same arguments: every
#             job keeps a training state (`flame train --state`), so a finished job is
#             skipped and an unfinished one continues from its last epoch
# Job names carry their seed: sasrec-s42.json, flame-released-s42.log, ...
# Hours of CPU: never run by CI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
shared="$(cd "$root/../shared" && pwd)"
build="$root/build"
data="$shared/data/amazon-beauty.txt"
maxlen=50
epochs=200
jobs="sasrec,flame-released,flame-own"
seeds=42
resume=
out= # the results directory, set below
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift ;;
    --maxlen) maxlen="$2"; shift ;;
    --epochs) epochs="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --seeds) seeds="$2"; shift ;;
    --build) build="$2"; shift ;;
    --resume) resume="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/quality.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
flame="$build/flame"
[ -x "$flame" ] || { echo "bench/quality.sh: $flame not built" >&2; exit 2; }
# Each job's `flame train` arguments after the common ones, into the array args.
set_args() { # job, seed
  local rel=(--method flame --anchor "$out/released.ckpt")
  case "$1" in
    sasrec) args=(--method sasrec --maxlen "$maxlen") ;;
    flame-released) args=("${rel[@]}") ;;
    flame-released-d03) args=("${rel[@]}" --dropout 0.3) ;;
    flame-released-a0) args=("${rel[@]}" --anchor-dropout 0) ;;
    flame-released-tau2) args=("${rel[@]}" --tau 2) ;;
    flame-released-tau5) args=("${rel[@]}" --tau 5) ;;
    flame-released-lambdar1e-2) args=("${rel[@]}" --lambda-r 0.01) ;;
    flame-blocks) args=("${rel[@]}" --modules blocks --paths 4) ;;
    flame-blocks8) args=("${rel[@]}" --modules blocks) ;;
    flame-blockdiag) args=("${rel[@]}" --mask blockdiag) ;;
    flame-warm) args=("${rel[@]}" --init anchor) ;;
    flame-warm-l1) args=("${rel[@]}" --init anchor --lambda-r 1 --epochs 10 --patience 4) ;;
    flame-warm-l1-lr3e-4)
      args=("${rel[@]}" --init anchor --lambda-r 1 --lr 3e-4 --epochs 10 --patience 4) ;;
    flame-own) args=(--method flame --anchor "$out/sasrec-s$2.ckpt") ;;
    *) return 1 ;;
  esac
}
IFS=, read -ra job_list <<< "$jobs"
for j in "${job_list[@]}"; do
  set_args "$j" 0 || { echo "bench/quality.sh: unknown job '$j'" >&2; exit 2; }
done
if [ -n "$resume" ]; then
  [ -d "$resume" ] || { echo "bench/quality.sh: --resume $resume: no such directory" >&2; exit 2; }
  out="$(cd "$resume" && pwd)"
else
  out="$here/results/quality-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$out"
fi
echo "# writing $out" >&2
common=(--data "$data" --protocol flame --threads 1 --epochs "$epochs")
pt="$shared/data/flame-anchors/$(basename "${data%.txt}").pt"
has() { [[ ",$jobs," == *",$1,"* ]]; }

run() { # name, seed, then flame train arguments; a job with a result already is skipped
  local name="$1-s$2" seed="$2"; shift 2
  grep -qs '^{' "$out/$name.json" && return 0
  nice -n 19 "$flame" train "${common[@]}" --seed "$seed" --out "$out/$name.ckpt" \
    --state "$out/$name.state" "$@" >> "$out/$name.json" 2>> "$out/$name.log"
}

if [[ ",$jobs," == *,flame-released* || ",$jobs," == *,flame-blo* || ",$jobs," == *,flame-warm* ]]
then # a job against the released anchor
  [ -f "$pt" ] || { echo "bench/quality.sh: no released anchor $pt" >&2; exit 2; }
  "$flame" import-pt --in "$pt" --out "$out/released.ckpt" > /dev/null
fi
wait_slot() { # at most two jobs at once: one per core
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do sleep 5; done
}
declare -A sasrec_pid
IFS=, read -ra seed_list <<< "$seeds"
for s in "${seed_list[@]}"; do
  for j in "${job_list[@]}"; do
    [ "$j" = flame-own ] && continue
    set_args "$j" "$s"
    wait_slot; run "$j" "$s" "${args[@]}" &
    if [ "$j" = sasrec ]; then sasrec_pid[$s]=$!; fi
  done
done
if has flame-own; then
  for s in "${seed_list[@]}"; do
    # needs the sasrec checkpoint of its seed: wait for that job
    [ -n "${sasrec_pid[$s]:-}" ] && { wait "${sasrec_pid[$s]}" || true; }
    set_args flame-own "$s"
    wait_slot; run flame-own "$s" "${args[@]}" &
  done
fi
wait
rm -f "$out"/*.ckpt "$out"/*.state
/usr/bin/python3 "$here/quality_table.py" "$out"
