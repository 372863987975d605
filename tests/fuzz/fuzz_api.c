/* tests/fuzz/fuzz_api.c: libFuzzer target for the API's request handling (daemon/api/api.c): the
 * query parameters of GET /v1/recommend and /v1/users/<id>/history, and the JSON body of
 * POST /v1/recommend, plus the admin routes' token check, on a real state (RocksDB in a temp
 * dir, a few users and items with multi-byte ids) and a tiny model.
 *
 * Input layout: byte 0 picks the method and the route prefix, byte 1 the listener; the rest up
 * to the first '\n' is appended to the route (the query or the user id, raw), and what follows
 * is the body. What must hold for any input: a status from 200 to 599, and a body that parses
 * as JSON whenever it is served as JSON (every client string is escaped). ASan and UBSan (the
 * build's sanitizers) catch memory errors. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"
#include "config/config.h"
#include "daemon/api/api.h"
#include "daemon/serve/serve.h"
#include "state/state.h"

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz_api: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);           \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static config cfg;
static state_db *db;
static serve_slot slot;
static api *A;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  char dir[] = "/tmp/fuzz-api-XXXXXX", err[512], path[64], token[96];
  fl_log_level = FL_LOG_ERROR; /* admin actions log at info and warn */
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/state", dir);
  snprintf(token, sizeof token, "%s/token", dir);
  FILE *f = fopen(token, "w");
  CHECK(f && fputs("fuzz-admin-token-16\n", f) >= 0 && fclose(f) == 0);
  CHECK(chmod(token, 0600) == 0); /* api_new refuses a token file others can write */
  config_init(&cfg);
  CHECK(config_set(&cfg, "state.dir", path, "fuzz", 0, err, sizeof err) == 0);
  CHECK(config_set(&cfg, "api.admin_token_file", token, "fuzz", 0, err, sizeof err) == 0);
  CHECK(config_set(&cfg, "api.max_k", "50", "fuzz", 0, err, sizeof err) == 0);
  state_opts so = {path, 20, 8, STATE_COMPRESSION_NONE, 1, 0, NULL};
  CHECK(state_open(&db, &so, err, sizeof err) == 0);
  state_batch *b = state_batch_new(db);
  static const char *users[] = {"u1", "ユーザー", "a b", "u\"q"};
  for (int i = 0; i < 40; i++) {
    char item[32];
    snprintf(item, sizeof item, i % 5 ? "item-%d" : "品-%d", i);
    CHECK(state_batch_add(b, users[i % 4], strlen(users[i % 4]), item, strlen(item), i, 1.0f) == 0);
  }
  CHECK(state_batch_commit(b, err, sizeof err) == 0);
  state_batch_free(b);
  model_hparams hp;
  model_hparams_default(&hp);
  hp.C = 16, hp.NL = 1, hp.FF = 32, hp.L = 8;
  model_net m;
  CHECK(model_init(&m, &hp, state_item_count(db), 1) == 0);
  uint32_t pop[] = {1, 2, 3};
  serve_slot_init(&slot);
  serve_slot_publish(&slot, serve_model_new(1, NULL, pop, 3));
  serve_slot_publish(&slot, serve_model_new(2, &m, pop, 3));
  api_deps deps = {.cfg = &cfg, .db = db, .slot = &slot};
  CHECK(api_new(&A, &deps, err, sizeof err) == 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  if (n < 2) return 0;
  static const char *const prefix[] = {"/v1/recommend?", "/v1/users/", "/v1/recommend",
                                       "/v1/model",      "/metrics",   "/v1/admin/"};
  int sel = data[0] % 6, admin = data[1] & 1;
  http_req_method method = (data[0] / 6) % 3 == 0   ? HTTP_M_GET
                           : (data[0] / 6) % 3 == 1 ? HTTP_M_POST
                                                    : HTTP_M_PUT;
  const char *rest = (const char *)data + 2;
  size_t rn = n - 2;
  const char *nl = memchr(rest, '\n', rn);
  size_t tn = nl ? (size_t)(nl - rest) : rn;
  fl_buf target = {0}, body = {0};
  fl_buf_puts(&target, prefix[sel]);
  fl_buf_put(&target, rest, tn);
  if (sel == 1) fl_buf_puts(&target, "/history");
  fl_buf_put(&body, nl ? nl + 1 : "", nl ? rn - tn - 1 : 0);
  /* split like the server: path up to '?', the query after it; NUL bytes end the strings */
  char *q = strchr(target.p, '?');
  if (q) *q++ = 0;
  http_req rq = {.method = method,
                 .path = target.p,
                 .query = q ? q : "",
                 .auth = (data[1] & 2) ? "Bearer fuzz-admin-token-16" : NULL,
                 .body = body.p,
                 .body_len = body.n};
  http_resp rs = {.status = 0};
  if (admin)
    api_admin_handle(A, &rq, &rs);
  else
    api_handle(A, &rq, &rs);
  CHECK(rs.status >= 200 && rs.status <= 599);
  if (!rs.content_type || !strcmp(rs.content_type, "application/json")) {
    cJSON *j = cJSON_ParseWithLength(rs.body.p ? rs.body.p : "", rs.body.n);
    CHECK(j != NULL);
    cJSON_Delete(j);
  }
  fl_buf_free(&rs.body);
  fl_buf_free(&target);
  fl_buf_free(&body);
  /* keep two versions in the slot: a fuzzed rollback must not empty it */
  serve_model *cur = serve_slot_get(&slot);
  if (!slot.prev) serve_slot_publish(&slot, serve_model_ref(cur));
  serve_model_unref(cur);
  return 0;
}
