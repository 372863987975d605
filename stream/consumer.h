/* stream/consumer.h: the Kafka consumer of flamed, on the libuv loop.
 *
 * A librdkafka consumer in a consumer group, a static member (group.instance.id, from
 * stream.instance_id) so that a restarted instance gets its partitions back at once.
 * librdkafka writes a byte to a pipe whenever its consumer queue goes from empty to non-empty
 * (rd_kafka_queue_io_event_enable); the loop watches that pipe, and each wakeup drains at most
 * stream.batch_max messages, decodes and validates them, and hands the good events together
 * with the partitions' next offsets to the state writer (state/writer.h) as ONE state write,
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
#ifndef FL_STREAM_CONSUMER_H
#define FL_STREAM_CONSUMER_H

#include "common/common.h"
#include "config/config.h"
#include "state/state.h"
#include "stream/event.h"

#include <stdint.h>
#include <uv.h>

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
} stream_stats;

/* Checks cfg's [kafka] properties (and the daemon's own) the way stream_consumer_new applies
 * them, without creating a client: --test-config. Returns 0 or negative with err filled. */
int stream_config_check(const config *cfg, char *err, size_t errlen);

/* Creates a consumer for cfg's [stream] and [kafka] settings storing into db, on loop.
 * cfg and db must outlive it. A bad [kafka] property is an error naming its origin:line.
 * Returns 0 or a negative code with err filled. */
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
