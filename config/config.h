/* config/config.h: flamed's settings: one declarative table, INI files, command-line overrides,
 * validation, a dump that loads back, and the reload check.
 *
 * Every setting is one row of a table (config_table()): section, key, type, default as text,
 * range, reloadable flag, help, and the offset of its field in struct config. Defaults, parsing,
 * validation, the dump and the docs are all driven by that table: adding a setting is one row
 * plus one field.
 *
 * The usual sequence (Redis-style: the file, then command-line overrides, last one wins):
 *
 *   config c;
 *   config_init(&c);                                  defaults
 *   config_load_file(&c, path, err, sizeof err);      the file, if any
 *   for each argv[i]: config_apply_arg(&c, argv[i], err, sizeof err)   --section.key=value
 *   config_validate(&c, err, sizeof err);             cross-field checks
 *   ...
 *   config_free(&c);
 *
 * Value syntax, the same in a file and on the command line:
 *   - integers: plain decimal digits with an optional leading '-' ("10000"); no '+', no
 *     blanks, no hex, no unit suffixes; values beyond int64 are refused as out of range;
 *   - numbers (double): decimal with optional fraction and exponent ("0.5", "1e3"); no hex,
 *     no inf or nan;
 *   - bools: true/false, yes/no, on/off, 1/0, in any letter case;
 *   - enums: one of the listed choices, in any letter case;
 *   - strings: taken verbatim, not quoted. In a file inih strips the blanks around a value and
 *     an inline comment, which is a ';' after a blank ("topic = events ; the topic" gives
 *     "events"); '#' starts a comment only at the beginning of a line. So that every value
 *     survives config_dump and a reload, a string value is refused if it begins or ends with a
 *     blank, contains a control character, has ';' or '#' at its start or right after a blank
 *     (in a file inih reads the rest as a comment, or worse, a '#' meant as one would silently
 *     become part of the value), is wrapped in quotes ("events" or 'events': quotes would be
 *     part of the value), or makes its "key = value" line longer than CONFIG_LINE_MAX bytes.
 *
 * Nothing here keeps global state: every function is safe on distinct config structs from any
 * thread. Errors are negative codes (FL_E* or -errno) with one line of text in err; err may be
 * NULL or errlen 0 when the caller does not want the text. */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Longest line a config file may have, in bytes, line end excluded. libinih reads a file into a
 * fixed line buffer (INI_MAX_LINE = 200, of which 3 go to "\r\n\0"); a longer line is refused
 * with a clear error, and config_set refuses a value whose "key = value" line would not fit, so
 * that a dump always loads back. */
#define CONFIG_LINE_MAX 197

/* stream.format: how a Kafka message is decoded. */
enum {
  CONFIG_FORMAT_AUTO, /* '{' as first non-blank byte: JSON, else CSV */
  CONFIG_FORMAT_JSON,
  CONFIG_FORMAT_CSV
};

/* stream.start_offset: where a partition with no offset in the state starts. */
enum { CONFIG_START_EARLIEST, CONFIG_START_LATEST };

/* state.compression: RocksDB block compression. */
enum {
  CONFIG_COMPRESSION_NONE,
  CONFIG_COMPRESSION_SNAPPY,
  CONFIG_COMPRESSION_LZ4,
  CONFIG_COMPRESSION_ZSTD
};

/* One entry of the [kafka] section, handed verbatim to rd_kafka_conf_set. */
typedef struct {
  char *key;    /* librdkafka property name, e.g. "bootstrap.servers" */
  char *value;  /* its value, verbatim */
  char *origin; /* where it was set: the file path or "command line", for error messages */
  int line;     /* line in origin; 0 for the command line */
} config_kv;

/* One parsed entry of stream.type_weights. */
typedef struct {
  char *name;    /* the event type, e.g. "purchase"; non-empty, unique in the list */
  double weight; /* its weight in [0, 1000]; 0 drops events of that type */
} config_type_weight;

/* Every setting of flamed. Plain data: config_init fills it, config_free releases it. Strings
 * are owned by the struct (never NULL after config_init; "" when empty). */
typedef struct {
  struct {
    char *topic;                /* Kafka topic of interaction events; message key = user id */
    char *group;                /* Kafka consumer group id */
    char *dead_letter_topic;    /* topic for rejected events; "" = count and log them only */
    int format;                 /* CONFIG_FORMAT_* */
    int64_t batch_max;          /* messages drained per loop wakeup (one RocksDB write each) */
    int64_t max_message_bytes;  /* bytes; longer messages are rejected */
    int64_t max_id_bytes;       /* bytes; longer user or item ids are rejected */
    char *type_weights;         /* "name:weight,..." as written; parsed into types */
    double default_type_weight; /* weight of events with no type or an unlisted one; 0 drops */
    int64_t min_ts_ms;          /* ms since the Unix epoch; older timestamps are rejected */
    int64_t max_future_ms;      /* ms; timestamps further ahead of the clock are rejected */
    int start_offset;           /* CONFIG_START_* */
    double close_timeout_s;     /* a shutdown stops waiting for the group leave after this */
    bool static_membership;     /* join with group.instance.id */
    char *instance_id;          /* group.instance.id; "" derives one (stream_instance_id) */
    config_type_weight *types;  /* type_weights parsed: ntypes entries, in written order */
    size_t ntypes;              /* number of entries in types (0 when type_weights is "") */
  } stream;
  struct {
    char *dir;             /* RocksDB directory */
    int64_t seq_len;       /* items kept per user (the newest ones) */
    int64_t cache_mb;      /* MiB of RocksDB block cache */
    int compression;       /* CONFIG_COMPRESSION_* */
    bool wal;              /* RocksDB write-ahead log on */
    bool sync;             /* fsync the WAL at every batch */
    int64_t write_queue;   /* sealed batches the writer thread may hold */
    int64_t min_free_mb;   /* below this much free disk, ingest pauses */
    char *rocksdb_log_dir; /* RocksDB's LOG files; "" picks one off the state disk */
  } state;
  struct {
    char *anchor; /* frozen anchor checkpoint; "" = bootstrap one from the stored history */
    char *anchor_item_ids; /* "item-{}": row i of model.anchor is the item with that id */
    char *dir;       /* promoted snapshots and the bootstrapped anchor; "" = <state.dir>/models */
    int64_t dim;     /* bootstrap network: channels */
    int64_t blocks;  /* bootstrap network: transformer blocks */
    int64_t heads;   /* bootstrap network: attention heads */
    int64_t maxlen;  /* bootstrap network: max sequence length L */
    double dropout;  /* training dropout */
    int64_t keep;    /* promoted snapshots kept on disk */
    int64_t popular; /* items in the popularity fallback list */
  } model;
  struct {
    bool enabled;                 /* false: start with training paused */
    double interval_s;            /* seconds between rounds */
    int64_t min_new_events;       /* a round starts early once this many events arrived */
    int64_t min_users;            /* touched users a round needs */
    int64_t steps;                /* optimizer steps per round */
    int64_t batch;                /* samples per step */
    double lr;                    /* Adam learning rate of the rounds */
    double tau;                   /* NT-Xent temperature */
    double lambda0, lambda_r;     /* lambda at a round's first and last step */
    int64_t replay_users;         /* older users replayed per round (against forgetting) */
    int64_t replay_pool;          /* stored users the replayed ones are drawn from */
    int64_t holdout_users;        /* most touched users whose newest event is held out */
    int64_t retain_users;         /* other users whose newest event checks for forgetting */
    double margin;                /* NDCG@10 a candidate may lose against the serving model */
    int64_t reanchor_rounds;      /* promotions after which the serving net becomes the anchor */
    int64_t threads;              /* BLAS threads of the trainer */
    int64_t nice;                 /* niceness of the trainer thread */
    double duty;                  /* share of one core the trainer may use while training */
    bool keep_adam;               /* rounds continue the previous round's Adam moments */
    bool new_targets_only;        /* touched users train on their new events only */
    bool seed_new_items;          /* new items' rows from the items before them */
    int64_t sampled_items;        /* catalogues above this train with sampled softmax */
    int64_t negatives;            /* sampled candidates per step */
    int64_t bootstrap_min_users;  /* users needed before an anchor is pretrained */
    int64_t bootstrap_min_events; /* events needed before an anchor is pretrained */
    int64_t bootstrap_epochs;     /* epochs of that pretraining */
    int64_t seed;                 /* initialisation, sampling and dropout */
  } train;
  struct {
    char *listen;               /* API address */
    int64_t port;               /* API port (0: ephemeral, logged) */
    char *admin_listen;         /* admin address */
    int64_t admin_port;         /* admin port (0: ephemeral, logged) */
    char *admin_token_file;     /* file holding the admin bearer token; "" = admin disabled */
    int64_t max_conns;          /* open connections per listener */
    int64_t max_conns_per_peer; /* open connections per listener from one IP (0: no cap) */
    int64_t max_head_bytes;     /* request line + headers */
    int64_t max_body_bytes;     /* request body */
    int64_t max_pipeline;       /* queued responses per connection before reading pauses */
    int64_t idle_timeout_ms;    /* idle keep-alive connections are closed after this */
    int64_t request_timeout_ms; /* a request must arrive in full within this */
    int64_t header_timeout_ms;  /* a request head must arrive within this (0: no such bound) */
    int64_t max_k;              /* largest k a client may ask for */
    int64_t online_eval_per_s;  /* incoming events ranked per second for the online metrics */
    double online_eval_share;   /* share of users (by id hash) ranked online; 1: all */
    bool online_eval_baseline;  /* rank them with the anchor's weights too */
    int64_t workers;            /* threads scoring large catalogues (0: on the loop) */
    int64_t offload_items;      /* catalogues this large are scored on those threads */
  } api;
  struct {
    int level;                /* FL_LOG_DEBUG..FL_LOG_ERROR (common/common.h) */
    int64_t stats_interval_s; /* seconds between periodic stats lines; 0 = none */
  } log;
  config_kv *kafka; /* the [kafka] section: nkafka entries, in the order first set */
  size_t nkafka;    /* number of entries in kafka */
} config;

/* Setting types, and the C type of the field each one stores into. */
typedef enum {
  CONFIG_INT,    /* int64_t, range [min, max] */
  CONFIG_DOUBLE, /* double, finite, range [dmin, dmax] */
  CONFIG_BOOL,   /* bool */
  CONFIG_STRING, /* char *, owned by the config */
  CONFIG_ENUM    /* int: index of the value in choices */
} config_type;

/* One row of the settings table. The table is static and read-only. */
typedef struct config_setting {
  const char *section; /* "stream", "state", "log" */
  const char *key;     /* "batch_max": the full name is section.key */
  config_type type;
  const char *def;     /* default, as text in the value syntax; config_init parses it */
  int64_t min, max;    /* CONFIG_INT: inclusive range */
  double dmin, dmax;   /* CONFIG_DOUBLE: inclusive range */
  const char *choices; /* CONFIG_ENUM: "a|b|c"; the stored int is the index of the choice */
  bool reloadable;     /* a running daemon may apply a new value without a restart */
  const char *help;    /* one line, for the operator: what it does, units, what 0 or "" mean */
  size_t offset;       /* offsetof(config, field) */
  /* Optional check beyond type and range, NULL for none. Called with the value that passed
   * the type checks, before it is stored; may fill fields derived from it (stream.types).
   * Returns 0, or a negative code with the problem (no prefix) in msg, leaving c unchanged. */
  int (*check)(config *c, const char *value, char *msg, size_t msglen);
} config_setting;

/* Read access to the settings table: *out points at the rows (static, never freed), the
 * return value is their count. Rows of one section are contiguous; sections appear in the
 * order stream, state, log. */
size_t config_table(const config_setting **out);

/* Fills c with the defaults of the table (c's previous contents are ignored, not freed).
 * Aborts only on out-of-memory. */
void config_init(config *c);

/* Releases everything c owns and zeroes it; c may then be config_init'ed again. Calling it on
 * a zeroed config is harmless. */
void config_free(config *c);

/* Sets one setting from text. name is "section.key" ("stream.batch_max"); "kafka.<property>"
 * adds or replaces a [kafka] entry (the property is everything after "kafka.", dots included:
 * "kafka.bootstrap.servers" sets "bootstrap.servers"; letters, digits, '.', '_', '-' only;
 * "group.id" is refused: it is stream.group). origin and line say where the value comes from,
 * for messages and for config_kv (origin NULL means "command line"; line 0 means no line).
 * The value is copied; it is checked by type, range and the row's check, see the syntax above.
 * Returns 0, or FL_EFORMAT (unknown setting, malformed value) or FL_ERANGE (out of range, too
 * long) with one line in err: "origin:line: name: problem" ("origin: name: problem" when line
 * is 0); an unknown name comes with a did-you-mean when a setting has a close name. On failure
 * c is unchanged. */
int config_set(config *c, const char *name, const char *value, const char *origin, int line,
               char *err, size_t errlen);

/* Applies an INI file on top of c (libinih): "[section]" headers, "key = value" lines (inih
 * also takes "key: value"), comments from ';' or '#' at the beginning of a line or ';' after a
 * blank; a key given twice takes the last value. Each key goes through config_set with origin
 * path and its line number. Refused with an error naming path:line: a key outside any section,
 * an unknown section or key, a bad value, a syntax error, an indented key line (inih would read
 * it as the continuation of the value above: multi-line values are not supported), a line
 * longer than CONFIG_LINE_MAX (an overlong comment line is accepted). An unreadable file gives
 * -errno and "cannot read path: reason". All or nothing: on any failure c is unchanged and err
 * holds the first problem in file order. Returns 0 or a negative code. */
int config_load_file(config *c, const char *path, char *err, size_t errlen);

/* Applies one command-line argument "--section.key=value" (origin "command line"), e.g.
 * "--stream.batch_max=500" or "--kafka.bootstrap.servers=host:9092". An argument is taken as
 * a setting when it starts with "--" and the name before any '=' contains a '.': flamed's own
 * flags have no dot. Returns 1 if arg is not of that form (the caller's own flag, untouched),
 * 0 when applied, a negative code with the problem in err otherwise (a dotted name without
 * "=value" is an error, not a flag). On failure c is unchanged. */
int config_apply_arg(config *c, const char *arg, char *err, size_t errlen);

/* Cross-field checks, to run once the file and the overrides are applied: stream.topic,
 * stream.group and state.dir are not empty, stream.dead_letter_topic differs from
 * stream.topic, state.sync is not on without state.wal, and stream.type_weights with
 * stream.default_type_weight do not drop every event. Returns 0, or FL_EMISSING (an empty
 * required setting) / FL_ERANGE (settings that contradict each other) with the first problem
 * in err. */
int config_validate(const config *c, char *err, size_t errlen);

/* Writes every effective value as INI text that config_load_file reads back to an identical
 * config: for each section "[section]", then per setting "# help", "# default: X, range: ...",
 * "key = value"; then "[kafka]" with its entries and where each was set. A dump of a fresh
 * config_init is the complete example config. Write errors are left to the caller (ferror). */
void config_dump(const config *c, FILE *f);

/* For a reload: counts the settings whose value differs between the running config and the
 * next one although they are not reloadable (any change in [kafka] counts, per property).
 * Writes their names, comma-separated ("stream.topic, kafka.bootstrap.servers"), into names
 * (may be NULL; truncated to nameslen). 0 means next may be applied without a restart. */
size_t config_needs_restart(const config *running, const config *next, char *names,
                            size_t nameslen);

/* The learning part of a round as the train.* and model.dropout settings say (config/round.c):
 * the daemon's trainer and `flame replay` take their rounds' settings from here, so that the
 * replay runs the daemon's rounds with the daemon's settings. */
struct round_opts;
void config_round_opts(const config *c, struct round_opts *o);

#endif
