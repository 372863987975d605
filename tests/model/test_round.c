/* tests/model/test_round.c: the rounds' validation gate (round_passes, model/round.c) on
 * hand-set round figures: a candidate passes only if it loses at most the margin on the touched
 * users' holdout and, when retained users were checked, on theirs too; and the rows a round
 * gives new items (train.seed_new_items). The rounds themselves run end to end in
 * test_serving and through flame replay in tests/tools/test_replay. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "testutil.h"

static round_figures figures(double cand, double serv, uint64_t retain, double cand_ret,
                             double serv_ret) {
  round_figures r = {0};
  r.cand_ndcg10 = cand;
  r.serv_ndcg10 = serv;
  r.retain = retain;
  r.cand_retain_ndcg10 = cand_ret;
  r.serv_retain_ndcg10 = serv_ret;
  return r;
}

static void test_gate(void **state) {
  (void)state;
  const double m = 0.002;
  round_figures r = figures(0.30, 0.30, 0, 0, 0); /* a tie, no retained users */
  assert_true(round_passes(&r, m));
  r = figures(0.299, 0.30, 0, 0, 0); /* within the margin */
  assert_true(round_passes(&r, m));
  r = figures(0.297, 0.30, 0, 0, 0); /* worse by more than the margin */
  assert_false(round_passes(&r, m));
  r = figures(0.297, 0.30, 0, 0, 0); /* ... unless the margin allows it */
  assert_true(round_passes(&r, 0.01));
  /* better on the touched users, but it forgot the others: rejected */
  r = figures(0.35, 0.30, 500, 0.15, 0.20);
  assert_false(round_passes(&r, m));
  r = figures(0.35, 0.30, 500, 0.199, 0.20); /* forgot within the margin */
  assert_true(round_passes(&r, m));
  /* retained figures count only when users were retained */
  r = figures(0.35, 0.30, 0, 0.15, 0.20);
  assert_true(round_passes(&r, m));
  /* better on the retained users does not excuse a worse holdout */
  r = figures(0.25, 0.30, 500, 0.30, 0.20);
  assert_false(round_passes(&r, m));
  /* no serving model (both serving figures 0): any candidate passes */
  r = figures(0.0, 0.0, 0, 0, 0);
  assert_true(round_passes(&r, 0));
}

/* One round of one step at the smallest learning rate on two users who met a new item 6 after
 * items the base knows; returns its row's largest difference from the mean of the rows of the
 * (up to three) known items before each occurrence: 3, 2, 1 and 5, 4. */
static float new_row_error(int seed_rows) {
  model_hparams hp;
  model_hparams_default(&hp);
  hp.C = 16, hp.L = 8, hp.NL = 1, hp.NH = 1, hp.FF = 32;
  model_net base;
  assert_int_equal(model_init(&base, &hp, 5, 7), 0);
  int32_t items[] = {1, 2, 3, 6, 4, 5, 6};
  size_t off[] = {0, 4, 7};
  data_set ds = {.nusers = 2, .NI = 6, .off = off, .items = items};
  uint32_t learn[] = {1, 1}, fresh[] = {0, 0}; /* nothing fresh: nothing held out */
  round_opts o = {.steps = 1,
                  .batch = 4,
                  .holdout = 10,
                  .sampled_items = 1000,
                  .min_users = 1,
                  .lr = 1e-7f,
                  .tau = 1.0f,
                  .seed_rows = seed_rows};
  fl_rng rng;
  fl_rng_seed(&rng, 1);
  round_env e = {.ds = &ds,
                 .learn = learn,
                 .fresh = fresh,
                 .base = &base,
                 .anchor = &base,
                 .grow_seed = 3,
                 .dropout_seed = 4,
                 .rng = &rng};
  model_net cand;
  uint8_t *held;
  round_figures f;
  assert_int_equal(round_run(&o, &e, 1, &cand, &held, &f), ROUND_PASSED);
  assert_int_equal(cand.NI, 6);
  const float *b = model_items(&base), *c = model_items(&cand);
  size_t C = hp.C;
  float err = 0;
  for (size_t k = 0; k < C; k++) {
    float want = (b[3 * C + k] + b[2 * C + k] + b[1 * C + k] + b[5 * C + k] + b[4 * C + k]) / 5;
    err = fmaxf(err, fabsf(c[6 * C + k] - want));
  }
  model_free(&cand);
  free(held);
  model_free(&base);
  return err;
}

static void test_new_item_rows(void **state) {
  (void)state;
  assert_true(new_row_error(1) < 1e-5f);
  assert_true(new_row_error(0) > 1e-3f); /* a random row otherwise */
}

int test_round(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_gate),
                                     cmocka_unit_test(test_new_item_rows)};
  return cmocka_run_group_tests_name("model/round", tests, NULL, NULL);
}
