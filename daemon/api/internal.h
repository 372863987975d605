/* daemon/api/internal.h: what the API's files share: the request statistics, the metrics page
 * (metrics.c) and the status page (status.c), both pure functions of the figures the API
 * gathers for them (api.c).
 *
 * The status page (GET / on the API port): one self-contained HTML page, no
 * external assets, no script, refreshed by the browser every 5 s. It shows the serving model
 * (version, age, holdout), the recent training rounds (outcome, loss, holdout NDCG@10 of the
 * candidate and of the model it was measured against), promotions and rejections, the ingest
 * rate, lag and rejected events by reason, with small inline SVG charts. A pure function of
 * the figures it is given: the API gathers them (daemon/api/api.c). */
#ifndef FL_DAEMON_STATUS_H
#define FL_DAEMON_STATUS_H
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "daemon/http/http.h"
#include "daemon/serve/serve.h"
#include "daemon/train/train.h"
#include "stream/stream.h"

/* Events stored so far, sampled at one point in time (for the ingest-rate chart). */
typedef struct {
  double t; /* fl_now() seconds */
  uint64_t stored;
} status_sample;

typedef struct {
  uint64_t version; /* serving model (0: popularity or nothing) */
  int has_model;
  double age_s;                 /* since its round finished (< 0: unknown) */
  double holdout_ndcg10;        /* of the serving model, on its round's holdout */
  size_t items;                 /* its catalogue */
  const trainer_stats *tr;      /* NULL: no trainer */
  const stream_stats *st;       /* NULL: no consumer */
  const status_sample *samples; /* oldest first */
  size_t nsamples;
  double online_ndcg10, online_base_ndcg10; /* < 0: none yet */
} status_input;

/* Appends the page to out. */
void status_page(fl_buf *out, const status_input *in);
/* ---- request statistics (api.c records them, metrics.c prints them) ---- */

/* Routes, for the request metrics. */
enum {
  API__R_RECOMMEND_GET,
  API__R_RECOMMEND_POST,
  API__R_HISTORY,
  API__R_MODEL,
  API__R_HEALTHZ,
  API__R_READYZ,
  API__R_METRICS,
  API__R_STATUS,
  API__R_ADMIN,
  API__R_OTHER,
  API__R_COUNT
};
extern const char *const api__route_names[API__R_COUNT];

/* Latency buckets (seconds) of the request histograms. */
#define API__NLAT 10
extern const double api__lat_le[API__NLAT];
#define API__NCODES 16

typedef struct {
  int code[API__NCODES]; /* statuses seen on this route, 0 = free */
  uint64_t count[API__NCODES];
  uint64_t lat[API__NLAT + 1]; /* per bucket (last: +Inf); cumulated when printed */
  double lat_sum;
  uint64_t lat_n;
} route_stats;

/* ---- the metrics page (metrics.c) ---- */

typedef struct {
  const stream_stats *st;    /* NULL: no consumer */
  const trainer_stats *tr;   /* NULL: no trainer */
  uint64_t version;          /* serving model (0: popularity only) */
  double age_s;              /* since its round finished (0: unknown) */
  uint64_t swaps;            /* publications and rollbacks */
  uint64_t fallbacks;        /* recommendations answered from popularity */
  oeval_sums online;         /* the online evaluation's sums */
  const route_stats *routes; /* (API__R_COUNT) */
  const http_stats *http[2]; /* the api and admin listeners (NULL: off) */
} metrics_input;

/* Appends the Prometheus text (format 0.0.4) of the figures to out. */
void metrics_page(fl_buf *out, const metrics_input *in);
#endif
