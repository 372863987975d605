/* tools/produce.h: replays users' item sequences into a Kafka topic as a clickstream
 * (`flame produce`, the demo, the ingest benchmark and the integration tests).
 *
 * Users are interleaved round-robin, each user's order preserved: with the user id as the
 * message key, all of a user's events land in one partition, in order (the producer is
 * idempotent, so retries cannot reorder them). Ids are strings, as in production:
 * "user-<id>" and "item-<id>". */
#ifndef FL_STREAM_PRODUCE_H
#define FL_STREAM_PRODUCE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

enum { STREAM_PRODUCE_JSON = 1, STREAM_PRODUCE_CSV = 2 }; /* as config's stream.format */

typedef struct {
  const char *brokers; /* bootstrap.servers */
  const char *topic;
  int format;                  /* STREAM_PRODUCE_JSON | STREAM_PRODUCE_CSV */
  double rate;                 /* events per second; 0: as fast as the broker takes them */
  uint64_t skip;               /* the first `skip` events of the replay order are not sent */
  uint64_t limit;              /* stop after this many events (sent ones); 0: all */
  volatile sig_atomic_t *stop; /* set (e.g. by a signal handler) to stop early; may be NULL */
  uint64_t malformed_every;    /* every Nth message is a malformed one instead (bad JSON, a
                                  missing item, an empty user, a bad ts, in turn); 0: none */
  int align_end;               /* the interleaving, see stream_replay_order */
} stream_produce_opts;

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
} stream_produce_result;

/* Replays nusers sequences: user u's items are items[off[u] .. off[u+1]) (item ids >= 1),
 * its id user_ids[u]. Each payload carries "ts" = the wall clock in ms when it is produced.
 * Blocks until every event is acknowledged or failed (bounded: 60 s after the last produce).
 * Returns 0, or a negative code with err filled when the producer cannot be created. */
int stream_produce_sequences(const stream_produce_opts *o, size_t nusers, const size_t *off,
                             const int32_t *items, const int64_t *user_ids,
                             stream_produce_result *r, char *err, size_t errlen);

#endif
