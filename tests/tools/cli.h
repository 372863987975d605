/* tests/tools/cli.h: running the `flame` binary ($FLAME_BIN) in a temp dir, for the tool's
 * tests: the contract's checks (exit status, one stderr line, the JSON result line). Each test
 * file that includes it has its own temp dir (setup/teardown). */
#ifndef FL_TESTS_TOOLS_CLI_H
#define FL_TESTS_TOOLS_CLI_H
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static char dir[256];

/* Runs FLAME_BIN with the given argument string (shell words). */
static tu_run_result run(const char *args) {
  const char *bin = getenv("FLAME_BIN");
  assert_non_null(bin);
  return tu_run(bin, dir, args);
}

/* Expects exit 2 and exactly one stderr line that starts with prefix. */
static void expect_usage_error(const char *args, const char *prefix) {
  tu_run_result r = run(args);
  if (r.status != 2 || tu_count_lines(r.err) != 1 || strncmp(r.err, prefix, strlen(prefix)) != 0)
    fprintf(stderr, "flame %s: status %d, stderr:\n%s", args, r.status, r.err);
  assert_int_equal(r.status, 2);
  assert_int_equal(tu_count_lines(r.err), 1);
  assert_memory_equal(r.err, prefix, strlen(prefix));
  tu_run_free(&r);
}

/* The last stdout line parsed as JSON (caller deletes). */
static cJSON *last_json(const tu_run_result *r) {
  const char *s = r->out, *last = s;
  for (const char *p = s; *p; p++)
    if (*p == '\n' && p[1]) last = p + 1;
  cJSON *j = cJSON_Parse(last);
  assert_non_null(j);
  return j;
}

/* Runs args, expects exit 0, returns the last stdout line as JSON (caller deletes). */
static cJSON *run_json(const char *args) {
  tu_run_result r = run(args);
  if (r.status != 0) fprintf(stderr, "flame %s: status %d, stderr:\n%s", args, r.status, r.err);
  assert_int_equal(r.status, 0);
  cJSON *j = last_json(&r);
  tu_run_free(&r);
  return j;
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

#endif
