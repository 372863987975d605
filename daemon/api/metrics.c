/* daemon/api/metrics.c: the Prometheus page (GET /metrics, text format 0.0.4), a pure function
 * of the figures the API gathers (internal.h): counters and gauges of ingest, training,
 * serving, requests and listeners, with their HELP and TYPE lines. */
#include <inttypes.h>
#include <stdio.h>

#include "common/common.h"
#include "daemon/api/internal.h"
#include "stream/stream.h"

const char *const api__route_names[API__R_COUNT] = {
    "recommend_get", "recommend_post", "history", "model", "healthz",
    "readyz",        "metrics",        "status",  "admin", "other"};
const double api__lat_le[API__NLAT] = {0.0005, 0.001, 0.002, 0.005, 0.01,
                                       0.025,  0.05,  0.1,   0.25,  1.0};

static void hist_ms(fl_buf *b, const char *name, const char *help, const uint64_t *h) {
  static const int le[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
  fl_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  uint64_t cum = 0, total = 0;
  double sum = 0;
  for (int i = 0; i <= STREAM_LAT_MS; i++) {
    total += h[i];
    sum += (double)h[i] * (i + 0.5) / 1000.0;
  }
  size_t j = 0;
  for (int i = 0; i <= STREAM_LAT_MS && j < sizeof le / sizeof *le; i++) {
    cum += h[i];
    if (i + 1 == le[j]) { /* bucket i holds [i, i+1) ms */
      fl_buf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, le[j] / 1000.0, cum);
      j++;
    }
  }
  fl_buf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
                total, name, sum, name, total);
}

/* The five online metrics of one model (prefix "online" or "online_baseline"). */
static void online_metrics(fl_buf *b, const char *pre, const char *who, uint64_t events,
                           double hr10, double ndcg10) {
  double n = events ? (double)events : 1.0;
  fl_buf_printf(b,
                "# HELP flamed_%s_events_total Incoming events ranked by %s before being "
                "applied (prequential evaluation).\n"
                "# TYPE flamed_%s_events_total counter\nflamed_%s_events_total %" PRIu64 "\n"
                "# HELP flamed_%s_hits10_total Of those, events whose item ranked in the top "
                "10.\n# TYPE flamed_%s_hits10_total counter\nflamed_%s_hits10_total %.0f\n"
                "# HELP flamed_%s_ndcg10_sum Sum of their NDCG@10.\n"
                "# TYPE flamed_%s_ndcg10_sum counter\nflamed_%s_ndcg10_sum %.6f\n"
                "# HELP flamed_%s_hr10 Online HR@10 since start.\n"
                "# TYPE flamed_%s_hr10 gauge\nflamed_%s_hr10 %.6f\n"
                "# HELP flamed_%s_ndcg10 Online NDCG@10 since start.\n"
                "# TYPE flamed_%s_ndcg10 gauge\nflamed_%s_ndcg10 %.6f\n",
                pre, who, pre, pre, events, pre, pre, pre, hr10, pre, pre, pre, ndcg10, pre, pre,
                pre, hr10 / n, pre, pre, pre, ndcg10 / n);
}

/* Ingest: counts, lag, the writer, dead letters, latencies. */
static void ingest_metrics(fl_buf *b, const stream_stats *s) {
  fl_buf_printf(b,
                "# HELP flamed_events_consumed_total Kafka messages consumed, every outcome.\n"
                "# TYPE flamed_events_consumed_total counter\nflamed_events_consumed_total %" PRIu64
                "\n# HELP flamed_events_stored_total Events written to the state.\n"
                "# TYPE flamed_events_stored_total counter\nflamed_events_stored_total %" PRIu64
                "\n# HELP flamed_events_filtered_total Events dropped by a type weight of 0.\n"
                "# TYPE flamed_events_filtered_total counter\nflamed_events_filtered_total %" PRIu64
                "\n# HELP flamed_events_rejected_total Malformed events, by reason.\n"
                "# TYPE flamed_events_rejected_total counter\n",
                s->messages, s->stored, s->filtered);
  for (int r = 1; r < STREAM_R_COUNT; r++)
    fl_buf_printf(b, "flamed_events_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
                  stream_reason_name((stream_reason)r), s->rejected[r]);
  fl_buf_printf(b,
                "# HELP flamed_consumer_lag Messages behind the partitions' high watermarks (-1 "
                "unknown).\n# TYPE flamed_consumer_lag gauge\nflamed_consumer_lag %" PRId64 "\n"
                "# HELP flamed_partitions_assigned Kafka partitions this instance owns.\n"
                "# TYPE flamed_partitions_assigned gauge\nflamed_partitions_assigned %d\n"
                "# HELP flamed_state_write_failures_total State writes that failed and were "
                "retried.\n# TYPE flamed_state_write_failures_total counter\n"
                "flamed_state_write_failures_total %" PRIu64 "\n"
                "# HELP flamed_dead_letter_total Rejected events delivered to the dead-letter "
                "topic.\n# TYPE flamed_dead_letter_total counter\nflamed_dead_letter_total %" PRIu64
                "\n",
                s->lag, s->assigned, s->write_failures, s->dlq_sent);
  stream_stats_fault_metrics(b, s);
  hist_ms(b, "flamed_state_write_seconds", "Duration of a state write (one batch).", s->write_ms);
  hist_ms(b, "flamed_ingest_latency_seconds",
          "From an event's Kafka timestamp to its event being durable in the state.", s->lat_ms);
}

/* Training: rounds by outcome, the last round, promotions, the anchor. */
static void train_metrics(fl_buf *b, const trainer_stats *st) {
  fl_buf_printf(b, "# HELP flamed_train_rounds_total Fine-tuning rounds, by outcome.\n"
                   "# TYPE flamed_train_rounds_total counter\n");
  for (int o = 0; o < TRAINER_OUTCOMES; o++)
    fl_buf_printf(b, "flamed_train_rounds_total{outcome=\"%s\"} %" PRIu64 "\n",
                  trainer_outcome_name(o), st->outcomes[o]);
  fl_buf_printf(b,
                "# HELP flamed_train_rounds_declined_total Rounds not run: fewer than "
                "train.min_users users with new events (the next waits for "
                "train.min_new_events more events).\n"
                "# TYPE flamed_train_rounds_declined_total counter\n"
                "flamed_train_rounds_declined_total %" PRIu64 "\n",
                st->skipped);
  fl_buf_printf(
      b,
      "# HELP flamed_train_loss Mean FLAME loss of the last round.\n"
      "# TYPE flamed_train_loss gauge\nflamed_train_loss %g\n"
      "# HELP flamed_train_round_seconds Duration of the last round.\n"
      "# TYPE flamed_train_round_seconds gauge\nflamed_train_round_seconds %g\n"
      "# HELP flamed_train_paused 1 while training is paused.\n"
      "# TYPE flamed_train_paused gauge\nflamed_train_paused %d\n"
      "# HELP flamed_model_promotions_total Candidates promoted to serving.\n"
      "# TYPE flamed_model_promotions_total counter\nflamed_model_promotions_total %" PRIu64
      "\n# HELP flamed_model_rejections_total Candidates rejected, by reason.\n"
      "# TYPE flamed_model_rejections_total counter\n"
      "flamed_model_rejections_total{reason=\"worse\"} %" PRIu64 "\n"
      "flamed_model_rejections_total{reason=\"nonfinite\"} %" PRIu64 "\n"
      "# HELP flamed_anchor_version Version of the frozen anchor (0: none yet).\n"
      "# TYPE flamed_anchor_version gauge\nflamed_anchor_version %" PRIu64 "\n",
      st->rounds ? st->last.f.loss : 0.0, st->rounds ? st->last.sec : 0.0, st->paused,
      st->outcomes[TRAINER_PROMOTED], st->outcomes[TRAINER_REJECTED_WORSE],
      st->outcomes[TRAINER_REJECTED_NONFINITE], st->anchor_version);
  fl_buf_printf(b,
                "# HELP flamed_model_quarantined_total Corrupt checkpoints moved into "
                "<model dir>/corrupt at start.\n# TYPE flamed_model_quarantined_total "
                "counter\nflamed_model_quarantined_total %" PRIu64 "\n",
                st->quarantined);
}

/* Serving: the model, swaps, fallbacks, and the online evaluation. */
static void serve_metrics(fl_buf *b, const metrics_input *in) {
  fl_buf_printf(b,
                "# HELP flamed_model_version Version of the serving model (0: popularity only).\n"
                "# TYPE flamed_model_version gauge\nflamed_model_version %" PRIu64 "\n"
                "# HELP flamed_model_age_seconds Seconds since the serving model was trained.\n"
                "# TYPE flamed_model_age_seconds gauge\nflamed_model_age_seconds %.3f\n"
                "# HELP flamed_model_swaps_total Publications and rollbacks of serving models.\n"
                "# TYPE flamed_model_swaps_total counter\nflamed_model_swaps_total %" PRIu64 "\n"
                "# HELP flamed_recommend_fallbacks_total Recommendations answered from "
                "popularity.\n# TYPE flamed_recommend_fallbacks_total counter\n"
                "flamed_recommend_fallbacks_total %" PRIu64 "\n",
                in->version, in->age_s, in->swaps, in->fallbacks);
  const oeval_sums on = in->online;
  online_metrics(b, "online", "the serving model", on.events, on.hr10, on.ndcg10);
  if (on.base_events)
    online_metrics(b, "online_baseline", "the anchor's weights (the baseline)", on.base_events,
                   on.base_hr10, on.base_ndcg10);
}

/* Requests by route and status, and their latencies. */
static void request_metrics(fl_buf *b, const route_stats *rs) {
  fl_buf_printf(b, "# HELP flamed_http_requests_total HTTP requests, by route and status.\n"
                   "# TYPE flamed_http_requests_total counter\n");
  for (int r = 0; r < API__R_COUNT; r++)
    for (int c = 0; c < API__NCODES && rs[r].code[c]; c++)
      fl_buf_printf(b, "flamed_http_requests_total{route=\"%s\",code=\"%d\"} %" PRIu64 "\n",
                    api__route_names[r], rs[r].code[c], rs[r].count[c]);
  fl_buf_printf(b, "# HELP flamed_http_request_duration_seconds Time to answer a request, by "
                   "route (parsing to response queued).\n"
                   "# TYPE flamed_http_request_duration_seconds histogram\n");
  for (int r = 0; r < API__R_COUNT; r++) {
    const route_stats *q = &rs[r];
    if (!q->lat_n) continue;
    uint64_t cum = 0;
    for (size_t i = 0; i < API__NLAT; i++) {
      cum += q->lat[i];
      fl_buf_printf(
          b, "flamed_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %" PRIu64 "\n",
          api__route_names[r], api__lat_le[i], cum);
    }
    fl_buf_printf(b,
                  "flamed_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %" PRIu64
                  "\nflamed_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                  "flamed_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
                  api__route_names[r], q->lat_n, api__route_names[r], q->lat_sum,
                  api__route_names[r], q->lat_n);
  }
}

/* The listeners: connections, refusals, timeouts. */
static void listener_metrics(fl_buf *b, const http_stats *const hs[2]) {
  static const char *const which[2] = {"api", "admin"};
  fl_buf_printf(b, "# HELP flamed_http_connections_open Open connections, by listener.\n"
                   "# TYPE flamed_http_connections_open gauge\n");
  for (int i = 0; i < 2; i++)
    if (hs[i])
      fl_buf_printf(b, "flamed_http_connections_open{listener=\"%s\"} %zu\n", which[i],
                    hs[i]->open);
  fl_buf_printf(b, "# HELP flamed_http_refused_total Requests refused before routing (bad "
                   "framing, limits, connection cap), by listener.\n"
                   "# TYPE flamed_http_refused_total counter\n");
  for (int i = 0; i < 2; i++)
    if (hs[i])
      fl_buf_printf(b, "flamed_http_refused_total{listener=\"%s\"} %" PRIu64 "\n", which[i],
                    hs[i]->bad_requests);
  fl_buf_printf(b, "# HELP flamed_http_connections_refused_total Connections answered 503 on "
                   "accept, by listener and cap (api.max_conns, api.max_conns_per_peer).\n"
                   "# TYPE flamed_http_connections_refused_total counter\n");
  for (int i = 0; i < 2; i++)
    if (hs[i])
      fl_buf_printf(b,
                    "flamed_http_connections_refused_total{listener=\"%s\",reason=\"max_conns\"} "
                    "%" PRIu64 "\n"
                    "flamed_http_connections_refused_total{listener=\"%s\",reason=\"max_conns_"
                    "per_peer\"} %" PRIu64 "\n",
                    which[i], hs[i]->refused_full, which[i], hs[i]->refused_peer);
  fl_buf_printf(b, "# HELP flamed_http_connections_timed_out_total Connections closed by a "
                   "timeout, by listener and timeout (header: api.header_timeout_ms, request: "
                   "api.request_timeout_ms, idle: api.idle_timeout_ms).\n"
                   "# TYPE flamed_http_connections_timed_out_total counter\n");
  for (int i = 0; i < 2; i++)
    if (hs[i])
      fl_buf_printf(b,
                    "flamed_http_connections_timed_out_total{listener=\"%s\",timeout=\"header\"} "
                    "%" PRIu64 "\n"
                    "flamed_http_connections_timed_out_total{listener=\"%s\",timeout=\"request\"} "
                    "%" PRIu64 "\n"
                    "flamed_http_connections_timed_out_total{listener=\"%s\",timeout=\"idle\"} "
                    "%" PRIu64 "\n",
                    which[i], hs[i]->closed_header, which[i], hs[i]->closed_timeout, which[i],
                    hs[i]->closed_idle);
}

void metrics_page(fl_buf *b, const metrics_input *in) {
  if (in->st) ingest_metrics(b, in->st);
  if (in->tr) train_metrics(b, in->tr);
  serve_metrics(b, in);
  request_metrics(b, in->routes);
  listener_metrics(b, in->http);
}
