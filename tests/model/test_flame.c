/* tests/model/test_flame.c: the FLAME loss (docs/MODEL.md section 2) against central differences
 * (every learnable tensor, dropout off, through the frozen encoder and, when not detached,
 * through the pair weights), NT-Xent on hand-computable cases, the weighting, and the
 * anchor's immutability under training. */
#include "common/common.h"
#include "gradcheck.h"
#include "model/internal.h"
#include "model/model.h"
#include "testutil.h"
#include "tiny.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NI_TINY = 20 };

/* Three samples of lengths 1, 5 and 8 (= L). */
static const int32_t tok3[] = {4, /**/ 1, 2, 3, 9, 9, /**/ 5, 6, 7, 8, 10, 11, 12, 20};
static const size_t off3[] = {0, 1, 6, 14};
static const int32_t tgt3[] = {7, 13, 1};

static void perturbed_model(model_net *m, uint64_t seed) {
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.0f);
  assert_int_equal(model_init(m, &hp, NI_TINY, seed), 0);
  fl_rng r;
  fl_rng_seed(&r, seed + 100);
  for (size_t i = 0; i < m->nparams; i++) m->params[i] += 0.3f * fl_rng_normal(&r);
  memset(m->p.t[MODEL_T_ITEM], 0, hp.C * sizeof(float));
}

typedef struct {
  model_net *lrn, *anc;
  flame_ws *ws;
  model_batch b;
  flame_opts o;
  float lambda;
  float w0[FLAME_MAX_PAIRS]; /* with detach_w: the weights at the unperturbed point, fixed */
} flame_ctx;

/* The loss whose gradient flame_step computes: with detached weights, the pair weights are
 * constants (w0), so the reference derivative holds them fixed too. */
static double flame_loss(void *p) {
  flame_ctx *c = p;
  model_zero_grad(c->lrn);
  flame_parts parts;
  double loss = flame_step(c->lrn, c->anc, c->ws, &c->b, &c->o, c->lambda, 0, &parts);
  if (!c->o.detach_w) return loss;
  double fixed = parts.rec;
  for (size_t q = 0; q < parts.npairs; q++) fixed += (double)c->lambda * c->w0[q] * parts.pair[q];
  return fixed;
}

static void run_flame_gradcheck(int detach, int blockdiag, int per_block, size_t paths, float tau) {
  model_net lrn, anc;
  perturbed_model(&lrn, 1);
  perturbed_model(&anc, 2);
  model_train_alloc(&lrn);
  flame_ctx c = {.lrn = &lrn,
                 .anc = &anc,
                 .ws = flame_ws_new(&lrn.hp, 3, per_block),
                 .b = {3, 14, tok3, off3, tgt3},
                 .lambda = 0.7f};
  flame_opts_default(&c.o);
  c.o.detach_w = detach;
  c.o.blockdiag = blockdiag;
  c.o.per_block = per_block;
  c.o.paths = paths;
  c.o.tau = tau;
  flame_parts parts;
  model_zero_grad(&lrn);
  flame_step(&lrn, &anc, c.ws, &c.b, &c.o, c.lambda, 0, &parts);
  memcpy(c.w0, parts.w, sizeof c.w0);
  assert_int_equal(parts.npairs, paths ? paths * (paths - 1) / 2 : per_block ? 28 : 6);
  float *g = xmalloc(lrn.nparams * sizeof(float));
  memcpy(g, lrn.grads, lrn.nparams * sizeof(float));
  size_t s[MODEL_MAX_TENSORS];
  model_tensor_sizes(&lrn.hp, lrn.NI, s);
  /* The loss is a float of magnitude ~20: its rounding quantises the central difference at
   * ~2e-4 for a step of 1e-2 (measured), hence the absolute tolerance. */
  int bad = 0;
  size_t at = 0;
  for (int t = 0; t < MODEL_NTENSORS; t++) {
    size_t skip = t == MODEL_T_ITEM ? lrn.hp.C : 0;
    bad += gc_check("flame", lrn.p.t[t] + skip, s[t] - skip, g + at + skip, flame_loss, &c, 120,
                    1e-2, 5e-4, 3e-2);
    at += s[t];
  }
  assert_int_equal(bad, 0);
  free(g);
  flame_ws_free(c.ws);
  model_free(&lrn);
  model_free(&anc);
}

static void test_gradcheck_tiled(void **s) { (void)s, run_flame_gradcheck(0, 0, 0, 0, 0.5f); }
static void test_gradcheck_detached(void **s) { (void)s, run_flame_gradcheck(1, 0, 0, 0, 0.5f); }
static void test_gradcheck_blockdiag(void **s) { (void)s, run_flame_gradcheck(0, 1, 0, 0, 0.5f); }
/* per-block modules (embedding, block 0, block 1): all 8 paths, and a random subset of 3
 * (the same subset at every evaluation: it is drawn from the seed and step). tau = 1: 28
 * pairs at tau = 0.5 put the loss's curvature and rounding at the tolerance's edge. */
static void test_gradcheck_per_block(void **s) { (void)s, run_flame_gradcheck(0, 0, 1, 0, 1.0f); }
static void test_gradcheck_per_block_subset(void **s) {
  (void)s, run_flame_gradcheck(0, 0, 1, 3, 1.0f);
}

/* NT-Xent by hand. B = 2, C = 2, a = b = (e1, e2): Z = (e1, e2, e1, e2) and row 0 of Z Z^T is
 * (1, 0, 1, 0) with the diagonal removed and the positive at column 2, so
 * L = -1 + log(e^0 + e^1 + e^0) = log(2 + e) - 1 = 0.5514447 for every row. At tau = 0.5
 * the row is (2, 0, 2, 0): L = log(2 + e^2) - 2 = 0.2395445. The mean similarity is 1. */
static void test_ntxent_by_hand(void **state) {
  (void)state;
  float a[4] = {1, 0, 0, 1}, b[4] = {1, 0, 0, 1}, sim = 0.0f;
  float *scr = xmalloc(flame_ntxent_scratch(2, 2) * sizeof(float));
  assert_float_equal(flame_ntxent(a, b, 2, 2, 1.0f, &sim, 0.0f, NULL, NULL, scr), 0.5514447, 1e-6);
  assert_float_equal(sim, 1.0, 1e-7);
  assert_float_equal(flame_ntxent(a, b, 2, 2, 0.5f, NULL, 0.0f, NULL, NULL, scr), 0.2395445, 1e-6);
  /* B = 1: the only other entry is the positive, so the loss is 0 */
  float x[2] = {0.3f, -2.0f}, y[2] = {1.5f, 0.25f};
  assert_float_equal(flame_ntxent(x, y, 1, 2, 1.0f, NULL, 0.0f, NULL, NULL, scr), 0.0, 1e-6);
  free(scr);
}

typedef struct {
  float *a, *b, *scr;
  size_t B, C;
  float tau;
} nt_ctx;

static double nt_loss(void *p) {
  nt_ctx *c = p;
  return flame_ntxent(c->a, c->b, c->B, c->C, c->tau, NULL, 0.0f, NULL, NULL, c->scr);
}

/* The NT-Xent gradient (scaled by g) against central differences. */
static void test_ntxent_gradient(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 3);
  size_t B = 4, C = 6;
  nt_ctx c = {xmalloc(B * C * sizeof(float)),
              xmalloc(B * C * sizeof(float)),
              xmalloc(flame_ntxent_scratch(B, C) * sizeof(float)),
              B,
              C,
              0.7f};
  for (size_t i = 0; i < B * C; i++) c.a[i] = fl_rng_normal(&r), c.b[i] = fl_rng_normal(&r);
  float *da = xcalloc(B * C, sizeof(float)), *db = xcalloc(B * C, sizeof(float));
  flame_ntxent(c.a, c.b, B, C, c.tau, NULL, 2.0f, da, db, c.scr);
  for (size_t i = 0; i < B * C; i++) da[i] /= 2.0f, db[i] /= 2.0f;
  assert_int_equal(gc_check("a", c.a, B * C, da, nt_loss, &c, 100, 1e-2, 1e-3, 1e-2), 0);
  assert_int_equal(gc_check("b", c.b, B * C, db, nt_loss, &c, 100, 1e-2, 1e-3, 1e-2), 0);
  free(c.a), free(c.b), free(c.scr), free(da), free(db);
}

/* A learnable network (seed 5) and an anchor (anc_seed), both perturbed and without dropout,
 * the paper's options and a workspace for the three samples of tok3. */
static flame_ws *perturbed_pair(model_net *lrn, model_net *anc, uint64_t anc_seed, flame_opts *o) {
  perturbed_model(lrn, 5);
  perturbed_model(anc, anc_seed);
  model_train_alloc(lrn);
  flame_opts_default(o);
  return flame_ws_new(&lrn->hp, 3, 0);
}

/* Identical networks without dropout make the four paths equal: equal similarities, so
 * uniform weights 1/6 and six equal pair losses. */
static void test_identical_networks_uniform_weights(void **state) {
  (void)state;
  model_net lrn, anc;
  flame_opts o;
  flame_ws *ws = perturbed_pair(&lrn, &anc, 5, &o);
  model_batch b = {3, 14, tok3, off3, tgt3, NULL, 0};
  flame_parts parts;
  float loss = flame_step(&lrn, &anc, ws, &b, &o, 0.5f, 0, &parts);
  double total = parts.rec;
  for (int p = 0; p < 6; p++) {
    assert_float_equal(parts.w[p], 1.0 / 6.0, 1e-5);
    assert_float_equal(parts.pair[p], parts.pair[0], 1e-4);
    total += 0.5 * parts.w[p] * parts.pair[p];
  }
  assert_float_equal(loss, total, 1e-4);
  flame_ws_free(ws);
  model_free(&lrn);
  model_free(&anc);
}

/* Training steps (dropout on) change the learnable network and leave the anchor's weights
 * bit-identical. */
static void test_anchor_frozen(void **state) {
  (void)state;
  model_net lrn, anc;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.5f);
  assert_int_equal(model_init(&lrn, &hp, NI_TINY, 1), 0);
  assert_int_equal(model_init(&anc, &hp, NI_TINY, 2), 0);
  model_train_alloc(&lrn);
  float *anc0 = xmalloc(anc.nparams * sizeof(float)), *lrn0 = xmalloc(lrn.nparams * sizeof(float));
  memcpy(anc0, anc.params, anc.nparams * sizeof(float));
  memcpy(lrn0, lrn.params, lrn.nparams * sizeof(float));
  flame_ws *ws = flame_ws_new(&hp, 3, 0);
  flame_opts o;
  flame_opts_default(&o);
  model_batch b = {3, 14, tok3, off3, tgt3, NULL, 0};
  for (int i = 0; i < 4; i++) {
    model_zero_grad(&lrn);
    float loss = flame_step(&lrn, &anc, ws, &b, &o, flame_lambda(&o, i), 1, NULL);
    assert_true(isfinite(loss));
    model_adam_step(&lrn, 1e-2f);
  }
  assert_memory_equal(anc.params, anc0, anc.nparams * sizeof(float));
  assert_true(memcmp(lrn.params, lrn0, lrn.nparams * sizeof(float)) != 0);
  assert_null(anc.grads);
  free(anc0), free(lrn0);
  flame_ws_free(ws);
  model_free(&lrn);
  model_free(&anc);
}

/* Each network's passes drop at its own rate: the workspace is made from the learnable
 * network's hyper-parameters, but the anchor keeps its checkpoint's dropout (docs/MODEL.md section
 * 2: its dropout "stays active in training"). With the learnable network at 0, a training step's
 * cross-entropy equals evaluation mode's, and the pair losses differ only if the anchor drops;
 * with both at 0 everything equals evaluation mode. */
static void test_each_network_its_own_dropout(void **state) {
  (void)state;
  model_net lrn, anc;
  flame_opts o;
  flame_ws *ws = perturbed_pair(&lrn, &anc, 6, &o); /* the learnable network: dropout 0 */
  model_batch b = {3, 14, tok3, off3, tgt3, NULL, 0};
  for (int anchor_drops = 0; anchor_drops < 2; anchor_drops++) {
    anc.hp.dropout = anchor_drops ? 0.5f : 0.0f;
    flame_parts ev, tr;
    model_zero_grad(&lrn);
    flame_step(&lrn, &anc, ws, &b, &o, 1.0f, 0, &ev);
    model_zero_grad(&lrn);
    flame_step(&lrn, &anc, ws, &b, &o, 1.0f, 1, &tr);
    assert_true(tr.rec == ev.rec);
    assert_int_equal(tr.npairs, 6);
    size_t differ = 0;
    for (size_t q = 0; q < tr.npairs; q++) differ += tr.pair[q] != ev.pair[q];
    assert_int_equal(differ, anchor_drops ? 6 : 0);
  }
  flame_ws_free(ws);
  model_free(&lrn);
  model_free(&anc);
}

/* A pass's dropout sites are keyed key + s for s < 1 + 3 blocks (sasrec.c), so the passes of
 * one step (FLAME's salts 0-4, up to 6 with per-block modules of two blocks, the paths' 99)
 * have independent masks only if their keys lie further apart, modulo 2^64, than a pass has
 * sites. Keys that differed only in the salt's low bits gave two passes the same mask stream
 * in half the steps. */
static void test_pass_keys_apart(void **state) {
  (void)state;
  model_net m;
  model_hparams hp;
  tiny_hparams(&hp, 2, 0.5f);
  assert_int_equal(model_init(&m, &hp, NI_TINY, 42), 0);
  const uint64_t salts[] = {0, 1, 2, 3, 4, 5, 6, 99};
  const size_t ns = sizeof salts / sizeof salts[0];
  for (uint64_t step = 0; step < 2000; step++) {
    m.step = step;
    for (size_t i = 0; i < ns; i++) {
      for (size_t j = i + 1; j < ns; j++) {
        uint64_t a = net_key(&m, salts[i]), b = net_key(&m, salts[j]);
        uint64_t d = a - b < b - a ? a - b : b - a; /* the distance modulo 2^64 */
        assert_true(d > 1024);
      }
    }
  }
  model_free(&m);
}

/* The schedule: lambda_0 at e = 0, lambda_R at e = R, geometric in between. */
static void test_lambda_schedule(void **state) {
  (void)state;
  flame_opts o;
  flame_opts_default(&o);
  assert_float_equal(flame_lambda(&o, 0), 1.0, 1e-7);
  assert_float_equal(flame_lambda(&o, 200), 1e-5, 1e-10);
  assert_float_equal(flame_lambda(&o, 100), sqrt(1e-5), 1e-8);
}

int test_flame(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gradcheck_tiled),
      cmocka_unit_test(test_gradcheck_detached),
      cmocka_unit_test(test_gradcheck_blockdiag),
      cmocka_unit_test(test_gradcheck_per_block),
      cmocka_unit_test(test_gradcheck_per_block_subset),
      cmocka_unit_test(test_ntxent_by_hand),
      cmocka_unit_test(test_ntxent_gradient),
      cmocka_unit_test(test_identical_networks_uniform_weights),
      cmocka_unit_test(test_anchor_frozen),
      cmocka_unit_test(test_each_network_its_own_dropout),
      cmocka_unit_test(test_lambda_schedule),
      cmocka_unit_test(test_pass_keys_apart),
  };
  return cmocka_run_group_tests_name("model/flame", tests, NULL, NULL);
}
