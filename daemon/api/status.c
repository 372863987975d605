/* daemon/api/status.c: see status.h. Charts are SVG polylines scaled to their own range; every
 * text written here is a number or a fixed string (no client input reaches the page). */
#include "daemon/api/internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "stream/stream.h"

enum { CHART_W = 320, CHART_H = 80 };

/* One line chart: ys[0..n) (NAN = gap) over x = 0..n-1, in color; with the last value and the
 * range as text. id names the figure for tests and links. */
static void chart(fl_buf *b, const char *id, const char *title, const double *ys, size_t n,
                  const char *color, const char *fmt) {
  double lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < n; i++)
    if (isfinite(ys[i])) lo = fmin(lo, ys[i]), hi = fmax(hi, ys[i]);
  fl_buf_printf(b, "<figure id=\"%s\"><figcaption>%s</figcaption>", id, title);
  fl_buf_printf(b,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                "viewBox=\"0 0 %d %d\" role=\"img\"><rect width=\"%d\" height=\"%d\" "
                "fill=\"#fafafa\" stroke=\"#ddd\"/>",
                CHART_W, CHART_H, CHART_W, CHART_H, CHART_W, CHART_H);
  if (n >= 2 && lo <= hi) {
    double span = hi > lo ? hi - lo : 1.0;
    fl_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
    for (size_t i = 0; i < n; i++) {
      if (!isfinite(ys[i])) continue;
      double x = 4 + (CHART_W - 8) * (double)i / (double)(n - 1);
      double y = CHART_H - 6 - (CHART_H - 12) * (ys[i] - lo) / span;
      fl_buf_printf(b, "%.1f,%.1f ", x, y);
    }
    fl_buf_puts(b, "\"/>");
  } else {
    fl_buf_printf(b,
                  "<text x=\"8\" y=\"%d\" font-size=\"12\" fill=\"#888\">not enough data "
                  "yet</text>",
                  CHART_H / 2);
  }
  fl_buf_puts(b, "</svg>");
  if (lo <= hi) {
    char last[32], l[32], h[32];
    double v = NAN;
    for (size_t i = n; i > 0 && !isfinite(v); i--) v = ys[i - 1];
    snprintf(last, sizeof last, fmt, v);
    snprintf(l, sizeof l, fmt, lo);
    snprintf(h, sizeof h, fmt, hi);
    fl_buf_printf(b, "<small>last <b class=\"last\">%s</b>, range %s to %s</small>", last, l, h);
  }
  fl_buf_puts(b, "</figure>\n");
}

static void row(fl_buf *b, const char *id, const char *name, const char *value) {
  fl_buf_printf(b, "<tr><th>%s</th><td id=\"%s\">%s</td></tr>\n", name, id, value);
}

void status_page(fl_buf *b, const status_input *in) {
  char v[160];
  fl_buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 "<meta http-equiv=\"refresh\" content=\"5\"><title>flamed status</title><style>"
                 "body{font:14px sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
                 "th,td{text-align:left;padding:2px 12px 2px 0}th{font-weight:normal;color:#555}"
                 "figure{display:inline-block;margin:0 2em 1em 0}figcaption{color:#555}"
                 ".rounds td{font-variant-numeric:tabular-nums}.promoted{color:#1a7f37}"
                 ".rejected_worse,.rejected_nonfinite,.failed{color:#b42318}"
                 "</style></head><body>\n<h1>flamed</h1>\n<h2>Serving model</h2><table>\n");
  snprintf(v, sizeof v, "%" PRIu64 "%s", in->version,
           !in->has_model ? (in->version ? "" : " (popularity fallback)") : "");
  row(b, "model-version", "version", v);
  if (in->age_s >= 0)
    snprintf(v, sizeof v, "%.0f s", in->age_s);
  else
    snprintf(v, sizeof v, "unknown");
  row(b, "model-age", "age", v);
  snprintf(v, sizeof v, "%zu", in->items);
  row(b, "model-items", "items", v);
  snprintf(v, sizeof v, "%.4f", in->holdout_ndcg10);
  row(b, "model-holdout", "holdout NDCG@10", v);
  if (in->online_ndcg10 >= 0) {
    snprintf(v, sizeof v, "%.4f", in->online_ndcg10);
    row(b, "online-ndcg", "online NDCG@10", v);
  }
  if (in->online_base_ndcg10 >= 0) {
    snprintf(v, sizeof v, "%.4f", in->online_base_ndcg10);
    row(b, "online-baseline", "online NDCG@10 of the anchor's weights", v);
  }
  fl_buf_puts(b, "</table>\n");

  const trainer_stats *t = in->tr;
  if (t) {
    fl_buf_puts(b, "<h2>Training</h2><table>\n");
    snprintf(v, sizeof v, "%" PRIu64 "%s%s", t->rounds, t->paused ? " (paused)" : "",
             t->running ? " (one running)" : "");
    row(b, "rounds", "rounds", v);
    snprintf(v, sizeof v, "%" PRIu64, t->outcomes[TRAINER_PROMOTED]);
    row(b, "promotions", "promoted", v);
    snprintf(v, sizeof v, "%" PRIu64,
             t->outcomes[TRAINER_REJECTED_WORSE] + t->outcomes[TRAINER_REJECTED_NONFINITE]);
    row(b, "rejections", "rejected", v);
    snprintf(v, sizeof v, "%" PRIu64, t->anchor_version);
    row(b, "anchor-version", "anchor version", v);
    fl_buf_puts(b, "</table>\n");
    double loss[TRAINER_HISTORY], cand[TRAINER_HISTORY], serv[TRAINER_HISTORY];
    for (size_t i = 0; i < t->nhistory; i++) {
      const trainer_round *r = &t->history[i];
      int fl = r->outcome == TRAINER_BOOTSTRAPPED || r->outcome == TRAINER_FAILED;
      loss[i] = fl ? NAN : r->f.loss;
      cand[i] = r->f.holdout ? r->f.cand_ndcg10 : NAN;
      serv[i] = r->f.holdout && !fl ? r->f.serv_ndcg10 : NAN;
    }
    chart(b, "chart-loss", "round loss", loss, t->nhistory, "#8250df", "%.3f");
    chart(b, "chart-holdout", "holdout NDCG@10 of each candidate", cand, t->nhistory, "#1f6feb",
          "%.4f");
    chart(b, "chart-serving", "holdout NDCG@10 of the model it replaced", serv, t->nhistory,
          "#57606a", "%.4f");
    fl_buf_puts(b, "<table class=\"rounds\"><tr><th>ended</th><th>outcome</th><th>loss</th>"
                   "<th>candidate NDCG@10</th><th>serving NDCG@10</th><th>seconds</th>"
                   "<th>version</th></tr>\n");
    for (size_t i = t->nhistory; i > 0 && i + 10 > t->nhistory; i--) {
      const trainer_round *r = &t->history[i - 1];
      time_t sec = (time_t)(r->at_ms / 1000);
      struct tm tm;
      char when[32];
      gmtime_r(&sec, &tm);
      strftime(when, sizeof when, "%H:%M:%S UTC", &tm);
      const char *o = trainer_outcome_name(r->outcome);
      fl_buf_printf(b,
                    "<tr><td>%s</td><td class=\"%s\">%s</td><td>%.4f</td><td>%.4f</td>"
                    "<td>%.4f</td><td>%.1f</td><td>%" PRIu64 "</td></tr>\n",
                    when, o, o, r->f.loss, r->f.cand_ndcg10, r->f.serv_ndcg10, r->sec, r->version);
    }
    fl_buf_puts(b, "</table>\n");
  }

  const stream_stats *st = in->st;
  if (st) {
    fl_buf_puts(b, "<h2>Ingest</h2><table>\n");
    double rates[128];
    size_t nr = 0;
    for (size_t i = 1; i < in->nsamples && nr < 128; i++) {
      const status_sample *p = &in->samples[i - 1], *q = &in->samples[i];
      rates[nr++] = q->t > p->t ? (double)(q->stored - p->stored) / (q->t - p->t) : NAN;
    }
    snprintf(v, sizeof v, "%.0f events/s", nr && isfinite(rates[nr - 1]) ? rates[nr - 1] : 0.0);
    row(b, "ingest-rate", "rate", v);
    snprintf(v, sizeof v, "%" PRIu64, st->stored);
    row(b, "ingest-stored", "stored", v);
    if (st->lag >= 0)
      snprintf(v, sizeof v, "%" PRId64 " messages", st->lag);
    else
      snprintf(v, sizeof v, "unknown");
    row(b, "ingest-lag", "lag", v);
    uint64_t rej = 0;
    fl_buf why = {0};
    for (int r = 1; r < STREAM_R_COUNT; r++) {
      rej += st->rejected[r];
      if (st->rejected[r])
        fl_buf_printf(&why, "%s%s %" PRIu64, why.n ? ", " : " (", stream_reason_name(r),
                      st->rejected[r]);
    }
    snprintf(v, sizeof v, "%" PRIu64 "%s%s", rej, why.n ? why.p : "", why.n ? ")" : "");
    fl_buf_free(&why);
    row(b, "ingest-rejected", "rejected", v);
    fl_buf_puts(b, "</table>\n");
    chart(b, "chart-ingest", "ingest rate (events/s)", rates, nr, "#bf8700", "%.0f");
  }
  fl_buf_puts(b, "<p><small>JSON: <a href=\"/v1/model\">/v1/model</a>, Prometheus: <a "
                 "href=\"/metrics\">/metrics</a>. This page refreshes every 5 s.</small></p>\n"
                 "</body></html>\n");
}
