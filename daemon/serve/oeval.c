/* daemon/serve/oeval.c: the online evaluation thread (see oeval.h). */
#define _GNU_SOURCE
#include "common/common.h"
#include "daemon/serve/serve.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  serve_model *s, *base;
  uint32_t *hist;
  size_t n;
  uint32_t target;
} job;

struct oeval {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *q; /* ring of cap jobs: head, then len */
  size_t cap, head, len;
  int stop, nice;
  oeval_sums sums;
};

/* One ranked event into a model's sums (rank: 0-based, SIZE_MAX = not rankable). */
static void add(uint64_t *events, double *hr10, double *ndcg10, size_t rank) {
  (*events)++;
  if (rank < 10) {
    *hr10 += 1;
    *ndcg10 += 1.0 / log2((double)rank + 2.0);
  }
}

static void job_free(job *j) {
  serve_model_unref(j->s);
  serve_model_unref(j->base);
  free(j->hist);
}

static void *run(void *arg) {
  oeval *e = arg;
  fl_thread_setup("eval", e->nice);
  serve_ws *ws = serve_ws_new();
  pthread_mutex_lock(&e->mu);
  for (;;) {
    while (!e->stop && e->len == 0) pthread_cond_wait(&e->cv, &e->mu);
    if (e->stop) break;
    job j = e->q[e->head];
    e->head = (e->head + 1) % e->cap;
    e->len--;
    pthread_mutex_unlock(&e->mu);
    size_t r = serve_rank(j.s, ws, j.hist, j.n, j.target, 1);
    size_t rb = j.base ? serve_rank(j.base, ws, j.hist, j.n, j.target, 1) : 0;
    pthread_mutex_lock(&e->mu); /* both sums at once: their counts stay equal */
    add(&e->sums.events, &e->sums.hr10, &e->sums.ndcg10, r);
    if (j.base) add(&e->sums.base_events, &e->sums.base_hr10, &e->sums.base_ndcg10, rb);
    pthread_mutex_unlock(&e->mu);
    job_free(&j);
    pthread_mutex_lock(&e->mu);
  }
  pthread_mutex_unlock(&e->mu);
  serve_ws_free(ws);
  return NULL;
}

int oeval_new(oeval **out, size_t queue_cap, int nice) {
  oeval *e = xcalloc(1, sizeof *e);
  e->cap = queue_cap ? queue_cap : 1;
  e->q = xcalloc(e->cap, sizeof *e->q);
  e->nice = nice;
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  int rc = pthread_create(&e->th, NULL, run, e);
  if (rc != 0) {
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e->q);
    free(e);
    return -rc;
  }
  *out = e;
  return 0;
}

int oeval_push(oeval *e, serve_model *s, serve_model *base, const uint32_t *hist, size_t n,
               uint32_t target) {
  pthread_mutex_lock(&e->mu);
  if (e->len == e->cap) {
    pthread_mutex_unlock(&e->mu);
    serve_model_unref(s);
    serve_model_unref(base);
    return -EAGAIN;
  }
  job *j = &e->q[(e->head + e->len) % e->cap];
  *j = (job){s, base, xmalloc((n ? n : 1) * sizeof *hist), n, target};
  if (n) memcpy(j->hist, hist, n * sizeof *hist);
  e->len++;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  return 0;
}

void oeval_get(oeval *e, oeval_sums *out) {
  pthread_mutex_lock(&e->mu);
  *out = e->sums;
  pthread_mutex_unlock(&e->mu);
}

void oeval_free(oeval *e) {
  if (!e) return;
  pthread_mutex_lock(&e->mu);
  e->stop = 1;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  pthread_join(e->th, NULL);
  for (size_t i = 0; i < e->len; i++) job_free(&e->q[(e->head + i) % e->cap]);
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  free(e->q);
  free(e);
}
