/* tests/daemon/serve/test_oeval.c: the online evaluation thread (daemon/serve/serve.h): its sums
 * are those of serve_rank on the queued events, for the serving snapshot and the baseline alike
 * (equal counts whenever a baseline came with every event); events without a baseline count
 * for the serving model only; events still queued at shutdown are released (ASan's leak
 * check); a full queue refuses and releases. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/common.h"
#include "daemon/serve/serve.h"
#include "testutil.h"
#include "tiny_serve.h"

enum { NI = 40, EVENTS = 60 };

/* Event i: a history of 1 + i % 5 items and a target, all from a fixed pattern. */
static size_t event(size_t i, uint32_t *hist, uint32_t *target) {
  size_t n = 1 + i % 5;
  for (size_t j = 0; j < n; j++) hist[j] = (uint32_t)(1 + (i * 7 + j * 3) % NI);
  *target = (uint32_t)(1 + (i * 11) % NI);
  return n;
}

static void add(uint64_t *ev, double *hr, double *nd, size_t rank) {
  (*ev)++;
  if (rank < 10) {
    *hr += 1;
    *nd += 1.0 / log2((double)rank + 2.0);
  }
}

static void test_oeval_sums(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot_of(NI, 7), *base = tiny_snapshot_of(NI, 8);
  serve_ws *w = serve_ws_new();
  oeval *e;
  assert_int_equal(oeval_new(&e, EVENTS, 0), 0);
  oeval_sums want = {0};
  for (size_t i = 0; i < EVENTS; i++) {
    uint32_t hist[8], target;
    size_t n = event(i, hist, &target);
    int with_base = i < EVENTS - 10; /* the last 10 without a baseline */
    add(&want.events, &want.hr10, &want.ndcg10, serve_rank(s, w, hist, n, target, 1));
    if (with_base)
      add(&want.base_events, &want.base_hr10, &want.base_ndcg10,
          serve_rank(base, w, hist, n, target, 1));
    assert_int_equal(oeval_push(e, serve_model_ref(s), with_base ? serve_model_ref(base) : NULL,
                                hist, n, target),
                     0);
  }
  oeval_sums got = {0};
  for (double end = fl_now() + 30; fl_now() < end; fl_sleep_ms(5)) {
    oeval_get(e, &got);
    /* in step while every event so far came with a baseline */
    if (got.events <= EVENTS - 10) assert_int_equal(got.events, got.base_events);
    if (got.events == EVENTS) break;
  }
  assert_int_equal(got.events, EVENTS);
  assert_int_equal(got.base_events, EVENTS - 10);
  assert_true(want.hr10 > 0 && want.hr10 < EVENTS); /* not a trivial pattern */
  /* the same ranks added in the same (queue) order: bit-identical sums */
  assert_true(got.hr10 == want.hr10 && got.ndcg10 == want.ndcg10);
  assert_true(got.base_hr10 == want.base_hr10 && got.base_ndcg10 == want.base_ndcg10);
  oeval_free(e);
  oeval_free(NULL);
  serve_ws_free(w);
  serve_model_unref(s);
  serve_model_unref(base);
}

/* A queue of 2 that is fed far faster than it is drained refuses some events (-EAGAIN, their
 * references released), and shutting down with events queued releases theirs. */
static void test_oeval_full_and_shutdown(void **state) {
  (void)state;
  serve_model *s = tiny_snapshot_of(20000, 9); /* a ranking takes a while */
  oeval *e;
  assert_int_equal(oeval_new(&e, 2, 0), 0);
  size_t refused = 0;
  for (size_t i = 0; i < 200; i++) {
    uint32_t hist[8], target;
    size_t n = event(i, hist, &target);
    int rc = oeval_push(e, serve_model_ref(s), serve_model_ref(s), hist, n, target);
    assert_true(rc == 0 || rc == -EAGAIN);
    refused += rc == -EAGAIN;
  }
  assert_true(refused > 0);
  oeval_free(e);
  serve_model_unref(s); /* the last reference: a leak or a double release shows under ASan */
}

int test_oeval(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_oeval_sums),
      cmocka_unit_test(test_oeval_full_and_shutdown),
  };
  return cmocka_run_group_tests_name("daemon/oeval", tests, NULL, NULL);
}
