#!/usr/bin/python3
"""bench/plot_online.py CSV SVG: the online (prequential) NDCG@10 of the fine-tuned and the
frozen daemon over events seen, from bench/online.sh's scrape CSV. Writes a self-contained SVG
(no plotting library needed) with two panels: NDCG@10 per window between scrapes, and
cumulative; prints the final cumulative values of both."""
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
    tuned, frozen = series(rows, "tuned"), series(rows, "frozen")
    if not tuned or not frozen:
        sys.exit("plot_online.py: no online events in " + sys.argv[1])
    xmax = max(tuned[-1][0], frozen[-1][0])
    ymax = max(v for s in (tuned, frozen) for _, w, c, _ in s for v in (w or 0, c)) * 1.1 or 1.0
    colors = (("#c0392b", "fine-tuned (FLAME rounds)"), ("#2c3e50", "frozen (anchor weights only)"))
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="330" font-family="sans-serif">',
           '<rect width="900" height="330" fill="white"/>',
           panel(60, 40, 360, 220, "online NDCG@10 per window", [([(e, w) for e, w, _, _ in tuned], colors[0][0]), ([(e, w) for e, w, _, _ in frozen], colors[1][0])], ymax, xmax),
           panel(500, 40, 360, 220, "online NDCG@10, cumulative", [([(e, c) for e, _, c, _ in tuned], colors[0][0]), ([(e, c) for e, _, c, _ in frozen], colors[1][0])], ymax, xmax),
           '<text x="450" y="292" text-anchor="middle" font-size="11">events ranked (a sample of the replayed stream)</text>']
    for i, (c, label) in enumerate(colors):
        svg.append(f'<rect x="{250 + i * 230}" y="305" width="12" height="3" fill="{c}"/>'
                   f'<text x="{266 + i * 230}" y="310" font-size="11">{label}</text>')
    svg.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(svg) + "\n")
    for name, s in (("fine-tuned", tuned), ("frozen", frozen)):
        e, _, c, h = s[-1]
        print(f"{name}: {e:.0f} events ranked, online HR@10 {h:.4f}, NDCG@10 {c:.4f}")
    print(f"plot: {sys.argv[2]}")


if __name__ == "__main__":
    main()
