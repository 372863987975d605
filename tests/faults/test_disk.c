/* tests/faults/test_disk.c: the state disk failing under the real daemon (issue 26, items 1
 * and 2): a full filesystem (a small tmpfs, where the machine lets us mount one) and a stalled
 * write (the state writer's hold file, FLAMED_TEST_HOLD_WRITES). In both the daemon must stay
 * up, keep answering HTTP, pause ingest, and store every event exactly once afterwards. */
#define _GNU_SOURCE
#include "daemon_env.h"
#include "testutil.h"

#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* n JSON events of users "<prefix>-<i % users>" with ids padded to idlen bytes. */
static char **events(const char *prefix, size_t n, size_t users, size_t idlen) {
  char **v = xcalloc(n, sizeof *v);
  for (size_t i = 0; i < n; i++) {
    char user[300], item[300];
    int k = snprintf(user, sizeof user, "%s-%zu-", prefix, i % users);
    while ((size_t)k < idlen && k < (int)sizeof user - 1) user[k++] = 'u';
    user[k] = 0;
    k = snprintf(item, sizeof item, "item-%zu-", i % 97);
    while ((size_t)k < idlen && k < (int)sizeof item - 1) item[k++] = 'i';
    item[k] = 0;
    v[i] = xmalloc(strlen(user) + strlen(item) + 64);
    sprintf(v[i], "{\"user\":\"%s\",\"item\":\"%s\",\"ts\":%" PRId64 "}", user, item,
            (int64_t)1700000000000 + (int64_t)i);
  }
  return v;
}

static void free_events(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Waits (bounded) until metric name reaches at least want; its last value. */
static double wait_metric(int port, const char *name, double want, int timeout_s) {
  double v = -1;
  for (double end = fl_now() + timeout_s; fl_now() < end; fl_sleep_ms(100))
    if ((v = env_metric(port, name)) >= want) break;
  return v;
}

/* A small tmpfs of `size` as daemon d's state dir (and where the filler goes), in v's temp dir;
 * 0 (the reason printed) when the machine cannot mount one. */
static int tmpfs_state(env *v, const char *name, const char *size, char *filler, size_t n,
                       child *d) {
  char mnt[256];
  snprintf(mnt, sizeof mnt, "%s/mnt", v->tmp);
  assert_int_equal(mkdir(mnt, 0755), 0);
  char opt[32];
  snprintf(opt, sizeof opt, "size=%s", size);
  if (mount("tmpfs", mnt, "tmpfs", 0, opt) != 0) {
    fprintf(stderr, "%s: SKIPPED: cannot mount a %s tmpfs (%s; needs root)\n", name, size,
            strerror(errno));
    return 0;
  }
  snprintf(filler, n, "%s/filler", mnt);
  child_in(d, v, name);
  snprintf(d->dir, sizeof d->dir, "%s/state", mnt);
  return 1;
}

static void tmpfs_down(env *v) {
  char mnt[256];
  snprintf(mnt, sizeof mnt, "%s/mnt", v->tmp);
  umount2(mnt, MNT_DETACH);
  env_down(v);
}

/* Item 1: a full state disk. Before the fix RocksDB aborted on its LOG write about 10 s after
 * the disk filled (a restart loop under systemd). Now ingest pauses at state.min_free_mb,
 * RocksDB's LOG lives off the state disk, and everything is stored once space is back. */
static void test_full_disk(void **state) {
  env v;
  env_up(&v, "faults-full", 0);
  char filler[300];
  child d;
  if (!tmpfs_state(&v, "full", "4m", filler, sizeof filler, &d)) {
    env_down(&v);
    skip();
  }
  int port = free_port();
  char p[64];
  snprintf(p, sizeof p, "--api.port=%d", port);
  const char *extra[] = {p, "--state.min_free_mb=1", "--stream.max_message_bytes=8192", NULL};
  start_daemon(&d, v.bootstrap, v.group, v.topic, extra);
  assert_true(wait_started(&d));
  assert_true(tu_http_wait(port, WAIT_S));
  tu_fill_to(filler, 30 * 1024);
  enum { N = 5000 };
  char **ev = events("full", N, 500, 190);
  assert_int_equal(env_produce(v.bootstrap, v.topic, -1, NULL, (const char *const *)ev, NULL, N),
                   N);
  /* low space shows; the daemon stays up and serves through more than the old 10 s */
  double low = wait_metric(port, "flamed_state_low_space ", 1, WAIT_S);
  for (int i = 0; i < 15 && child_alive(&d); i++) {
    tu_http_resp r;
    assert_int_equal(tu_http_request(port, "GET /healthz HTTP/1.1\r\n\r\n", &r), 200);
    tu_http_resp_free(&r, 1);
    fl_sleep_ms(1000);
  }
  int alive = child_alive(&d);
  if (!alive || low != 1) dump_log(&d);
  assert_true(alive);
  assert_true(low == 1);
  assert_true(log_has(&d, "low disk space"));
  /* space back: every event is stored, once */
  assert_int_equal(unlink(filler), 0);
  double stored = wait_metric(port, "flamed_events_stored_total ", N, WAIT_S);
  if (stored != N) dump_log(&d);
  assert_true(stored == N);
  fl_sleep_ms(500);
  assert_true(env_metric(port, "flamed_events_stored_total ") == N);
  assert_true(env_metric(port, "flamed_state_low_space ") == 0);
  assert_int_equal(stop_daemon(&d), 0);
  /* RocksDB's LOG is not on the state disk */
  char logp[sizeof d.dir + 8];
  snprintf(logp, sizeof logp, "%s/LOG", d.dir);
  assert_int_not_equal(access(logp, F_OK), 0);
  free_events(ev, N);
  tmpfs_down(&v);
}

/* Item 1, the rest: a write that RocksDB refused for lack of space (one batch bigger than what
 * was left above state.min_free_mb) leaves the store refusing every write once space is back:
 * librocksdb's C API cannot resume it. Before the fix flamed retried forever, logging "ingest
 * resumes"; now the writer reports it stuck and flamed exits with status 1 (systemd's
 * Restart=on-failure restarts it), and the restart stores every event, once. (A write lands
 * in a full disk only when the disk fills between the writer's space check and its write: the
 * writer's hold hook makes that moment.) */
static void test_stuck_store_restarts(void **state) {
  (void)state;
  env v;
  env_up(&v, "faults-stuck", 0);
  char filler[300];
  child d;
  if (!tmpfs_state(&v, "stuck", "16m", filler, sizeof filler, &d)) {
    env_down(&v);
    skip();
  }
  int port = free_port();
  char p[64];
  snprintf(p, sizeof p, "--api.port=%d", port);
  const char *extra[] = {p, "--state.min_free_mb=1", "--stream.max_message_bytes=8192",
                         "--stream.batch_max=20000", NULL};
  /* the events wait in the topic; the writer is held (its hook) until the disk is filled
   * to the last byte under the first batch, which then meets a full disk */
  enum { N = 20000 };
  char **ev = events("stuck", N, N, 190);
  assert_int_equal(env_produce(v.bootstrap, v.topic, -1, NULL, (const char *const *)ev, NULL, N),
                   N);
  char hold[400];
  snprintf(hold, sizeof hold, "%s/hold", v.tmp);
  tu_write_file(hold, "held\n");
  setenv("FLAMED_TEST_HOLD_WRITES", hold, 1);
  setenv("FLAMED_TEST_STUCK_S", "2", 1);
  start_daemon(&d, v.bootstrap, v.group, v.topic, extra);
  unsetenv("FLAMED_TEST_STUCK_S");
  unsetenv("FLAMED_TEST_HOLD_WRITES");
  assert_true(wait_started(&d));
  assert_true(tu_http_wait(port, WAIT_S));
  assert_true(wait_metric(port, "flamed_state_writes_queued ", 1, WAIT_S) >= 1);
  tu_fill_to(filler, 0);
  assert_int_equal(unlink(hold), 0);
  double failures = wait_metric(port, "flamed_state_write_failures_total ", 1, WAIT_S);
  if (failures < 1) dump_log(&d);
  assert_true(failures >= 1);
  assert_int_equal(unlink(filler), 0);
  int st = wait_exit(&d, WAIT_S);
  if (st != 1) dump_log(&d);
  assert_int_equal(st, 1);
  assert_true(log_has(&d, "still refuses writes for lack of space"));
  /* the restart on the same state stores everything, once (in batches that fit this small a
   * disk: a 4 MiB one would meet its end again) */
  const char *again[] = {p, "--state.min_free_mb=1", "--stream.max_message_bytes=8192",
                         "--stream.batch_max=1000", NULL};
  start_daemon(&d, v.bootstrap, v.group, v.topic, again);
  assert_true(wait_started(&d));
  double stored = wait_metric(port, "flamed_events_stored_total ", N, WAIT_S);
  if (stored != N) dump_log(&d);
  finish(&d, &v);
  free_events(ev, N);
  tmpfs_down(&v);
}

/* Item 2: a stalled disk. Before the fix the write ran on the loop thread, and every HTTP
 * request waited as long as the disk did. Now the writer thread waits alone: while its write
 * is held, /healthz and /v1/recommend answer, the queue shows in /metrics, and once the disk
 * moves again every event is stored. */
static void test_stalled_write(void **state) {
  env v;
  env_up(&v, "faults-stall", 0);
  char hold[400];
  snprintf(hold, sizeof hold, "%s/hold", v.tmp);
  setenv("FLAMED_TEST_HOLD_WRITES", hold, 1);
  child d;
  child_in(&d, &v, "stall");
  int port = free_port();
  char p[64];
  snprintf(p, sizeof p, "--api.port=%d", port);
  const char *extra[] = {p, "--state.write_queue=2", NULL};
  start_daemon(&d, v.bootstrap, v.group, v.topic, extra);
  unsetenv("FLAMED_TEST_HOLD_WRITES");
  assert_true(wait_started(&d));
  assert_true(tu_http_wait(port, WAIT_S));
  enum { N1 = 200, N2 = 400 };
  char **ev = events("stall", N1 + N2, 50, 8);
  assert_int_equal(env_produce(v.bootstrap, v.topic, -1, NULL, (const char *const *)ev, NULL, N1),
                   N1);
  assert_true(wait_metric(port, "flamed_events_stored_total ", N1, WAIT_S) == N1);
  tu_write_file(hold, "held\n");
  assert_int_equal(
      env_produce(v.bootstrap, v.topic, -1, NULL, (const char *const *)ev + N1, NULL, N2), N2);
  double queued = wait_metric(port, "flamed_state_writes_queued ", 1, WAIT_S);
  assert_true(queued >= 1);
  /* 11 s of stall (past the 10 s stall warning): every request answers (the client's socket
   * timeout is 5 s) */
  int answered = 0, asked = 0;
  for (double end = fl_now() + 11; fl_now() < end; fl_sleep_ms(200)) {
    tu_http_resp r;
    asked += 2;
    if (tu_http_request(port, "GET /healthz HTTP/1.1\r\n\r\n", &r) == 200) answered++;
    tu_http_resp_free(&r, 1);
    if (tu_http_request(port, "GET /v1/recommend?user=stall-1-&k=5 HTTP/1.1\r\n\r\n", &r) == 200)
      answered++;
    tu_http_resp_free(&r, 1);
  }
  assert_int_equal(answered, asked);
  assert_true(env_metric(port, "flamed_state_write_wait_seconds ") >= 5);
  assert_true(env_metric(port, "flamed_events_stored_total ") < N1 + N2);
  assert_true(env_metric(port, "flamed_partitions_assigned ") == NPART);
  unlink(hold);
  double stored = wait_metric(port, "flamed_events_stored_total ", N1 + N2, WAIT_S);
  if (stored != N1 + N2) dump_log(&d);
  assert_true(stored == N1 + N2);
  assert_true(log_has(&d, "the disk is stalled"));
  finish(&d, &v);
  free_events(ev, N1 + N2);
  env_down(&v);
}

int test_disk(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_disk),
      cmocka_unit_test(test_stuck_store_restarts),
      cmocka_unit_test(test_stalled_write),
  };
  return cmocka_run_group_tests_name("faults/disk", tests, NULL, NULL);
}
