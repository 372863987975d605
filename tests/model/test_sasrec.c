/* tests/model/test_sasrec.c: the whole SASRec loss against central differences (every
 * parameter tensor, dropout off), and the exactness of the two shortcuts: a packed batch
 * gives the padded window's loss and gradients, and the last-position-only block gives
 * the full block's. Also: Adam's first step, seeding, the padding row, and a short training
 * run that must learn. */
#include "common/common.h"
#include "gradcheck.h"
#include "model/model.h"
#include "testutil.h"
#include "tiny.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NI_TINY = 20 };

/* Three samples of lengths 1, 5 and 8 (= L): packed and as padded windows. */
static const int32_t tok_packed[] = {4, /**/ 1, 2, 3, 9, 9, /**/ 5, 6, 7, 8, 10, 11, 12, 20};
static const size_t off_packed[] = {0, 1, 6, 14};
static const int32_t tok_padded[] = {0,      0, 0, 0, 0,  0,  0,  4, /**/ 0, 0, 0, 1, 2, 3, 9, 9,
                                     /**/ 5, 6, 7, 8, 10, 11, 12, 20};
static const size_t off_padded[] = {0, 8, 16, 24};
static const int32_t tgt3[] = {7, 13, 1};

static model_batch packed_batch(void) {
  model_batch b = {3, 14, tok_packed, off_packed, tgt3, NULL, 0};
  return b;
}

static model_batch padded_batch(void) {
  model_batch b = {3, 24, tok_padded, off_padded, tgt3, NULL, 0};
  return b;
}

typedef struct {
  model_net *m;
  model_acts *a;
  model_batch b;
  int train;
} loss_ctx;

static double whole_loss(void *p) {
  loss_ctx *c = p;
  return model_forward(c->m, c->a, &c->b, c->train);
}

static int check_all_tensors(loss_ctx *c) {
  model_net *m = c->m;
  model_zero_grad(m);
  whole_loss(c);
  model_backward(m, c->a, &c->b);
  size_t s[MODEL_MAX_TENSORS];
  model_tensor_sizes(&m->hp, m->NI, s);
  static const char *names[MODEL_NTENSORS] = {
      "pos",  "lne_w", "lne_b", "qkvw",    "qkvb",    "attprojw", "attprojb", "ln1w",
      "ln1b", "fcw",   "fcb",   "fcprojw", "fcprojb", "ln2w",     "ln2b",     "item"};
  int bad = 0;
  for (int t = 0; t < MODEL_NTENSORS; t++) {
    size_t skip = t == MODEL_T_ITEM ? m->hp.C : 0; /* the padding row is never used */
    float *g = xmalloc(s[t] * sizeof(float));
    memcpy(g, m->g.t[t], s[t] * sizeof(float)); /* gc_check reruns forward only */
    bad += gc_check(names[t], m->p.t[t] + skip, s[t] - skip, g + skip, whole_loss, c, 150, 1e-2,
                    2e-4, 2e-2);
    free(g);
  }
  return bad;
}

/* A model for gradient checks, with training state: larger weights than the 0.02 init so
 * that every path carries a visible gradient. */
static void gradcheck_model(model_net *m, const model_hparams *hp) {
  assert_int_equal(model_init(m, hp, NI_TINY, 7), 0);
  fl_rng r;
  fl_rng_seed(&r, 8);
  for (size_t i = 0; i < m->nparams; i++) m->params[i] += 0.3f * fl_rng_normal(&r);
  memset(m->p.t[MODEL_T_ITEM], 0, hp->C * sizeof(float));
  model_train_alloc(m);
}

static void run_whole_loss(int last_only, int padded, int train) {
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  if (train) hp.dropout = 0.3f; /* masks are a function of (seed, step): fixed here */
  model_net m;
  gradcheck_model(&m, &hp);
  m.last_only = last_only;
  loss_ctx c = {&m, model_acts_new(&hp, 3, 24), padded ? padded_batch() : packed_batch(), train};
  assert_int_equal(check_all_tensors(&c), 0);
  /* the padding row never receives gradient */
  for (size_t i = 0; i < hp.C; i++) assert_true(m.g.t[MODEL_T_ITEM][i] == 0.0f);
  model_acts_free(c.a);
  model_free(&m);
}

static void test_gradcheck_last_only(void **s) {
  (void)s;
  run_whole_loss(1, 0, 0);
}
static void test_gradcheck_full(void **s) {
  (void)s;
  run_whole_loss(0, 0, 0);
}
static void test_gradcheck_padded(void **s) {
  (void)s;
  run_whole_loss(1, 1, 0);
}
static void test_gradcheck_dropout(void **s) {
  (void)s;
  run_whole_loss(1, 0, 1);
}

/* Loss and gradients of (packed | padded) x (last-only | full) agree: the shortcuts are
 * exact up to float summation order. */
static void test_shortcuts_exact(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  model_net m;
  assert_int_equal(model_init(&m, &hp, NI_TINY, 3), 0);
  model_train_alloc(&m);
  model_acts *a = model_acts_new(&hp, 3, 24);
  float *ref = xmalloc(m.nparams * sizeof(float));
  float loss_ref = 0.0f;
  for (int variant = 0; variant < 4; variant++) {
    m.last_only = variant & 1;
    model_batch b = variant & 2 ? padded_batch() : packed_batch();
    model_zero_grad(&m);
    float loss = model_forward(&m, a, &b, 0);
    model_backward(&m, a, &b);
    if (variant == 0) {
      loss_ref = loss;
      memcpy(ref, m.grads, m.nparams * sizeof(float));
      continue;
    }
    assert_float_equal(loss, loss_ref, 1e-6);
    for (size_t i = 0; i < m.nparams; i++) assert_float_equal(m.grads[i], ref[i], 1e-6);
  }
  free(ref);
  model_acts_free(a);
  model_free(&m);
}

/* Init follows docs/MODEL.md section 1; the same seed gives the same model and the same training.
 */
static void test_init_and_seed(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  model_net a, b, c;
  assert_int_equal(model_init(&a, &hp, NI_TINY, 5), 0);
  assert_int_equal(model_init(&b, &hp, NI_TINY, 5), 0);
  assert_int_equal(model_init(&c, &hp, NI_TINY, 6), 0);
  assert_memory_equal(a.params, b.params, a.nparams * sizeof(float));
  assert_true(memcmp(a.params, c.params, a.nparams * sizeof(float)) != 0);
  size_t s[MODEL_MAX_TENSORS];
  model_tensor_sizes(&hp, NI_TINY, s);
  double sq = 0.0;
  for (size_t i = 0; i < s[MODEL_T_QKVW]; i++)
    sq += (double)a.p.t[MODEL_T_QKVW][i] * a.p.t[MODEL_T_QKVW][i];
  assert_float_equal(sqrt(sq / s[MODEL_T_QKVW]), 0.02, 0.003);
  for (size_t i = 0; i < s[MODEL_T_QKVB]; i++) assert_true(a.p.t[MODEL_T_QKVB][i] == 0.0f);
  for (size_t i = 0; i < s[MODEL_T_LN1W]; i++) assert_true(a.p.t[MODEL_T_LN1W][i] == 1.0f);
  for (size_t i = 0; i < hp.C; i++) assert_true(a.p.t[MODEL_T_ITEM][i] == 0.0f);
  assert_int_equal(model_hparams_check(&hp), 0);
  hp.NH = 3; /* 16 % 3 != 0 */
  assert_int_equal(model_hparams_check(&hp), FL_ERANGE);
  model_free(&a), model_free(&b), model_free(&c);
}

/* Adam's first step moves every parameter with a non-zero gradient by lr * sign(g). */
static void test_adam_first_step(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  model_net m;
  assert_int_equal(model_init(&m, &hp, NI_TINY, 9), 0);
  model_train_alloc(&m);
  float *before = xmalloc(m.nparams * sizeof(float));
  memcpy(before, m.params, m.nparams * sizeof(float));
  for (size_t i = 0; i < m.nparams; i++) m.grads[i] = (i % 3 == 0) ? 0.0f : (i % 2 ? 0.5f : -2.0f);
  for (size_t i = 0; i < hp.C; i++) m.g.t[MODEL_T_ITEM][i] = 0.0f;
  model_adam_step(&m, 1e-3f);
  assert_int_equal(m.step, 1);
  for (size_t i = 0; i < m.nparams; i++) {
    float g = m.grads[i], d = m.params[i] - before[i];
    float want = g == 0.0f ? 0.0f : (g > 0 ? -1e-3f : 1e-3f);
    assert_float_equal(d, want, 1e-6);
  }
  free(before);
  model_free(&m);
}

/* A short run on a deterministic next-item rule must drive the loss far down: the
 * forward, backward and optimizer are wired together correctly (with dropout on). */
static void test_learns_a_rule(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  hp.dropout = 0.1f;
  model_net m;
  assert_int_equal(model_init(&m, &hp, NI_TINY, 1), 0);
  model_train_alloc(&m);
  enum { B = 16 };
  int32_t tok[B * 8], tgt[B];
  size_t off[B + 1];
  model_acts *a = model_acts_new(&hp, B, B * 8);
  fl_rng r;
  fl_rng_seed(&r, 2);
  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < 300; step++) {
    off[0] = 0;
    for (size_t b = 0; b < B; b++) { /* item i is followed by i % 20 + 1 */
      size_t n = 1 + fl_rng_below(&r, 8);
      int32_t it = (int32_t)(1 + fl_rng_below(&r, NI_TINY));
      for (size_t i = 0; i < n; i++) {
        tok[off[b] + i] = it;
        it = it % NI_TINY + 1;
      }
      tgt[b] = it;
      off[b + 1] = off[b] + n;
    }
    model_batch bt = {B, off[B], tok, off, tgt, NULL, 0};
    model_zero_grad(&m);
    float loss = model_forward(&m, a, &bt, 1);
    model_backward(&m, a, &bt);
    model_adam_step(&m, 1e-2f);
    if (step == 0) first = loss;
    last = loss;
  }
  assert_true(first > 2.5f); /* ~ log(20) = 3.0 at the start */
  assert_true(last < 0.5f);
  model_acts_free(a);
  model_free(&m);
}

/* A seed makes a run reproducible: the same seed gives bit-identical weights after training
 * with dropout (masks derive from seed and step), another seed different ones. */
static void train_steps(model_net *m, uint64_t seed) {
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  hp.dropout = 0.5f;
  assert_int_equal(model_init(m, &hp, NI_TINY, seed), 0);
  model_train_alloc(m);
  model_acts *a = model_acts_new(&hp, 3, 24);
  model_batch b = packed_batch();
  for (int i = 0; i < 5; i++) {
    model_zero_grad(m);
    model_forward(m, a, &b, 1);
    model_backward(m, a, &b);
    model_adam_step(m, 1e-2f);
  }
  model_acts_free(a);
}

static void test_seed_reproducible(void **state) {
  (void)state;
  model_net a, b, c;
  train_steps(&a, 11);
  train_steps(&b, 11);
  train_steps(&c, 12);
  assert_memory_equal(a.params, b.params, a.nparams * sizeof(float));
  assert_true(memcmp(a.params, c.params, a.nparams * sizeof(float)) != 0);
  model_free(&a), model_free(&b), model_free(&c);
}

/* model_scores is the tied output: score of item i = h . item[i]. */
static void test_scores_tied(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  model_net m;
  assert_int_equal(model_init(&m, &hp, NI_TINY, 4), 0);
  float h[2 * 16], sc[2 * NI_TINY];
  for (size_t i = 0; i < 32; i++) h[i] = (float)i / 10.0f - 1.0f;
  model_scores(&m, h, 2, sc);
  for (size_t b = 0; b < 2; b++)
    for (size_t i = 1; i <= NI_TINY; i++) {
      double want = 0.0;
      for (size_t c = 0; c < 16; c++)
        want += (double)h[b * 16 + c] * m.p.t[MODEL_T_ITEM][i * 16 + c];
      assert_float_equal(sc[b * NI_TINY + i - 1], want, 1e-5);
    }
  /* one row (serving) takes the GEMV path: the same scores */
  float one[NI_TINY];
  model_scores(&m, h + 16, 1, one);
  for (size_t i = 0; i < NI_TINY; i++) assert_float_equal(one[i], sc[NI_TINY + i], 1e-5);
  model_free(&m);
}

/* The sampled softmax: central differences of the whole loss through every tensor; with the
 * whole catalogue as candidates it is the full softmax with the other items' mass scaled by
 * (NI - 1) / NI (the shift), the target's own candidate masked. */
static const int32_t neg5[] = {3, 13, 17, 13, 1}; /* 13 and 1 are targets; 13 twice */

static void test_sampled_gradcheck(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  model_net m;
  gradcheck_model(&m, &hp);
  model_batch b = packed_batch();
  b.neg = neg5;
  b.nneg = 5;
  loss_ctx c = {&m, model_acts_new(&hp, 3, 24), b, 0};
  assert_int_equal(check_all_tensors(&c), 0);
  /* only the rows of tok, tgt and neg have gradient, and model_batch_rows lists exactly them */
  uint8_t mark[NI_TINY + 1] = {0};
  int32_t rows[14 + 3 + 5];
  size_t n = model_batch_rows(&b, mark, rows);
  static const int32_t want[] = {4, 1, 2, 3, 9, 5, 6, 7, 8, 10, 11, 12, 20, 13, 17};
  assert_int_equal(n, sizeof want / sizeof *want);
  assert_memory_equal(rows, want, sizeof want);
  for (size_t i = 0; i <= NI_TINY; i++) assert_int_equal(mark[i], 0);
  for (int32_t it = 0; it <= NI_TINY; it++) {
    int listed = 0;
    for (size_t i = 0; i < n; i++) listed |= rows[i] == it;
    float sq = 0.0f;
    for (size_t k = 0; k < hp.C; k++) sq += fabsf(m.g.t[MODEL_T_ITEM][(size_t)it * hp.C + k]);
    if (!listed) assert_true(sq == 0.0f);
  }
  model_acts_free(c.a);
  model_free(&m);
}

static void test_sampled_whole_catalogue(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  model_net m;
  assert_int_equal(model_init(&m, &hp, NI_TINY, 3), 0);
  for (size_t i = hp.C; i < (NI_TINY + 1) * hp.C; i++) m.p.t[MODEL_T_ITEM][i] *= 40.0f;
  int32_t all[NI_TINY];
  for (int32_t i = 0; i < NI_TINY; i++) all[i] = i + 1;
  model_batch b = packed_batch();
  b.neg = all;
  b.nneg = NI_TINY;
  model_acts *a = model_acts_new(&hp, 3, 24);
  double got = model_forward(&m, a, &b, 0);
  float sc[3 * NI_TINY];
  model_scores(&m, model_acts_h(a), 3, sc);
  double want = 0.0, scale = (NI_TINY - 1.0) / NI_TINY;
  for (size_t r = 0; r < 3; r++) {
    double st = sc[r * NI_TINY + tgt3[r] - 1], z = exp(st);
    for (int32_t i = 1; i <= NI_TINY; i++)
      if (i != tgt3[r]) z += scale * exp(sc[r * NI_TINY + i - 1]);
    want += (log(z) - st) / 3.0;
  }
  assert_true(want > 0.5); /* the 40x table makes the scores spread */
  assert_float_equal(got, want, 1e-4);
  model_acts_free(a);
  model_free(&m);
}

/* Adam on listed rows: with every row listed it is model_adam_step bit for bit; unlisted
 * rows (and their moments) do not move; model_zero_grad_rows clears the same floats. */
static void test_adam_rows(void **state) {
  (void)state;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  model_net a, b;
  assert_int_equal(model_init(&a, &hp, NI_TINY, 9), 0);
  assert_int_equal(model_init(&b, &hp, NI_TINY, 9), 0);
  model_train_alloc(&a);
  /* b's blocks start undefined (as in the daemon's rounds): gradients are written before
   * each step below, the moments set here */
  model_train_alloc_uninit(&b);
  memset(b.adam_m, 0, b.nparams * sizeof(float));
  memset(b.adam_v, 0, b.nparams * sizeof(float));
  int32_t all[NI_TINY], some[] = {2, 7, 19};
  for (int32_t i = 0; i < NI_TINY; i++) all[i] = i + 1;
  for (int step = 0; step < 3; step++) {
    for (size_t i = 0; i < a.nparams; i++)
      a.grads[i] = b.grads[i] = (float)((i * 7919 + (size_t)step) % 13) / 13.0f - 0.4f;
    memset(a.g.t[MODEL_T_ITEM], 0, hp.C * sizeof(float));
    memset(b.g.t[MODEL_T_ITEM], 0, hp.C * sizeof(float));
    model_adam_step(&a, 1e-2f);
    model_adam_step_rows(&b, 1e-2f, all, NI_TINY);
  }
  assert_memory_equal(a.params, b.params, a.nparams * sizeof(float));
  assert_memory_equal(a.adam_v, b.adam_v, a.nparams * sizeof(float));
  /* now three rows only */
  float *before = xmalloc(b.nparams * sizeof(float));
  memcpy(before, b.params, b.nparams * sizeof(float));
  model_adam_step_rows(&b, 1e-2f, some, 3);
  size_t dense = (size_t)(b.p.t[MODEL_T_ITEM] - b.params);
  for (size_t i = 0; i < b.nparams; i++) {
    size_t row = i < dense ? 0 : (i - dense) / hp.C;
    int moved = before[i] != b.params[i];
    int listed = i < dense || row == 2 || row == 7 || row == 19;
    if (!listed) assert_false(moved);
    if (listed && b.grads[i] != 0.0f) assert_true(moved);
  }
  model_zero_grad_rows(&b, some, 3);
  for (size_t i = 0; i < b.nparams; i++) {
    size_t row = i < dense ? 0 : (i - dense) / hp.C;
    int listed = i < dense || row == 2 || row == 7 || row == 19;
    assert_true(listed ? b.grads[i] == 0.0f : b.grads[i] == a.grads[i]);
  }
  free(before);
  model_free(&a);
  model_free(&b);
}

int test_sasrec(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gradcheck_last_only), cmocka_unit_test(test_gradcheck_full),
      cmocka_unit_test(test_gradcheck_padded),    cmocka_unit_test(test_gradcheck_dropout),
      cmocka_unit_test(test_shortcuts_exact),     cmocka_unit_test(test_init_and_seed),
      cmocka_unit_test(test_adam_first_step),     cmocka_unit_test(test_learns_a_rule),
      cmocka_unit_test(test_scores_tied),         cmocka_unit_test(test_seed_reproducible),
      cmocka_unit_test(test_sampled_gradcheck),   cmocka_unit_test(test_sampled_whole_catalogue),
      cmocka_unit_test(test_adam_rows),
  };
  return cmocka_run_group_tests_name("model/sasrec", tests, NULL, NULL);
}
