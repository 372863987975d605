# bench/curves.py: validation NDCG@20 by epoch of `flame train` logs side by side, epoch times,
# and the first epoch (and seconds) at which each run reaches a few reference figures.
# usage: python3 bench/curves.py RUN.log [RUN.log ...]  (used by RESULTS 7, ml-1m)
import re, sys
pat = re.compile(r"^epoch (\d+):.*val .*NDCG@20 ([0-9.]+)\s+([0-9.]+) s \(train ([0-9.]+) s\)")
runs = {}
for p in sys.argv[1:]:
    runs[p] = {int(m[1]): (float(m[2]), float(m[3]), float(m[4])) for m in map(pat.search, open(p)) if m}
eps = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 63, 70, 72, 77, 80, 83, 90, 92, 97]
print("| epoch | " + " | ".join(runs) + " |")
for e in eps:
    if not any(e in r for r in runs.values()): continue
    print(f"| {e} | " + " | ".join(f"{r[e][0]:.4f}" if e in r else "-" for r in runs.values()) + " |")
for p, r in runs.items():
    best = max(r.items(), key=lambda kv: kv[1][0])
    tt = sorted(v[2] for v in r.values())
    print(f"{p}: {len(r)} epochs, best {best[1][0]:.4f} @ {best[0]}, median train s/epoch {tt[len(tt)//2]:.1f}, "
          f"cum s to best {sum(v[1] for e, v in r.items() if e <= best[0]):.0f}")
    for ref in (0.1723, 0.1751, 0.1781, 0.1805):
        hit = next((e for e in sorted(r) if r[e][0] >= ref), None)
        print(f"   first >= {ref}: " + (f"epoch {hit}, {sum(v[1] for e, v in r.items() if e <= hit):.0f} s" if hit else "-"))
