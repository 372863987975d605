/* tests/testutil.c: see testutil.h. Linked into every test executable. */
#define _GNU_SOURCE
#include "testutil.h"

#include "common/common.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tu_mkdtemp(char *buf, size_t n) {
  const char *base = getenv("TMPDIR");
  snprintf(buf, n, "%s/flame-test-XXXXXX", base && *base ? base : "/tmp");
  return mkdtemp(buf) ? 0 : -1;
}

static int tu_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

void tu_rmtree(const char *path) { nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

void tu_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static char *tu_slurp(const char *path) {
  void *buf = NULL;
  size_t n = 0;
  if (fl_read_file(path, &buf, &n) != 0) return strdup("");
  return buf;
}

tu_run_result tu_run(const char *bin, const char *dir, const char *args) {
  char cmd[4096], o[512], e[512];
  snprintf(o, sizeof o, "%s/out.txt", dir);
  snprintf(e, sizeof e, "%s/err.txt", dir);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s > '%s' 2> '%s'", dir, bin, args, o, e);
  int st = system(cmd);
  tu_run_result r = {WIFEXITED(st) ? WEXITSTATUS(st) : -1, tu_slurp(o), tu_slurp(e)};
  return r;
}

void tu_run_free(tu_run_result *r) {
  free(r->out);
  free(r->err);
}

size_t tu_count_lines(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

int tu_file_setup(void **state) {
  tu_file_fixture *fx = calloc(1, sizeof *fx);
  if (!fx || tu_mkdtemp(fx->dir, sizeof fx->dir) != 0) {
    free(fx);
    return -1;
  }
  snprintf(fx->path, sizeof fx->path, "%s/file", fx->dir);
  *state = fx;
  return 0;
}

int tu_file_teardown(void **state) {
  tu_file_fixture *fx = *state;
  tu_rmtree(fx->dir);
  free(fx);
  return 0;
}
