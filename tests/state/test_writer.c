/* tests/state/test_writer.c: the writer thread on a real full disk (state/writer.c; a 8 MiB
 * tmpfs, skipped with the reason when it cannot be mounted): below the threshold nothing is
 * written and what is queued waits for space; a write RocksDB refused for lack of space
 * leaves the store refusing writes even once space is back, which the writer reports as
 * stuck (flamed then restarts). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "state/state.h"
#include "testutil.h"

typedef struct {
  char tmp[256], mnt[300], dir[320], filler[320];
  state_db *db;
  state_writer *w;
} wfix;

/* Mounts the tmpfs and opens a store and a writer on it; 0 when the machine cannot mount. */
static int up(wfix *f, uint64_t min_free, double stuck_s) {
  memset(f, 0, sizeof *f);
  assert_int_equal(tu_mkdtemp(f->tmp, sizeof f->tmp), 0);
  snprintf(f->mnt, sizeof f->mnt, "%s/mnt", f->tmp);
  assert_int_equal(mkdir(f->mnt, 0755), 0);
  if (mount("tmpfs", f->mnt, "tmpfs", 0, "size=8m") != 0) {
    fprintf(stderr, "test_writer: SKIPPED: cannot mount an 8 MiB tmpfs (%s; needs root)\n",
            strerror(errno));
    tu_rmtree(f->tmp);
    return 0;
  }
  snprintf(f->dir, sizeof f->dir, "%s/state", f->mnt);
  snprintf(f->filler, sizeof f->filler, "%s/filler", f->mnt);
  state_opts o = {f->dir, 8, 0, 0, 1, 0, f->tmp};
  char err[512];
  assert_int_equal(state_open(&f->db, &o, err, sizeof err), 0);
  state_writer_opts wo = {.depth = 4, .min_free_bytes = min_free, .stuck_s = stuck_s};
  assert_int_equal(state_writer_start(&f->w, f->db, &wo), 0);
  return 1;
}

static void down(wfix *f) {
  state_writer_stop(f->w, 1.0);
  state_close(f->db);
  umount2(f->mnt, MNT_DETACH);
  tu_rmtree(f->tmp);
}

/* A batch of n events of n users with ids of about 200 bytes (a batch merges a user's events). */
static void submit(wfix *f, size_t n, const char *tag) {
  state_batch *b = state_batch_new(f->db);
  char user[256], item[64];
  for (size_t i = 0; i < n; i++) {
    int ul = snprintf(user, sizeof user, "%s-user-%zu-%0180d", tag, i, 0);
    int il = snprintf(item, sizeof item, "item-%zu", i % 97);
    assert_int_equal(state_batch_add(b, user, (size_t)ul, item, (size_t)il, 1000 + (int64_t)i, 1),
                     0);
  }
  assert_int_equal(state_writer_submit(f->w, b, NULL), 0);
  state_batch_free(b);
}

static state_writer_status status_within(wfix *f, double s,
                                         int (*ok)(const state_writer_status *)) {
  state_writer_status st;
  double end = fl_now() + s;
  do {
    state_writer_status_get(f->w, &st);
    if (ok(&st)) break;
    fl_sleep_ms(50);
  } while (fl_now() < end);
  return st;
}

static int is_low(const state_writer_status *s) { return s->low_space; }
static int all_done(const state_writer_status *s) { return s->queued == 0 && !s->low_space; }
static int is_failing(const state_writer_status *s) { return s->failing; }
static int is_stuck(const state_writer_status *s) { return s->stuck; }

/* Below the threshold when a batch comes: it is not written (no failure), and it is once
 * space is back. Before the fix the free space was looked at once a second, so a batch that
 * came in between went to RocksDB and met the full disk. */
static void test_low_space_waits(void **state) {
  (void)state;
  wfix f;
  if (!up(&f, 2u << 20, 0)) skip();
  tu_fill_to(f.filler, 1u << 20); /* 1 MiB left, under the 2 MiB threshold */
  submit(&f, 2000, "low");
  state_writer_status st = status_within(&f, 5, is_low);
  assert_true(st.low_space);
  fl_sleep_ms(300);
  state_writer_status_get(f.w, &st);
  assert_int_equal(st.failures, 0);
  assert_int_equal(st.queued, 1);
  assert_int_equal(unlink(f.filler), 0);
  st = status_within(&f, 10, all_done);
  assert_int_equal(st.queued, 0);
  assert_int_equal(st.events_written, 2000);
  assert_int_equal(st.failures, 0);
  assert_false(st.stuck);
  down(&f);
}

/* A write bigger than what is left above the threshold: RocksDB refuses it for lack of space,
 * and keeps refusing once space is back: stuck, reported within stuck_s. */
static void test_stuck_after_full(void **state) {
  (void)state;
  wfix f;
  if (!up(&f, 1u << 20, 1.0)) skip();
  tu_fill_to(f.filler, (3u << 20) / 2); /* 1.5 MiB left: above the threshold */
  submit(&f, 20000, "big");             /* about 4 MiB */
  state_writer_status st = status_within(&f, 10, is_failing);
  assert_true(st.failing);
  if (!strstr(st.last_err, "No space left")) fail_msg("last error: %s", st.last_err);
  assert_int_equal(unlink(f.filler), 0);
  st = status_within(&f, 15, is_stuck);
  if (!st.stuck)
    fail_msg("not stuck: failing %d, queued %zu, last error %s", st.failing, st.queued,
             st.last_err);
  down(&f);
}

int test_writer(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_low_space_waits),
      cmocka_unit_test(test_stuck_after_full),
  };
  return cmocka_run_group_tests_name("state/writer", tests, NULL, NULL);
}
