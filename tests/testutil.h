/* tests/testutil.h: helpers shared by the test groups (temp dirs, tiny synthetic data). */
#ifndef FL_TESTUTIL_H
#define FL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the three headers above first: keep it in its own include block. */
#include <cmocka.h>

/* Creates a fresh directory under $TMPDIR (or /tmp) and writes its path to buf. */
int tu_mkdtemp(char *buf, size_t n);
/* Removes a directory tree created by tu_mkdtemp. */
void tu_rmtree(const char *path);
/* Writes a text file. */
void tu_write_file(const char *path, const char *text);

#endif
