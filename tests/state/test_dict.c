/* tests/state/test_dict.c: the dictionaries' string hash table (state/dict.c).
 *
 * Checked against a plain array: dense indices from 1, lookups across several table growths,
 * ids that differ only in their last byte or length, newest-first rollback (also across a
 * growth) and re-insertion after it. Thousands of ids grown from a 16-slot table give long
 * probe runs without depending on the seed. */
#define _GNU_SOURCE
#include "testutil.h"

#include "common/common.h"
#include "state/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Id number k: ids share long prefixes and some differ only in length. */
static size_t make_id(char *buf, unsigned k) {
  int n = snprintf(buf, 64, "item-with-a-long-shared-prefix-%u", k / 3);
  size_t len = (size_t)n + k % 3; /* k % 3 extra bytes: '\0' and 0xff, part of the id */
  buf[n] = 0;
  buf[n + 1] = (char)0xff;
  return len;
}

static void test_dict_dense_and_find(void **state) {
  (void)state;
  state__dict d;
  state__dict_init(&d, 0);
  char id[80];
  const unsigned N = 5000; /* several growths from 16 slots */
  for (unsigned k = 0; k < N; k++) {
    size_t len = make_id(id, k);
    int added = 0;
    assert_int_equal(state__dict_intern(&d, id, len, &added), k + 1);
    assert_true(added);
    /* A second intern finds it. */
    assert_int_equal(state__dict_intern(&d, id, len, &added), k + 1);
    assert_false(added);
  }
  assert_int_equal(d.n, N);
  for (unsigned k = 0; k < N; k++) {
    size_t len = make_id(id, k), got_len = 0;
    assert_int_equal(state__dict_find(&d, id, len), (int64_t)k + 1);
    const char *got = state__dict_id(&d, k + 1, &got_len);
    assert_non_null(got);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, id, len);
  }
  size_t len;
  assert_null(state__dict_id(&d, 0, &len));
  assert_null(state__dict_id(&d, N + 1, &len));
  assert_int_equal(state__dict_find(&d, "absent", 6), -1);
  /* Table at most half full. */
  assert_true((size_t)d.n * 2 <= d.mask + 1);
  assert_true(state__dict_mem(&d) > (size_t)N * 8);
  state__dict_free(&d);
}

static void test_dict_truncate(void **state) {
  (void)state;
  state__dict d;
  state__dict_init(&d, 12345);
  char id[80];
  int added;
  for (unsigned k = 0; k < 10; k++) state__dict_intern(&d, id, make_id(id, k), &added);
  /* 1000 more force growths, then roll them all back. */
  for (unsigned k = 10; k < 1010; k++) state__dict_intern(&d, id, make_id(id, k), &added);
  state__dict_truncate(&d, 10);
  assert_int_equal(d.n, 10);
  for (unsigned k = 0; k < 1010; k++) {
    size_t len = make_id(id, k);
    assert_int_equal(state__dict_find(&d, id, len), k < 10 ? (int64_t)k + 1 : -1);
  }
  /* Re-inserted in another order, they get the next indices again, densely. */
  for (unsigned k = 1009; k >= 10; k--) {
    size_t len = make_id(id, k);
    assert_int_equal(state__dict_intern(&d, id, len, &added), 10 + (1009 - k) + 1);
  }
  for (unsigned k = 10; k < 1010; k++) {
    size_t len = make_id(id, k);
    assert_int_equal(state__dict_find(&d, id, len), (int64_t)(10 + (1009 - k) + 1));
  }
  /* Partial rollbacks, one at a time, keep every older entry findable. */
  for (uint32_t n = d.n; n > 0; n -= 7) {
    state__dict_truncate(&d, n - 1);
    for (uint32_t i = 1; i < n; i += 37) {
      size_t len;
      const char *s = state__dict_id(&d, i, &len);
      char copy[80];
      memcpy(copy, s, len);
      assert_int_equal(state__dict_find(&d, copy, len), (int64_t)i);
    }
    if (n < 8) break;
  }
  state__dict_truncate(&d, 0);
  assert_int_equal(d.n, 0);
  assert_int_equal(state__dict_find(&d, id, make_id(id, 3)), -1);
  state__dict_free(&d);
}

static void test_dict_append(void **state) {
  (void)state;
  state__dict d;
  state__dict_init(&d, 7);
  assert_int_equal(state__dict_append(&d, "b", 1), 1);
  assert_int_equal(state__dict_append(&d, "a", 1), 2);
  assert_int_equal(state__dict_find(&d, "a", 1), 2);
  assert_int_equal(state__dict_find(&d, "b", 1), 1);
  /* Longest ids, every byte value. */
  char big[STATE_ID_MAX];
  for (int i = 0; i < STATE_ID_MAX; i++) big[i] = (char)i;
  assert_int_equal(state__dict_append(&d, big, sizeof big), 3);
  assert_int_equal(state__dict_find(&d, big, sizeof big), 3);
  assert_int_equal(state__dict_find(&d, big, sizeof big - 1), -1);
  state__dict_free(&d);
}

int test_dict(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dict_dense_and_find),
      cmocka_unit_test(test_dict_truncate),
      cmocka_unit_test(test_dict_append),
  };
  return cmocka_run_group_tests_name("state/dict", tests, NULL, NULL);
}
