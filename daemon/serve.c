/* daemon/serve.c: see serve.h. Scoring one history is one packed forward pass of a single
 * sample (the last position only) and one (1, NI) score row; top-k is a size-k min-heap over
 * that row, so the cost is O(NI log k) beyond the GEMV. */
#include "serve.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

serve_model *serve_model_new(uint64_t version, model_sasrec *net, const uint32_t *popular,
                             size_t npopular) {
  serve_model *s = xcalloc(1, sizeof *s);
  atomic_init(&s->refs, 1);
  s->version = version;
  if (net) {
    s->m = *net;
    memset(net, 0, sizeof *net);
    s->has_net = 1;
  }
  s->popular = xmalloc((npopular ? npopular : 1) * sizeof *s->popular);
  if (npopular) memcpy(s->popular, popular, npopular * sizeof *popular);
  s->npopular = npopular;
  return s;
}

serve_model *serve_model_ref(serve_model *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  return s;
}

void serve_model_unref(serve_model *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
  if (s->has_net) model_free(&s->m);
  free(s->popular);
  free(s);
}

void serve_slot_init(serve_slot *sl) {
  memset(sl, 0, sizeof *sl);
  pthread_mutex_init(&sl->mu, NULL);
}

void serve_slot_free(serve_slot *sl) {
  serve_model_unref(sl->cur);
  serve_model_unref(sl->prev);
  pthread_mutex_destroy(&sl->mu);
}

serve_model *serve_slot_get(serve_slot *sl) {
  pthread_mutex_lock(&sl->mu);
  serve_model *s = sl->cur ? serve_model_ref(sl->cur) : NULL;
  pthread_mutex_unlock(&sl->mu);
  return s;
}

void serve_slot_publish(serve_slot *sl, serve_model *s) {
  pthread_mutex_lock(&sl->mu);
  serve_model *old = sl->prev;
  sl->prev = sl->cur;
  sl->cur = s;
  sl->swaps++;
  pthread_mutex_unlock(&sl->mu);
  serve_model_unref(old); /* outside the lock: freeing a model takes a while */
}

int serve_slot_rollback(serve_slot *sl, serve_model **rolled_back) {
  pthread_mutex_lock(&sl->mu);
  if (!sl->prev) {
    pthread_mutex_unlock(&sl->mu);
    return FL_EMISSING;
  }
  serve_model *bad = sl->cur;
  sl->cur = sl->prev;
  sl->prev = NULL;
  sl->swaps++;
  pthread_mutex_unlock(&sl->mu);
  if (rolled_back)
    *rolled_back = bad;
  else
    serve_model_unref(bad);
  return 0;
}

struct serve_ws {
  model_hparams hp; /* the shape acts was built for */
  model_acts *acts;
  float *scores;
  size_t scores_cap;
  int32_t *tok;
  size_t tok_cap;
  uint32_t *seen; /* sorted copy of the history, for exclusion */
  size_t seen_cap;
};

serve_ws *serve_ws_new(void) { return xcalloc(1, sizeof(serve_ws)); }

void serve_ws_free(serve_ws *w) {
  if (!w) return;
  model_acts_free(w->acts);
  free(w->scores);
  free(w->tok);
  free(w->seen);
  free(w);
}

static void seen_fit(serve_ws *w, size_t n) {
  if (w->seen_cap < n) {
    free(w->seen);
    w->seen = xmalloc(n * sizeof(uint32_t));
    w->seen_cap = n;
  }
}

static void ws_fit(serve_ws *w, const model_sasrec *m, size_t n) {
  if (!w->acts || memcmp(&w->hp, &m->hp, sizeof m->hp) != 0) {
    model_acts_free(w->acts);
    w->acts = model_acts_new(&m->hp, 1, m->hp.L);
    w->hp = m->hp;
  }
  if (w->scores_cap < m->NI) {
    free(w->scores);
    w->scores = xmalloc(m->NI * sizeof(float));
    w->scores_cap = m->NI;
  }
  if (w->tok_cap < m->hp.L) {
    free(w->tok);
    w->tok = xmalloc(m->hp.L * sizeof(int32_t));
    w->tok_cap = m->hp.L;
  }
  seen_fit(w, n);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static int is_seen(const uint32_t *seen, size_t n, uint32_t item) {
  return bsearch(&item, seen, n, sizeof item, cmp_u32) != NULL;
}

/* Min-heap on score (ties: the larger item index is "smaller", so equal scores keep the
 * lower index, deterministically). */
static int worse(const serve_hit *a, const serve_hit *b) {
  return a->score < b->score || (a->score == b->score && a->item > b->item);
}

static void sift_down(serve_hit *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && worse(&h[l], &h[m])) m = l;
    if (r < n && worse(&h[r], &h[m])) m = r;
    if (m == i) return;
    serve_hit t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

static void sift_up(serve_hit *h, size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!worse(&h[i], &h[p])) return;
    serve_hit t = h[i];
    h[i] = h[p];
    h[p] = t;
    i = p;
  }
}

/* Top-k of scores[0..NI) (item = index + 1), skipping seen items and non-finite scores;
 * out sorted best first. */
static size_t top_k(const float *scores, size_t NI, size_t k, const uint32_t *seen, size_t nseen,
                    serve_hit *out) {
  size_t n = 0;
  for (size_t i = 0; i < NI; i++) {
    float s = scores[i];
    if (!isfinite(s)) continue;
    if (n == k && !(s > out[0].score)) continue; /* cheap reject before the seen lookup */
    serve_hit h = {(uint32_t)(i + 1), s};
    if (nseen && is_seen(seen, nseen, h.item)) continue;
    if (n < k) {
      out[n] = h;
      sift_up(out, n++);
    } else if (worse(&out[0], &h)) {
      out[0] = h;
      sift_down(out, n, 0);
    }
  }
  for (size_t m = n; m > 1; m--) { /* heap sort: the worst goes to the end */
    serve_hit t = out[0];
    out[0] = out[m - 1];
    out[m - 1] = t;
    sift_down(out, m - 1, 0);
  }
  return n;
}

/* Appends popular items not yet in out[0..n) (nor seen) until k. */
static size_t fill_popular(const serve_model *s, size_t k, const uint32_t *seen, size_t nseen,
                           serve_hit *out, size_t n) {
  for (size_t i = 0; i < s->npopular && n < k; i++) {
    uint32_t it = s->popular[i];
    if (nseen && is_seen(seen, nseen, it)) continue;
    int dup = 0;
    for (size_t j = 0; j < n && !dup; j++) dup = out[j].item == it;
    if (!dup) out[n++] = (serve_hit){it, -(float)(i + 1)};
  }
  return n;
}

/* Scores every item for hist into w->scores (the newest L items m knows, oldest first).
 * Returns 0 when no item of hist is known to m (nothing scored). */
static int score_history(const model_sasrec *m, serve_ws *w, const uint32_t *hist, size_t n) {
  size_t L = m->hp.L, T = 0;
  for (size_t i = n; i > 0 && T < L; i--)
    if (hist[i - 1] >= 1 && hist[i - 1] <= m->NI) T++;
  if (T == 0) return 0;
  size_t j = T;
  for (size_t i = n; i > 0 && j > 0; i--)
    if (hist[i - 1] >= 1 && hist[i - 1] <= m->NI) w->tok[--j] = (int32_t)hist[i - 1];
  size_t off[2] = {0, T};
  model_batch b = {.B = 1, .T = T, .tok = w->tok, .off = off, .tgt = NULL};
  model_forward(m, w->acts, &b, 0);
  model_scores(m, model_acts_h(w->acts), 1, w->scores);
  return 1;
}

size_t serve_rank(const serve_model *s, serve_ws *w, const uint32_t *hist, size_t n,
                  uint32_t target) {
  const model_sasrec *m = s->has_net ? &s->m : NULL;
  if (m) {
    ws_fit(w, m, n);
    if (score_history(m, w, hist, n)) {
      if (target < 1 || target > m->NI) return SIZE_MAX;
      float t = w->scores[target - 1];
      if (!isfinite(t)) return SIZE_MAX;
      size_t rank = 0;
      for (size_t i = 0; i < m->NI; i++) rank += w->scores[i] > t;
      return rank;
    }
  }
  for (size_t i = 0; i < s->npopular; i++)
    if (s->popular[i] == target) return i;
  return SIZE_MAX;
}

size_t serve_recommend(const serve_model *s, serve_ws *w, const uint32_t *hist, size_t n, size_t k,
                       int exclude_seen, serve_hit *out, int *fallback) {
  *fallback = 1;
  if (k == 0) return 0;
  const model_sasrec *m = s->has_net ? &s->m : NULL;
  if (m)
    ws_fit(w, m, n);
  else
    seen_fit(w, n);
  size_t nseen = 0;
  if (exclude_seen && n) {
    memcpy(w->seen, hist, n * sizeof *hist);
    qsort(w->seen, n, sizeof *hist, cmp_u32);
    nseen = n;
  }
  size_t got = 0;
  if (m && score_history(m, w, hist, n)) {
    got = top_k(w->scores, m->NI, k, w->seen, nseen, out);
    *fallback = 0;
  }
  return fill_popular(s, k, w->seen, nseen, out, got);
}

int serve_params_finite(const model_sasrec *m) {
  float acc = 0.0f;
  for (size_t i = 0; i < m->nparams; i++) acc += m->params[i] * 0.0f; /* NaN/inf poison it */
  return acc == 0.0f;
}
