/* tests/faults/test_http_faults.c: issue 26, items 6, 10 and 11, through the real API
 * (daemon/api/api.c on daemon/http/http.c in this process, a RocksDB state in a temp dir, clients
 * on loopback sockets): every route answers a wrong method with 405 and an Allow header, HEAD
 * without body, request bodies and ids as strict as events (one validator, stream_id_check,
 * for both), the connection caps' refusals in /metrics, and the admin token: its file (NUL,
 * control bytes, length, permissions) refused by api_new and by a real flamed at startup, a
 * second Authorization header refused. The loop runs on its own thread; the test is the
 * client. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/common.h"
#include "config/config.h"
#include "daemon/api/api.h"
#include "daemon/http/http.h"
#include "daemon/serve/serve.h"
#include "daemon_env.h"
#include "state/state.h"
#include "stream/stream.h"
#include "testutil.h"

#define TOKEN "test-admin-token-0123456789abcdef"

typedef struct {
  char dir[256], token_file[320], state_dir[320];
  config cfg;
  state_db *db;
  serve_slot slot;
  api *a;
  uv_loop_t loop;
  uv_async_t stop;
  http_server *srv, *adm;
  pthread_t th;
  int port, admin_port, stopped;
} fixture;

/* Writes a token file of n bytes with mode. */
static void write_token(const char *path, const void *p, size_t n, mode_t mode) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(p, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(chmod(path, mode), 0);
}

static void set(config *c, const char *name, const char *value) {
  char err[512];
  if (config_set(c, name, value, "test", 0, err, sizeof err) != 0) fail_msg("%s", err);
}

static void on_stopped(void *arg) { ((fixture *)arg)->stopped++; }

static void on_stop(uv_async_t *as) {
  fixture *f = as->data;
  http_server_stop(f->srv, on_stopped, f);
  http_server_stop(f->adm, on_stopped, f);
  uv_close((uv_handle_t *)&f->stop, NULL);
}

static void *run(void *arg) {
  fixture *f = arg;
  uv_run(&f->loop, UV_RUN_DEFAULT);
  return NULL;
}

static http_server *listen_api(fixture *f, http_handler h) {
  const config *c = &f->cfg;
  http_opts o = {.host = "127.0.0.1",
                 .port = 0,
                 .max_conns = (size_t)c->api.max_conns,
                 .max_conns_per_peer = (size_t)c->api.max_conns_per_peer,
                 .max_head = (size_t)c->api.max_head_bytes,
                 .max_body = (size_t)c->api.max_body_bytes,
                 .max_pipeline = (size_t)c->api.max_pipeline,
                 .header_ms = (uint64_t)c->api.header_timeout_ms,
                 .idle_ms = (uint64_t)c->api.idle_timeout_ms,
                 .request_ms = (uint64_t)c->api.request_timeout_ms};
  http_server *s;
  char err[256];
  assert_int_equal(http_server_start(&s, &f->loop, &o, h, f->a, err, sizeof err), 0);
  return s;
}

/* The API and the admin API on ephemeral loopback ports; extra: settings, name=value pairs,
 * NULL-terminated. */
static fixture *start(const char *const *extra) {
  fixture *f = xcalloc(1, sizeof *f);
  assert_int_equal(tu_mkdtemp(f->dir, sizeof f->dir), 0);
  snprintf(f->token_file, sizeof f->token_file, "%s/token", f->dir);
  snprintf(f->state_dir, sizeof f->state_dir, "%s/state", f->dir);
  write_token(f->token_file, TOKEN "\n", strlen(TOKEN) + 1, 0600);
  config_init(&f->cfg);
  set(&f->cfg, "state.dir", f->state_dir);
  set(&f->cfg, "api.admin_token_file", f->token_file);
  set(&f->cfg, "api.online_eval_per_s", "0");
  set(&f->cfg, "api.workers", "0");
  for (size_t i = 0; extra && extra[i]; i += 2) set(&f->cfg, extra[i], extra[i + 1]);
  char err[512];
  state_opts so = {.dir = f->state_dir, .seq_len = 20, .cache_mb = 8, .wal = 1};
  if (state_open(&f->db, &so, err, sizeof err) != 0) fail_msg("state: %s", err);
  serve_slot_init(&f->slot);
  api_deps deps = {.cfg = &f->cfg, .db = f->db, .slot = &f->slot};
  if (api_new(&f->a, &deps, err, sizeof err) != 0) fail_msg("api_new: %s", err);
  uv_loop_init(&f->loop);
  uv_async_init(&f->loop, &f->stop, on_stop);
  f->stop.data = f;
  f->srv = listen_api(f, api_handle);
  f->adm = listen_api(f, api_admin_handle);
  api_deps_of(f->a)->server = f->srv;
  api_deps_of(f->a)->admin = f->adm;
  f->port = http_server_port(f->srv);
  f->admin_port = http_server_port(f->adm);
  pthread_create(&f->th, NULL, run, f);
  return f;
}

static void stop_api(fixture *f) {
  uv_async_send(&f->stop);
  pthread_join(f->th, NULL);
  assert_int_equal(f->stopped, 2);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  api_free(f->a);
  serve_slot_free(&f->slot);
  state_close(f->db);
  config_free(&f->cfg);
  tu_rmtree(f->dir);
  free(f);
}

/* Sends req on a new connection and reads until the server closes it (every request here
 * says Connection: close, or is refused) into buf; returns the status. */
static int exchange(int port, const char *req, size_t len, char *buf, size_t cap) {
  int fd = tu_http_connect(port);
  tu_http_send(fd, req, len);
  size_t n = 0;
  for (int reads = 0; n + 1 < cap && reads < 10000; reads++) {
    ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
    if (r <= 0) break;
    n += (size_t)r;
  }
  buf[n] = 0;
  close(fd);
  return n > 12 ? atoi(buf + 9) : 0;
}

/* method path [headers] [body]: the status, the whole answer in buf. */
static int call(int port, const char *method, const char *path, const char *headers,
                const char *body, size_t blen, char *buf, size_t cap) {
  char req[8192];
  int n =
      snprintf(req, sizeof req,
               "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
               method, path, headers ? headers : "", blen);
  assert_true(n > 0 && (size_t)n + blen < sizeof req);
  memcpy(req + n, body, blen);
  return exchange(port, req, (size_t)n + blen, buf, cap);
}

/* The value of header name in the answer at resp, up to its line's end, copied to out. */
static const char *header_of(const char *resp, const char *name, char *out, size_t cap) {
  const char *end = strstr(resp, "\r\n\r\n");
  size_t n = strlen(name);
  for (const char *l = strstr(resp, "\r\n"); l && end && l < end; l = strstr(l + 2, "\r\n"))
    if (!strncasecmp(l + 2, name, n) && l[2 + n] == ':') {
      const char *v = l + 3 + n + (l[3 + n] == ' ');
      snprintf(out, cap, "%.*s", (int)strcspn(v, "\r"), v);
      return out;
    }
  return NULL;
}

static const char *body_of(const char *resp) {
  const char *b = strstr(resp, "\r\n\r\n");
  return b ? b + 4 : "";
}

/* Issue 26, item 10: DELETE /metrics, PUT /healthz, POST /readyz answered 200. Every route
 * answers every method it does not take with 405 and the methods it does in Allow. */
static void test_wrong_methods(void **state) {
  (void)state;
  fixture *f = start(NULL);
  static const struct {
    const char *method, *path, *allow;
  } cases[] = {
      {"DELETE", "/metrics", "GET, HEAD"},
      {"PUT", "/healthz", "GET, HEAD"},
      {"POST", "/readyz", "GET, HEAD"},
      {"POST", "/v1/model", "GET, HEAD"},
      {"OPTIONS", "/", "GET, HEAD"},
      {"PATCH", "/v1/users/u1/history", "GET, HEAD"},
      {"DELETE", "/v1/recommend", "GET, HEAD, POST"},
      {"PUT", "/v1/recommend?user=u1", "GET, HEAD, POST"},
      {"POST", "/metrics", "GET, HEAD"},
  };
  char buf[4096], v[64];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int st = call(f->port, cases[i].method, cases[i].path, NULL, "", 0, buf, sizeof buf);
    if (st != 405) fail_msg("%s %s: %d, want 405:\n%s", cases[i].method, cases[i].path, st, buf);
    if (!header_of(buf, "Allow", v, sizeof v) || strcmp(v, cases[i].allow) != 0)
      fail_msg("%s %s: Allow \"%s\", want \"%s\"", cases[i].method, cases[i].path,
               header_of(buf, "Allow", v, sizeof v) ? v : "(none)", cases[i].allow);
  }
  /* the admin routes take POST only (once authorized) */
  const char *auth = "Authorization: Bearer " TOKEN "\r\n";
  assert_int_equal(call(f->admin_port, "GET", "/v1/admin/rollback", auth, "", 0, buf, sizeof buf),
                   405);
  assert_non_null(header_of(buf, "Allow", v, sizeof v));
  assert_string_equal(v, "POST");
  /* a right method still works, and an unknown path is still 404 */
  assert_int_equal(call(f->port, "GET", "/healthz", NULL, "", 0, buf, sizeof buf), 200);
  assert_null(header_of(buf, "Allow", v, sizeof v));
  assert_int_equal(call(f->port, "DELETE", "/nowhere", NULL, "", 0, buf, sizeof buf), 404);
  stop_api(f);
}

/* Issue 26, item 10: HEAD answers carried a body. Each GET route's HEAD gets the GET's status
 * and Content-Length, and nothing after the head. */
static void test_head(void **state) {
  (void)state;
  fixture *f = start(NULL);
  static const char *const paths[] = {"/healthz", "/v1/model", "/readyz",
                                      "/v1/users/nobody/history"};
  char get[65536], head[65536], a[32], b[32];
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    int gs = call(f->port, "GET", paths[i], NULL, "", 0, get, sizeof get);
    int hs = call(f->port, "HEAD", paths[i], NULL, "", 0, head, sizeof head);
    assert_int_equal(hs, gs);
    assert_non_null(header_of(get, "Content-Length", a, sizeof a));
    assert_non_null(header_of(head, "Content-Length", b, sizeof b));
    assert_string_equal(a, b);
    assert_true(atol(a) > 0);
    if (*body_of(head)) fail_msg("HEAD %s: a body: %s", paths[i], body_of(head));
  }
  /* the status page and /metrics change between two calls: only the HEAD is looked at */
  static const char *const moving[] = {"/metrics", "/"};
  for (size_t i = 0; i < 2; i++) {
    assert_int_equal(call(f->port, "HEAD", moving[i], NULL, "", 0, head, sizeof head), 200);
    assert_true(atol(header_of(head, "Content-Length", b, sizeof b)) > 100);
    assert_string_equal(body_of(head), "");
  }
  stop_api(f);
}

/* Issue 26, item 10: POST /v1/recommend took trailing garbage, duplicate keys and
 * "item-1\u0000x" (as item-1), and ids with DEL or C1 controls, which the event decoder
 * refuses. They are 400 now; a well-formed body goes on to scoring (503 here: no model). */
static void test_request_strictness(void **state) {
  (void)state;
  fixture *f = start(NULL);
  static const char *const bad[] = {
      "{\"history\":[\"item-1\"]} x",
      "{\"history\":[\"item-1\"]}{}",
      "{\"history\":[\"item-1\"],\"history\":[]}",
      "{\"history\":[\"item-1\"],\"k\":2,\"k\":3}",
      "{\"history\":[\"item-1\\u0000x\"]}",
      "{\"history\":[\"item-1\"],\"other\":\"\\u0000\"}",
      "{\"history\":[\"item-1\\ud800\"]}",
      "{\"history\":[\"item-1\x7f\"]}",
      "{\"history\":[\"item-1\\u007f\"]}",
      "{\"history\":[\"item-1\xc2\x85\"]}",
      "{\"history\":[\"item-1\\u0085\"]}",
      "{\"history\":[\"item-1\xff\"]}",
      "{\"history\":[\"item-1\xc0\xaf\"]}",
      "{\"history\":[\"\"]}",
      "{\"history\":[\"item-1\t\"]}",
      "{\"history\":[\"item-1\\t\"]}",
      "[\"item-1\"]",
  };
  char buf[4096];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int st = call(f->port, "POST", "/v1/recommend", NULL, bad[i], strlen(bad[i]), buf, sizeof buf);
    if (st != 400) fail_msg("%s: %d, want 400:\n%s", bad[i], st, buf);
  }
  /* a NUL byte in the body itself */
  static const char nul[] = "{\"history\":[\"item-1\0x\"]}";
  assert_int_equal(
      call(f->port, "POST", "/v1/recommend", NULL, nul, sizeof nul - 1, buf, sizeof buf), 400);
  /* an id over stream.max_id_bytes (256) */
  char longid[400];
  int n = snprintf(longid, sizeof longid, "{\"history\":[\"%0257d\"]}", 7);
  assert_int_equal(call(f->port, "POST", "/v1/recommend", NULL, longid, (size_t)n, buf, sizeof buf),
                   400);
  static const char *const good[] = {
      "{\"history\":[\"item-1\"]}",
      " {\"history\":[\"item-1\",\"\xc3\xa9\",\"\\u00a0\"],\"k\":3} \r\n",
      "{\"history\":[],\"exclude_seen\":true,\"other\":1,\"other\":2}", /* ignored keys */
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    int st =
        call(f->port, "POST", "/v1/recommend", NULL, good[i], strlen(good[i]), buf, sizeof buf);
    if (st != 503) fail_msg("%s: %d, want 503 (no model):\n%s", good[i], st, buf);
  }
  /* the same ids in the query and the path */
  static const char *const bad_ids[] = {"a%7F", "a%C2%85", "a%C2%9F", "a%00b", "a%1B", "%FF", ""};
  char path[128];
  for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
    snprintf(path, sizeof path, "/v1/recommend?user=%s", bad_ids[i]);
    if (call(f->port, "GET", path, NULL, "", 0, buf, sizeof buf) != 400) fail_msg("%s", path);
    snprintf(path, sizeof path, "/v1/users/%s/history", bad_ids[i]);
    int st = call(f->port, "GET", path, NULL, "", 0, buf, sizeof buf);
    if (st != 400 && !(st == 404 && !*bad_ids[i])) fail_msg("%s: %d", path, st);
  }
  assert_int_equal(call(f->port, "GET", "/v1/users/a%C2%A0/history", NULL, "", 0, buf, sizeof buf),
                   404); /* valid, unknown */
  stop_api(f);
}

/* The validator itself, and that events and requests share it: what a request is refused for,
 * an event is refused for. */
static void test_id_check(void **state) {
  (void)state;
  static const struct {
    const char *s;
    size_t n;
    stream_reason want;
  } cases[] = {
      {"", 0, STREAM_R_EMPTY},
      {"a", 1, STREAM_OK},
      {"item-1", 6, STREAM_OK},
      {"a\0b", 3, STREAM_R_NOT_UTF8},
      {"a\x01", 2, STREAM_R_NOT_UTF8},
      {"a\x1f", 2, STREAM_R_NOT_UTF8},
      {"a\x7f", 2, STREAM_R_NOT_UTF8},
      {"\xc2\x80", 2, STREAM_R_NOT_UTF8},
      {"\xc2\x9f", 2, STREAM_R_NOT_UTF8},
      {"\xc2\xa0", 2, STREAM_OK},
      {"~ \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 11, STREAM_OK},
      {"\xc0\xaf", 2, STREAM_R_NOT_UTF8},
      {"\xed\xa0\x80", 3, STREAM_R_NOT_UTF8},
      {"\xf4\x90\x80\x80", 4, STREAM_R_NOT_UTF8},
      {"\xe2\x82", 2, STREAM_R_NOT_UTF8},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    stream_reason r = stream_id_check(cases[i].s, cases[i].n, 256);
    if (r != cases[i].want)
      fail_msg("case %zu: %s, want %s", i, stream_reason_name(r),
               stream_reason_name(cases[i].want));
    /* the event decoder agrees, as the item of a CSV event */
    char ev[64];
    memcpy(ev, "u,", 2);
    memcpy(ev + 2, cases[i].s, cases[i].n);
    stream_limits lim = {
        .max_message_bytes = 4096, .max_id_bytes = 256, .min_ts_ms = 0, .max_future_ms = 86400000};
    stream_event e;
    stream_reason er =
        stream_event_decode(&e, ev, cases[i].n + 2, STREAM_FORMAT_CSV, &lim, -1, 1700000000000LL);
    stream_reason want = cases[i].want == STREAM_R_EMPTY ? STREAM_R_NO_ITEM : cases[i].want;
    if (er != want) fail_msg("case %zu as an event: %s", i, stream_reason_name(er));
  }
  char big[300];
  memset(big, 'x', sizeof big);
  assert_int_equal(stream_id_check(big, 256, 256), STREAM_OK);
  assert_int_equal(stream_id_check(big, 257, 256), STREAM_R_ID_TOO_LONG);
  assert_int_equal(stream_id_check(NULL, 0, 256), STREAM_R_EMPTY);
}

/* Issue 26, item 6: the caps' refusals reach /metrics, by reason. */
static void test_refusals_in_metrics(void **state) {
  (void)state;
  const char *const extra[] = {"api.max_conns_per_peer", "2", NULL};
  fixture *f = start(extra);
  int a = tu_http_connect(f->port), b = tu_http_connect(f->port), eof;
  const char *get = "GET /healthz HTTP/1.1\r\n\r\n";
  tu_http_resp r;
  for (int i = 0; i < 2; i++) { /* both accepted */
    tu_http_send(i ? b : a, get, strlen(get));
    assert_int_equal(tu_http_read(i ? b : a, &r, 1, &eof), 1);
    tu_http_resp_free(&r, 1);
  }
  char buf[1 << 16];
  assert_int_equal(exchange(f->port, get, strlen(get), buf, sizeof buf), 503);
  close(b);
  int st = 0, refused = 1;
  for (int i = 0; i < 50 && st != 200; i++) { /* until b's close is seen */
    st = call(f->port, "GET", "/metrics", NULL, "", 0, buf, sizeof buf);
    refused += st == 503;
    if (st != 200) fl_sleep_ms(20);
  }
  assert_int_equal(st, 200);
  char want[160];
  snprintf(want, sizeof want,
           "\nflamed_http_connections_refused_total{listener=\"api\",reason=\"max_conns_per_"
           "peer\"} %d\n",
           refused);
  if (!strstr(buf, want)) fail_msg("no \"%s\" in:\n%s", want + 1, buf);
  assert_non_null(strstr(buf, "\nflamed_http_connections_refused_total{listener=\"api\","
                              "reason=\"max_conns\"} 0\n"));
  assert_non_null(strstr(buf, "\nflamed_http_connections_timed_out_total{listener=\"api\","
                              "timeout=\"header\"} "));
  close(a);
  stop_api(f);
}

/* api_new on a token file of n bytes with mode: 0, or the error code with err filled. */
static int load(const char *dir, const void *p, size_t n, mode_t mode, char *err, size_t cap) {
  char path[320];
  snprintf(path, sizeof path, "%s/token", dir);
  unlink(path);
  write_token(path, p, n, mode);
  config c;
  config_init(&c);
  set(&c, "api.admin_token_file", path);
  set(&c, "api.online_eval_per_s", "0");
  serve_slot sl;
  serve_slot_init(&sl);
  api_deps deps = {.cfg = &c, .slot = &sl};
  api *a = NULL;
  err[0] = 0;
  int rc = api_new(&a, &deps, err, cap);
  if (rc == 0) {
    /* "Bearer ab" must not pass; the whole token must */
    http_req rq = {.method = HTTP_M_POST, .path = "/v1/admin/rollback", .query = "", .body = ""};
    http_resp rs = {0};
    rq.auth = "Bearer ab";
    api_admin_handle(a, &rq, &rs);
    assert_int_equal(rs.status, 401);
    fl_buf_free(&rs.body);
    rq.auth = "Bearer " TOKEN;
    api_admin_handle(a, &rq, &rs);
    assert_int_equal(rs.status, 409); /* authorized: no previous version to roll back to */
    fl_buf_free(&rs.body);
  }
  api_free(a);
  serve_slot_free(&sl);
  config_free(&c);
  return rc;
}

static void expect_refused(const char *dir, const void *p, size_t n, mode_t mode, const char *why) {
  char err[512];
  int rc = load(dir, p, n, mode, err, sizeof err);
  if (rc == 0) fail_msg("a token file refused for \"%s\" was accepted", why);
  if (!strstr(err, "api.admin_token_file") || !strstr(err, why))
    fail_msg("the error \"%s\" does not say \"%s\"", err, why);
}

/* Issue 26, item 11: a file holding "ab\0cdefghijklmnop" accepted "Bearer ab"; control bytes,
 * short tokens and world-writable files passed silently. */
static void test_token_file(void **state) {
  (void)state;
  char dir[256], err[512];
  assert_int_equal(tu_mkdtemp(dir, sizeof dir), 0);
  static const char nul[] = "ab\0cdefghijklmnop\n";
  expect_refused(dir, nul, sizeof nul - 1, 0600, "byte 2 is 0x00");
  expect_refused(dir, "abcdefgh\x01ijklmnopq", 17, 0600, "byte 8 is 0x01");
  expect_refused(dir, "abcdefgh\tijklmnopq", 17, 0600, "byte 8 is 0x09");
  expect_refused(dir, "abcdefgh ijklmnopq", 17, 0600, "byte 8 is 0x20");
  expect_refused(dir, "abcdefgh\x7fijklmnopq", 17, 0600, "byte 8 is 0x7f");
  expect_refused(dir, TOKEN "\nsecond-line-here-01\n", strlen(TOKEN) + 21, 0600, "0x0a");
  expect_refused(dir, "short-token\n", 12, 0600, "16 to 511 bytes");
  expect_refused(dir, "\n", 1, 0600, "16 to 511 bytes");
  char big[600];
  memset(big, 'x', sizeof big);
  expect_refused(dir, big, sizeof big, 0600, "16 to 511 bytes");
  expect_refused(dir, TOKEN "\n", strlen(TOKEN) + 1, 0666, "world-writable");
  expect_refused(dir, TOKEN "\n", strlen(TOKEN) + 1, 0602, "world-writable");
  expect_refused(dir, TOKEN "\n", strlen(TOKEN) + 1, 0620, "group-writable");
  /* accepted: exactly the token, a final LF or CRLF, readable by others (a warning) */
  assert_int_equal(load(dir, TOKEN, strlen(TOKEN), 0600, err, sizeof err), 0);
  assert_int_equal(load(dir, TOKEN "\r\n", strlen(TOKEN) + 2, 0400, err, sizeof err), 0);
  assert_int_equal(load(dir, TOKEN "\n", strlen(TOKEN) + 1, 0644, err, sizeof err), 0);
  tu_rmtree(dir);
}

/* Issue 26, item 11: of two Authorization headers the last won. Now: 400, and one header
 * still works. */
static void test_two_authorizations(void **state) {
  (void)state;
  fixture *f = start(NULL);
  char buf[4096];
  const char *auth = "Authorization: Bearer " TOKEN "\r\n";
  char two[256];
  snprintf(two, sizeof two, "Authorization: Bearer wrong\r\n%s", auth);
  assert_int_equal(call(f->admin_port, "POST", "/v1/admin/rollback", two, "", 0, buf, sizeof buf),
                   400);
  assert_null(strstr(buf, "callback")); /* plain words, not the parser's */
  assert_non_null(strstr(buf, "more than one Authorization header"));
  snprintf(two, sizeof two, "%sAuthorization: Bearer wrong\r\n", auth);
  assert_int_equal(call(f->admin_port, "POST", "/v1/admin/rollback", two, "", 0, buf, sizeof buf),
                   400);
  assert_int_equal(call(f->admin_port, "POST", "/v1/admin/rollback", auth, "", 0, buf, sizeof buf),
                   409);
  assert_int_equal(call(f->admin_port, "POST", "/v1/admin/rollback",
                        "Authorization: Bearer test-admin-token\r\n", "", 0, buf, sizeof buf),
                   401); /* a prefix of the token */
  stop_api(f);
}

/* Issue 26, item 11, end to end: flamed refuses to start on a bad token file, and says why. */
static void test_token_startup(void **state) {
  (void)state;
  char dir[256], tf[320], arg[400];
  assert_int_equal(tu_mkdtemp(dir, sizeof dir), 0);
  snprintf(tf, sizeof tf, "%s/token", dir);
  snprintf(arg, sizeof arg, "--api.admin_token_file=%s", tf);
  child d;
  memset(&d, 0, sizeof d);
  snprintf(d.dir, sizeof d.dir, "%s/state", dir);
  snprintf(d.log, sizeof d.log, "%s/flamed.log", dir);
  static const char nul[] = "ab\0cdefghijklmnop\n";
  write_token(tf, nul, sizeof nul - 1, 0600);
  const char *extra[] = {arg, NULL};
  /* the token is read before Kafka is: no broker needed */
  start_daemon(&d, "127.0.0.1:1", "g", "events", extra);
  int st = wait_exit(&d, WAIT_S);
  if (st == 0 || !log_has(&d, "api.admin_token_file") || !log_has(&d, "byte 2 is 0x00")) {
    dump_log(&d);
    fail_msg("flamed exited %d on a token file with a NUL", st);
  }
  write_token(tf, TOKEN "\n", strlen(TOKEN) + 1, 0666);
  start_daemon(&d, "127.0.0.1:1", "g", "events", extra);
  st = wait_exit(&d, WAIT_S);
  if (st == 0 || !log_has(&d, "world-writable")) {
    dump_log(&d);
    fail_msg("flamed exited %d on a world-writable token file", st);
  }
  tu_rmtree(dir);
}

int test_http_faults(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wrong_methods),       cmocka_unit_test(test_head),
      cmocka_unit_test(test_request_strictness),  cmocka_unit_test(test_id_check),
      cmocka_unit_test(test_refusals_in_metrics), cmocka_unit_test(test_token_file),
      cmocka_unit_test(test_two_authorizations),  cmocka_unit_test(test_token_startup),
  };
  return cmocka_run_group_tests_name("faults/http", tests, NULL, NULL);
}
