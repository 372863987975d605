#!/usr/bin/python3
"""Issue 28 item 5: does the real daemon agree with `flame replay`? Reads the daemon's runs
(bench/daemon_replay.sh: daemon-s<seed>.json, frozen-s<seed>.json in DAEMON_DIR) and the
replays of the same anchors (flame replay: flame-s<seed>.json, frozen-s<seed>.json in
REPLAY_DIR) and compares each daemon figure with the replay's with_history segment: the events
of users with stored history, which are the ones the daemon's online evaluation ranks (it skips
a user's first event; the replay ranks those by popularity).

Per seed: both NDCG@10 and HR@10 and their difference. Then, over seeds, the mean difference
with its standard error (paired by seed); and, per run, the standard error of an HR@10 over its
events (a proportion: sqrt(p (1 - p) / n)), the noise of one run's figure. The two agree when
the difference is within two standard errors.
usage: daemon_replay_table.py DAEMON_DIR REPLAY_DIR"""
import json, math, os, statistics, sys


def load(path):
    if not os.path.exists(path):
        return None
    lines = [l for l in open(path) if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def hist(r):
    """The replay's figures on the events with stored history."""
    s = r["segments"]["with_history"]
    return s["events"], s["NDCG@10"], s["HR@10"]


dd, rd = sys.argv[1], sys.argv[2]
print(f"daemon runs: {dd}\nreplays: {rd}\n")
for daemon, replay in (("daemon", "flame"), ("frozen", "frozen")):
    rows = []
    for seed in range(1, 10):
        d = load(os.path.join(dd, f"{daemon}-s{seed}.json"))
        r = load(os.path.join(rd, f"{replay}-s{seed}.json"))
        if d and r:
            n, nd, hr = hist(r)
            rows.append((seed, d["events"], d["NDCG@10"], d["HR@10"], n, nd, hr))
    if not rows:
        continue
    name = "tuned daemon vs flame replay" if daemon == "daemon" else "frozen daemon vs frozen replay"
    print(f"### {name}\n")
    print("| seed | daemon events | daemon NDCG@10 | replay events | replay NDCG@10 | difference "
          "| daemon HR@10 | replay HR@10 | difference | SE of one HR@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed, de, dn, dh, re_, rn, rh in rows:
        se = math.sqrt(rh * (1 - rh) / re_)
        print(f"| {seed} | {de} | {dn:.4f} | {re_} | {rn:.4f} | {dn - rn:+.4f} | {dh:.4f} | "
              f"{rh:.4f} | {dh - rh:+.4f} | {se:.4f} |")
    # the noise of the mean of k runs' HR@10 difference, were the two runs independent
    ev = math.sqrt(sum(r[6] * (1 - r[6]) / r[4] + r[3] * (1 - r[3]) / r[1] for r in rows)) / len(rows)
    for what, i, j in (("NDCG@10", 2, 5), ("HR@10", 3, 6)):
        diff = [row[i] - row[j] for row in rows]
        m = statistics.mean(diff)
        line = f"\n{what}: daemon - replay {m:+.4f}"
        if len(diff) > 1:
            se = statistics.stdev(diff) / math.sqrt(len(diff))
            line += (f"; standard error over {len(diff)} seeds (paired) {se:.4f}: "
                     f"{'within' if abs(m) <= 2 * se else 'NOT within'} two")
        if what == "HR@10":
            line += (f"; standard error from the events {ev:.4f}: "
                     f"{'within' if abs(m) <= 2 * ev else 'NOT within'} two")
        print(line)
    print()
