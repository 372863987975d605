/* tests/daemon/test_notify.c: flamed speaks systemd's notify protocol. The test is the service
 * manager: it binds a datagram socket, hands it to the real daemon as NOTIFY_SOCKET (with
 * WATCHDOG_USEC set), and checks that READY=1 arrives once the daemon serves, WATCHDOG=1
 * follows while the loop runs, a SIGHUP brings RELOADING=1 then READY=1 (a changed reloadable
 * setting applied, a non-reloadable one named for a restart), and a SIGTERM brings STOPPING=1
 * before a clean exit. Waits are bounded. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "daemon_env.h"
#include "testutil.h"

/* Reads datagrams until one contains needle (1) or timeout_s passes (0). Every datagram read
 * is appended to seen (for the failure message). */
static int wait_msg(int fd, const char *needle, int timeout_s, fl_buf *seen) {
  double end = fl_now() + timeout_s;
  while (fl_now() < end) {
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) continue; /* the 200 ms receive timeout */
    buf[n] = 0;
    fl_buf_printf(seen, "[%s] ", buf);
    if (strstr(buf, needle)) return 1;
  }
  return 0;
}

static void expect_msg(int fd, const char *needle, int timeout_s, const child *d) {
  fl_buf seen = {0};
  if (!wait_msg(fd, needle, timeout_s, &seen)) {
    dump_log(d);
    fail_msg("no %s within %d s; received: %s", needle, timeout_s, seen.p ? seen.p : "nothing");
  }
  fl_buf_free(&seen);
}

static void test_notify_protocol(void **state) {
  (void)state;
  env v;
  env_up(&v, "notify", 0);
  char sock[300], conf[300], opt[320];
  snprintf(sock, sizeof sock, "%s/notify.sock", v.tmp);
  snprintf(conf, sizeof conf, "%s/flamed.ini", v.tmp);
  tu_write_file(conf, "[log]\nlevel = info\n[state]\ncache_mb = 32\n");
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  assert_true(strlen(sock) < sizeof sa.sun_path); /* temp dirs are short */
  memcpy(sa.sun_path, sock, strlen(sock) + 1);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  child d;
  child_in(&d, &v, "notify");
  snprintf(opt, sizeof opt, "--config=%s", conf);
  const char *extra[] = {opt, NULL};
  setenv("NOTIFY_SOCKET", sock, 1);
  setenv("WATCHDOG_USEC", "400000", 1); /* WATCHDOG=1 every 200 ms */
  start_daemon(&d, v.bootstrap, v.group, v.topic, extra);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");

  expect_msg(fd, "READY=1", WAIT_S, &d);
  expect_msg(fd, "WATCHDOG=1", 5, &d);
  expect_msg(fd, "STATUS=lag ", 5, &d);

  /* a reloadable change (the log level) and one that needs a restart (the cache) */
  tu_write_file(conf, "[log]\nlevel = debug\n[state]\ncache_mb = 64\n");
  assert_int_equal(kill(d.pid, SIGHUP), 0);
  expect_msg(fd, "RELOADING=1", 10, &d);
  expect_msg(fd, "READY=1", 10, &d);
  /* a settings file that no longer loads: the running settings stay, the daemon too */
  tu_write_file(conf, "[log]\nlevel = loud\n");
  assert_int_equal(kill(d.pid, SIGHUP), 0);
  expect_msg(fd, "RELOADING=1", 10, &d);
  expect_msg(fd, "READY=1", 10, &d);
  expect_msg(fd, "WATCHDOG=1", 5, &d);

  assert_int_equal(kill(d.pid, SIGTERM), 0);
  expect_msg(fd, "STOPPING=1", 10, &d);
  int st = wait_exit(&d, WAIT_S);
  if (st != 0) dump_log(&d);
  assert_int_equal(st, 0);
  assert_true(log_has(&d, "take effect only after a restart: state.cache_mb"));
  assert_true(log_has(&d, "SIGHUP: settings reloaded"));
  assert_true(log_has(&d, "debug lines are on")); /* printed only at the reloaded level */
  assert_true(log_has(&d, "the running ones stay"));
  close(fd);
  env_down(&v);
}

int test_notify(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_notify_protocol),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
