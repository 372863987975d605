#!/usr/bin/env bash
# bench/parity.sh: flame's FLAME loss and gradient against the PyTorch reference's
# (../shared/bench/torch_ref.py flame_loss), on the same weights and samples.
#
# On a small synthetic dataset (every training sample in one batch, dropout off on both
# networks): a SASRec anchor trained by flame, a learnable network at flame's random start;
# `flame train --method flame` for one step at lr 1e-9 reports the loss at the start and
# writes the learnable network, and bench/parity.py computes torch_ref's loss on those
# weights. Cases: L=8 (windows cut to L) at tau 1, L=50 at tau 2 and 5. For the L=50 tau-2 case
# it also takes one Adam step at lr 1e-3: Adam's first step moves each parameter by
# lr g / (|g| + 1e-8), so the step must agree with the sign of the reference's gradient g
# everywhere |g| > 1e-5 (through the frozen anchor encoder and the pair weights).
# Fails (exit 1) on a loss more than 1e-5 apart (relative) or a step that disagrees.
#
# usage: bench/parity.sh [--build DIR]
# Needs python3-torch (scripts/setup.sh --bench). Never run by CI; seconds of CPU.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$(dirname "$here")/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift ;;
    -h|--help) sed -n '/^set -/q; 2,$p' "$0"; exit 0 ;;
    *) echo "bench/parity.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_need bench/parity.sh torch
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

"$flame" synth --out d.txt --users 60 --items 40 --mean-len 12 --seed 3 > /dev/null
common=(--data d.txt --dropout 0 --batch 1024 --epochs 1)
flame_step() { # L TAU LR NAME: one FLAME step against anchor-L.ckpt: NAME.ckpt, NAME.json
  "$flame" train "${common[@]}" --method flame --anchor "anchor-$1.ckpt" --tau "$2" --lr "$3" \
    --lambda0 1 --lambda-r 1 --seed 2 --out "$4.ckpt" > "$4.json" 2> /dev/null
}
fail=0
for c in "8 1" "50 2" "50 5"; do
  set -- $c
  [ -f "anchor-$1.ckpt" ] || "$flame" train "${common[@]}" --method sasrec --epochs 3 --lr 0.01 \
    --maxlen "$1" --seed 1 --out "anchor-$1.ckpt" > /dev/null 2>&1
  flame_step "$1" "$2" 1e-9 "start-$1-$2"
  args=(d.txt "anchor-$1.ckpt" "start-$1-$2.ckpt" "start-$1-$2.json" "$2")
  if [ "$c" = "50 2" ]; then
    flame_step "$1" "$2" 1e-3 "step-$1-$2"
    args+=("step-$1-$2.ckpt" 1e-3)
  fi
  "$python" "$here/parity.py" "${args[@]}" || fail=1
done
exit "$fail"
