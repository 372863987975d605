/* tests/daemon/test_serve.c: snapshots and top-k recommendation (daemon/serve.h): the top-k of
 * one sequence equals a full sort of the scores the offline engine gives the same window;
 * seen items are excluded; items newer than the snapshot are ignored in the input; popularity
 * stands in without a network or without a known item, and fills up a small catalogue; NaN
 * weights are detected. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "daemon/serve.h"
#include "testutil.h"

enum { NI = 40 };

static serve_model *tiny_snapshot(void) {
  model_hparams hp;
  model_hparams_default(&hp);
  hp.C = 16;
  hp.NL = 1;
  hp.FF = 32;
  hp.L = 6;
  model_sasrec m;
  assert_int_equal(model_init(&m, &hp, NI, 7), 0);
  uint32_t pop[] = {5, 9, 1, 2, 3, 4, 6, 7};
  return serve_model_new(3, &m, pop, 8);
}

/* Reference: the engine's scores for window w (oldest first), all items. */
static void ref_scores(const model_sasrec *m, const int32_t *w, size_t T, float *scores) {
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
    size_t n = serve_recommend(s, w, hist, 9, 10, exclude, hits, &fb);
    assert_int_equal(n, 10);
    assert_int_equal(fb, 0);
    for (size_t i = 0; i < n; i++) {
      int in_hist = 0;
      for (size_t j = 0; j < 9; j++) in_hist |= hist[j] == hits[i].item;
      if (exclude) assert_false(in_hist);
      assert_true(hits[i].score == ref[hits[i].item - 1]);
      if (i) assert_true(hits[i - 1].score >= hits[i].score);
      /* nothing outside the list scores higher than the last hit (unless excluded) */
    }
    for (uint32_t it = 1; it <= NI; it++) {
      int listed = 0, in_hist = 0;
      for (size_t i = 0; i < n; i++) listed |= hits[i].item == it;
      for (size_t j = 0; j < 9; j++) in_hist |= hist[j] == it;
      if (!listed && !(exclude && in_hist)) assert_true(ref[it - 1] <= hits[n - 1].score);
    }
  }
  serve_ws_free(w);
  serve_model_unref(s);
}

/* serve_rank agrees with the top-k order; unknown items and popularity. */
static void test_serve_rank(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot();
  serve_ws *w = serve_ws_new();
  uint32_t hist[] = {3, 8, 12};
  serve_hit hits[5];
  int fb;
  assert_int_equal(serve_recommend(s, w, hist, 3, 5, 0, hits, &fb), 5);
  for (size_t i = 0; i < 5; i++) assert_int_equal(serve_rank(s, w, hist, 3, hits[i].item), i);
  assert_int_equal(serve_rank(s, w, hist, 3, NI + 1), SIZE_MAX);
  uint32_t unknown[] = {77};
  assert_int_equal(serve_rank(s, w, unknown, 1, 9), 1); /* popularity: 5, 9, ... */
  assert_int_equal(serve_rank(s, w, unknown, 1, 33), SIZE_MAX);
  serve_ws_free(w);
  serve_model_unref(s);
}

static void test_serve_fallbacks(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot();
  serve_ws *w = serve_ws_new();
  serve_hit hits[64];
  int fb;
  /* no known item: popularity, minus the seen ones */
  uint32_t unknown[] = {45, 46};
  assert_int_equal(serve_recommend(s, w, unknown, 2, 3, 1, hits, &fb), 3);
  assert_int_equal(fb, 1);
  assert_int_equal(hits[0].item, 5);
  assert_int_equal(hits[1].item, 9);
  uint32_t seen5[] = {5};
  serve_model *pop = serve_model_new(0, NULL, s->popular, s->npopular);
  assert_int_equal(serve_recommend(pop, w, seen5, 1, 2, 1, hits, &fb), 2);
  assert_int_equal(fb, 1);
  assert_int_equal(hits[0].item, 9);
  assert_int_equal(hits[1].item, 1);
  /* k larger than the catalogue: the model's NI items, nothing invented */
  uint32_t h[] = {1, 2};
  assert_int_equal(serve_recommend(s, w, h, 2, 64, 0, hits, &fb), NI);
  assert_int_equal(fb, 0);
  assert_int_equal(serve_recommend(s, w, h, 2, 64, 1, hits, &fb), NI - 2);
  assert_int_equal(serve_recommend(s, w, NULL, 0, 0, 0, hits, &fb), 0);
  serve_model_unref(pop);
  serve_ws_free(w);
  serve_model_unref(s);
}

static void test_serve_refs_and_finite(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot();
  assert_true(serve_params_finite(&s->m));
  serve_model *r = serve_model_ref(s);
  serve_model_unref(s); /* still alive through r (ASan would see a use after free) */
  r->m.params[r->m.nparams / 2] = NAN;
  assert_false(serve_params_finite(&r->m));
  r->m.params[r->m.nparams / 2] = INFINITY;
  assert_false(serve_params_finite(&r->m));
  serve_model_unref(r);
  serve_model_unref(NULL);
}

int test_serve(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_serve_topk_matches_full_sort),
      cmocka_unit_test(test_serve_rank),
      cmocka_unit_test(test_serve_fallbacks),
      cmocka_unit_test(test_serve_refs_and_finite),
  };
  return cmocka_run_group_tests_name("daemon/serve", tests, NULL, NULL);
}
