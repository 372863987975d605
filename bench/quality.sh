#!/usr/bin/env bash
# bench/quality.sh: the quality experiments of issues 2 and 3 as one reproducible run.
#
# Runs `flame train` jobs (two at a time on two cores, one BLAS thread each), each writing
# its JSON line and per-epoch log under bench/results/quality-<stamp>/, then prints a table:
# best epoch, test HR/NDCG@10/20, wall seconds, and the convergence speed (epochs and
# seconds to the best validation NDCG@20).
#
# usage: bench/quality.sh [--data FILE] [--maxlen L] [--epochs N] [--jobs LIST] [--build DIR]
#   --jobs    comma list of: sasrec (from scratch; also the anchor of flame-own),
#             flame-released (anchor = the imported flame-anchors/<data>.pt),
#             flame-own (anchor = this run's sasrec), flame-blocks (per-block modules,
#             4 random paths, released anchor), flame-warm (released anchor, warm start)
#             default: sasrec,flame-released,flame-own
#   --data    default ../shared/data/amazon-beauty.txt; --protocol flame throughout
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
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift ;;
    --maxlen) maxlen="$2"; shift ;;
    --epochs) epochs="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --build) build="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench/quality.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
flame="$build/flame"
[ -x "$flame" ] || { echo "bench/quality.sh: $flame not built" >&2; exit 2; }
out="$here/results/quality-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "# writing $out" >&2
common=(--data "$data" --protocol flame --threads 1 --epochs "$epochs" --seed 42)
pt="$shared/data/flame-anchors/$(basename "${data%.txt}").pt"
has() { [[ ",$jobs," == *",$1,"* ]]; }

run() { # name, then flame train arguments
  local name="$1"; shift
  "$flame" train "${common[@]}" --out "$out/$name.ckpt" "$@" > "$out/$name.json" 2> "$out/$name.log"
}

if has flame-released || has flame-blocks || has flame-warm; then
  [ -f "$pt" ] || { echo "bench/quality.sh: no released anchor $pt" >&2; exit 2; }
  "$flame" import-pt --in "$pt" --out "$out/released.ckpt" > /dev/null
fi
pids=()
wait_slot() { # at most two jobs at once: one per core
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do sleep 5; done
}
if has sasrec; then run sasrec --method sasrec --maxlen "$maxlen" & pids+=($!); fi
if has flame-released; then
  wait_slot; run flame-released --method flame --anchor "$out/released.ckpt" & pids+=($!)
fi
if has flame-own; then
  # needs this run's sasrec checkpoint: wait for it
  [ -n "${pids[0]:-}" ] && wait "${pids[0]}"
  wait_slot; run flame-own --method flame --anchor "$out/sasrec.ckpt" & pids+=($!)
fi
if has flame-blocks; then
  wait_slot
  run flame-blocks --method flame --anchor "$out/released.ckpt" --modules blocks --paths 4 &
  pids+=($!)
fi
if has flame-warm; then
  wait_slot; run flame-warm --method flame --anchor "$out/released.ckpt" --init anchor & pids+=($!)
fi
wait
rm -f "$out"/*.ckpt
/usr/bin/python3 - "$out" <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
print(f"results: {out}\n")
print("| job | best epoch / run | test HR@10 | NDCG@10 | HR@20 | NDCG@20 | wall s | to best: s |")
print("|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    lines = [l for l in open(f) if l.startswith("{")]
    if not lines:
        print(f"| {os.path.basename(f)[:-5]} | failed: see its .log | | | | | | |")
        continue
    r = json.loads(lines[-1]); t = r["test"]
    print(f"| {os.path.basename(f)[:-5]} | {r['best_epoch']} / {r['epochs']} | {t['HR@10']:.4f} | "
          f"{t['NDCG@10']:.4f} | {t['HR@20']:.4f} | {t['NDCG@20']:.4f} | {r['wall_sec']:.0f} | "
          f"{r['best_sec']:.0f} |")
PY
