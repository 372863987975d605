/* daemon/api/internal.h: the status page (GET / on the API port): one self-contained HTML page, no
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
#include "daemon/train/train.h"
#include "stream/consumer.h"

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
#endif
