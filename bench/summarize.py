#!/usr/bin/python3
"""Summarise a bench/run.sh results file (also --ratio's) as markdown: per case, the median
step time of each implementation and thread setting, the best of each side and their ratio,
useful GFLOP/s against the measured sgemm throughput, and what packing / last-position buy;
where the file has both methods of flame bench on one thread, the FLAME step against the
SASRec step (medians over the runs: time ratio, FLOP ratio, time / FLOP)."""
import json, os, sys
from collections import defaultdict
from statistics import median

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
sgemm = {r["threads"]: r["gflops"] for r in rows if r.get("impl") == "openblas-sgemm"}
cases = defaultdict(list)
for r in rows:
    if r.get("impl") in ("torch", "flame"):
        cases[(os.path.basename(r["data"]), r["maxlen"], r["method"])].append(r)

print(f"results: {sys.argv[1]}\n")
print("sgemm 1024^3: " + ", ".join(f"{t} thread(s) {g:.1f} GFLOP/s" for t, g in sorted(sgemm.items())) + "\n")
for (data, L, method), rs in cases.items():
    print(f"### {data}, L={L}, {method}, batch {rs[0]['batch']}\n")
    print("| impl | threads | packed | last-only | ms/step | samples/s | useful GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rs:
        packed = r.get("packed", "")
        last = r.get("last_only", "")
        gf = f"{r['useful_gflops']:.1f}" if "useful_gflops" in r else ""
        print(f"| {r['impl']} | {r['threads']} | {packed} | {last} | {1000*r['sec_per_step']:.1f} "
              f"| {r['samples_per_sec']:.0f} | {gf} |")
    torch = [r for r in rs if r["impl"] == "torch"]
    flame = [r for r in rs if r["impl"] == "flame" and r.get("packed") and r.get("last_only")]
    if torch and flame:
        bt = max(torch, key=lambda r: r["samples_per_sec"])
        bf = max(flame, key=lambda r: r["samples_per_sec"])
        ratio = bf["samples_per_sec"] / bt["samples_per_sec"]
        print(f"\nbest torch: {bt['samples_per_sec']:.0f} samples/s ({bt['threads']} thread(s)); "
              f"best flame: {bf['samples_per_sec']:.0f} samples/s ({bf['threads']} thread(s)); "
              f"**ratio {ratio:.2f}x**")
        if bf["threads"] in sgemm:
            print(f"flame useful GFLOP/s {bf['useful_gflops']:.1f} = "
                  f"{100*bf['useful_gflops']/sgemm[bf['threads']]:.0f}% of sgemm at the same threads")
        f1 = [r for r in flame if r["threads"] == 1]
        for name, sel in (("last-only off", lambda r: r.get("packed") and not r.get("last_only")),
                          ("packing off", lambda r: not r.get("packed") and r.get("last_only")),
                          ("both off", lambda r: not r.get("packed") and not r.get("last_only"))):
            v = [r for r in rs if r["impl"] == "flame" and sel(r)]
            if v and f1:
                print(f"- {name}: {1000*v[0]['sec_per_step']:.1f} ms/step, "
                      f"{v[0]['sec_per_step']/f1[0]['sec_per_step']:.2f}x the time of both on (1 thread)")
    print()

# The FLAME step against the SASRec step (issue 3, item 3): flame's own runs, one thread, both
# shortcuts on; medians over the runs of each method, and the spread of the runs' step times.
steps = defaultdict(lambda: defaultdict(list))
for r in rows:
    if r.get("impl") == "flame" and r["threads"] == 1 and r.get("packed") and r.get("last_only"):
        steps[(os.path.basename(r["data"]), r["maxlen"])][r["method"]].append(r)
both = {k: v for k, v in steps.items() if v["sasrec"] and v["flame"]}
if both:
    print("### FLAME step against the SASRec step (flame bench, 1 thread, medians)\n")
    print("| data, L | runs | SASRec ms/step (range) | FLAME ms/step (range) | time ratio "
          "| FLOP ratio (useful GFLOP per step) | time / FLOP ratio |")
    print("|---|---|---|---|---|---|---|")
    for (data, L), m in both.items():
        t = {k: [1000 * r["sec_per_step"] for r in m[k]] for k in ("sasrec", "flame")}
        g = {k: median(r["useful_gflop_per_step"] for r in m[k]) for k in ("sasrec", "flame")}
        tr = median(t["flame"]) / median(t["sasrec"])
        fr = g["flame"] / g["sasrec"]
        print(f"| {data}, {L} | {len(t['sasrec'])} / {len(t['flame'])} "
              f"| {median(t['sasrec']):.2f} ({min(t['sasrec']):.1f}-{max(t['sasrec']):.1f}) "
              f"| {median(t['flame']):.2f} ({min(t['flame']):.1f}-{max(t['flame']):.1f}) "
              f"| {tr:.2f} | {fr:.2f} ({g['flame']:.3f} / {g['sasrec']:.3f}) | **{tr / fr:.2f}** |")
    print()
