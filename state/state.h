/* state/state.h: flamed's RocksDB store.
 *
 * What it keeps: every user's recent item sequence (the newest seq_len entries, oldest first),
 * the item and user dictionaries (string ids to dense indices assigned on first sight, from 1),
 * the Kafka partitions' next offsets, and a few counters. Everything a drained Kafka batch
 * changes is written by ONE rocksdb_write (state_batch_commit): sequence appends, new dictionary
 * entries, the partitions' next offsets and the counters commit together or not at all, so a
 * kill -9 at any moment loses nothing and applies nothing twice (docs/ARCHITECTURE.md,
 * "Exactly-once state").
 *
 * Ids are opaque byte strings of 1..STATE_ID_MAX bytes (any bytes, NUL included: lengths are
 * always passed); checking that they are UTF-8 is stream/'s job.
 *
 * Errors: functions return 0 or a negative code (FL_E* from common/common.h, or -errno);
 * those with an err buffer also write a one-line message there.
 *
 * Thread-safety: a state_db and its batch belong to one thread (the daemon's loop), which
 * makes every call, but for the writes a state_writer (below) makes on its own
 * thread. The exceptions are state_seq_get, state_seq_foreach and state_offset_get:
 * they read RocksDB only (never the in-memory dictionaries), so other threads may call them
 * while the owning thread adds and commits; they see committed data only. The dictionaries
 * (state_item_*, state_user_*, state_get_stats) are plain hash tables with no locking: call
 * them from the owning thread only. Nothing may run concurrently with state_close. */
#ifndef FL_STATE_H
#define FL_STATE_H

#include <stddef.h>
#include <stdint.h>

#define STATE_ID_MAX 256         /* longest user or item id, bytes */
#define STATE_TOPIC_MAX 249      /* longest Kafka topic name, bytes (Kafka's own limit) */
#define STATE_SEQ_LEN_MAX 65536u /* largest seq_len (a sequence value is 16 bytes an entry) */

enum {
  STATE_COMPRESSION_NONE,
  STATE_COMPRESSION_SNAPPY,
  STATE_COMPRESSION_LZ4,
  STATE_COMPRESSION_ZSTD,
};

typedef struct state_db state_db;       /* opaque: an open store */
typedef struct state_batch state_batch; /* opaque: the changes of one drained Kafka batch */

typedef struct {
  const char *dir;     /* RocksDB directory, created if missing (its parent must exist) */
  size_t seq_len;      /* entries kept per user, 1..STATE_SEQ_LEN_MAX */
  size_t cache_mb;     /* block cache, MiB; 0 = no block cache */
  int compression;     /* STATE_COMPRESSION_* for SST files */
  int wal;             /* 1: write-ahead log on (needed for crash safety); 0: off (close flushes) */
  int sync;            /* 1: fsync the WAL at every commit (needs wal = 1) */
  const char *log_dir; /* RocksDB's own info LOG files go here; NULL or "": in dir */
} state_opts;

typedef struct {
  uint32_t item; /* dense item index, >= 1 */
  float weight;  /* event weight, finite */
  int64_t ts_ms; /* event time, ms since the epoch */
} state_entry;

typedef struct {
  uint64_t disk_bytes;   /* SST + WAL bytes on disk (file sizes) */
  uint64_t users, items; /* dictionary sizes (highest indices), uncommitted entries included */
  uint64_t events;       /* events committed since the store was created */
  uint64_t seq_dropped;  /* merges that met a corrupt stored sequence or operand and dropped it */
} state_stats;

/* Opens (creating if missing) the store in o->dir and loads both dictionaries into memory.
 * On success *out owns the store (state_close frees it). On failure *out = NULL, err holds one
 * line naming the directory and the cause, and the return value says which:
 *   -EACCES      the directory (or its parent) is not readable/writable/searchable;
 *   -ENOENT      the parent directory is missing;  -ENOTDIR  dir is not a directory;
 *   FL_ELOCKED   another process (or another state_db in this one) has it open;
 *   FL_ECORRUPT  RocksDB metadata is damaged (CURRENT, MANIFEST), or a dictionary, offset or
 *                meta value does not validate, or data files exist without CURRENT;
 *   FL_EVERSION  the store was written with a schema version this build does not read;
 *   FL_ERANGE    an option is out of range (seq_len, compression, sync without wal);
 *   FL_ESTORAGE  any other RocksDB error.
 * A change of seq_len between runs is allowed: sequences are truncated when merged. */
int state_open(state_db **out, const state_opts *o, char *err, size_t errlen);

/* Closes the store (RocksDB flushes its memtables first when the WAL is off). Any batch must
 * have been freed first (a live batch is a programmer error: abort). NULL is a no-op. */
void state_close(state_db *db);

/* ---- Dictionaries (in memory; owning thread only) ----
 * Memory per entry (items and users alike): the id bytes, an 8-byte offset, and 16 to 32 bytes
 * of hash slots (8-byte slots, the table kept between 1/4 and 1/2 full): about 32 + len bytes,
 * up to 40 + 2 len just after the buffers doubled. 1M users of 20-byte ids: about 55 MB. */

/* Index of item id, or -1 if unseen. Entries assigned by an uncommitted batch are included. */
int64_t state_item_find(const state_db *db, const char *id, size_t len);
/* The id of item idx (not NUL-terminated; *len set), or NULL when idx is 0 or beyond the
 * highest index. The pointer is valid until the next state_batch_add, _clear, _free or
 * state_close. */
const char *state_item_id(const state_db *db, uint32_t idx, size_t *len);
/* Highest item index (= number of items; 0 when none). */
uint32_t state_item_count(const state_db *db);
/* Index of user id, or -1 if unseen. */
int64_t state_user_find(const state_db *db, const char *id, size_t len);
/* The id of user idx, as state_item_id does for items. */
const char *state_user_id(const state_db *db, uint32_t idx, size_t *len);

/* Highest user index (= number of users). */
uint32_t state_user_count(const state_db *db);

/* ---- Batches ---- */

/* A new, empty batch for db. One batch per store at a time: returns NULL if db already has
 * one (a dictionary can roll back only its newest entries, so two batches assigning indices
 * would corrupt each other). Reuse it after each commit. */
state_batch *state_batch_new(state_db *db);
/* Frees b; uncommitted content is dropped as by state_batch_clear. NULL is a no-op. */
void state_batch_free(state_batch *b);
/* Appends one event to user's sequence. An unseen user or item gets its index at once
 * (visible to state_*_find immediately), recorded in the batch to be stored at commit. A user's
 * events within one batch are coalesced into one merge operand holding at most seq_len entries.
 * Returns 0; FL_ERANGE if an id is empty or longer than STATE_ID_MAX, weight is not finite, or a
 * dictionary is full (2^32 - 1 entries); on error nothing changed. */
int state_batch_add(state_batch *b, const char *user, size_t ulen, const char *item, size_t ilen,
                    int64_t ts_ms, float weight);
/* Interns an item id without an event (an imported anchor's catalogue): its index, assigned
 * now if unseen and stored at the next commit; FL_ERANGE for a bad length or a full
 * dictionary. */
int64_t state_batch_item(state_batch *b, const char *item, size_t ilen);

/* Records that partition of topic continues at next_offset once this batch is stored; the last
 * call per (topic, partition) wins. FL_ERANGE for an empty topic, one longer than
 * STATE_TOPIC_MAX, a negative partition or offset. */
int state_batch_offset(state_batch *b, const char *topic, int32_t partition, int64_t next_offset);
/* Number of events added since the batch was last committed or cleared. */
size_t state_batch_events(const state_batch *b);
/* Writes the whole batch as ONE rocksdb_write: a merge per touched user, the new dictionary
 * entries, the offsets and the meta counters. An empty batch writes nothing. On success returns
 * 0 and the batch is cleared for reuse (its dictionary entries are now stored). On failure
 * returns a negative code (FL_ESTORAGE, -ENOSPC, -EACCES) with err filled, and the batch is
 * unchanged: the caller may retry it, or state_batch_clear it. */
int state_batch_commit(state_batch *b, char *err, size_t errlen);
/* Drops the batch's events and offsets and rolls back the dictionary indices it assigned, so
 * a later batch assigns them again in its own order (the indices stay dense). */
void state_batch_clear(state_batch *b);

/* ---- Reads (committed data; safe from other threads alongside the owner's writes) ---- */

/* *next = the stored next offset of (topic, partition). 0 on success, FL_EMISSING when none
 * is stored, FL_ECORRUPT for a value that does not validate, FL_ESTORAGE on a read error. */
int state_offset_get(state_db *db, const char *topic, int32_t partition, int64_t *next);
/* Copies the newest min(max, seq_len, stored) entries of user's sequence, oldest first, into
 * out; *n = how many. FL_EMISSING (and *n = 0) for a user with no committed events,
 * FL_ECORRUPT for a stored sequence that does not validate (the user's next commit replaces
 * it), FL_ERANGE for a bad id length, FL_ESTORAGE on a read error. */
int state_seq_get(state_db *db, const char *user, size_t ulen, state_entry *out, size_t max,
                  size_t *n);
/* Calls fn for every stored sequence (newest seq_len entries, oldest first; e is valid during
 * the call only), in unspecified order, from one consistent snapshot. Stops early when fn
 * returns nonzero and returns that value; FL_ECORRUPT for a stored value that does not
 * validate; FL_ESTORAGE on a read error; else 0. */
int state_seq_foreach(state_db *db,
                      int (*fn)(void *ctx, const char *user, size_t ulen, const state_entry *e,
                                size_t n),
                      void *ctx);

/* Fills s (owning thread only). Returns 0, or -errno if the directory cannot be listed. */
int state_get_stats(state_db *db, state_stats *s);

/* For tests (fault injection, in the spirit of SQLite's test hooks; owning thread): the next n
 * commits are sent to RocksDB with invalid write options (sync without WAL), so rocksdb_write
 * itself fails and the real failure path runs. n = 0 turns it off. */
void state_test_fail_commits(state_db *db, int n);

/* ---- the writer thread (writer.c): the state's writes on a thread of their own, so that the
 * thread that builds batches (the daemon's loop, which also serves HTTP) never waits on the disk.
 *
 * The owning thread seals each batch into a queue of at most `depth` writes
 * (state_writer_submit); the writer thread writes them in order, one rocksdb_write each, and
 * retries the oldest with backoff (100 ms doubling to 5 s) until it succeeds: a sealed write is
 * never dropped or reordered, so the dictionary indices it assigned stay valid, and the Kafka
 * offsets a batch carries become durable only with the events they cover. When the queue is
 * full the owner stops consuming (submit says FL_EBUSY) until a write completes.
 *
 * The writer also watches the free space of the state's filesystem (statvfs on its own thread,
 * before every write and once a second when idle): below min_free_bytes it reports low_space,
 * writes nothing (what is queued waits) and the owner pauses ingest, before RocksDB meets a
 * full disk; it clears once free space is back above min_free_bytes plus a margin (an eighth
 * of it, at least 1 MiB), so a disk at the threshold does not flap.
 *
 * A write that RocksDB refused for lack of space leaves the store refusing every later write
 * (a background error that librocksdb's C API cannot resume; a reopen clears it). When writes
 * still fail that way STUCK_S (30 s) after free space is above the threshold, the writer
 * reports stuck: the owner restarts (flamed exits with status 1; systemd's Restart=on-failure
 * starts it again); nothing is lost, since offsets are durable only with their events.
 *
 * Completion: after each write (or failed attempt) and each change of low_space the writer
 * calls wake(ctx) on its thread; the owner then reads state_writer_status on its own thread.
 *
 * Test hook: while the file hold_path exists (when set), the writer waits before each write,
 * as a stalled disk would make it wait. */
typedef struct state_writer state_writer;

typedef struct {
  size_t depth;            /* sealed writes queued at most (>= 1) */
  uint64_t min_free_bytes; /* low-space threshold; 0: never low */
  const char *hold_path;   /* test hook (see above); NULL: none */
  void (*wake)(void *ctx); /* called on the writer thread; must be async-signal-light */
  void *wake_ctx;
  double stuck_s; /* seconds of no-space failures with space back before stuck (0: STUCK_S) */
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
  int stuck;                /* RocksDB keeps refusing writes for lack of space, though space is
                               back: only reopening the store clears it (see above) */
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
