/* tests/daemon/serve/test_serve.c: snapshots and top-k recommendation (daemon/serve/serve.h): the
 * top-k of one sequence equals a full sort of the scores the offline engine gives the same window;
 * seen items are excluded; items newer than the snapshot are ignored in the input; popularity
 * stands in without a network or without a known item, and fills up a small catalogue; NaN weights
 * are detected. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "daemon/serve/serve.h"
#include "testutil.h"
#include "tiny_serve.h"

enum { NI = 40 };
/* Serving rescores its candidates with its own dot product; the engine's GEMV sums in another
 * order. They agree to float rounding (scores here are O(1)). */
#define TOL 1e-5f

static serve_model *tiny_snapshot(void) { return tiny_snapshot_of(NI, 7); }

static const serve_filter ex_seen = {.exclude_seen = 1};

/* Reference: the engine's scores for window w (oldest first), all items. */
static void ref_scores(const model_net *m, const int32_t *w, size_t T, float *scores) {
  model_acts *a = model_acts_new(&m->hp, 1, m->hp.L);
  size_t off[2] = {0, T};
  model_batch b = {.B = 1, .T = T, .tok = w, .off = off, .tgt = NULL};
  model_forward(m, a, &b, 0);
  model_scores(m, model_acts_h(a), 1, scores);
  model_acts_free(a);
}

static void test_serve_topk_matches_full_sort(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot();
  serve_ws *w = serve_ws_new();
  /* 9 items, two of them (41, 50) unknown to the snapshot: the newest 6 known form the window */
  uint32_t hist[] = {3, 8, 41, 12, 17, 50, 8, 22, 30};
  int32_t window[] = {8, 12, 17, 8, 22, 30};
  float ref[NI];
  ref_scores(&s->m, window, 6, ref);
  for (int exclude = 0; exclude <= 1; exclude++) {
    serve_hit hits[10];
    int fb = -1;
    size_t n = serve_recommend(s, w, hist, 9, 10, exclude ? &ex_seen : NULL, hits, &fb);
    assert_int_equal(n, 10);
    assert_int_equal(fb, 0);
    for (size_t i = 0; i < n; i++) {
      int in_hist = 0;
      for (size_t j = 0; j < 9; j++) in_hist |= hist[j] == hits[i].item;
      if (exclude) assert_false(in_hist);
      assert_true(fabsf(hits[i].score - ref[hits[i].item - 1]) <= TOL);
      if (i) assert_true(hits[i - 1].score >= hits[i].score);
      /* nothing outside the list scores higher than the last hit (unless excluded) */
    }
    for (uint32_t it = 1; it <= NI; it++) {
      int listed = 0, in_hist = 0;
      for (size_t i = 0; i < n; i++) listed |= hits[i].item == it;
      for (size_t j = 0; j < 9; j++) in_hist |= hist[j] == it;
      if (!listed && !(exclude && in_hist)) assert_true(ref[it - 1] <= hits[n - 1].score + TOL);
    }
  }
  serve_ws_free(w);
  serve_model_unref(s);
}

/* serve_rank agrees with the top-k order, with and without the window; unknown items and
 * popularity. */
static void test_serve_rank(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot();
  serve_ws *w = serve_ws_new();
  uint32_t hist[] = {3, 8, 12};
  serve_hit hits[5];
  int fb;
  assert_int_equal(serve_recommend(s, w, hist, 3, 5, NULL, hits, &fb), 5);
  for (size_t i = 0; i < 5; i++) assert_int_equal(serve_rank(s, w, hist, 3, hits[i].item, 0), i);
  assert_int_equal(serve_rank(s, w, hist, 3, NI + 1, 0), SIZE_MAX);
  /* with the window excluded: the order of serve_recommend's exclude_seen answer (the history
   * is the whole window here), and a window item is a miss */
  assert_int_equal(serve_recommend(s, w, hist, 3, 5, &ex_seen, hits, &fb), 5);
  for (size_t i = 0; i < 5; i++) assert_int_equal(serve_rank(s, w, hist, 3, hits[i].item, 1), i);
  assert_int_equal(serve_rank(s, w, hist, 3, 8, 1), SIZE_MAX);
  uint32_t unknown[] = {77};
  assert_int_equal(serve_rank(s, w, unknown, 1, 9, 0), 1); /* popularity: 5, 9, ... */
  assert_int_equal(serve_rank(s, w, unknown, 1, 33, 0), SIZE_MAX);
  serve_ws_free(w);
  serve_model_unref(s);
}

/* The int8 scan is exact where quantization cannot tell rows apart: 24 near-copies of the
 * query direction of history 0 (differing by 0.1%, well below the int8 step of 0.8% but
 * above float rounding), so they are its top 24 and their order is decided by the float
 * rescoring alone; a zero row and a NaN row (never returned) in a 3,000-item table. top-k for
 * k = 1, 10, 100 equals the full sort of the engine's scores, and serve_rank counts exactly.
 * Run at C = 32 (the scan's loop over a run-time width) and C = 64 (its constant-width path). */
static void check_scan_exact_on_near_ties(size_t C) {
  enum { N = 3000 };
  model_hparams hp;
  model_hparams_default(&hp);
  hp.C = C;
  hp.NL = 1;
  hp.FF = 64;
  hp.L = 8;
  model_net m;
  assert_int_equal(model_init(&m, &hp, N, 11), 0);
  uint32_t hists[3][4] = {{2000, 7, 9, 11}, {2000, 5, 42, 100}, {250, 260, 270, 280}};
  float h[64], top = 0.0f, hn = 0.0f;
  assert_true(C <= 64);
  {
    model_acts *a = model_acts_new(&m.hp, 1, m.hp.L);
    int32_t win[4] = {2000, 7, 9, 11};
    size_t off[2] = {0, 4};
    model_batch b = {.B = 1, .T = 4, .tok = win, .off = off, .tgt = NULL};
    model_forward(&m, a, &b, 0);
    memcpy(h, model_acts_h(a), C * sizeof(float));
    model_acts_free(a);
  }
  float *E = m.p.t[MODEL_T_ITEM];
  for (size_t r = 1; r <= N; r++) {
    float n2 = 0.0f;
    for (size_t j = 0; j < C; j++) n2 += E[r * C + j] * E[r * C + j];
    top = fmaxf(top, sqrtf(n2));
  }
  for (size_t j = 0; j < C; j++) hn += h[j] * h[j];
  fl_rng rng;
  fl_rng_seed(&rng, 99);
  for (size_t r = 100; r < 124; r++) /* rows not in history 0: its query stays h */
    for (size_t j = 0; j < C; j++)
      E[r * C + j] =
          2.0f * top / sqrtf(hn) * h[j] * (1.0f + 1e-3f * (float)(fl_rng_uniform(&rng) - 0.5));
  memset(E + 200 * C, 0, C * sizeof(float));
  E[300 * C + 5] = NAN;
  uint32_t pop[] = {1};
  serve_model *s = serve_model_new(1, &m, pop, 1);
  serve_ws *w = serve_ws_new();
  float *ref = xmalloc(N * sizeof(float));
  for (int hi = 0; hi < 3; hi++) {
    int32_t win[4];
    for (int j = 0; j < 4; j++) win[j] = (int32_t)hists[hi][j];
    ref_scores(&s->m, win, 4, ref);
    size_t ks[] = {1, 10, 100};
    for (int ki = 0; ki < 3; ki++) {
      serve_hit hits[100];
      int fb;
      size_t k = ks[ki], n = serve_recommend(s, w, hists[hi], 4, k, NULL, hits, &fb);
      assert_int_equal(n, k);
      assert_int_equal(fb, 0);
      for (size_t i = 0; i < n; i++) {
        assert_int_not_equal(hits[i].item, 300); /* the NaN row */
        if (hi == 0 && i < 24) assert_true(hits[i].item >= 100 && hits[i].item < 124);
        assert_true(fabsf(hits[i].score - ref[hits[i].item - 1]) <= TOL);
      }
      size_t above = 0; /* items the engine scores clearly above the last hit: none unlisted */
      for (size_t it = 1; it <= N; it++) above += ref[it - 1] > hits[n - 1].score + TOL;
      assert_true(above < k);
    }
    for (uint32_t t = 95; t < 130; t++) {
      size_t lo = 0, hi2 = 0, r = serve_rank(s, w, hists[hi], 4, t, 0);
      for (size_t it = 1; it <= N; it++) {
        lo += ref[it - 1] > ref[t - 1] + TOL;
        hi2 += ref[it - 1] > ref[t - 1] - TOL;
      }
      assert_true(r >= lo && r <= hi2);
    }
  }
  free(ref);
  serve_ws_free(w);
  serve_model_unref(s);
}

static void test_serve_scan_exact_on_near_ties(void **state) {
  (void)state;
  check_scan_exact_on_near_ties(32);
}

static void test_serve_scan_exact_on_near_ties_c64(void **state) {
  (void)state;
  check_scan_exact_on_near_ties(64);
}

static void test_serve_fallbacks(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot();
  serve_ws *w = serve_ws_new();
  serve_hit hits[64];
  int fb;
  /* no known item: popularity, minus the seen ones */
  uint32_t unknown[] = {45, 46};
  assert_int_equal(serve_recommend(s, w, unknown, 2, 3, &ex_seen, hits, &fb), 3);
  assert_int_equal(fb, 1);
  assert_int_equal(hits[0].item, 5);
  assert_int_equal(hits[1].item, 9);
  uint32_t seen5[] = {5};
  serve_model *pop = serve_model_new(0, NULL, s->popular, s->npopular);
  assert_int_equal(serve_recommend(pop, w, seen5, 1, 2, &ex_seen, hits, &fb), 2);
  assert_int_equal(fb, 1);
  assert_int_equal(hits[0].item, 9);
  assert_int_equal(hits[1].item, 1);
  /* k larger than the catalogue: the model's NI items, nothing invented */
  uint32_t h[] = {1, 2};
  assert_int_equal(serve_recommend(s, w, h, 2, 64, NULL, hits, &fb), NI);
  assert_int_equal(fb, 0);
  assert_int_equal(serve_recommend(s, w, h, 2, 64, &ex_seen, hits, &fb), NI - 2);
  assert_int_equal(serve_recommend(s, w, NULL, 0, 0, NULL, hits, &fb), 0);
  serve_model_unref(pop);
  serve_ws_free(w);
  serve_model_unref(s);
}

/* Filters (serve_filter) against brute force on random requests: a 300-item catalogue, random
 * histories, exclusion sets of every size up to the whole catalogue, with and without the
 * history excluded, k from 1 to beyond what is allowed. The answer is the reference's top k of
 * the allowed items: every hit allowed, in score order, nothing allowed left out that scores
 * above the last hit, and min(k, allowed) hits. Without a network, the popularity list obeys
 * the same filter. */
static void test_serve_filters_match_brute_force(void **state) {
  (void)state;
  enum { N = 300, CASES = 400 };
  serve_model *s = tiny_snapshot_of(N, 11);
  uint32_t popl[N];
  for (uint32_t i = 0; i < N; i++) popl[i] = N - i;
  serve_model *pop = serve_model_new(0, NULL, popl, N);
  serve_ws *w = serve_ws_new();
  fl_rng rng;
  fl_rng_seed(&rng, 2029);
  float ref[N];
  uint32_t hist[6], excl[N + 20];
  serve_hit hits[N];
  for (int c = 0; c < CASES; c++) {
    size_t n = 1 + fl_rng_below(&rng, 6), nx = fl_rng_below(&rng, c % 10 == 0 ? N + 20 : 40);
    for (size_t i = 0; i < n; i++) hist[i] = 1 + (uint32_t)fl_rng_below(&rng, N);
    for (size_t i = 0; i < nx; i++) excl[i] = 1 + (uint32_t)fl_rng_below(&rng, N);
    serve_filter f = {.exclude_seen = (int)fl_rng_below(&rng, 2), .items = excl, .nitems = nx};
    uint8_t banned[N + 1] = {0};
    for (size_t i = 0; i < nx; i++) banned[excl[i]] = 1;
    for (size_t i = 0; f.exclude_seen && i < n; i++) banned[hist[i]] = 1;
    size_t allowed = 0;
    for (size_t it = 1; it <= N; it++) allowed += !banned[it];
    size_t k = 1 + fl_rng_below(&rng, c % 7 == 0 ? N : 20), want = k < allowed ? k : allowed;
    int32_t win[6];
    for (size_t i = 0; i < n; i++) win[i] = (int32_t)hist[i];
    ref_scores(&s->m, win, n, ref);
    int fb;
    size_t got = serve_recommend(s, w, hist, n, k, &f, hits, &fb);
    assert_int_equal(fb, 0);
    assert_int_equal(got, want);
    uint8_t listed[N + 1] = {0};
    for (size_t i = 0; i < got; i++) {
      assert_false(banned[hits[i].item]);
      assert_false(listed[hits[i].item]);
      listed[hits[i].item] = 1;
      assert_true(fabsf(hits[i].score - ref[hits[i].item - 1]) <= TOL);
      if (i) assert_true(hits[i - 1].score >= hits[i].score);
    }
    for (size_t it = 1; got && it <= N; it++)
      if (!banned[it] && !listed[it]) assert_true(ref[it - 1] <= hits[got - 1].score + TOL);
    /* popularity: the allowed items in the list's order */
    got = serve_recommend(pop, w, hist, n, k, &f, hits, &fb);
    assert_int_equal(fb, 1);
    assert_int_equal(got, want);
    for (size_t i = 0, at = 0; i < got; i++, at++) {
      while (banned[popl[at]]) at++;
      assert_int_equal(hits[i].item, popl[at]);
    }
  }
  serve_ws_free(w);
  serve_model_unref(pop);
  serve_model_unref(s);
}

static void test_serve_refs_and_finite(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot();
  assert_true(model_params_finite(&s->m));
  serve_model *r = serve_model_ref(s);
  serve_model_unref(s); /* still alive through r (ASan would see a use after free) */
  r->m.params[r->m.nparams / 2] = NAN;
  assert_false(model_params_finite(&r->m));
  r->m.params[r->m.nparams / 2] = INFINITY;
  assert_false(model_params_finite(&r->m));
  serve_model_unref(r);
  serve_model_unref(NULL);
}

int test_serve(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_serve_topk_matches_full_sort),
      cmocka_unit_test(test_serve_rank),
      cmocka_unit_test(test_serve_scan_exact_on_near_ties),
      cmocka_unit_test(test_serve_scan_exact_on_near_ties_c64),
      cmocka_unit_test(test_serve_fallbacks),
      cmocka_unit_test(test_serve_filters_match_brute_force),
      cmocka_unit_test(test_serve_refs_and_finite),
  };
  return cmocka_run_group_tests_name("daemon/serve", tests, NULL, NULL);
}
