/* tests/state/test_state.c: the RocksDB store of state/, on a real RocksDB in temp dirs.
 *
 * Sequences are checked against a reference model (per user, the newest seq_len entries)
 * after every batch and after reopening. Failures are real: a commit fails inside
 * rocksdb_write (state_test_fail_commits sends invalid write options), corrupt values are
 * written into the column families with RocksDB's own API, and open errors come from real
 * damaged directories. Crash atomicity runs a writer in a separate process (this executable,
 * re-executed in child mode) and SIGKILLs it at a random moment: after reopening, the stored
 * offsets must say exactly which events are in the sequences, and nothing acknowledged may be
 * missing. Every loop is bounded; the whole group takes a few seconds under ASan. */
#define _GNU_SOURCE
#include "testutil.h"

#include "common/common.h"
#include "state/internal.h"
#include "state/state.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct {
  char dir[256]; /* the test's temp dir */
  char db[320];  /* dir/db: the store */
} fixture;

static int fx_setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  if (!fx || tu_mkdtemp(fx->dir, sizeof fx->dir) != 0) {
    free(fx);
    return -1;
  }
  snprintf(fx->db, sizeof fx->db, "%s/db", fx->dir);
  *state = fx;
  return 0;
}

static int fx_teardown(void **state) {
  fixture *fx = *state;
  tu_rmtree(fx->dir);
  free(fx);
  return 0;
}

static state_opts opts_for(const char *dir, size_t seq_len) {
  return (state_opts){.dir = dir,
                      .seq_len = seq_len,
                      .cache_mb = 8,
                      .compression = STATE_COMPRESSION_LZ4,
                      .wal = 1,
                      .sync = 0};
}

static state_db *open_ok(const char *dir, size_t seq_len) {
  state_db *db = NULL;
  char err[512] = "";
  state_opts o = opts_for(dir, seq_len);
  int rc = state_open(&db, &o, err, sizeof err);
  if (rc != 0) fail_msg("state_open(%s) = %d: %s", dir, rc, err);
  return db;
}

/* Opens with o expecting code; returns the message. */
static const char *open_fails(const state_opts *o, int code) {
  static char err[1024];
  state_db *db = (state_db *)0x1;
  err[0] = 0;
  int rc = state_open(&db, o, err, sizeof err);
  if (rc != code) fail_msg("state_open(%s) = %d (%s), expected %d", o->dir, rc, err, code);
  assert_null(db);
  assert_true(strlen(err) > 0);
  assert_null(strchr(err, '\n'));
  return err;
}

static void commit_ok(state_batch *b) {
  char err[512] = "";
  int rc = state_batch_commit(b, err, sizeof err);
  if (rc != 0) fail_msg("commit = %d: %s", rc, err);
  assert_int_equal(state_batch_events(b), 0);
}

static void add_ok(state_batch *b, const char *user, const char *item, int64_t ts, float w) {
  assert_int_equal(state_batch_add(b, user, strlen(user), item, strlen(item), ts, w), 0);
}

static int64_t item_idx(const state_db *db, const char *id) {
  return state_item_find(db, id, strlen(id));
}

static int64_t user_idx(const state_db *db, const char *id) {
  return state_user_find(db, id, strlen(id));
}

/* ---- reference model ---- */

#define MODEL_MAX 64 /* longest modelled sequence */

typedef struct {
  size_t n;                 /* entries held, <= seq_len */
  state_entry e[MODEL_MAX]; /* oldest first */
} model_seq;

static void model_push(model_seq *m, size_t seq_len, state_entry e) {
  if (m->n == seq_len) {
    memmove(m->e, m->e + 1, (seq_len - 1) * sizeof e);
    m->n--;
  }
  m->e[m->n++] = e;
}

static void assert_entries(const state_entry *got, const state_entry *want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(got[i].item, want[i].item);
    assert_int_equal(got[i].ts_ms, want[i].ts_ms);
    assert_memory_equal(&got[i].weight, &want[i].weight, sizeof(float));
  }
}

/* user's stored sequence equals m (FL_EMISSING when m is empty). */
static void assert_seq(state_db *db, const char *user, size_t ulen, const model_seq *m) {
  state_entry out[MODEL_MAX + 4];
  size_t n = 99;
  int rc = state_seq_get(db, user, ulen, out, MODEL_MAX + 4, &n);
  if (m->n == 0) {
    assert_int_equal(rc, FL_EMISSING);
    assert_int_equal(n, 0);
    return;
  }
  if (rc != 0) fail_msg("state_seq_get(%.*s) = %d", (int)ulen, user, rc);
  assert_int_equal(n, m->n);
  assert_entries(out, m->e, n);
  /* A smaller max gives the newest entries. */
  if (m->n >= 2) {
    assert_int_equal(state_seq_get(db, user, ulen, out, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_entries(out, m->e + m->n - 2, 2);
  }
}

/* ---- sequences over many batches ---- */

#define NU 40
#define NI 25

typedef struct {
  const model_seq *model; /* [NU] */
  size_t users;           /* callbacks so far */
} foreach_ctx;

static int foreach_check(void *ctx, const char *user, size_t ulen, const state_entry *e, size_t n) {
  foreach_ctx *c = ctx;
  char id[32];
  unsigned u = 0;
  assert_true(ulen < sizeof id);
  memcpy(id, user, ulen);
  id[ulen] = 0;
  assert_int_equal(sscanf(id, "user-%u", &u), 1);
  assert_true(u < NU);
  assert_int_equal(n, c->model[u].n);
  assert_entries(e, c->model[u].e, n);
  c->users++;
  return 0;
}

static void check_all(state_db *db, const model_seq *model) {
  size_t with_events = 0;
  for (unsigned u = 0; u < NU; u++) {
    char uid[32];
    int ulen = snprintf(uid, sizeof uid, "user-%u", u);
    assert_seq(db, uid, (size_t)ulen, &model[u]);
    with_events += model[u].n > 0;
  }
  foreach_ctx c = {model, 0};
  assert_int_equal(state_seq_foreach(db, foreach_check, &c), 0);
  assert_int_equal(c.users, with_events);
}

static void test_sequences_many_batches(void **state) {
  fixture *fx = *state;
  const size_t L = 6;
  state_db *db = open_ok(fx->db, L);
  state_batch *b = state_batch_new(db);
  assert_non_null(b);
  model_seq model[NU];
  memset(model, 0, sizeof model);
  fl_rng r;
  fl_rng_seed(&r, 1);
  int64_t ts = 1700000000000;
  for (int batch = 0; batch < 30; batch++) {
    size_t m = (size_t)fl_rng_below(&r, 60);
    for (size_t j = 0; j < m; j++) {
      unsigned u = (unsigned)fl_rng_below(&r, NU), it = (unsigned)fl_rng_below(&r, NI);
      char uid[32], iid[32];
      snprintf(uid, sizeof uid, "user-%u", u);
      snprintf(iid, sizeof iid, "item-%u", it);
      float w = (float)fl_rng_below(&r, 8) * 0.25f - 0.5f;
      add_ok(b, uid, iid, ts, w);
      int64_t idx = item_idx(db, iid);
      assert_true(idx >= 1 && idx <= NI);
      model_push(&model[u], L, (state_entry){(uint32_t)idx, w, ts});
      ts += 17;
    }
    assert_int_equal(state_batch_events(b), m);
    assert_int_equal(state_batch_offset(b, "events", 0, batch * 100), 0);
    assert_int_equal(state_batch_offset(b, "events", 0, batch * 100 + 1), 0); /* last wins */
    assert_int_equal(state_batch_offset(b, "events", 1, batch), 0);
    commit_ok(b);
    check_all(db, model);
  }
  int64_t next = 0;
  assert_int_equal(state_offset_get(db, "events", 0, &next), 0);
  assert_int_equal(next, 2901);
  assert_int_equal(state_offset_get(db, "events", 1, &next), 0);
  assert_int_equal(next, 29);
  /* Remember the dictionaries, then reopen. */
  int64_t items[NI], users[NU];
  for (unsigned i = 0; i < NI; i++) {
    char iid[32];
    snprintf(iid, sizeof iid, "item-%u", i);
    items[i] = item_idx(db, iid);
  }
  for (unsigned u = 0; u < NU; u++) {
    char uid[32];
    snprintf(uid, sizeof uid, "user-%u", u);
    users[u] = user_idx(db, uid);
  }
  uint32_t nitems = state_item_count(db), nusers = state_user_count(db);
  state_batch_free(b);
  state_close(db);

  db = open_ok(fx->db, L);
  check_all(db, model);
  assert_int_equal(state_item_count(db), nitems);
  assert_int_equal(state_user_count(db), nusers);
  for (unsigned i = 0; i < NI; i++) {
    char iid[32];
    snprintf(iid, sizeof iid, "item-%u", i);
    assert_int_equal(item_idx(db, iid), items[i]);
    if (items[i] > 0) {
      size_t len = 0;
      const char *s = state_item_id(db, (uint32_t)items[i], &len);
      assert_non_null(s);
      assert_int_equal(len, strlen(iid));
      assert_memory_equal(s, iid, len);
    }
  }
  for (unsigned u = 0; u < NU; u++) {
    char uid[32];
    snprintf(uid, sizeof uid, "user-%u", u);
    assert_int_equal(user_idx(db, uid), users[u]);
    if (users[u] > 0) {
      size_t len = 0;
      const char *s = state_user_id(db, (uint32_t)users[u], &len);
      assert_int_equal(len, strlen(uid));
      assert_memory_equal(s, uid, len);
    }
  }
  assert_int_equal(state_offset_get(db, "events", 0, &next), 0);
  assert_int_equal(next, 2901);
  state_close(db);
}

/* A user's events within one batch become one operand of at most seq_len entries. */
static void test_coalesce_in_batch(void **state) {
  fixture *fx = *state;
  state_db *db = open_ok(fx->db, 3);
  state_batch *b = state_batch_new(db);
  for (int i = 0; i < 10; i++) {
    char iid[16];
    snprintf(iid, sizeof iid, "i%d", i);
    add_ok(b, "a", iid, 100 + i, (float)i);
    if (i % 4 == 0) add_ok(b, "b", iid, 200 + i, 1.0f);
  }
  commit_ok(b);
  state_entry out[8];
  size_t n = 0;
  assert_int_equal(state_seq_get(db, "a", 1, out, 8, &n), 0);
  assert_int_equal(n, 3);
  for (int k = 0; k < 3; k++) {
    assert_int_equal(out[k].item, 8 + k); /* i7, i8, i9 */
    assert_int_equal(out[k].ts_ms, 107 + k);
    assert_true(out[k].weight == (float)(7 + k));
  }
  assert_int_equal(state_seq_get(db, "b", 1, out, 8, &n), 0);
  assert_int_equal(n, 3); /* i0, i4, i8 */
  assert_int_equal(out[0].ts_ms, 200);
  assert_int_equal(out[2].ts_ms, 208);
  assert_int_equal(state_seq_get(db, "c", 1, out, 8, &n), FL_EMISSING);
  /* A later batch appends to what is stored. */
  add_ok(b, "b", "new", 300, 2.0f);
  commit_ok(b);
  assert_int_equal(state_seq_get(db, "b", 1, out, 8, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(out[0].ts_ms, 204);
  assert_int_equal(out[2].ts_ms, 300);
  assert_int_equal(out[2].item, 11);
  state_batch_free(b);
  state_close(db);
}

/* ---- dictionaries ---- */

static void test_dictionary_dense_and_rollback(void **state) {
  fixture *fx = *state;
  state_db *db = open_ok(fx->db, 4);
  state_batch *b = state_batch_new(db);
  assert_null(state_batch_new(db)); /* one batch per store */
  add_ok(b, "u1", "x", 1, 1);
  add_ok(b, "u2", "y", 2, 1);
  add_ok(b, "u1", "z", 3, 1);
  assert_int_equal(item_idx(db, "x"), 1);
  assert_int_equal(item_idx(db, "y"), 2);
  assert_int_equal(item_idx(db, "z"), 3);
  assert_int_equal(user_idx(db, "u1"), 1);
  assert_int_equal(user_idx(db, "u2"), 2);
  assert_int_equal(state_item_count(db), 3);
  assert_int_equal(state_user_count(db), 2);
  size_t len = 0;
  const char *s = state_item_id(db, 2, &len);
  assert_int_equal(len, 1);
  assert_memory_equal(s, "y", 1);
  assert_null(state_item_id(db, 0, &len));
  assert_null(state_item_id(db, 4, &len));
  s = state_user_id(db, 2, &len);
  assert_int_equal(len, 2);
  assert_memory_equal(s, "u2", 2);
  assert_null(state_user_id(db, 3, &len));

  /* Clear rolls everything back; a new order gives new indices. */
  state_batch_clear(b);
  assert_int_equal(state_batch_events(b), 0);
  assert_int_equal(state_item_count(db), 0);
  assert_int_equal(state_user_count(db), 0);
  assert_int_equal(item_idx(db, "x"), -1);
  assert_int_equal(user_idx(db, "u1"), -1);
  add_ok(b, "u2", "z", 4, 1);
  add_ok(b, "u1", "x", 5, 1);
  assert_int_equal(item_idx(db, "z"), 1);
  assert_int_equal(item_idx(db, "x"), 2);
  assert_int_equal(user_idx(db, "u2"), 1);
  assert_int_equal(user_idx(db, "u1"), 2);
  commit_ok(b);

  /* A clear after a commit rolls back only the new batch's entries. */
  add_ok(b, "u3", "w", 6, 1);
  add_ok(b, "u1", "y", 7, 1);
  assert_int_equal(item_idx(db, "w"), 3);
  assert_int_equal(item_idx(db, "y"), 4);
  state_batch_clear(b);
  assert_int_equal(state_item_count(db), 2);
  assert_int_equal(state_user_count(db), 2);
  assert_int_equal(item_idx(db, "w"), -1);
  assert_int_equal(item_idx(db, "x"), 2);
  add_ok(b, "u4", "y", 8, 1);
  assert_int_equal(item_idx(db, "y"), 3);
  assert_int_equal(user_idx(db, "u4"), 3);
  commit_ok(b);
  state_batch_free(b);
  state_close(db);

  /* Stable across reopen, and only committed events are stored. */
  db = open_ok(fx->db, 4);
  assert_int_equal(state_item_count(db), 3);
  assert_int_equal(state_user_count(db), 3);
  assert_int_equal(item_idx(db, "z"), 1);
  assert_int_equal(item_idx(db, "x"), 2);
  assert_int_equal(item_idx(db, "y"), 3);
  assert_int_equal(item_idx(db, "w"), -1);
  assert_int_equal(user_idx(db, "u2"), 1);
  assert_int_equal(user_idx(db, "u1"), 2);
  assert_int_equal(user_idx(db, "u4"), 3);
  assert_int_equal(user_idx(db, "u3"), -1);
  state_entry out[4];
  size_t n;
  assert_int_equal(state_seq_get(db, "u1", 2, out, 4, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].item, 2);
  assert_int_equal(out[0].ts_ms, 5);
  assert_int_equal(state_seq_get(db, "u3", 2, out, 4, &n), FL_EMISSING);
  /* Freeing a batch with content rolls it back too. */
  b = state_batch_new(db);
  add_ok(b, "u5", "v", 9, 1);
  assert_int_equal(state_item_count(db), 4);
  state_batch_free(b);
  assert_int_equal(state_item_count(db), 3);
  assert_int_equal(state_user_count(db), 3);
  state_close(db);
}

/* Items interned without events (an imported anchor's catalogue) get the next indices, are
 * stored by a commit that has nothing else, and keep their indices for later events. */
static void test_item_intern(void **state) {
  fixture *fx = *state;
  state_db *db = open_ok(fx->db, 4);
  state_batch *b = state_batch_new(db);
  add_ok(b, "u1", "a", 1, 1);
  assert_int_equal(state_batch_commit(b, NULL, 0), 0);
  assert_int_equal(state_batch_item(b, "b", 1), 2);
  assert_int_equal(state_batch_item(b, "a", 1), 1);
  assert_int_equal(state_batch_item(b, "c", 1), 3);
  assert_int_equal(state_batch_item(b, "", 0), FL_ERANGE);
  assert_int_equal(state_batch_events(b), 0);
  assert_int_equal(state_batch_commit(b, NULL, 0), 0);
  state_batch_free(b);
  state_close(db);
  db = open_ok(fx->db, 4);
  assert_int_equal(state_item_count(db), 3);
  assert_int_equal(item_idx(db, "c"), 3);
  b = state_batch_new(db);
  add_ok(b, "u2", "b", 2, 1);
  add_ok(b, "u2", "d", 3, 1);
  assert_int_equal(item_idx(db, "d"), 4);
  assert_int_equal(state_batch_commit(b, NULL, 0), 0);
  state_entry out[4];
  size_t n;
  assert_int_equal(state_seq_get(db, "u2", 2, out, 4, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(out[0].item, 2);
  state_batch_free(b);
  state_close(db);
}

/* ---- failed commits ---- */

static void test_commit_failure_is_retryable(void **state) {
  fixture *fx = *state;
  state_db *db = open_ok(fx->db, 4);
  state_batch *b = state_batch_new(db);
  add_ok(b, "ua", "i1", 1, 1);
  add_ok(b, "ub", "i2", 2, 1);
  assert_int_equal(state_batch_offset(b, "t", 3, 42), 0);
  state_test_fail_commits(db, 2);
  for (int attempt = 0; attempt < 2; attempt++) {
    char err[512] = "";
    assert_int_equal(state_batch_commit(b, err, sizeof err), FL_ESTORAGE);
    assert_non_null(strstr(err, "commit of 2 events failed"));
    /* The batch is intact and nothing was stored. */
    assert_int_equal(state_batch_events(b), 2);
    assert_int_equal(state_item_count(db), 2);
    assert_int_equal(state_user_count(db), 2);
    state_entry out[4];
    size_t n;
    int64_t next;
    assert_int_equal(state_seq_get(db, "ua", 2, out, 4, &n), FL_EMISSING);
    assert_int_equal(state_offset_get(db, "t", 3, &next), FL_EMISSING);
  }
  commit_ok(b);
  state_entry out[4];
  size_t n;
  int64_t next = 0;
  assert_int_equal(state_seq_get(db, "ua", 2, out, 4, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].item, 1);
  assert_int_equal(state_offset_get(db, "t", 3, &next), 0);
  assert_int_equal(next, 42);

  /* A failed commit given up with clear: its indices are reassigned by the next batch. */
  add_ok(b, "uc", "i3", 3, 1);
  state_test_fail_commits(db, 1);
  char err[512];
  assert_int_equal(state_batch_commit(b, err, sizeof err), FL_ESTORAGE);
  state_batch_clear(b);
  add_ok(b, "ud", "i4", 4, 1);
  assert_int_equal(item_idx(db, "i4"), 3);
  commit_ok(b);
  state_batch_free(b);
  state_close(db);

  db = open_ok(fx->db, 4);
  assert_int_equal(item_idx(db, "i3"), -1);
  assert_int_equal(item_idx(db, "i4"), 3);
  assert_int_equal(user_idx(db, "uc"), -1);
  assert_int_equal(user_idx(db, "ud"), 3);
  assert_int_equal(state_seq_get(db, "uc", 2, out, 4, &n), FL_EMISSING);
  state_stats st;
  assert_int_equal(state_get_stats(db, &st), 0);
  assert_int_equal(st.events, 3);
  state_close(db);
}

/* ---- offsets ---- */

static void test_offsets(void **state) {
  fixture *fx = *state;
  state_db *db = open_ok(fx->db, 4);
  state_batch *b = state_batch_new(db);
  /* Topic "a" and "ab" must not collide, nor partitions that share bytes. */
  assert_int_equal(state_batch_offset(b, "a", 0, 5), 0);
  assert_int_equal(state_batch_offset(b, "a", 1, 6), 0);
  assert_int_equal(state_batch_offset(b, "a", 256, 7), 0);
  assert_int_equal(state_batch_offset(b, "ab", 0, 8), 0);
  assert_int_equal(state_batch_offset(b, "a", 0, 9), 0); /* last wins */
  assert_int_equal(state_batch_offset(b, "a", INT32_MAX, INT64_MAX), 0);
  char long_topic[STATE_TOPIC_MAX + 2];
  memset(long_topic, 't', sizeof long_topic);
  long_topic[STATE_TOPIC_MAX] = 0;
  assert_int_equal(state_batch_offset(b, long_topic, 2, 10), 0);
  long_topic[STATE_TOPIC_MAX] = 't';
  long_topic[STATE_TOPIC_MAX + 1] = 0;
  assert_int_equal(state_batch_offset(b, long_topic, 2, 10), FL_ERANGE);
  assert_int_equal(state_batch_offset(b, "", 0, 1), FL_ERANGE);
  assert_int_equal(state_batch_offset(b, NULL, 0, 1), FL_ERANGE);
  assert_int_equal(state_batch_offset(b, "a", -1, 1), FL_ERANGE);
  assert_int_equal(state_batch_offset(b, "a", 0, -1), FL_ERANGE);
  commit_ok(b); /* offsets only, no events */
  state_batch_free(b);

  for (int round = 0; round < 2; round++) {
    int64_t next = -1;
    assert_int_equal(state_offset_get(db, "a", 0, &next), 0);
    assert_int_equal(next, 9);
    assert_int_equal(state_offset_get(db, "a", 1, &next), 0);
    assert_int_equal(next, 6);
    assert_int_equal(state_offset_get(db, "a", 256, &next), 0);
    assert_int_equal(next, 7);
    assert_int_equal(state_offset_get(db, "ab", 0, &next), 0);
    assert_int_equal(next, 8);
    assert_int_equal(state_offset_get(db, "a", INT32_MAX, &next), 0);
    assert_true(next == INT64_MAX);
    long_topic[STATE_TOPIC_MAX] = 0;
    assert_int_equal(state_offset_get(db, long_topic, 2, &next), 0);
    assert_int_equal(next, 10);
    assert_int_equal(state_offset_get(db, "a", 2, &next), FL_EMISSING);
    assert_int_equal(state_offset_get(db, "b", 0, &next), FL_EMISSING);
    assert_int_equal(state_offset_get(db, "", 0, &next), FL_ERANGE);
    assert_int_equal(state_offset_get(db, "a", -1, &next), FL_ERANGE);
    state_stats st;
    assert_int_equal(state_get_stats(db, &st), 0);
    assert_int_equal(st.events, 0);
    state_close(db);
    db = open_ok(fx->db, 4);
  }
  state_close(db);
}

/* ---- seq_len changes between runs ---- */

static void test_seq_len_change(void **state) {
  fixture *fx = *state;
  state_entry hist[20], out[20];
  size_t n;
  state_db *db = open_ok(fx->db, 8);
  state_batch *b = state_batch_new(db);
  for (int i = 0; i < 19; i++) hist[i] = (state_entry){1, 0.5f, 1000 + i};
  for (int i = 0; i < 10; i++) {
    add_ok(b, "u", "it", 1000 + i, 0.5f);
    if (i == 4) commit_ok(b);
  }
  commit_ok(b);
  assert_int_equal(state_seq_get(db, "u", 1, out, 20, &n), 0);
  assert_int_equal(n, 8);
  assert_entries(out, hist + 2, 8);
  state_batch_free(b);
  state_close(db);

  /* Shorter: reads return the newest 3 at once, whatever is stored. */
  db = open_ok(fx->db, 3);
  assert_int_equal(state_seq_get(db, "u", 1, out, 20, &n), 0);
  assert_int_equal(n, 3);
  assert_entries(out, hist + 7, 3);
  b = state_batch_new(db);
  add_ok(b, "u", "it", 1010, 0.5f);
  commit_ok(b);
  assert_int_equal(state_seq_get(db, "u", 1, out, 20, &n), 0);
  assert_int_equal(n, 3);
  assert_entries(out, hist + 8, 3);
  state_batch_free(b);
  state_close(db);

  /* Longer again: between 3 and 8 of the newest (entries not yet merged away may come back),
   * and exactly 8 once 8 new ones arrive. */
  db = open_ok(fx->db, 8);
  assert_int_equal(state_seq_get(db, "u", 1, out, 20, &n), 0);
  assert_true(n >= 3 && n <= 8);
  assert_entries(out, hist + 11 - n, n);
  b = state_batch_new(db);
  for (int i = 11; i < 19; i++) {
    add_ok(b, "u", "it", 1000 + i, 0.5f);
    if (i == 14) commit_ok(b);
  }
  commit_ok(b);
  assert_int_equal(state_seq_get(db, "u", 1, out, 20, &n), 0);
  assert_int_equal(n, 8);
  assert_entries(out, hist + 11, 8);
  state_batch_free(b);
  state_close(db);
}

/* ---- ids: every UTF-8 byte class, NUL, the length limit ---- */

static void test_ids_bytes_and_limits(void **state) {
  fixture *fx = *state;
  char max4[STATE_ID_MAX + 1], max2[STATE_ID_MAX], too_long[STATE_ID_MAX + 1];
  for (int i = 0; i < STATE_ID_MAX / 4; i++) memcpy(max4 + 4 * i, "\xf0\x9f\x98\x80", 4);
  for (int i = 0; i < STATE_ID_MAX / 2; i++) memcpy(max2 + 2 * i, "\xc3\xa9", 2);
  memset(too_long, 'x', sizeof too_long);
  struct {
    const char *s;
    size_t len;
  } ids[] = {
      {"ascii-id", 8},
      {"caf\xc3\xa9", 5},      /* 2-byte sequence */
      {"\xe2\x82\xac 9", 5},   /* 3-byte */
      {"\xf0\x9f\x98\x80", 4}, /* 4-byte */
      {"a\0b", 3},             /* embedded NUL: ids are lengths, not C strings */
      {"a", 1},                /* a prefix of the one above */
      {"\x7f\x01 \t\"\\", 6},  /* control bytes, quotes, backslash */
      {max4, STATE_ID_MAX},    /* longest, of 4-byte sequences */
      {max2, STATE_ID_MAX},    /* longest, of 2-byte sequences */
  };
  const size_t N = sizeof ids / sizeof ids[0];
  state_db *db = open_ok(fx->db, 4);
  state_batch *b = state_batch_new(db);
  for (size_t i = 0; i < N; i++)
    assert_int_equal(state_batch_add(b, ids[i].s, ids[i].len, ids[N - 1 - i].s, ids[N - 1 - i].len,
                                     (int64_t)i, 1.0f),
                     0);
  /* Rejected, and nothing changes. */
  assert_int_equal(state_batch_add(b, too_long, STATE_ID_MAX + 1, "i", 1, 0, 1), FL_ERANGE);
  assert_int_equal(state_batch_add(b, "u", 1, too_long, STATE_ID_MAX + 1, 0, 1), FL_ERANGE);
  assert_int_equal(state_batch_add(b, "", 0, "i", 1, 0, 1), FL_ERANGE);
  assert_int_equal(state_batch_add(b, "u", 1, "", 0, 0, 1), FL_ERANGE);
  assert_int_equal(state_batch_add(b, "u", 1, "i", 1, 0, NAN), FL_ERANGE);
  assert_int_equal(state_batch_add(b, "u", 1, "i", 1, 0, INFINITY), FL_ERANGE);
  assert_int_equal(state_batch_events(b), N);
  assert_int_equal(state_item_count(db), N);
  assert_int_equal(state_user_count(db), N);
  commit_ok(b);
  state_batch_free(b);
  state_close(db);

  db = open_ok(fx->db, 4);
  for (size_t i = 0; i < N; i++) {
    int64_t it = state_item_find(db, ids[i].s, ids[i].len);
    assert_int_equal(it, (int64_t)(N - i)); /* items were added in reverse order */
    size_t len = 0;
    const char *s = state_item_id(db, (uint32_t)it, &len);
    assert_int_equal(len, ids[i].len);
    assert_memory_equal(s, ids[i].s, len);
    assert_int_equal(state_user_find(db, ids[i].s, ids[i].len), (int64_t)(i + 1));
    state_entry out[4];
    size_t n = 0;
    assert_int_equal(state_seq_get(db, ids[i].s, ids[i].len, out, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].item, i + 1);
    assert_int_equal(out[0].ts_ms, (int64_t)i);
  }
  state_entry out[1];
  size_t n;
  assert_int_equal(state_seq_get(db, too_long, STATE_ID_MAX + 1, out, 1, &n), FL_ERANGE);
  state_close(db);
}

/* ---- corrupt values ---- */

/* Puts (val != NULL) or deletes key in column family cf of the closed store at dir, through
 * RocksDB directly. */
static void raw_write(const char *dir, const char *cf, const char *key, size_t klen,
                      const char *val, size_t vlen) {
  rocksdb_options_t *o = rocksdb_options_create();
  state__merge *st;
  rocksdb_options_set_merge_operator(o, state__merge_create(8, &st));
  char *err = NULL;
  size_t n = 0;
  char **names = rocksdb_list_column_families(o, dir, &n, &err);
  assert_null(err);
  const rocksdb_options_t **cfo = calloc(n, sizeof *cfo);
  rocksdb_column_family_handle_t **h = calloc(n, sizeof *h);
  for (size_t i = 0; i < n; i++) cfo[i] = o;
  rocksdb_t *db =
      rocksdb_open_column_families(o, dir, (int)n, (const char *const *)names, cfo, h, &err);
  assert_null(err);
  size_t c = 0;
  while (c < n && strcmp(names[c], cf) != 0) c++;
  assert_true(c < n);
  rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
  if (val)
    rocksdb_put_cf(db, wo, h[c], key, klen, val, vlen, &err);
  else
    rocksdb_delete_cf(db, wo, h[c], key, klen, &err);
  assert_null(err);
  rocksdb_writeoptions_destroy(wo);
  for (size_t i = 0; i < n; i++) rocksdb_column_family_handle_destroy(h[i]);
  rocksdb_close(db);
  rocksdb_options_destroy(o);
  rocksdb_list_column_families_destroy(names, n);
  free(h);
  free(cfo);
}

/* A small store at dir: users u1, u2; items i1, i2; an offset for ("t", 0). */
static void make_store(const char *dir) {
  state_db *db = open_ok(dir, 8);
  state_batch *b = state_batch_new(db);
  add_ok(b, "u1", "i1", 1, 1);
  add_ok(b, "u2", "i2", 2, 1);
  assert_int_equal(state_batch_offset(b, "t", 0, 7), 0);
  commit_ok(b);
  state_batch_free(b);
  state_close(db);
}

static int count_users(void *ctx, const char *user, size_t ulen, const state_entry *e, size_t n) {
  (void)user, (void)ulen, (void)e, (void)n;
  ++*(int *)ctx;
  return 0;
}

static void test_corrupt_sequence_and_offset(void **state) {
  fixture *fx = *state;
  make_store(fx->db);
  raw_write(fx->db, "seq", "u1", 2, "\x02garbage", 8);
  raw_write(fx->db, "offsets", "t\0\0\0\0\0", 6, "xx", 2);
  state_db *db = open_ok(fx->db, 8); /* sequences are checked when read, not at open */
  state_entry out[8];
  size_t n = 5;
  assert_int_equal(state_seq_get(db, "u1", 2, out, 8, &n), FL_ECORRUPT);
  assert_int_equal(n, 0);
  assert_int_equal(state_seq_get(db, "u2", 2, out, 8, &n), 0);
  int users = 0;
  assert_int_equal(state_seq_foreach(db, count_users, &users), FL_ECORRUPT);
  int64_t next;
  assert_int_equal(state_offset_get(db, "t", 0, &next), FL_ECORRUPT);
  /* The user's next commit replaces the corrupt value (and the drop is counted). */
  state_batch *b = state_batch_new(db);
  add_ok(b, "u1", "i2", 3, 1);
  assert_int_equal(state_batch_offset(b, "t", 0, 8), 0);
  commit_ok(b);
  assert_int_equal(state_seq_get(db, "u1", 2, out, 8, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].ts_ms, 3);
  assert_int_equal(state_offset_get(db, "t", 0, &next), 0);
  assert_int_equal(next, 8);
  state_stats st;
  assert_int_equal(state_get_stats(db, &st), 0);
  assert_true(st.seq_dropped >= 1);
  users = 0;
  assert_int_equal(state_seq_foreach(db, count_users, &users), 0);
  assert_int_equal(users, 2);
  state_batch_free(b);
  state_close(db);

  /* Well-formed layout, but item 0 (padding) inside: refused too. */
  char zero[1 + STATE__ENTRY_BYTES] = {STATE__FMT};
  raw_write(fx->db, "seq", "u2", 2, zero, sizeof zero);
  db = open_ok(fx->db, 8);
  assert_int_equal(state_seq_get(db, "u2", 2, out, 8, &n), FL_ECORRUPT);
  state_close(db);
}

/* Copies the regular files of directory src (a closed store: it has no subdirectories) into
 * a new directory dst. */
static void copy_store(const char *src, const char *dst) {
  assert_int_equal(mkdir(dst, 0700), 0);
  DIR *d = opendir(src);
  assert_non_null(d);
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    char from[1024], to[1024];
    struct stat st;
    snprintf(from, sizeof from, "%s/%s", src, de->d_name);
    if (stat(from, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    snprintf(to, sizeof to, "%s/%s", dst, de->d_name);
    void *buf;
    size_t n;
    assert_int_equal(fl_read_file(from, &buf, &n), 0);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(buf);
  }
  closedir(d);
}

static void test_corrupt_dictionaries_and_meta(void **state) {
  fixture *fx = *state;
  make_store(fx->db);
  struct {
    const char *cf, *key;
    size_t klen;
    const char *val; /* NULL: delete the key */
    size_t vlen;
    int code;
    const char *msg; /* expected in the message */
  } cases[] = {
      {"items", "ii1", 3, "\x01\x09\0\0\0", 5, FL_ECORRUPT, "item dictionary"},
      {"items", "ii1", 3, "\x01\x01\0", 3, FL_ECORRUPT, "item dictionary"},
      {"items", "n\0\0\0\x01", 5, NULL, 0, FL_ECORRUPT, "item dictionary"},
      {"items", "n\0\0\0\x02", 5, "\x01i1", 3, FL_ECORRUPT, "item dictionary"},
      {"items", "zz", 2, "\x01", 1, FL_ECORRUPT, "item dictionary"},
      {"users", "u1", 2, "zz", 2, FL_ECORRUPT, "user dictionary"},
      {"users", "u3", 2, "\x01\x01\0\0\0\0\0\0\0\0\0\0\0", 13, FL_ECORRUPT, "user dictionary"},
      {"users", "u2", 2, NULL, 0, FL_ECORRUPT, "user dictionary"},
      {"meta", "schema", 6, "\x01\x63\0\0\0", 5, FL_EVERSION, "schema version 99"},
      {"meta", "schema", 6, "\x01\x01", 2, FL_ECORRUPT, "malformed schema"},
      {"meta", "schema", 6, NULL, 0, FL_ECORRUPT, "without a schema version"},
      {"meta", "counters", 8, NULL, 0, FL_ECORRUPT, "counters missing"},
      {"meta", "counters", 8, "\x01\0\0\0\0\0\0\0\0\x03\0\0\0\x02\0\0\0", 17, FL_ECORRUPT,
       "item dictionary"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/case%zu", fx->dir, i);
    copy_store(fx->db, dir);
    raw_write(dir, cases[i].cf, cases[i].key, cases[i].klen, cases[i].val, cases[i].vlen);
    state_opts o = opts_for(dir, 8);
    const char *msg = open_fails(&o, cases[i].code);
    if (!strstr(msg, cases[i].msg)) fail_msg("case %zu: \"%s\" lacks \"%s\"", i, msg, cases[i].msg);
    assert_non_null(strstr(msg, dir));
  }
}

/* ---- open errors ---- */

static void test_open_errors(void **state) {
  fixture *fx = *state;
  char path[400];
  state_opts o = opts_for(fx->db, 8);

  /* Options. */
  o.seq_len = 0;
  open_fails(&o, FL_ERANGE);
  o.seq_len = STATE_SEQ_LEN_MAX + 1;
  open_fails(&o, FL_ERANGE);
  o = opts_for(fx->db, 8);
  o.compression = 9;
  open_fails(&o, FL_ERANGE);
  o = opts_for(fx->db, 8);
  o.wal = 0;
  o.sync = 1;
  assert_non_null(strstr(open_fails(&o, FL_ERANGE), "sync"));
  o = opts_for("", 8);
  open_fails(&o, FL_ERANGE);

  /* The parent must exist; the path must be a directory. */
  snprintf(path, sizeof path, "%s/no-such/db", fx->dir);
  o = opts_for(path, 8);
  assert_non_null(strstr(open_fails(&o, -ENOENT), "parent"));
  snprintf(path, sizeof path, "%s/file", fx->dir);
  tu_write_file(path, "x");
  o = opts_for(path, 8);
  open_fails(&o, -ENOTDIR);

  /* Permission denied: a directory without access, and a store to create inside one. */
  snprintf(path, sizeof path, "%s/noperm", fx->dir);
  assert_int_equal(mkdir(path, 0700), 0);
  assert_int_equal(chmod(path, 0), 0);
  if (access(path, W_OK) == 0) {
    print_message("  (skipped the permission checks: running as root, chmod does not deny)\n");
  } else {
    o = opts_for(path, 8);
    assert_non_null(strstr(open_fails(&o, -EACCES), "Permission denied"));
    char inner[450];
    snprintf(inner, sizeof inner, "%s/db", path);
    o = opts_for(inner, 8);
    open_fails(&o, -EACCES);
  }
  assert_int_equal(chmod(path, 0700), 0);

  /* Locked: RocksDB refuses a second open of the same directory in one process. */
  state_db *db = open_ok(fx->db, 8);
  o = opts_for(fx->db, 8);
  const char *msg = open_fails(&o, FL_ELOCKED);
  assert_non_null(strstr(msg, "LOCK"));
  assert_non_null(strstr(msg, "another flamed"));
  state_close(db);
  db = open_ok(fx->db, 8); /* the lock went with the close */
  state_close(db);

  /* Corrupt: CURRENT overwritten with garbage, or naming a MANIFEST that is gone. */
  snprintf(path, sizeof path, "%s/CURRENT", fx->db);
  tu_write_file(path, "garbage");
  assert_non_null(strstr(open_fails(&o, FL_ECORRUPT), "CURRENT"));
  tu_write_file(path, "MANIFEST-000099\n");
  assert_non_null(strstr(open_fails(&o, FL_ECORRUPT), "MANIFEST-000099"));
  /* Data files without CURRENT: refused, not silently replaced by an empty store. */
  snprintf(path, sizeof path, "%s/nocurrent", fx->dir);
  assert_int_equal(mkdir(path, 0700), 0);
  char sst[450];
  snprintf(sst, sizeof sst, "%s/000007.sst", path);
  tu_write_file(sst, "not really");
  o = opts_for(path, 8);
  assert_non_null(strstr(open_fails(&o, FL_ECORRUPT), "000007.sst"));

  /* Anything else: here RocksDB's LOCK path is a directory. */
  snprintf(path, sizeof path, "%s/other", fx->dir);
  assert_int_equal(mkdir(path, 0700), 0);
  char lock[450];
  snprintf(lock, sizeof lock, "%s/LOCK", path);
  assert_int_equal(mkdir(lock, 0700), 0);
  o = opts_for(path, 8);
  open_fails(&o, FL_ESTORAGE);
}

/* ---- options: WAL off, sync, every compression, no cache ---- */

static void test_options_roundtrip(void **state) {
  fixture *fx = *state;
  for (int c = STATE_COMPRESSION_NONE; c <= STATE_COMPRESSION_ZSTD; c++) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/c%d", fx->dir, c);
    state_opts o = opts_for(dir, 5);
    o.compression = c;
    o.wal = c % 2;               /* NONE, LZ4 without WAL: close must flush */
    o.sync = c == 3;             /* ZSTD with fsync at every commit */
    o.cache_mb = c == 1 ? 0 : 4; /* SNAPPY without a block cache */
    state_db *db = NULL;
    char err[512];
    assert_int_equal(state_open(&db, &o, err, sizeof err), 0);
    state_batch *b = state_batch_new(db);
    model_seq m = {0};
    for (int i = 0; i < 200; i++) {
      add_ok(b, "u", i % 2 ? "odd" : "even", i, 1.5f);
      model_push(&m, 5, (state_entry){(uint32_t)(i % 2 ? 2 : 1), 1.5f, i});
      if (i % 50 == 49) commit_ok(b);
    }
    state_batch_free(b);
    state_close(db);
    o.wal = 1;
    o.sync = 0;
    assert_int_equal(state_open(&db, &o, err, sizeof err), 0);
    assert_seq(db, "u", 1, &m);
    state_stats st;
    assert_int_equal(state_get_stats(db, &st), 0);
    assert_int_equal(st.events, 200);
    assert_int_equal(st.users, 1);
    assert_int_equal(st.items, 2);
    assert_true(st.disk_bytes > 0);
    state_close(db);
  }
}

/* ---- foreach stops early ---- */

static int stop_at_three(void *ctx, const char *user, size_t ulen, const state_entry *e, size_t n) {
  (void)user, (void)ulen, (void)e, (void)n;
  return ++*(int *)ctx == 3 ? 42 : 0;
}

static void test_foreach_stops(void **state) {
  fixture *fx = *state;
  state_db *db = open_ok(fx->db, 4);
  int calls = 0;
  assert_int_equal(state_seq_foreach(db, stop_at_three, &calls), 0); /* empty store */
  assert_int_equal(calls, 0);
  state_batch *b = state_batch_new(db);
  const char *users[] = {"a", "b", "c", "d", "e"};
  for (int i = 0; i < 5; i++) add_ok(b, users[i], "x", i, 1);
  commit_ok(b);
  assert_int_equal(state_seq_foreach(db, stop_at_three, &calls), 42);
  assert_int_equal(calls, 3);
  state_batch_free(b);
  state_close(db);
}

/* ---- a reader thread alongside the writer ---- */

typedef struct {
  state_db *db;
  atomic_int stop;
  atomic_long reads; /* seq_get calls made */
  long found;
  int bad; /* first bad code or ordering seen, 0 if none */
} reader_ctx;

static void *reader_main(void *arg) {
  reader_ctx *c = arg;
  fl_rng r;
  fl_rng_seed(&r, 99);
  state_entry out[8];
  while (!atomic_load(&c->stop)) {
    char uid[16];
    int ulen = snprintf(uid, sizeof uid, "r%u", (unsigned)fl_rng_below(&r, 20));
    size_t n = 0;
    int rc = state_seq_get(c->db, uid, (size_t)ulen, out, 8, &n);
    atomic_fetch_add(&c->reads, 1);
    if (rc == FL_EMISSING) continue;
    if (rc != 0 || n < 1 || n > 4) {
      c->bad = rc ? rc : -1;
      break;
    }
    for (size_t i = 1; i < n; i++)
      if (out[i].ts_ms <= out[i - 1].ts_ms) c->bad = -2;
    c->found++;
  }
  return NULL;
}

static void test_concurrent_reader(void **state) {
  fixture *fx = *state;
  state_db *db = open_ok(fx->db, 4);
  reader_ctx c = {.db = db};
  atomic_init(&c.stop, 0);
  atomic_init(&c.reads, 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, reader_main, &c), 0);
  state_batch *b = state_batch_new(db);
  int64_t ts = 0;
  for (int batch = 0; batch < 100; batch++) {
    for (int j = 0; j < 50; j++) {
      char uid[16], iid[16];
      snprintf(uid, sizeof uid, "r%d", (batch * 7 + j) % 20);
      snprintf(iid, sizeof iid, "x%d", j % 9);
      add_ok(b, uid, iid, ts++, 1);
    }
    commit_ok(b);
  }
  /* On a busy machine the reader may not have run yet: give it up to 10 s. */
  for (int i = 0; i < 10000 && atomic_load(&c.reads) < 100; i++) usleep(1000);
  atomic_store(&c.stop, 1);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(c.bad, 0);
  assert_true(atomic_load(&c.reads) > 0);
  state_batch_free(b);
  state_close(db);
}

/* ---- crash atomicity: a writer process killed at a random moment ---- */

#define CRASH_L 8
#define CRASH_USERS 37
#define CRASH_ITEMS 53
#define CRASH_COMMITS 400 /* per child run: more than the parent waits for */

/* Event e of the deterministic stream: partition e % 2, offset e / 2 in it. */
static void crash_event(uint64_t e, unsigned *u, unsigned *it, char *uid, size_t *ulen, char *iid,
                        size_t *ilen, int64_t *ts, float *w) {
  *u = (unsigned)((e * 2654435761u) % CRASH_USERS);
  *it = (unsigned)(fl_hash64(e) % CRASH_ITEMS);
  *ulen = (size_t)snprintf(uid, 32, "cu-%u-\xc3\xa9", *u);
  *ilen = (size_t)snprintf(iid, 32, "ci-%u", *it);
  *ts = 1700000000000 + (int64_t)e;
  *w = (float)(e % 4) + 0.5f;
}

/* Committed events according to the stored offsets (checked for consistency). */
static uint64_t crash_stored(state_db *db) {
  int64_t o0 = 0, o1 = 0;
  int rc0 = state_offset_get(db, "events", 0, &o0), rc1 = state_offset_get(db, "events", 1, &o1);
  assert_true(rc0 == 0 || rc0 == FL_EMISSING);
  assert_true(rc1 == 0 || rc1 == FL_EMISSING);
  uint64_t n = (uint64_t)o0 + (uint64_t)o1;
  assert_int_equal((uint64_t)o0, (n + 1) / 2);
  assert_int_equal((uint64_t)o1, n / 2);
  return n;
}

/* The child: resumes from the stored offsets like the daemon would, commits batches of the
 * stream, and reports the event count after each commit on fd. */
static int crash_child(const char *dir, int fd) {
  fl_log_level = FL_LOG_ERROR;
  state_db *db = NULL;
  state_opts o = opts_for(dir, CRASH_L);
  char err[512];
  if (state_open(&db, &o, err, sizeof err) != 0) {
    fprintf(stderr, "crash child: %s\n", err);
    return 1;
  }
  int64_t o0 = 0, o1 = 0;
  state_offset_get(db, "events", 0, &o0);
  state_offset_get(db, "events", 1, &o1);
  uint64_t n = (uint64_t)(o0 + o1);
  state_batch *b = state_batch_new(db);
  for (int c = 0; c < CRASH_COMMITS; c++) {
    uint64_t m = 1 + (n * 7919) % 150;
    for (uint64_t e = n; e < n + m; e++) {
      unsigned u, it;
      char uid[32], iid[32];
      size_t ulen, ilen;
      int64_t ts;
      float w;
      crash_event(e, &u, &it, uid, &ulen, iid, &ilen, &ts, &w);
      if (state_batch_add(b, uid, ulen, iid, ilen, ts, w) != 0) return 2;
    }
    n += m;
    state_batch_offset(b, "events", 0, (int64_t)(n + 1) / 2);
    state_batch_offset(b, "events", 1, (int64_t)n / 2);
    if (state_batch_commit(b, err, sizeof err) != 0) {
      fprintf(stderr, "crash child: %s\n", err);
      return 3;
    }
    if (write(fd, &n, sizeof n) != (ssize_t)sizeof n) return 4;
  }
  /* Hold the store, and so its lock, until the parent's SIGKILL: the parent checks the lock
   * after the first report, and on a loaded machine a child that closed after its last commit
   * could outrun it (seen under ASan in CI). Bounded, so an orphan ends by itself. */
  sleep(30);
  state_batch_free(b);
  state_close(db);
  return 0;
}

/* Reopens and checks that the sequences and dictionaries hold exactly the events the offsets
 * cover, and at least the acknowledged ones. Returns the stored count. */
static uint64_t crash_verify(const char *dir, uint64_t acked) {
  state_db *db = open_ok(dir, CRASH_L);
  uint64_t n = crash_stored(db);
  if (n < acked)
    fail_msg("%llu events acknowledged but only %llu stored", (unsigned long long)acked,
             (unsigned long long)n);
  state_stats st;
  assert_int_equal(state_get_stats(db, &st), 0);
  assert_int_equal(st.events, n);

  model_seq *model = calloc(CRASH_USERS, sizeof *model);
  uint32_t item_of[CRASH_ITEMS] = {0}, user_of[CRASH_USERS] = {0}, nitems = 0, nusers = 0;
  for (uint64_t e = 0; e < n; e++) {
    unsigned u, it;
    char uid[32], iid[32];
    size_t ulen, ilen;
    int64_t ts;
    float w;
    crash_event(e, &u, &it, uid, &ulen, iid, &ilen, &ts, &w);
    if (!item_of[it]) item_of[it] = ++nitems; /* items first, as state_batch_add does */
    if (!user_of[u]) user_of[u] = ++nusers;
    model_push(&model[u], CRASH_L, (state_entry){item_of[it], w, ts});
  }
  assert_int_equal(state_item_count(db), nitems);
  assert_int_equal(state_user_count(db), nusers);
  for (unsigned it = 0; it < CRASH_ITEMS; it++) {
    char iid[32];
    int ilen = snprintf(iid, sizeof iid, "ci-%u", it);
    assert_int_equal(state_item_find(db, iid, (size_t)ilen),
                     item_of[it] ? (int64_t)item_of[it] : -1);
  }
  int users = 0;
  for (unsigned u = 0; u < CRASH_USERS; u++) {
    char uid[32];
    int ulen = snprintf(uid, sizeof uid, "cu-%u-\xc3\xa9", u);
    assert_int_equal(state_user_find(db, uid, (size_t)ulen), user_of[u] ? (int64_t)user_of[u] : -1);
    assert_seq(db, uid, (size_t)ulen, &model[u]);
    users += model[u].n > 0;
  }
  int counted = 0;
  assert_int_equal(state_seq_foreach(db, count_users, &counted), 0);
  assert_int_equal(counted, users);
  free(model);
  state_close(db);
  return n;
}

static int read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static void test_crash_atomicity(void **state) {
  fixture *fx = *state;
  char exe[4096];
  ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
  assert_true(el > 0);
  exe[el] = 0;
  fl_rng r;
  fl_rng_seed(&r, (uint64_t)getpid());
  uint64_t acked = 0, stored = 0;
  for (int iter = 0; iter < 3; iter++) {
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    /* Everything the child needs is prepared before fork: only async-signal-safe calls
     * (close, execve, _exit) may run between fork and exec in a threaded process. */
    size_t nenv = 0;
    while (environ[nenv]) nenv++;
    char **envp = calloc(nenv + 3, sizeof *envp);
    char env_dir[512], env_fd[64];
    snprintf(env_dir, sizeof env_dir, "FLAME_STATE_CRASH_CHILD=%s", fx->db);
    snprintf(env_fd, sizeof env_fd, "FLAME_STATE_CRASH_FD=%d", pfd[1]);
    memcpy(envp, environ, nenv * sizeof *envp);
    envp[nenv] = env_dir;
    envp[nenv + 1] = env_fd;
    char *argv[] = {exe, "test_state", NULL};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(pfd[0]);
      execve(exe, argv, envp);
      _exit(127);
    }
    free(envp);
    close(pfd[1]);
    /* Let it commit a random number of batches, then kill it a random moment later. */
    uint64_t target = 1 + fl_rng_below(&r, 30), acks = 0, n;
    while (acks < target && read_full(pfd[0], &n, sizeof n) == 0) {
      acks++;
      acked = n;
      if (iter == 0 && acks == 1) {
        /* Meanwhile the store is locked for every other process. */
        state_opts o = opts_for(fx->db, CRASH_L);
        const char *msg = open_fails(&o, FL_ELOCKED);
        assert_non_null(strstr(msg, "another flamed"));
      }
    }
    usleep((useconds_t)fl_rng_below(&r, 3000));
    kill(pid, SIGKILL);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    /* Reports written before it died count as acknowledged too. */
    while (read_full(pfd[0], &n, sizeof n) == 0) acked = n;
    close(pfd[0]);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) &&
        !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
      fail_msg("crash child ended with status 0x%x", status);
    assert_true(acks >= 1);
    uint64_t now = crash_verify(fx->db, acked);
    assert_true(now >= stored); /* nothing committed is ever lost */
    stored = now;
  }
}

int test_state(void) {
  const char *child = getenv("FLAME_STATE_CRASH_CHILD");
  if (child) {
    const char *fd = getenv("FLAME_STATE_CRASH_FD");
    return crash_child(child, fd ? atoi(fd) : -1);
  }
  fl_log_level = FL_LOG_WARN;
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
  const struct CMUnitTest tests[] = {
      T(test_sequences_many_batches),
      T(test_coalesce_in_batch),
      T(test_dictionary_dense_and_rollback),
      T(test_item_intern),
      T(test_commit_failure_is_retryable),
      T(test_offsets),
      T(test_seq_len_change),
      T(test_ids_bytes_and_limits),
      T(test_corrupt_sequence_and_offset),
      T(test_corrupt_dictionaries_and_meta),
      T(test_open_errors),
      T(test_options_roundtrip),
      T(test_foreach_stops),
      T(test_concurrent_reader),
      T(test_crash_atomicity),
  };
#undef T
  return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
