/* tests/daemon/http/test_http.c: the HTTP server's connection hygiene (daemon/http/http.h) over
 * real loopback sockets: keep-alive, pipelining in order (also when the client does not read while
 * it sends), head and body limits, framing http-parser refuses, the connection caps (in all
 * and per peer, answered with a 503 the client reads before a clean close), the header, idle
 * and request timeouts, RFC 9112 strictness (versions, header names, folding,
 * Transfer-Encoding, a second Authorization), HEAD without body, HTTP/1.0, deferred answers,
 * and a stop that drains. The loop runs on its own thread; the test is the client. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/common.h"
#include "daemon/http/http.h"
#include "testutil.h"

typedef struct {
  uv_loop_t loop;
  uv_async_t stop;
  http_server *srv;
  pthread_t th;
  int port;
  int stopped;
  int stop_sent; /* the stop was asked for already (the async handle closes on it) */
} fixture;

/* A deferred answer, computed on libuv's thread pool: "deferred <query>" after ms. */
typedef struct {
  uv_work_t w;
  http_deferred *d;
  int ms;
  char query[64];
} later;

static void later_work(uv_work_t *w) { fl_sleep_ms(((later *)w->data)->ms); }

static void later_done(uv_work_t *w, int status) {
  later *l = w->data;
  (void)status;
  http_resp rs = {.status = 200, .content_type = "text/plain", .body = {0}};
  fl_buf_printf(&rs.body, "deferred %s", l->query);
  http_finish(l->d, &rs);
  free(l);
}

/* Echoes the request: "<method> <path>?<query> auth=<auth> body=<body>". POST /big answers
 * 64 KiB, so that pipelined answers pile up in the socket. /defer?... answers "deferred ..."
 * from a worker after 0-2 ms, /slow?... after 300 ms. /block holds the loop for 300 ms (so that
 * connections wait unaccepted), /405 answers 405 with "Allow: GET, HEAD", /stats the server's
 * counters (read on the loop thread, which owns them). */
static void echo(void *ctx, const http_req *rq, http_resp *rs) {
  fixture *f = ctx;
  uv_loop_t *loop = &f->loop;
  if (!strcmp(rq->path, "/stats")) {
    http_stats st;
    http_server_stats(f->srv, &st);
    rs->status = 200;
    rs->content_type = "text/plain";
    fl_buf_printf(&rs->body,
                  "refused_full=%llu refused_peer=%llu closed_header=%llu closed_idle=%llu "
                  "bad_requests=%llu",
                  (unsigned long long)st.refused_full, (unsigned long long)st.refused_peer,
                  (unsigned long long)st.closed_header, (unsigned long long)st.closed_idle,
                  (unsigned long long)st.bad_requests);
    return;
  }
  if (!strcmp(rq->path, "/block")) fl_sleep_ms(300);
  if (!strcmp(rq->path, "/405")) {
    rs->status = 405;
    rs->allow = "GET, HEAD";
    fl_buf_puts(&rs->body, "{\"error\":\"no\"}");
    return;
  }
  if (!strcmp(rq->path, "/defer") || !strcmp(rq->path, "/slow")) {
    later *l = xcalloc(1, sizeof *l);
    l->w.data = l;
    l->ms = rq->path[1] == 's' ? 300 : (int)(strlen(rq->query) % 3);
    snprintf(l->query, sizeof l->query, "%s", rq->query);
    assert_int_equal(uv_queue_work(loop, &l->w, later_work, later_done), 0);
    l->d = http_defer(rq);
    return;
  }
  rs->status = 200;
  rs->content_type = "text/plain";
  if (!strcmp(rq->path, "/big")) {
    for (int i = 0; i < 1024; i++)
      fl_buf_puts(&rs->body, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n");
    return;
  }
  fl_buf_printf(&rs->body, "%d %s?%s auth=%s body=", rq->method, rq->path, rq->query,
                rq->auth ? rq->auth : "-");
  fl_buf_put(&rs->body, rq->body, rq->body_len);
}

static void on_stopped(void *arg) { ((fixture *)arg)->stopped = 1; }

static void on_stop(uv_async_t *a) {
  fixture *f = a->data;
  http_server_stop(f->srv, on_stopped, f);
  uv_close((uv_handle_t *)&f->stop, NULL);
}

static void *run(void *arg) {
  fixture *f = arg;
  uv_run(&f->loop, UV_RUN_DEFAULT);
  return NULL;
}

/* A server with options o (host and port are set here). */
static fixture *start_opts(http_opts o) {
  fixture *f = xcalloc(1, sizeof *f);
  uv_loop_init(&f->loop);
  uv_async_init(&f->loop, &f->stop, on_stop);
  f->stop.data = f;
  o.host = "127.0.0.1";
  o.port = 0;
  char err[256];
  assert_int_equal(http_server_start(&f->srv, &f->loop, &o, echo, f, err, sizeof err), 0);
  f->port = http_server_port(f->srv);
  assert_true(f->port > 0);
  pthread_create(&f->th, NULL, run, f);
  return f;
}

/* No header timeout, no per-peer cap: the other clocks and caps alone. */
static fixture *start(size_t max_conns, size_t max_pipeline, uint64_t idle_ms,
                      uint64_t request_ms) {
  return start_opts((http_opts){.max_conns = max_conns,
                                .max_head = 1024,
                                .max_body = 2048,
                                .max_pipeline = max_pipeline,
                                .idle_ms = idle_ms,
                                .request_ms = request_ms});
}

static void stop_async(fixture *f) {
  if (!f->stop_sent) uv_async_send(&f->stop);
  f->stop_sent = 1;
}

static void finish(fixture *f) {
  stop_async(f);
  pthread_join(f->th, NULL);
  assert_true(f->stopped);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
}

static fixture *start_default(void) { return start(16, 8, 5000, 5000); }

static void test_http_keepalive_and_fields(void **state) {
  (void)state;
  fixture *f = start_default();
  int fd = tu_http_connect(f->port), eof;
  const char *r1 =
      "GET /v1/x?user=a%20b&k=3 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3\r\n\r\n";
  const char *r2 = "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
  tu_http_resp rs[2];
  tu_http_send(fd, r1, strlen(r1));
  assert_int_equal(tu_http_read(fd, rs, 1, &eof), 1);
  tu_http_send(fd, r2, strlen(r2));
  assert_int_equal(tu_http_read(fd, rs + 1, 1, &eof), 1);
  assert_int_equal(rs[0].status, 200);
  assert_string_equal(rs[0].body, "1 /v1/x?user=a%20b&k=3 auth=Bearer s3 body=");
  assert_string_equal(rs[1].body, "3 /p? auth=- body=hello");
  assert_false(rs[0].close || rs[1].close);
  tu_http_resp_free(rs, 2);
  /* a chunked body arrives whole */
  const char *r3 =
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  tu_http_send(fd, r3, strlen(r3));
  assert_int_equal(tu_http_read(fd, rs, 1, &eof), 1);
  assert_string_equal(rs[0].body, "3 /c? auth=- body=abcde");
  tu_http_resp_free(rs, 1);
  close(fd);
  finish(f);
}

/* 300 pipelined requests in one go, each answered with 64 KiB, while the client reads nothing
 * until it has sent them all: the server stops reading at max_pipeline unsent answers and
 * resumes as they drain; every answer arrives, in order. */
static void test_http_pipelining(void **state) {
  (void)state;
  fixture *f = start(16, 4, 5000, 5000);
  int fd = tu_http_connect(f->port), eof;
  enum { N = 300 };
  fl_buf req = {0};
  for (int i = 0; i < N; i++)
    if (i % 3 == 2)
      fl_buf_puts(&req, "GET /big HTTP/1.1\r\n\r\n");
    else
      fl_buf_printf(&req, "GET /r%d HTTP/1.1\r\n\r\n", i);
  /* the requests are small: all of them fit the socket buffers before anything is read */
  tu_http_send(fd, req.p, req.n);
  tu_http_resp *rs = xcalloc(N, sizeof *rs);
  assert_int_equal(tu_http_read(fd, rs, N, &eof), N);
  for (int i = 0; i < N; i++) {
    char want[64];
    if (i % 3 == 2) {
      assert_int_equal(rs[i].body_len, 65536);
      continue;
    }
    snprintf(want, sizeof want, "1 /r%d? auth=- body=", i);
    assert_string_equal(rs[i].body, want);
  }
  tu_http_resp_free(rs, N);
  free(rs);
  fl_buf_free(&req);
  close(fd);
  finish(f);
}

/* Deferred answers keep request order among pipelined immediate ones; a client that leaves
 * before its deferred answer is ready costs nothing (ASan: no leak, no use after free); a
 * stop waits for a deferred answer and sends it with Connection: close. */
static void test_http_deferred(void **state) {
  (void)state;
  fixture *f = start(16, 4, 5000, 5000);
  int fd = tu_http_connect(f->port), eof;
  enum { N = 120 };
  fl_buf req = {0};
  for (int i = 0; i < N; i++)
    fl_buf_printf(&req, "GET /%s?i=%d HTTP/1.1\r\n\r\n", i % 2 ? "r" : "defer", i);
  tu_http_send(fd, req.p, req.n);
  tu_http_resp *rs = xcalloc(N, sizeof *rs);
  assert_int_equal(tu_http_read(fd, rs, N, &eof), N);
  for (int i = 0; i < N; i++) {
    char want[64];
    if (i % 2)
      snprintf(want, sizeof want, "1 /r?i=%d auth=- body=", i);
    else
      snprintf(want, sizeof want, "deferred i=%d", i);
    assert_string_equal(rs[i].body, want);
  }
  tu_http_resp_free(rs, N);
  free(rs);
  fl_buf_free(&req);
  close(fd);
  /* the client goes away while its answer is being computed */
  fd = tu_http_connect(f->port);
  const char *gone = "GET /slow?gone HTTP/1.1\r\n\r\n";
  tu_http_send(fd, gone, strlen(gone));
  fl_sleep_ms(20);
  close(fd);
  /* a stop while an answer is due: it arrives, and the connection closes */
  fd = tu_http_connect(f->port);
  const char *last = "GET /slow?last HTTP/1.1\r\n\r\n";
  tu_http_send(fd, last, strlen(last));
  fl_sleep_ms(20);
  stop_async(f);
  tu_http_resp r;
  assert_int_equal(tu_http_read(fd, &r, 1, &eof), 1);
  assert_string_equal(r.body, "deferred last");
  assert_true(r.close);
  tu_http_resp_free(&r, 1);
  close(fd);
  finish(f);
}

static void expect_refusal(int port, const char *req, int status) {
  int fd = tu_http_connect(port), eof;
  tu_http_send(fd, req, strlen(req));
  tu_http_resp r;
  assert_int_equal(tu_http_read(fd, &r, 1, &eof), 1);
  if (r.status != status) fail_msg("expected %d, got %d: %s", status, r.status, r.body);
  assert_true(r.close);
  assert_non_null(strstr(r.body, "\"error\""));
  tu_http_resp_free(&r, 1);
  char c;
  assert_int_equal(recv(fd, &c, 1, 0), 0); /* then the server closes */
  close(fd);
}

static void test_http_limits(void **state) {
  (void)state;
  fixture *f = start_default();
  char big[4096];
  snprintf(big, sizeof big, "GET /%01500d HTTP/1.1\r\n\r\n", 7);
  expect_refusal(f->port, big, 431);
  snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Long: %01200d\r\n\r\n", 7);
  expect_refusal(f->port, big, 431);
  expect_refusal(f->port, "POST / HTTP/1.1\r\nContent-Length: 2049\r\n\r\n", 413);
  fl_buf chunked = {0};
  fl_buf_puts(&chunked, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 3; i++) {
    fl_buf_puts(&chunked, "400\r\n");
    for (int j = 0; j < 1024; j++) fl_buf_puts(&chunked, "x");
    fl_buf_puts(&chunked, "\r\n");
  }
  fl_buf_puts(&chunked, "0\r\n\r\n");
  expect_refusal(f->port, chunked.p, 413);
  fl_buf_free(&chunked);
  expect_refusal(f->port, "HELLO\r\n\r\n", 400);
  expect_refusal(
      f->port,
      "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
  expect_refusal(f->port, "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                 400);
  expect_refusal(f->port, "CONNECT a:443 HTTP/1.1\r\n\r\n", 400);
  /* still serving after all that */
  tu_http_resp r;
  assert_int_equal(tu_http_request(f->port, "GET /ok HTTP/1.1\r\n\r\n", &r), 200);
  tu_http_resp_free(&r, 1);
  finish(f);
}

static void test_http_conn_cap(void **state) {
  (void)state;
  fixture *f = start(2, 8, 5000, 5000);
  int a = tu_http_connect(f->port), b = tu_http_connect(f->port), eof;
  tu_http_resp r;
  const char *get = "GET / HTTP/1.1\r\n\r\n";
  tu_http_send(a, get, strlen(get)); /* make sure both are accepted before the third */
  assert_int_equal(tu_http_read(a, &r, 1, &eof), 1);
  tu_http_resp_free(&r, 1);
  tu_http_send(b, get, strlen(get));
  assert_int_equal(tu_http_read(b, &r, 1, &eof), 1);
  tu_http_resp_free(&r, 1);
  int c = tu_http_connect(f->port);
  assert_int_equal(tu_http_read(c, &r, 1, &eof), 1);
  assert_int_equal(r.status, 503);
  tu_http_resp_free(&r, 1);
  close(c);
  close(b);
  /* once one closes, a new connection is served (the close may take the loop a moment) */
  int served = 0;
  for (int i = 0; i < 50 && !served; i++) {
    if (tu_http_request(f->port, get, &r) == 200) served = 1;
    tu_http_resp_free(&r, 1);
    if (!served) fl_sleep_ms(20);
  }
  assert_true(served);
  close(a);
  finish(f);
}

static void test_http_timeouts_and_http10(void **state) {
  (void)state;
  fixture *f = start(16, 8, 200, 300);
  char c;
  double t0 = fl_now();
  int idle = tu_http_connect(f->port);
  assert_int_equal(recv(idle, &c, 1, 0), 0); /* closed by the idle timeout, well before 5 s */
  assert_true(fl_now() - t0 < 3.0);
  close(idle);
  int slow = tu_http_connect(f->port);
  const char *part = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 20; i++) { /* trickling bytes does not keep a request alive */
    tu_http_send(slow, part + (i % 5), 1);
    fl_sleep_ms(50);
  }
  assert_int_equal(recv(slow, &c, 1, 0), 0);
  close(slow);
  int fd = tu_http_connect(f->port), eof;
  const char *r10 = "GET /old HTTP/1.0\r\n\r\n";
  tu_http_send(fd, r10, strlen(r10));
  tu_http_resp r;
  assert_int_equal(tu_http_read(fd, &r, 1, &eof), 1);
  assert_int_equal(r.status, 200);
  assert_true(r.close);
  tu_http_resp_free(&r, 1);
  assert_int_equal(recv(fd, &c, 1, 0), 0);
  close(fd);
  finish(f);
}

/* Stopping with a client still connected (and one mid-request) completes. */
static void test_http_stop_with_clients(void **state) {
  (void)state;
  fixture *f = start_default();
  int a = tu_http_connect(f->port), b = tu_http_connect(f->port);
  tu_http_send(b, "GET / HT", 8);
  fl_sleep_ms(50);
  finish(f);
  char c;
  assert_true(recv(a, &c, 1, 0) <= 0);
  close(a);
  close(b);
}

/* Reads from fd until the server closes it (or the 5 s socket timeout) into buf (cap bytes,
 * NUL-terminated). Returns the bytes read; *end is 0 after a clean close (FIN), else the errno
 * of the recv that failed (ECONNRESET: a reset, EAGAIN: the timeout). */
static size_t read_all(int fd, char *buf, size_t cap, int *end) {
  size_t n = 0;
  *end = EAGAIN;
  for (int reads = 0; n + 1 < cap && reads < 10000; reads++) {
    ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
    if (r <= 0) {
      *end = r == 0 ? 0 : errno;
      break;
    }
    n += (size_t)r;
  }
  buf[n] = 0;
  return n;
}

/* The value of header name (e.g. "Retry-After") in the response head at resp, or NULL (a
 * pointer into resp, up to the line's end). */
static const char *header_of(const char *resp, const char *name) {
  const char *end = strstr(resp, "\r\n\r\n");
  size_t n = strlen(name);
  for (const char *l = strstr(resp, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n"))
    if (!strncasecmp(l + 2, name, n) && l[2 + n] == ':') return l + 3 + n + (l[3 + n] == ' ');
  return NULL;
}

static void assert_header(const char *resp, const char *name, const char *value) {
  const char *v = header_of(resp, name);
  if (!v || strncmp(v, value, strlen(value)) != 0 || strncmp(v + strlen(value), "\r\n", 2))
    fail_msg("want \"%s: %s\" in:\n%s", name, value, resp);
}

/* One request on a new connection that the test closes; returns the status (0: none). */
static int status_of(int port, const char *req) {
  tu_http_resp r;
  int st = tu_http_request(port, req, &r);
  if (st) tu_http_resp_free(&r, 1);
  return st;
}

/* A counter from GET /stats. */
static long stat_of(int port, const char *name) {
  tu_http_resp r;
  assert_int_equal(tu_http_request(port, "GET /stats HTTP/1.1\r\n\r\n", &r), 200);
  const char *p = strstr(r.body, name);
  long v = p ? atol(p + strlen(name) + 1) : -1;
  tu_http_resp_free(&r, 1);
  return v;
}

/* Issue 26: silent connections held slots for the whole idle timeout (60 s). A connection
 * must send a whole head within header_ms of its accept; between keep-alive requests only the
 * idle timeout applies. (Idle and request timeouts are 30 s here, far beyond the client's 5 s
 * socket timeout: a close it sees comes from the header timeout.) */
static void test_http_header_timeout(void **state) {
  (void)state;
  fixture *f = start_opts((http_opts){.max_conns = 16,
                                      .max_head = 1024,
                                      .max_body = 2048,
                                      .max_pipeline = 8,
                                      .header_ms = 200,
                                      .idle_ms = 30000,
                                      .request_ms = 30000});
  char c;
  int silent = tu_http_connect(f->port);
  assert_int_equal(recv(silent, &c, 1, 0), 0); /* closed, no answer */
  close(silent);
  int partial = tu_http_connect(f->port);
  tu_http_send(partial, "GET / HTTP/1.1\r\nHo", 18); /* a head begun, never finished */
  assert_int_equal(recv(partial, &c, 1, 0), 0);
  close(partial);
  /* a keep-alive connection may idle longer than header_ms between requests */
  int fd = tu_http_connect(f->port), eof;
  const char *get = "GET /a HTTP/1.1\r\n\r\n";
  tu_http_resp r;
  tu_http_send(fd, get, strlen(get));
  assert_int_equal(tu_http_read(fd, &r, 1, &eof), 1);
  tu_http_resp_free(&r, 1);
  fl_sleep_ms(500);
  tu_http_send(fd, get, strlen(get));
  assert_int_equal(tu_http_read(fd, &r, 1, &eof), 1);
  assert_int_equal(r.status, 200);
  tu_http_resp_free(&r, 1);
  close(fd);
  assert_int_equal(stat_of(f->port, "closed_header"), 2);
  finish(f);
}

/* Issue 26: one address could take every slot. Over max_conns_per_peer (loopback is a peer
 * too) a connection gets a real 503 with Connection: close and Retry-After, then a clean
 * close; once one of the peer's connections closes, a new one is served. */
static void test_http_peer_cap(void **state) {
  (void)state;
  fixture *f = start_opts((http_opts){.max_conns = 100,
                                      .max_conns_per_peer = 3,
                                      .max_head = 1024,
                                      .max_body = 2048,
                                      .max_pipeline = 8,
                                      .idle_ms = 5000,
                                      .request_ms = 5000});
  int fds[3], eof;
  tu_http_resp r;
  const char *get = "GET / HTTP/1.1\r\n\r\n";
  for (int i = 0; i < 3; i++) { /* each one accepted before the next */
    fds[i] = tu_http_connect(f->port);
    tu_http_send(fds[i], get, strlen(get));
    assert_int_equal(tu_http_read(fds[i], &r, 1, &eof), 1);
    assert_int_equal(r.status, 200);
    tu_http_resp_free(&r, 1);
  }
  int over = tu_http_connect(f->port), end;
  tu_http_send(over, get, strlen(get));
  char buf[2048];
  read_all(over, buf, sizeof buf, &end);
  assert_int_equal(atoi(buf + 9), 503);
  assert_header(buf, "Connection", "close");
  assert_header(buf, "Retry-After", "1");
  assert_non_null(strstr(buf, "too many connections from this address"));
  if (end != 0) fail_msg("the refusal ended with %s, not a clean close", strerror(end));
  close(over);
  close(fds[0]);
  int served = 0, refused = 1;
  for (int i = 0; i < 50 && !served; i++) { /* the close may take the loop a moment */
    int st = status_of(f->port, get);
    served = st == 200;
    refused += st == 503;
    if (!served) fl_sleep_ms(20);
  }
  assert_true(served);
  close(fds[1]);
  close(fds[2]);
  long got = -1;
  for (int i = 0; i < 50 && got < 0; i++) { /* the same: wait until /stats gets a slot */
    tu_http_resp sr;
    int st = tu_http_request(f->port, "GET /stats HTTP/1.1\r\n\r\n", &sr);
    if (st == 200) got = atol(strstr(sr.body, "refused_peer=") + 13);
    refused += st == 503;
    if (st) tu_http_resp_free(&sr, 1);
    if (got < 0) fl_sleep_ms(20);
  }
  assert_int_equal(got, refused);
  finish(f);
}

/* Issue 26: over the cap, clients often got a reset instead of the 503: the server closed the
 * socket with the client's request unread, and the kernel answered with RST. The request is
 * made to wait in the kernel while the loop is busy (/block), so it is there, unread, when
 * the refusal goes out: the client must read the 503 and then a clean close. */
static void test_http_refusal_is_read(void **state) {
  (void)state;
  fixture *f = start(1, 8, 5000, 5000);
  int a = tu_http_connect(f->port), eof;
  tu_http_resp r;
  const char *get = "GET / HTTP/1.1\r\n\r\n";
  tu_http_send(a, get, strlen(get));
  assert_int_equal(tu_http_read(a, &r, 1, &eof), 1);
  tu_http_resp_free(&r, 1);
  const char *block = "GET /block HTTP/1.1\r\n\r\n";
  tu_http_send(a, block, strlen(block));
  fl_sleep_ms(50); /* the loop is in the handler now (if not, the test only proves less) */
  int b = tu_http_connect(f->port), end;
  const char *post = "POST /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\n";
  tu_http_send(b, post, strlen(post));
  char body[1000];
  memset(body, 'x', sizeof body);
  tu_http_send(b, body, sizeof body);
  char buf[2048];
  read_all(b, buf, sizeof buf, &end);
  assert_int_equal(atoi(buf + 9), 503);
  assert_header(buf, "Connection", "close");
  assert_header(buf, "Retry-After", "1");
  if (end != 0) fail_msg("the refusal ended with %s, not a clean close", strerror(end));
  close(b);
  assert_int_equal(tu_http_read(a, &r, 1, &eof), 1); /* a is served on */
  assert_int_equal(r.status, 200);
  tu_http_resp_free(&r, 1);
  close(a);
  finish(f);
}

/* req with CR and LF shown as \r and \n, for messages (a static buffer). */
static const char *shown(const char *req) {
  static char out[1024];
  size_t k = 0;
  for (const char *p = req; *p && k + 3 < sizeof out; p++) {
    if (*p == '\r' || *p == '\n') {
      out[k++] = '\\';
      out[k++] = *p == '\r' ? 'r' : 'n';
    } else {
      out[k++] = *p;
    }
  }
  out[k] = 0;
  return out;
}

/* Sends req (in pieces split at each '|', 30 ms apart, so that the server parses each read
 * on its own) and expects status; for an error, a plain message (none of http-parser's
 * internals) and a clean close. */
static void expect_status(int port, const char *req, int status) {
  int fd = tu_http_connect(port), end;
  for (const char *p = req; *p;) {
    size_t n = strcspn(p, "|");
    tu_http_send(fd, p, n);
    p += n;
    if (*p == '|') {
      p++;
      fl_sleep_ms(30);
    }
  }
  if (status < 400) { /* kept alive: one answer */
    tu_http_resp r;
    int got = (int)tu_http_read(fd, &r, 1, &end);
    close(fd);
    if (!got || r.status != status)
      fail_msg("%s: expected %d, got %d", shown(req), status, got ? r.status : 0);
    tu_http_resp_free(&r, 1);
    return;
  }
  char buf[4096];
  read_all(fd, buf, sizeof buf, &end);
  close(fd);
  if (atoi(buf + 9) != status) fail_msg("%s: expected %d, got:\n%s", shown(req), status, buf);
  assert_header(buf, "Connection", "close");
  if (strstr(buf, "callback") || strstr(buf, "HPE_")) fail_msg("parser internals: %s", buf);
  if (end != 0) fail_msg("%s: ended with %s, not a clean close", shown(req), strerror(end));
}

/* Issue 26: what RFC 9112 refuses and http-parser (built without HTTP_PARSER_STRICT) let
 * through; and what must still pass, split anywhere. */
static void test_http_strict(void **state) {
  (void)state;
  fixture *f = start_default();
  expect_status(f->port, "GET / HTTP/9.9\r\n\r\n", 505);
  expect_status(f->port, "GET / HTTP/2.0\r\n\r\n", 505);
  expect_status(f->port, "GET / HTTP/1.2\r\n\r\n", 505);
  expect_status(f->port, "GET / HTTP/1.0\r\n\r\n", 200);
  expect_status(f->port, "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nX:\r\n b\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nX: a\r\n| b\r\n\r\n", 400); /* fold split */
  expect_status(f->port, "GET / HTTP/1.1\r\nX: a\r\n |b\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nX:\r\n |b\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nX: a|bc\r\nY: |d\r\nZ:|\r\nW:  e  |\r\n\r\n", 200);
  expect_status(f->port, "GET / HTTP/1.1\r\nX:\r\nY: b\r\n\r\n", 200); /* an empty value */
  const char *te = "POST / HTTP/1.1\r\nTransfer-Encoding: %s\r\n\r\n0\r\n\r\n";
  char req[256];
  static const struct {
    const char *te;
    int status;
  } tes[] = {{"chunked", 200},
             {"Chunked", 200},
             {"gzip, chunked", 501},
             {"gzip,chunked", 501},
             {"chunked, gzip", 400},
             {"chunked, chunked", 400},
             {"gzip", 400},
             {"chunked\r\nTransfer-Encoding: chunked", 400},
             {"gzip\r\nTransfer-Encoding: chunked", 501},
             {"", 400}};
  for (size_t i = 0; i < sizeof tes / sizeof tes[0]; i++) {
    snprintf(req, sizeof req, te, tes[i].te);
    expect_status(f->port, req, tes[i].status);
  }
  expect_status(
      f->port, "GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nAuthorization: Bearer a\r\n\r\n", 200);
  /* the parser's own refusals, in plain words */
  expect_status(f->port, "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
  expect_status(f->port, "GET /a b HTTP/1.1\r\n\r\n", 400);
  expect_status(f->port, "GET / HTTP/1.1\r\nX\x01: y\r\n\r\n", 400);
  finish(f);
}

/* Issue 26: HEAD answers carried the body. A HEAD gets the GET's headers (its Content-Length
 * too) and no body: the answer pipelined behind it starts right after the head. A 405 carries
 * the handler's Allow header. */
static void test_http_head_and_allow(void **state) {
  (void)state;
  fixture *f = start_default();
  int fd = tu_http_connect(f->port), end;
  const char *req = "HEAD /big HTTP/1.1\r\n\r\nHEAD /x HTTP/1.1\r\n\r\n"
                    "GET /405 HTTP/1.1\r\nConnection: close\r\n\r\n";
  tu_http_send(fd, req, strlen(req));
  char buf[8192];
  read_all(fd, buf, sizeof buf, &end);
  close(fd);
  const char *second = strstr(buf, "\r\n\r\n") + 4;
  if (strncmp(second, "HTTP/1.1 200", 12) != 0) fail_msg("a body after HEAD's head:\n%s", buf);
  assert_header(buf, "Content-Length", "65536");
  const char *third = strstr(second, "\r\n\r\n") + 4;
  if (strncmp(third, "HTTP/1.1 405", 12) != 0) fail_msg("a body after HEAD's head:\n%s", buf);
  assert_header(second, "Content-Length", "18"); /* "2 /x? auth=- body=" (2: HTTP_HEAD) */
  assert_header(third, "Allow", "GET, HEAD");
  assert_non_null(strstr(third, "\r\n\r\n{\"error\":\"no\"}"));
  assert_int_equal(end, 0);
  finish(f);
}

/* Query strings: the first pair of the key, percent- and '+'-decoding, bad escapes and values
 * longer than the buffer refused, a key that is only a prefix of another not matched. */
static void test_http_query(void **state) {
  (void)state;
  char v[8];
  size_t n = 0;
  assert_int_equal(http_query_get("user=a%20b+c&k=3&k=4", "user", v, sizeof v, &n), 1);
  assert_int_equal(n, 5);
  assert_memory_equal(v, "a b c", 5);
  assert_int_equal(http_query_get("kk=1&k=3&k=4", "k", v, sizeof v, &n), 1);
  assert_memory_equal(v, "3", 1);
  assert_int_equal(http_query_get("kk=1", "k", v, sizeof v, &n), 0);
  assert_int_equal(http_query_get("", "k", v, sizeof v, &n), 0);
  assert_int_equal(http_query_get("k=%2", "k", v, sizeof v, &n), -1);
  assert_int_equal(http_query_get("k=%zz", "k", v, sizeof v, &n), -1);
  assert_int_equal(http_query_get("k=123456789", "k", v, sizeof v, &n), -1);
  assert_int_equal(http_pct_decode("%41%62", 6, v, sizeof v), 2);
  assert_memory_equal(v, "Ab", 2);
}

int test_http(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_http_query),
      cmocka_unit_test(test_http_keepalive_and_fields),
      cmocka_unit_test(test_http_pipelining),
      cmocka_unit_test(test_http_deferred),
      cmocka_unit_test(test_http_limits),
      cmocka_unit_test(test_http_conn_cap),
      cmocka_unit_test(test_http_timeouts_and_http10),
      cmocka_unit_test(test_http_stop_with_clients),
      cmocka_unit_test(test_http_header_timeout),
      cmocka_unit_test(test_http_peer_cap),
      cmocka_unit_test(test_http_refusal_is_read),
      cmocka_unit_test(test_http_strict),
      cmocka_unit_test(test_http_head_and_allow),
  };
  return cmocka_run_group_tests_name("daemon/http", tests, NULL, NULL);
}
