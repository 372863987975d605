/* daemon/serve/serve.c: see serve.h. Scoring one history is one packed forward pass of a single
 * sample (the last position only), then a scan of the int8 copy of the item table.
 *
 * Why int8: the scan streams the whole table once per request, and it is memory-bound: a
 * float table of 1M items x 64 channels is 256 MB (about 20 ms per request on this class of
 * machine, and a second thread does not help); int8 is a quarter of that, and the integer dot
 * products vectorize.
 *
 * Why it stays exact: with row e = a * qe + de (|de_j| <= a/2) and query h = b * qh + dh
 * (|dh_j| <= b/2), the exact score differs from a * b * <qe, qh> by at most
 *   beta = (b/2) |e|_1 + (a/2) |h|_1 + C a b / 4   (plus float rounding, covered by a slack).
 * Every row gets the interval [lo, hi] = approx -+ beta. T, the k-th largest lo among the
 * eligible rows, is a lower bound of the k-th best exact score, so every row of the true top k
 * has hi >= T: those rows, usually a handful, are scored in float and ranked. */
#include "daemon/serve/serve.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* round(x / a) for |x| <= 127 a, a > 0 (half away from zero: the error stays within a / 2). */
static inline int8_t q8(float x, float inv) {
  float v = fminf(fmaxf(x * inv, -127.0f), 127.0f);
  return (int8_t)(v + copysignf(0.5f, v));
}

/* Quantizes the item table (rows 1..NI) into s->q8, s->q8_scale, s->q8_l1. */
static void quantize_items(serve_model *s) {
  const model_net *m = &s->m;
  size_t C = m->hp.C, NI = m->NI;
  const float *E = model_items(m) + C;   /* row 0 is padding */
  s->q8 = xalloc_aligned_uninit(NI * C); /* huge pages for a big table: see common.h */
  s->q8_scale = xalloc_aligned_uninit(NI * sizeof(float));
  s->q8_l1 = xalloc_aligned_uninit(NI * sizeof(float));
  for (size_t i = 0; i < NI; i++) {
    const float *e = E + i * C;
    float mx = 0.0f, l1 = 0.0f;
    for (size_t j = 0; j < C; j++) {
      mx = fmaxf(mx, fabsf(e[j]));
      l1 += fabsf(e[j]);
      if (!isfinite(e[j])) mx = l1 = NAN;
    }
    float a = mx / 127.0f, inv = a > 0.0f ? 1.0f / a : 0.0f;
    for (size_t j = 0; j < C; j++) s->q8[i * C + j] = q8(e[j], inv);
    s->q8_scale[i] = a;
    s->q8_l1[i] = l1;
  }
}

serve_model *serve_model_new(uint64_t version, model_net *net, const uint32_t *popular,
                             size_t npopular) {
  serve_model *s = xcalloc(1, sizeof *s);
  atomic_init(&s->refs, 1);
  s->version = version;
  if (net) {
    s->m = *net;
    memset(net, 0, sizeof *net);
    s->has_net = 1;
    quantize_items(s);
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
  free(s->q8);
  free(s->q8_scale);
  free(s->q8_l1);
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
  serve_model_unref(sl->base);
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

void serve_slot_set_base(serve_slot *sl, serve_model *s) {
  pthread_mutex_lock(&sl->mu);
  serve_model *old = sl->base;
  sl->base = s;
  pthread_mutex_unlock(&sl->mu);
  serve_model_unref(old);
}

serve_model *serve_slot_get_base(serve_slot *sl) {
  pthread_mutex_lock(&sl->mu);
  serve_model *s = sl->base ? serve_model_ref(sl->base) : NULL;
  pthread_mutex_unlock(&sl->mu);
  return s;
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
  int32_t *tok;
  size_t tok_cap, ntok; /* ntok: the input window encode_history last wrote to tok */
  uint32_t *seen;       /* sorted copy of the history, for exclusion */
  size_t seen_cap;
  int16_t *qh; /* the quantized query (C), widened: int16 x int16 products vectorize best */
  size_t qh_cap;
  serve_hit *lo; /* min-heap of the k largest lower bounds (score = lo) */
  size_t lo_cap;
  serve_hit *cand; /* rows whose upper bound reached the threshold (score = hi until rescored) */
  size_t cand_cap;
};

serve_ws *serve_ws_new(void) { return xcalloc(1, sizeof(serve_ws)); }

void serve_ws_free(serve_ws *w) {
  if (!w) return;
  model_acts_free(w->acts);
  free(w->tok);
  free(w->seen);
  free(w->qh);
  free(w->lo);
  free(w->cand);
  free(w);
}

/* Grows *p (elements of size sz, capacity *cap) to hold n. */
static void fit(void *pp, size_t *cap, size_t n, size_t sz) {
  void **p = pp;
  if (*cap >= n) return;
  free(*p);
  *p = xmalloc(n * sz);
  *cap = n;
}

static void ws_fit(serve_ws *w, const model_net *m, size_t n) {
  if (!w->acts || memcmp(&w->hp, &m->hp, sizeof m->hp) != 0) {
    model_acts_free(w->acts);
    w->acts = model_acts_new(&m->hp, 1, m->hp.L);
    w->hp = m->hp;
  }
  fit(&w->tok, &w->tok_cap, m->hp.L, sizeof(int32_t));
  fit(&w->qh, &w->qh_cap, m->hp.C, sizeof(int16_t));
  fit(&w->seen, &w->seen_cap, n, sizeof(uint32_t));
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

/* Offers h to the size-k min-heap out[0..*n). */
static void heap_offer(serve_hit *out, size_t *n, size_t k, serve_hit h) {
  if (*n < k) {
    out[*n] = h;
    sift_up(out, (*n)++);
  } else if (worse(&out[0], &h)) {
    out[0] = h;
    sift_down(out, *n, 0);
  }
}

/* Heap sort of out[0..n): best first. */
static void heap_sort(serve_hit *out, size_t n) {
  for (size_t m = n; m > 1; m--) { /* the worst goes to the end */
    serve_hit t = out[0];
    out[0] = out[m - 1];
    out[m - 1] = t;
    sift_down(out, m - 1, 0);
  }
}

/* The query's quantization: qh = round(h / b), and the terms of the per-row bound
 * beta_i = g * l1_i + c * a_i (see the top of this file). */
typedef struct {
  float b, g, c;
} qquery;

/* 0, or -1 when h is not finite (nothing can be ranked). */
static int quantize_query(const float *h, size_t C, int16_t *qh, qquery *q) {
  float mx = 0.0f, h1 = 0.0f;
  for (size_t j = 0; j < C; j++) {
    if (!isfinite(h[j])) return -1;
    mx = fmaxf(mx, fabsf(h[j]));
    h1 += fabsf(h[j]);
  }
  float b = mx / 127.0f, inv = b > 0.0f ? 1.0f / b : 0.0f;
  for (size_t j = 0; j < C; j++) qh[j] = q8(h[j], inv);
  /* The slack C * mx * 2^-20 * |e|_1 covers float rounding: that of the float rescoring
   * (C u sum |e_j h_j| <= C u mx |e|_1) and of the approximate score (a relative 2^-23). */
  q->b = b;
  q->g = b / 2.0f + (float)C * mx * 0x1p-20f;
  q->c = h1 / 2.0f + (float)C * b / 4.0f;
  return 0;
}

enum { BLOCK = 256 }; /* rows per scan block: bounds for a block, then the checks */

/* d[i] = <row i, qh> over n rows of C. Inlined where C is a constant, so that a row is a
 * fixed sequence of vector instructions: with a run-time C each row also pays the loop's
 * set-up and remainder handling (RESULTS 15: 12% of a 1M-item request at C = 64). */
static inline __attribute__((always_inline)) void scan_dots(const int8_t *restrict rows,
                                                            const int16_t *restrict qh, size_t C,
                                                            size_t n, int32_t *restrict d) {
  for (size_t i = 0; i < n; i++) {
    int32_t acc = 0;
    for (size_t j = 0; j < C; j++) acc += (int16_t)rows[i * C + j] * qh[j];
    d[i] = acc;
  }
}

/* lo, hi (n) = the score interval of rows i0..i0+n (n <= BLOCK): the dot products first, then
 * the bounds, each a loop the compiler vectorizes. */
static void scan_block(const serve_model *s, const int16_t *qh, const qquery *q, size_t i0,
                       size_t n, float *restrict lo, float *restrict hi) {
  size_t C = s->m.hp.C;
  const int8_t *rows = s->q8 + i0 * C;
  const float *restrict scale = s->q8_scale + i0, *restrict l1 = s->q8_l1 + i0;
  int32_t d[BLOCK];
  if (C == 64) /* the default width (model_hparams_default) and the released anchors' */
    scan_dots(rows, qh, 64, n, d);
  else
    scan_dots(rows, qh, C, n, d);
  for (size_t i = 0; i < n; i++) {
    float approx = scale[i] * q->b * (float)d[i];
    float beta = q->g * l1[i] + q->c * scale[i];
    lo[i] = approx - beta;
    hi[i] = approx + beta;
  }
}

static inline float dot_f(const float *x, const float *y, size_t C) {
  float acc = 0.0f;
  for (size_t j = 0; j < C; j++) acc += x[j] * y[j];
  return acc;
}

/* Keeps the candidates whose upper bound (their score field) reaches t. */
static size_t cand_prune(serve_hit *c, size_t n, float t) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (c[i].score >= t) c[k++] = c[i];
  return k;
}

/* The exact top-k of the model's scores for final hidden state h, skipping seen items. */
static size_t scan_top_k(const serve_model *s, serve_ws *w, const float *h, size_t k,
                         const uint32_t *seen, size_t nseen, serve_hit *out) {
  const model_net *m = &s->m;
  size_t C = m->hp.C, NI = m->NI;
  qquery q;
  if (quantize_query(h, C, w->qh, &q) != 0) return 0;
  fit(&w->lo, &w->lo_cap, k, sizeof(serve_hit));
  size_t nlo = 0, nc = 0, limit = 4 * k + 256;
  fit(&w->cand, &w->cand_cap, limit, sizeof(serve_hit));
  float t = -INFINITY; /* the k-th largest lower bound so far */
  float lo[BLOCK], hi[BLOCK];
  for (size_t i0 = 0; i0 < NI; i0 += BLOCK) {
    size_t nb = NI - i0 < BLOCK ? NI - i0 : BLOCK;
    scan_block(s, w->qh, &q, i0, nb, lo, hi);
    for (size_t i = 0; i < nb; i++) {
      if (!(hi[i] >= t)) continue; /* also skips NaN rows */
      uint32_t item = (uint32_t)(i0 + i + 1);
      if (nseen && is_seen(seen, nseen, item)) continue;
      heap_offer(w->lo, &nlo, k, (serve_hit){item, lo[i]});
      if (nlo == k) t = w->lo[0].score;
      if (nc == limit) { /* drop the candidates the risen threshold rules out, or grow */
        nc = cand_prune(w->cand, nc, t);
        if (nc > limit / 2) {
          limit *= 2;
          w->cand = xrealloc(w->cand, limit * sizeof(serve_hit));
          w->cand_cap = limit;
        }
      }
      w->cand[nc++] = (serve_hit){item, hi[i]};
    }
  }
  nc = cand_prune(w->cand, nc, t);
  const float *E = model_items(m);
  size_t n = 0;
  for (size_t i = 0; i < nc; i++) {
    serve_hit c = {w->cand[i].item, dot_f(E + (size_t)w->cand[i].item * C, h, C)};
    if (isfinite(c.score)) heap_offer(out, &n, k, c);
  }
  heap_sort(out, n);
  return n;
}

/* The number of items whose exact score beats the target's (t), for final hidden state h:
 * rows whose lower bound beats t count at once, rows whose interval holds t are scored. */
static size_t scan_rank(const serve_model *s, serve_ws *w, const float *h, float t) {
  const model_net *m = &s->m;
  size_t C = m->hp.C, NI = m->NI, rank = 0;
  qquery q;
  if (quantize_query(h, C, w->qh, &q) != 0) return SIZE_MAX;
  const float *E = model_items(m) + C;
  float lo[BLOCK], hi[BLOCK];
  for (size_t i0 = 0; i0 < NI; i0 += BLOCK) {
    size_t nb = NI - i0 < BLOCK ? NI - i0 : BLOCK;
    scan_block(s, w->qh, &q, i0, nb, lo, hi);
    for (size_t i = 0; i < nb; i++) {
      if (lo[i] > t)
        rank++;
      else if (hi[i] > t)
        rank += dot_f(E + (i0 + i) * C, h, C) > t;
    }
  }
  return rank;
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

/* The final hidden state for hist (the newest L items m knows, oldest first), or NULL when no
 * item of hist is known to m. */
static const float *encode_history(const model_net *m, serve_ws *w, const uint32_t *hist,
                                   size_t n) {
  size_t L = m->hp.L, T = 0;
  for (size_t i = n; i > 0 && T < L; i--)
    if (hist[i - 1] >= 1 && hist[i - 1] <= m->NI) T++;
  if (T == 0) return NULL;
  size_t j = T;
  for (size_t i = n; i > 0 && j > 0; i--)
    if (hist[i - 1] >= 1 && hist[i - 1] <= m->NI) w->tok[--j] = (int32_t)hist[i - 1];
  w->ntok = T;
  size_t off[2] = {0, T};
  model_batch b = {.B = 1, .T = T, .tok = w->tok, .off = off, .tgt = NULL};
  model_forward(m, w->acts, &b, 0);
  return model_acts_h(w->acts);
}

/* Of rank (items scoring above t), those in the input window w->tok[0..ntok) other than the
 * target, each counted once: scan_rank counted exactly those whose score is above t (its int8
 * lower bound never exceeds the exact score). */
static size_t window_above(const model_net *m, const serve_ws *w, const float *h, float t,
                           uint32_t target) {
  size_t C = m->hp.C, above = 0;
  for (size_t i = 0; i < w->ntok; i++) {
    uint32_t it = (uint32_t)w->tok[i];
    int dup = it == target;
    for (size_t j = 0; j < i && !dup; j++) dup = (uint32_t)w->tok[j] == it;
    if (!dup) above += dot_f(model_items(m) + (size_t)it * C, h, C) > t;
  }
  return above;
}

size_t serve_rank(const serve_model *s, serve_ws *w, const uint32_t *hist, size_t n,
                  uint32_t target, int exclude_window) {
  const model_net *m = s->has_net ? &s->m : NULL;
  if (m) {
    ws_fit(w, m, n);
    const float *h = encode_history(m, w, hist, n);
    if (h) {
      if (target < 1 || target > m->NI) return SIZE_MAX;
      for (size_t i = 0; exclude_window && i < w->ntok; i++)
        if ((uint32_t)w->tok[i] == target) return SIZE_MAX; /* excluded: never a hit */
      float t = dot_f(model_items(m) + (size_t)target * m->hp.C, h, m->hp.C);
      if (!isfinite(t)) return SIZE_MAX;
      size_t rank = scan_rank(s, w, h, t);
      return exclude_window ? rank - window_above(m, w, h, t, target) : rank;
    }
  }
  for (size_t i = 0; i < s->npopular; i++)
    if (s->popular[i] == target) return i;
  return SIZE_MAX;
}

size_t serve_recommend(const serve_model *s, serve_ws *w, const uint32_t *hist, size_t n, size_t k,
                       const serve_filter *f, serve_hit *out, int *fallback) {
  *fallback = 1;
  if (k == 0) return 0;
  const model_net *m = s->has_net ? &s->m : NULL;
  size_t nh = f && f->exclude_seen ? n : 0, nx = f ? f->nitems : 0;
  if (m) ws_fit(w, m, n);
  fit(&w->seen, &w->seen_cap, nh + nx, sizeof(uint32_t));
  /* the excluded items, sorted: the scan and the fill-up look them up */
  size_t nseen = nh + nx;
  if (nh) memcpy(w->seen, hist, nh * sizeof *hist);
  if (nx) memcpy(w->seen + nh, f->items, nx * sizeof *f->items);
  if (nseen) qsort(w->seen, nseen, sizeof *w->seen, cmp_u32);
  size_t got = 0;
  const float *h = m ? encode_history(m, w, hist, n) : NULL;
  if (h) {
    got = scan_top_k(s, w, h, k, w->seen, nseen, out);
    *fallback = 0;
  }
  return fill_popular(s, k, w->seen, nseen, out, got);
}
