/* daemon/api/api.c: see api.h. JSON is written with cJSON (every client string is escaped on
 * output) and read with the event decoder's strict reader (stream_json_parse and
 * stream_json_members: one value and nothing after it, no repeated key, no \u0000), and every
 * id a client sends passes the event decoder's own check (stream_id_check), so that the API
 * takes exactly the ids ingest can store. Query strings are split on '&' and percent-decoded
 * here (http-parser does not split them). Request metrics: counts by route and status, latency
 * histograms by route. */
#define _GNU_SOURCE
#include "daemon/api/api.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "daemon/api/internal.h"
#include "stream/stream.h"

enum { STATUS_SAMPLES = 120 };

/* Events that may wait for the online evaluation's thread (oeval.h). */
#define ONLINE_QUEUE 256

/* The admin token's length bounds, bytes: below 16 a token is guessable (and "ab" left of a
 * NUL was once taken for the whole token); api.token holds at most TOKEN_MAX. */
#define TOKEN_MIN 16
#define TOKEN_MAX 511

struct api {
  api_deps d;
  char token[TOKEN_MAX + 1]; /* admin bearer token ("" = admin off) */
  serve_ws *ws;              /* the loop's scratch */
  /* scratch for the workers: a stack of spare ones (each job takes one and gives it back) */
  pthread_mutex_t wmu;
  serve_ws **wspare;
  size_t nspare, capspare;
  /* the status page's ingest chart: events stored (counted by the commit hook), sampled at
   * most once a second, the last STATUS_SAMPLES samples */
  uint64_t stored;
  status_sample samples[STATUS_SAMPLES];
  size_t nsamples;
  double t0;    /* when the request being handled arrived */
  int deferred; /* its answer was deferred: recorded when sent */
  route_stats rs[API__R_COUNT];
  oeval *oe;               /* the online evaluation's thread (NULL: api.online_eval_per_s 0) */
  double bucket, bucket_t; /* its token bucket (events) */
  uint32_t *hist;          /* scratch: a user's history as item indices */
  uint32_t *excl;          /* scratch: a request's excluded items (API_MAX_EXCLUDE) */
  state_entry *ent;
  size_t cap;
  uint64_t fallbacks; /* recommendations answered from popularity */
  uint64_t rollbacks;
};

api_deps *api_deps_of(api *a) { return &a->d; }

/* The online sums so far (zero without an evaluation thread). */
static oeval_sums online_sums(const api *a) {
  oeval_sums o = {0};
  if (a->oe) oeval_get(a->oe, &o);
  return o;
}

/* Checks the token file's owner and mode on the open file (fd): refused unless a regular file
 * owned by us or root that neither group nor others can write; a warning when group or others
 * can read it. */
static int token_file_safe(int fd, const char *path, char *err, size_t errlen) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    snprintf(err, errlen, "api.admin_token_file %s: %s", path, strerror(e));
    return -e;
  }
  const char *bad = !S_ISREG(st.st_mode)                       ? "is not a regular file"
                    : st.st_uid != geteuid() && st.st_uid != 0 ? "is owned by another user"
                    : st.st_mode & S_IWOTH                     ? "is world-writable"
                    : st.st_mode & S_IWGRP                     ? "is group-writable"
                                                               : NULL;
  if (bad) {
    snprintf(err, errlen,
             "api.admin_token_file %s %s: anyone who can change it controls the admin API "
             "(chmod 600 it, owned by the daemon's user)",
             path, bad);
    return FL_ERANGE;
  }
  if (st.st_mode & (S_IRGRP | S_IROTH))
    fl_warn("api.admin_token_file %s is readable by %s (chmod 600 it)", path,
            st.st_mode & S_IROTH ? "every user" : "its group");
  return 0;
}

/* Loads the admin token from path into a->token. The file holds the token and nothing else
 * (one final "\n" or "\r\n" allowed): TOKEN_MIN..TOKEN_MAX visible ASCII bytes (! to ~); a
 * NUL, control, space or non-ASCII byte anywhere, or another length, refuses it, as does an
 * unsafe owner or mode (token_file_safe). 0, or a negative code with err filled. */
static int load_token(api *a, const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "api.admin_token_file %s: %s", path, strerror(e));
    return -e;
  }
  char buf[TOKEN_MAX + 3]; /* the longest token and "\r\n", and one more to tell a longer one */
  size_t n = 0;
  int rc = token_file_safe(fd, path, err, errlen);
  while (rc == 0 && n < sizeof buf) {
    ssize_t r = read(fd, buf + n, sizeof buf - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = -errno;
      snprintf(err, errlen, "api.admin_token_file %s: %s", path, strerror(-rc));
    }
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(fd);
  if (rc != 0) return rc;
  size_t len = n;
  if (len > 0 && buf[len - 1] == '\n') len--;
  if (len > 0 && buf[len - 1] == '\r') len--;
  size_t bad = 0;
  while (bad < len && buf[bad] > ' ' && buf[bad] <= '~') bad++;
  if (bad < len) {
    snprintf(err, errlen,
             "api.admin_token_file %s: byte %zu is 0x%02x: the file must hold only the token, "
             "visible ASCII characters (no NUL, control character, space or second line)",
             path, bad, (unsigned char)buf[bad]);
    return FL_EFORMAT;
  }
  if (len < TOKEN_MIN || len > TOKEN_MAX) {
    snprintf(err, errlen,
             "api.admin_token_file %s: the token must be %d to %d bytes long (e.g. "
             "openssl rand -hex 32)",
             path, TOKEN_MIN, TOKEN_MAX);
    return FL_EFORMAT;
  }
  memcpy(a->token, buf, len);
  a->token[len] = 0;
  return 0;
}

int api_new(api **out, const api_deps *deps, char *err, size_t errlen) {
  api *a = xcalloc(1, sizeof *a);
  a->d = *deps;
  const char *tf = deps->cfg->api.admin_token_file;
  if (*tf) {
    int rc = load_token(a, tf, err, errlen);
    if (rc != 0) {
      free(a);
      return rc;
    }
  }
  if (deps->cfg->api.online_eval_per_s > 0) {
    int rc = oeval_new(&a->oe, ONLINE_QUEUE, (int)deps->cfg->train.nice);
    if (rc != 0) {
      snprintf(err, errlen, "cannot start the online evaluation thread: %s", fl_strerror(rc));
      free(a);
      return rc;
    }
  }
  a->ws = serve_ws_new();
  pthread_mutex_init(&a->wmu, NULL);
  a->bucket_t = fl_now();
  *out = a;
  return 0;
}

void api_free(api *a) {
  if (!a) return;
  oeval_free(a->oe);
  serve_ws_free(a->ws);
  for (size_t i = 0; i < a->nspare; i++) serve_ws_free(a->wspare[i]);
  free(a->wspare);
  pthread_mutex_destroy(&a->wmu);
  free(a->hist);
  free(a->excl);
  free(a->ent);
  free(a);
}

/* ---- helpers ---- */

static void reply_json(http_resp *rs, int status, cJSON *j) {
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  rs->status = status;
  rs->content_type = "application/json";
  fl_buf_puts(&rs->body, s);
  fl_buf_puts(&rs->body, "\n");
  free(s);
}

static void reply_error(http_resp *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(http_resp *rs, int status, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "error", msg); /* cJSON escapes; msg holds valid UTF-8 only */
  reply_json(rs, status, j);
}

static int parse_bool(const char *s, size_t n, int *out) {
  if ((n == 4 && !strncasecmp(s, "true", 4)) || (n == 1 && *s == '1'))
    *out = 1;
  else if ((n == 5 && !strncasecmp(s, "false", 5)) || (n == 1 && *s == '0'))
    *out = 0;
  else
    return -1;
  return 0;
}

static int parse_k(const char *s, size_t n, long max, long *out) {
  if (n == 0 || n > 9) return -1;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (v < 1 || v > max) return -1;
  *out = v;
  return 0;
}

static void ensure_cap(api *a, size_t n) {
  if (n <= a->cap) return;
  a->cap = n;
  a->hist = xrealloc(a->hist, n * sizeof *a->hist);
  a->ent = xrealloc(a->ent, n * sizeof *a->ent);
}

/* The longest id a client may send: what ingest stores (stream.max_id_bytes). */
static size_t max_id(const api *a) { return (size_t)a->d.cfg->stream.max_id_bytes; }

/* The stored sequence of user as item indices into a->hist; *n entries (0 if unknown). */
static int user_history(api *a, const char *user, size_t ulen, size_t *n) {
  size_t max = (size_t)a->d.cfg->state.seq_len;
  ensure_cap(a, max);
  int rc = state_seq_get(a->d.db, user, ulen, a->ent, max, n);
  if (rc == FL_EMISSING) {
    *n = 0;
    return 0;
  }
  if (rc != 0) return rc;
  for (size_t i = 0; i < *n; i++) a->hist[i] = a->ent[i].item;
  return 0;
}

/* Adds id[0..len) (not NUL-terminated; valid UTF-8 without NULs) as the string key of o. */
static void add_id(cJSON *o, const char *key, const char *id, size_t len) {
  char *s = strndup(id, len);
  cJSON_AddStringToObject(o, key, s);
  free(s);
}

static void add_hits(api *a, cJSON *j, const serve_hit *h, size_t n) {
  cJSON *arr = cJSON_AddArrayToObject(j, "items");
  for (size_t i = 0; i < n; i++) {
    size_t len;
    const char *id = state_item_id(a->d.db, h[i].item, &len);
    if (!id) continue; /* an anchor row the state does not know (cannot happen once mapped) */
    cJSON *o = cJSON_CreateObject();
    add_id(o, "item", id, len);
    cJSON_AddNumberToObject(o, "score", h[i].score);
    cJSON_AddItemToArray(arr, o);
  }
}

static void recommend_json(api *a, http_resp *rs, const serve_model *s, const char *user,
                           size_t ulen, const serve_hit *hits, size_t got, int fb, size_t n) {
  a->fallbacks += (uint64_t)fb;
  cJSON *j = cJSON_CreateObject();
  if (user) add_id(j, "user", user, ulen);
  add_hits(a, j, hits, got);
  cJSON_AddNumberToObject(j, "model_version", (double)s->version);
  cJSON_AddBoolToObject(j, "fallback", fb);
  cJSON_AddNumberToObject(j, "history_len", (double)n);
  reply_json(rs, 200, j);
}

static void record(api *a, int route, int status, double sec);

/* A recommendation scored on a worker thread: everything the work needs is copied in, the
 * answer is written on the loop (job_done). */
typedef struct {
  uv_work_t w;
  api *a;
  http_deferred *d;
  serve_model *s;
  int route, fb;
  serve_filter f; /* its items are the job's own copy */
  double t0;
  char *user; /* NULL for an anonymous session */
  size_t ulen, n, k, got;
  uint32_t *hist;
  serve_hit *hits;
} score_job;

static void job_free(score_job *j) {
  free(j->user);
  free(j->hist);
  free((uint32_t *)j->f.items);
  free(j->hits);
  free(j);
}

static void job_work(uv_work_t *w) {
  score_job *j = w->data;
  api *a = j->a;
  pthread_mutex_lock(&a->wmu);
  serve_ws *ws = a->nspare ? a->wspare[--a->nspare] : NULL;
  pthread_mutex_unlock(&a->wmu);
  if (!ws) ws = serve_ws_new();
  j->got = serve_recommend(j->s, ws, j->hist, j->n, j->k, &j->f, j->hits, &j->fb);
  pthread_mutex_lock(&a->wmu);
  if (a->nspare == a->capspare) {
    a->capspare = a->capspare ? 2 * a->capspare : 4;
    a->wspare = xrealloc(a->wspare, a->capspare * sizeof *a->wspare);
  }
  a->wspare[a->nspare++] = ws;
  pthread_mutex_unlock(&a->wmu);
}

static void job_done(uv_work_t *w, int status) {
  score_job *j = w->data;
  http_resp rs = {.status = 500, .content_type = NULL, .body = {0}};
  (void)status; /* UV_ECANCELED cannot happen: nothing cancels these jobs */
  recommend_json(j->a, &rs, j->s, j->user, j->ulen, j->hits, j->got, j->fb, j->n);
  record(j->a, j->route, rs.status, fl_now() - j->t0);
  http_finish(j->d, &rs);
  serve_model_unref(j->s);
  job_free(j);
}

/* Hands the scoring to a worker (the catalogue is large and workers are on): 1 if deferred. */
static int recommend_deferred(api *a, const http_req *rq, int route, serve_model *s,
                              const char *user, size_t ulen, const uint32_t *hist, size_t n, long k,
                              const serve_filter *f) {
  if (!a->d.loop || !rq->conn || a->d.cfg->api.workers <= 0 || !s->has_net ||
      s->m.NI < (size_t)a->d.cfg->api.offload_items)
    return 0;
  score_job *j = xcalloc(1, sizeof *j);
  j->w.data = j;
  j->a = a;
  j->s = s;
  j->route = route;
  j->f = *f;
  uint32_t *items = xmalloc((f->nitems ? f->nitems : 1) * sizeof *items);
  if (f->nitems) memcpy(items, f->items, f->nitems * sizeof *items);
  j->f.items = items;
  j->t0 = a->t0;
  j->user = user ? strndup(user, ulen) : NULL;
  j->ulen = ulen;
  j->n = n;
  j->k = (size_t)k;
  j->hist = xmalloc((n ? n : 1) * sizeof *hist);
  if (n) memcpy(j->hist, hist, n * sizeof *hist);
  j->hits = xmalloc((size_t)k * sizeof *j->hits);
  if (uv_queue_work(a->d.loop, &j->w, job_work, job_done) != 0) {
    job_free(j);
    return 0;
  }
  j->d = http_defer(rq);
  a->deferred = 1;
  return 1;
}

static void recommend_reply(api *a, const http_req *rq, int route, http_resp *rs, const char *user,
                            size_t ulen, const uint32_t *hist, size_t n, long k,
                            const serve_filter *f) {
  serve_model *s = serve_slot_get(a->d.slot);
  if (!s) {
    reply_error(rs, 503, "no model and no popularity list yet");
    return;
  }
  if (recommend_deferred(a, rq, route, s, user, ulen, hist, n, k, f)) return; /* the job holds s */
  serve_hit *hits = xmalloc((size_t)k * sizeof *hits);
  int fb;
  size_t got = serve_recommend(s, a->ws, hist, n, (size_t)k, f, hits, &fb);
  recommend_json(a, rs, s, user, ulen, hits, got, fb, n);
  free(hits);
  serve_model_unref(s);
}

/* Items one request may exclude (exclude=, "exclude"): a business rule's list, not a catalogue. */
#define API_MAX_EXCLUDE 1000
#define API_MAX_EXCLUDE_S "1000"

/* ---- routes ---- */

/* Adds item id[0..len) to a->excl[*n] (an id the state does not know cannot be recommended:
 * nothing to add). -1 when the id is not valid or the list is full. */
static int exclude_id(api *a, const char *id, size_t len, size_t *n) {
  if (stream_id_check(id, len, max_id(a)) != STREAM_OK || *n == API_MAX_EXCLUDE) return -1;
  if (!a->excl) a->excl = xmalloc(API_MAX_EXCLUDE * sizeof *a->excl);
  int64_t idx = state_item_find(a->d.db, id, len);
  if (idx > 0) a->excl[(*n)++] = (uint32_t)idx;
  return 0;
}

/* exclude=ID,ID,... (decoded, then split on commas): 0, or -1 (a bad id, too many, a bad
 * escape). */
static int exclude_param(api *a, const http_req *rq, size_t *n) {
  *n = 0;
  size_t cap = rq->query ? strlen(rq->query) : 0, len;
  if (!cap) return 0;
  char *v = xmalloc(cap + 1);
  int rc = http_query_get(rq->query, "exclude", v, cap, &len);
  for (size_t i = 0; rc == 1 && i < len;) {
    size_t j = i;
    while (j < len && v[j] != ',') j++;
    if (exclude_id(a, v + i, j - i, n) != 0) rc = -1;
    i = j + 1;
  }
  free(v);
  return rc < 0 ? -1 : 0;
}

static void get_recommend(api *a, const http_req *rq, http_resp *rs) {
  char user[STATE_ID_MAX + 1], v[32];
  size_t ulen, vl;
  int rc = http_query_get(rq->query, "user", user, STATE_ID_MAX, &ulen);
  if (rc <= 0 || ulen == 0) {
    reply_error(rs, 400,
                rc < 0 ? "user: bad percent-encoding or longer than %d bytes"
                       : "user is required (?user=ID)",
                STATE_ID_MAX);
    return;
  }
  if (stream_id_check(user, ulen, max_id(a)) != STREAM_OK) {
    reply_error(rs, 400,
                "user: not a valid id (UTF-8 without control characters, at most %zu bytes)",
                max_id(a));
    return;
  }
  long k = 10;
  if ((rc = http_query_get(rq->query, "k", v, sizeof v - 1, &vl)) < 0 ||
      (rc == 1 && parse_k(v, vl, (long)a->d.cfg->api.max_k, &k) != 0)) {
    reply_error(rs, 400, "k: expected an integer from 1 to %" PRId64, a->d.cfg->api.max_k);
    return;
  }
  serve_filter f = {0};
  if ((rc = http_query_get(rq->query, "exclude_seen", v, sizeof v - 1, &vl)) < 0 ||
      (rc == 1 && parse_bool(v, vl, &f.exclude_seen) != 0)) {
    reply_error(rs, 400, "exclude_seen: expected true or false");
    return;
  }
  if (exclude_param(a, rq, &f.nitems) != 0) {
    reply_error(rs, 400,
                "exclude: expected item ids separated by commas, at most %d (for ids holding a "
                "comma, use POST)",
                API_MAX_EXCLUDE);
    return;
  }
  f.items = a->excl;
  size_t n;
  if ((rc = user_history(a, user, ulen, &n)) != 0) {
    reply_error(rs, 500, "cannot read the user's history: %s", fl_strerror(rc));
    return;
  }
  recommend_reply(a, rq, API__R_RECOMMEND_GET, rs, user, ulen, a->hist, n, k, &f);
}

static void post_recommend(api *a, const http_req *rq, http_resp *rs) {
  cJSON *j;
  static const char *const names[] = {"history", "k", "exclude_seen", "exclude"};
  const cJSON *f[4];
  stream_reason r = stream_json_parse(&j, rq->body, rq->body_len);
  if (r == STREAM_R_BAD_JSON || stream_json_members(j, names, 4, f) != 0) {
    cJSON_Delete(j);
    reply_error(rs, 400, "the body must be one JSON object (nothing after it, no key twice)");
    return;
  }
  if (r != STREAM_OK) {
    cJSON_Delete(j);
    reply_error(rs, 400,
                "the body holds a \\u escape that is not a character (U+0000 or a "
                "lone surrogate)");
    return;
  }
  const cJSON *h = f[0], *kj = f[1], *ex = f[2], *xl = f[3];
  long k = 10;
  serve_filter flt = {0};
  const char *bad = NULL;
  if (!cJSON_IsArray(h))
    bad = "history: expected an array of item ids";
  else if (kj && (!cJSON_IsNumber(kj) || kj->valuedouble != floor(kj->valuedouble) ||
                  kj->valuedouble < 1 || kj->valuedouble > (double)a->d.cfg->api.max_k))
    bad = "k: expected an integer from 1 to api.max_k";
  else if (ex && !cJSON_IsBool(ex))
    bad = "exclude_seen: expected true or false";
  else if (xl && !cJSON_IsArray(xl))
    bad = "exclude: expected an array of item ids";
  const cJSON *it;
  const cJSON *xs = bad ? NULL : xl;
  cJSON_ArrayForEach(it, xs) {
    if (!cJSON_IsString(it) ||
        exclude_id(a, it->valuestring, strlen(it->valuestring), &flt.nitems) != 0) {
      bad = "exclude: every entry must be an item id, at most " API_MAX_EXCLUDE_S " of them";
      break;
    }
  }
  flt.items = a->excl;
  if (bad) {
    cJSON_Delete(j);
    reply_error(rs, 400, "%s", bad);
    return;
  }
  if (kj) k = (long)kj->valuedouble;
  if (ex) flt.exclude_seen = cJSON_IsTrue(ex);
  size_t n = 0, max = (size_t)a->d.cfg->state.seq_len;
  ensure_cap(a, (size_t)cJSON_GetArraySize(h) + 1);
  int at = 0;
  cJSON_ArrayForEach(it, h) {
    /* strlen is the length: stream_json_parse refused U+0000, raw or escaped */
    if (!cJSON_IsString(it) ||
        stream_id_check(it->valuestring, strlen(it->valuestring), max_id(a)) != STREAM_OK) {
      cJSON_Delete(j);
      reply_error(rs, 400,
                  "history[%d]: every entry must be an item id (a string of 1 to %zu bytes of "
                  "UTF-8 without control characters)",
                  at, max_id(a));
      return;
    }
    at++;
    int64_t idx = state_item_find(a->d.db, it->valuestring, strlen(it->valuestring));
    if (idx > 0) a->hist[n++] = (uint32_t)idx; /* unknown items cannot inform the model */
  }
  cJSON_Delete(j);
  if (n > max) { /* the newest seq_len, as for a stored user */
    memmove(a->hist, a->hist + (n - max), max * sizeof *a->hist);
    n = max;
  }
  recommend_reply(a, rq, API__R_RECOMMEND_POST, rs, NULL, 0, a->hist, n, k, &flt);
}

static void get_history(api *a, const char *enc, http_resp *rs) {
  char user[STATE_ID_MAX + 1];
  long ulen = http_pct_decode(enc, strlen(enc), user, STATE_ID_MAX);
  if (ulen <= 0 || stream_id_check(user, (size_t)ulen, max_id(a)) != STREAM_OK) {
    reply_error(rs, 400,
                "the user id must be a percent-encoded id of 1 to %zu bytes of UTF-8 without "
                "control characters",
                max_id(a));
    return;
  }
  size_t n;
  int rc = user_history(a, user, (size_t)ulen, &n);
  if (rc != 0) {
    reply_error(rs, 500, "cannot read the user's history: %s", fl_strerror(rc));
    return;
  }
  if (n == 0) {
    reply_error(rs, 404, "no stored events for this user");
    return;
  }
  cJSON *j = cJSON_CreateObject();
  add_id(j, "user", user, (size_t)ulen);
  cJSON *arr = cJSON_AddArrayToObject(j, "events");
  for (size_t i = 0; i < n; i++) {
    size_t len;
    const char *id = state_item_id(a->d.db, a->ent[i].item, &len);
    if (!id) continue;
    cJSON *o = cJSON_CreateObject();
    add_id(o, "item", id, len);
    cJSON_AddNumberToObject(o, "ts_ms", (double)a->ent[i].ts_ms);
    cJSON_AddNumberToObject(o, "weight", a->ent[i].weight);
    cJSON_AddItemToArray(arr, o);
  }
  reply_json(rs, 200, j);
}

static cJSON *round_json(const trainer_round *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "at_ms", (double)r->at_ms);
  cJSON_AddNumberToObject(o, "seconds", r->sec);
  cJSON_AddStringToObject(o, "outcome", trainer_outcome_name(r->outcome));
  cJSON_AddNumberToObject(o, "loss", r->f.loss);
  cJSON_AddNumberToObject(o, "users", (double)r->f.users);
  cJSON_AddNumberToObject(o, "holdout_users", (double)r->f.holdout);
  cJSON_AddNumberToObject(o, "candidate_ndcg10", r->f.cand_ndcg10);
  cJSON_AddNumberToObject(o, "serving_ndcg10", r->f.serv_ndcg10);
  cJSON_AddNumberToObject(o, "retained_users", (double)r->f.retain);
  cJSON_AddNumberToObject(o, "carried_users", (double)r->f.carried);
  cJSON_AddNumberToObject(o, "read_users", (double)r->read_users);
  cJSON_AddNumberToObject(o, "read_seconds", r->read_sec);
  cJSON_AddNumberToObject(o, "candidate_retained_ndcg10", r->f.cand_retain_ndcg10);
  cJSON_AddNumberToObject(o, "serving_retained_ndcg10", r->f.serv_retain_ndcg10);
  cJSON_AddNumberToObject(o, "version", (double)r->version);
  return o;
}

/* Seconds since s's round finished (s->trained_at_ms must be known). */
static double model_age_s(const serve_model *s) {
  return (double)(fl_wall_ms() - s->trained_at_ms) / 1000.0;
}

static void get_model(api *a, http_resp *rs) {
  serve_model *s = serve_slot_get(a->d.slot);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "version", s ? (double)s->version : 0);
  cJSON_AddBoolToObject(j, "has_model", s && s->has_net);
  if (s && s->has_net) {
    cJSON_AddNumberToObject(j, "items", (double)s->m.NI);
    cJSON_AddNumberToObject(j, "trained_at_ms", (double)s->trained_at_ms);
    if (s->trained_at_ms) cJSON_AddNumberToObject(j, "age_s", model_age_s(s));
    cJSON *h = cJSON_AddObjectToObject(j, "holdout");
    cJSON_AddNumberToObject(h, "users", (double)s->holdout.users);
    cJSON_AddNumberToObject(h, "HR@10", s->holdout.hr10);
    cJSON_AddNumberToObject(h, "NDCG@10", s->holdout.ndcg10);
    cJSON_AddNumberToObject(j, "anchor_version", (double)s->anchor_version);
  }
  if (a->d.tr) {
    trainer_stats st;
    trainer_get_stats(a->d.tr, &st);
    cJSON *t = cJSON_AddObjectToObject(j, "training");
    cJSON_AddBoolToObject(t, "paused", st.paused);
    cJSON_AddBoolToObject(t, "running", st.running);
    cJSON_AddNumberToObject(t, "rounds", (double)st.rounds);
    cJSON_AddNumberToObject(t, "promoted", (double)st.outcomes[TRAINER_PROMOTED]);
    cJSON_AddNumberToObject(
        t, "rejected",
        (double)(st.outcomes[TRAINER_REJECTED_WORSE] + st.outcomes[TRAINER_REJECTED_NONFINITE]));
    cJSON_AddNumberToObject(t, "pending_events", (double)st.pending_events);
    cJSON_AddNumberToObject(t, "declined", (double)st.skipped);
    cJSON_AddNumberToObject(t, "anchor_version", (double)st.anchor_version);
    cJSON *arr = cJSON_AddArrayToObject(t, "recent_rounds");
    for (size_t i = 0; i < st.nhistory; i++) cJSON_AddItemToArray(arr, round_json(&st.history[i]));
  }
  serve_model_unref(s);
  reply_json(rs, 200, j);
}

static int ready(api *a, const char **why) {
  serve_model *s = serve_slot_get(a->d.slot);
  int has = s && s->has_net;
  serve_model_unref(s);
  if (!has) {
    *why = "no model serves yet (popularity only)";
    return 0;
  }
  if (a->d.consumer) {
    stream_stats st;
    stream_consumer_stats(a->d.consumer, &st);
    if (st.assigned == 0) {
      *why = "no Kafka partitions assigned";
      return 0;
    }
  }
  return 1;
}

/* ---- metrics ---- */

/* The figures of every part, gathered for metrics_page. */
static void get_metrics(api *a, http_resp *rs) {
  stream_stats st;
  trainer_stats ts;
  http_stats hs[2];
  if (a->d.consumer) stream_consumer_stats(a->d.consumer, &st);
  if (a->d.tr) trainer_get_stats(a->d.tr, &ts);
  if (a->d.server) http_server_stats(a->d.server, &hs[0]);
  if (a->d.admin) http_server_stats(a->d.admin, &hs[1]);
  serve_model *s = serve_slot_get(a->d.slot);
  metrics_input in = {.st = a->d.consumer ? &st : NULL,
                      .tr = a->d.tr ? &ts : NULL,
                      .version = s ? s->version : 0,
                      .age_s = s && s->trained_at_ms ? model_age_s(s) : 0,
                      .swaps = a->d.slot->swaps,
                      .fallbacks = a->fallbacks,
                      .online = online_sums(a),
                      .routes = a->rs,
                      .http = {a->d.server ? &hs[0] : NULL, a->d.admin ? &hs[1] : NULL}};
  serve_model_unref(s);
  rs->status = 200;
  rs->content_type = "text/plain; version=0.0.4";
  metrics_page(&rs->body, &in);
}

/* Appends (t, a->stored) to the status page's samples (dropping the oldest when full). */
static void sample_stored(api *a, double t) {
  if (a->nsamples == STATUS_SAMPLES) {
    memmove(a->samples, a->samples + 1, (STATUS_SAMPLES - 1) * sizeof *a->samples);
    a->nsamples--;
  }
  a->samples[a->nsamples++] = (status_sample){t, a->stored};
}

static void get_status(api *a, http_resp *rs) {
  serve_model *s = serve_slot_get(a->d.slot);
  trainer_stats ts;
  stream_stats st;
  if (a->d.tr) trainer_get_stats(a->d.tr, &ts);
  if (a->d.consumer) stream_consumer_stats(a->d.consumer, &st);
  status_sample smp[STATUS_SAMPLES + 1];
  memcpy(smp, a->samples, a->nsamples * sizeof *smp);
  smp[a->nsamples] = (status_sample){fl_now(), a->stored}; /* the rate up to now */
  oeval_sums on = online_sums(a);
  status_input in = {.version = s ? s->version : 0,
                     .has_model = s && s->has_net,
                     .age_s = s && s->trained_at_ms ? model_age_s(s) : -1,
                     .holdout_ndcg10 = s ? s->holdout.ndcg10 : 0,
                     .items = s && s->has_net ? s->m.NI : 0,
                     .tr = a->d.tr ? &ts : NULL,
                     .st = a->d.consumer ? &st : NULL,
                     .samples = smp,
                     .nsamples = a->nsamples + 1,
                     .online_ndcg10 = on.events ? on.ndcg10 / (double)on.events : -1,
                     .online_base_ndcg10 =
                         on.base_events ? on.base_ndcg10 / (double)on.base_events : -1};
  serve_model_unref(s);
  rs->status = 200;
  rs->content_type = "text/html; charset=utf-8";
  status_page(&rs->body, &in);
}

/* ---- dispatch ---- */

static void record(api *a, int route, int status, double sec) {
  route_stats *q = &a->rs[route];
  int c = 0;
  while (c < API__NCODES - 1 && q->code[c] && q->code[c] != status) c++;
  q->code[c] = status;
  q->count[c]++;
  size_t i = 0;
  while (i < API__NLAT && sec > api__lat_le[i]) i++;
  q->lat[i]++;
  q->lat_sum += sec;
  q->lat_n++;
}

/* Methods a route takes. GET takes HEAD too: the server sends a HEAD's answer without body. */
enum { M_GET = 1, M_POST = 2 };

/* 1 when rq's method is one the route takes (methods, M_*); else rs is a 405 with its Allow. */
static int method_ok(const http_req *rq, unsigned methods, http_resp *rs) {
  if (((methods & M_GET) && (rq->method == HTTP_M_GET || rq->method == HTTP_M_HEAD)) ||
      ((methods & M_POST) && rq->method == HTTP_M_POST))
    return 1;
  rs->allow = methods == M_POST ? "POST" : methods & M_POST ? "GET, HEAD, POST" : "GET, HEAD";
  reply_error(rs, 405, "method not allowed here: use %s", rs->allow);
  return 0;
}

/* GET /v1/users/<id>/history: the id between the route's prefix and suffix. */
static void history_route(api *a, const http_req *rq, http_resp *rs) {
  char enc[3 * STATE_ID_MAX + 1];
  const char *p = rq->path;
  size_t n = strlen(p) - 18;
  if (n >= sizeof enc || memchr(p + 10, '/', n)) {
    reply_error(rs, 404, "no such route");
    return;
  }
  memcpy(enc, p + 10, n);
  enc[n] = 0;
  get_history(a, enc, rs);
}

static void reply_status(http_resp *rs, const char *status) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "status", status);
  reply_json(rs, 200, j);
}

static void healthz_route(api *a, const http_req *rq, http_resp *rs) {
  (void)a, (void)rq;
  reply_status(rs, "ok");
}

static void readyz_route(api *a, const http_req *rq, http_resp *rs) {
  (void)rq;
  const char *why = NULL;
  if (ready(a, &why))
    reply_status(rs, "ready");
  else
    reply_error(rs, 503, "not ready: %s", why);
}

static void model_route(api *a, const http_req *rq, http_resp *rs) {
  (void)rq;
  get_model(a, rs);
}

static void metrics_route(api *a, const http_req *rq, http_resp *rs) {
  (void)rq;
  get_metrics(a, rs);
}

static void status_route(api *a, const http_req *rq, http_resp *rs) {
  (void)rq;
  get_status(a, rs);
}

typedef void (*route_fn)(api *a, const http_req *rq, http_resp *rs);

/* The public routes. A path matches a route when it equals path, or, with a suffix, when it
 * starts with path, ends with suffix and has something between them. get serves GET and
 * HEAD, post serves POST (NULL: the method is not taken); id and post_id name the route in
 * the request metrics. */
static const struct route {
  const char *path, *suffix;
  route_fn get, post;
  int id, post_id;
} routes[] = {
    {"/v1/recommend", NULL, get_recommend, post_recommend, API__R_RECOMMEND_GET,
     API__R_RECOMMEND_POST},
    {"/v1/users/", "/history", history_route, NULL, API__R_HISTORY, 0},
    {"/v1/model", NULL, model_route, NULL, API__R_MODEL, 0},
    {"/healthz", NULL, healthz_route, NULL, API__R_HEALTHZ, 0},
    {"/readyz", NULL, readyz_route, NULL, API__R_READYZ, 0},
    {"/metrics", NULL, metrics_route, NULL, API__R_METRICS, 0},
    {"/", NULL, status_route, NULL, API__R_STATUS, 0},
};

static const struct route *route_of(const char *p) {
  size_t n = strlen(p);
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    const struct route *r = &routes[i];
    size_t pl = strlen(r->path), sl = r->suffix ? strlen(r->suffix) : 0;
    if (!r->suffix ? !strcmp(p, r->path)
                   : n > pl + sl && !strncmp(p, r->path, pl) && !strcmp(p + n - sl, r->suffix))
      return r;
  }
  return NULL;
}

void api_handle(void *ctx, const http_req *rq, http_resp *rs) {
  api *a = ctx;
  double t0 = a->t0 = fl_now();
  const struct route *r = route_of(rq->path);
  int id = API__R_OTHER;
  if (!r) {
    reply_error(rs, 404, "no such route");
  } else {
    id = r->id;
    if (method_ok(rq, M_GET | (r->post ? M_POST : 0), rs)) {
      int post = rq->method == HTTP_M_POST;
      if (post) id = r->post_id;
      (post ? r->post : r->get)(a, rq, rs);
    }
  }
  if (a->deferred)
    a->deferred = 0; /* recorded when its answer is sent */
  else
    record(a, id, rs->status, fl_now() - t0);
}

/* Constant-time comparison of the Authorization header with "Bearer <token>" (the scheme is
 * case-insensitive, RFC 9110 11.1): the time depends on the token's length only. */
static int authorized(const api *a, const char *auth) {
  if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
  const char *given = auth + 7;
  size_t n = strlen(a->token), m = strlen(given);
  unsigned diff = (unsigned)(n ^ m);
  for (size_t i = 0; i < n; i++)
    diff |= (unsigned char)a->token[i] ^ (unsigned char)given[i < m ? i : 0];
  return diff == 0 && n > 0;
}

/* The admin action called what: -1 for rollback, 1 for a trainer command (into *cmd), 0 for
 * none (the trainer's need a trainer). */
static int admin_action(const api *a, const char *what, trainer_cmd *cmd) {
  if (!strcmp(what, "rollback")) return -1;
  static const struct {
    const char *name;
    trainer_cmd cmd;
  } acts[] = {{"train-now", TRAINER_TRAIN_NOW},
              {"reanchor", TRAINER_REANCHOR},
              {"pause-training", TRAINER_PAUSE},
              {"resume-training", TRAINER_RESUME}};
  for (size_t i = 0; a->d.tr && i < sizeof acts / sizeof acts[0]; i++)
    if (!strcmp(what, acts[i].name)) {
      *cmd = acts[i].cmd;
      return 1;
    }
  return 0;
}

void api_admin_handle(void *ctx, const http_req *rq, http_resp *rs) {
  api *a = ctx;
  double t0 = fl_now();
  const char *p = rq->path;
  trainer_cmd c = TRAINER_TRAIN_NOW;
  int act = 0;
  if (!authorized(a, rq->auth)) {
    reply_error(rs, 401, "a valid \"Authorization: Bearer <token>\" header is required");
  } else if (strncmp(p, "/v1/admin/", 10) != 0 || !(act = admin_action(a, p + 10, &c))) {
    reply_error(rs, 404, "no such admin action");
  } else if (method_ok(rq, M_POST, rs)) {
    const char *what = p + 10;
    cJSON *j = cJSON_CreateObject();
    int status = 200;
    if (act < 0) {
      serve_model *bad = NULL;
      if (serve_slot_rollback(a->d.slot, &bad) != 0) {
        cJSON_Delete(j);
        reply_error(rs, 409, "no previous version to roll back to");
        goto done;
      }
      serve_model *now = serve_slot_get(a->d.slot);
      fl_warn("admin: rolled back from version %" PRIu64 " to %" PRIu64, bad->version,
              now ? now->version : 0);
      cJSON_AddNumberToObject(j, "rolled_back", (double)bad->version);
      cJSON_AddNumberToObject(j, "version", now ? (double)now->version : 0);
      serve_model_unref(now);
      serve_model_unref(bad);
      a->rollbacks++;
    } else {
      trainer_command(a->d.tr, c);
      fl_info("admin: %s", what);
      status = 202;
    }
    cJSON_AddStringToObject(j, "status", status == 202 ? "accepted" : "done");
    reply_json(rs, status, j);
  }
done:
  record(a, API__R_ADMIN, rs->status, fl_now() - t0);
}

/* ---- events made durable ---- */

/* The online evaluation: the loop picks the events (a token bucket of api.online_eval_per_s,
 * at most ONLINE_BATCH_MAX a batch, since finding the history before an event scans the
 * batch) and hands them to the evaluation thread (oeval.h), which ranks them. */
#define ONLINE_BATCH_MAX 64

void api_on_stored(api *a, const stream_stored *ev, size_t n) {
  a->stored += n;
  double tnow = fl_now();
  if (!a->nsamples || tnow - a->samples[a->nsamples - 1].t >= 1.0) sample_stored(a, tnow);
  /* online evaluation: a token bucket of api.online_eval_per_s */
  double rate = (double)a->d.cfg->api.online_eval_per_s, now = fl_now();
  if (rate <= 0 || !a->oe) return;
  a->bucket += (now - a->bucket_t) * rate;
  a->bucket_t = now;
  if (a->bucket > rate) a->bucket = rate; /* at most one second's worth at once */
  serve_model *s = NULL, *base = NULL;
  size_t budget = a->bucket >= ONLINE_BATCH_MAX ? ONLINE_BATCH_MAX : (size_t)a->bucket;
  /* All users: a budget's worth spread over the batch. A share of the users, picked by a hash
   * of their ids: every event of theirs (within the budget), so that two daemons reading one
   * stream rank the same events and their online metrics can be compared pairwise. */
  double share = a->d.cfg->api.online_eval_share;
  uint64_t cut = share < 1.0 ? (uint64_t)(share * 0x1p64) : UINT64_MAX;
  size_t step = share < 1.0 ? 1 : n / (budget ? budget : 1) + 1;
  size_t queued = 0;
  for (size_t i = 0; i < n && a->bucket >= 1 && queued < ONLINE_BATCH_MAX; i += step) {
    /* the history before event i: the stored sequence minus this user's events from i on */
    size_t after = 0;
    for (size_t j = i; j < n; j++) after += ev[j].user == ev[i].user;
    size_t len, m;
    const char *id = state_user_id(a->d.db, ev[i].user, &len);
    if (!id || (share < 1.0 && fl_hash_bytes(id, len) >= cut)) continue;
    if (user_history(a, id, len, &m) != 0 || m < after + 1) continue;
    if (!s) {
      if (!(s = serve_slot_get(a->d.slot))) return;
      base = serve_slot_get_base(a->d.slot);
      /* with the baseline on, both sums cover the same events: none before an anchor exists
       * (popularity serves then, and there is nothing to compare with) */
      if (!base && a->d.cfg->api.online_eval_baseline && a->d.tr) break;
    }
    a->bucket -= 1;
    queued++;
    oeval_push(a->oe, serve_model_ref(s), base ? serve_model_ref(base) : NULL, a->hist, m - after,
               ev[i].item);
  }
  serve_model_unref(s);
  serve_model_unref(base);
}
