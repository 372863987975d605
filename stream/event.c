/* stream/event.c: decoding and validation of one event payload (see stream.h for the formats).
 *
 * Design. Each format has one function that finds the four fields and hands each, in the
 * order user, item, ts, type, to the same checks (put_field, resolve_ts), so both formats
 * refuse the same things with the same reasons. Strings are copied into the event's own
 * buffer, lengths checked before a byte is copied, and validated there; nothing allocated
 * survives the call.
 *
 * JSON is parsed by cJSON, through stream_json_parse (shared with the HTTP API's request
 * bodies, so both refuse the same texts). cJSON 1.7.15 lets through four things we must not,
 * and one pass over the bytes (json_prescan) closes them before the tree is used:
 *   - a \u escape with non-hex digits decodes to U+0000 instead of failing;
 *   - U+0000, escaped or raw, ends cJSON's NUL-terminated strings early, so "ab\u0000cd"
 *     would silently become the id "ab";
 *   - raw control bytes are accepted inside strings and as whitespace;
 *   - a lone surrogate escape fails the whole parse, where not_utf8 is the truer reason when
 *     the rest is JSON: decode_json then parses a copy with such escapes replaced.
 * cJSON's number grammar is slightly wider than JSON's (01, 1.): such numbers are taken at
 * the value cJSON reads, which is the only one they could mean.
 *
 * CSV has no library among the dependencies, and the grammar is one record of at most four
 * fields, so csv_split is a strict splitter of a few lines (fuzzed by fuzz_event_decode). */
#include "stream/stream.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

static const char *const reason_names[STREAM_R_COUNT] = {
#define STREAM_X(name, text) text,
    STREAM_REASONS(STREAM_X)
#undef STREAM_X
};

const char *stream_reason_name(stream_reason r) {
  return (unsigned)r < STREAM_R_COUNT ? reason_names[r] : "unknown";
}

#define TWO_POW_53 9007199254740992.0 /* integers beyond are not all exact in a double */

static int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

stream_reason stream_id_check(const void *p, size_t n, size_t max) {
  if (n == 0) return STREAM_R_EMPTY;
  if (n > max) return STREAM_R_ID_TOO_LONG;
  return fl_utf8_clean(p, n) ? STREAM_OK : STREAM_R_NOT_UTF8;
}

/* Checks one string field and copies it to e->buf + *off, as *out / *out_len. s[0..n) is
 * the field as found; unquote: it is the inside of a CSV quoted field holding doubled quotes,
 * each pair standing for one. Empty: if_empty (STREAM_OK leaves *out empty); more than max
 * bytes: if_long. max <= STREAM_MAX_ID for ids, STREAM_MAX_TYPE for the type, so the three
 * fields always fit in e->buf. */
static stream_reason put_field(stream_event *e, size_t *off, const char **out, size_t *out_len,
                               const char *s, size_t n, int unquote, size_t max,
                               stream_reason if_empty, stream_reason if_long) {
  size_t m = n; /* bytes after unquoting */
  if (unquote) {
    size_t quotes = 0;
    for (size_t i = 0; i < n; i++) quotes += s[i] == '"';
    m = n - quotes / 2;
  }
  if (m == 0) return if_empty;
  if (m > max) return if_long;
  char *d = e->buf + *off;
  if (unquote) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
      d[k++] = s[i];
      if (s[i] == '"') i++; /* csv_split made sure it is a pair */
    }
  } else {
    memcpy(d, s, m);
  }
  if (stream_id_check(d, m, max) != STREAM_OK) return STREAM_R_NOT_UTF8; /* lengths: above */
  *out = d;
  *out_len = m;
  *off += m;
  return STREAM_OK;
}

/* Chooses the event's ts (see stream_event_decode) and range-checks it. */
static stream_reason resolve_ts(stream_event *e, int has_ts, int64_t ts, const stream_limits *lim,
                                int64_t msg_ts_ms, int64_t now_ms) {
  if (has_ts) {
    e->ts_ms = ts;
    e->ts_from_event = 1;
  } else if (msg_ts_ms >= 0) {
    e->ts_ms = msg_ts_ms;
  } else {
    e->ts_ms = now_ms;
    return STREAM_OK;
  }
  int64_t hi;
  if (__builtin_add_overflow(now_ms, lim->max_future_ms, &hi))
    hi = lim->max_future_ms > 0 ? INT64_MAX : INT64_MIN;
  return e->ts_ms < lim->min_ts_ms || e->ts_ms > hi ? STREAM_R_TS_RANGE : STREAM_OK;
}

static size_t id_limit(const stream_limits *lim) {
  return lim->max_id_bytes < STREAM_MAX_ID ? lim->max_id_bytes : STREAM_MAX_ID;
}

/* ---- JSON ---- */

/* The value of the 4 hex digits at p[i..i+4), or -1 when they are not that. */
static long hex4(const unsigned char *p, size_t n, size_t i) {
  if (i > n || n - i < 4) return -1;
  long v = 0;
  for (size_t k = i; k < i + 4; k++) {
    unsigned c = p[k];
    int d = c >= '0' && c <= '9'   ? (int)(c - '0')
            : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
            : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10)
                                   : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/* What cJSON would let through (see the note at the top): STREAM_R_BAD_JSON for a raw control
 * byte (but tab, CR and LF between tokens) or a \u escape without 4 hex digits;
 * STREAM_R_NOT_UTF8 for an escape of U+0000 or a lone surrogate; else STREAM_OK. Tracking
 * only string boundaries is exact for any text cJSON accepts. With fix (n bytes, a copy of
 * p, possibly p itself), each escape of the second kind is rewritten there as \uFFFD. */
static stream_reason json_prescan(const unsigned char *p, size_t n, unsigned char *fix) {
  stream_reason r = STREAM_OK;
  int in_string = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned c = p[i];
    /* Most bytes are none of these: one predictable branch for them. */
    if (!((c < 0x20) | (c == '"') | (c == '\\'))) continue;
    if (c < 0x20) {
      if (in_string || (c != '\t' && c != '\n' && c != '\r')) return STREAM_R_BAD_JSON;
      continue;
    }
    if (!in_string) {
      in_string = c == '"';
      continue;
    }
    if (c == '"') {
      in_string = 0;
      continue;
    }
    if (c != '\\') continue;
    if (++i == n) return STREAM_R_BAD_JSON;
    if (p[i] != 'u') continue; /* a one-letter escape: cJSON checks the letter */
    long cp = hex4(p, n, i + 1);
    if (cp < 0) return STREAM_R_BAD_JSON;
    i += 4;
    int bad = cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      long lo = n - i > 2 && p[i + 1] == '\\' && p[i + 2] == 'u' ? hex4(p, n, i + 3) : -1;
      if (lo >= 0xDC00 && lo <= 0xDFFF)
        i += 6; /* a pair */
      else
        bad = 1; /* what follows, if an escape, is checked on its own */
    }
    if (bad) {
      r = STREAM_R_NOT_UTF8;
      if (fix) memcpy(fix + i - 3, "FFFD", 4);
    }
  }
  return r;
}

/* Decimal text of v into buf (>= 21 bytes); returns its length. */
static size_t format_i64(char *buf, int64_t v) {
  char tmp[24];
  size_t n = 0;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  size_t k = 0;
  if (v < 0) buf[k++] = '-';
  while (n) buf[k++] = tmp[--n];
  return k;
}

/* user or item from its JSON value v (NULL when absent). */
static stream_reason json_id(stream_event *e, size_t *off, const char **out, size_t *out_len,
                             const cJSON *v, size_t max, stream_reason missing) {
  if (!v || cJSON_IsNull(v)) return missing;
  if (cJSON_IsString(v))
    return put_field(e, off, out, out_len, v->valuestring, strlen(v->valuestring), 0, max, missing,
                     STREAM_R_ID_TOO_LONG);
  if (!cJSON_IsNumber(v)) return STREAM_R_BAD_ID;
  double d = v->valuedouble;
  if (!(d > -TWO_POW_53 && d < TWO_POW_53)) return STREAM_R_BAD_ID; /* also NaN, inf */
  int64_t k = (int64_t)d;
  if ((double)k != d) return STREAM_R_BAD_ID;
  char text[24];
  return put_field(e, off, out, out_len, text, format_i64(text, k), 0, max, missing,
                   STREAM_R_ID_TOO_LONG);
}

/* ts from its JSON value v (NULL when absent): *has_ts 0 when absent or null. */
static stream_reason json_ts(const cJSON *v, int *has_ts, int64_t *ts) {
  *has_ts = 0;
  if (!v || cJSON_IsNull(v)) return STREAM_OK;
  if (!cJSON_IsNumber(v)) return STREAM_R_BAD_TS;
  double d = v->valuedouble;
  if (d >= TWO_POW_53 || d <= -TWO_POW_53) return STREAM_R_TS_RANGE; /* an absurd integer */
  if (d != d) return STREAM_R_BAD_TS;
  int64_t k = (int64_t)d;
  if ((double)k != d) return STREAM_R_BAD_TS;
  *has_ts = 1;
  *ts = k;
  return STREAM_OK;
}

stream_reason stream_json_parse(cJSON **root, const void *payload, size_t len) {
  const unsigned char *p = payload;
  *root = NULL;
  stream_reason pre = json_prescan(p, len, NULL);
  if (pre == STREAM_R_BAD_JSON) return pre;
  /* Escapes that are not scalar values make the text not_utf8 only when it is JSON otherwise;
   * to know, cJSON (which fails on some of them) parses a copy where each is \uFFFD. A rare
   * path: the copy may be allocated. */
  unsigned char *fixed = NULL;
  if (pre == STREAM_R_NOT_UTF8) {
    fixed = xmalloc(len ? len : 1);
    if (len) memcpy(fixed, p, len);
    json_prescan(fixed, len, fixed);
    p = fixed;
  }
  const char *end = NULL;
  cJSON *j = len ? cJSON_ParseWithLengthOpts((const char *)p, len, &end, 0) : NULL;
  stream_reason r = j ? pre : STREAM_R_BAD_JSON;
  /* cJSON stops after the value: the rest may only be whitespace. */
  for (size_t i = j ? (size_t)((const unsigned char *)end - p) : len; i < len; i++)
    if (!is_blank(p[i])) {
      r = STREAM_R_BAD_JSON;
      break;
    }
  free(fixed);
  if (r == STREAM_R_BAD_JSON)
    cJSON_Delete(j);
  else
    *root = j;
  return r;
}

int stream_json_members(const cJSON *obj, const char *const *names, size_t n, const cJSON **out) {
  for (size_t i = 0; i < n; i++) out[i] = NULL;
  if (!cJSON_IsObject(obj)) return -1;
  for (const cJSON *c = obj->child; c; c = c->next) {
    size_t i = 0;
    while (i < n && strcmp(c->string, names[i]) != 0) i++;
    if (i == n) continue;
    if (out[i]) return -1;
    out[i] = c;
  }
  return 0;
}

static stream_reason decode_json(stream_event *e, const unsigned char *p, size_t len,
                                 const stream_limits *lim, int64_t msg_ts_ms, int64_t now_ms) {
  cJSON *root;
  stream_reason pre = stream_json_parse(&root, p, len);
  if (pre == STREAM_R_BAD_JSON) return pre;
  /* ours by name, a repeated one refused (before not_utf8: the payload is not one event) */
  static const char *const names[] = {"user", "item", "ts", "type"};
  const cJSON *f[4];
  stream_reason r = STREAM_R_BAD_JSON;
  if (stream_json_members(root, names, 4, f) != 0) goto out;
  const cJSON *user = f[0], *item = f[1], *ts = f[2], *type = f[3];
  r = pre;
  if (r != STREAM_OK) goto out;

  size_t off = 0, max_id = id_limit(lim);
  r = json_id(e, &off, &e->user, &e->user_len, user, max_id, STREAM_R_NO_USER);
  if (r != STREAM_OK) goto out;
  r = json_id(e, &off, &e->item, &e->item_len, item, max_id, STREAM_R_NO_ITEM);
  if (r != STREAM_OK) goto out;
  int has_ts;
  int64_t t = 0;
  r = json_ts(ts, &has_ts, &t);
  if (r != STREAM_OK) goto out;
  r = resolve_ts(e, has_ts, t, lim, msg_ts_ms, now_ms);
  if (r != STREAM_OK) goto out;
  if (type && !cJSON_IsNull(type)) {
    if (!cJSON_IsString(type)) {
      r = STREAM_R_BAD_TYPE;
      goto out;
    }
    r = put_field(e, &off, &e->type, &e->type_len, type->valuestring, strlen(type->valuestring), 0,
                  STREAM_MAX_TYPE, STREAM_OK, STREAM_R_BAD_TYPE);
  }
out:
  cJSON_Delete(root);
  return r;
}

/* ---- CSV ---- */

typedef struct {
  const char *s;  /* the field's bytes (inside the quotes when quoted) */
  size_t n;       /* bytes */
  int has_quotes; /* 1: quoted, holding doubled quotes */
} csv_field;

/* Splits the one record p[0..n) (terminator removed) into f[0..*nf). STREAM_R_BAD_CSV for
 * more than 4 fields, an unterminated quote, bytes after a closing quote, or a quote, CR or
 * LF inside an unquoted field. */
static stream_reason csv_split(const char *p, size_t n, csv_field f[4], size_t *nf) {
  size_t i = 0;
  *nf = 0;
  for (;;) {
    if (*nf == 4) return STREAM_R_BAD_CSV;
    csv_field *c = &f[(*nf)++];
    c->has_quotes = 0;
    if (i < n && p[i] == '"') {
      c->s = p + ++i;
      for (;; i++) {
        if (i == n) return STREAM_R_BAD_CSV;
        if (p[i] != '"') continue;
        if (i + 1 == n || p[i + 1] != '"') break;
        c->has_quotes = 1;
        i++;
      }
      c->n = (size_t)(p + i - c->s);
      i++; /* the closing quote */
    } else {
      c->s = p + i;
      for (; i < n && p[i] != ','; i++)
        if (p[i] == '"' || p[i] == '\r' || p[i] == '\n') return STREAM_R_BAD_CSV;
      c->n = (size_t)(p + i - c->s);
    }
    if (i == n) return STREAM_OK;
    if (p[i] != ',') return STREAM_R_BAD_CSV;
    i++;
  }
}

/* ts from its CSV field: -?[0-9]+, or empty for none. (A quoted field's doubled quotes are
 * not digits.) */
static stream_reason csv_ts(const csv_field *f, int *has_ts, int64_t *ts) {
  *has_ts = 0;
  if (f->n == 0) return STREAM_OK;
  int neg = f->s[0] == '-';
  if ((size_t)neg == f->n) return STREAM_R_BAD_TS;
  uint64_t v = 0;
  int huge = 0;
  for (size_t i = (size_t)neg; i < f->n; i++) {
    unsigned d = (unsigned char)f->s[i] - (unsigned)'0';
    if (d > 9) return STREAM_R_BAD_TS;
    if (!huge) v = v * 10 + d;
    huge |= v >= (uint64_t)1 << 53; /* keeps reading: a later non-digit is still bad_ts */
  }
  if (huge) return STREAM_R_TS_RANGE;
  *has_ts = 1;
  *ts = neg ? -(int64_t)v : (int64_t)v;
  return STREAM_OK;
}

static stream_reason decode_csv(stream_event *e, const char *p, size_t n, const stream_limits *lim,
                                int64_t msg_ts_ms, int64_t now_ms) {
  if (n && p[n - 1] == '\n') {
    n--;
    if (n && p[n - 1] == '\r') n--;
  }
  csv_field f[4];
  size_t nf;
  stream_reason r = csv_split(p, n, f, &nf);
  if (r != STREAM_OK) return r;

  size_t off = 0, max_id = id_limit(lim);
  r = put_field(e, &off, &e->user, &e->user_len, f[0].s, f[0].n, f[0].has_quotes, max_id,
                STREAM_R_NO_USER, STREAM_R_ID_TOO_LONG);
  if (r != STREAM_OK) return r;
  if (nf < 2) return STREAM_R_NO_ITEM;
  r = put_field(e, &off, &e->item, &e->item_len, f[1].s, f[1].n, f[1].has_quotes, max_id,
                STREAM_R_NO_ITEM, STREAM_R_ID_TOO_LONG);
  if (r != STREAM_OK) return r;
  int has_ts = 0;
  int64_t ts = 0;
  if (nf >= 3 && (r = csv_ts(&f[2], &has_ts, &ts)) != STREAM_OK) return r;
  r = resolve_ts(e, has_ts, ts, lim, msg_ts_ms, now_ms);
  if (r != STREAM_OK || nf < 4) return r;
  return put_field(e, &off, &e->type, &e->type_len, f[3].s, f[3].n, f[3].has_quotes,
                   STREAM_MAX_TYPE, STREAM_OK, STREAM_R_BAD_TYPE);
}

/* ---- both ---- */

static void event_clear(stream_event *e) {
  e->user = e->item = e->type = e->buf;
  e->user_len = e->item_len = e->type_len = 0;
  e->ts_ms = 0;
  e->ts_from_event = 0;
}

stream_reason stream_event_decode(stream_event *e, const void *payload, size_t len, int format,
                                  const stream_limits *lim, int64_t msg_ts_ms, int64_t now_ms) {
  const unsigned char *p = payload;
  event_clear(e);
  if (len > lim->max_message_bytes) return STREAM_R_TOO_LARGE;
  size_t start = len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF ? 3 : 0; /* a BOM */
  size_t i = start;
  while (i < len && is_blank(p[i])) i++;
  if (i == len) return STREAM_R_EMPTY;
  if (format != STREAM_FORMAT_JSON && format != STREAM_FORMAT_CSV)
    format = p[i] == '{' ? STREAM_FORMAT_JSON : STREAM_FORMAT_CSV;

  /* cJSON skips the BOM itself (only at offset 0, as here). */
  stream_reason r = format == STREAM_FORMAT_JSON ? decode_json(e, p, len, lim, msg_ts_ms, now_ms)
                                                 : decode_csv(e, (const char *)p + start,
                                                              len - start, lim, msg_ts_ms, now_ms);
  if (r != STREAM_OK) event_clear(e);
  return r;
}
