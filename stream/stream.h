/* stream/stream.h: ingest: the decoding and validation of events (event.c: pure, no Kafka in
 * it, so the fuzz target links it alone) and the Kafka consumer on the libuv loop (consumer.c;
 * its part is at the end of this header).
 *
 * ---- events (event.c): decoding and validation of one interaction event (a Kafka message
 * payload) ----
 *
 * Pure: no I/O, no logging, no allocation that outlives a call, no global state of its own.
 * The consumer decodes each message with stream_event_decode(); a result other than STREAM_OK
 * sends the message to the dead-letter topic with stream_reason_name(result) as its reason
 * (and the metrics label), and its offset is still consumed.
 *
 * Two payload formats:
 *
 *   JSON  {"user":"u1","item":"i9","ts":1700000000000,"type":"click"}
 *         An object. user, item: non-empty strings, or integral numbers of magnitude below 2^53
 *         taken as their decimal text (42 -> "42", 4.2e1 -> "42", -7 -> "-7"; 1.5, 1e300 ->
 *         bad_id). ts (optional): an integral number of ms. type (optional): a string. null
 *         counts as absent for every key. Keys are case-sensitive; other keys are ignored. A
 *         repeated user, item, ts or type key is bad_json (parsers disagree on which copy wins,
 *         so neither is trusted). Nothing but JSON whitespace may follow the object.
 *
 *   CSV   user,item[,ts[,type]]   one RFC 4180 record, optionally ending in "\n" or "\r\n".
 *         A field starting with '"' is quoted: it may hold commas, CR, LF and doubled quotes
 *         (""), and must be followed by ',' or the end. Spaces are data (never trimmed). A '"'
 *         inside an unquoted field, a CR or LF outside quotes (but the final terminator), an
 *         unterminated quote or more than 4 fields is bad_csv. ts: -?[0-9]+; an empty ts or
 *         type field means none.
 *
 * In both formats an empty type counts as no type, and one UTF-8 byte order mark (EF BB BF)
 * is skipped at the very start of the payload.
 */
#ifndef FL_STREAM_H
#define FL_STREAM_H

#include "common/common.h"
#include "config/config.h"
#include "state/state.h"
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define STREAM_MAX_ID 256  /* bytes; the largest max_id_bytes */
#define STREAM_MAX_TYPE 64 /* bytes */

/* Payload formats; the values match config's enum order. */
enum { STREAM_FORMAT_AUTO = 0, STREAM_FORMAT_JSON = 1, STREAM_FORMAT_CSV = 2 };

typedef struct {
  size_t max_message_bytes; /* bytes; larger payloads are too_large, rejected before parsing */
  size_t max_id_bytes;      /* bytes, <= STREAM_MAX_ID (larger values act as STREAM_MAX_ID) */
  int64_t min_ts_ms;        /* ms since the Unix epoch; older timestamps are absurd */
  int64_t max_future_ms;    /* ms; timestamps later than now + this are absurd */
} stream_limits;

typedef struct {
  /* Not NUL-terminated; they point into buf of this very struct, so a copy of the struct
   * still points into the original. */
  const char *user, *item, *type;
  size_t user_len, item_len, type_len; /* bytes; type_len 0: no type given */
  int64_t ts_ms;     /* ms since the epoch: the event's ts, else the message's, else now */
  int ts_from_event; /* 1 when ts_ms came from the payload */
  char buf[2 * STREAM_MAX_ID + STREAM_MAX_TYPE]; /* the unescaped user, item and type bytes */
} stream_event;

/* X(name, text): the reasons an event is refused. The text is stable snake_case: it is the
 * dead-letter header value and the metrics label. */
#define STREAM_REASONS(X)                                                                          \
  X(OK, "ok")                                                                                      \
  X(R_TOO_LARGE, "too_large")                                                                      \
  X(R_EMPTY, "empty")                                                                              \
  X(R_BAD_JSON, "bad_json")                                                                        \
  X(R_BAD_CSV, "bad_csv")                                                                          \
  X(R_NO_USER, "no_user")                                                                          \
  X(R_NO_ITEM, "no_item")                                                                          \
  X(R_BAD_ID, "bad_id")                                                                            \
  X(R_ID_TOO_LONG, "id_too_long")                                                                  \
  X(R_NOT_UTF8, "not_utf8")                                                                        \
  X(R_BAD_TS, "bad_ts")                                                                            \
  X(R_TS_RANGE, "ts_range")                                                                        \
  X(R_BAD_TYPE, "bad_type")

/* clang-format off */
typedef enum {
#define STREAM_X(name, text) STREAM_##name,
  STREAM_REASONS(STREAM_X)
#undef STREAM_X
  STREAM_R_COUNT
} stream_reason;
/* clang-format on */

/* The stable name of a reason ("ok", "too_large", "bad_json", ...). Never NULL: values outside
 * the enum give "unknown". */
const char *stream_reason_name(stream_reason r);

/* The one check of an id, shared by events and HTTP requests (daemon/api/api.c), so that what the
 * API accepts is exactly what ingest can store: p[0..n) must be 1..max bytes of valid UTF-8
 * (RFC 3629: shortest forms only, no surrogates, nothing above U+10FFFF) holding no control
 * character: no C0 (U+0000..U+001F, so no NUL), no DEL (U+007F), no C1 (U+0080..U+009F).
 * Returns STREAM_OK, STREAM_R_EMPTY (n == 0), STREAM_R_ID_TOO_LONG (n > max; the bytes are
 * not read) or STREAM_R_NOT_UTF8. p may be NULL when n is 0. Also used for an event's type. */
stream_reason stream_id_check(const void *p, size_t n, size_t max);

/* The strict JSON reader shared by the event decoder and the API's request bodies. Parses
 * p[0..n) (not NUL-terminated) as one JSON value followed by nothing but JSON whitespace,
 * refusing what cJSON 1.7 lets through: raw control bytes in strings, \u escapes without 4 hex
 * digits. Returns STREAM_R_BAD_JSON (*root NULL), or STREAM_OK or STREAM_R_NOT_UTF8 with *root
 * the tree (the caller's, for cJSON_Delete): NOT_UTF8 when the text is JSON but a \u escape is
 * not a Unicode scalar value (U+0000, which would cut cJSON's strings short, or a lone
 * surrogate); such an escape reads as U+FFFD in the tree. The bytes themselves are not checked
 * for UTF-8: check the strings used (stream_id_check). Same thread rule as
 * stream_event_decode. */
struct cJSON;
stream_reason stream_json_parse(struct cJSON **root, const void *p, size_t n);

/* Finds the members names[0..n) of the JSON object obj, in one pass: out[i] is the member
 * called names[i] (case-sensitive), or NULL when absent. Other members are ignored. -1 when one
 * of the names occurs twice (parsers disagree on which copy wins, so neither is trusted), or
 * when obj is not an object; else 0. */
int stream_json_members(const struct cJSON *obj, const char *const *names, size_t n,
                        const struct cJSON **out);

/* Decodes and validates one payload of len bytes (payload may be NULL when len is 0) in
 * format (a STREAM_FORMAT_* value; any other value acts as AUTO, which picks JSON when the
 * first byte after a BOM and blanks is '{' and CSV otherwise) into *e, under *lim. e and lim
 * are not NULL; the payload need not be NUL-terminated and is not referenced afterwards.
 *
 * msg_ts_ms is the Kafka message's timestamp in ms, negative when it has none; now_ms the
 * current time. The event's ts is used when the payload has one, else msg_ts_ms when there is
 * one, else now_ms. A ts from the payload or from the message must lie in
 * [lim->min_ts_ms, now_ms + lim->max_future_ms], else the event is ts_range: a message
 * timestamp standing in is the producer's claim of the event time, and an absurd one is as
 * wrong as an absurd ts in the payload. now_ms itself is never range-checked. Integers at or
 * beyond +-2^53 are ts_range whatever the limits.
 *
 * Validation: user and item must pass stream_id_check with max_id_bytes after unescaping
 * (valid UTF-8, no control character: C0, DEL and C1 are refused); a present type likewise,
 * 1..64 bytes.
 *
 * Returns STREAM_OK with *e filled in, or the first reason found, checking in this order:
 * too_large (len > max_message_bytes, the payload unread), empty (nothing but blanks: space,
 * tab, CR, LF), bad_json / bad_csv (the payload as a whole), then user (no_user when absent,
 * null or empty; bad_id for another JSON type, or a number that is not an integer below
 * 2^53 in magnitude; id_too_long; not_utf8), then item alike, then ts (bad_ts when not an
 * integer; ts_range), then type (bad_type when not a string or longer than 64 bytes;
 * not_utf8). A length is checked before the bytes. In JSON, a \u escape that is not a
 * Unicode scalar value (a lone surrogate, or U+0000, which would end cJSON's strings early)
 * anywhere in an otherwise well-formed payload makes it not_utf8, even under a key that is
 * ignored. On any result but STREAM_OK the lengths in *e are 0.
 *
 * Thread-safety: e is the caller's; but cJSON records the position of a parse error in a
 * process-wide variable, so JSON payloads must be decoded on one thread at a time with respect
 * to every other cJSON parse in the process. */
stream_reason stream_event_decode(stream_event *e, const void *payload, size_t len, int format,
                                  const stream_limits *lim, int64_t msg_ts_ms, int64_t now_ms);

/* ---- the consumer (consumer.c): the Kafka consumer of flamed, on the libuv loop.
 *
 * A librdkafka consumer in a consumer group, a static member (group.instance.id, from
 * stream.instance_id) so that a restarted instance gets its partitions back at once.
 * librdkafka writes a byte to a pipe whenever its consumer queue goes from empty to non-empty
 * (rd_kafka_queue_io_event_enable); the loop watches that pipe, and each wakeup drains at most
 * stream.batch_max messages, decodes and validates them, and hands the good events together
 * with the partitions' next offsets to the state writer (state/state.h) as ONE state write,
 * made on the writer's thread: the loop never waits on the disk. When the drain was full it
 * re-arms itself on the loop's idle phase, so a backlog is worked off in bounded slices
 * between other loop work. A 100 ms timer drains as well, whether or not anything is queued:
 * that keeps the member alive in its group (max.poll.interval.ms) on an idle topic.
 *
 * Exactly-once effect: the offsets stored in the state are the only truth. On assignment each
 * partition starts at its stored next offset (or stream.start_offset when none is stored);
 * Kafka commits are advisory (enable.auto.commit of offsets stored after each durable write,
 * for lag tools). A kill -9 at any moment therefore loses nothing and applies nothing twice.
 *
 * Rejected events (stream_reason) go to the dead-letter topic with the reason in the header
 * "flamed-reject-reason", are counted by reason, and their offsets are consumed like any
 * other. Events whose type weight is 0 are counted as filtered.
 *
 * If a state write fails (disk full, I/O error) or stalls, the writer keeps retrying it; once
 * state.write_queue writes are waiting, or the disk has less than state.min_free_mb free,
 * the partitions are paused and drains take nothing (a message that still arrives is sought
 * back): nothing accepted is dropped, and the group membership holds.
 *
 * A stored offset out of the partition's range (retention deleted it) restarts the partition
 * at stream.start_offset (librdkafka's auto.offset.reset); the first message after an
 * assignment shows such a reset, which is counted with the offsets it jumped over.
 *
 * All functions run on the loop thread. */
typedef struct stream_consumer stream_consumer;

/* Latency from a message's timestamp (the producer's create time) to its event being durable
 * in the state: 1 ms buckets up to STREAM_LAT_MS, then one overflow bucket. */
enum { STREAM_LAT_MS = 2000 };

typedef struct {
  uint64_t messages;                    /* messages consumed, every outcome */
  uint64_t stored;                      /* events written to the state */
  uint64_t filtered;                    /* events dropped by a type weight of 0 */
  uint64_t rejected[STREAM_R_COUNT];    /* by reason (index STREAM_OK unused) */
  uint64_t dlq_sent, dlq_failed;        /* dead-letter deliveries confirmed / failed */
  uint64_t batches;                     /* durable state writes */
  uint64_t write_failures;              /* state writes that failed (then retried) */
  uint64_t dlq_truncated;               /* dead-letter records cut to the size limit */
  uint64_t kafka_errors;                /* consumer errors reported by librdkafka */
  uint64_t offset_resets;               /* stored offsets found out of range at assignment */
  uint64_t offsets_skipped;             /* offsets never consumed because of those resets */
  uint64_t given_back;                  /* partitions sought back for messages not taken */
  uint64_t rebalances;                  /* assignments and revocations handled */
  uint64_t lat_ms[STREAM_LAT_MS + 1];   /* produce-to-durable latency histogram */
  uint64_t write_ms[STREAM_LAT_MS + 1]; /* duration of successful state writes, histogram */
  int64_t lag;                          /* messages behind the high watermarks, -1 unknown */
  int assigned;                         /* partitions currently assigned */
  int paused;                           /* 1 while ingest is paused (writer full, low space) */
  int low_space;                        /* 1 while the state disk is below state.min_free_mb */
  uint64_t free_bytes;                  /* free on the state disk at the last check */
  size_t writes_queued;                 /* state writes handed over, not yet durable */
  double write_wait_s;                  /* how long the oldest of them has waited */
  int writer_stuck; /* the store refuses writes after a full disk though space is back: only a
                       restart clears it (state.h, state_writer_status.stuck) */
} stream_stats;

/* Checks cfg's [kafka] properties (and the daemon's own) the way stream_consumer_new applies
 * them, without creating a client: --test-config. Returns 0 or negative with err filled. */
int stream_config_check(const config *cfg, char *err, size_t errlen);

/* Creates a consumer for cfg's [stream] and [kafka] settings storing into db, on loop.
 * cfg and db must outlive it. A bad [kafka] property is an error naming its origin:line.
 * Returns 0 or a negative code with err filled.
 * Test hooks (environment, for the fault tests): FLAMED_TEST_HOLD_WRITES=<file> holds every
 * state write while the file exists (a stalled disk); FLAMED_TEST_STUCK_S=<seconds> replaces
 * the 30 s after which a store that refuses writes since a full disk is reported stuck. */
int stream_consumer_new(stream_consumer **out, uv_loop_t *loop, const config *cfg, state_db *db,
                        char *err, size_t errlen);

/* Subscribes to stream.topic and starts watching. Returns 0 or a negative code. */
int stream_consumer_start(stream_consumer *c, char *err, size_t errlen);

/* Stops fetching and leaves the group (revoking the partitions) without blocking the loop;
 * the writes in flight go on until stream_consumer_free. done(arg) runs on the loop once the
 * consumer is closed (after at most the session timeout). Safe to call more than once. */
void stream_consumer_stop(stream_consumer *c, void (*done)(void *arg), void *arg);

/* Frees a stopped (or never started) consumer. Its handles must have closed: call it from
 * done or after the loop has run. Stops the state writer first, giving its queue up to
 * stream.close_timeout_s; returns FL_EBUSY when the writer is stuck inside a write (a frozen
 * disk): then the store must not be closed, and the process should just exit. Else 0. */
int stream_consumer_free(stream_consumer *c);

/* The group.instance.id for cfg: stream.instance_id, or by default
 * "flamed-<hostname>-<crc32 of the state dir's real path, hex>", stable across restarts and
 * distinct for two instances on one host. */
void stream_instance_id(const config *cfg, char *out, size_t n);

/* One event made durable, as the state's dense indices. */
typedef struct {
  uint32_t user, item; /* state indices (>= 1) */
  int64_t ts_ms;       /* the event's time */
} stream_stored;

/* fn(ctx, ev, n) runs on the loop after every durable state write, with that write's stored
 * events in consumption order (for the trainer's "touched users" and online metrics). The
 * state already holds them when fn runs. One hook; NULL removes it. */
void stream_consumer_on_commit(stream_consumer *c,
                               void (*fn)(void *ctx, const stream_stored *ev, size_t n), void *ctx);

/* A snapshot of the counters; lag is refreshed from librdkafka's cached watermarks. */
void stream_consumer_stats(stream_consumer *c, stream_stats *s);

/* Appends the Prometheus lines of the counters a dependable ingest must own up to:
 * dead-letter failures and cuts, Kafka errors, offset resets and what they skipped, the
 * ingest pause, the state disk's free space and the writer's queue. */
void stream_stats_fault_metrics(fl_buf *b, const stream_stats *s);

/* The value at quantile q (0..1) of a latency histogram, in ms; -1 when it is empty. */
double stream_lat_quantile(const uint64_t *lat_ms, double q);

#endif
