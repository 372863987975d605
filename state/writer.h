/* state/writer.h: the state's writes on a thread of their own, so that the thread that builds
 * batches (the daemon's loop, which also serves HTTP) never waits on the disk.
 *
 * The owning thread seals each batch into a queue of at most `depth` writes
 * (state_writer_submit); the writer thread writes them in order, one rocksdb_write each, and
 * retries the oldest with backoff (100 ms doubling to 5 s) until it succeeds: a sealed write is
 * never dropped or reordered, so the dictionary indices it assigned stay valid, and the Kafka
 * offsets a batch carries become durable only with the events they cover. When the queue is
 * full the owner stops consuming (submit says FL_EBUSY) until a write completes.
 *
 * The writer also watches the free space of the state's filesystem (statvfs, once a second,
 * on its own thread): below min_free_bytes it reports low_space, and the owner pauses ingest
 * before RocksDB meets a full disk; it clears once free space is back above min_free_bytes
 * plus a margin (an eighth of it, at least 1 MiB), so a disk at the threshold does not flap.
 *
 * Completion: after each write (or failed attempt) and each change of low_space the writer
 * calls wake(ctx) on its thread; the owner then reads state_writer_status on its own thread.
 *
 * Test hook: while the file hold_path exists (when set), the writer waits before each write,
 * as a stalled disk would make it wait. */
#ifndef FL_STATE_WRITER_H
#define FL_STATE_WRITER_H

#include "state/state.h"

#include <stdint.h>

typedef struct state_writer state_writer;

typedef struct {
  size_t depth;            /* sealed writes queued at most (>= 1) */
  uint64_t min_free_bytes; /* low-space threshold; 0: never low */
  const char *hold_path;   /* test hook (see above); NULL: none */
  void (*wake)(void *ctx); /* called on the writer thread; must be async-signal-light */
  void *wake_ctx;
} state_writer_opts;

typedef struct {
  uint64_t submitted, done; /* writes sealed / written: tickets 1..done are durable */
  size_t queued;            /* submitted - done */
  uint64_t failures;        /* failed write attempts, ever */
  int failing;              /* the oldest write's last attempt failed */
  char last_err[256];       /* that failure, one line */
  double head_s;            /* seconds the oldest queued write has waited (0 when none) */
  int low_space;            /* free space is below the threshold */
  uint64_t free_bytes;      /* at the last check; UINT64_MAX before the first */
  uint64_t events_written;  /* events in written batches */
} state_writer_status;

/* Starts the writer thread for db (which it writes to until stopped). 0 or FL_ERANGE. */
int state_writer_start(state_writer **out, state_db *db, const state_writer_opts *o);

/* Seals b and queues its write; *ticket (when not NULL) = its ticket, the submitted count
 * after it. 0; FL_EMISSING when b is empty (nothing queued, no ticket); FL_EBUSY when depth
 * writes are queued (b unchanged). Owning thread. */
int state_writer_submit(state_writer *w, state_batch *b, uint64_t *ticket);

void state_writer_status_get(state_writer *w, state_writer_status *s);

/* Stops the thread: it writes what is queued until timeout_s has passed, then drops the rest
 * (never consumed as stored: their offsets were not written either). Returns the number of
 * events dropped (0 when all were written), or FL_EBUSY when the thread is still inside a
 * write at the deadline (a frozen disk): then w is leaked, the thread left running, and the
 * caller must not close the store (the process should exit; the WAL keeps what was written). */
int64_t state_writer_stop(state_writer *w, double timeout_s);

#endif
