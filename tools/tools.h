/* tools/tools.h: the development kit of the `flame` tool that tests and benchmarks use too
 * (the library flame_devkit): an embedded Kafka (`flame broker`) and a clickstream replayer
 * (`flame produce`).
 *
 * The embedded broker:
 * librdkafka's mock cluster: real Kafka protocol on loopback TCP, messages kept in memory,
 * consumer groups with eager and cooperative assignors, idempotent producers. Its brokers
 * listen on ports the OS picks; with a fixed port, a small TCP forwarder on 127.0.0.1:port
 * passes bootstrap connections through to the first broker, so clients can be configured
 * before the broker starts, and find it again after it restarts (they learn the brokers'
 * own addresses from the metadata the forwarder relays). */
#ifndef FL_TOOLS_H
#define FL_TOOLS_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tools_broker tools_broker;

/* Starts nbrokers mock brokers and creates the topics with partitions each. port 0: no
 * forwarder. Returns 0, or a negative code with err filled (e.g. the port is taken). */
int tools_broker_start(tools_broker **out, int nbrokers, int port, int partitions,
                       const char *const *topics, size_t ntopics, char *err, size_t errlen);

/* The bootstrap address for clients: 127.0.0.1:port with a forwarder, else the brokers'. */
const char *tools_broker_bootstraps(const tools_broker *b);

/* Creates one more topic (an existing one is left as it is). Returns 0 or negative. */
int tools_broker_topic(tools_broker *b, const char *topic, int partitions);

/* Takes broker id (1-based) down or back up: its connections close and it refuses new
 * ones. For tests of outages. Returns 0 or negative. */
int tools_broker_set_up(tools_broker *b, int id, int up);

/* A consumer handle that never subscribes, for looking at a topic or a group from outside
 * (watermarks, committed offsets, reading a topic by assignment). NULL on a bad address. */
rd_kafka_t *tools_observer(const char *bootstrap, const char *group);

/* The sum over partitions 0..nparts-1 of topic of the group's committed offsets (flamed
 * commits only what is durable in its state), or -1 when the broker does not answer. */
int64_t tools_group_committed(const char *bootstrap, const char *group, const char *topic,
                              int nparts);

/* Waits until the group's committed offsets reach the high watermarks of every partition
 * (as they are when called), polling every poll_ms. Returns 1, or 0 after timeout_s. */
int tools_group_caught_up(const char *bootstrap, const char *group, const char *topic, int nparts,
                          double timeout_s, int poll_ms);

/* Stops the forwarder and destroys the cluster and its messages. */
void tools_broker_stop(tools_broker *b);

/* ---- the replayer (produce.c) ----
 * Replays users' item sequences into a Kafka topic as a clickstream
 * (`flame produce`, the demo, the ingest benchmark and the integration tests).
 *
 * Users are interleaved round-robin, each user's order preserved: with the user id as the
 * message key, all of a user's events land in one partition, in order (the producer is
 * idempotent, so retries cannot reorder them). Ids are strings, as in production:
 * "user-<id>" and "item-<id>". */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

enum { TOOLS_PRODUCE_JSON = 1, TOOLS_PRODUCE_CSV = 2 }; /* as config's stream.format */

typedef struct {
  const char *brokers; /* bootstrap.servers */
  const char *topic;
  int format;                  /* TOOLS_PRODUCE_JSON | TOOLS_PRODUCE_CSV */
  double rate;                 /* events per second; 0: as fast as the broker takes them */
  uint64_t skip;               /* the first `skip` events of the replay order are not sent */
  uint64_t limit;              /* stop after this many events (sent ones); 0: all */
  volatile sig_atomic_t *stop; /* set (e.g. by a signal handler) to stop early; may be NULL */
  uint64_t malformed_every;    /* every Nth message is a malformed one instead (bad JSON, a
                                  missing item, an empty user, a bad ts, in turn); 0: none */
  int align_end;               /* the interleaving, see stream_replay_order */
  const size_t *order; /* not NULL: the users of the events in this order (off[nusers] of them,
                          each the user's next item) instead of the interleaving */
  const double *ts;    /* not NULL: each event's own timestamp (seconds; laid out as items) is
                          its "ts", instead of the produce time */
  double speedup;      /* > 0 with ts: paced by the timestamps, speedup times faster (rate is
                          then ignored) */
} tools_produce_opts;

/* The replay order as users: order[n] is the user of the n-th event, which is that user's
 * next item (order has off[nusers] entries). Round r holds every user's item r, counted from
 * the start of the sequences (align_end 0: every user's first event, then every user's
 * second, ...) or from their ends (align_end 1: round r holds the items that are maxlen - r
 * from the end, so every user's newest event is in the last round). The datasets carry no
 * timestamps; aligned at the end, the replay follows the time the leave-last-out protocol
 * assumes, in which every user's last items are the newest events. */
void stream_replay_order(size_t nusers, const size_t *off, int align_end, size_t *order);

typedef struct {
  uint64_t sent;   /* events acknowledged by the broker (malformed ones included) */
  uint64_t failed; /* events whose delivery failed */
  double seconds;  /* from the first produce to the last acknowledgement */
} tools_produce_result;

/* Replays nusers sequences: user u's items are items[off[u] .. off[u+1]) (item ids >= 1),
 * its id user_ids[u]. Each payload carries "ts" = the wall clock in ms when it is produced, or
 * the event's own timestamp (o->ts).
 * Blocks until every event is acknowledged or failed (bounded: 60 s after the last produce).
 * Returns 0, or a negative code with err filled when the producer cannot be created. */
int tools_produce_sequences(const tools_produce_opts *o, size_t nusers, const size_t *off,
                            const int32_t *items, const int64_t *user_ids, tools_produce_result *r,
                            char *err, size_t errlen);

#endif
