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
#             flame-released (anchor = the imported flame-anchors/<data>.pt),
#             flame-released-d03 (the same with the learnable network's dropout at 0.3;
#             the anchor keeps 0.5), flame-released-a0 (the same with the anchor's
#             dropout off: --anchor-dropout 0), flame-own (anchor = this run's sasrec of
#             the same seed), flame-blocks (per-block modules, 4 random paths, released anchor),
#             flame-warm (released anchor, warm start)
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

if has flame-released || has flame-released-d03 || has flame-released-a0 || has flame-blocks ||
  has flame-warm; then
  [ -f "$pt" ] || { echo "bench/quality.sh: no released anchor $pt" >&2; exit 2; }
  "$flame" import-pt --in "$pt" --out "$out/released.ckpt" > /dev/null
fi
wait_slot() { # at most two jobs at once: one per core
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do sleep 5; done
}
declare -A sasrec_pid
IFS=, read -ra seed_list <<< "$seeds"
for s in "${seed_list[@]}"; do
  if has sasrec; then
    wait_slot; run sasrec "$s" --method sasrec --maxlen "$maxlen" & sasrec_pid[$s]=$!
  fi
  if has flame-released; then
    wait_slot; run flame-released "$s" --method flame --anchor "$out/released.ckpt" &
  fi
  if has flame-released-d03; then
    wait_slot
    run flame-released-d03 "$s" --method flame --anchor "$out/released.ckpt" --dropout 0.3 &
  fi
  if has flame-released-a0; then
    wait_slot
    run flame-released-a0 "$s" --method flame --anchor "$out/released.ckpt" --anchor-dropout 0 &
  fi
  if has flame-blocks; then
    wait_slot
    run flame-blocks "$s" --method flame --anchor "$out/released.ckpt" --modules blocks --paths 4 &
  fi
  if has flame-warm; then
    wait_slot; run flame-warm "$s" --method flame --anchor "$out/released.ckpt" --init anchor &
  fi
done
if has flame-own; then
  for s in "${seed_list[@]}"; do
    # needs the sasrec checkpoint of its seed: wait for that job
    [ -n "${sasrec_pid[$s]:-}" ] && { wait "${sasrec_pid[$s]}" || true; }
    wait_slot; run flame-own "$s" --method flame --anchor "$out/sasrec-s$s.ckpt" &
  done
fi
wait
rm -f "$out"/*.ckpt "$out"/*.state
/usr/bin/python3 - "$out" <<'PY'
import glob, json, os, re, statistics, sys
out = sys.argv[1]
print(f"results: {out}\n")
print("| job | best epoch / run | test HR@10 | NDCG@10 | HR@20 | NDCG@20 | wall s | to best: s |")
print("|---|---|---|---|---|---|---|---|")
ndcg = {}  # (job, seed) -> test NDCG@20
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(f)[:-5]
    lines = [l for l in open(f) if l.startswith("{")]
    if not lines:
        print(f"| {name} | failed: see its .log | | | | | | |")
        continue
    r = json.loads(lines[-1]); t = r["test"]
    print(f"| {name} | {r['best_epoch']} / {r['epochs']} | {t['HR@10']:.4f} | "
          f"{t['NDCG@10']:.4f} | {t['HR@20']:.4f} | {t['NDCG@20']:.4f} | {r['wall_sec']:.0f} | "
          f"{r['best_sec']:.0f} |")
    job, seed = re.fullmatch(r"(.*)-s(\d+)", name).groups()
    ndcg[job, int(seed)] = t["NDCG@20"]
# each FLAME job against the plain SASRec of its own seed (paired: same seed, same binary)
for job in sorted({j for j, _ in ndcg if j != "sasrec"}):
    seeds = sorted(s for j, s in ndcg if j == job and ("sasrec", s) in ndcg)
    if not seeds:
        continue
    print(f"\n| seed | sasrec NDCG@20 | {job} NDCG@20 | gain |\n|---|---|---|---|")
    gains = []
    for s in seeds:
        a, b = ndcg["sasrec", s], ndcg[job, s]
        gains.append(b / a - 1)
        print(f"| {s} | {a:.4f} | {b:.4f} | {100 * gains[-1]:+.1f}% |")
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    print(f"| mean of {len(gains)} | {statistics.mean(ndcg['sasrec', s] for s in seeds):.4f} | "
          f"{statistics.mean(ndcg[job, s] for s in seeds):.4f} | "
          f"{100 * statistics.mean(gains):+.1f}% (standard error {100 * se:.1f}) |")
PY
