/* tests/model/test_eval.c: ranking, metrics and the evaluation loop (model/eval.c). Ranks in
 * the hand-built cases are worked out in the comments. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"
#include "testutil.h"
#include "tiny.h"

/* Item: score (item i at index i - 1).
 *   1: 0.5   2: 0.9   3: 0.2   4: 0.7   5: 0.7   6: -0.1 */
#define NI6 6
static const float base6[NI6] = {0.5f, 0.9f, 0.2f, 0.7f, 0.7f, -0.1f};

static size_t rank6(int32_t target, const int32_t *hist, size_t nhist, eval_protocol proto) {
  float s[NI6];
  memcpy(s, base6, sizeof s);
  return eval_rank(s, NI6, target, hist, nhist, proto);
}

static void test_rank_no_history(void **state) {
  (void)state;
  /* Target 1 (0.5): items 2 (0.9), 4 and 5 (0.7) are above -> rank 3 in both protocols. */
  assert_int_equal(rank6(1, NULL, 0, EVAL_PROTOCOL_DEFAULT), 3);
  assert_int_equal(rank6(1, NULL, 0, EVAL_PROTOCOL_FLAME), 3);
  /* Target 2 (0.9) is the best -> 0. Target 6 (-0.1) is the worst -> 5. */
  assert_int_equal(rank6(2, NULL, 0, EVAL_PROTOCOL_DEFAULT), 0);
  assert_int_equal(rank6(6, NULL, 0, EVAL_PROTOCOL_DEFAULT), 5);
}

/* Ties go in the target's favour: only strictly greater scores count. */
static void test_rank_ties(void **state) {
  (void)state;
  /* Target 4 (0.7): only item 2 (0.9) is above; item 5 ties at 0.7 and does not count. */
  assert_int_equal(rank6(4, NULL, 0, EVAL_PROTOCOL_DEFAULT), 1);
  assert_int_equal(rank6(5, NULL, 0, EVAL_PROTOCOL_DEFAULT), 1);
  assert_int_equal(rank6(5, NULL, 0, EVAL_PROTOCOL_FLAME), 1);
  float flat[4] = {0.25f, 0.25f, 0.25f, 0.25f};
  assert_int_equal(eval_rank(flat, 4, 3, NULL, 0, EVAL_PROTOCOL_DEFAULT), 0);
}

static void test_rank_history(void **state) {
  (void)state;
  /* Target 1 (0.5), history {2}: item 2 (0.9) scores above the target.
   *   default: 2 -> -inf, above 0.5: items 4, 5 -> rank 2 (the history item does not count);
   *   flame:   2 -> 0,    above 0.5: items 4, 5 -> rank 2. */
  const int32_t h2[] = {2};
  assert_int_equal(rank6(1, h2, 1, EVAL_PROTOCOL_DEFAULT), 2);
  assert_int_equal(rank6(1, h2, 1, EVAL_PROTOCOL_FLAME), 2);
  /* Target 6 (-0.1), history {2, 3}:
   *   default: 2, 3 -> -inf; above -0.1: items 1, 4, 5 -> rank 3;
   *   flame:   2, 3 -> 0 (still above -0.1); above: items 1, 2, 3, 4, 5 -> rank 5. */
  const int32_t h23[] = {2, 3};
  assert_int_equal(rank6(6, h23, 2, EVAL_PROTOCOL_DEFAULT), 3);
  assert_int_equal(rank6(6, h23, 2, EVAL_PROTOCOL_FLAME), 5);
  /* The scores are modified in place. */
  float s[NI6];
  memcpy(s, base6, sizeof s);
  eval_rank(s, NI6, 6, h23, 2, EVAL_PROTOCOL_DEFAULT);
  assert_true(isinf(s[1]) && s[1] < 0 && isinf(s[2]) && s[2] < 0);
  assert_true(s[0] == 0.5f && s[5] == -0.1f);
  memcpy(s, base6, sizeof s);
  eval_rank(s, NI6, 6, h23, 2, EVAL_PROTOCOL_FLAME);
  assert_true(s[1] == 0.0f && s[2] == 0.0f);
  /* The target in its own history (read after the treatment, as the references do).
   * Target 4, history {4, 2}:
   *   default: 4, 2 -> -inf; above -inf: items 1, 3, 5, 6 -> rank 4;
   *   flame:   4, 2 -> 0;    above 0: items 1 (0.5), 3 (0.2), 5 (0.7) -> rank 3. */
  const int32_t h42[] = {4, 2};
  assert_int_equal(rank6(4, h42, 2, EVAL_PROTOCOL_DEFAULT), 4);
  assert_int_equal(rank6(4, h42, 2, EVAL_PROTOCOL_FLAME), 3);
  /* Repeated history items are harmless. */
  const int32_t h222[] = {2, 2, 2};
  assert_int_equal(rank6(1, h222, 3, EVAL_PROTOCOL_DEFAULT), 2);
}

static void test_rank_nan(void **state) {
  (void)state;
  float s[NI6];
  /* A NaN target ranks last (NI). */
  memcpy(s, base6, sizeof s);
  s[0] = NAN;
  assert_int_equal(eval_rank(s, NI6, 1, NULL, 0, EVAL_PROTOCOL_DEFAULT), NI6);
  /* A NaN elsewhere is never "greater": target 1 with item 3 NaN -> items 2, 4, 5 -> 3. */
  memcpy(s, base6, sizeof s);
  s[2] = NAN;
  assert_int_equal(eval_rank(s, NI6, 1, NULL, 0, EVAL_PROTOCOL_DEFAULT), 3);
  /* +inf above the target counts. */
  memcpy(s, base6, sizeof s);
  s[5] = INFINITY;
  assert_int_equal(eval_rank(s, NI6, 2, NULL, 0, EVAL_PROTOCOL_DEFAULT), 1);
}

static void assert_close(double got, double want) {
  if (fabs(got - want) > 1e-12) fail_msg("got %.15g, want %.15g", got, want);
}

static void test_metrics(void **state) {
  (void)state;
  /* Ranks 0, 5, 15, 30:
   *   HR@10 = 2/4; NDCG@10 = (1/log2(2) + 1/log2(7)) / 4
   *   HR@20 = 3/4; NDCG@20 = (1/log2(2) + 1/log2(7) + 1/log2(17)) / 4 */
  eval_metrics m = {0};
  eval_add_rank(&m, 0);
  eval_add_rank(&m, 5);
  eval_add_rank(&m, 15);
  eval_add_rank(&m, 30);
  assert_int_equal(m.users, 4);
  eval_finish(&m);
  assert_close(m.hr10, 0.5);
  assert_close(m.ndcg10, (1.0 + 1.0 / log2(7.0)) / 4);
  assert_close(m.hr20, 0.75);
  assert_close(m.ndcg20, (1.0 + 1.0 / log2(7.0) + 1.0 / log2(17.0)) / 4);
  assert_int_equal(m.users, 4);

  /* The cut-offs: ranks 9 and 19 are hits at 10 and 20, ranks 10 and 20 are not. */
  eval_metrics c = {0};
  eval_add_rank(&c, 9);
  eval_add_rank(&c, 10);
  eval_add_rank(&c, 19);
  eval_add_rank(&c, 20);
  eval_finish(&c);
  assert_close(c.hr10, 0.25);
  assert_close(c.ndcg10, 1.0 / log2(11.0) / 4);
  assert_close(c.hr20, 0.75);
  assert_close(c.ndcg20, (1.0 / log2(11.0) + 1.0 / log2(12.0) + 1.0 / log2(21.0)) / 4);

  /* No users: everything stays 0. */
  eval_metrics z = {0};
  eval_finish(&z);
  assert_true(z.hr10 == 0 && z.ndcg10 == 0 && z.hr20 == 0 && z.ndcg20 == 0 && z.users == 0);
}

/* Two users on the six-item scores, ranked and averaged under both protocols:
 *   user A: target 1, history {2}     -> default 2, flame 2
 *   user B: target 6, history {2, 3}  -> default 3, flame 5
 * default NDCG@10 = (1/log2(4) + 1/log2(5)) / 2; flame = (1/log2(4) + 1/log2(7)) / 2. */
static void test_rank_to_metrics(void **state) {
  (void)state;
  const int32_t ha[] = {2}, hb[] = {2, 3};
  for (int p = 0; p < 2; p++) {
    eval_protocol proto = p ? EVAL_PROTOCOL_FLAME : EVAL_PROTOCOL_DEFAULT;
    eval_metrics m = {0};
    eval_add_rank(&m, rank6(1, ha, 1, proto));
    eval_add_rank(&m, rank6(6, hb, 2, proto));
    eval_finish(&m);
    double want = (0.5 + 1.0 / log2(p ? 7.0 : 5.0)) / 2;
    assert_close(m.hr10, 1.0);
    assert_close(m.hr20, 1.0);
    assert_close(m.ndcg10, want);
    assert_close(m.ndcg20, want);
  }
}

static void test_protocol_parse(void **state) {
  (void)state;
  eval_protocol p = EVAL_PROTOCOL_FLAME;
  assert_int_equal(eval_protocol_parse("default", &p), 0);
  assert_int_equal(p, EVAL_PROTOCOL_DEFAULT);
  assert_int_equal(eval_protocol_parse("flame", &p), 0);
  assert_int_equal(p, EVAL_PROTOCOL_FLAME);
  assert_int_equal(eval_protocol_parse("Flame", &p), FL_ERANGE);
  assert_int_equal(eval_protocol_parse("", &p), FL_ERANGE);
  assert_int_equal(eval_protocol_parse(NULL, &p), FL_ERANGE);
  assert_int_equal(p, EVAL_PROTOCOL_FLAME); /* untouched on failure */
}

/* ---- eval_run against a direct per-user computation on a tiny model ---- */

typedef struct {
  char dir[256];
  data_set ds;
  model_net m;
} run_fixture;

static int run_setup(void **state) {
  run_fixture *f = xcalloc(1, sizeof *f);
  if (tu_mkdtemp(f->dir, sizeof f->dir) != 0) return -1;
  char path[320], err[512];
  snprintf(path, sizeof path, "%s/synth.txt", f->dir);
  /* 300 users (more than one batch of 256), lengths around 12 with L = 8, so many windows
   * are shorter than the user's history; then users of 1, 2 and 3 items at the end. */
  if (synth_write(path, 300, 60, 12, 7) != 0) return -1;
  FILE *fp = fopen(path, "a");
  if (!fp) return -1;
  fputs("1001 5\n1002 5 6\n1003 5 6 7\n", fp);
  fclose(fp);
  if (data_load(path, &f->ds, err, sizeof err) != 0) return -1;
  model_hparams hp;
  tiny_hparams(&hp, 1, 0.5f);
  if (model_init(&f->m, &hp, f->ds.NI, 42) != 0) return -1;
  *state = f;
  return 0;
}

static int run_teardown(void **state) {
  run_fixture *f = *state;
  model_free(&f->m);
  data_free(&f->ds);
  tu_rmtree(f->dir);
  free(f);
  return 0;
}

/* The metrics computed one user at a time, straight from the protocol's definition. */
static eval_metrics direct_eval(const model_net *m, const data_set *ds, eval_protocol proto,
                                eval_split split) {
  size_t L = m->hp.L, NI = m->NI;
  model_acts *acts = model_acts_new(&m->hp, 1, L);
  float *scores = xmalloc(NI * sizeof *scores);
  eval_metrics out = {0};
  for (size_t u = 0; u < ds->nusers; u++) {
    const int32_t *seq = ds->items + ds->off[u];
    size_t len = ds->off[u + 1] - ds->off[u];
    if (len < 3) continue;
    size_t t = split == EVAL_VAL ? len - 2 : len - 1; /* index of the target */
    size_t lo = t > L ? t - L : 0;
    size_t off[2] = {0, t - lo};
    model_batch b = {.B = 1, .T = t - lo, .tok = seq + lo, .off = off, .tgt = NULL};
    model_forward(m, acts, &b, 0);
    model_scores(m, model_acts_h(acts), 1, scores);
    /* default: history = the window seq[lo .. t); flame: everything before t. */
    size_t hlo = proto == EVAL_PROTOCOL_FLAME ? 0 : lo;
    eval_add_rank(&out, eval_rank(scores, NI, seq[t], seq + hlo, t - hlo, proto));
  }
  eval_finish(&out);
  free(scores);
  model_acts_free(acts);
  return out;
}

static void test_run_matches_direct(void **state) {
  run_fixture *f = *state;
  for (int p = 0; p < 2; p++)
    for (int sp = 0; sp < 2; sp++) {
      eval_protocol proto = p ? EVAL_PROTOCOL_FLAME : EVAL_PROTOCOL_DEFAULT;
      eval_split split = sp ? EVAL_TEST : EVAL_VAL;
      eval_metrics got, want = direct_eval(&f->m, &f->ds, proto, split);
      assert_int_equal(eval_run(&f->m, &f->ds, proto, split, &got), 0);
      /* 300 synthetic users (all have >= 5 items) + the one with 3 items. */
      assert_int_equal(got.users, 301);
      assert_int_equal(want.users, 301);
      /* Batched and one-at-a-time forward passes may round differently in the last bit
       * (BLAS picks kernels by shape), which can flip a near-tie: allow one user's worth. */
      double tol = 1.0 / (double)got.users + 1e-12;
      assert_true(fabs(got.hr10 - want.hr10) <= tol);
      assert_true(fabs(got.hr20 - want.hr20) <= tol);
      assert_true(fabs(got.ndcg10 - want.ndcg10) <= tol);
      assert_true(fabs(got.ndcg20 - want.ndcg20) <= tol);
    }
}

/* With a history longer than the window the two protocols differ: under flame the items
 * before the window are scored 0 instead of being left alone, so the metrics differ from the
 * default ones on this data (checked, not assumed, against the direct computation above). */
static void test_run_protocols_differ(void **state) {
  run_fixture *f = *state;
  eval_metrics d, fl;
  assert_int_equal(eval_run(&f->m, &f->ds, EVAL_PROTOCOL_DEFAULT, EVAL_TEST, &d), 0);
  assert_int_equal(eval_run(&f->m, &f->ds, EVAL_PROTOCOL_FLAME, EVAL_TEST, &fl), 0);
  assert_true(d.ndcg20 != fl.ndcg20);
}

static void test_run_errors(void **state) {
  run_fixture *f = *state;
  eval_metrics m;
  /* Items beyond the model's table. */
  model_net small;
  assert_int_equal(model_init(&small, &f->m.hp, f->ds.NI - 1, 1), 0);
  assert_int_equal(eval_run(&small, &f->ds, EVAL_PROTOCOL_DEFAULT, EVAL_VAL, &m), FL_ESHAPE);
  model_free(&small);
  /* Nobody with 3 items. */
  data_truncate(&f->ds, 2);
  assert_int_equal(eval_run(&f->m, &f->ds, EVAL_PROTOCOL_DEFAULT, EVAL_VAL, &m), FL_EEMPTY);
  assert_int_equal(m.users, 0);
  assert_true(m.hr10 == 0 && m.ndcg20 == 0);
}

/* eval_ranks_chunked gives eval_rank's default-protocol ranks: a catalogue of three chunks
 * (the last one partial), histories with repeats, a target inside its history, targets and
 * history items on both sides of a chunk border, a NaN target. */
static void test_ranks_chunked(void **state) {
  (void)state;
  enum { NI = 2 * EVAL_CHUNK + 123, B = 6 };
  model_hparams hp;
  tiny_hparams(&hp, 1, 0.0f);
  model_net m;
  assert_int_equal(model_init(&m, &hp, NI, 5), 0);
  for (size_t i = hp.C; i < (size_t)(NI + 1) * hp.C; i++) m.p.t[MODEL_T_ITEM][i] *= 50.0f;
  float h[B * 16];
  fl_rng r;
  fl_rng_seed(&r, 6);
  for (size_t i = 0; i < B * 16; i++) h[i] = fl_rng_normal(&r);
  static const int32_t tok[] = {/* 0 */ 5,
                                EVAL_CHUNK,
                                EVAL_CHUNK - 1,
                                5,
                                /* 1 */ 9,
                                /* 2 */ 77,
                                NI,
                                77,
                                EVAL_CHUNK,
                                /* 3 */ 300,
                                301,
                                /* 4 */ 1,
                                2,
                                3,
                                /* 5 */ 4000,
                                4001};
  static const size_t off[B + 1] = {0, 4, 5, 9, 11, 14, 16};
  const int32_t tgt[B] = {EVAL_CHUNK + 1, NI, 77, 2 * EVAL_CHUNK + 1, 4, 2};
  /* row 2's target is in its history; row 5's is NaN through its item row */
  m.p.t[MODEL_T_ITEM][2 * hp.C + 3] = NAN;
  float *scratch = xmalloc(B * EVAL_CHUNK * sizeof(float)), *sc = xmalloc(B * NI * sizeof(float));
  size_t rank[B];
  eval_ranks_chunked(&m, h, B, tgt, tok, off, scratch, rank);
  model_scores(&m, h, B, sc);
  int spread = 0;
  for (size_t b = 0; b < B; b++) {
    size_t want = eval_rank(sc + b * NI, NI, tgt[b], tok + off[b], off[b + 1] - off[b],
                            EVAL_PROTOCOL_DEFAULT);
    assert_int_equal(rank[b], want);
    spread += want > 10 && want < NI - 10;
  }
  assert_int_equal(rank[5], NI);     /* NaN target */
  assert_int_equal(rank[2], NI - 4); /* in its history: -inf, below all but item 2 (NaN) */
  assert_true(spread >= 4);          /* the other ranks are not trivial */
  free(sc);
  free(scratch);
  model_free(&m);
}

/* eval_newest on every user with 3+ items ranks the test targets as the default protocol does
 * (within one user's worth, as above); on a model that knows fewer items than the data, the
 * unknown ones are left out of the inputs and an unknown target is a miss. */
static void test_newest(void **state) {
  run_fixture *f = *state;
  uint32_t *users = xmalloc(f->ds.nusers * sizeof *users);
  size_t n = 0;
  for (size_t u = 0; u < f->ds.nusers; u++)
    if (f->ds.off[u + 1] - f->ds.off[u] >= 3) users[n++] = (uint32_t)u;
  eval_metrics got = eval_newest(&f->m, &f->ds, users, n), want;
  assert_int_equal(eval_run(&f->m, &f->ds, EVAL_PROTOCOL_DEFAULT, EVAL_TEST, &want), 0);
  assert_int_equal(got.users, want.users);
  double tol = 1.0 / (double)got.users + 1e-12;
  assert_true(fabs(got.hr10 - want.hr10) <= tol);
  assert_true(fabs(got.ndcg10 - want.ndcg10) <= tol);
  /* a model of one item: a target beyond it, or without a known item before it, is a miss
   * at every cutoff (not rank NI, which a one-item catalogue would count as a hit); item 1
   * after an item 1 is ranked (first: its own input excludes the rest) */
  model_hparams hp = f->m.hp;
  model_net one;
  assert_int_equal(model_init(&one, &hp, 1, 1), 0);
  eval_metrics none = eval_newest(&one, &f->ds, users, n);
  assert_int_equal(none.users, n);
  size_t hits = 0;
  for (size_t i = 0; i < n; i++) {
    const int32_t *q = f->ds.items + f->ds.off[users[i]];
    size_t len = f->ds.off[users[i] + 1] - f->ds.off[users[i]], known = 0;
    for (size_t x = 0; x + 1 < len; x++) known += q[x] == 1;
    hits += q[len - 1] == 1 && known > 0;
  }
  assert_true(fabs(none.hr10 - (double)hits / (double)n) < 1e-12);
  model_free(&one);
  free(users);
}

int test_eval(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rank_no_history),
      cmocka_unit_test(test_rank_ties),
      cmocka_unit_test(test_rank_history),
      cmocka_unit_test(test_rank_nan),
      cmocka_unit_test(test_metrics),
      cmocka_unit_test(test_rank_to_metrics),
      cmocka_unit_test(test_protocol_parse),
      cmocka_unit_test(test_ranks_chunked),
      cmocka_unit_test_setup_teardown(test_run_matches_direct, run_setup, run_teardown),
      cmocka_unit_test_setup_teardown(test_run_protocols_differ, run_setup, run_teardown),
      cmocka_unit_test_setup_teardown(test_run_errors, run_setup, run_teardown),
      cmocka_unit_test_setup_teardown(test_newest, run_setup, run_teardown),
  };
  return cmocka_run_group_tests_name("model/eval", tests, NULL, NULL);
}
