/* tests/config/test_config.c: the settings table, value parsing, INI files, command-line
 * overrides, the [kafka] passthrough, stream.type_weights, validation, the dump round trip and
 * the reload check of config/.
 *
 * File tests run in a fresh temp dir each and remove it. Every failing call is also checked to
 * leave the config unchanged, and the whole suite runs under ASan+UBSan in CI, so a leak in
 * config_free or on an error path fails it. */
#define _GNU_SOURCE
#include "testutil.h"

#include "common/common.h"
#include "config/config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static char err[1024];

static void set_ok(config *c, const char *name, const char *value) {
  err[0] = 0;
  int rc = config_set(c, name, value, "test", 0, err, sizeof err);
  if (rc != 0) fail_msg("config_set(%s, \"%s\") = %d: %s", name, value, rc, err);
}

/* The C value of a setting, as text, read through the table's offset (independently of
 * config_dump), so that two configs can be compared field by field. */
static void field_text(const config *c, const config_setting *s, char *buf, size_t n) {
  const char *p = (const char *)c + s->offset;
  switch (s->type) {
  case CONFIG_INT:
    snprintf(buf, n, "%" PRId64, *(const int64_t *)p);
    break;
  case CONFIG_DOUBLE:
    snprintf(buf, n, "%.17g", *(const double *)p);
    break;
  case CONFIG_BOOL:
    snprintf(buf, n, "%d", *(const bool *)p);
    break;
  case CONFIG_ENUM:
    snprintf(buf, n, "%d", *(const int *)p);
    break;
  case CONFIG_STRING:
    snprintf(buf, n, "%s", *(char *const *)p);
    break;
  }
}

/* Every table field, the parsed types and the kafka entries (key, value) are equal. */
static void assert_config_equal(const config *a, const config *b) {
  const config_setting *t;
  size_t n = config_table(&t);
  for (size_t i = 0; i < n; i++) {
    char x[512], y[512];
    field_text(a, &t[i], x, sizeof x);
    field_text(b, &t[i], y, sizeof y);
    if (strcmp(x, y) != 0) fail_msg("%s.%s: \"%s\" != \"%s\"", t[i].section, t[i].key, x, y);
  }
  assert_int_equal(a->stream.ntypes, b->stream.ntypes);
  for (size_t i = 0; i < a->stream.ntypes; i++) {
    assert_string_equal(a->stream.types[i].name, b->stream.types[i].name);
    assert_true(a->stream.types[i].weight == b->stream.types[i].weight);
  }
  assert_int_equal(a->nkafka, b->nkafka);
  for (size_t i = 0; i < a->nkafka; i++) {
    assert_string_equal(a->kafka[i].key, b->kafka[i].key);
    assert_string_equal(a->kafka[i].value, b->kafka[i].value);
  }
}

/* A copy of c built through config_set and raw field copies, independent of config_dump. */
static void snapshot(config *snap, const config *c) {
  config_init(snap);
  const config_setting *t;
  size_t n = config_table(&t);
  for (size_t i = 0; i < n; i++) {
    const char *from = (const char *)c + t[i].offset;
    char *to = (char *)snap + t[i].offset;
    char full[128];
    snprintf(full, sizeof full, "%s.%s", t[i].section, t[i].key);
    switch (t[i].type) {
    case CONFIG_INT:
      memcpy(to, from, sizeof(int64_t));
      break;
    case CONFIG_DOUBLE:
      memcpy(to, from, sizeof(double));
      break;
    case CONFIG_BOOL:
      memcpy(to, from, sizeof(bool));
      break;
    case CONFIG_ENUM:
      memcpy(to, from, sizeof(int));
      break;
    case CONFIG_STRING:
      set_ok(snap, full, *(char *const *)from);
      break;
    }
  }
  for (size_t i = 0; i < c->nkafka; i++) {
    char full[256];
    snprintf(full, sizeof full, "kafka.%s", c->kafka[i].key);
    set_ok(snap, full, c->kafka[i].value);
  }
}

/* config_set fails with rc and a one-line message containing want (may be NULL), and leaves c
 * as it was. */
static void set_fails(config *c, const char *name, const char *value, int rc, const char *want) {
  config snap;
  snapshot(&snap, c);
  err[0] = 0;
  int got = config_set(c, name, value, "test", 0, err, sizeof err);
  if (got != rc) fail_msg("config_set(%s, \"%s\") = %d, want %d (%s)", name, value, got, rc, err);
  assert_true(strlen(err) > 0);
  assert_null(strchr(err, '\n'));
  if (want && !strstr(err, want)) fail_msg("message \"%s\" lacks \"%s\"", err, want);
  assert_config_equal(c, &snap);
  config_free(&snap);
}

/* Writes text to the fixture's file and loads it into a fresh config; returns the code, with
 * the message in err, and checks that a failed load left the defaults untouched. */
static int load_text(tu_file_fixture *fx, config *c, const char *text) {
  tu_write_file(fx->path, text);
  config_init(c);
  err[0] = 0;
  int rc = config_load_file(c, fx->path, err, sizeof err);
  if (rc != 0) {
    config def;
    config_init(&def);
    assert_config_equal(c, &def);
    config_free(&def);
    assert_true(strlen(err) > 0);
    assert_null(strchr(err, '\n'));
  }
  return rc;
}

/* Loads text that must fail with rc at line; the message must start with "path:line: " and
 * contain want. */
static void load_fails(tu_file_fixture *fx, const char *text, int rc, int line, const char *want) {
  config c;
  int got = load_text(fx, &c, text);
  config_free(&c);
  if (got != rc) fail_msg("load = %d, want %d (%s)", got, rc, err);
  char prefix[600];
  snprintf(prefix, sizeof prefix, "%s:%d: ", fx->path, line);
  if (strncmp(err, prefix, strlen(prefix)) != 0) fail_msg("\"%s\" is not at \"%s\"", err, prefix);
  if (want && !strstr(err, want)) fail_msg("message \"%s\" lacks \"%s\"", err, want);
}

/* ---- the table and the defaults ---- */

static void test_table_invariants(void **state) {
  (void)state;
  const config_setting *t;
  size_t n = config_table(&t);
  assert_int_equal(n, 83);
  for (size_t i = 0; i < n; i++) {
    assert_non_null(t[i].section);
    assert_non_null(t[i].key);
    assert_non_null(t[i].def);
    assert_non_null(t[i].help);
    assert_true(strlen(t[i].help) > 10);
    assert_null(strchr(t[i].help, '\n'));
    assert_true(t[i].offset < sizeof(config));
    if (t[i].type == CONFIG_INT) assert_true(t[i].min <= t[i].max);
    if (t[i].type == CONFIG_DOUBLE) assert_true(t[i].dmin <= t[i].dmax);
    if (t[i].type == CONFIG_ENUM) assert_non_null(t[i].choices);
    /* Reloadable: log.*, and the training rounds' settings, which the trainer reads afresh at
     * each round (not its thread count, niceness, seed, replay pool or the bootstrap, fixed at
     * start). */
    int train_round = !strcmp(t[i].section, "train") && strcmp(t[i].key, "threads") &&
                      strcmp(t[i].key, "nice") && strcmp(t[i].key, "seed") &&
                      strcmp(t[i].key, "replay_pool") && strncmp(t[i].key, "bootstrap_", 10);
    assert_int_equal(t[i].reloadable, !strcmp(t[i].section, "log") || train_round);
    for (size_t j = 0; j < i; j++) {
      /* Unique names, unique fields, sections contiguous. */
      assert_false(strcmp(t[i].section, t[j].section) == 0 && strcmp(t[i].key, t[j].key) == 0);
      assert_true(t[i].offset != t[j].offset);
      if (strcmp(t[i].section, t[j].section) == 0)
        for (size_t k = j; k < i; k++) assert_string_equal(t[k].section, t[i].section);
    }
  }
  assert_string_equal(t[0].section, "stream");
  assert_string_equal(t[n - 1].section, "log");
}

/* Every default, parsed by hand from the table's text, is what config_init stored. */
static void test_defaults_equal_table(void **state) {
  (void)state;
  config c;
  config_init(&c);
  const config_setting *t;
  size_t n = config_table(&t);
  for (size_t i = 0; i < n; i++) {
    const char *p = (const char *)&c + t[i].offset;
    switch (t[i].type) {
    case CONFIG_INT: {
      int64_t v = *(const int64_t *)p;
      assert_int_equal(v, strtoll(t[i].def, NULL, 10));
      assert_true(v >= t[i].min && v <= t[i].max);
      break;
    }
    case CONFIG_DOUBLE: {
      double v = *(const double *)p;
      assert_true(v == strtod(t[i].def, NULL));
      assert_true(v >= t[i].dmin && v <= t[i].dmax);
      break;
    }
    case CONFIG_BOOL:
      assert_int_equal(*(const bool *)p, strcmp(t[i].def, "true") == 0);
      break;
    case CONFIG_STRING:
      assert_string_equal(*(char *const *)p, t[i].def);
      break;
    case CONFIG_ENUM: {
      /* The index of def in "a|b|c". */
      int idx = 0;
      const char *q = t[i].choices;
      size_t len = strlen(t[i].def);
      while (!(strncmp(q, t[i].def, len) == 0 && (q[len] == '|' || q[len] == 0))) {
        q = strchr(q, '|');
        assert_non_null(q);
        q++;
        idx++;
      }
      assert_int_equal(*(const int *)p, idx);
      break;
    }
    }
  }
  /* And the brief's values, spelled out. */
  assert_string_equal(c.stream.topic, "events");
  assert_string_equal(c.stream.group, "flamed");
  assert_string_equal(c.stream.dead_letter_topic, "events.dlq");
  assert_int_equal(c.stream.format, CONFIG_FORMAT_AUTO);
  assert_int_equal(c.stream.batch_max, 10000);
  assert_int_equal(c.stream.max_message_bytes, 4096);
  assert_int_equal(c.stream.max_id_bytes, 256);
  assert_string_equal(c.stream.type_weights, "");
  assert_null(c.stream.types);
  assert_int_equal(c.stream.ntypes, 0);
  assert_true(c.stream.default_type_weight == 1.0);
  assert_int_equal(c.stream.min_ts_ms, INT64_C(946684800000));
  assert_int_equal(c.stream.max_future_ms, 86400000);
  assert_int_equal(c.stream.start_offset, CONFIG_START_EARLIEST);
  assert_string_equal(c.state.dir, "/var/lib/flamed");
  assert_int_equal(c.state.seq_len, 200);
  assert_int_equal(c.state.cache_mb, 64);
  assert_int_equal(c.state.compression, CONFIG_COMPRESSION_LZ4);
  assert_true(c.state.wal);
  assert_false(c.state.sync);
  assert_int_equal(c.log.level, FL_LOG_INFO);
  assert_int_equal(c.log.stats_interval_s, 10);
  assert_int_equal(c.nkafka, 0);
  assert_int_equal(config_validate(&c, err, sizeof err), 0);
  config_free(&c);
}

/* ---- value parsing, by type ---- */

static void test_int_values(void **state) {
  (void)state;
  config c;
  config_init(&c);
  set_ok(&c, "stream.batch_max", "1");
  assert_int_equal(c.stream.batch_max, 1);
  set_ok(&c, "stream.batch_max", "1000000");
  assert_int_equal(c.stream.batch_max, 1000000);
  set_ok(&c, "stream.batch_max", "0042");
  assert_int_equal(c.stream.batch_max, 42);
  set_ok(&c, "stream.min_ts_ms", "9007199254740992"); /* 2^53, the maximum */
  assert_int_equal(c.stream.min_ts_ms, INT64_C(9007199254740992));
  set_ok(&c, "log.stats_interval_s", "0");
  assert_int_equal(c.log.stats_interval_s, 0);

  const char *bad[] = {"", "12abc", "abc", " 12", "12 ", "+5", "1.5", "0x10", "1e3", "-", "10k"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    set_fails(&c, "stream.batch_max", bad[i], FL_EFORMAT, "is not a whole number");
  set_fails(&c, "stream.batch_max", "99999999999999999999", FL_ERANGE,
            "\"99999999999999999999\" is above the maximum 1000000");
  set_fails(&c, "stream.batch_max", "-99999999999999999999", FL_ERANGE, "below the minimum 1");
  /* Range limits, one past each end, and the exact message. */
  err[0] = 0;
  assert_int_equal(
      config_set(&c, "stream.batch_max", "0", "/etc/flamed/flamed.conf", 12, err, sizeof err),
      FL_ERANGE);
  assert_string_equal(err,
                      "/etc/flamed/flamed.conf:12: stream.batch_max: 0 is below the minimum 1");
  set_fails(&c, "stream.batch_max", "1000001", FL_ERANGE, "1000001 is above the maximum 1000000");
  set_fails(&c, "stream.batch_max", "-1", FL_ERANGE, "below the minimum 1");
  set_fails(&c, "stream.min_ts_ms", "9007199254740993", FL_ERANGE, "above the maximum");
  set_fails(&c, "stream.max_id_bytes", "257", FL_ERANGE, "above the maximum 256");
  set_fails(&c, "stream.max_message_bytes", "63", FL_ERANGE, "below the minimum 64");
  set_fails(&c, "log.stats_interval_s", "86401", FL_ERANGE, "above the maximum 86400");
  assert_int_equal(c.stream.batch_max, 42);
  config_free(&c);
}

static void test_double_values(void **state) {
  (void)state;
  config c;
  config_init(&c);
  const struct {
    const char *text;
    double v;
  } good[] = {{"0", 0}, {"0.5", 0.5}, {"1e2", 100}, {"1000", 1000}, {".25", 0.25}, {"2.", 2}};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    set_ok(&c, "stream.default_type_weight", good[i].text);
    assert_true(c.stream.default_type_weight == good[i].v);
  }
  set_ok(&c, "stream.default_type_weight", "0.75");
  const char *bad[] = {"", "abc", "nan", "inf", "-inf", "1.5x", "0x10", " 1", "1 ", "1,5", "e"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    set_fails(&c, "stream.default_type_weight", bad[i], FL_EFORMAT, "is not a number");
  set_fails(&c, "stream.default_type_weight", "1e999", FL_ERANGE, "above the maximum 1000");
  set_fails(&c, "stream.default_type_weight", "-1e999", FL_ERANGE, "below the minimum 0");
  set_fails(&c, "stream.default_type_weight", "-0.1", FL_ERANGE, "below the minimum 0");
  set_fails(&c, "stream.default_type_weight", "1000.5", FL_ERANGE, "above the maximum 1000");
  assert_true(c.stream.default_type_weight == 0.75);
  config_free(&c);
}

static void test_bool_values(void **state) {
  (void)state;
  config c;
  config_init(&c);
  const char *yes[] = {"true", "yes", "on", "1", "TRUE", "Yes", "ON"};
  const char *no[] = {"false", "no", "off", "0", "False", "NO", "Off"};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
    set_ok(&c, "state.sync", no[i]);
    assert_false(c.state.sync);
    set_ok(&c, "state.sync", yes[i]);
    assert_true(c.state.sync);
  }
  const char *bad[] = {"", "2", "t", "f", "yess", "enabled", " true", "true "};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    set_fails(&c, "state.sync", bad[i], FL_EFORMAT, "is not a bool");
  assert_true(c.state.sync);
  config_free(&c);
}

static void test_enum_values(void **state) {
  (void)state;
  config c;
  config_init(&c);
  set_ok(&c, "stream.format", "json");
  assert_int_equal(c.stream.format, CONFIG_FORMAT_JSON);
  set_ok(&c, "stream.format", "CSV");
  assert_int_equal(c.stream.format, CONFIG_FORMAT_CSV);
  set_ok(&c, "stream.format", "auto");
  assert_int_equal(c.stream.format, CONFIG_FORMAT_AUTO);
  set_ok(&c, "stream.start_offset", "latest");
  assert_int_equal(c.stream.start_offset, CONFIG_START_LATEST);
  const struct {
    const char *text;
    int v;
  } comp[] = {{"none", CONFIG_COMPRESSION_NONE},
              {"snappy", CONFIG_COMPRESSION_SNAPPY},
              {"lz4", CONFIG_COMPRESSION_LZ4},
              {"zstd", CONFIG_COMPRESSION_ZSTD}},
    lvl[] = {{"debug", FL_LOG_DEBUG},
             {"info", FL_LOG_INFO},
             {"warn", FL_LOG_WARN},
             {"error", FL_LOG_ERROR}};
  for (size_t i = 0; i < 4; i++) {
    set_ok(&c, "state.compression", comp[i].text);
    assert_int_equal(c.state.compression, comp[i].v);
    set_ok(&c, "log.level", lvl[i].text);
    assert_int_equal(c.log.level, lvl[i].v);
  }
  set_fails(&c, "stream.format", "xml", FL_EFORMAT, "\"xml\" is not one of auto|json|csv");
  set_fails(&c, "stream.format", "", FL_EFORMAT, "not one of");
  set_fails(&c, "stream.format", "jso", FL_EFORMAT, "not one of");
  set_fails(&c, "stream.format", "json|csv", FL_EFORMAT, "not one of");
  set_fails(&c, "log.level", "warning", FL_EFORMAT, "not one of debug|info|warn|error");
  set_fails(&c, "state.compression", "gzip", FL_EFORMAT, "none|snappy|lz4|zstd");
  assert_int_equal(c.stream.format, CONFIG_FORMAT_AUTO);
  config_free(&c);
}

static void test_string_values(void **state) {
  (void)state;
  config c;
  config_init(&c);
  /* Verbatim, with the characters a file can carry inside a value. */
  set_ok(&c, "state.dir", "/srv/my flamed/state;v2#a=b:c");
  assert_string_equal(c.state.dir, "/srv/my flamed/state;v2#a=b:c");
  set_ok(&c, "stream.dead_letter_topic", "");
  assert_string_equal(c.stream.dead_letter_topic, "");
  set_ok(&c, "stream.topic", "user-events_v2.prod");
  assert_string_equal(c.stream.topic, "user-events_v2.prod");
  set_ok(&c, "stream.group", "a\"b"); /* a quote inside is not a quoted value */
  assert_string_equal(c.stream.group, "a\"b");

  /* What a file could not carry back is refused, each with its own reason. */
  set_fails(&c, "state.dir", " /x", FL_EFORMAT, "begin or end with a blank");
  set_fails(&c, "state.dir", "/x\t", FL_EFORMAT, "begin or end with a blank");
  set_fails(&c, "state.dir", "/x ;y", FL_EFORMAT, "';' at its start or after a blank");
  set_fails(&c, "state.dir", "/x #y", FL_EFORMAT, "'#' at its start or after a blank");
  set_fails(&c, "state.dir", ";x", FL_EFORMAT, "';' at its start");
  set_fails(&c, "state.dir", "#x", FL_EFORMAT, "'#' at its start");
  set_fails(&c, "state.dir", "/x\ny", FL_EFORMAT, "control characters");
  set_fails(&c, "state.dir", "\"/var/lib/flamed\"", FL_EFORMAT, "not quoted");
  set_fails(&c, "state.dir", "'/var/lib/flamed'", FL_EFORMAT, "not quoted");
  char longv[CONFIG_LINE_MAX + 8];
  memset(longv, 'a', sizeof longv - 1);
  longv[sizeof longv - 1] = 0;
  set_fails(&c, "state.dir", longv, FL_ERANGE, "too long");
  /* The longest that fits: "dir = " + value is CONFIG_LINE_MAX bytes. */
  longv[CONFIG_LINE_MAX - strlen("dir = ")] = 0;
  set_ok(&c, "state.dir", longv);

  /* Topics follow Kafka's naming rule. */
  set_fails(&c, "stream.topic", "my topic", FL_EFORMAT, "is not a Kafka topic name");
  set_fails(&c, "stream.topic", "events/v2", FL_EFORMAT, "is not a Kafka topic name");
  set_fails(&c, "stream.topic", "..", FL_EFORMAT, "is not a Kafka topic name");
  set_fails(&c, "model.anchor_item_ids", "item-", FL_EFORMAT, "needs exactly one {}");
  set_fails(&c, "model.anchor_item_ids", "{}-{}", FL_EFORMAT, "needs exactly one {}");
  set_ok(&c, "model.anchor_item_ids", "{}");
  set_fails(&c, "stream.dead_letter_topic", "dlq!", FL_EFORMAT, "is not a Kafka topic name");
  assert_string_equal(c.stream.topic, "user-events_v2.prod");
  config_free(&c);
}

static void test_unknown_names(void **state) {
  (void)state;
  config c;
  config_init(&c);
  err[0] = 0;
  assert_int_equal(
      config_set(&c, "stream.batchmax", "5", "/etc/flamed/flamed.conf", 12, err, sizeof err),
      FL_EFORMAT);
  assert_string_equal(err, "/etc/flamed/flamed.conf:12: unknown setting [stream] batchmax (did "
                           "you mean batch_max?)");
  /* The same key in another section. */
  assert_int_equal(config_set(&c, "stream.seq_len", "5", "f.conf", 3, err, sizeof err), FL_EFORMAT);
  assert_string_equal(err, "f.conf:3: unknown setting [stream] seq_len (did you mean [state] "
                           "seq_len?)");
  /* Dotted spelling for the command line (line 0). */
  assert_int_equal(config_set(&c, "log.levle", "debug", NULL, 0, err, sizeof err), FL_EFORMAT);
  assert_string_equal(err, "command line: unknown setting log.levle (did you mean log.level?)");
  /* Nothing close: no suggestion. */
  set_fails(&c, "stream.zzzzzzzz", "1", FL_EFORMAT, "unknown setting stream.zzzzzzzz");
  assert_null(strstr(err, "did you mean"));
  set_fails(&c, "strem.topic", "x", FL_EFORMAT, "unknown section [strem] (did you mean [stream]?)");
  set_fails(&c, "nosuch.topic", "x", FL_EFORMAT, "unknown section [nosuch]");
  set_fails(&c, "topic", "x", FL_EFORMAT, "section.key");
  set_fails(&c, "stream.", "x", FL_EFORMAT, "unknown setting");
  set_fails(&c, "stream.Topic", "x", FL_EFORMAT, "did you mean stream.topic?");
  /* Names from outside are shown without control characters (set_fails checks one line). */
  set_fails(&c, "stream.to\npic", "x", FL_EFORMAT, "unknown setting stream.to?pic");
  set_fails(&c, "str\neam.topic", "x", FL_EFORMAT, "unknown section [str?eam]");
  set_fails(&c, "nodot\n", "x", FL_EFORMAT, "unknown setting nodot?");
  set_fails(&c, "kafka.a\nb", "x", FL_EFORMAT, "[kafka] \"a?b\" is not a librdkafka property");
  config_free(&c);
}

/* ---- [kafka] passthrough ---- */

static void test_kafka_passthrough(void **state) {
  (void)state;
  config c;
  config_init(&c);
  assert_int_equal(
      config_set(&c, "kafka.bootstrap.servers", "a:9092", "f.conf", 4, err, sizeof err), 0);
  set_ok(&c, "kafka.fetch.wait.max.ms", "50");
  assert_int_equal(c.nkafka, 2);
  assert_string_equal(c.kafka[0].key, "bootstrap.servers");
  assert_string_equal(c.kafka[0].value, "a:9092");
  assert_string_equal(c.kafka[0].origin, "f.conf");
  assert_int_equal(c.kafka[0].line, 4);
  assert_string_equal(c.kafka[1].key, "fetch.wait.max.ms");
  /* Replacing keeps the position, updates value, origin and line. */
  assert_int_equal(
      config_set(&c, "kafka.bootstrap.servers", "b:9092,c:9092", NULL, 0, err, sizeof err), 0);
  assert_int_equal(c.nkafka, 2);
  assert_string_equal(c.kafka[0].value, "b:9092,c:9092");
  assert_string_equal(c.kafka[0].origin, "command line");
  assert_int_equal(c.kafka[0].line, 0);
  set_ok(&c, "kafka.sasl.password", "p;w#d:=x"); /* verbatim, no blank before ; or # */
  assert_string_equal(c.kafka[2].value, "p;w#d:=x");
  set_ok(&c, "kafka.client.id", "");
  assert_string_equal(c.kafka[3].value, "");

  set_fails(&c, "kafka.", "x", FL_EFORMAT, "not a librdkafka property name");
  set_fails(&c, "kafka.bad key", "x", FL_EFORMAT, "not a librdkafka property name");
  set_fails(&c, "kafka.a=b", "x", FL_EFORMAT, "not a librdkafka property name");
  set_fails(&c, "kafka.group.id", "g", FL_EFORMAT, "stream.group");
  set_fails(&c, "kafka.client.id", "x ;y", FL_EFORMAT, "after a blank");
  set_fails(&c, "kafka.client.id", ";y", FL_EFORMAT, "at its start");
  set_fails(&c, "kafka.client.id", " x", FL_EFORMAT, "blank");
  assert_int_equal(c.nkafka, 4);
  config_free(&c);
  /* config_free zeroes, and a second free is harmless. */
  assert_null(c.kafka);
  assert_int_equal(c.nkafka, 0);
  assert_null(c.stream.topic);
  config_free(&c);
}

/* ---- stream.type_weights ---- */

static void test_type_weights(void **state) {
  (void)state;
  config c;
  config_init(&c);
  set_ok(&c, "stream.type_weights", "view:1,cart:2,purchase:4");
  assert_string_equal(c.stream.type_weights, "view:1,cart:2,purchase:4");
  assert_int_equal(c.stream.ntypes, 3);
  assert_string_equal(c.stream.types[0].name, "view");
  assert_true(c.stream.types[0].weight == 1);
  assert_string_equal(c.stream.types[1].name, "cart");
  assert_true(c.stream.types[1].weight == 2);
  assert_string_equal(c.stream.types[2].name, "purchase");
  assert_true(c.stream.types[2].weight == 4);
  /* Blanks around names and weights; 0 and 1000 are allowed; five entries grow the array. */
  set_ok(&c, "stream.type_weights", "a : 0.5, b:0 ,c:1000,d:1e2,e:.25");
  assert_int_equal(c.stream.ntypes, 5);
  assert_string_equal(c.stream.types[0].name, "a");
  assert_true(c.stream.types[0].weight == 0.5);
  assert_string_equal(c.stream.types[1].name, "b");
  assert_true(c.stream.types[1].weight == 0);
  assert_true(c.stream.types[2].weight == 1000);
  assert_true(c.stream.types[3].weight == 100);
  assert_string_equal(c.stream.types[4].name, "e");
  set_ok(&c, "stream.type_weights", "view:1");
  assert_int_equal(c.stream.ntypes, 1);
  set_ok(&c, "stream.type_weights", "");
  assert_int_equal(c.stream.ntypes, 0);
  assert_null(c.stream.types);

  set_ok(&c, "stream.type_weights", "view:1,cart:3");
  set_fails(&c, "stream.type_weights", "view", FL_EFORMAT, "\"view\" has no weight");
  set_fails(&c, "stream.type_weights", ":1", FL_EFORMAT, "no type name");
  set_fails(&c, "stream.type_weights", "view:1,view:2", FL_EFORMAT, "\"view\" is listed twice");
  set_fails(&c, "stream.type_weights", "view:-1", FL_ERANGE, "[0, 1000]");
  set_fails(&c, "stream.type_weights", "view:1001", FL_ERANGE, "[0, 1000]");
  set_fails(&c, "stream.type_weights", "view:nan", FL_EFORMAT, "[0, 1000]");
  set_fails(&c, "stream.type_weights", "view:inf", FL_EFORMAT, "[0, 1000]");
  set_fails(&c, "stream.type_weights", "view:1e999", FL_ERANGE, "[0, 1000]");
  set_fails(&c, "stream.type_weights", "view:abc", FL_EFORMAT, "[0, 1000]");
  set_fails(&c, "stream.type_weights", "view:", FL_EFORMAT, "[0, 1000]");
  set_fails(&c, "stream.type_weights", "view:1,", FL_EFORMAT, "empty entry");
  set_fails(&c, "stream.type_weights", ",view:1", FL_EFORMAT, "empty entry");
  set_fails(&c, "stream.type_weights", "view:1,,cart:2", FL_EFORMAT, "empty entry");
  /* The last good list stays, parsed. */
  assert_string_equal(c.stream.type_weights, "view:1,cart:3");
  assert_int_equal(c.stream.ntypes, 2);
  assert_true(c.stream.types[1].weight == 3);
  config_free(&c);
}

/* ---- files ---- */

static void test_file_load(void **state) {
  tu_file_fixture *fx = *state;
  config c;
  int rc = load_text(fx, &c,
                     "; flamed test config\n"
                     "# comments of both kinds\n"
                     "\n"
                     "[stream]\n"
                     "topic = clicks ; inline comment\n"
                     "batch_max=500\n"
                     "format: json\n"
                     "   ; an indented comment\n"
                     "type_weights = view:1, buy:5\n"
                     "dead_letter_topic =\n"
                     "\n"
                     "[state]\r\n"
                     "dir = /data/flamed;v2#x\r\n"
                     "sync = yes\r\n"
                     "[log]\n"
                     "level = debug\n"
                     "[stream]\n"
                     "batch_max = 600\n"
                     "[kafka]\n"
                     "bootstrap.servers = k1:9092,k2:9092\n"
                     "session.timeout.ms = 6000\n");
  if (rc != 0) fail_msg("load failed: %s", err);
  assert_string_equal(c.stream.topic, "clicks");
  assert_int_equal(c.stream.batch_max, 600); /* the last one wins */
  assert_int_equal(c.stream.format, CONFIG_FORMAT_JSON);
  assert_int_equal(c.stream.ntypes, 2);
  assert_string_equal(c.stream.types[1].name, "buy");
  assert_string_equal(c.stream.dead_letter_topic, "");
  assert_string_equal(c.state.dir, "/data/flamed;v2#x");
  assert_true(c.state.sync);
  assert_int_equal(c.log.level, FL_LOG_DEBUG);
  /* Untouched settings keep their defaults. */
  assert_string_equal(c.stream.group, "flamed");
  assert_int_equal(c.state.seq_len, 200);
  assert_int_equal(c.nkafka, 2);
  assert_string_equal(c.kafka[0].key, "bootstrap.servers");
  assert_string_equal(c.kafka[0].value, "k1:9092,k2:9092");
  assert_string_equal(c.kafka[0].origin, fx->path);
  assert_int_equal(c.kafka[0].line, 20);
  assert_string_equal(c.kafka[1].key, "session.timeout.ms");
  assert_int_equal(c.kafka[1].line, 21);
  config_free(&c);

  /* An empty file changes nothing. */
  assert_int_equal(load_text(fx, &c, ""), 0);
  config def;
  config_init(&def);
  assert_config_equal(&c, &def);
  config_free(&def);
  config_free(&c);
}

/* A load applies on top of what is there, and a failed one leaves it all as it was. */
static void test_file_atomic(void **state) {
  tu_file_fixture *fx = *state;
  config c;
  config_init(&c);
  set_ok(&c, "stream.topic", "before");
  set_ok(&c, "kafka.client.id", "x");
  tu_write_file(fx->path, "[stream]\ngroup = g2\n[kafka]\nclient.id = y\nacks = all\n");
  assert_int_equal(config_load_file(&c, fx->path, err, sizeof err), 0);
  assert_string_equal(c.stream.topic, "before");
  assert_string_equal(c.stream.group, "g2");
  assert_int_equal(c.nkafka, 2);
  assert_string_equal(c.kafka[0].value, "y");

  tu_write_file(fx->path, "[stream]\ntopic = after\ngroup = g3\n[kafka]\nacks = 1\n[state]\n"
                          "seq_len = 0\n");
  assert_int_equal(config_load_file(&c, fx->path, err, sizeof err), FL_ERANGE);
  assert_non_null(strstr(err, ":7: state.seq_len: 0 is below the minimum 1"));
  assert_string_equal(c.stream.topic, "before");
  assert_string_equal(c.stream.group, "g2");
  assert_string_equal(c.kafka[1].value, "all");
  config_free(&c);
}

static void test_file_errors(void **state) {
  tu_file_fixture *fx = *state;
  load_fails(fx, "[stream]\ntopic = a\n\nbatchmax = 5\n", FL_EFORMAT, 4,
             "unknown setting [stream] batchmax (did you mean batch_max?)");
  load_fails(fx, "[stream]\nbatch_max = 12abc\n", FL_EFORMAT, 2,
             "stream.batch_max: \"12abc\" is not a whole number");
  load_fails(fx, "[stream]\nbatch_max = 10 # messages\n", FL_EFORMAT, 2, "not a whole number");
  load_fails(fx, "[stream]\ntopic = events # the topic\n", FL_EFORMAT, 2,
             "'#' at its start or after a blank");
  load_fails(fx, "[stream]\ntopic = # the topic\n", FL_EFORMAT, 2, "'#' at its start");
  load_fails(fx, "; top\ntopic = x\n[stream]\n", FL_EFORMAT, 2,
             "topic is outside any section: settings go under [stream]");
  load_fails(fx, "[stream]\nformat = json\n[strem]\ntopic = x\n", FL_EFORMAT, 4,
             "unknown section [strem] (did you mean [stream]?)");
  load_fails(fx, "[stream]\ntopic = a\nthis is bad\n", FL_EFORMAT, 3,
             "syntax error in \"this is bad\"");
  load_fails(fx, "[stream]\ntopic = a\n[state\ndir = /x\n", FL_EFORMAT, 3,
             "a section header \"[name]\"");
  load_fails(fx, "[stream]\n= novalue\n", FL_EFORMAT, 2, "no key before '='");
  /* The first problem in file order wins, whatever its kind. */
  load_fails(fx, "[stream]\nbroken line\nbatch_max = 0\n", FL_EFORMAT, 2, "syntax error");
  load_fails(fx, "[stream]\nbatch_max = 0\nbroken line\n", FL_ERANGE, 2, "below the minimum");
  /* inih would take an indented line as a continuation of the value above. */
  load_fails(fx, "[stream]\n  topic = a\n  group = b\n", FL_EFORMAT, 2, "indented line");
  load_fails(fx, "[stream]\ntopic = a\n\tgroup = b\n", FL_EFORMAT, 3, "indented line");
  load_fails(fx, "[log]\nlevel = debug\n  [stream]\n", FL_EFORMAT, 3, "indented line");
}

static void test_file_long_lines(void **state) {
  tu_file_fixture *fx = *state;
  char text[1200];
  /* A value line longer than inih's buffer is refused, not cut in two. */
  int n = snprintf(text, sizeof text, "[state]\nseq_len = 5\ndir = /");
  for (int i = 0; i < 300; i++) text[n++] = 'd';
  snprintf(text + n, sizeof text - (size_t)n, "\nseq_len = 7\n");
  load_fails(fx, text, FL_ERANGE, 3, "line longer than 197 bytes");

  /* A long comment is accepted and its rest skipped, also right before a syntax error, whose
   * line is still found and shown. */
  n = snprintf(text, sizeof text, "[state]\n# ");
  for (int i = 0; i < 500; i++) text[n++] = 'c';
  snprintf(text + n, sizeof text - (size_t)n, "\nseq_len = 7\n");
  config c;
  assert_int_equal(load_text(fx, &c, text), 0);
  assert_int_equal(c.state.seq_len, 7);
  config_free(&c);
  snprintf(text + n, sizeof text - (size_t)n, "\nseq_len = 7\nbad line\n");
  load_fails(fx, text, FL_EFORMAT, 4, "syntax error in \"bad line\"");

  /* The longest line that config_set takes loads: CONFIG_LINE_MAX bytes plus "\r\n". */
  n = snprintf(text, sizeof text, "[state]\r\ndir = ");
  for (int i = 0; i < CONFIG_LINE_MAX - 6; i++) text[n++] = 'd';
  snprintf(text + n, sizeof text - (size_t)n, "\r\n");
  assert_int_equal(load_text(fx, &c, text), 0);
  assert_int_equal(strlen(c.state.dir), CONFIG_LINE_MAX - 6);
  config_free(&c);
  /* One more byte is refused by config_set, still naming the line. */
  snprintf(text + n, sizeof text - (size_t)n, "d\n");
  load_fails(fx, text, FL_ERANGE, 2, "value too long");
}

/* Bytes a text editor would not write are refused, not misread. */
static void test_file_binary(void **state) {
  tu_file_fixture *fx = *state;
  FILE *f = fopen(fx->path, "wb");
  assert_non_null(f);
  static const char text[] = "[stream]\ntopic = a\0b\nbatch_max = 5\n";
  assert_int_equal(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
  assert_int_equal(fclose(f), 0);
  config c;
  config_init(&c);
  assert_int_equal(config_load_file(&c, fx->path, err, sizeof err), FL_EFORMAT);
  assert_non_null(strstr(err, ":2: line contains a NUL byte"));
  assert_int_equal(c.stream.batch_max, 10000);
  config_free(&c);
  load_fails(fx, "[stream]\ntopic = a\x01b\n", FL_EFORMAT, 2, "control characters");
}

static void test_file_unreadable(void **state) {
  tu_file_fixture *fx = *state;
  config c;
  config_init(&c);
  char path[600];
  snprintf(path, sizeof path, "%s/missing.conf", fx->dir);
  assert_int_equal(config_load_file(&c, path, err, sizeof err), -ENOENT);
  char want[800];
  snprintf(want, sizeof want, "cannot read %s: %s", path, strerror(ENOENT));
  assert_string_equal(err, want);
  /* A directory opens but cannot be read. */
  assert_int_equal(config_load_file(&c, fx->dir, err, sizeof err), -EISDIR);
  snprintf(want, sizeof want, "cannot read %s: %s", fx->dir, strerror(EISDIR));
  assert_string_equal(err, want);
  /* err may be left out. */
  assert_int_equal(config_load_file(&c, path, NULL, 0), -ENOENT);
  config def;
  config_init(&def);
  assert_config_equal(&c, &def);
  config_free(&def);
  config_free(&c);
}

/* ---- command line ---- */

static void test_command_line(void **state) {
  tu_file_fixture *fx = *state;
  config c;
  int rc = load_text(fx, &c, "[stream]\nbatch_max = 500\ntopic = t1\n[kafka]\nacks = all\n");
  assert_int_equal(rc, 0);
  /* Overrides applied after the file win; the last one of several wins. */
  assert_int_equal(config_apply_arg(&c, "--stream.batch_max=700", err, sizeof err), 0);
  assert_int_equal(config_apply_arg(&c, "--stream.batch_max=800", err, sizeof err), 0);
  assert_int_equal(config_apply_arg(&c, "--log.level=warn", err, sizeof err), 0);
  assert_int_equal(config_apply_arg(&c, "--kafka.acks=1", err, sizeof err), 0);
  assert_int_equal(config_apply_arg(&c, "--kafka.bootstrap.servers=h:9092", err, sizeof err), 0);
  assert_int_equal(config_apply_arg(&c, "--stream.dead_letter_topic=", err, sizeof err), 0);
  assert_int_equal(config_apply_arg(&c, "--state.dir=/a=b", err, sizeof err), 0);
  assert_int_equal(c.stream.batch_max, 800);
  assert_string_equal(c.stream.topic, "t1");
  assert_int_equal(c.log.level, FL_LOG_WARN);
  assert_string_equal(c.stream.dead_letter_topic, "");
  assert_string_equal(c.state.dir, "/a=b");
  assert_int_equal(c.nkafka, 2);
  assert_string_equal(c.kafka[0].value, "1");
  assert_string_equal(c.kafka[0].origin, "command line");
  assert_int_equal(c.kafka[0].line, 0);
  assert_string_equal(c.kafka[1].key, "bootstrap.servers");

  /* Not ours: the caller's own flags and arguments, untouched. */
  const char *notours[] = {"--help",
                           "-v",
                           "-c",
                           "flamed.conf",
                           "--config=/etc/f.conf",
                           "--",
                           "-stream.topic=x",
                           "stream.topic=x",
                           "",
                           "--test"};
  for (size_t i = 0; i < sizeof notours / sizeof *notours; i++) {
    err[0] = 0;
    assert_int_equal(config_apply_arg(&c, notours[i], err, sizeof err), 1);
    assert_string_equal(err, "");
  }
  /* Ours, but wrong. */
  assert_int_equal(config_apply_arg(&c, "--stream.batch_max=0", err, sizeof err), FL_ERANGE);
  assert_string_equal(err, "command line: stream.batch_max: 0 is below the minimum 1");
  assert_int_equal(config_apply_arg(&c, "--stream.batch_max", err, sizeof err), FL_EFORMAT);
  assert_non_null(strstr(err, "--stream.batch_max=VALUE"));
  assert_int_equal(config_apply_arg(&c, "--stream.batchmax=3", err, sizeof err), FL_EFORMAT);
  assert_string_equal(
      err, "command line: unknown setting stream.batchmax (did you mean stream.batch_max?)");
  assert_int_equal(config_apply_arg(&c, "--stream.topic= x", err, sizeof err), FL_EFORMAT);
  assert_int_equal(c.stream.batch_max, 800);
  assert_string_equal(c.stream.topic, "t1");
  config_free(&c);
}

/* ---- validation ---- */

static void test_validate(void **state) {
  (void)state;
  config c;
  config_init(&c);
  assert_int_equal(config_validate(&c, err, sizeof err), 0);

  set_ok(&c, "stream.topic", "");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_EMISSING);
  assert_non_null(strstr(err, "stream.topic is empty"));
  set_ok(&c, "stream.topic", "events");

  set_ok(&c, "stream.group", "");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_EMISSING);
  assert_non_null(strstr(err, "stream.group is empty"));
  set_ok(&c, "stream.group", "flamed");

  set_ok(&c, "stream.dead_letter_topic", "events");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_ERANGE);
  assert_non_null(strstr(err, "stream.dead_letter_topic is the events topic"));
  set_ok(&c, "stream.dead_letter_topic", "");
  assert_int_equal(config_validate(&c, err, sizeof err), 0); /* no dead letters is fine */

  set_ok(&c, "state.dir", "");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_EMISSING);
  assert_non_null(strstr(err, "state.dir is empty"));
  set_ok(&c, "state.dir", "/x");

  set_ok(&c, "state.wal", "off");
  assert_int_equal(config_validate(&c, err, sizeof err), 0);
  set_ok(&c, "state.sync", "on");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_ERANGE);
  assert_non_null(strstr(err, "state.sync is on but state.wal is off"));
  set_ok(&c, "state.wal", "on");
  assert_int_equal(config_validate(&c, err, sizeof err), 0);

  /* The bootstrap network's heads must divide its channels. */
  set_ok(&c, "model.heads", "3");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_ERANGE);
  assert_non_null(strstr(err, "model.heads (3) does not divide model.dim (64)"));
  set_ok(&c, "model.heads", "2");

  /* Dropping every event is refused; one type with a weight is enough. */
  set_ok(&c, "stream.default_type_weight", "0");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_ERANGE);
  assert_non_null(strstr(err, "every event would be dropped"));
  set_ok(&c, "stream.type_weights", "view:0,buy:0");
  assert_int_equal(config_validate(&c, err, sizeof err), FL_ERANGE);
  set_ok(&c, "stream.type_weights", "view:0,buy:2");
  assert_int_equal(config_validate(&c, err, sizeof err), 0);
  assert_int_equal(config_validate(&c, NULL, 0), 0);
  config_free(&c);
}

/* ---- dump ---- */

/* Every setting away from its default, strings with the characters a file can carry, kafka
 * entries: dump, load into a fresh config, compare field by field. */
static void test_dump_round_trip(void **state) {
  tu_file_fixture *fx = *state;
  config c;
  config_init(&c);
  const char *sets[][2] = {
      {"stream.topic", "clicks.v2"},
      {"stream.group", "rec;group#1 a=b: c"},
      {"stream.dead_letter_topic", ""},
      {"stream.format", "csv"},
      {"stream.batch_max", "1234"},
      {"stream.max_message_bytes", "65536"},
      {"stream.max_id_bytes", "64"},
      {"stream.type_weights", "view:0.1, cart:2,purchase:1000"},
      {"stream.default_type_weight", "0.30000000000000004"},
      {"stream.min_ts_ms", "9007199254740992"},
      {"stream.max_future_ms", "0"},
      {"stream.start_offset", "latest"},
      {"state.dir", "/weird dir/;#x \"q\""},
      {"state.seq_len", "65536"},
      {"state.cache_mb", "1"},
      {"state.compression", "zstd"},
      {"state.wal", "off"},
      {"state.sync", "on"},
      {"state.write_queue", "9"},
      {"state.min_free_mb", "0"},
      {"state.rocksdb_log_dir", "/run/flamed x;#"},
      {"model.anchor", "/opt/anchors/beauty;v1.ckpt"},
      {"model.anchor_item_ids", "item-{}"},
      {"model.dir", "/var/lib/flamed/m"},
      {"model.dim", "128"},
      {"model.blocks", "3"},
      {"model.heads", "4"},
      {"model.maxlen", "200"},
      {"model.dropout", "0.2"},
      {"model.keep", "5"},
      {"model.popular", "50"},
      {"train.enabled", "false"},
      {"train.interval_s", "0.5"},
      {"train.min_new_events", "7"},
      {"train.min_users", "3"},
      {"train.steps", "9"},
      {"train.batch", "64"},
      {"train.lr", "1e-05"},
      {"train.tau", "0.5"},
      {"train.lambda0", "2"},
      {"train.lambda_r", "0.001"},
      {"train.replay_users", "0"},
      {"train.replay_pool", "99"},
      {"train.holdout_users", "10"},
      {"train.retain_users", "7"},
      {"train.margin", "0"},
      {"train.reanchor_rounds", "12"},
      {"train.threads", "2"},
      {"train.nice", "5"},
      {"stream.close_timeout_s", "3"},
      {"stream.static_membership", "false"},
      {"stream.instance_id", "node-7;#a"},
      {"train.keep_adam", "false"},
      {"train.new_targets_only", "false"},
      {"train.seed_new_items", "true"},
      {"train.duty", "0.25"},
      {"train.sampled_items", "5000"},
      {"train.negatives", "1000"},
      {"train.bootstrap_min_users", "10"},
      {"train.bootstrap_min_events", "100"},
      {"train.bootstrap_epochs", "3"},
      {"train.seed", "7"},
      {"api.listen", "::1"},
      {"api.port", "0"},
      {"api.admin_listen", "127.0.0.2"},
      {"api.admin_port", "9999"},
      {"api.admin_token_file", "/etc/flamed/token"},
      {"api.max_conns", "10"},
      {"api.max_conns_per_peer", "0"},
      {"api.max_head_bytes", "256"},
      {"api.max_body_bytes", "0"},
      {"api.max_pipeline", "1"},
      {"api.idle_timeout_ms", "10"},
      {"api.request_timeout_ms", "86400000"},
      {"api.header_timeout_ms", "250"},
      {"api.max_k", "7"},
      {"api.online_eval_per_s", "0"},
      {"api.online_eval_share", "0.25"},
      {"api.online_eval_baseline", "false"},
      {"api.workers", "3"},
      {"api.offload_items", "5000"},
      {"log.level", "error"},
      {"log.stats_interval_s", "86400"},
      {"kafka.bootstrap.servers", "k1:9092,k2:9092"},
      {"kafka.sasl.password", "s3cr;t#=:"},
      {"kafka.client.id", ""},
  };
  for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) set_ok(&c, sets[i][0], sets[i][1]);

  /* Every table setting was changed: a dump that wrote defaults could not pass. */
  config def;
  config_init(&def);
  const config_setting *t;
  size_t n = config_table(&t);
  for (size_t i = 0; i < n; i++) {
    char x[512], y[512];
    field_text(&c, &t[i], x, sizeof x);
    field_text(&def, &t[i], y, sizeof y);
    if (strcmp(x, y) == 0 && strcmp(t[i].key, "dead_letter_topic") != 0)
      fail_msg("%s.%s is still at its default", t[i].section, t[i].key);
  }
  config_free(&def);

  FILE *f = fopen(fx->path, "w");
  assert_non_null(f);
  config_dump(&c, f);
  assert_int_equal(fclose(f), 0);

  config back;
  config_init(&back);
  int rc = config_load_file(&back, fx->path, err, sizeof err);
  if (rc != 0) fail_msg("the dump does not load: %s", err);
  assert_config_equal(&c, &back);
  assert_true(back.stream.default_type_weight == 0.30000000000000004);
  config_free(&back);

  /* And the dump of the defaults loads back to the defaults, and validates. */
  config_init(&def);
  f = fopen(fx->path, "w");
  config_dump(&def, f);
  assert_int_equal(fclose(f), 0);
  config_init(&back);
  set_ok(&back, "stream.batch_max", "1"); /* so that the load has something to undo */
  assert_int_equal(config_load_file(&back, fx->path, err, sizeof err), 0);
  assert_config_equal(&def, &back);
  assert_int_equal(config_validate(&back, err, sizeof err), 0);
  config_free(&back);
  config_free(&def);
  config_free(&c);
}

static void test_dump_text(void **state) {
  tu_file_fixture *fx = *state;
  config c;
  config_init(&c);
  set_ok(&c, "state.cache_mb", "128");
  assert_int_equal(config_set(&c, "kafka.acks", "all", "/etc/flamed.conf", 9, err, sizeof err), 0);
  FILE *f = fopen(fx->path, "w");
  config_dump(&c, f);
  assert_int_equal(fclose(f), 0);
  void *buf = NULL;
  size_t len = 0;
  assert_int_equal(fl_read_file(fx->path, &buf, &len), 0);
  const char *text = buf;
  const char *want[] = {
      ("\n[stream]\n# Kafka topic of interaction events; the message key is the user id.\n"
       "# default: events\ntopic = events\n"),
      "# default: 10000, range: [1, 1000000]\nbatch_max = 10000\n",
      "# default: (empty)\ntype_weights =\n",
      "# default: 1, range: [0, 1000]\ndefault_type_weight = 1\n",
      "# default: auto, one of: auto|json|csv\nformat = auto\n",
      "\n[state]\n",
      "# default: 64, range: [1, 1048576]\ncache_mb = 128\n",
      "# default: true, true or false\nwal = true\n",
      "\n[log]\n",
      "# default: info, one of: debug|info|warn|error, reloadable\nlevel = info\n",
      "# default: 10, range: [0, 86400], reloadable\nstats_interval_s = 10\n",
      "\n[kafka]\n# Any librdkafka property may be set here",
      "# e.g. bootstrap.servers = kafka1:9092,kafka2:9092\n",
      "# set at /etc/flamed.conf:9\nacks = all\n",
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++)
    if (!strstr(text, want[i])) fail_msg("the dump lacks:\n%s\n--- dump:\n%s", want[i], text);
  /* Every line fits the file format's limit and comments stay within 100 columns. */
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    assert_non_null(nl);
    assert_true(nl - p <= (*p == '#' ? 100 : CONFIG_LINE_MAX));
    p = nl + 1;
  }
  /* Sections appear once each, in table order. */
  const char *s1 = strstr(text, "[stream]"), *s2 = strstr(text, "[state]"),
             *s3 = strstr(text, "[log]"), *s4 = strstr(text, "[kafka]");
  assert_true(s1 && s2 && s3 && s4 && s1 < s2 && s2 < s3 && s3 < s4);
  assert_null(strstr(s1 + 1, "[stream]"));
  free(buf);
  config_free(&c);
}

/* ---- reload ---- */

static void test_needs_restart(void **state) {
  (void)state;
  config a, b;
  config_init(&a);
  config_init(&b);
  char names[256];
  assert_int_equal(config_needs_restart(&a, &b, names, sizeof names), 0);
  assert_string_equal(names, "");
  /* log.* is reloadable. */
  set_ok(&b, "log.level", "debug");
  set_ok(&b, "log.stats_interval_s", "60");
  assert_int_equal(config_needs_restart(&a, &b, names, sizeof names), 0);
  /* Anything else is not, kafka included: changed, added or removed. */
  set_ok(&b, "stream.topic", "other");
  set_ok(&b, "state.wal", "false");
  set_ok(&b, "stream.default_type_weight", "2");
  assert_int_equal(config_needs_restart(&a, &b, names, sizeof names), 3);
  assert_string_equal(names, "stream.topic, stream.default_type_weight, state.wal");
  set_ok(&a, "kafka.acks", "all");
  set_ok(&a, "kafka.client.id", "x");
  set_ok(&b, "kafka.client.id", "x");
  set_ok(&b, "kafka.linger.ms", "5");
  assert_int_equal(config_needs_restart(&a, &b, names, sizeof names), 5);
  assert_string_equal(names, "stream.topic, stream.default_type_weight, state.wal, kafka.acks, "
                             "kafka.linger.ms");
  set_ok(&b, "kafka.acks", "1");
  assert_int_equal(config_needs_restart(&a, &b, NULL, 0), 5);
  /* A short buffer is cut, still terminated. */
  assert_int_equal(config_needs_restart(&a, &b, names, 10), 5);
  assert_int_equal(strlen(names), 9);
  config_free(&a);
  config_free(&b);
}

/* ---- memory ---- */

/* Strings replaced many times, type lists regrown, kafka entries replaced, failed loads of a
 * copy: under ASan any leak fails the run at exit. */
static void test_free_releases_everything(void **state) {
  tu_file_fixture *fx = *state;
  config c;
  config_init(&c);
  for (int i = 0; i < 50; i++) {
    char v[64];
    snprintf(v, sizeof v, "t%d", i);
    set_ok(&c, "stream.topic", v);
    set_ok(&c, "kafka.client.id", v);
    set_ok(&c, "stream.type_weights", i % 2 ? "a:1,b:2,c:3,d:4,e:5,f:6" : "x:1");
    set_fails(&c, "stream.type_weights", "a:1,b:2,c:3,d:4,e:5,a:6", FL_EFORMAT, "twice");
  }
  tu_write_file(fx->path, "[stream]\ntype_weights = p:1,q:2\n[kafka]\nacks = all\n");
  assert_int_equal(config_load_file(&c, fx->path, err, sizeof err), 0);
  tu_write_file(fx->path, "[stream]\ntype_weights = r:1\n[kafka]\nacks = 1\n[state]\nbad = 1\n");
  assert_int_equal(config_load_file(&c, fx->path, err, sizeof err), FL_EFORMAT);
  assert_int_equal(c.stream.ntypes, 2);
  config_free(&c);
  assert_null(c.stream.types);
  assert_null(c.state.dir);
  /* A freed config can be initialised again. */
  config_init(&c);
  assert_string_equal(c.state.dir, "/var/lib/flamed");
  config_free(&c);
}

int test_config(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table_invariants),
      cmocka_unit_test(test_defaults_equal_table),
      cmocka_unit_test(test_int_values),
      cmocka_unit_test(test_double_values),
      cmocka_unit_test(test_bool_values),
      cmocka_unit_test(test_enum_values),
      cmocka_unit_test(test_string_values),
      cmocka_unit_test(test_unknown_names),
      cmocka_unit_test(test_kafka_passthrough),
      cmocka_unit_test(test_type_weights),
      cmocka_unit_test_setup_teardown(test_file_load, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_file_atomic, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_file_errors, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_file_long_lines, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_file_binary, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_file_unreadable, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_command_line, tu_file_setup, tu_file_teardown),
      cmocka_unit_test(test_validate),
      cmocka_unit_test_setup_teardown(test_dump_round_trip, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_dump_text, tu_file_setup, tu_file_teardown),
      cmocka_unit_test(test_needs_restart),
      cmocka_unit_test_setup_teardown(test_free_releases_everything, tu_file_setup,
                                      tu_file_teardown),
  };
  return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
