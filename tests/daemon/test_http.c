/* tests/daemon/test_http.c: the HTTP server's connection hygiene (daemon/http.h) over real
 * loopback sockets: keep-alive, pipelining in order (also when the client does not read while
 * it sends), head and body limits, framing http-parser refuses, the connection cap, idle and
 * request timeouts, HTTP/1.0, deferred answers, and a stop that drains. The loop runs on its own
 * thread; the test is the client. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/common.h"
#include "daemon/http.h"
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
 * from a worker after 0-2 ms, /slow?... after 300 ms. */
static void echo(void *ctx, const http_req *rq, http_resp *rs) {
  uv_loop_t *loop = ctx;
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

static fixture *start(size_t max_conns, size_t max_pipeline, uint64_t idle_ms,
                      uint64_t request_ms) {
  fixture *f = xcalloc(1, sizeof *f);
  uv_loop_init(&f->loop);
  uv_async_init(&f->loop, &f->stop, on_stop);
  f->stop.data = f;
  http_opts o = {.host = "127.0.0.1",
                 .port = 0,
                 .max_conns = max_conns,
                 .max_head = 1024,
                 .max_body = 2048,
                 .max_pipeline = max_pipeline,
                 .idle_ms = idle_ms,
                 .request_ms = request_ms};
  char err[256];
  assert_int_equal(http_server_start(&f->srv, &f->loop, &o, echo, &f->loop, err, sizeof err), 0);
  f->port = http_server_port(f->srv);
  assert_true(f->port > 0);
  pthread_create(&f->th, NULL, run, f);
  return f;
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

int test_http(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_http_keepalive_and_fields),
      cmocka_unit_test(test_http_pipelining),
      cmocka_unit_test(test_http_deferred),
      cmocka_unit_test(test_http_limits),
      cmocka_unit_test(test_http_conn_cap),
      cmocka_unit_test(test_http_timeouts_and_http10),
      cmocka_unit_test(test_http_stop_with_clients),
  };
  return cmocka_run_group_tests_name("daemon/http", tests, NULL, NULL);
}
