#!/usr/bin/python3
"""Prints the table of a bench/replay.sh run directory: per policy, NDCG@10 and HR@10 overall
and per segment (new users, new items, returning users), rounds, promotions and training CPU
seconds, as the mean over seeds with a 95% interval (Student's t), then each policy against
`frozen` paired by seed (the same anchor), and flame against ce. Policies other than the four
(e.g. a renamed run with other settings, flame_lr3-s1.json) are listed after them. The
returning_idle segment (returning users back after a while) shows where the JSON has it.
usage: replay_table.py DIR"""
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
known = ("frozen", "flame", "ce", "retrain")
order = [p for p in known if p in runs] + sorted(p for p in runs if p not in known)
first = next(iter(runs[order[0]].values())) if order else None
if first:
    print(f"data {os.path.basename(first['data'])}, split {first['split']['by']} "
          f"{first['split']['frac']}, {first['events']} events streamed; mean ± 95% interval over "
          f"seeds\n")
print("| policy | seeds | NDCG@10 | HR@10 | new users NDCG@10 | new items NDCG@10 | "
      "returning NDCG@10 | idle returning NDCG@10 | rounds (promoted) | training CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for p in order:
    rs = [runs[p][s] for s in sorted(runs[p])]
    seg = lambda k: ci([r["segments"][k]["NDCG@10"] for r in rs]) if all(
        k in r["segments"] for r in rs) else "-"
    print(f"| {p} | {len(rs)} | {ci([r['NDCG@10'] for r in rs])} | {ci([r['HR@10'] for r in rs])} "
          f"| {seg('new_users')} | {seg('new_items')} | {seg('returning')} | {seg('returning_idle')} | "
          f"{statistics.mean(r['rounds'] for r in rs):.1f} "
          f"({statistics.mean(r['promoted'] for r in rs):.1f}) | "
          f"{statistics.mean(r['cpu_s'] for r in rs):.0f} |")


def paired(base, names):
    """Each policy of names minus base, paired by seed, overall and per segment."""
    print(f"\nPaired by seed against {base} (same anchor): difference in NDCG@10, mean ± 95% "
          "interval\n")
    print("| policy | overall | returning users | idle returning | new users |\n|---|---|---|---|---|")
    for p in names:
        seeds = sorted(s for s in runs[p] if s in runs[base])
        if not seeds:
            continue
        d = lambda f: ci([f(runs[p][s]) - f(runs[base][s]) for s in seeds])
        g = lambda k: d(lambda r: r["segments"][k]["NDCG@10"]) if all(
            k in runs[q][s]["segments"] for q in (p, base) for s in seeds) else "-"
        print(f"| {p} | {d(lambda r: r['NDCG@10'])} | {g('returning')} | {g('returning_idle')} | "
              f"{g('new_users')} |")


if "frozen" in runs:
    paired("frozen", [p for p in order if p != "frozen"])
if "ce" in runs:
    paired("ce", [p for p in order if p.startswith("flame")])
