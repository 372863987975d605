#!/usr/bin/python3
"""Prints the table of a quality run directory (bench/quality.sh, bench/quality-ml1m.sh):
per job its best epoch, test HR/NDCG@10/20, wall seconds and seconds to the best validation
NDCG@20, from the last JSON line of each <job>-s<seed>.json; then each other job's test
NDCG@20 against the plain `sasrec` job of the same seed, with the mean gain and its standard
error over the seeds. usage: quality_table.py DIR"""
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
