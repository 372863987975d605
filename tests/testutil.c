/* tests/testutil.c: see testutil.h. Linked into every test executable. */
#define _GNU_SOURCE
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
