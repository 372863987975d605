/* config/config.c: the settings table and everything driven by it.
 *
 * Every setting is one row of cfg_table; the row says where its field is (offsetof) and of
 * which type, and a compile-time check makes a row whose field has the wrong C type fail to
 * build. config_init parses each default through config_set, so defaults obey exactly the
 * rules a file does (the tests check every default against its own row).
 *
 * Files are parsed by libinih, fed through our own line reader (ini_parse_stream). The reader
 * counts lines, so errors name file:line whatever INI_HANDLER_LINENO the library was built
 * with, and it refuses the two line shapes inih would silently misread: an indented key line
 * (inih takes it as the continuation of the value above, so "  group = g" under "topic = t"
 * would set topic to "group = g") and a line longer than inih's buffer (inih would parse its
 * tail as a line of its own). A file is applied to a copy of the config, swapped in only when
 * the whole file is good: a failed load or reload leaves the running config as it was. */
#define _GNU_SOURCE
#include "config.h"

#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

_Static_assert(CONFIG_LINE_MAX + 3 <= INI_MAX_LINE, "CONFIG_LINE_MAX must fit inih's line buffer");

/* ---- small helpers ---- */

static char *cfg_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = xmalloc(n);
  memcpy(p, s, n);
  return p;
}

/* Writes "prefix: " + the formatted text into err: prefix is "origin:line" when line > 0,
 * "origin" when line is 0, nothing when origin is NULL. */
static void cfg_err(char *err, size_t errlen, const char *origin, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void cfg_err(char *err, size_t errlen, const char *origin, int line, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  int n = 0;
  if (origin && line > 0)
    n = snprintf(err, errlen, "%s:%d: ", origin, line);
  else if (origin)
    n = snprintf(err, errlen, "%s: ", origin);
  if (n < 0 || (size_t)n >= errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
  va_end(ap);
}

/* Text from outside shown inside a message, so that the message stays one printable line:
 * control characters as '?', cut after 60 bytes, quoted if asked. */
static const char *cfg_show_text(const char *v, bool quote, char *buf, size_t n) {
  size_t j = 0, len = strlen(v);
  if (quote) buf[j++] = '"';
  for (size_t i = 0; i < len && j + 5 < n; i++) {
    if (i == 60) {
      memcpy(buf + j, "...", 3);
      j += 3;
      break;
    }
    unsigned char ch = (unsigned char)v[i];
    buf[j++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  }
  if (quote) buf[j++] = '"';
  buf[j] = 0;
  return buf;
}

static const char *cfg_show(const char *v, char *buf, size_t n) {
  return cfg_show_text(v, true, buf, n);
}

static bool cfg_blank(char ch) { return ch == ' ' || ch == '\t'; }

/* ---- value parsers: 0, or a negative code with the problem in msg ---- */

/* Plain decimal: optional '-', then digits only. */
static int cfg_parse_int(const char *v, int64_t *out, char *msg, size_t msglen) {
  char shown[80];
  const char *p = v + (v[0] == '-');
  bool digits = *p != 0;
  for (const char *q = p; *q; q++) digits = digits && isdigit((unsigned char)*q);
  if (!digits) {
    snprintf(msg, msglen, "%s is not a whole number (plain decimal digits, e.g. 100)",
             cfg_show(v, shown, sizeof shown));
    return FL_EFORMAT;
  }
  errno = 0;
  long long x = strtoll(v, NULL, 10);
  if (errno == ERANGE) {
    snprintf(msg, msglen, "%s is out of range", cfg_show(v, shown, sizeof shown));
    return FL_ERANGE;
  }
  *out = x;
  return 0;
}

/* Decimal with optional fraction and exponent; finite. strtod alone would also take blanks,
 * hex, "inf" and "nan": only the characters of a decimal number are let through to it. */
static int cfg_parse_double(const char *v, double *out, char *msg, size_t msglen) {
  char shown[80];
  bool ok = *v != 0 && strspn(v, "0123456789+-.eE") == strlen(v);
  char *end = NULL;
  double x = 0;
  if (ok) {
    errno = 0;
    x = strtod(v, &end);
    ok = end != v && *end == 0;
  }
  if (!ok) {
    snprintf(msg, msglen, "%s is not a number (decimal, e.g. 0.5 or 2)",
             cfg_show(v, shown, sizeof shown));
    return FL_EFORMAT;
  }
  if (!isfinite(x)) {
    snprintf(msg, msglen, "%s is out of range", cfg_show(v, shown, sizeof shown));
    return FL_ERANGE;
  }
  *out = x;
  return 0;
}

static int cfg_parse_bool(const char *v, bool *out, char *msg, size_t msglen) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
      *out = strcasecmp(v, yes[i]) == 0;
      return 0;
    }
  }
  char shown[80];
  snprintf(msg, msglen, "%s is not a bool (true/false, yes/no, on/off, 1/0)",
           cfg_show(v, shown, sizeof shown));
  return FL_EFORMAT;
}

/* Index of v among "a|b|c" (any letter case), or -1. */
static int cfg_choice_index(const char *choices, const char *v) {
  size_t vlen = strlen(v);
  int i = 0;
  for (const char *p = choices;; i++) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == vlen && strncasecmp(p, v, len) == 0) return i;
    if (!bar) return -1;
    p = bar + 1;
  }
}

/* Writes choice number i of "a|b|c" into buf. */
static const char *cfg_choice_name(const char *choices, int i, char *buf, size_t n) {
  const char *p = choices;
  for (; i > 0 && p; i--) {
    p = strchr(p, '|');
    if (p) p++;
  }
  if (!p) return "?";
  const char *bar = strchr(p, '|');
  size_t len = bar ? (size_t)(bar - p) : strlen(p);
  snprintf(buf, n, "%.*s", (int)len, p);
  return buf;
}

/* The rules that keep a text value writable in a file and loadable again (see config.h).
 * linelen is the length of the "key = " part of its line. */
static int cfg_check_text(const char *v, size_t keylen, char *msg, size_t msglen) {
  size_t len = strlen(v);
  if (len > 0 && (cfg_blank(v[0]) || cfg_blank(v[len - 1]))) {
    snprintf(msg, msglen, "a value cannot begin or end with a blank");
    return FL_EFORMAT;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch < 0x20 || ch == 0x7f) {
      snprintf(msg, msglen, "a value cannot contain control characters (byte %zu is 0x%02x)", i,
               ch);
      return FL_EFORMAT;
    }
    /* inih reads "key = ;x" and "key = a ;x" as comments; '#' is no comment there, but one
     * meant as a comment would silently become part of the value, so it is refused alike. */
    if ((ch == ';' || ch == '#') && (i == 0 || cfg_blank(v[i - 1]))) {
      snprintf(msg, msglen,
               "a value cannot have '%c' at its start or after a blank (in a file, that starts "
               "a comment)",
               ch);
      return FL_EFORMAT;
    }
  }
  if (len >= 2 && (v[0] == '"' || v[0] == '\'') && v[len - 1] == v[0]) {
    snprintf(msg, msglen, "values are not quoted: write the value without the quotes");
    return FL_EFORMAT;
  }
  if (keylen + 3 + len > CONFIG_LINE_MAX) {
    snprintf(msg, msglen, "value too long: its \"key = value\" line must fit in %d bytes",
             CONFIG_LINE_MAX);
    return FL_ERANGE;
  }
  return 0;
}

/* ---- row checks ---- */

/* Kafka's own rule for topic names: 1 to 249 of [A-Za-z0-9._-], and not "." or "..". The empty
 * name passes here: config_validate requires stream.topic, and an empty dead-letter topic means
 * "none". */
static int cfg_check_topic(config *c, const char *v, char *msg, size_t msglen) {
  (void)c;
  size_t len = strlen(v);
  bool ok = len <= 249 && strcmp(v, ".") != 0 && strcmp(v, "..") != 0;
  for (size_t i = 0; ok && i < len; i++)
    ok = isalnum((unsigned char)v[i]) || v[i] == '.' || v[i] == '_' || v[i] == '-';
  if (ok) return 0;
  char shown[80];
  snprintf(msg, msglen,
           "%s is not a Kafka topic name (at most 249 letters, digits, '.', '_' or '-')",
           cfg_show(v, shown, sizeof shown));
  return FL_EFORMAT;
}

/* model.anchor_item_ids: empty, or a template with exactly one "{}" (the row number). */
static int cfg_check_id_template(config *c, const char *v, char *msg, size_t msglen) {
  (void)c;
  const char *p = strstr(v, "{}");
  if (!*v || (p && !strstr(p + 2, "{}"))) return 0;
  char shown[80];
  snprintf(msg, msglen, "%s needs exactly one {} (the row number), e.g. item-{}",
           cfg_show(v, shown, sizeof shown));
  return FL_EFORMAT;
}

static void cfg_free_types(config_type_weight *t, size_t n) {
  for (size_t i = 0; i < n; i++) free(t[i].name);
  free(t);
}

/* Trims blanks around [*b, *e). */
static void cfg_trim(const char **b, const char **e) {
  while (*b < *e && cfg_blank(**b)) (*b)++;
  while (*e > *b && cfg_blank((*e)[-1])) (*e)--;
}

/* stream.type_weights: "name:weight" entries separated by commas, blanks around names and
 * weights allowed. Parsed into a new array that replaces c->stream.types only when the whole
 * list is good. */
static int cfg_check_type_weights(config *c, const char *v, char *msg, size_t msglen) {
  config_type_weight *t = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  /* "" is the empty list; otherwise every entry, the last one included, must be name:weight. */
  const char *p = v;
  bool more = *v != 0;
  while (more) {
    const char *end = strchr(p, ','), *colon;
    more = end != NULL;
    if (!end) end = p + strlen(p);
    const char *nb = p, *ne = end;
    cfg_trim(&nb, &ne);
    colon = memchr(nb, ':', (size_t)(ne - nb));
    if (nb == ne) {
      snprintf(msg, msglen, "empty entry (expected name:weight entries separated by commas)");
      rc = FL_EFORMAT;
      break;
    }
    if (!colon) {
      snprintf(msg, msglen, "\"%.*s\" has no weight (expected name:weight)", (int)(ne - nb), nb);
      rc = FL_EFORMAT;
      break;
    }
    const char *wb = colon + 1, *we = ne;
    ne = colon;
    cfg_trim(&nb, &ne);
    cfg_trim(&wb, &we);
    if (nb == ne) {
      snprintf(msg, msglen, "\"%.*s\" has no type name before ':'", (int)(we - wb), wb);
      rc = FL_EFORMAT;
      break;
    }
    char name[CONFIG_LINE_MAX + 1], wtext[CONFIG_LINE_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(ne - nb), nb);
    snprintf(wtext, sizeof wtext, "%.*s", (int)(we - wb), wb);
    for (size_t i = 0; i < n && rc == 0; i++)
      if (strcmp(t[i].name, name) == 0) {
        snprintf(msg, msglen, "type \"%s\" is listed twice", name);
        rc = FL_EFORMAT;
      }
    if (rc) break;
    double w = 0;
    char sub[160];
    rc = cfg_parse_double(wtext, &w, sub, sizeof sub);
    if (rc == 0 && (w < 0 || w > 1000)) rc = FL_ERANGE;
    if (rc) {
      snprintf(msg, msglen, "weight of \"%s\" must be a number in [0, 1000], not \"%s\"", name,
               wtext);
      break;
    }
    if (n == cap) {
      cap = cap ? 2 * cap : 4;
      t = xrealloc(t, cap * sizeof *t);
    }
    t[n].name = cfg_strdup(name);
    t[n].weight = w;
    n++;
    p = end + 1;
  }
  if (rc) {
    cfg_free_types(t, n);
    return rc;
  }
  cfg_free_types(c->stream.types, c->stream.ntypes);
  c->stream.types = t;
  c->stream.ntypes = n;
  return 0;
}

/* ---- the table ---- */

/* Row offset with a compile-time check that the field has type T: a mismatch gives an array
 * of size -1. _Generic does not evaluate its operand, so the null pointer is never used. */
#define CFG_FIELD(field, T)                                                                        \
  (offsetof(config, field) + 0 * sizeof(char[_Generic(((config *)0)->field, T : 1, default : -1)]))

#define CFG_INT(S, K, F, D, LO, HI, R, H)                                                          \
  {                                                                                                \
    .section = S, .key = K, .type = CONFIG_INT, .def = D, .min = LO, .max = HI, .reloadable = R,   \
    .help = H, .offset = CFG_FIELD(F, int64_t)                                                     \
  }
#define CFG_DOUBLE(S, K, F, D, LO, HI, R, H)                                                       \
  {                                                                                                \
    .section = S, .key = K, .type = CONFIG_DOUBLE, .def = D, .dmin = LO, .dmax = HI,               \
    .reloadable = R, .help = H, .offset = CFG_FIELD(F, double)                                     \
  }
#define CFG_BOOL(S, K, F, D, R, H)                                                                 \
  {                                                                                                \
    .section = S, .key = K, .type = CONFIG_BOOL, .def = D, .reloadable = R, .help = H,             \
    .offset = CFG_FIELD(F, bool)                                                                   \
  }
#define CFG_STRING(S, K, F, D, R, H, CHECK)                                                        \
  {                                                                                                \
    .section = S, .key = K, .type = CONFIG_STRING, .def = D, .reloadable = R, .help = H,           \
    .offset = CFG_FIELD(F, char *), .check = CHECK                                                 \
  }
#define CFG_ENUM(S, K, F, D, CHOICES, R, H)                                                        \
  {                                                                                                \
    .section = S, .key = K, .type = CONFIG_ENUM, .def = D, .choices = CHOICES, .reloadable = R,    \
    .help = H, .offset = CFG_FIELD(F, int)                                                         \
  }

#define CFG_2_POW_53 INT64_C(9007199254740992) /* largest range where a double is exact */

/* The enum choices are listed in the order of their C enums: the stored int is the index. */
_Static_assert(CONFIG_FORMAT_AUTO == 0 && CONFIG_FORMAT_JSON == 1 && CONFIG_FORMAT_CSV == 2,
               "stream.format choices");
_Static_assert(CONFIG_START_EARLIEST == 0 && CONFIG_START_LATEST == 1, "stream.start_offset");
_Static_assert(CONFIG_COMPRESSION_NONE == 0 && CONFIG_COMPRESSION_SNAPPY == 1 &&
                   CONFIG_COMPRESSION_LZ4 == 2 && CONFIG_COMPRESSION_ZSTD == 3,
               "state.compression choices");
_Static_assert(FL_LOG_DEBUG == 0 && FL_LOG_INFO == 1 && FL_LOG_WARN == 2 && FL_LOG_ERROR == 3,
               "log.level choices");

/* clang-format off */
static const config_setting cfg_table[] = {
  CFG_STRING("stream", "topic", stream.topic, "events", false,
             "Kafka topic of interaction events; the message key is the user id.",
             cfg_check_topic),
  CFG_STRING("stream", "group", stream.group, "flamed", false,
             "Kafka consumer group id; instances sharing it split the topic's partitions, and so "
             "its users, between them.", NULL),
  CFG_STRING("stream", "dead_letter_topic", stream.dead_letter_topic, "events.dlq", false,
             "Kafka topic that receives every rejected event with the reason; empty: rejected "
             "events are only counted and logged.", cfg_check_topic),
  CFG_ENUM("stream", "format", stream.format, "auto", "auto|json|csv", false,
           "Encoding of event messages; auto: a message whose first non-blank byte is '{' is "
           "JSON, any other is CSV."),
  CFG_INT("stream", "batch_max", stream.batch_max, "10000", 1, 1000000, false,
          "Most messages drained per loop wakeup; each batch is one RocksDB write of its events "
          "and offsets."),
  CFG_INT("stream", "max_message_bytes", stream.max_message_bytes, "4096", 64, 1048576, false,
          "Longest accepted Kafka message, in bytes; a longer one is rejected as malformed."),
  CFG_INT("stream", "max_id_bytes", stream.max_id_bytes, "256", 1, 256, false,
          "Longest accepted user or item id, in bytes; an event with a longer id is rejected."),
  CFG_STRING("stream", "type_weights", stream.type_weights, "", false,
             "Weight of each event type, as name:weight entries separated by commas (e.g. "
             "view:1,cart:2,purchase:4), weights in [0, 1000]; weight 0 filters that type out; "
             "empty: every event weighs default_type_weight.", cfg_check_type_weights),
  CFG_DOUBLE("stream", "default_type_weight", stream.default_type_weight, "1", 0, 1000, false,
             "Weight of an event with no type or a type not listed in type_weights; 0 drops "
             "such events."),
  CFG_INT("stream", "min_ts_ms", stream.min_ts_ms, "946684800000", 0, CFG_2_POW_53, false,
          "Oldest accepted event timestamp, in ms since the Unix epoch (the default is "
          "2000-01-01); an older one is rejected as absurd."),
  CFG_INT("stream", "max_future_ms", stream.max_future_ms, "86400000", 0, CFG_2_POW_53, false,
          "How far ahead of this machine's clock an event timestamp may be, in ms; an event "
          "further in the future is rejected."),
  CFG_ENUM("stream", "start_offset", stream.start_offset, "earliest", "earliest|latest", false,
           "Where a partition with no offset stored in the state starts reading: earliest keeps "
           "user sequences complete, latest skips the backlog."),
  CFG_DOUBLE("stream", "close_timeout_s", stream.close_timeout_s, "10", 0, 3600, false,
             "Longest a shutdown waits for the consumer to leave its group (the broker may be "
             "gone); then flamed exits anyway. Nothing is lost: the offsets are in the state; "
             "the group only rebalances later, after its session timeout."),
  CFG_BOOL("stream", "static_membership", stream.static_membership, "true", false,
           "Join the consumer group as a static member (Kafka's group.instance.id, KIP-345): a "
           "restarted instance, kill -9 included, gets its partitions back at once instead of "
           "after its dead predecessor's session timeout. The price: a stopped instance keeps "
           "its partitions until kafka.session.timeout.ms passes. Needs Kafka 2.3+; the "
           "embedded broker (`flame broker`) does not implement it: turn it off there."),
  CFG_STRING("stream", "instance_id", stream.instance_id, "", false,
             "The static member's id (group.instance.id). Empty: "
             "flamed-<hostname>-<hash of the state dir>, stable across restarts and distinct "
             "per state dir. Two running instances must never share one.", NULL),

  CFG_STRING("state", "dir", state.dir, "/var/lib/flamed", false,
             "Directory of the RocksDB state: user sequences, item and user dictionaries, Kafka "
             "offsets.", NULL),
  CFG_INT("state", "seq_len", state.seq_len, "200", 1, 65536, false,
          "Items kept per user, the newest ones; older items are dropped as new ones arrive."),
  CFG_INT("state", "cache_mb", state.cache_mb, "64", 1, 1048576, false,
          "RocksDB block cache, in MiB."),
  CFG_ENUM("state", "compression", state.compression, "lz4", "none|snappy|lz4|zstd", false,
           "Compression of RocksDB blocks: lz4 is fast with a fair ratio, zstd smaller and "
           "slower."),
  CFG_BOOL("state", "wal", state.wal, "true", false,
           "RocksDB write-ahead log; without it a crash loses the batches not yet flushed, and "
           "they are consumed again from Kafka."),
  CFG_BOOL("state", "sync", state.sync, "false", false,
           "fsync the write-ahead log at every batch: batches then survive power loss, not only "
           "process crashes, for one fsync per batch."),
  CFG_INT("state", "write_queue", state.write_queue, "4", 1, 1024, false,
          "Batches handed to the state's writer thread and not yet written, at most; when "
          "that many wait (a slow or stalled disk), consumption pauses until one is written. "
          "HTTP serving never waits on the disk."),
  CFG_INT("state", "min_free_mb", state.min_free_mb, "256", 0, 1048576, false,
          "Free space on the state's filesystem, in MiB, below which ingest pauses (serving "
          "goes on) until free space is back above it plus 1/8 (at least 1 MiB); 0 turns the "
          "check off. Keeps RocksDB from meeting a full disk."),
  CFG_STRING("state", "rocksdb_log_dir", state.rocksdb_log_dir, "", false,
             "Directory of RocksDB's own LOG files (named after the state dir, at most 4 of "
             "4 MiB). Empty: $RUNTIME_DIRECTORY (systemd's RuntimeDirectory) when set, else "
             "$TMPDIR or /tmp: off the state disk, whose filling up would otherwise abort "
             "RocksDB on a LOG write.", NULL),

  CFG_STRING("model", "anchor", model.anchor, "", false,
             "The frozen anchor network, a checkpoint written by `flame train` or `flame "
             "import-pt`; empty: flamed pretrains one (SASRec) from the stored history once "
             "train.bootstrap_min_users and train.bootstrap_min_events are reached.", NULL),
  CFG_STRING("model", "anchor_item_ids", model.anchor_item_ids, "", false,
             "How model.anchor's item rows map to item ids: a template where {} stands for the "
             "row number (e.g. item-{} for anchors trained by `flame train` on files replayed by "
             "`flame produce`); empty: the rows are the state's own item indices.",
             cfg_check_id_template),
  CFG_STRING("model", "dir", model.dir, "", false,
             "Directory of the promoted model snapshots and the bootstrapped anchor; empty: "
             "<state.dir>/models. On restart the newest valid snapshot serves at once.", NULL),
  CFG_INT("model", "dim", model.dim, "64", 8, 1024, false,
          "Channels of a bootstrapped anchor (a loaded anchor brings its own shape)."),
  CFG_INT("model", "blocks", model.blocks, "2", 1, 16, false,
          "Transformer blocks of a bootstrapped anchor."),
  CFG_INT("model", "heads", model.heads, "2", 1, 16, false,
          "Attention heads of a bootstrapped anchor; must divide model.dim."),
  CFG_INT("model", "maxlen", model.maxlen, "50", 2, 4096, false,
          "Longest input history of a bootstrapped anchor, in items (the newest ones)."),
  CFG_DOUBLE("model", "dropout", model.dropout, "0.5", 0, 0.95, false,
             "Dropout probability of the trained network and of a bootstrapped anchor (an "
             "anchor keeps its checkpoint's rate); never applied when serving."),
  CFG_INT("model", "keep", model.keep, "3", 1, 1000, false,
          "Promoted snapshots kept on disk; older ones are deleted. One that does not load is "
          "moved into <model dir>/corrupt at start and does not count."),
  CFG_INT("model", "popular", model.popular, "1000", 10, 1000000, false,
          "Items in the popularity list served to cold users and before a model exists."),

  CFG_BOOL("train", "enabled", train.enabled, "true", true,
           "Run fine-tuning rounds; false starts with training paused (resume it with "
           "POST /v1/admin/resume-training)."),
  CFG_DOUBLE("train", "interval_s", train.interval_s, "60", 0.1, 86400, true,
             "Seconds between fine-tuning rounds."),
  CFG_INT("train", "min_new_events", train.min_new_events, "100000", 1, CFG_2_POW_53, true,
          "A round starts before train.interval_s once this many new events were stored."),
  CFG_INT("train", "min_users", train.min_users, "20", 1, 100000000, true,
          "Users with new events a round needs; with fewer it is declined and waits for the next "
          "interval or for train.min_new_events more events."),
  CFG_INT("train", "steps", train.steps, "50", 1, 1000000, true,
          "Optimizer steps per round."),
  CFG_INT("train", "batch", train.batch, "256", 1, 65536, true, "Samples per optimizer step."),
  CFG_DOUBLE("train", "lr", train.lr, "0.0003", 1e-7, 1, true,
             "Adam learning rate of the rounds (with train.keep_adam the rounds are one "
             "fine-tuning run over the new events). 0.0003, below pretraining's 0.001: on "
             "ml-100k's stream split by time, rounds at 0.001 lost to the frozen anchor and "
             "rounds at 0.0003 or 0.0001 beat it (bench/RESULTS.md 18)."),
  CFG_BOOL("train", "new_targets_only", train.new_targets_only, "true", true,
           "Users with new events contribute only the prefixes that end at one of them "
           "(otherwise their newest model.maxlen prefixes); replayed users are unchanged."),
  CFG_BOOL("train", "seed_new_items", train.seed_new_items, "false", true,
           "An item first seen since the serving version starts the round with the mean of "
           "the rows of the items just before its occurrences (up to three each) instead of a "
           "random row, so that it can be recommended once the round is promoted."),
  CFG_INT("train", "sampled_items", train.sampled_items, "100000", 0, CFG_2_POW_53, true,
          "Catalogues with more items than this train with a sampled softmax (train.negatives "
          "candidates per step, and only the item rows a step touches are updated) instead of "
          "the full softmax, whose cost and memory traffic grow with the catalogue; 0: always."),
  CFG_INT("train", "negatives", train.negatives, "8192", 16, 1000000, true,
          "Items drawn uniformly per step as the sampled softmax's candidates (shared by the "
          "batch)."),
  CFG_BOOL("train", "keep_adam", train.keep_adam, "true", true,
           "A round that starts from the version the previous round promoted goes on with "
           "that round's Adam moments instead of fresh ones (fresh moments make the first "
           "steps full-size whatever the gradient, and a rejected round's learning is lost)."),
  CFG_DOUBLE("train", "tau", train.tau, "1", 0.01, 100, true, "FLAME's NT-Xent temperature."),
  CFG_DOUBLE("train", "lambda0", train.lambda0, "0.1", 0, 100, true,
             "Weight of FLAME's mutual-learning term at a round's first step; 0: plain "
             "cross-entropy rounds without the anchor pass. 1 (the paper's, for training from "
             "scratch) made the rounds lose on ml-100k's stream (bench/RESULTS.md 18)."),
  CFG_DOUBLE("train", "lambda_r", train.lambda_r, "0.01", 0, 100, true,
             "Weight of FLAME's mutual-learning term at a round's last step (geometric in "
             "between)."),
  CFG_INT("train", "replay_users", train.replay_users, "1024", 0, 100000000, true,
          "Users without new events replayed in each round, at random, against forgetting."),
  CFG_INT("train", "replay_pool", train.replay_pool, "65536", 1, 100000000, false,
          "A uniform sample of this many stored users (a reservoir, about 40 bytes each) from "
          "which each round draws its replayed and retained users, so that a round reads the "
          "touched users and that sample, never every stored sequence (only the first round "
          "after start does)."),
  CFG_INT("train", "holdout_users", train.holdout_users, "500", 10, 100000000, true,
          "At most this many users with new events have their newest event held out of the "
          "round and used to validate the candidate; the next round learns it."),
  CFG_INT("train", "retain_users", train.retain_users, "0", 0, 100000000, true,
          "Up to this many users the round neither learned from nor replayed also validate the "
          "candidate, on their newest event: it must not lose more than train.margin there "
          "either. This catches a round that forgets what the serving model knew about everyone "
          "else, which the holdout of touched users cannot see; 0: off. Off by default: those "
          "newest events are mostly ones the anchor was trained on, and any learning forgets "
          "some of that memory, so the check rejects the rounds that pay (RESULTS 8e)."),
  CFG_DOUBLE("train", "margin", train.margin, "0.01", 0, 1, true,
             "Holdout NDCG@10 a candidate may lose against the serving model and still be "
             "promoted (on the touched users' holdout and on the retained users' alike). The "
             "default rejects a clearly worse candidate; a smaller one judges one round's "
             "small effect against the holdout's noise and rejects rounds that pay (RESULTS "
             "8e)."),
  CFG_INT("train", "reanchor_rounds", train.reanchor_rounds, "0", 0, 1000000, true,
          "Re-anchor on a schedule: after this many promotions the serving network becomes the "
          "frozen anchor (as POST /v1/admin/reanchor does); 0: only when asked."),
  CFG_INT("train", "threads", train.threads, "1", 1, 256, false,
          "OpenBLAS threads of the trainer."),
  CFG_INT("train", "nice", train.nice, "10", 0, 19, false,
          "Niceness of the trainer thread and of the online evaluation's (Linux schedules "
          "threads one by one): above 0, serving and ingest win a contended core and training "
          "runs in what is left. With train.threads above 1, OpenBLAS's own threads keep the "
          "process's niceness."),
  CFG_DOUBLE("train", "duty", train.duty, "0.8", 0.05, 1, true,
             "Share of one core the trainer may use during a round; it sleeps the rest, which "
             "keeps serving and ingest responsive."),
  CFG_INT("train", "bootstrap_min_users", train.bootstrap_min_users, "1000", 10, 100000000,
          false, "Users with at least 3 events needed before an anchor is pretrained."),
  CFG_INT("train", "bootstrap_min_events", train.bootstrap_min_events, "10000", 100,
          CFG_2_POW_53, false, "Stored events needed before an anchor is pretrained."),
  CFG_INT("train", "bootstrap_epochs", train.bootstrap_epochs, "10", 1, 1000, false,
          "Epochs of the anchor's pretraining (the best validation epoch is kept)."),
  CFG_INT("train", "seed", train.seed, "42", 0, CFG_2_POW_53, false,
          "Seed of initialisation, sampling and dropout."),

  CFG_STRING("api", "listen", api.listen, "0.0.0.0", false,
             "Address of the HTTP API (an IPv4 or IPv6 address).", NULL),
  CFG_INT("api", "port", api.port, "8080", 0, 65535, false,
          "Port of the HTTP API; 0 picks a free one (logged)."),
  CFG_STRING("api", "admin_listen", api.admin_listen, "127.0.0.1", false,
             "Address of the admin API (rollback, train-now, re-anchor, pause, resume).", NULL),
  CFG_INT("api", "admin_port", api.admin_port, "8081", 0, 65535, false,
          "Port of the admin API; 0 picks a free one (logged)."),
  CFG_STRING("api", "admin_token_file", api.admin_token_file, "", false,
             "File holding the admin bearer token and nothing else (16 to 511 visible ASCII "
             "bytes, one final newline allowed), owned by flamed's user or root, writable by "
             "no one else; empty: the admin API is off.",
             NULL),
  CFG_INT("api", "max_conns", api.max_conns, "1024", 1, 1000000, false,
          "Open connections per listener; one more gets a 503 and is closed."),
  CFG_INT("api", "max_conns_per_peer", api.max_conns_per_peer, "64", 0, 1000000, false,
          "Open connections per listener from one IP address (loopback included); one more "
          "gets a 503 and is closed; 0: no such cap (behind a proxy, every client shares one "
          "address)."),
  CFG_INT("api", "max_head_bytes", api.max_head_bytes, "8192", 256, 1048576, false,
          "Longest request line plus headers; longer requests get a 431."),
  CFG_INT("api", "max_body_bytes", api.max_body_bytes, "65536", 0, 16777216, false,
          "Longest request body; longer requests get a 413."),
  CFG_INT("api", "max_pipeline", api.max_pipeline, "32", 1, 100000, false,
          "Responses queued unsent on one connection before the daemon stops reading it."),
  CFG_INT("api", "idle_timeout_ms", api.idle_timeout_ms, "60000", 10, 86400000, false,
          "An idle keep-alive connection is closed after this many ms."),
  CFG_INT("api", "request_timeout_ms", api.request_timeout_ms, "10000", 10, 86400000, false,
          "A request must arrive in full within this many ms of its first byte."),
  CFG_INT("api", "header_timeout_ms", api.header_timeout_ms, "5000", 0, 86400000, false,
          "A request head (request line and headers) must arrive within this many ms: of the "
          "connection's accept for its first request (a silent connection is closed then), of "
          "its first byte for later ones; 0: only request_timeout_ms."),
  CFG_INT("api", "max_k", api.max_k, "1000", 1, 100000, false,
          "Largest number of recommendations a request may ask for."),
  CFG_INT("api", "online_eval_per_s", api.online_eval_per_s, "200", 0, 100000, false,
          "Incoming events per second ranked by the serving model before they are applied, for "
          "the online (prequential) HR@10 and NDCG@10 metrics; 0: none. They are ranked on a "
          "thread of their own at train.nice, behind serving (at most 256 wait; more are "
          "skipped)."),
  CFG_DOUBLE("api", "online_eval_share", api.online_eval_share, "1", 0.0001, 1, false,
             "Share of the users whose events are ranked for the online metrics, picked by a "
             "hash of their ids (the same users on every daemon); 1: any user, spread over "
             "each batch. api.online_eval_per_s still caps the rate."),
  CFG_BOOL("api", "online_eval_baseline", api.online_eval_baseline, "true", false,
           "Also rank those events with the anchor's weights (what would serve without "
           "fine-tuning), for the flamed_online_baseline_* metrics: whether training pays. "
           "Both then cover the same events, from the first anchor on. Costs a copy of the "
           "anchor in memory and a second ranking per event."),
  CFG_INT("api", "workers", api.workers, "2", 0, 128, false,
          "Threads that score recommendations for large catalogues (libuv's pool), so that a "
          "long scan never holds the loop; 0: always score on the loop."),
  CFG_INT("api", "offload_items", api.offload_items, "100000", 1, 1000000000, false,
          "Catalogues of at least this many items are scored on the worker threads; smaller "
          "ones on the loop, where a scan costs less than the hand-off."),

  CFG_ENUM("log", "level", log.level, "info", "debug|info|warn|error", true,
           "Least severe messages written to the log: debug adds per-batch detail, warn and error "
           "keep only problems."),
  CFG_INT("log", "stats_interval_s", log.stats_interval_s, "10", 0, 86400, true,
          "Seconds between periodic stats lines in the log; 0: no periodic stats line."),
};
/* clang-format on */

#define CFG_N (sizeof cfg_table / sizeof cfg_table[0])

size_t config_table(const config_setting **out) {
  *out = cfg_table;
  return CFG_N;
}

static void *cfg_field(config *c, const config_setting *s) { return (char *)c + s->offset; }
static const void *cfg_cfield(const config *c, const config_setting *s) {
  return (const char *)c + s->offset;
}

static const config_setting *cfg_find(const char *section, size_t seclen, const char *key) {
  for (size_t i = 0; i < CFG_N; i++)
    if (strlen(cfg_table[i].section) == seclen &&
        strncmp(cfg_table[i].section, section, seclen) == 0 && strcmp(cfg_table[i].key, key) == 0)
      return &cfg_table[i];
  return NULL;
}

static bool cfg_known_section(const char *section, size_t seclen) {
  if (seclen == 5 && strncmp(section, "kafka", 5) == 0) return true;
  for (size_t i = 0; i < CFG_N; i++)
    if (strlen(cfg_table[i].section) == seclen &&
        strncmp(cfg_table[i].section, section, seclen) == 0)
      return true;
  return false;
}

/* ---- did you mean ---- */

/* Levenshtein distance, letter case ignored; names longer than 63 bytes are never close. */
static size_t cfg_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return SIZE_MAX;
  size_t row[64];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
      size_t best = diag + cost;
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

static bool cfg_close(size_t d, const char *typed) { return d <= 2 || d * 4 <= strlen(typed); }

/* The setting nearest to section.key: the same key in another section, or a close key. */
static const config_setting *cfg_suggest(const char *section, size_t seclen, const char *key) {
  char full[160];
  snprintf(full, sizeof full, "%.*s.%s", (int)seclen, section, key);
  const config_setting *best = NULL;
  size_t bestd = SIZE_MAX;
  for (size_t i = 0; i < CFG_N; i++) {
    char cand[160];
    snprintf(cand, sizeof cand, "%s.%s", cfg_table[i].section, cfg_table[i].key);
    size_t d = strcmp(cfg_table[i].key, key) == 0 ? 0 : cfg_distance(full, cand);
    if (d < bestd) bestd = d, best = &cfg_table[i];
  }
  return best && cfg_close(bestd, full) ? best : NULL;
}

static const char *cfg_suggest_section(const char *section, size_t seclen) {
  static const char *const sections[] = {"stream", "state", "model", "train",
                                         "api",    "log",   "kafka"};
  char typed[64];
  snprintf(typed, sizeof typed, "%.*s", (int)seclen, section);
  const char *best = NULL;
  size_t bestd = SIZE_MAX;
  for (size_t i = 0; i < 4; i++) {
    size_t d = cfg_distance(typed, sections[i]);
    if (d < bestd) bestd = d, best = sections[i];
  }
  return cfg_close(bestd, typed) ? best : NULL;
}

/* ---- setting values ---- */

static int cfg_set_kafka(config *c, const char *key, const char *value, const char *origin,
                         int line, char *err, size_t errlen) {
  char msg[256], shown[80];
  bool ok = *key != 0;
  for (const char *p = key; ok && *p; p++)
    ok = isalnum((unsigned char)*p) || *p == '.' || *p == '_' || *p == '-';
  if (!ok) {
    cfg_err(err, errlen, origin, line,
            "[kafka] %s is not a librdkafka property name (letters, digits, '.', '_', '-')",
            cfg_show(key, shown, sizeof shown));
    return FL_EFORMAT;
  }
  if (strcmp(key, "group.id") == 0) {
    cfg_err(err, errlen, origin, line,
            "kafka.group.id: flamed sets the consumer group from stream.group; set that instead");
    return FL_EFORMAT;
  }
  int rc = cfg_check_text(value, strlen(key), msg, sizeof msg);
  if (rc) {
    cfg_err(err, errlen, origin, line, "kafka.%s: %s", key, msg);
    return rc;
  }
  config_kv *kv = NULL;
  for (size_t i = 0; i < c->nkafka && !kv; i++)
    if (strcmp(c->kafka[i].key, key) == 0) kv = &c->kafka[i];
  if (kv) {
    free(kv->value);
    free(kv->origin);
  } else {
    c->kafka = xrealloc(c->kafka, (c->nkafka + 1) * sizeof *c->kafka);
    kv = &c->kafka[c->nkafka++];
    kv->key = cfg_strdup(key);
  }
  kv->value = cfg_strdup(value);
  kv->origin = cfg_strdup(origin);
  kv->line = line;
  return 0;
}

int config_set(config *c, const char *name, const char *value, const char *origin, int line,
               char *err, size_t errlen) {
  if (!origin) origin = "command line";
  char plain[80]; /* name as shown in messages */
  cfg_show_text(name, false, plain, sizeof plain);
  const char *dot = strchr(name, '.');
  if (!dot) {
    cfg_err(err, errlen, origin, line,
            "unknown setting %s (settings are named section.key, e.g. stream.topic)", plain);
    return FL_EFORMAT;
  }
  const char *section = name, *key = dot + 1;
  size_t seclen = (size_t)(dot - name);
  bool in_file = line > 0; /* names are spelled as in a file ([stream] topic) or dotted */
  if (!value) {
    cfg_err(err, errlen, origin, line, "%s: needs a value", plain);
    return FL_EFORMAT;
  }
  if (seclen == 5 && strncmp(section, "kafka", 5) == 0)
    return cfg_set_kafka(c, key, value, origin, line, err, errlen);

  const config_setting *s = cfg_find(section, seclen, key);
  if (!s) {
    if (!cfg_known_section(section, seclen)) {
      const char *near = cfg_suggest_section(section, seclen);
      char hint[64] = "";
      if (near) snprintf(hint, sizeof hint, " (did you mean [%s]?)", near);
      cfg_err(err, errlen, origin, line,
              "unknown section [%.*s]%s: sections are [stream], [state], [log] and [kafka]",
              (int)(seclen < 60 ? seclen : 60), plain, hint);
      return FL_EFORMAT;
    }
    const config_setting *near = cfg_suggest(section, seclen, key);
    char hint[128] = "";
    if (near && in_file && strlen(near->section) == seclen &&
        strncmp(near->section, section, seclen) == 0)
      snprintf(hint, sizeof hint, " (did you mean %s?)", near->key);
    else if (near && in_file)
      snprintf(hint, sizeof hint, " (did you mean [%s] %s?)", near->section, near->key);
    else if (near)
      snprintf(hint, sizeof hint, " (did you mean %s.%s?)", near->section, near->key);
    if (in_file) /* plain is "section.key": print it as "[section] key" */
      cfg_err(err, errlen, origin, line, "unknown setting [%.*s] %s%s", (int)seclen, plain,
              plain + seclen + 1, hint);
    else
      cfg_err(err, errlen, origin, line, "unknown setting %s%s", plain, hint);
    return FL_EFORMAT;
  }

  char msg[256], shown[80], full[160];
  snprintf(full, sizeof full, "%s.%s", s->section, s->key);
  int rc = 0;
  void *field = cfg_field(c, s);
  switch (s->type) {
  case CONFIG_INT: {
    int64_t x = 0;
    rc = cfg_parse_int(value, &x, msg, sizeof msg);
    if (rc == FL_ERANGE) /* beyond int64: name the setting's own limit instead */
      snprintf(msg, sizeof msg, "%s is %s the %s %" PRId64, cfg_show(value, shown, sizeof shown),
               value[0] == '-' ? "below" : "above", value[0] == '-' ? "minimum" : "maximum",
               value[0] == '-' ? s->min : s->max);
    if (rc == 0 && x < s->min) {
      snprintf(msg, sizeof msg, "%" PRId64 " is below the minimum %" PRId64, x, s->min);
      rc = FL_ERANGE;
    } else if (rc == 0 && x > s->max) {
      snprintf(msg, sizeof msg, "%" PRId64 " is above the maximum %" PRId64, x, s->max);
      rc = FL_ERANGE;
    }
    if (rc == 0) *(int64_t *)field = x;
    break;
  }
  case CONFIG_DOUBLE: {
    double x = 0;
    rc = cfg_parse_double(value, &x, msg, sizeof msg);
    if (rc == FL_ERANGE)
      snprintf(msg, sizeof msg, "%s is %s the %s %g", cfg_show(value, shown, sizeof shown),
               value[0] == '-' ? "below" : "above", value[0] == '-' ? "minimum" : "maximum",
               value[0] == '-' ? s->dmin : s->dmax);
    if (rc == 0 && (x < s->dmin || x > s->dmax)) {
      snprintf(msg, sizeof msg, "%s is %s the %s %g", value, x < s->dmin ? "below" : "above",
               x < s->dmin ? "minimum" : "maximum", x < s->dmin ? s->dmin : s->dmax);
      rc = FL_ERANGE;
    }
    if (rc == 0) *(double *)field = x;
    break;
  }
  case CONFIG_BOOL: {
    bool x = false;
    rc = cfg_parse_bool(value, &x, msg, sizeof msg);
    if (rc == 0) *(bool *)field = x;
    break;
  }
  case CONFIG_ENUM: {
    int i = cfg_choice_index(s->choices, value);
    if (i < 0) {
      snprintf(msg, sizeof msg, "%s is not one of %s", cfg_show(value, shown, sizeof shown),
               s->choices);
      rc = FL_EFORMAT;
    } else {
      *(int *)field = i;
    }
    break;
  }
  case CONFIG_STRING:
    rc = cfg_check_text(value, strlen(s->key), msg, sizeof msg);
    if (rc == 0 && s->check) rc = s->check(c, value, msg, sizeof msg);
    if (rc == 0) {
      free(*(char **)field);
      *(char **)field = cfg_strdup(value);
    }
    break;
  }
  if (rc) cfg_err(err, errlen, origin, line, "%s: %s", full, msg);
  return rc;
}

/* ---- init, free, copy ---- */

void config_init(config *c) {
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < CFG_N; i++) {
    char err[512];
    char name[160];
    snprintf(name, sizeof name, "%s.%s", cfg_table[i].section, cfg_table[i].key);
    if (config_set(c, name, cfg_table[i].def, "default", 0, err, sizeof err) != 0) {
      /* A bad default is a programmer error in the table above. */
      fprintf(stderr, "fatal: config table: %s\n", err);
      abort();
    }
  }
}

void config_free(config *c) {
  for (size_t i = 0; i < CFG_N; i++)
    if (cfg_table[i].type == CONFIG_STRING) free(*(char **)cfg_field(c, &cfg_table[i]));
  cfg_free_types(c->stream.types, c->stream.ntypes);
  for (size_t i = 0; i < c->nkafka; i++) {
    free(c->kafka[i].key);
    free(c->kafka[i].value);
    free(c->kafka[i].origin);
  }
  free(c->kafka);
  memset(c, 0, sizeof *c);
}

/* Deep copy of src into dst (dst's contents are overwritten, not freed). */
static void cfg_copy(config *dst, const config *src) {
  *dst = *src;
  for (size_t i = 0; i < CFG_N; i++)
    if (cfg_table[i].type == CONFIG_STRING) {
      char **p = cfg_field(dst, &cfg_table[i]);
      *p = cfg_strdup(*p);
    }
  dst->stream.types =
      src->stream.ntypes ? xcalloc(src->stream.ntypes, sizeof *dst->stream.types) : NULL;
  for (size_t i = 0; i < src->stream.ntypes; i++) {
    dst->stream.types[i].name = cfg_strdup(src->stream.types[i].name);
    dst->stream.types[i].weight = src->stream.types[i].weight;
  }
  dst->kafka = src->nkafka ? xcalloc(src->nkafka, sizeof *dst->kafka) : NULL;
  for (size_t i = 0; i < src->nkafka; i++) {
    dst->kafka[i].key = cfg_strdup(src->kafka[i].key);
    dst->kafka[i].value = cfg_strdup(src->kafka[i].value);
    dst->kafka[i].origin = cfg_strdup(src->kafka[i].origin);
    dst->kafka[i].line = src->kafka[i].line;
  }
}

/* ---- files ---- */

typedef struct {
  config *c;        /* the copy being loaded */
  const char *path; /* for messages and origins */
  FILE *f;          /* the file */
  int line;         /* lines handed to inih so far: the number of the current line */
  int err_line;     /* line of the first problem found by the reader or handler; 0: none */
  int rc;           /* its code */
  char msg[512];    /* its message, prefixed with path:line */
} cfg_load;

static void cfg_load_fail(cfg_load *ld, int line, int rc, const char *msg) {
  if (ld->err_line && ld->err_line <= line) return; /* keep the first problem in file order */
  ld->err_line = line;
  ld->rc = rc;
  snprintf(ld->msg, sizeof ld->msg, "%s", msg);
}

/* inih's fgets-style reader: one line per call, counted; refuses lines inih would misread. */
static char *cfg_reader(char *str, int num, void *stream) {
  cfg_load *ld = stream;
  if (ld->err_line) return NULL; /* only the first problem is reported: stop there */
  errno = 0;
  if (!fgets(str, num, ld->f)) {
    if (ferror(ld->f)) { /* e.g. EISDIR: fopen opens a directory, reading it fails */
      int e = errno ? errno : EIO;
      char msg[512];
      cfg_err(msg, sizeof msg, NULL, 0, "cannot read %s: %s", ld->path, strerror(e));
      cfg_load_fail(ld, ld->line + 1, -e, msg);
    }
    return NULL;
  }
  ld->line++;
  size_t len = strlen(str);
  const char *p = str;
  while (cfg_blank(*p)) p++;
  bool comment = *p == ';' || *p == '#';
  if (len + 1 < (size_t)num && !feof(ld->f) && (len == 0 || str[len - 1] != '\n')) {
    /* fgets stopped early without a line end or the end of the file: a NUL byte. */
    char msg[512];
    cfg_err(msg, sizeof msg, ld->path, ld->line, "line contains a NUL byte: not a text file?");
    cfg_load_fail(ld, ld->line, FL_EFORMAT, msg);
    return NULL;
  }
  if (len > 0 && str[len - 1] != '\n' && !feof(ld->f)) {
    int next = getc(ld->f);
    if (next != EOF && next != '\n') {
      if (!comment) {
        char msg[512];
        cfg_err(msg, sizeof msg, ld->path, ld->line, "line longer than %d bytes", CONFIG_LINE_MAX);
        cfg_load_fail(ld, ld->line, FL_ERANGE, msg);
        return NULL;
      }
      /* A long comment is harmless: skip the rest of it. */
      while (next != EOF && next != '\n') next = getc(ld->f);
    }
  }
  if (cfg_blank(str[0]) && !comment && *p != '\n' && *p != '\r' && *p != 0) {
    char msg[512];
    cfg_err(msg, sizeof msg, ld->path, ld->line,
            "indented line: start keys and [sections] in the first column (an indented line "
            "would continue the value above it; multi-line values are not supported)");
    cfg_load_fail(ld, ld->line, FL_EFORMAT, msg);
    return NULL;
  }
  return str;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value) {
  cfg_load *ld = user;
  char msg[512], plain[80];
  if (!*section) {
    cfg_err(msg, sizeof msg, ld->path, ld->line,
            "%s is outside any section: settings go under [stream], [state], [log] or [kafka]",
            *name ? cfg_show_text(name, false, plain, sizeof plain) : "key");
    cfg_load_fail(ld, ld->line, FL_EFORMAT, msg);
    return 1; /* our problem, recorded: inih's return value then only reports syntax errors */
  }
  if (!*name) {
    cfg_err(msg, sizeof msg, ld->path, ld->line, "no key before '='");
    cfg_load_fail(ld, ld->line, FL_EFORMAT, msg);
    return 1;
  }
  char full[CONFIG_LINE_MAX + 64];
  snprintf(full, sizeof full, "%s.%s", section, name);
  int rc = config_set(ld->c, full, value, ld->path, ld->line, msg, sizeof msg);
  if (rc) cfg_load_fail(ld, ld->line, rc, msg);
  return 1;
}

int config_load_file(config *c, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    int e = errno;
    cfg_err(err, errlen, NULL, 0, "cannot read %s: %s", path, strerror(e));
    return -e;
  }
  config tmp;
  cfg_copy(&tmp, c);
  cfg_load ld = {.c = &tmp, .path = path, .f = f};
  int syntax_line = ini_parse_stream(cfg_reader, &ld, cfg_handler, &ld);
  if (syntax_line == -2) { /* inih could not allocate its line buffer */
    fprintf(stderr, "fatal: out of memory parsing %s\n", path);
    abort();
  }
  if (syntax_line > 0 && (!ld.err_line || syntax_line < ld.err_line)) {
    /* Read the offending line again to show it. */
    char text[INI_MAX_LINE] = "", shown[80];
    rewind(f);
    for (int i = 0; i < syntax_line && fgets(text, sizeof text, f); i++) {
      if (i + 1 < syntax_line && !strchr(text, '\n')) i--; /* a long comment's rest */
    }
    text[strcspn(text, "\r\n")] = 0;
    const char *t = text;
    while (cfg_blank(*t)) t++;
    char msg[512];
    cfg_err(msg, sizeof msg, path, syntax_line, "syntax error in %s: expected %s",
            cfg_show(t, shown, sizeof shown),
            *t == '[' ? "a section header \"[name]\"" : "\"key = value\", [section] or a comment");
    cfg_load_fail(&ld, syntax_line, FL_EFORMAT, msg);
  }
  fclose(f);
  if (ld.err_line) {
    config_free(&tmp);
    if (err && errlen) snprintf(err, errlen, "%s", ld.msg);
    return ld.rc;
  }
  config_free(c);
  *c = tmp;
  return 0;
}

/* ---- command line ---- */

int config_apply_arg(config *c, const char *arg, char *err, size_t errlen) {
  if (strncmp(arg, "--", 2) != 0) return 1;
  const char *name = arg + 2, *eq = strchr(name, '=');
  size_t namelen = eq ? (size_t)(eq - name) : strlen(name);
  const char *dot = memchr(name, '.', namelen);
  if (!dot) return 1;
  if (!eq) {
    cfg_err(err, errlen, "command line", 0, "%s needs a value: write %s=VALUE", arg, arg);
    return FL_EFORMAT;
  }
  char full[CONFIG_LINE_MAX + 64];
  if (namelen >= sizeof full) {
    cfg_err(err, errlen, "command line", 0, "setting name too long: %.40s...", name);
    return FL_EFORMAT;
  }
  memcpy(full, name, namelen);
  full[namelen] = 0;
  return config_set(c, full, eq + 1, "command line", 0, err, errlen);
}

/* ---- validation ---- */

int config_validate(const config *c, char *err, size_t errlen) {
  if (!*c->stream.topic) {
    cfg_err(err, errlen, NULL, 0, "stream.topic is empty: set the Kafka topic of events");
    return FL_EMISSING;
  }
  if (!*c->stream.group) {
    cfg_err(err, errlen, NULL, 0, "stream.group is empty: set the Kafka consumer group id");
    return FL_EMISSING;
  }
  if (strcmp(c->stream.dead_letter_topic, c->stream.topic) == 0) {
    cfg_err(err, errlen, NULL, 0,
            "stream.dead_letter_topic is the events topic %s: rejected events would be read "
            "again; name another topic, or leave it empty",
            c->stream.topic);
    return FL_ERANGE;
  }
  if (!*c->state.dir) {
    cfg_err(err, errlen, NULL, 0, "state.dir is empty: set the RocksDB state directory");
    return FL_EMISSING;
  }
  if (c->state.sync && !c->state.wal) {
    cfg_err(err, errlen, NULL, 0,
            "state.sync is on but state.wal is off: there is no write-ahead log to fsync; turn "
            "state.wal on, or state.sync off");
    return FL_ERANGE;
  }
  if (c->model.dim % c->model.heads != 0) {
    cfg_err(err, errlen, NULL, 0,
            "model.heads (%" PRId64 ") does not divide model.dim (%" PRId64 ")", c->model.heads,
            c->model.dim);
    return FL_ERANGE;
  }
  bool any = c->stream.default_type_weight > 0;
  for (size_t i = 0; i < c->stream.ntypes && !any; i++) any = c->stream.types[i].weight > 0;
  if (!any) {
    cfg_err(err, errlen, NULL, 0,
            "stream.default_type_weight is 0 and every type in stream.type_weights weighs 0: "
            "every event would be dropped");
    return FL_ERANGE;
  }
  return 0;
}

/* ---- dump ---- */

/* The shortest text strtod reads back as exactly x, without an exponent when one is not
 * needed ("0.1", "1000", not "0.10000000000000001" or "1e+03"). */
static void cfg_format_double(double x, char *buf, size_t n) {
  for (int pass = 0; pass < 2; pass++)
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(buf, n, "%.*g", prec, x);
      if ((pass == 1 || !strchr(buf, 'e')) && strtod(buf, NULL) == x) return;
    }
  snprintf(buf, n, "%.17g", x);
}

/* A setting's value as text, in the value syntax. */
static const char *cfg_value_text(const config *c, const config_setting *s, char *buf, size_t n) {
  const void *field = cfg_cfield(c, s);
  switch (s->type) {
  case CONFIG_INT:
    snprintf(buf, n, "%" PRId64, *(const int64_t *)field);
    break;
  case CONFIG_DOUBLE:
    cfg_format_double(*(const double *)field, buf, n);
    break;
  case CONFIG_BOOL:
    snprintf(buf, n, "%s", *(const bool *)field ? "true" : "false");
    break;
  case CONFIG_ENUM:
    cfg_choice_name(s->choices, *(const int *)field, buf, n);
    break;
  case CONFIG_STRING:
    return *(char *const *)field;
  }
  return buf;
}

/* Writes text as "# " comment lines of at most 100 columns, broken at blanks. */
static void cfg_dump_comment(FILE *f, const char *text) {
  const size_t width = 98;
  while (*text) {
    size_t len = strlen(text), cut = len;
    if (len > width) {
      cut = width;
      while (cut > 0 && text[cut] != ' ') cut--;
      if (cut == 0) cut = width;
    }
    fprintf(f, "# %.*s\n", (int)cut, text);
    text += cut;
    while (*text == ' ') text++;
  }
}

void config_dump(const config *c, FILE *f) {
  fputs("# flamed configuration: every setting with its effective value.\n"
        "# Syntax: [section] headers, then \"key = value\" lines starting in the first column;\n"
        "# comments start with '#' or ';' at the beginning of a line, or with ';' after a blank.\n"
        "# Values are not quoted. Any setting can be overridden on the command line as\n"
        "# --section.key=value.\n",
        f);
  const char *section = NULL;
  for (size_t i = 0; i < CFG_N; i++) {
    const config_setting *s = &cfg_table[i];
    if (!section || strcmp(section, s->section) != 0) {
      section = s->section;
      fprintf(f, "\n[%s]\n", section);
    } else {
      fputc('\n', f);
    }
    cfg_dump_comment(f, s->help);
    char line[256];
    int n = snprintf(line, sizeof line, "default: %s", *s->def ? s->def : "(empty)");
    switch (s->type) {
    case CONFIG_INT:
      n += snprintf(line + n, sizeof line - (size_t)n, ", range: [%" PRId64 ", %" PRId64 "]",
                    s->min, s->max);
      break;
    case CONFIG_DOUBLE:
      n += snprintf(line + n, sizeof line - (size_t)n, ", range: [%g, %g]", s->dmin, s->dmax);
      break;
    case CONFIG_BOOL:
      n += snprintf(line + n, sizeof line - (size_t)n, ", true or false");
      break;
    case CONFIG_ENUM:
      n += snprintf(line + n, sizeof line - (size_t)n, ", one of: %s", s->choices);
      break;
    case CONFIG_STRING:
      break;
    }
    if (s->reloadable) snprintf(line + n, sizeof line - (size_t)n, ", reloadable");
    fprintf(f, "# %s\n", line);
    char buf[64];
    const char *v = cfg_value_text(c, s, buf, sizeof buf);
    fprintf(f, "%s =%s%s\n", s->key, *v ? " " : "", v);
  }
  fputs("\n[kafka]\n", f);
  cfg_dump_comment(f, "Any librdkafka property may be set here; each entry is handed verbatim to "
                      "rd_kafka_conf_set (see librdkafka's CONFIGURATION.md). The consumer group "
                      "is stream.group, not group.id.");
  fputs("# e.g. bootstrap.servers = kafka1:9092,kafka2:9092\n", f);
  for (size_t i = 0; i < c->nkafka; i++) {
    const config_kv *kv = &c->kafka[i];
    if (kv->line > 0)
      fprintf(f, "# set at %s:%d\n", kv->origin, kv->line);
    else
      fprintf(f, "# set by %s\n", kv->origin);
    fprintf(f, "%s =%s%s\n", kv->key, *kv->value ? " " : "", kv->value);
  }
}

/* ---- reload ---- */

static bool cfg_equal(const config *a, const config *b, const config_setting *s) {
  const void *x = cfg_cfield(a, s), *y = cfg_cfield(b, s);
  switch (s->type) {
  case CONFIG_INT:
    return *(const int64_t *)x == *(const int64_t *)y;
  case CONFIG_DOUBLE:
    return *(const double *)x == *(const double *)y;
  case CONFIG_BOOL:
    return *(const bool *)x == *(const bool *)y;
  case CONFIG_ENUM:
    return *(const int *)x == *(const int *)y;
  case CONFIG_STRING:
    return strcmp(*(char *const *)x, *(char *const *)y) == 0;
  }
  return false;
}

static const char *cfg_kafka_get(const config *c, const char *key) {
  for (size_t i = 0; i < c->nkafka; i++)
    if (strcmp(c->kafka[i].key, key) == 0) return c->kafka[i].value;
  return NULL;
}

/* Appends ", name" (or "name" first) to names. */
static void cfg_list_add(char *names, size_t len, size_t count, const char *fmt, const char *a,
                         const char *b) {
  if (!names || len == 0) return;
  size_t used = strlen(names);
  if (used >= len - 1) return;
  int n = count ? snprintf(names + used, len - used, ", ") : 0;
  if (n < 0 || (size_t)n >= len - used) return;
  snprintf(names + used + n, len - used - (size_t)n, fmt, a, b);
}

size_t config_needs_restart(const config *running, const config *next, char *names,
                            size_t nameslen) {
  size_t count = 0;
  if (names && nameslen) names[0] = 0;
  for (size_t i = 0; i < CFG_N; i++) {
    const config_setting *s = &cfg_table[i];
    if (s->reloadable || cfg_equal(running, next, s)) continue;
    cfg_list_add(names, nameslen, count++, "%s.%s", s->section, s->key);
  }
  /* Every property set on either side whose value differs (or is set on one side only). */
  for (int side = 0; side < 2; side++) {
    const config *from = side ? next : running, *other = side ? running : next;
    for (size_t i = 0; i < from->nkafka; i++) {
      const char *v = cfg_kafka_get(other, from->kafka[i].key);
      if (v && (side || strcmp(v, from->kafka[i].value) == 0)) continue;
      cfg_list_add(names, nameslen, count++, "%s%s", "kafka.", from->kafka[i].key);
    }
  }
  return count;
}
