/* tests/testutil.c: see testutil.h. Linked into every test executable. */
#define _GNU_SOURCE
#include "testutil.h"

#include "common/common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
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

int tu_same_file(const char *a, const char *b) {
  void *pa = NULL, *pb = NULL;
  size_t na = 0, nb = 0;
  int same = fl_read_file(a, &pa, &na) == 0 && fl_read_file(b, &pb, &nb) == 0 && na == nb &&
             memcmp(pa, pb, na) == 0;
  free(pa);
  free(pb);
  return same;
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

static int try_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int tu_http_connect(int port) {
  int fd = try_connect(port);
  if (fd < 0) fail_msg("connect to port %d", port);
  return fd;
}

int tu_http_wait(int port, int timeout_s) {
  for (int i = 0; i < timeout_s * 20; i++) {
    int fd = try_connect(port);
    if (fd >= 0) {
      close(fd);
      return 1;
    }
    fl_sleep_ms(50);
  }
  return 0;
}

void tu_http_send(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w <= 0) return; /* the server may have closed: the responses tell */
    s += w;
    n -= (size_t)w;
  }
}

/* Parses one complete response at the start of buf (n bytes): its length, or 0 if incomplete. */
static size_t parse_one(const char *buf, size_t n, tu_http_resp *r) {
  const char *end = memmem(buf, n, "\r\n\r\n", 4);
  if (!end) return 0;
  size_t head = (size_t)(end - buf) + 4, clen = 0;
  r->close = 0;
  r->status = atoi(buf + 9);
  for (const char *l = strstr(buf, "\r\n") + 2; l < end; l = strstr(l, "\r\n") + 2) {
    if (!strncasecmp(l, "Content-Length:", 15)) clen = (size_t)atol(l + 15);
    if (!strncasecmp(l, "Connection: close", 17)) r->close = 1;
  }
  if (n < head + clen) return 0;
  r->body = malloc(clen + 1);
  memcpy(r->body, buf + head, clen);
  r->body[clen] = 0;
  r->body_len = clen;
  return head + clen;
}

size_t tu_http_read(int fd, tu_http_resp *out, size_t n, int *eof) {
  size_t cap = 1 << 16, len = 0, got = 0;
  char *buf = malloc(cap + 1);
  *eof = 0;
  for (int reads = 0; got < n && reads < 100000; reads++) {
    size_t used;
    buf[len] = 0;
    while (got < n && (used = parse_one(buf, len, &out[got])) > 0) {
      memmove(buf, buf + used, len - used);
      len -= used;
      buf[len] = 0;
      got++;
    }
    if (got == n) break;
    if (len == cap) buf = realloc(buf, (cap *= 2) + 1);
    ssize_t r = recv(fd, buf + len, cap - len, 0);
    if (r == 0) *eof = 1;
    if (r <= 0) break;
    len += (size_t)r;
  }
  free(buf);
  return got;
}

void tu_http_resp_free(tu_http_resp *r, size_t n) {
  for (size_t i = 0; i < n; i++) free(r[i].body);
}

int tu_http_request(int port, const char *req, tu_http_resp *out) {
  int fd = tu_http_connect(port), eof;
  tu_http_send(fd, req, strlen(req));
  size_t got = tu_http_read(fd, out, 1, &eof);
  close(fd);
  return got ? out->status : 0;
}

void tu_fill_to(const char *path, size_t left) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  static char buf[65536];
  off_t n = 0;
  for (int i = 0; i < 1 << 16; i++) {
    ssize_t w = write(fd, buf, sizeof buf);
    if (w <= 0) break;
    n += w;
  }
  assert_int_equal(ftruncate(fd, n > (off_t)left ? n - (off_t)left : 0), 0);
  close(fd);
}
