#!/usr/bin/python3
"""Prints the table of a bench/replay.sh run directory: per policy, NDCG@10 and HR@10 overall
and per segment (new users, new items, returning users), rounds, promotions and training CPU
seconds, as the mean over seeds with a 95% interval (Student's t), then each policy against
`frozen` paired by seed (the same anchor). usage: replay_table.py DIR"""
import glob, json, os, re, statistics, sys

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(v):
    """'mean +- half-width' over seeds (no interval for one seed)."""
    m = statistics.mean(v)
    if len(v) < 2:
        return f"{m:.4f}"
    h = T95.get(len(v) - 1, 1.96) * statistics.stdev(v) / len(v) ** 0.5
    return f"{m:.4f} ± {h:.4f}"


out = sys.argv[1]
runs = {}  # policy -> seed -> result
for f in sorted(glob.glob(os.path.join(out, "*-s*.json"))):
    m = re.fullmatch(r"(.*)-s(\d+)\.json", os.path.basename(f))
    if not m or m.group(1) == "anchor":
        continue
    lines = [l for l in open(f) if l.startswith("{")]
    if lines:
        runs.setdefault(m.group(1), {})[int(m.group(2))] = json.loads(lines[-1])
print(f"results: {out}\n")
order = [p for p in ("frozen", "flame", "ce", "retrain") if p in runs]
first = next(iter(runs[order[0]].values())) if order else None
if first:
    print(f"data {os.path.basename(first['data'])}, split {first['split']['by']} "
          f"{first['split']['frac']}, {first['events']} events streamed; mean ± 95% interval over "
          f"seeds\n")
print("| policy | seeds | NDCG@10 | HR@10 | new users NDCG@10 | new items NDCG@10 | "
      "returning NDCG@10 | rounds (promoted) | training CPU s |")
print("|---|---|---|---|---|---|---|---|---|")
for p in order:
    rs = [runs[p][s] for s in sorted(runs[p])]
    seg = lambda k: ci([r["segments"][k]["NDCG@10"] for r in rs])
    print(f"| {p} | {len(rs)} | {ci([r['NDCG@10'] for r in rs])} | {ci([r['HR@10'] for r in rs])} "
          f"| {seg('new_users')} | {seg('new_items')} | {seg('returning')} | "
          f"{statistics.mean(r['rounds'] for r in rs):.1f} "
          f"({statistics.mean(r['promoted'] for r in rs):.1f}) | "
          f"{statistics.mean(r['cpu_s'] for r in rs):.0f} |")
if "frozen" in runs:
    print("\nPaired by seed against frozen (same anchor): difference in NDCG@10, mean ± 95% interval\n")
    print("| policy | overall | returning users | new users |\n|---|---|---|---|")
    for p in order[1:]:
        seeds = sorted(s for s in runs[p] if s in runs["frozen"])
        if not seeds:
            continue
        d = lambda f: ci([f(runs[p][s]) - f(runs["frozen"][s]) for s in seeds])
        print(f"| {p} | {d(lambda r: r['NDCG@10'])} | "
              f"{d(lambda r: r['segments']['returning']['NDCG@10'])} | "
              f"{d(lambda r: r['segments']['new_users']['NDCG@10'])} |")
