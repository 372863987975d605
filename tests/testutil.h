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
/* Fills the filesystem holding path to about `left` bytes free: the file path grown until
 * ENOSPC (or 4 GiB), then cut back by `left` (the fault tests' full disks). */
void tu_fill_to(const char *path, size_t left);
/* 1 if both files are readable and hold the same bytes. */
int tu_same_file(const char *a, const char *b);

/* A cmocka fixture: a fresh temp dir and a file path in it (not created), removed after. */
typedef struct {
  char dir[256];  /* the test's temp dir */
  char path[512]; /* dir/file */
} tu_file_fixture;
int tu_file_setup(void **state);
int tu_file_teardown(void **state);

/* Runs binary bin with args (shell words) in directory dir, capturing stdout and stderr
 * (through files in dir). status is the exit code, or -1 when it did not exit normally. */
typedef struct {
  int status;
  char *out; /* stdout, NUL-terminated */
  char *err; /* stderr */
} tu_run_result;
tu_run_result tu_run(const char *bin, const char *dir, const char *args);
void tu_run_free(tu_run_result *r);
/* Number of '\n' in s. */
size_t tu_count_lines(const char *s);

/* ---- a minimal HTTP client for loopback tests (blocking, 5 s socket timeouts) ---- */
/* A TCP connection to 127.0.0.1:port; fails the test if it cannot connect. */
int tu_http_connect(int port);
/* 1 once something accepts connections on 127.0.0.1:port (polled), 0 after timeout_s. */
int tu_http_wait(int port, int timeout_s);
/* Sends all of s. */
void tu_http_send(int fd, const char *s, size_t n);
/* One parsed response: status, body (NUL-terminated), and whether it said Connection: close. */
typedef struct {
  int status;
  int close;
  char *body;
  size_t body_len;
} tu_http_resp;
/* Reads up to n responses (Content-Length framed) into out; returns how many arrived before
 * EOF or the timeout. *eof = 1 if the server closed the connection. */
size_t tu_http_read(int fd, tu_http_resp *out, size_t n, int *eof);
void tu_http_resp_free(tu_http_resp *r, size_t n);
/* Connect, send one request, read one response, close. Returns the status (0 if none). */
int tu_http_request(int port, const char *req, tu_http_resp *out);

#endif
