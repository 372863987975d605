#!/usr/bin/python3
"""bench/plot_online.py CSV SVG [TAIL]: the online (prequential) NDCG@10 over events seen of the
fine-tuned daemon, of the anchor's weights ranking the same events inside it (the paired
baseline, when the CSV has it), and of the frozen daemon, from bench/online.sh's scrape CSV.
Writes a self-contained SVG (no plotting library needed) with two panels: NDCG@10 per window
between scrapes, and cumulative; prints the final cumulative values. TAIL > 0: also the
figures over the events ranked once a daemon had stored more than TAIL events (from the
last scrape at or below it, so a few events before the boundary count too). With the paired
baseline: the mean paired difference (fine-tuned minus anchor's weights on the same events)
and its standard error, the windows between scrapes taken as independent clusters."""
import csv
import sys


def series(rows, who):
    out = []  # (events, window ndcg, cumulative ndcg, cumulative hr)
    pe = pn = 0.0
    for r in rows:
        e, h, n = float(r[f"{who}_events"]), float(r[f"{who}_hits10"]), float(r[f"{who}_ndcg10_sum"])
        if e <= 0:
            continue
        win = (n - pn) / (e - pe) if e > pe else None
        out.append((e, win, n / e, h / e))
        pe, pn = e, n
    return out


def paired(rows):
    """(events, mean of fine-tuned minus baseline NDCG@10, its standard error, windows) over
    the windows between consecutive rows; both rank the same events, so the counts agree."""
    ws = []
    for a, b in zip(rows, rows[1:]):
        n = float(b["tuned_events"]) - float(a["tuned_events"])
        d = (float(b["tuned_ndcg10_sum"]) - float(a["tuned_ndcg10_sum"])) - (
            float(b["baseline_ndcg10_sum"]) - float(a["baseline_ndcg10_sum"]))
        if n > 0:
            ws.append((n, d))
    e = sum(n for n, _ in ws)
    if len(ws) < 2 or e <= 0:
        return None
    m = sum(d for _, d in ws) / e
    var = sum((d - m * n) ** 2 for n, d in ws) * len(ws) / (len(ws) - 1) / e / e
    return e, m, var ** 0.5, len(ws)


def print_paired(rows, what):
    if rows and "baseline_events" in rows[-1]:
        p = paired(rows)
        if p:
            e, m, se, k = p
            print(f"fine-tuned minus anchor's weights (paired), {what}: NDCG@10 {m:+.5f}, standard "
                  f"error {se:.5f} ({m / se if se > 0 else 0:+.1f} SE; {e:.0f} events in {k} windows)")


def panel(x0, y0, w, h, title, curves, ymax, xmax):
    s = [f'<g><rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
         f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="13">{title}</text>']
    for i in range(5):
        v = ymax * i / 4
        y = y0 + h - h * i / 4
        s.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="10">{v:.3f}</text>')
        s.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#eee"/>')
    for i in range(5):
        v = xmax * i / 4
        x = x0 + w * i / 4
        s.append(f'<text x="{x}" y="{y0 + h + 14}" text-anchor="middle" font-size="10">{v / 1000:.0f}k</text>')
    for pts, color in curves:
        pts = [(x0 + w * e / xmax, y0 + h - h * min(v, ymax) / ymax) for e, v in pts if v is not None]
        if pts:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            s.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    s.append("</g>")
    return "\n".join(s)


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    kinds = (("tuned", "#c0392b", "fine-tuned (FLAME rounds)"),
             ("baseline", "#27ae60", "anchor weights, same events (paired)"),
             ("frozen", "#2c3e50", "frozen daemon (training paused)"))
    curves = [(series(rows, k), c, label) for k, c, label in kinds if rows and f"{k}_events" in rows[0]]
    curves = [x for x in curves if x[0]]
    if len(curves) < 2:
        sys.exit("plot_online.py: no online events in " + sys.argv[1])
    xmax = max(s[-1][0] for s, _, _ in curves)
    ymax = max(v for s, _, _ in curves for _, w, c, _ in s for v in (w or 0, c)) * 1.1 or 1.0
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="330" font-family="sans-serif">',
           '<rect width="900" height="330" fill="white"/>',
           panel(60, 40, 360, 220, "online NDCG@10 per window", [([(e, w) for e, w, _, _ in s], c) for s, c, _ in curves], ymax, xmax),
           panel(500, 40, 360, 220, "online NDCG@10, cumulative", [([(e, cu) for e, _, cu, _ in s], c) for s, c, _ in curves], ymax, xmax),
           '<text x="450" y="292" text-anchor="middle" font-size="11">events ranked (a sample of the replayed stream)</text>']
    for i, (_, c, label) in enumerate(curves):
        svg.append(f'<rect x="{60 + i * 280}" y="305" width="12" height="3" fill="{c}"/>'
                   f'<text x="{76 + i * 280}" y="310" font-size="11">{label}</text>')
    svg.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(svg) + "\n")
    for s, _, label in curves:
        e, _, cu, h = s[-1]
        print(f"{label}: {e:.0f} events ranked, online HR@10 {h:.4f}, NDCG@10 {cu:.4f}")
    print_paired([{"tuned_events": 0, "tuned_ndcg10_sum": 0, "baseline_ndcg10_sum": 0}] + rows,
                 "whole replay")
    tail = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if tail > 0:
        for k, _, label in kinds:
            st = "frozen_stored" if k == "frozen" else "tuned_stored"
            if not rows or f"{k}_events" not in rows[0] or st not in rows[0]:
                continue
            base = [r for r in rows if float(r[st]) <= tail]
            b, f = (base[-1] if base else None), rows[-1]
            get = lambda r, c: float(r[f"{k}_{c}"]) if r else 0.0
            e = get(f, "events") - get(b, "events")
            if e > 0:
                print(f"{label}, after {tail} events stored: {e:.0f} events ranked, online HR@10 "
                      f"{(get(f, 'hits10') - get(b, 'hits10')) / e:.4f}, NDCG@10 "
                      f"{(get(f, 'ndcg10_sum') - get(b, 'ndcg10_sum')) / e:.4f}")
        at = max((i for i, r in enumerate(rows) if float(r["tuned_stored"]) <= tail), default=None)
        if at is not None:
            print_paired(rows[at:], f"after {tail} events stored")
    print(f"plot: {sys.argv[2]}")


if __name__ == "__main__":
    main()
