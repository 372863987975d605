/* tests/model/test_data.c: dataset loading, truncation, training samples and packing
 * (model/data.c). Every file is written to a temp dir; nothing reads ../shared/data. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"
#include "testutil.h"
#include "tiny.h"

typedef struct {
  char dir[256];
  char path[320];
} data_fixture;

static int setup(void **state) {
  data_fixture *f = xcalloc(1, sizeof *f);
  if (tu_mkdtemp(f->dir, sizeof f->dir) != 0) {
    free(f);
    return -1;
  }
  snprintf(f->path, sizeof f->path, "%s/data.txt", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  data_fixture *f = *state;
  tu_rmtree(f->dir);
  free(f);
  return 0;
}

/* Writes text to the fixture's file and loads it; asserts success. */
static void load_text(data_fixture *f, const char *text, data_set *ds) {
  tu_write_file(f->path, text);
  tiny_load(f->path, ds);
}

static void assert_same_set(const data_set *a, const data_set *b) {
  assert_int_equal(a->nusers, b->nusers);
  assert_int_equal(a->NI, b->NI);
  assert_memory_equal(a->off, b->off, (a->nusers + 1) * sizeof *a->off);
  assert_memory_equal(a->items, b->items, a->off[a->nusers] * sizeof *a->items);
  assert_memory_equal(a->user_id, b->user_id, a->nusers * sizeof *a->user_id);
}

/* Users 10, 7, 3 (in order of first appearance) with sequences
 *   10: 1 2 3 4 5    7: 6 2 8    3: 9 */
static const int64_t want_ids[] = {10, 7, 3};
static const size_t want_off[] = {0, 5, 8, 9};
static const int32_t want_items[] = {1, 2, 3, 4, 5, 6, 2, 8, 9};

static void assert_reference_set(const data_set *ds) {
  assert_int_equal(ds->nusers, 3);
  assert_int_equal(ds->NI, 9);
  assert_memory_equal(ds->user_id, want_ids, sizeof want_ids);
  assert_memory_equal(ds->off, want_off, sizeof want_off);
  assert_memory_equal(ds->items, want_items, sizeof want_items);
}

/* The `user item` format (ml-1m), with users interleaved, the `user item item ...` format
 * (amazon-beauty), and a mix of both with odd whitespace, all give the same sequences. */
static void test_load_formats(void **state) {
  data_fixture *f = *state;
  data_set pairs, lines, mixed;
  load_text(f, "10 1\n7 6\n10 2\n10 3\n3 9\n7 2\n10 4\n7 8\n10 5\n", &pairs);
  assert_reference_set(&pairs);
  load_text(f, "10 1 2 3 4 5\n7 6 2 8\n3 9\n", &lines);
  assert_reference_set(&lines);
  /* CRLF, tabs, blank and whitespace-only lines, a '+' sign, no final newline. */
  load_text(f, "\n10 1 2\r\n  7\t6\n\n \t \n10 3  4 +5\r\n3 9\n7 2 8", &mixed);
  assert_reference_set(&mixed);
  assert_same_set(&pairs, &lines);
  assert_same_set(&pairs, &mixed);
  data_free(&pairs);
  data_free(&lines);
  data_free(&mixed);
  assert_null(pairs.items);
  assert_int_equal(pairs.nusers, 0);
}

/* Many users (more than the user table's first size) in shuffled order, ids up to int64. */
static void test_load_many_users(void **state) {
  data_fixture *f = *state;
  size_t nu = 5000, cap = nu * 64;
  char *text = xmalloc(cap);
  size_t n = 0;
  /* Two passes so every user appears twice, far apart; user ids are a scrambled sequence
   * including negative and extreme values. */
  for (int pass = 0; pass < 2; pass++)
    for (size_t u = 0; u < nu; u++) {
      int64_t id = u == 0 ? INT64_MAX : u == 1 ? INT64_MIN : (int64_t)(u * 2654435761u) - 99999;
      n += (size_t)snprintf(text + n, cap - n, "%lld %zu\n", (long long)id, u % 97 + 1 + pass);
    }
  data_set ds;
  load_text(f, text, &ds);
  free(text);
  assert_int_equal(ds.nusers, nu);
  assert_int_equal(ds.NI, 98);
  assert_int_equal(ds.user_id[0], INT64_MAX);
  assert_int_equal(ds.user_id[1], INT64_MIN);
  for (size_t u = 0; u < nu; u++) {
    assert_int_equal(ds.off[u], 2 * u);
    assert_int_equal(ds.items[2 * u], u % 97 + 1);
    assert_int_equal(ds.items[2 * u + 1], u % 97 + 2);
  }
  data_free(&ds);
}

/* The largest item id is accepted and sets NI. */
static void test_load_item_limits(void **state) {
  data_fixture *f = *state;
  data_set ds;
  load_text(f, "1 2147483647 1\n", &ds);
  assert_int_equal(ds.NI, 2147483647);
  data_free(&ds);
}

/* A malformed file must fail with FL_EFORMAT and "path:line: what 'token'". */
static void expect_format_error(data_fixture *f, const char *text, size_t line, const char *what) {
  char err[512], want[512];
  data_set ds;
  tu_write_file(f->path, text);
  memset(&ds, 0x5a, sizeof ds);
  int rc = data_load(f->path, &ds, err, sizeof err);
  assert_int_equal(rc, FL_EFORMAT);
  snprintf(want, sizeof want, "%s:%zu: %s", f->path, line, what);
  if (strcmp(err, want) != 0) fail_msg("got \"%s\", want \"%s\"", err, want);
  assert_null(ds.items); /* zeroed on failure */
  assert_int_equal(ds.nusers, 0);
}

static void test_load_malformed(void **state) {
  data_fixture *f = *state;
  expect_format_error(f, "1 2\n2 x\n", 2, "item id is not an integer: 'x'");
  expect_format_error(f, "1 2\n2 3 4a 5\n", 2, "item id is not an integer: '4a'");
  expect_format_error(f, "1 2\n\n3\n4 5\n", 3, "a user id without any item");
  expect_format_error(f, "1 2\n3   \r\n", 2, "a user id without any item");
  expect_format_error(f, "1 0\n", 1, "item id out of range (1..2147483647): '0'");
  expect_format_error(f, "1 -4\n", 1, "item id out of range (1..2147483647): '-4'");
  expect_format_error(f, "1 2147483648\n", 1, "item id out of range (1..2147483647): '2147483648'");
  expect_format_error(f, "1 2\n1 99999999999999999999999\n", 2,
                      "item id out of range (1..2147483647): '99999999999999999999999'");
  expect_format_error(f, "u1 2\n", 1, "user id is not an integer: 'u1'");
  expect_format_error(f, "1.5 2\n", 1, "user id is not an integer: '1.5'");
  expect_format_error(f, "- 2\n", 1, "user id is not an integer: '-'");
  expect_format_error(f, "9223372036854775808 2\n", 1,
                      "user id out of range: '9223372036854775808'");
  /* A NUL byte is not whitespace. */
  tu_write_file(f->path, "1 2\n");
  FILE *fp = fopen(f->path, "ab");
  assert_non_null(fp);
  fwrite("3 4\0 5\n", 1, 7, fp);
  fclose(fp);
  char err[512], want[512];
  data_set ds;
  assert_int_equal(data_load(f->path, &ds, err, sizeof err), FL_EFORMAT);
  snprintf(want, sizeof want, "%s:2: item id is not an integer:", f->path);
  assert_int_equal(strncmp(err, want, strlen(want)), 0);
}

static void test_load_io_errors(void **state) {
  data_fixture *f = *state;
  char err[512], want[512];
  data_set ds;
  char missing[400];
  snprintf(missing, sizeof missing, "%s/missing.txt", f->dir);
  assert_int_equal(data_load(missing, &ds, err, sizeof err), -ENOENT);
  snprintf(want, sizeof want, "%s: %s", missing, strerror(ENOENT));
  assert_string_equal(err, want);
  assert_int_equal(data_load(f->dir, &ds, err, sizeof err), -EISDIR);

  tu_write_file(f->path, "");
  assert_int_equal(data_load(f->path, &ds, err, sizeof err), FL_EEMPTY);
  snprintf(want, sizeof want, "%s: no interactions", f->path);
  assert_string_equal(err, want);
  tu_write_file(f->path, "\n  \n\t\r\n");
  assert_int_equal(data_load(f->path, &ds, err, sizeof err), FL_EEMPTY);
  /* err may be NULL. */
  assert_int_equal(data_load(f->path, &ds, NULL, 0), FL_EEMPTY);
}

static void test_truncate(void **state) {
  data_fixture *f = *state;
  data_set ds;
  load_text(f, "10 1 2 3 4 5\n7 6 2 8\n3 9\n", &ds);
  data_truncate(&ds, 5); /* nobody is longer: unchanged */
  assert_reference_set(&ds);
  data_truncate(&ds, 2);
  static const size_t off2[] = {0, 2, 4, 5};
  static const int32_t items2[] = {4, 5, 2, 8, 9};
  assert_memory_equal(ds.off, off2, sizeof off2);
  assert_memory_equal(ds.items, items2, sizeof items2);
  assert_int_equal(ds.NI, 9); /* the catalogue does not shrink */
  assert_int_equal(ds.nusers, 3);
  data_truncate(&ds, 1);
  static const size_t off1[] = {0, 1, 2, 3};
  static const int32_t items1[] = {5, 8, 9};
  assert_memory_equal(ds.off, off1, sizeof off1);
  assert_memory_equal(ds.items, items1, sizeof items1);
  data_truncate(&ds, 0);
  static const size_t off0[] = {0, 0, 0, 0};
  assert_memory_equal(ds.off, off0, sizeof off0);
  data_free(&ds);
}

/* Users of lengths 5, 3, 1, 4, 2, 6:
 *   u0 1 2 3 4 5     training part 1 2 3     -> targets 2 (end 1), 3 (end 2)
 *   u1 6 7 8         training part 6         -> none
 *   u2 9             training part empty     -> none
 *   u3 1 3 5 7       training part 1 3       -> target 3 (end 1)
 *   u4 2 4           training part empty     -> none
 *   u5 8 7 6 5 4 3   training part 8 7 6 5   -> 7, 6, 5 (ends 1, 2, 3) */
static void test_train_samples(void **state) {
  data_fixture *f = *state;
  data_set ds;
  load_text(f, "1 1 2 3 4 5\n2 6 7 8\n3 9\n4 1 3 5 7\n5 2 4\n6 8 7 6 5 4 3\n", &ds);
  data_sample *s;
  size_t n = data_train_samples(&ds, &s);
  static const data_sample want[] = {{0, 1}, {0, 2}, {3, 1}, {5, 1}, {5, 2}, {5, 3}};
  assert_int_equal(n, 6);
  for (size_t k = 0; k < n; k++) {
    assert_int_equal(s[k].user, want[k].user);
    assert_int_equal(s[k].end, want[k].end);
  }
  free(s);
  /* No user long enough: no samples, but a freeable array. */
  data_truncate(&ds, 3);
  n = data_train_samples(&ds, &s);
  assert_int_equal(n, 0);
  assert_non_null(s);
  free(s);
  data_free(&ds);
}

/* One user 11 12 13 14 15 16, another 21 22 23; L = 3.
 *   (0, end 1): context 11          -> target 12
 *   (0, end 5): context 13 14 15    -> target 16 (only the last L items)
 *   (1, end 2): context 21 22       -> target 23
 *   (0, end 3): context 11 12 13    -> target 14 (exactly L) */
static void test_pack(void **state) {
  data_fixture *f = *state;
  data_set ds;
  load_text(f, "1 11 12 13 14 15 16\n2 21 22 23\n", &ds);
  const data_sample s[] = {{0, 1}, {0, 5}, {1, 2}, {0, 3}};
  size_t B = 4, L = 3;
  int32_t tok[12], tgt[4];
  size_t off[5];
  model_batch b;

  memset(tok, 0x7f, sizeof tok);
  data_pack(&ds, s, B, L, 0, tok, off, tgt, &b);
  static const int32_t ptok[] = {11, 13, 14, 15, 21, 22, 11, 12, 13};
  static const size_t poff[] = {0, 1, 4, 6, 9};
  static const int32_t ptgt[] = {12, 16, 23, 14};
  assert_int_equal(b.B, 4);
  assert_int_equal(b.T, 9);
  assert_ptr_equal(b.tok, tok);
  assert_ptr_equal(b.off, off);
  assert_ptr_equal(b.tgt, tgt);
  assert_memory_equal(tok, ptok, sizeof ptok);
  assert_memory_equal(off, poff, sizeof poff);
  assert_memory_equal(tgt, ptgt, sizeof ptgt);

  memset(tok, 0x7f, sizeof tok);
  data_pack(&ds, s, B, L, 1, tok, off, tgt, &b);
  static const int32_t dtok[] = {0, 0, 11, 13, 14, 15, 0, 21, 22, 11, 12, 13};
  static const size_t doff[] = {0, 3, 6, 9, 12};
  assert_int_equal(b.B, 4);
  assert_int_equal(b.T, 12);
  assert_memory_equal(tok, dtok, sizeof dtok);
  assert_memory_equal(off, doff, sizeof doff);
  assert_memory_equal(tgt, ptgt, sizeof ptgt);

  /* A sub-range of samples and B = 0. */
  data_pack(&ds, s + 2, 1, L, 0, tok, off, tgt, &b);
  assert_int_equal(b.T, 2);
  assert_int_equal(tok[0], 21);
  assert_int_equal(tgt[0], 23);
  data_pack(&ds, s, 0, L, 0, tok, off, tgt, &b);
  assert_int_equal(b.B, 0);
  assert_int_equal(b.T, 0);
  assert_int_equal(off[0], 0);
  data_free(&ds);
}

/* Packing every training sample reproduces torch_ref.py's train_samples windows. */
static void test_pack_matches_reference(void **state) {
  data_fixture *f = *state;
  data_set ds;
  /* Users longer and shorter than L = 4, interleaved lines. */
  load_text(f, "5 1 2 3\n6 9 8 7 6 5 4 3 2 1\n5 4 5 6 7 8\n7 3 1 4\n", &ds);
  data_sample *s;
  size_t n = data_train_samples(&ds, &s), L = 4;
  int32_t *tok = xmalloc(n * L * sizeof *tok), *tgt = xmalloc(n * sizeof *tgt);
  size_t *off = xmalloc((n + 1) * sizeof *off);
  model_batch b;
  data_pack(&ds, s, n, L, 1, tok, off, tgt, &b);
  /* Reference: for s in seqs: t = s[:-2]; for i in 1..len(t)-1: ctx = t[max(0,i-L):i]. */
  size_t k = 0;
  for (size_t u = 0; u < ds.nusers; u++) {
    const int32_t *seq = ds.items + ds.off[u];
    size_t len = ds.off[u + 1] - ds.off[u], nt = len > 2 ? len - 2 : 0;
    for (size_t i = 1; i < nt; i++, k++) {
      size_t lo = i > L ? i - L : 0, nctx = i - lo;
      for (size_t j = 0; j < L; j++) {
        int32_t want = j < L - nctx ? 0 : seq[lo + j - (L - nctx)];
        assert_int_equal(tok[k * L + j], want);
      }
      assert_int_equal(tgt[k], seq[i]);
    }
  }
  assert_int_equal(k, n);
  /* user 5: 8 items, 6 training, 5 samples; user 6: 9 items, 6 samples; user 7: 3 items, none */
  assert_int_equal(n, 5 + 6 + 0);
  free(tok);
  free(tgt);
  free(off);
  free(s);
  data_free(&ds);
}

int test_data(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_load_formats, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_many_users, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_item_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_malformed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_io_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_train_samples, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pack, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pack_matches_reference, setup, teardown),
  };
  return cmocka_run_group_tests_name("model/data", tests, NULL, NULL);
}
