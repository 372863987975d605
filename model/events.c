/* model/events.c: timestamped interaction files (`user item ts` per line, and RecBole's atomic
 * `.inter` files) and the split of a dataset into what a model was trained on and the stream
 * that follows (model.h, "time-ordered data").
 *
 * Design. Users and items are string tokens here (ml-100k's are numbers, but nothing says they
 * must be). Rows are read into (user token, item token, timestamp, line) records whose tokens
 * point into the file buffer; a stable sort by timestamp (then line) gives the time order;
 * users and items are numbered in order of first appearance in that order, so that the items
 * known at any moment of the stream are those with the lowest indices. The sequences are then
 * laid out per user as data_load does (CSR, oldest first), each event with its timestamp. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/internal.h"
#include "model/model.h"

/* ---- string tokens -> dense indices ---- */

typedef struct {
  const char **key; /* (cap) token starts (into the file buffer) */
  uint32_t *klen;   /* (cap) token lengths */
  uint32_t *val;    /* (cap) index + 1; 0: empty */
  size_t cap, n;
} tok_map;

static void tok_map_init(tok_map *m, size_t cap) {
  m->cap = cap;
  m->n = 0;
  m->key = xmalloc(cap * sizeof *m->key);
  m->klen = xmalloc(cap * sizeof *m->klen);
  m->val = xcalloc(cap, sizeof *m->val);
}

static void tok_map_free(tok_map *m) {
  free(m->key);
  free(m->klen);
  free(m->val);
}

static size_t tok_map_slot(const tok_map *m, const char *k, uint32_t n) {
  size_t mask = m->cap - 1, i = (size_t)fl_hash_bytes(k, n) & mask;
  while (m->val[i] && (m->klen[i] != n || memcmp(m->key[i], k, n) != 0)) i = (i + 1) & mask;
  return i;
}

/* The index of token k (a new one gets the next index). */
static uint32_t tok_map_get(tok_map *m, const char *k, uint32_t n) {
  size_t i = tok_map_slot(m, k, n);
  if (m->val[i]) return m->val[i] - 1;
  m->key[i] = k;
  m->klen[i] = n;
  m->val[i] = (uint32_t)++m->n;
  if (m->n * 2 > m->cap) { /* keep the load below 1/2 */
    tok_map g;
    tok_map_init(&g, m->cap * 2);
    for (size_t j = 0; j < m->cap; j++)
      if (m->val[j]) {
        size_t s = tok_map_slot(&g, m->key[j], m->klen[j]);
        g.key[s] = m->key[j];
        g.klen[s] = m->klen[j];
        g.val[s] = m->val[j];
      }
    g.n = m->n;
    tok_map_free(m);
    *m = g;
  }
  return (uint32_t)m->n - 1;
}

/* ---- rows ---- */

typedef struct {
  const char *u, *i; /* tokens */
  uint32_t ul, il;
  double ts;
  size_t line;
} ev_row;

typedef struct {
  ev_row *r;
  size_t n, cap;
} ev_rows;

static void rows_push(ev_rows *v, ev_row r) {
  if (v->n == v->cap) v->r = xrealloc(v->r, (v->cap = v->cap ? 2 * v->cap : 4096) * sizeof *v->r);
  v->r[v->n++] = r;
}

static int ev_fail(char *err, size_t errlen, const char *path, size_t line, const char *what,
                   const char *tok, size_t tlen) {
  if (err && errlen) {
    if (tok)
      snprintf(err, errlen, "%s:%zu: %s '%.*s'", path, line, what, (int)(tlen > 40 ? 40 : tlen),
               tok);
    else
      snprintf(err, errlen, "%s:%zu: %s", path, line, what);
  }
  return FL_EFORMAT;
}

/* Splits line [p, e) into up to max fields at any byte of seps; returns the count (max + 1 if
 * there are more). Empty fields count (two tabs in a row), as RecBole's files allow. */
static size_t split_fields(const char *p, const char *e, const char *seps, int collapse,
                           const char **f, size_t *fl, size_t max) {
  size_t n = 0;
  while (collapse && p < e && strchr(seps, *p)) p++;
  while (p <= e) {
    const char *s = p;
    while (p < e && !strchr(seps, *p)) p++;
    if (n == max) return max + 1;
    f[n] = s;
    fl[n++] = (size_t)(p - s);
    if (p == e) break;
    p++;
    while (collapse && p < e && strchr(seps, *p)) p++;
    if (collapse && p == e) break;
  }
  return n;
}

/* A timestamp: a finite decimal number (seconds, as RecBole writes them). */
static int parse_ts(const char *s, size_t n, double *out) {
  char tmp[64];
  if (n == 0 || n >= sizeof tmp) return -1;
  memcpy(tmp, s, n);
  tmp[n] = 0;
  char *end;
  errno = 0;
  double v = strtod(tmp, &end);
  if (*end || errno || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

/* The columns of an .inter header ("name:type" separated by tabs). */
typedef struct {
  size_t ncols, user, item, ts; /* ts = SIZE_MAX: no timestamp column */
} inter_cols;

static int inter_header(const char *p, const char *e, const char *path, inter_cols *c, char *err,
                        size_t errlen) {
  const char *f[64];
  size_t fl[64];
  size_t n = split_fields(p, e, "\t", 0, f, fl, 64);
  if (n > 64) return ev_fail(err, errlen, path, 1, "more than 64 columns in the header", NULL, 0);
  c->ncols = n;
  c->user = c->item = c->ts = SIZE_MAX;
  for (size_t k = 0; k < n; k++) {
    const char *colon = memchr(f[k], ':', fl[k]);
    if (!colon)
      return ev_fail(err, errlen, path, 1, "a header field is not name:type:", f[k], fl[k]);
    size_t nl = (size_t)(colon - f[k]);
    if (nl == 7 && memcmp(f[k], "user_id", 7) == 0) c->user = k;
    if (nl == 7 && memcmp(f[k], "item_id", 7) == 0) c->item = k;
    if (nl == 9 && memcmp(f[k], "timestamp", 9) == 0) c->ts = k;
  }
  if (c->user == SIZE_MAX || c->item == SIZE_MAX)
    return ev_fail(err, errlen, path, 1, "the header has no user_id or no item_id column", NULL, 0);
  return 0;
}

/* Reads the rows of buf (format: DATA_FORMAT_UIT or DATA_FORMAT_INTER). *has_ts: the rows
 * carry timestamps. */
static int read_rows(const char *path, const char *buf, size_t len, data_format fmt, ev_rows *v,
                     int *has_ts, char *err, size_t errlen) {
  const char *p = buf, *end = buf + len;
  inter_cols c = {3, 0, 1, 2};
  size_t line = 0;
  *has_ts = 1;
  if (fmt == DATA_FORMAT_INTER && p < end) {
    const char *e = memchr(p, '\n', (size_t)(end - p));
    if (!e) e = end;
    const char *he = e > p && e[-1] == '\r' ? e - 1 : e;
    int rc = inter_header(p, he, path, &c, err, errlen);
    if (rc) return rc;
    *has_ts = c.ts != SIZE_MAX;
    p = e < end ? e + 1 : end;
    line = 1;
  }
  while (p < end) {
    line++;
    const char *e = memchr(p, '\n', (size_t)(end - p));
    if (!e) e = end;
    const char *le = e > p && e[-1] == '\r' ? e - 1 : e, *s = p, *b = p;
    p = e < end ? e + 1 : end;
    while (b < le && (*b == ' ' || *b == '\t')) b++;
    if (b == le) continue; /* a blank line */
    const char *f[64];
    size_t fl[64];
    size_t n = fmt == DATA_FORMAT_INTER ? split_fields(s, le, "\t", 0, f, fl, 64)
                                        : split_fields(s, le, " \t", 1, f, fl, 3);
    if (n != c.ncols) {
      char what[96];
      if (n > c.ncols)
        snprintf(what, sizeof what, "more than %zu fields", c.ncols);
      else
        snprintf(what, sizeof what, "%zu fields, expected %zu", n, c.ncols);
      return ev_fail(err, errlen, path, line, what, NULL, 0);
    }
    ev_row r = {f[c.user], f[c.item], (uint32_t)fl[c.user], (uint32_t)fl[c.item], 0.0, line};
    if (r.ul == 0) return ev_fail(err, errlen, path, line, "an empty user id", NULL, 0);
    if (r.il == 0) return ev_fail(err, errlen, path, line, "an empty item id", NULL, 0);
    if (r.ul > 256 || r.il > 256)
      return ev_fail(err, errlen, path, line,
                     "an id longer than 256 bytes:", r.ul > 256 ? r.u : r.i, 40);
    if (*has_ts && parse_ts(f[c.ts], fl[c.ts], &r.ts) != 0)
      return ev_fail(err, errlen, path, line, "the timestamp is not a number:", f[c.ts], fl[c.ts]);
    rows_push(v, r);
  }
  if (v->n == 0) {
    if (err && errlen) snprintf(err, errlen, "%s: no interactions", path);
    return FL_EEMPTY;
  }
  if (v->n >= UINT32_MAX) return ev_fail(err, errlen, path, line, "more than 2^32-2 rows", NULL, 0);
  return 0;
}

static int row_cmp(const void *a, const void *b) {
  const ev_row *x = a, *y = b;
  if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
  return x->line < y->line ? -1 : x->line > y->line;
}

/* The numeric value of a token made of digits only (< 2^62), else -1. */
static int64_t token_number(const char *s, uint32_t n) {
  if (n == 0 || n > 18) return -1;
  int64_t v = 0;
  for (uint32_t k = 0; k < n; k++) {
    if (s[k] < '0' || s[k] > '9') return -1;
    v = v * 10 + (s[k] - '0');
  }
  return v;
}

/* Lays the time-sorted rows out as ds (see the top of this file). */
static void rows_to_set(ev_rows *v, int has_ts, data_set *ds) {
  if (has_ts) qsort(v->r, v->n, sizeof *v->r, row_cmp);
  tok_map um, im;
  tok_map_init(&um, 1024);
  tok_map_init(&im, 1024);
  uint32_t *uidx = xmalloc(v->n * sizeof *uidx);
  int32_t *iidx = xmalloc(v->n * sizeof *iidx);
  for (size_t k = 0; k < v->n; k++) {
    uidx[k] = tok_map_get(&um, v->r[k].u, v->r[k].ul);
    iidx[k] = (int32_t)tok_map_get(&im, v->r[k].i, v->r[k].il) + 1;
  }
  size_t nu = um.n, n = v->n;
  ds->nusers = nu;
  ds->NI = im.n;
  ds->off = xcalloc(nu + 1, sizeof *ds->off);
  for (size_t k = 0; k < n; k++) ds->off[uidx[k] + 1]++;
  for (size_t u = 0; u < nu; u++) ds->off[u + 1] += ds->off[u];
  size_t *next = xmalloc((nu ? nu : 1) * sizeof *next);
  memcpy(next, ds->off, nu * sizeof *next);
  ds->items = xmalloc(n * sizeof *ds->items);
  ds->ts = has_ts ? xmalloc(n * sizeof *ds->ts) : NULL;
  ds->user_id = xmalloc((nu ? nu : 1) * sizeof *ds->user_id);
  int numeric = 1;
  for (size_t k = 0; k < n; k++) {
    size_t at = next[uidx[k]]++;
    ds->items[at] = iidx[k];
    if (has_ts) ds->ts[at] = v->r[k].ts;
    if (at == ds->off[uidx[k]]) { /* the user's first row */
      int64_t id = token_number(v->r[k].u, v->r[k].ul);
      ds->user_id[uidx[k]] = id;
      numeric &= id >= 0;
    }
  }
  if (!numeric) /* ids that are not numbers: the dense index + 1 names them */
    for (size_t u = 0; u < nu; u++) ds->user_id[u] = (int64_t)u + 1;
  free(next);
  free(uidx);
  free(iidx);
  tok_map_free(&um);
  tok_map_free(&im);
}

/* Ends with suffix. */
static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

int data_load_format(const char *path, data_format fmt, data_set *ds, char *err, size_t errlen) {
  if (fmt == DATA_FORMAT_AUTO)
    fmt = ends_with(path, ".inter") ? DATA_FORMAT_INTER : DATA_FORMAT_SEQ;
  if (fmt == DATA_FORMAT_SEQ) return data_load(path, ds, err, errlen);
  char *buf;
  size_t len;
  int rc = data__read(path, ds, &buf, &len, err, errlen);
  if (rc != 0) return rc;
  ev_rows v = {0};
  int has_ts = 0;
  rc = read_rows(path, buf, len, fmt, &v, &has_ts, err, errlen);
  if (rc == 0) rows_to_set(&v, has_ts, ds);
  free(v.r);
  free(buf);
  return rc;
}

int data_format_parse(const char *s, data_format *out) {
  static const char *const names[] = {"auto", "seq", "uit", "inter"};
  for (int k = 0; k < 4; k++)
    if (strcmp(s, names[k]) == 0) {
      *out = (data_format)k;
      return 0;
    }
  return FL_ERANGE;
}

/* ---- the split ---- */

typedef struct {
  double ts;
  uint32_t user, at;
} ev_key;

static int key_cmp(const void *a, const void *b) {
  const ev_key *x = a, *y = b;
  if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
  if (x->user != y->user) return x->user < y->user ? -1 : 1;
  return x->at < y->at ? -1 : x->at > y->at;
}

void data_time_order(const data_set *ds, data_sample *out) {
  size_t n = ds->off[ds->nusers];
  ev_key *k = xmalloc((n ? n : 1) * sizeof *k);
  for (size_t u = 0, j = 0; u < ds->nusers; u++)
    for (size_t i = ds->off[u]; i < ds->off[u + 1]; i++, j++)
      k[j] = (ev_key){ds->ts[i], (uint32_t)u, (uint32_t)(i - ds->off[u])};
  qsort(k, n, sizeof *k, key_cmp);
  for (size_t j = 0; j < n; j++) out[j] = (data_sample){k[j].user, k[j].at};
  free(k);
}

int data_split_make(const data_set *ds, double frac, int by_time, data_split *out) {
  memset(out, 0, sizeof *out);
  if (!(frac > 0.0 && frac < 1.0)) return FL_ERANGE;
  if (by_time && !ds->ts) return FL_EFORMAT;
  size_t nu = ds->nusers, n = ds->off[nu];
  out->by_time = by_time;
  out->cut = xcalloc(nu ? nu : 1, sizeof *out->cut);
  out->after = xmalloc((n ? n : 1) * sizeof *out->after);
  if (by_time) { /* all events in time order: the first `before` of them, then the stream */
    data_time_order(ds, out->after);
    size_t before = (size_t)floor(frac * (double)n);
    for (size_t j = 0; j < before; j++) out->cut[out->after[j].user]++;
    const data_sample *first = out->after + before;
    out->split_ts = before < n ? ds->ts[ds->off[first->user] + first->end] : 0.0;
    out->nafter = n - before;
    memmove(out->after, first, out->nafter * sizeof *out->after);
    return 0;
  }
  /* per user: the first floor(frac * len) items before; the rest in today's interleaving,
   * user 0's next event, user 1's, ... (round robin over the users with events left) */
  size_t maxleft = 0;
  for (size_t u = 0; u < nu; u++) {
    size_t len = ds->off[u + 1] - ds->off[u];
    out->cut[u] = (size_t)floor(frac * (double)len);
    if (len - out->cut[u] > maxleft) maxleft = len - out->cut[u];
  }
  for (size_t r = 0; r < maxleft; r++)
    for (size_t u = 0; u < nu; u++)
      if (out->cut[u] + r < ds->off[u + 1] - ds->off[u])
        out->after[out->nafter++] = (data_sample){(uint32_t)u, (uint32_t)(out->cut[u] + r)};
  return 0;
}

void data_split_free(data_split *s) {
  free(s->cut);
  free(s->after);
  memset(s, 0, sizeof *s);
}

void data_prefix(const data_set *ds, const size_t *cut, data_set *out) {
  size_t nu = ds->nusers, n = 0;
  for (size_t u = 0; u < nu; u++) n += cut[u];
  memset(out, 0, sizeof *out);
  out->nusers = nu;
  out->NI = 0;
  out->off = xcalloc(nu + 1, sizeof *out->off);
  out->items = xmalloc((n ? n : 1) * sizeof *out->items);
  out->ts = ds->ts ? xmalloc((n ? n : 1) * sizeof *out->ts) : NULL;
  out->user_id = xmalloc((nu ? nu : 1) * sizeof *out->user_id);
  for (size_t u = 0; u < nu; u++) {
    size_t at = out->off[u];
    memcpy(out->items + at, ds->items + ds->off[u], cut[u] * sizeof *out->items);
    if (ds->ts) memcpy(out->ts + at, ds->ts + ds->off[u], cut[u] * sizeof *out->ts);
    for (size_t i = 0; i < cut[u]; i++)
      if ((size_t)out->items[at + i] > out->NI) out->NI = (size_t)out->items[at + i];
    out->off[u + 1] = at + cut[u];
    out->user_id[u] = ds->user_id ? ds->user_id[u] : (int64_t)u + 1;
  }
}
