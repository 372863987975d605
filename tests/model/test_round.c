/* tests/model/test_round.c: the rounds' validation gate (round_passes, model/round.c) on
 * hand-set round figures: a candidate passes only if it loses at most the margin on the touched
 * users' holdout and, when retained users were checked, on theirs too. The rounds themselves
 * run end to end in test_serving. */
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

int test_round(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_gate)};
  return cmocka_run_group_tests_name("model/round", tests, NULL, NULL);
}
