/* tests/fuzz/fuzz_event_decode.c: libFuzzer target for stream_event_decode (stream/event.c).
 *
 * Decodes each input as AUTO, JSON and CSV with fixed limits and checks what must hold for
 * any bytes: a known reason with a name; on failure an empty event; on success non-empty ids
 * within the limits, lying apart inside the event's buffer, valid UTF-8 by a reference
 * decoder of its own, a ts in range; AUTO agreeing with the format it picks; and the event,
 * written back out as a quoted CSV record and as a JSON object, decoding to the same fields.
 * ASan and UBSan (the build's FLAME_SANITIZE=address) catch memory errors and leaks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/stream.h"
#include "tests/utf8_ref.h"

#define NOW 1700000000000LL

static const stream_limits LIM = {.max_message_bytes = 2048, /* below libFuzzer's 4096 */
                                  .max_id_bytes = 48,        /* small, so long ids are reachable */
                                  .min_ts_ms = 1000000000000LL,
                                  .max_future_ms = 86400000LL};

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz_event_decode: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static int inside(const stream_event *e, const char *p, size_t n) {
  return p >= e->buf && n <= sizeof e->buf && (size_t)(p - e->buf) <= sizeof e->buf - n;
}

static int apart(const char *a, size_t na, const char *b, size_t nb) {
  return na == 0 || nb == 0 || a + na <= b || b + nb <= a;
}

static int same(const char *a, size_t na, const char *b, size_t nb) {
  return na == nb && memcmp(a, b, na) == 0;
}

static void check_event(const stream_event *e, stream_reason r, int64_t msg_ts) {
  CHECK((unsigned)r < STREAM_R_COUNT);
  const char *name = stream_reason_name(r);
  CHECK(name != NULL && strcmp(name, "unknown") != 0);
  if (r != STREAM_OK) {
    CHECK(e->user_len == 0 && e->item_len == 0 && e->type_len == 0 && !e->ts_from_event);
    return;
  }
  CHECK(e->user_len >= 1 && e->user_len <= LIM.max_id_bytes);
  CHECK(e->item_len >= 1 && e->item_len <= LIM.max_id_bytes);
  CHECK(e->type_len <= STREAM_MAX_TYPE);
  CHECK(inside(e, e->user, e->user_len) && inside(e, e->item, e->item_len) &&
        inside(e, e->type, e->type_len));
  CHECK(apart(e->user, e->user_len, e->item, e->item_len) &&
        apart(e->user, e->user_len, e->type, e->type_len) &&
        apart(e->item, e->item_len, e->type, e->type_len));
  CHECK(ref_utf8_clean((const unsigned char *)e->user, e->user_len));
  CHECK(ref_utf8_clean((const unsigned char *)e->item, e->item_len));
  CHECK(ref_utf8_clean((const unsigned char *)e->type, e->type_len));
  if (e->ts_from_event || msg_ts >= 0)
    CHECK(e->ts_ms >= LIM.min_ts_ms && e->ts_ms <= NOW + LIM.max_future_ms);
  else
    CHECK(e->ts_ms == NOW);
}

/* Appends s[0..n) as a quoted CSV field. */
static char *csv_put(char *d, const char *s, size_t n) {
  *d++ = '"';
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"') *d++ = '"';
    *d++ = s[i];
  }
  *d++ = '"';
  return d;
}

/* Appends s[0..n) as a JSON string (the event holds no control characters). */
static char *json_put(char *d, const char *s, size_t n) {
  *d++ = '"';
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"' || s[i] == '\\') *d++ = '\\';
    *d++ = s[i];
  }
  *d++ = '"';
  return d;
}

/* Writes a decoded event back out in both formats and decodes each again. */
static void check_roundtrip(const stream_event *e) {
  char buf[1024]; /* ids <= 48 bytes, type <= 64: at most ~400 bytes written */
  stream_event f;
  for (int fmt = STREAM_FORMAT_JSON; fmt <= STREAM_FORMAT_CSV; fmt++) {
    char *d = buf;
    if (fmt == STREAM_FORMAT_CSV) {
      d = csv_put(d, e->user, e->user_len);
      *d++ = ',';
      d = csv_put(d, e->item, e->item_len);
      d += sprintf(d, ",%lld,", (long long)e->ts_ms);
      d = csv_put(d, e->type, e->type_len);
      *d++ = '\n';
    } else {
      d += sprintf(d, "{\"user\":");
      d = json_put(d, e->user, e->user_len);
      d += sprintf(d, ",\"item\":");
      d = json_put(d, e->item, e->item_len);
      d += sprintf(d, ",\"ts\":%lld,\"type\":", (long long)e->ts_ms);
      d = json_put(d, e->type, e->type_len);
      *d++ = '}';
    }
    CHECK((size_t)(d - buf) < sizeof buf);
    stream_reason r = stream_event_decode(&f, buf, (size_t)(d - buf), fmt, &LIM, -1, NOW);
    if (r != STREAM_OK)
      fprintf(stderr, "re-encoded: %.*s -> %s\n", (int)(d - buf), buf, stream_reason_name(r));
    CHECK(r == STREAM_OK);
    CHECK(same(f.user, f.user_len, e->user, e->user_len));
    CHECK(same(f.item, f.item_len, e->item, e->item_len));
    CHECK(same(f.type, f.type_len, e->type, e->type_len));
    CHECK(f.ts_ms == e->ts_ms && f.ts_from_event);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The message timestamp comes from the input too: none, or one that is in range. */
  int64_t msg_ts = size % 2 ? -1 : NOW - 1000;
  stream_event e[3];
  stream_reason r[3];
  for (int fmt = 0; fmt < 3; fmt++) {
    r[fmt] = stream_event_decode(&e[fmt], data, size, fmt, &LIM, msg_ts, NOW);
    check_event(&e[fmt], r[fmt], msg_ts);
    if (r[fmt] == STREAM_OK) check_roundtrip(&e[fmt]);
  }
  /* AUTO is JSON when the first byte after a BOM and blanks is '{', else CSV. */
  size_t i = size >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF ? 3 : 0;
  while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')) i++;
  int picked = i < size && data[i] == '{' ? STREAM_FORMAT_JSON : STREAM_FORMAT_CSV;
  CHECK(r[STREAM_FORMAT_AUTO] == r[picked]);
  if (r[picked] == STREAM_OK) {
    CHECK(same(e[0].user, e[0].user_len, e[picked].user, e[picked].user_len));
    CHECK(same(e[0].item, e[0].item_len, e[picked].item, e[picked].item_len));
    CHECK(same(e[0].type, e[0].type_len, e[picked].type, e[picked].type_len));
    CHECK(e[0].ts_ms == e[picked].ts_ms);
  }
  /* Empty and too large do not depend on the format. */
  for (int fmt = 1; fmt < 3; fmt++) {
    CHECK((r[0] == STREAM_R_EMPTY) == (r[fmt] == STREAM_R_EMPTY));
    CHECK((r[0] == STREAM_R_TOO_LARGE) == (r[fmt] == STREAM_R_TOO_LARGE));
  }
  return 0;
}
