/* model/data.c: datasets: loading the text files, truncation, leave-one-out training samples
 * and packing samples into model batches.
 *
 * Design. The two file formats (`user item` per line, `user item item ...` per line) are one
 * grammar: every non-empty line is a user id followed by one or more item ids, and a line's
 * items are appended to that user's sequence. The loader reads the whole file once
 * (fl_read_file) and scans the buffer by hand (no stdio, no strtol per token: ml-1m has a
 * million lines), collecting (user index, item) pairs in file order. User ids map to dense
 * indices in order of first appearance through an open-addressing hash table, so users need
 * not be contiguous in the file. A stable counting sort by user index then lays the sequences
 * out as one CSR array (off, items), keeping each user's items in file order.
 *
 * Samples are (user, end) pairs into that array; packing copies the context windows into a
 * caller-owned token buffer, so a batch costs no allocation. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/internal.h"
#include "model/model.h"

/* ---- user id -> dense index ---- */

typedef struct {
  int64_t *key;  /* (cap) user ids */
  uint32_t *val; /* (cap) dense index + 1; 0 marks an empty slot */
  size_t cap;    /* slots, a power of two */
  size_t n;      /* used slots */
} data_umap;

static void data_umap_init(data_umap *h, size_t cap) {
  h->cap = cap;
  h->n = 0;
  h->key = xmalloc(cap * sizeof *h->key);
  h->val = xcalloc(cap, sizeof *h->val);
}

static void data_umap_free(data_umap *h) {
  free(h->key);
  free(h->val);
}

/* Slot of key id: either the slot holding it or the empty slot where it belongs. */
static size_t data_umap_slot(const data_umap *h, int64_t id) {
  size_t mask = h->cap - 1;
  size_t i = (size_t)fl_hash64((uint64_t)id) & mask;
  while (h->val[i] != 0 && h->key[i] != id) i = (i + 1) & mask;
  return i;
}

/* Doubles the table (load factor stays below 1/2). */
static void data_umap_grow(data_umap *h) {
  data_umap g;
  data_umap_init(&g, h->cap * 2);
  for (size_t i = 0; i < h->cap; i++) {
    if (h->val[i] == 0) continue;
    size_t j = data_umap_slot(&g, h->key[i]);
    g.key[j] = h->key[i];
    g.val[j] = h->val[i];
  }
  g.n = h->n;
  data_umap_free(h);
  *h = g;
}

/* ---- the loader ---- */

/* Bytes that separate tokens within a line ('\n' ends the line and is handled apart). */
static inline int data_is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Parses one decimal integer token at *pp (optional sign, digits) ending at whitespace, a
 * newline or the end of the buffer. Returns 0 and advances *pp; -1 if the token is not an
 * integer; -2 if it does not fit in int64. */
static int data_parse_int(const char **pp, const char *end, int64_t *out) {
  const char *p = *pp;
  int neg = 0;
  if (p < end && (*p == '-' || *p == '+')) neg = *p++ == '-';
  const char *digits = p;
  uint64_t v = 0;
  int overflow = 0;
  while (p < end && (unsigned)(*p - '0') < 10) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      overflow = 1;
    else
      v = v * 10 + d;
    p++;
  }
  if (p == digits || (p < end && *p != '\n' && !data_is_space((unsigned char)*p))) return -1;
  /* |INT64_MIN| = INT64_MAX + 1. */
  if (overflow || v > (uint64_t)INT64_MAX + (uint64_t)neg) return -2;
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  *pp = p;
  return 0;
}

/* Formats "path:line: what 'token'" (the token cut at its end and at 40 bytes). */
static int data_format_error(char *err, size_t errlen, const char *path, size_t line,
                             const char *what, const char *tok, const char *end) {
  if (err && errlen) {
    if (tok) {
      const char *e = tok;
      while (e < end && e - tok < 40 && *e != '\n' && !data_is_space((unsigned char)*e)) e++;
      snprintf(err, errlen, "%s:%zu: %s '%.*s'", path, line, what, (int)(e - tok), tok);
    } else {
      snprintf(err, errlen, "%s:%zu: %s", path, line, what);
    }
  }
  return FL_EFORMAT;
}

/* Loads a dataset file (see model.h). Contract: on success *ds owns its arrays (data_free);
 * on failure *ds is zeroed and err says why: "PATH: reason" for an unreadable file (-errno),
 * "PATH:LINE: reason" for a malformed line (FL_EFORMAT), "PATH: no interactions" for a file
 * without any (FL_EEMPTY). A line is malformed if a token is not a decimal integer, the user
 * id does not fit in int64, an item id is outside 1 .. 2^31-1, or it has a user but no item.
 * Blank lines (only whitespace) are skipped. More than 2^32-1 users is FL_ERANGE. */
int data__read(const char *path, data_set *ds, char **buf, size_t *len, char *err, size_t errlen) {
  memset(ds, 0, sizeof *ds);
  if (err && errlen) err[0] = 0;
  *buf = NULL;
  *len = 0;
  int rc = fl_read_file(path, (void **)buf, len);
  if (rc != 0 && err && errlen) snprintf(err, errlen, "%s: %s", path, fl_strerror(rc));
  return rc;
}

int data_load(const char *path, data_set *ds, char *err, size_t errlen) {
  char *buf;
  size_t len;
  int rc = data__read(path, ds, &buf, &len, err, errlen);
  if (rc != 0) return rc;

  /* Pairs in file order. Every token takes at least two bytes ("7 "), so there are at most
   * len / 2 items; a quarter of len is a first guess that the arrays outgrow only rarely. */
  size_t cap = len / 4 + 16, n = 0;
  uint32_t *pu = xmalloc(cap * sizeof *pu);
  int32_t *pi = xmalloc(cap * sizeof *pi);
  data_umap users;
  data_umap_init(&users, 1024);
  int64_t *user_id = xmalloc(512 * sizeof *user_id);
  size_t ucap = 512, nusers = 0;
  int32_t maxitem = 0;

  const char *p = buf, *end = buf + len;
  size_t lineno = 0;
  while (p < end) {
    lineno++;
    while (p < end && data_is_space((unsigned char)*p)) p++;
    if (p == end) break;
    if (*p == '\n') {
      p++;
      continue;
    }
    const char *tok = p;
    int64_t uid;
    int r = data_parse_int(&p, end, &uid);
    if (r != 0) {
      rc = data_format_error(err, errlen, path, lineno,
                             r == -1 ? "user id is not an integer:" : "user id out of range:", tok,
                             end);
      goto fail;
    }
    size_t slot = data_umap_slot(&users, uid);
    uint32_t u = users.val[slot] - 1;
    if (users.val[slot] == 0) {
      if (nusers == UINT32_MAX) {
        data_format_error(err, errlen, path, lineno, "more than 2^32-1 users", NULL, end);
        rc = FL_ERANGE;
        goto fail;
      }
      if (nusers == ucap) {
        ucap *= 2;
        user_id = xrealloc(user_id, ucap * sizeof *user_id);
      }
      u = (uint32_t)nusers;
      user_id[nusers++] = uid;
      users.key[slot] = uid;
      users.val[slot] = u + 1;
      if (++users.n * 2 > users.cap) data_umap_grow(&users);
    }

    size_t nline = 0;
    for (;;) {
      while (p < end && data_is_space((unsigned char)*p)) p++;
      if (p == end || *p == '\n') break;
      tok = p;
      int64_t item;
      r = data_parse_int(&p, end, &item);
      if (r == -1) {
        rc = data_format_error(err, errlen, path, lineno, "item id is not an integer:", tok, end);
        goto fail;
      }
      if (r != 0 || item < 1 || item > INT32_MAX) {
        rc = data_format_error(err, errlen, path, lineno,
                               "item id out of range (1..2147483647):", tok, end);
        goto fail;
      }
      if (n == cap) {
        cap *= 2;
        pu = xrealloc(pu, cap * sizeof *pu);
        pi = xrealloc(pi, cap * sizeof *pi);
      }
      pu[n] = u;
      pi[n] = (int32_t)item;
      n++;
      nline++;
      if ((int32_t)item > maxitem) maxitem = (int32_t)item;
    }
    if (nline == 0) {
      rc = data_format_error(err, errlen, path, lineno, "a user id without any item", NULL, end);
      goto fail;
    }
    if (p < end) p++; /* the '\n' */
  }
  if (n == 0) {
    if (err && errlen) snprintf(err, errlen, "%s: no interactions", path);
    rc = FL_EEMPTY;
    goto fail;
  }

  /* Stable counting sort by user: each user's items stay in file order. */
  size_t *off = xcalloc(nusers + 1, sizeof *off);
  for (size_t k = 0; k < n; k++) off[pu[k] + 1]++;
  for (size_t u = 0; u < nusers; u++) off[u + 1] += off[u];
  size_t *next = xmalloc(nusers * sizeof *next);
  memcpy(next, off, nusers * sizeof *next);
  int32_t *items = xmalloc(n * sizeof *items);
  for (size_t k = 0; k < n; k++) items[next[pu[k]]++] = pi[k];
  free(next);

  ds->nusers = nusers;
  ds->NI = (size_t)maxitem;
  ds->off = off;
  ds->items = items;
  ds->user_id = xrealloc(user_id, nusers * sizeof *user_id);
  data_umap_free(&users);
  free(pu);
  free(pi);
  free(buf);
  return 0;

fail:
  data_umap_free(&users);
  free(user_id);
  free(pu);
  free(pi);
  free(buf);
  return rc;
}

void data_free(data_set *ds) {
  free(ds->off);
  free(ds->items);
  free(ds->user_id);
  free(ds->ts);
  memset(ds, 0, sizeof *ds);
}

/* Keeps the last keep items of every user, in place (the items array is not shrunk). NI
 * stays the largest id of the file: the catalogue, and so the model's item table, does not
 * depend on the truncation. Users left with no items (keep = 0) stay, empty. */
void data_truncate(data_set *ds, size_t keep) {
  if (ds->nusers == 0) return;
  size_t w = 0, start = ds->off[0];
  for (size_t u = 0; u < ds->nusers; u++) {
    size_t end = ds->off[u + 1];
    size_t k = end - start < keep ? end - start : keep;
    /* w <= end - k: the move is towards lower addresses and may overlap. */
    memmove(ds->items + w, ds->items + end - k, k * sizeof *ds->items);
    if (ds->ts) memmove(ds->ts + w, ds->ts + end - k, k * sizeof *ds->ts);
    w += k;
    ds->off[u + 1] = w;
    start = end;
  }
  ds->off[0] = 0;
}

/* Training samples (see model.h). User u's training part is its first len - 2 items (none if
 * len <= 2); the samples have end = 1 .. ntrain - 1, in user order then end order. The
 * returned array is allocated even when the count is 0 (free it). */
size_t data_train_samples(const data_set *ds, data_sample **out) {
  size_t count = 0;
  for (size_t u = 0; u < ds->nusers; u++) {
    size_t len = ds->off[u + 1] - ds->off[u];
    if (len >= 4) count += len - 3;
  }
  data_sample *s = xmalloc(count * sizeof *s);
  size_t k = 0;
  for (size_t u = 0; u < ds->nusers; u++) {
    size_t len = ds->off[u + 1] - ds->off[u];
    assert(len <= UINT32_MAX);
    for (size_t end = 1; end + 2 < len; end++) {
      s[k].user = (uint32_t)u;
      s[k].end = (uint32_t)end;
      k++;
    }
  }
  assert(k == count);
  *out = s;
  return count;
}

/* Packs samples (see model.h). Every sample must have 1 <= end < its user's length (a
 * programmer error otherwise). Packed (pad = 0): sample b is min(end, L) tokens; padded
 * (pad = 1): exactly L tokens, the context right-aligned after item-0 padding. tok, off and
 * tgt stay owned by the caller; out points into them. */
void data_pack(const data_set *ds, const data_sample *s, size_t B, size_t L, int pad, int32_t *tok,
               size_t *off, int32_t *tgt, model_batch *out) {
  size_t t = 0;
  off[0] = 0;
  for (size_t b = 0; b < B; b++) {
    size_t u = s[b].user, end = s[b].end;
    assert(u < ds->nusers && end >= 1 && end < ds->off[u + 1] - ds->off[u]);
    const int32_t *seq = ds->items + ds->off[u];
    size_t n = end < L ? end : L;
    if (pad) {
      memset(tok + t, 0, (L - n) * sizeof *tok);
      t += L - n;
    }
    memcpy(tok + t, seq + end - n, n * sizeof *tok);
    t += n;
    off[b + 1] = t;
    tgt[b] = seq[end];
  }
  out->B = B;
  out->T = t;
  out->tok = tok;
  out->off = off;
  out->tgt = tgt;
  out->neg = NULL;
  out->nneg = 0;
}
