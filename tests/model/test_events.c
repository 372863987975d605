/* tests/model/test_events.c: timestamped interaction files (`user item ts`, RecBole's .inter)
 * and the split into a trained part and a stream (model/events.c). Every file is written to a
 * temp dir by the test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"
#include "testutil.h"

typedef struct {
  char dir[256], path[320];
} ev_fixture;

static int setup(void **state) {
  ev_fixture *f = xcalloc(1, sizeof *f);
  if (tu_mkdtemp(f->dir, sizeof f->dir) != 0) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  ev_fixture *f = *state;
  tu_rmtree(f->dir);
  free(f);
  return 0;
}

/* Writes text to <dir>/name and loads it with fmt: returns the code, err filled. */
static int load(ev_fixture *f, const char *name, const char *text, data_format fmt, data_set *ds,
                char *err, size_t errlen) {
  snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
  tu_write_file(f->path, text);
  return data_load_format(f->path, fmt, ds, err, errlen);
}

/* The user's items in order, as a string "1 2 3". */
static const char *seq(const data_set *ds, size_t u, char *buf, size_t n) {
  size_t w = 0;
  buf[0] = 0;
  for (size_t i = ds->off[u]; i < ds->off[u + 1] && w < n; i++)
    w += (size_t)snprintf(buf + w, n - w, "%s%d", i > ds->off[u] ? " " : "", ds->items[i]);
  return buf;
}

/* An .inter file out of time order with string tokens: items are numbered by first appearance
 * in time order, each user's sequence is sorted by time (ties in file order), timestamps kept,
 * user ids by their numbers, auto-detected by the name. */
static void test_inter(void **state) {
  ev_fixture *f = *state;
  data_set ds;
  char err[256], b[64];
  const char *text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                     "7\tbanana\t3\t300\n"
                     "5\tapple\t4\t100\n"
                     "7\tapple\t1\t200\n"
                     "\n"
                     "5\tcherry\t2\t400\n"
                     "5\tbanana\t5\t400\r\n";
  assert_int_equal(load(f, "x.inter", text, DATA_FORMAT_AUTO, &ds, err, sizeof err), 0);
  assert_int_equal(ds.nusers, 2);
  assert_int_equal(ds.NI, 3);
  assert_non_null(ds.ts);
  /* time order: apple(5,100) apple(7,200) banana(7,300) cherry(5,400) banana(5,400) */
  assert_int_equal(ds.user_id[0], 5);
  assert_int_equal(ds.user_id[1], 7);
  assert_string_equal(seq(&ds, 0, b, sizeof b), "1 3 2"); /* apple cherry banana */
  assert_string_equal(seq(&ds, 1, b, sizeof b), "1 2");   /* apple banana */
  assert_true(ds.ts[0] == 100.0 && ds.ts[1] == 400.0 && ds.ts[2] == 400.0);
  data_free(&ds);
  /* without a timestamp column: file order, no ts */
  text = "item_id:token\tuser_id:token\nb\tu1\na\tu2\na\tu1\n";
  assert_int_equal(load(f, "y.inter", text, DATA_FORMAT_INTER, &ds, err, sizeof err), 0);
  assert_null(ds.ts);
  assert_string_equal(seq(&ds, 0, b, sizeof b), "1 2");
  assert_int_equal(ds.user_id[0], 1); /* not numbers: index + 1 */
  assert_int_equal(ds.user_id[1], 2);
  data_free(&ds);
}

/* `user item ts` lines, any whitespace. */
static void test_uit(void **state) {
  ev_fixture *f = *state;
  data_set ds;
  char err[256], b[64];
  assert_int_equal(
      load(f, "a.txt", "1 10 5\n2  20\t1.5\n1 20 2\n", DATA_FORMAT_UIT, &ds, err, sizeof err), 0);
  /* time order: (2, 20, 1.5) (1, 20, 2) (1, 10, 5): user 2 first, 20 is item 1 */
  assert_int_equal(ds.user_id[0], 2);
  assert_string_equal(seq(&ds, 0, b, sizeof b), "1");
  assert_string_equal(seq(&ds, 1, b, sizeof b), "1 2");
  data_free(&ds);
}

/* Malformed lines: a clear error naming the file and the line; nothing allocated. */
static void test_malformed(void **state) {
  ev_fixture *f = *state;
  const char *hdr = "user_id:token\titem_id:token\ttimestamp:float\n";
  struct {
    const char *name, *text, *want;
    data_format fmt;
  } cases[] = {
      {"h.inter", "user_id\titem_id\n1\t2\n", ":1: a header field is not name:type",
       DATA_FORMAT_INTER},
      {"h2.inter", "user:token\titem_id:token\n", ":1: the header has no user_id",
       DATA_FORMAT_INTER},
      {"f.inter", "", "no interactions", DATA_FORMAT_INTER},
      {"g.inter", NULL, ":3: 2 fields, expected 3", DATA_FORMAT_INTER},
      {"t.inter", NULL, ":2: the timestamp is not a number: 'yesterday'", DATA_FORMAT_INTER},
      {"e.inter", NULL, ":2: an empty user id", DATA_FORMAT_INTER},
      {"m.inter", NULL, ":2: more than 3 fields", DATA_FORMAT_INTER},
      {"u.txt", "1 2 3\n1 2\n", ":2: 2 fields, expected 3", DATA_FORMAT_UIT},
      {"v.txt", "1 2 3 4\n", ":1: more than 3 fields", DATA_FORMAT_UIT},
  };
  const char *bodies[] = {NULL,       NULL,          NULL, "1\t2\t3\n4\t5\n", "1\t2\tyesterday\n",
                          "\t2\t3\n", "1\t2\t3\t4\n"};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[256], err[256] = "";
    if (cases[k].text)
      snprintf(text, sizeof text, "%s", cases[k].text);
    else
      snprintf(text, sizeof text, "%s%s", hdr, bodies[k]);
    data_set ds;
    int rc = load(f, cases[k].name, text, cases[k].fmt, &ds, err, sizeof err);
    if (rc != (strstr(cases[k].want, "no interactions") ? FL_EEMPTY : FL_EFORMAT))
      fail_msg("case %zu: code %d: %s", k, rc, err);
    assert_int_equal(rc, strstr(cases[k].want, "no interactions") ? FL_EEMPTY : FL_EFORMAT);
    if (!strstr(err, cases[k].want) || !strstr(err, cases[k].name))
      fail_msg("case %zu: '%s' does not say '%s'", k, err, cases[k].want);
    assert_null(ds.off);
  }
}

/* The split by time takes the first 60% of events in time order; the stream after it is in
 * time order; each user's part before is a prefix. Per user: each user's first 60% of items,
 * then the rest round robin. */
static void test_split(void **state) {
  ev_fixture *f = *state;
  data_set ds;
  char err[256];
  const char *text = "u1 a 1\nu2 b 2\nu1 c 3\nu2 a 4\nu3 d 5\nu1 b 6\nu3 a 7\nu2 c 8\nu1 d 9\n"
                     "u3 b 10\n";
  assert_int_equal(load(f, "s.txt", text, DATA_FORMAT_UIT, &ds, err, sizeof err), 0);
  data_split sp;
  assert_int_equal(data_split_make(&ds, 0.6, 1, &sp), 0);
  assert_int_equal(sp.nafter, 4); /* 10 events, 6 before */
  assert_true(sp.split_ts == 7.0);
  assert_int_equal(sp.cut[0], 3); /* u1: a c b */
  assert_int_equal(sp.cut[1], 2); /* u2: b a */
  assert_int_equal(sp.cut[2], 1); /* u3: d */
  double last = 0;
  for (size_t k = 0; k < sp.nafter; k++) {
    double ts = ds.ts[ds.off[sp.after[k].user] + sp.after[k].end];
    assert_true(ts >= last && ts >= 7.0);
    last = ts;
  }
  data_set pre;
  data_prefix(&ds, sp.cut, &pre);
  assert_int_equal(pre.off[3], 6);
  assert_int_equal(pre.NI, 4); /* a b c d all appear before 7 */
  data_free(&pre);
  data_split_free(&sp);

  assert_int_equal(data_split_make(&ds, 0.6, 0, &sp), 0);
  assert_int_equal(sp.cut[0], 2); /* 4 items: floor(2.4) */
  assert_int_equal(sp.cut[2], 1); /* 3 items: floor(1.8) */
  assert_int_equal(sp.nafter, 10 - 2 - 1 - 1);
  assert_int_equal(sp.after[0].user, 0);
  assert_int_equal(sp.after[0].end, 2);
  assert_int_equal(sp.after[1].user, 1);
  data_split_free(&sp);
  assert_int_equal(data_split_make(&ds, 1.0, 0, &sp), FL_ERANGE);
  data_free(&ds);
  /* by time without timestamps */
  assert_int_equal(load(f, "n.txt", "1 2 3\n", DATA_FORMAT_SEQ, &ds, err, sizeof err), 0);
  assert_int_equal(data_split_make(&ds, 0.5, 1, &sp), FL_EFORMAT);
  data_split_free(&sp);
  data_free(&ds);
}

int test_events(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_inter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_uit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_split, setup, teardown),
  };
  return cmocka_run_group_tests_name("model/events", tests, NULL, NULL);
}
