/* tests/stream/test_event.c: event decoding and validation (stream/event.c).
 *
 * Most cases are rows of one table (payload, format, expected reason and fields); the table
 * test also checks that every reason is produced by some row. Long payloads (boundary lengths)
 * are built by hand, and the UTF-8 and \u-escape checks compare the decoder against an
 * independent reference over every 1- and 2-byte sequence, every 3-byte one after a 3-byte
 * lead (and a few others), 4-byte ones over every lead and second byte, and every BMP escape.
 * Every payload is decoded from a heap copy of its exact length, so ASan sees over-reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/stream.h"
#include "tests/utf8_ref.h"
#include "testutil.h"

#define NOW 1700000000000LL    /* ms: 2023-11-14 */
#define MIN_TS 1000000000000LL /* ms: 2001-09-09 */
#define FUTURE 86400000LL      /* ms: one day */
#define NO_TS INT64_MIN        /* expected ts of a row: none in the payload (so ts = NOW) */

static const stream_limits LIM = {
    .max_message_bytes = 4096, .max_id_bytes = 256, .min_ts_ms = MIN_TS, .max_future_ms = FUTURE};

enum { F_AUTO = STREAM_FORMAT_AUTO, F_JSON = STREAM_FORMAT_JSON, F_CSV = STREAM_FORMAT_CSV };

/* Prints a payload with its non-printable bytes as \xNN, for failure messages. */
static const char *show(const void *p, size_t n) {
  static char out[512];
  const unsigned char *s = p;
  size_t k = 0;
  for (size_t i = 0; i < n && k + 8 < sizeof out; i++)
    k += (size_t)(s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\'
                      ? snprintf(out + k, sizeof out - k, "%c", s[i])
                      : snprintf(out + k, sizeof out - k, "\\x%02x", s[i]));
  out[k] = 0;
  return out;
}

/* Decodes and asserts the reason; on STREAM_OK asserts that the strings lie inside e->buf,
 * on failure that the event was left empty. The payload is decoded from a heap copy of
 * exactly n bytes, so that ASan sees any read past its end (a literal has a NUL there). */
static stream_reason decode_at(stream_event *e, const void *p, size_t n, int format,
                               const stream_limits *lim, int64_t msg_ts, stream_reason want,
                               const char *what, int where) {
  void *copy = NULL;
  if (p) {
    copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, p, n);
  }
  stream_reason r = stream_event_decode(e, copy, n, format, lim, msg_ts, NOW);
  free(copy);
  if (r != want)
    fail_msg("%s %d: format %d payload \"%s\": got %s, want %s", what, where, format, show(p, n),
             stream_reason_name(r), stream_reason_name(want));
  const char *lo = e->buf, *hi = e->buf + sizeof e->buf;
  if (r == STREAM_OK) {
    assert_true(e->user >= lo && e->user + e->user_len <= hi && e->user_len > 0);
    assert_true(e->item >= lo && e->item + e->item_len <= hi && e->item_len > 0);
    assert_true(e->type >= lo && e->type + e->type_len <= hi);
  } else {
    assert_int_equal(e->user_len + e->item_len + e->type_len, 0);
    assert_int_equal(e->ts_from_event, 0);
  }
  return r;
}
/* decode(e, payload, len, format, lim, msg_ts, want): a variadic macro so that P("...")
 * may stand for payload and len. */
#define decode(...) decode_at(__VA_ARGS__, "line", __LINE__)

static void assert_field(const char *got, size_t got_len, const char *want) {
  if (got_len != strlen(want) || memcmp(got, want, got_len) != 0)
    fail_msg("field \"%s\" != \"%s\"", show(got, got_len), want);
}

/* ---- the table ---- */

typedef struct {
  const char *payload;
  size_t len; /* bytes (payloads may hold NUL) */
  int format;
  stream_reason want;
  const char *user, *item, *type; /* expected on STREAM_OK; type NULL: none */
  int64_t ts;                     /* expected ts from the payload, or NO_TS */
  size_t max_id_bytes;            /* the limit, when not LIM's */
} row;

#define P(s) s, sizeof(s) - 1
/* GOOD(payload, format, user, item, type, ts): decodes to these fields. */
#define GOOD(s, f, u, i, t, ts)                                                                    \
  { P(s), f, STREAM_OK, u, i, t, ts, 0 }
/* BAD(payload, format, reason): refused as STREAM_R_<reason>. */
#define BAD(s, f, r)                                                                               \
  { P(s), f, STREAM_R_##r, NULL, NULL, NULL, 0, 0 }
/* SMALL(payload, format, reason, user, item): under max_id_bytes 8. */
#define SMALL(s, f, r, u, i)                                                                       \
  { P(s), f, STREAM_##r, u, i, NULL, NO_TS, 8 }

static const row rows[] = {
    /* JSON, with and without ts and type */
    GOOD("{\"user\":\"u1\",\"item\":\"i9\",\"ts\":1700000000000,\"type\":\"click\"}", F_AUTO, "u1",
         "i9", "click", 1700000000000LL),
    GOOD("{\"user\":\"u1\",\"item\":\"i9\"}", F_AUTO, "u1", "i9", NULL, NO_TS),
    GOOD("{\"user\":\"u1\",\"item\":\"i9\",\"ts\":1600000000000}", F_JSON, "u1", "i9", NULL,
         1600000000000LL),
    GOOD("{\"type\":\"view\",\"item\":\"i9\",\"user\":\"u1\"}", F_JSON, "u1", "i9", "view", NO_TS),
    GOOD("{\"user\":\"u1\",\"item\":\"i9\",\"ts\":1.7e12}", F_AUTO, "u1", "i9", NULL,
         1700000000000LL),
    GOOD(" \t\r\n{ \"user\" : \"u\" ,\n\"item\":\"i\" } \r\n", F_AUTO, "u", "i", NULL, NO_TS),
    GOOD("\xef\xbb\xbf{\"user\":\"u\",\"item\":\"i\"}", F_AUTO, "u", "i", NULL, NO_TS),
    GOOD("\xef\xbb\xbf {\"user\":\"u\",\"item\":\"i\"}", F_JSON, "u", "i", NULL, NO_TS),
    /* other keys, nested or not, are ignored; so are nulls */
    GOOD(
        "{\"user\":\"u\",\"x\":{\"user\":\"no\",\"a\":[1,{\"item\":2}]},\"item\":\"i\",\"y\":null}",
        F_AUTO, "u", "i", NULL, NO_TS),
    GOOD("{\"user\":\"u\",\"item\":\"i\",\"ts\":null,\"type\":null}", F_AUTO, "u", "i", NULL,
         NO_TS),
    GOOD("{\"user\":\"u\",\"item\":\"i\",\"type\":\"\"}", F_AUTO, "u", "i", NULL, NO_TS),
    BAD("{\"User\":\"u\",\"item\":\"i\"}", F_AUTO, NO_USER),
    GOOD("{\"user\":\"u\",\"x\":1,\"x\":2,\"item\":\"i\"}", F_AUTO, "u", "i", NULL, NO_TS),
    /* duplicate keys of ours are refused */
    BAD("{\"user\":\"a\",\"user\":\"b\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"a\",\"item\":\"i\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"a\",\"item\":\"i\",\"ts\":null,\"ts\":1700000000000}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"a\",\"item\":\"i\",\"type\":\"x\",\"type\":\"x\"}", F_AUTO, BAD_JSON),
    /* integral numeric ids */
    GOOD("{\"user\":42,\"item\":-7}", F_AUTO, "42", "-7", NULL, NO_TS),
    GOOD("{\"user\":4.2e1,\"item\":0}", F_AUTO, "42", "0", NULL, NO_TS),
    GOOD("{\"user\":-0,\"item\":100.0}", F_AUTO, "0", "100", NULL, NO_TS),
    GOOD("{\"user\":9007199254740991,\"item\":-9007199254740991}", F_AUTO, "9007199254740991",
         "-9007199254740991", NULL, NO_TS),
    BAD("{\"user\":9007199254740992,\"item\":\"i\"}", F_AUTO, BAD_ID),
    BAD("{\"user\":\"u\",\"item\":-9007199254740992}", F_AUTO, BAD_ID),
    BAD("{\"user\":1.5,\"item\":\"i\"}", F_AUTO, BAD_ID),
    BAD("{\"user\":1e300,\"item\":\"i\"}", F_AUTO, BAD_ID),
    BAD("{\"user\":1e999,\"item\":\"i\"}", F_AUTO, BAD_ID),
    BAD("{\"user\":\"u\",\"item\":0.001}", F_AUTO, BAD_ID),
    BAD("{\"user\":true,\"item\":\"i\"}", F_AUTO, BAD_ID),
    BAD("{\"user\":[\"u\"],\"item\":\"i\"}", F_AUTO, BAD_ID),
    BAD("{\"user\":\"u\",\"item\":{}}", F_AUTO, BAD_ID),
    /* id lengths (test_id_lengths has the 256-byte ones) */
    SMALL("{\"user\":12345678,\"item\":\"\\u00e9\\u00e9\\u00e9\\u00e9\"}", F_JSON, OK, "12345678",
          "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"),
    SMALL("{\"user\":-12345678,\"item\":\"i\"}", F_JSON, R_ID_TOO_LONG, NULL, NULL),
    SMALL("{\"user\":\"u\",\"item\":\"\\u00e9\\u00e9\\u00e9\\u00e9a\"}", F_JSON, R_ID_TOO_LONG,
          NULL, NULL),
    SMALL("abcdefgh,\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"", F_CSV, OK, "abcdefgh",
          "\"\"\"\"\"\"\"\""),
    SMALL("abcdefghi,i", F_CSV, R_ID_TOO_LONG, NULL, NULL),
    SMALL("\xff\xff\xff\xff\xff\xff\xff\xff\xff,i", F_CSV, R_ID_TOO_LONG, NULL, NULL),
    SMALL("\xff\xff\xff\xff\xff\xff\xff\xff,i", F_CSV, R_NOT_UTF8, NULL, NULL),
    /* missing ids; the user is checked first */
    BAD("{\"item\":\"i\"}", F_AUTO, NO_USER),
    BAD("{\"user\":null,\"item\":\"i\"}", F_AUTO, NO_USER),
    BAD("{\"user\":\"\",\"item\":\"i\"}", F_AUTO, NO_USER),
    BAD("{\"user\":\"u\"}", F_AUTO, NO_ITEM),
    BAD("{\"user\":\"u\",\"item\":\"\"}", F_AUTO, NO_ITEM),
    BAD("{}", F_AUTO, NO_USER),
    BAD("{\"user\":1.5,\"item\":null}", F_AUTO, BAD_ID),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":\"x\",\"type\":5}", F_AUTO, BAD_TS),
    /* JSON escapes */
    GOOD("{\"user\":\"caf\\u00e9\",\"item\":\"\\ud83d\\ude00\"}", F_AUTO, "caf\xc3\xa9",
         "\xf0\x9f\x98\x80", NULL, NO_TS),
    GOOD("{\"user\":\"a\\\"b\\\\c\\/d\",\"item\":\"\\u20AC\"}", F_AUTO, "a\"b\\c/d", "\xe2\x82\xac",
         NULL, NO_TS),
    GOOD("{\"user\":\"\\udbff\\udfff\",\"item\":\"\\uFFFF\"}", F_AUTO, "\xf4\x8f\xbf\xbf",
         "\xef\xbf\xbf", NULL, NO_TS),
    BAD("{\"user\":\"\\ud800\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"a\\udc00\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"\\ud800\\u0041\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"\\ude00\\ud83d\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"a\\u0000b\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"note\":\"\\u0000\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"note\":\"\\udfff\"}", F_AUTO, NOT_UTF8),
    /* ... but only when the rest is JSON: else it is bad_json */
    BAD("{\"user\":\"\\ud800\",\"item\":\"i\"", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\\ud800\",\"item\":\"i\"} x", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\\u0000\",\"item\":\"i\",\"user\":\"u\"}", F_AUTO, BAD_JSON),
    BAD("[\"\\ud800\"]", F_JSON, BAD_JSON),
    BAD("{\"user\":\"a\\u001fb\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"a\\n\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"a\\uZZZZ\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"a\\ud83d\\uzzzz\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"a\\u12\"}", F_AUTO, BAD_JSON),
    /* escapes cut off by the end of the payload */
    BAD("{\"user\":\"\\u12", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\\ud83d", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\\ud83d\\", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\\ud83d\\u", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\\ud83d\\ude0", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\\", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"a\\x\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    /* raw bytes cJSON would let through */
    BAD("{\"user\":\"a\0b\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"a\tb\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\x01\"user\":\"u\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"u\",\"item\":\"i\"}\0", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"\xc0\xaf\",\"item\":\"i\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"u\",\"item\":\"\xed\xa0\x80\"}", F_AUTO, NOT_UTF8),
    /* malformed JSON */
    BAD("{\"user\":\"u\",\"item\":\"i\"} x", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"u\",\"item\":\"i\"}{}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"u\",\"item\":\"i\"", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"u\",\"item\":\"i\",}", F_AUTO, BAD_JSON),
    BAD("{\"user\":'u',\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{user:\"u\",\"item\":\"i\"}", F_AUTO, BAD_JSON),
    BAD("{\"user\":\"u\\", F_AUTO, BAD_JSON),
    BAD("{", F_AUTO, BAD_JSON),
    BAD("[{\"user\":\"u\",\"item\":\"i\"}]", F_JSON, BAD_JSON),
    BAD("\"u\"", F_JSON, BAD_JSON),
    BAD("u,i", F_JSON, BAD_JSON),
    BAD("\xef\xbb\xbf\xef\xbb\xbf{\"user\":\"u\",\"item\":\"i\"}", F_JSON, BAD_JSON),
    /* JSON ts */
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":1.5}", F_AUTO, BAD_TS),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":\"1700000000000\"}", F_AUTO, BAD_TS),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":true}", F_AUTO, BAD_TS),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":[1]}", F_AUTO, BAD_TS),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":1e300}", F_AUTO, TS_RANGE),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":-5}", F_AUTO, TS_RANGE),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":999999999999}", F_AUTO, TS_RANGE),
    GOOD("{\"user\":\"u\",\"item\":\"i\",\"ts\":1000000000000}", F_AUTO, "u", "i", NULL, MIN_TS),
    GOOD("{\"user\":\"u\",\"item\":\"i\",\"ts\":1700086400000}", F_AUTO, "u", "i", NULL,
         NOW + FUTURE),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"ts\":1700086400001}", F_AUTO, TS_RANGE),
    /* JSON type */
    BAD("{\"user\":\"u\",\"item\":\"i\",\"type\":5}", F_AUTO, BAD_TYPE),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"type\":[\"x\"]}", F_AUTO, BAD_TYPE),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"type\":\"a\\u0001\"}", F_AUTO, NOT_UTF8),
    BAD("{\"user\":\"u\",\"item\":\"i\",\"type\":\"\xff\"}", F_AUTO, NOT_UTF8),
    GOOD("{\"user\":\"u\",\"item\":\"i\",\"type\":\"d\\u00e9j\\u00e0 vu\"}", F_AUTO, "u", "i",
         "d\xc3\xa9j\xc3\xa0 vu", NO_TS),

    /* CSV, with and without ts and type */
    GOOD("u1,i9,1700000000000,click", F_AUTO, "u1", "i9", "click", 1700000000000LL),
    GOOD("u1,i9", F_AUTO, "u1", "i9", NULL, NO_TS),
    GOOD("u1,i9,1600000000000", F_CSV, "u1", "i9", NULL, 1600000000000LL),
    GOOD("u1,i9,,view", F_CSV, "u1", "i9", "view", NO_TS),
    GOOD("u1,i9,", F_AUTO, "u1", "i9", NULL, NO_TS),
    GOOD("u1,i9,,", F_AUTO, "u1", "i9", NULL, NO_TS),
    GOOD("u1,i9\n", F_AUTO, "u1", "i9", NULL, NO_TS),
    GOOD("u1,i9,1700000000000,click\r\n", F_AUTO, "u1", "i9", "click", 1700000000000LL),
    GOOD("\xef\xbb\xbfu,i", F_AUTO, "u", "i", NULL, NO_TS),
    GOOD(" u , i ", F_AUTO, " u ", " i ", NULL, NO_TS),
    GOOD("42,-7", F_CSV, "42", "-7", NULL, NO_TS),
    BAD("{\"user\":\"u\",\"item\":\"i\"}", F_CSV, BAD_CSV),
    BAD("u,i\x7f", F_CSV, NOT_UTF8), /* DEL, like C0 and C1: stream_id_check */
    /* terminators */
    BAD("u,i\r", F_AUTO, BAD_CSV),
    BAD("u,i\n\n", F_AUTO, BAD_CSV),
    BAD("u,i\r\n\r\n", F_AUTO, BAD_CSV),
    BAD("u,i\n,x", F_AUTO, BAD_CSV),
    BAD("u\r,i", F_AUTO, BAD_CSV),
    /* quoting */
    GOOD("\"a,b\",\"c\"\"d\"", F_AUTO, "a,b", "c\"d", NULL, NO_TS),
    GOOD("\"\"\"\",i", F_AUTO, "\"", "i", NULL, NO_TS),
    GOOD("\"u\",\"i\",\"1700000000000\",\"click\"\n", F_AUTO, "u", "i", "click", 1700000000000LL),
    GOOD("u,i,,\"a,\"\"b\"\"\"", F_AUTO, "u", "i", "a,\"b\"", NO_TS),
    GOOD("u,i,\"\",\"\"", F_AUTO, "u", "i", NULL, NO_TS),
    BAD("\"\",i", F_AUTO, NO_USER),
    BAD("\"abc", F_AUTO, BAD_CSV),
    BAD("u,\"i", F_AUTO, BAD_CSV),
    BAD("u,\"i\"\"", F_AUTO, BAD_CSV),
    BAD("u,\"i\n", F_AUTO, BAD_CSV),
    BAD("\"a\"b,i", F_AUTO, BAD_CSV),
    BAD("\"a\" ,i", F_AUTO, BAD_CSV),
    BAD("a\"b,i", F_AUTO, BAD_CSV),
    BAD(" \"a\",i", F_AUTO, BAD_CSV),
    BAD("\"u\nv\",i", F_AUTO, NOT_UTF8),
    BAD("u,\"i\r\n\"", F_AUTO, NOT_UTF8),
    /* field counts */
    BAD("u,i,1700000000000,click,x", F_AUTO, BAD_CSV),
    BAD("u,i,,,", F_AUTO, BAD_CSV),
    BAD("u", F_AUTO, NO_ITEM),
    BAD("u,", F_AUTO, NO_ITEM),
    BAD(",i", F_AUTO, NO_USER),
    BAD(",,", F_AUTO, NO_USER),
    /* CSV ts */
    BAD("u,i,abc", F_AUTO, BAD_TS),
    BAD("u,i,12a", F_AUTO, BAD_TS),
    BAD("u,i,-", F_AUTO, BAD_TS),
    BAD("u,i,+1700000000000", F_AUTO, BAD_TS),
    BAD("u,i, 1700000000000", F_AUTO, BAD_TS),
    BAD("u,i,1700000000000.0", F_AUTO, BAD_TS),
    BAD("u,i,1.7e12", F_AUTO, BAD_TS),
    BAD("u,i,\"17\"\"00\"", F_AUTO, BAD_TS),
    BAD("u,i,99999999999999999999999999", F_AUTO, TS_RANGE),
    BAD("u,i,9999999999999999999999999x", F_AUTO, BAD_TS),
    BAD("u,i,9007199254740992", F_AUTO, TS_RANGE),
    BAD("u,i,-1", F_AUTO, TS_RANGE),
    BAD("u,i,999999999999", F_AUTO, TS_RANGE),
    GOOD("u,i,1000000000000", F_AUTO, "u", "i", NULL, MIN_TS),
    GOOD("u,i,01000000000000", F_AUTO, "u", "i", NULL, MIN_TS),
    GOOD("u,i,1700086400000", F_AUTO, "u", "i", NULL, NOW + FUTURE),
    BAD("u,i,1700086400001", F_AUTO, TS_RANGE),
    /* CSV type */
    BAD("u,i,,a\tb", F_AUTO, NOT_UTF8),
    BAD("u,i,,\xc3", F_AUTO, NOT_UTF8),
    /* CSV ids */
    BAD("u\x01,i", F_AUTO, NOT_UTF8),
    BAD("u,\x80", F_AUTO, NOT_UTF8),
    BAD("u\0v,i", F_AUTO, NOT_UTF8),
    BAD("u,i,abc,\xff", F_AUTO, BAD_TS),

    /* empty payloads, in every format */
    BAD("", F_AUTO, EMPTY),
    BAD(" ", F_JSON, EMPTY),
    BAD("\r\n", F_CSV, EMPTY),
    BAD(" \t\r\n ", F_AUTO, EMPTY),
    BAD("\xef\xbb\xbf", F_AUTO, EMPTY),
    BAD("\xef\xbb\xbf \n", F_JSON, EMPTY),
    BAD("\0", F_AUTO, NOT_UTF8),
    BAD("\v", F_AUTO, NOT_UTF8),
};

static void test_table(void **state) {
  (void)state;
  int seen[STREAM_R_COUNT] = {0};
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const row *w = &rows[i];
    stream_event e;
    memset(&e, 0xAB, sizeof e); /* no field may be left over from before */
    stream_limits lim = LIM;
    if (w->max_id_bytes) lim.max_id_bytes = w->max_id_bytes;
    stream_reason r =
        decode_at(&e, w->payload, w->len, w->format, &lim, -1, w->want, "row", (int)i);
    seen[r]++;
    if (r != STREAM_OK) continue;
    assert_field(e.user, e.user_len, w->user);
    assert_field(e.item, e.item_len, w->item);
    assert_field(e.type, e.type_len, w->type ? w->type : "");
    if (w->ts == NO_TS) {
      assert_true(e.ts_ms == NOW);
      assert_int_equal(e.ts_from_event, 0);
    } else {
      assert_true(e.ts_ms == w->ts);
      assert_int_equal(e.ts_from_event, 1);
    }
  }
  /* Every reason (and success) is produced by at least one payload; too large needs a
   * smaller limit than the table's. */
  stream_limits tiny = LIM;
  tiny.max_message_bytes = 2;
  stream_event e;
  seen[decode(&e, P("u,i"), F_AUTO, &tiny, -1, STREAM_R_TOO_LARGE)]++;
  for (int r = 0; r < STREAM_R_COUNT; r++)
    if (!seen[r]) fail_msg("no row gives %s", stream_reason_name((stream_reason)r));
}

/* ---- reasons ---- */

static void test_reason_names(void **state) {
  (void)state;
  assert_string_equal(stream_reason_name(STREAM_OK), "ok");
  assert_string_equal(stream_reason_name(STREAM_R_TOO_LARGE), "too_large");
  assert_string_equal(stream_reason_name(STREAM_R_BAD_JSON), "bad_json");
  assert_string_equal(stream_reason_name(STREAM_R_ID_TOO_LONG), "id_too_long");
  assert_string_equal(stream_reason_name(STREAM_R_NOT_UTF8), "not_utf8");
  assert_string_equal(stream_reason_name(STREAM_R_TS_RANGE), "ts_range");
  assert_string_equal(stream_reason_name(STREAM_R_BAD_TYPE), "bad_type");
  /* snake_case, distinct: they are metric labels and header values */
  for (int r = 0; r < STREAM_R_COUNT; r++) {
    const char *n = stream_reason_name((stream_reason)r);
    assert_non_null(n);
    assert_true(n[0] >= 'a' && n[0] <= 'z');
    assert_int_equal(strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789_"), strlen(n));
    for (int q = 0; q < r; q++) assert_string_not_equal(n, stream_reason_name((stream_reason)q));
  }
  assert_string_equal(stream_reason_name(STREAM_R_COUNT), "unknown");
  assert_string_equal(stream_reason_name((stream_reason)-1), "unknown");
  /* config's enum order */
  assert_int_equal(STREAM_FORMAT_AUTO, 0);
  assert_int_equal(STREAM_FORMAT_JSON, 1);
  assert_int_equal(STREAM_FORMAT_CSV, 2);
}

/* ---- boundary lengths ---- */

/* Writes n copies of the (1..4-byte) unit s at d; returns d + n * strlen(s). */
static char *fill(char *d, const char *s, size_t n) {
  size_t k = strlen(s);
  for (size_t i = 0; i < n; i++, d += k) memcpy(d, s, k);
  return d;
}

/* A JSON payload {"user":"<user>","item":"<item>","type":"<type>"} with each string given as
 * n copies of a unit. */
static size_t json_of(char *buf, const char *u, size_t nu, const char *i, size_t ni, const char *t,
                      size_t nt) {
  char *d = buf;
  d += sprintf(d, "{\"user\":\"");
  d = fill(d, u, nu);
  d += sprintf(d, "\",\"item\":\"");
  d = fill(d, i, ni);
  d += sprintf(d, "\",\"type\":\"");
  d = fill(d, t, nt);
  d += sprintf(d, "\"}");
  return (size_t)(d - buf);
}

/* The same as CSV: user,item,,type. */
static size_t csv_of(char *buf, const char *u, size_t nu, const char *i, size_t ni, const char *t,
                     size_t nt) {
  char *d = fill(buf, u, nu);
  *d++ = ',';
  d = fill(d, i, ni);
  *d++ = ',';
  *d++ = ',';
  d = fill(d, t, nt);
  return (size_t)(d - buf);
}

static void test_id_lengths(void **state) {
  (void)state;
  static char buf[4096];
  stream_event e;
  size_t n;
  for (int csv = 0; csv < 2; csv++) {
    size_t (*of)(char *, const char *, size_t, const char *, size_t, const char *, size_t) =
        csv ? csv_of : json_of;
    /* 256 bytes fill the id; 257 do not; a 2-byte character may not straddle the end */
    n = of(buf, "a", 256, "b", 256, "t", 64);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_OK);
    assert_int_equal(e.user_len, 256);
    assert_int_equal(e.item_len, 256);
    assert_int_equal(e.type_len, 64);
    assert_true(e.user[255] == 'a' && e.item[0] == 'b' && e.item[255] == 'b' && e.type[63] == 't');
    n = of(buf, "a", 257, "b", 1, "t", 1);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_R_ID_TOO_LONG);
    n = of(buf, "a", 1, "b", 257, "t", 1);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_R_ID_TOO_LONG);
    n = of(buf, "\xc3\xa9", 128, "\xf0\x9f\x98\x80", 64, "\xe2\x82\xac", 21);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_OK);
    assert_int_equal(e.user_len, 256);
    assert_int_equal(e.item_len, 256);
    assert_int_equal(e.type_len, 63);
    n = of(buf, "\xc3\xa9", 129, "b", 1, "t", 1);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_R_ID_TOO_LONG);
    /* the type: 64 bytes, not 65 */
    n = of(buf, "a", 1, "b", 1, "t", 65);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_R_BAD_TYPE);
    n = of(buf, "a", 1, "b", 1, "\xe2\x82\xac", 22);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_R_BAD_TYPE);
    /* the length is checked before the bytes */
    n = of(buf, "\xff", 257, "b", 1, "t", 1);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_R_ID_TOO_LONG);
    n = of(buf, "\xff", 256, "b", 1, "t", 1);
    decode(&e, buf, n, F_AUTO, &LIM, -1, STREAM_R_NOT_UTF8);
  }

  /* Lengths count the unescaped bytes: 256 of them from 768 bytes of \u00e9 escapes, or
   * from a quoted CSV field with doubled quotes. */
  n = json_of(buf, "\\u00e9", 128, "\\\"", 256, "\\/", 64);
  decode(&e, buf, n, F_JSON, &LIM, -1, STREAM_OK);
  assert_int_equal(e.user_len, 256);
  assert_int_equal(e.item_len, 256);
  assert_true(e.item[0] == '"' && e.item[255] == '"');
  assert_int_equal(e.type_len, 64);
  n = json_of(buf, "\\u00e9", 128, "\\\"", 257, "t", 1);
  decode(&e, buf, n, F_JSON, &LIM, -1, STREAM_R_ID_TOO_LONG);
  char *d = buf;
  *d++ = '"';
  d = fill(d, "a\"\"", 128); /* 128 * (a") = 256 bytes unquoted, 384 quoted */
  *d++ = '"';
  d += sprintf(d, ",i");
  decode(&e, buf, (size_t)(d - buf), F_CSV, &LIM, -1, STREAM_OK);
  assert_int_equal(e.user_len, 256);
  assert_true(e.user[0] == 'a' && e.user[1] == '"' && e.user[255] == '"');
  d = buf;
  *d++ = '"';
  d = fill(d, "a\"\"", 128);
  d = fill(d, "\"\"", 1);
  *d++ = '"';
  d += sprintf(d, ",i");
  decode(&e, buf, (size_t)(d - buf), F_CSV, &LIM, -1, STREAM_R_ID_TOO_LONG);

  /* A smaller max_id_bytes, for numeric ids too; a larger one acts as STREAM_MAX_ID. */
  stream_limits small = LIM;
  small.max_id_bytes = 8;
  decode(&e, P("12345678,abcdefgh"), F_AUTO, &small, -1, STREAM_OK);
  decode(&e, P("123456789,i"), F_AUTO, &small, -1, STREAM_R_ID_TOO_LONG);
  decode(&e, P("{\"user\":12345678,\"item\":\"i\"}"), F_AUTO, &small, -1, STREAM_OK);
  decode(&e, P("{\"user\":-12345678,\"item\":\"i\"}"), F_AUTO, &small, -1, STREAM_R_ID_TOO_LONG);
  small.max_id_bytes = 0;
  decode(&e, P("u,i"), F_AUTO, &small, -1, STREAM_R_ID_TOO_LONG);
  stream_limits big = LIM;
  big.max_id_bytes = 100000;
  n = csv_of(buf, "a", 257, "b", 1, "t", 1);
  decode(&e, buf, n, F_AUTO, &big, -1, STREAM_R_ID_TOO_LONG);
}

static void test_max_message_bytes(void **state) {
  (void)state;
  stream_limits lim = LIM;
  stream_event e;
  const char json[] = "{\"user\":\"u\",\"item\":\"i\"}";
  lim.max_message_bytes = sizeof json - 1;
  decode(&e, json, sizeof json - 1, F_AUTO, &lim, -1, STREAM_OK);
  decode(&e, P("{\"user\":\"u\",\"item\":\"i\"} "), F_AUTO, &lim, -1, STREAM_R_TOO_LARGE);
  decode(&e, P("u,i,1700000000000,click,and,more"), F_CSV, &lim, -1, STREAM_R_TOO_LARGE);
  /* checked before anything is read: a large blank payload is too large, not empty */
  decode(&e, P("                                  "), F_AUTO, &lim, -1, STREAM_R_TOO_LARGE);
  lim.max_message_bytes = 0;
  decode(&e, NULL, 0, F_AUTO, &lim, -1, STREAM_R_EMPTY);
  decode(&e, P("u"), F_AUTO, &lim, -1, STREAM_R_TOO_LARGE);
  /* a large valid payload decodes whole */
  static char buf[100000];
  char *d = buf + sprintf(buf, "{\"pad\":\"");
  d = fill(d, "x", 90000);
  d += sprintf(d, "\",\"user\":\"u\",\"item\":\"i\",\"ts\":1700000000000}");
  lim.max_message_bytes = sizeof buf;
  decode(&e, buf, (size_t)(d - buf), F_AUTO, &lim, -1, STREAM_OK);
  assert_true(e.ts_ms == 1700000000000LL);
}

/* ---- ts sources and limits ---- */

static void test_ts_sources(void **state) {
  (void)state;
  stream_event e;
  const int64_t msg = NOW - 5000;
  /* the payload's ts wins over the message's */
  decode(&e, P("u,i,1600000000000"), F_AUTO, &LIM, msg, STREAM_OK);
  assert_true(e.ts_ms == 1600000000000LL && e.ts_from_event == 1);
  /* then the message's */
  decode(&e, P("u,i"), F_AUTO, &LIM, msg, STREAM_OK);
  assert_true(e.ts_ms == msg && e.ts_from_event == 0);
  decode(&e, P("{\"user\":\"u\",\"item\":\"i\",\"ts\":null}"), F_AUTO, &LIM, msg, STREAM_OK);
  assert_true(e.ts_ms == msg && e.ts_from_event == 0);
  /* then now; any negative message ts means none */
  decode(&e, P("u,i,,click"), F_AUTO, &LIM, -1, STREAM_OK);
  assert_true(e.ts_ms == NOW && e.ts_from_event == 0);
  decode(&e, P("u,i"), F_AUTO, &LIM, -7, STREAM_OK);
  assert_true(e.ts_ms == NOW);
  /* a message ts standing in is range-checked, at both ends */
  decode(&e, P("u,i"), F_AUTO, &LIM, MIN_TS, STREAM_OK);
  decode(&e, P("u,i"), F_AUTO, &LIM, MIN_TS - 1, STREAM_R_TS_RANGE);
  decode(&e, P("u,i"), F_AUTO, &LIM, 0, STREAM_R_TS_RANGE);
  decode(&e, P("u,i"), F_AUTO, &LIM, NOW + FUTURE, STREAM_OK);
  decode(&e, P("u,i"), F_AUTO, &LIM, NOW + FUTURE + 1, STREAM_R_TS_RANGE);
  /* but not when the payload has its own ts */
  decode(&e, P("u,i,1700000000000"), F_AUTO, &LIM, 0, STREAM_OK);
  /* now itself is never range-checked */
  stream_limits lim = LIM;
  lim.min_ts_ms = NOW + 1;
  decode(&e, P("u,i"), F_AUTO, &lim, -1, STREAM_OK);
  assert_true(e.ts_ms == NOW);
  /* now + max_future_ms saturates instead of overflowing */
  lim = LIM;
  lim.max_future_ms = INT64_MAX;
  decode(&e, P("u,i,9007199254740991"), F_AUTO, &lim, -1, STREAM_OK);
  assert_true(e.ts_ms == 9007199254740991LL);
  decode(&e, P("u,i"), F_AUTO, &lim, INT64_MAX, STREAM_OK);
  lim.max_future_ms = INT64_MIN;
  decode(&e, P("u,i,1700000000000"), F_AUTO, &lim, -1, STREAM_R_TS_RANGE);
  /* negative timestamps, when the limits allow them */
  lim = LIM;
  lim.min_ts_ms = INT64_MIN;
  decode(&e, P("u,i,-9007199254740991"), F_AUTO, &lim, -1, STREAM_OK);
  assert_true(e.ts_ms == -9007199254740991LL && e.ts_from_event == 1);
  decode(&e, P("{\"user\":\"u\",\"item\":\"i\",\"ts\":-1}"), F_AUTO, &lim, -1, STREAM_OK);
  assert_true(e.ts_ms == -1);
  decode(&e, P("u,i,-9007199254740992"), F_AUTO, &lim, -1, STREAM_R_TS_RANGE);
}

/* ---- auto-detection ---- */

static void test_auto_detect(void **state) {
  (void)state;
  stream_event e;
  /* '{' after blanks (and a BOM) is JSON; anything else is CSV */
  decode(&e, P("\n\t {\"user\":\"u\",\"item\":\"i\"}"), F_AUTO, &LIM, -1, STREAM_OK);
  assert_field(e.user, e.user_len, "u");
  decode(&e, P("{,i"), F_AUTO, &LIM, -1, STREAM_R_BAD_JSON);
  decode(&e, P("{,i"), F_CSV, &LIM, -1, STREAM_OK);
  assert_field(e.user, e.user_len, "{");
  decode(&e, P("[\"u\",\"i\"]"), F_AUTO, &LIM, -1, STREAM_R_BAD_CSV);
  decode(&e, P("x{\"user\":1}"), F_AUTO, &LIM, -1, STREAM_R_BAD_CSV);
  /* an unknown format value acts as AUTO */
  decode(&e, P("{\"user\":\"u\",\"item\":\"i\"}"), 7, &LIM, -1, STREAM_OK);
  decode(&e, P("u,i"), -1, &LIM, -1, STREAM_OK);
  /* the payload need not be NUL-terminated: the decoder reads len bytes only */
  decode(&e, "u,ixxx", 3, F_AUTO, &LIM, -1, STREAM_OK);
  assert_field(e.item, e.item_len, "i");
  decode(&e, "{\"user\":\"u\",\"item\":\"i\"}xxx", 23, F_AUTO, &LIM, -1, STREAM_OK);
}

/* ---- UTF-8 against an independent reference ---- */

/* Decodes "u,<seq>" as CSV and compares the item with the reference. Sequences holding CSV's
 * own characters are skipped. (Not "<seq>,i": a byte order mark there would be skipped.) */
static void check_seq(const unsigned char *seq, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (seq[i] == ',' || seq[i] == '"' || seq[i] == '\r' || seq[i] == '\n') return;
  unsigned char buf[8];
  memcpy(buf, "u,", 2);
  memcpy(buf + 2, seq, n);
  stream_event e;
  stream_reason want = ref_utf8_clean(seq, n) ? STREAM_OK : STREAM_R_NOT_UTF8;
  decode(&e, buf, n + 2, F_CSV, &LIM, -1, want);
  if (want == STREAM_OK) assert_memory_equal(e.item, seq, n);
}

static int has_control(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20) return 1;
  return 0;
}

static void test_utf8_classes(void **state) {
  (void)state;
  stream_event e;
  /* named classes, valid ... */
  static const char *valid[] = {
      "\xc2\xa0", /* U+00A0, the first after C1 */
      "\xc3\xa9",
      "\xdf\xbf", /* 2 bytes */
      "\xe0\xa0\x80",
      "\xe2\x82\xac",
      "\xed\x9f\xbf", /* 3 bytes, up to U+D7FF */
      "\xee\x80\x80",
      "\xef\xbf\xbf", /* U+E000, U+FFFF */
      "\xf0\x90\x80\x80",
      "\xf0\x9f\x98\x80",
      "\xf4\x8f\xbf\xbf", /* 4 bytes, to U+10FFFF */
      "~",
      "a\xc3\xa9z",
  };
  /* ... and invalid */
  static const char *invalid[] = {
      "\xc0\xaf",
      "\xc1\xbf",
      "\xe0\x80\xaf",
      "\xe0\x9f\xbf", /* overlong */
      "\xf0\x80\x80\xaf",
      "\xf0\x8f\xbf\xbf", /* overlong */
      "\xed\xa0\x80",
      "\xed\xbf\xbf",
      "\xed\xb0\x80", /* surrogates */
      "\xf4\x90\x80\x80",
      "\xf5\x80\x80\x80",
      "\xf7\xbf\xbf\xbf",
      "\xff",
      "\xfe", /* too high */
      "\xc3",
      "\xe2\x82",
      "\xf0\x9f\x98",
      "\xc3"
      "a", /* truncated */
      "a\xe2\x82",
      "\xe2"
      "a\xac", /* truncated */
      "\x80",
      "\xbf",
      "a\x80",
      "\xc3\xa9\xa9", /* stray */
      "\x01",
      "\x1f",
      "\t",
      "a\x1b[0m", /* C0 */
      "\x7f",
      "a\x7f", /* DEL */
      "\xc2\x80",
      "\xc2\x9f",
      "a\xc2\x85", /* C1 */
  };
  char buf[32];
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    int n = snprintf(buf, sizeof buf, "%s,i", valid[i]);
    decode(&e, buf, (size_t)n, F_CSV, &LIM, -1, STREAM_OK);
    assert_field(e.user, e.user_len, valid[i]);
    /* and in JSON, raw */
    n = snprintf(buf, sizeof buf, "{\"user\":\"u\",\"item\":\"%s\"}", valid[i]);
    decode(&e, buf, (size_t)n, F_JSON, &LIM, -1, STREAM_OK);
    assert_field(e.item, e.item_len, valid[i]);
  }
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
    int n = snprintf(buf, sizeof buf, "u,i,,%s", invalid[i]);
    decode(&e, buf, (size_t)n, F_CSV, &LIM, -1, STREAM_R_NOT_UTF8);
    if (has_control(invalid[i])) continue; /* raw, they are bad_json (the table has them) */
    n = snprintf(buf, sizeof buf, "{\"user\":\"%s\",\"item\":\"i\"}", invalid[i]);
    decode(&e, buf, (size_t)n, F_JSON, &LIM, -1, STREAM_R_NOT_UTF8);
  }

  /* Every sequence of 1 and 2 bytes; of 3 bytes after every 3-byte lead and the edges of
   * the 2- and 4-byte ones; 4-byte ones over every lead and second byte. */
  unsigned char s[4];
  for (unsigned a = 0; a < 256; a++) {
    s[0] = (unsigned char)a;
    check_seq(s, 1);
    int lead3 = (a >= 0xe0 && a <= 0xef) || a == 0xc2 || a == 0xdf || a == 0xf0 || a == 0xf4;
    for (unsigned b = 0; b < 256; b++) {
      s[1] = (unsigned char)b;
      check_seq(s, 2);
      for (unsigned c = 0; lead3 && c < 256; c++) {
        s[2] = (unsigned char)c;
        check_seq(s, 3);
      }
    }
  }
  static const unsigned char tails[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0xbf, 0xc0, 0xff};
  for (unsigned a = 0xf0; a < 0x100; a++)
    for (unsigned b = 0; b < 256; b++)
      for (size_t c = 0; c < sizeof tails; c++)
        for (size_t d = 0; d < sizeof tails; d++) {
          s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = tails[c], s[3] = tails[d];
          check_seq(s, 4);
        }
}

/* ---- \u escapes against an independent encoder ---- */

static size_t ref_encode(unsigned cp, unsigned char *out) {
  if (cp < 0x80) return out[0] = (unsigned char)cp, 1;
  if (cp < 0x800) {
    out[0] = (unsigned char)(0xc0 | cp >> 6);
    out[1] = (unsigned char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (unsigned char)(0xe0 | cp >> 12);
    out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    out[2] = (unsigned char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (unsigned char)(0xf0 | cp >> 18);
  out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
  out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
  out[3] = (unsigned char)(0x80 | (cp & 0x3f));
  return 4;
}

static void check_escape(const char *esc, unsigned cp, int valid) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, "{\"user\":\"%s\",\"item\":\"i\"}", esc);
  stream_event e;
  decode(&e, buf, (size_t)n, F_AUTO, &LIM, -1, valid ? STREAM_OK : STREAM_R_NOT_UTF8);
  if (!valid) return;
  unsigned char want[4];
  size_t k = ref_encode(cp, want);
  assert_int_equal(e.user_len, k);
  assert_memory_equal(e.user, want, k);
}

static void test_json_escapes(void **state) {
  (void)state;
  char esc[16];
  /* every BMP escape, in lower and upper case hex */
  for (unsigned cp = 0; cp < 0x10000; cp++) {
    int valid = cp >= 0x20 && (cp < 0x7f || cp > 0x9f) && (cp < 0xd800 || cp > 0xdfff);
    snprintf(esc, sizeof esc, cp & 1 ? "\\u%04x" : "\\u%04X", cp);
    check_escape(esc, cp, valid);
  }
  /* surrogate pairs: every low half with three high halves, and the reverse */
  static const unsigned some[] = {0, 0x3d, 0x3ff};
  for (unsigned h = 0; h < 0x400; h++)
    for (size_t k = 0; k < 3; k++) {
      snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xd800 + some[k], 0xdc00 + h);
      check_escape(esc, 0x10000 + (some[k] << 10) + h, 1);
      snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xd800 + h, 0xdc00 + some[k]);
      check_escape(esc, 0x10000 + (h << 10) + some[k], 1);
      /* reversed, or a high half followed by a non-surrogate: invalid */
      snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xdc00 + h, 0xd800 + some[k]);
      check_escape(esc, 0, 0);
      snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xd800 + h, 0x41 + some[k]);
      check_escape(esc, 0, 0);
    }
}

int test_event(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),        cmocka_unit_test(test_reason_names),
      cmocka_unit_test(test_id_lengths),   cmocka_unit_test(test_max_message_bytes),
      cmocka_unit_test(test_ts_sources),   cmocka_unit_test(test_auto_detect),
      cmocka_unit_test(test_utf8_classes), cmocka_unit_test(test_json_escapes),
  };
  return cmocka_run_group_tests_name("event", tests, NULL, NULL);
}
