/* tests/daemon/test_flamed_cli.c: flamed's command line on the real binary ($FLAMED_BIN):
 * --help and --version, --test-config and --dump-config, errors naming the file and line,
 * command-line overrides after the file, unknown arguments, and the exit codes (0 clean,
 * 1 cannot run, 2 usage or settings). No broker is needed: nothing here consumes. */
#define _GNU_SOURCE
#include "common/common.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[256];

static tu_run_result run(const char *args) {
  const char *bin = getenv("FLAMED_BIN");
  assert_non_null(bin);
  return tu_run(bin, dir, args);
}

/* Expects status, and stderr containing needle (when not NULL). */
static void expect(const char *args, int status, const char *needle) {
  tu_run_result r = run(args);
  if (r.status != status || (needle && !strstr(r.err, needle)))
    fprintf(stderr, "flamed %s: status %d (want %d), stderr:\n%s", args, r.status, status, r.err);
  assert_int_equal(r.status, status);
  if (needle) assert_non_null(strstr(r.err, needle));
  tu_run_free(&r);
}

static void write_conf(const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  tu_write_file(path, text);
}

static void test_help_version(void **state) {
  (void)state;
  tu_run_result r = run("--help");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "usage: flamed"));
  assert_non_null(strstr(r.out, "--test-config"));
  tu_run_free(&r);
  r = run("--version");
  assert_int_equal(r.status, 0);
  assert_memory_equal(r.out, "flamed ", 7);
  tu_run_free(&r);
}

static void test_test_config(void **state) {
  (void)state;
  write_conf("good.conf", "[stream]\ntopic = clicks\nbatch_max = 500\n[kafka]\n"
                          "bootstrap.servers = 127.0.0.1:9\n");
  expect("--config good.conf --test-config", 0, "settings are valid");
  /* no brokers: the daemon could not consume */
  expect("--test-config", 2, "bootstrap.servers");
  /* errors name the file and the line */
  write_conf("bad.conf", "[stream]\ntopic = clicks\nbatchmax = 5\n");
  expect("--config bad.conf --test-config", 2, "bad.conf:3");
  write_conf("range.conf", "[stream]\n\nbatch_max = 0\n");
  expect("--config range.conf --test-config", 2, "range.conf:3");
  /* a librdkafka property it does not know, with its origin */
  write_conf("kafka.conf", "[kafka]\nbootstrap.servers = 127.0.0.1:9\nno.such.property = 1\n");
  expect("--config kafka.conf --test-config", 2, "kafka.conf:3");
  expect("--config missing.conf --test-config", 2, "missing.conf");
  /* overrides come after the file and win */
  tu_run_result r = run("--config good.conf --stream.batch_max=10 --dump-config");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "batch_max = 10\n"));
  assert_non_null(strstr(r.out, "topic = clicks\n"));
  tu_run_free(&r);
  expect("--stream.batch_max=abc --test-config", 2, "stream.batch_max");
  expect("--no-such-flag", 2, "unknown argument");
}

/* The dump shows every setting with its help, and loads back as a config file. */
static void test_dump_config(void **state) {
  (void)state;
  tu_run_result r =
      run("--stream.batch_max=123 --kafka.bootstrap.servers=127.0.0.1:9 --dump-config");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "batch_max = 123"));
  assert_non_null(strstr(r.out, "[kafka]"));
  assert_non_null(strstr(r.out, "bootstrap.servers = 127.0.0.1:9"));
  assert_non_null(strstr(r.out, "# "));
  write_conf("dumped.conf", r.out);
  tu_run_free(&r);
  r = run("--config dumped.conf --dump-config");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "batch_max = 123"));
  tu_run_free(&r);
  expect("--config dumped.conf --test-config", 0, NULL);
}

/* A state dir that cannot be created: exit 1, a line naming it. */
static void test_unusable_state_dir(void **state) {
  (void)state;
  write_conf("file", "x");
  char args[600];
  snprintf(
      args, sizeof args,
      "--kafka.bootstrap.servers=127.0.0.1:9 --state.dir=%s/file/state --log.stats_interval_s=0 "
      "--api.listen=127.0.0.1 --api.port=0",
      dir);
  expect(args, 1, "file/state");
}

static int setup(void **state) {
  (void)state;
  return tu_mkdtemp(dir, sizeof dir);
}

static int teardown(void **state) {
  (void)state;
  tu_rmtree(dir);
  return 0;
}

int test_flamed_cli(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_version),
      cmocka_unit_test(test_test_config),
      cmocka_unit_test(test_dump_config),
      cmocka_unit_test(test_unusable_state_dir),
  };
  return cmocka_run_group_tests_name("daemon/flamed_cli", tests, setup, teardown);
}
