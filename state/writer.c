/* state/writer.c: the writer thread (contract in state.h).
 *
 * One mutex guards the queue and the status; the thread holds it except while it writes,
 * sleeps through a backoff, waits on the hold file or asks statvfs. The owner's calls only
 * ever take the mutex for a few instructions, never across a disk operation. */
#define _GNU_SOURCE

#include "common/common.h"
#include "state/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

enum {
  RETRY_MIN_MS = 100,
  RETRY_MAX_MS = 5000,
  SPACE_EVERY_MS = 1000, /* free-space check interval when idle or low */
  STUCK_S = 30,          /* no-space failures with space back for this long: stuck */
  HOLD_POLL_MS = 10,
};

typedef struct {
  rocksdb_writebatch_t *wb;
  size_t events;
  double since; /* fl_now() when sealed */
} sealed;

struct state_writer {
  state_db *db;
  state_writer_opts o;
  char *hold; /* o.hold_path, copied */
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  sealed *q; /* ring of o.depth */
  size_t head, n;
  uint64_t submitted, done, failures, events_written;
  int failing, low_space, stop, stuck;
  double nospace_since; /* fl_now() of the first no-space failure with space above the
                           threshold, since the last success (0: none) */
  double stop_by;       /* fl_now() after which a stop drops what is queued */
  uint64_t free_bytes;  /* UINT64_MAX until the first check */
  double space_at;      /* fl_now() of the next free-space check */
  char last_err[256];
};

static void abs_in(struct timespec *ts, double s) {
  clock_gettime(CLOCK_REALTIME, ts);
  double ns = (double)ts->tv_nsec + s * 1e9;
  ts->tv_sec += (time_t)(ns / 1e9);
  ts->tv_nsec = (long)(ns - (double)(time_t)(ns / 1e9) * 1e9);
}

/* Waits on the condition for up to s seconds (mu held). */
static void nap(state_writer *w, double s) {
  struct timespec ts;
  abs_in(&ts, s);
  pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

static int past_deadline(const state_writer *w) { return w->stop && fl_now() >= w->stop_by; }

/* Measures free space (mu held; released around statvfs) and flips low_space with the margin
 * of state.h. Returns 1 when low_space changed. */
static int check_space(state_writer *w) {
  w->space_at = fl_now() + SPACE_EVERY_MS / 1000.0;
  if (!w->o.min_free_bytes) return 0;
  pthread_mutex_unlock(&w->mu);
  struct statvfs sv;
  int ok = statvfs(state__dir(w->db), &sv) == 0;
  pthread_mutex_lock(&w->mu);
  if (!ok) return 0;
  uint64_t free_b = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
  uint64_t margin = w->o.min_free_bytes / 8 > (1u << 20) ? w->o.min_free_bytes / 8 : 1u << 20;
  w->free_bytes = free_b;
  int low = w->low_space ? free_b < w->o.min_free_bytes + margin : free_b < w->o.min_free_bytes;
  if (low == w->low_space) return 0;
  w->low_space = low;
  if (low)
    fl_error("state: low disk space in %s: %.1f MiB free, below state.min_free_mb (%.1f MiB): "
             "ingest pauses until %.1f MiB are free (serving goes on)",
             state__dir(w->db), free_b / 1048576.0, w->o.min_free_bytes / 1048576.0,
             (w->o.min_free_bytes + margin) / 1048576.0);
  else
    fl_info("state: disk space back in %s: %.1f MiB free: ingest resumes", state__dir(w->db),
            free_b / 1048576.0);
  return 1;
}

static void hold_while_file(state_writer *w) {
  if (!w->hold) return;
  while (access(w->hold, F_OK) == 0 && !(w->stop && fl_now() >= w->stop_by))
    fl_sleep_ms(HOLD_POLL_MS);
}

/* Writes the oldest queued batch once (mu held on entry and exit, not during the write). */
static void write_head(state_writer *w, unsigned *backoff_ms) {
  sealed it = w->q[w->head];
  pthread_mutex_unlock(&w->mu);
  hold_while_file(w);
  char err[256];
  int rc = state__write(w->db, it.wb, it.events, err, sizeof err);
  pthread_mutex_lock(&w->mu);
  if (rc == 0) {
    rocksdb_writebatch_destroy(it.wb);
    w->head = (w->head + 1) % w->o.depth;
    w->n--;
    w->done++;
    w->events_written += it.events;
    if (w->failing)
      fl_info("state: write succeeded after %" PRIu64 " failed attempt(s): resuming", w->failures);
    w->failing = 0;
    w->nospace_since = 0;
    *backoff_ms = 0;
    return;
  }
  w->failures++;
  if (strstr(err, "No space left") && !w->low_space) {
    if (!w->nospace_since) w->nospace_since = fl_now();
    if (!w->stuck && fl_now() - w->nospace_since >= (w->o.stuck_s > 0 ? w->o.stuck_s : STUCK_S)) {
      w->stuck = 1;
      fl_error("state: RocksDB still refuses writes for lack of space %.0f s after space came "
               "back (%.1f MiB free): a store that met a full disk stays read-only until it is "
               "reopened; flamed restarts (nothing is lost: what was not written is consumed "
               "again)",
               fl_now() - w->nospace_since,
               w->free_bytes == UINT64_MAX ? -1.0 : (double)w->free_bytes / 1048576.0);
    }
  }
  snprintf(w->last_err, sizeof w->last_err, "%s", err);
  if (!w->failing || *backoff_ms >= RETRY_MAX_MS)
    fl_error("state write of %zu events failed: %s; ingest pauses once %zu writes are queued; "
             "retrying (backoff %u ms)",
             it.events, err, w->o.depth, *backoff_ms ? *backoff_ms : RETRY_MIN_MS);
  w->failing = 1;
  *backoff_ms = *backoff_ms ? *backoff_ms * 2 : RETRY_MIN_MS;
  if (*backoff_ms > RETRY_MAX_MS) *backoff_ms = RETRY_MAX_MS;
}

static void wake(state_writer *w) {
  if (w->o.wake) w->o.wake(w->o.wake_ctx);
}

static void *run(void *arg) {
  state_writer *w = arg;
  fl_log_set_thread_tag("writer");
  unsigned backoff_ms = 0;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    /* free space before every write, and once a second when idle or low */
    int changed = (fl_now() >= w->space_at || (w->n > 0 && !w->low_space)) && check_space(w);
    if (changed) {
      pthread_mutex_unlock(&w->mu);
      wake(w);
      pthread_mutex_lock(&w->mu);
    }
    if (w->n == 0) {
      if (w->stop) break;
      nap(w, SPACE_EVERY_MS / 1000.0);
      continue;
    }
    if (past_deadline(w)) break;
    if (w->low_space) { /* below the threshold: nothing is written until space is back */
      nap(w, SPACE_EVERY_MS / 1000.0);
      continue;
    }
    write_head(w, &backoff_ms);
    pthread_mutex_unlock(&w->mu);
    wake(w);
    pthread_mutex_lock(&w->mu);
    double pause = backoff_ms / 1000.0; /* a stop cuts the backoff short at its deadline */
    if (w->stop && w->stop_by - fl_now() < pause) pause = w->stop_by - fl_now();
    if (backoff_ms && pause > 0) nap(w, pause);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int state_writer_start(state_writer **out, state_db *db, const state_writer_opts *o) {
  if (o->depth < 1 || o->depth > 1024) return FL_ERANGE;
  state_writer *w = xcalloc(1, sizeof *w);
  w->db = db;
  w->o = *o;
  if (o->hold_path && *o->hold_path) {
    size_t len = strlen(o->hold_path) + 1;
    w->hold = memcpy(xmalloc(len), o->hold_path, len);
  }
  w->q = xcalloc(o->depth, sizeof *w->q);
  w->free_bytes = UINT64_MAX;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (pthread_create(&w->th, NULL, run, w) != 0) {
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->hold), free(w->q), free(w);
    return FL_ERANGE;
  }
  *out = w;
  return 0;
}

int state_writer_submit(state_writer *w, state_batch *b, uint64_t *ticket) {
  pthread_mutex_lock(&w->mu);
  int full = w->n == w->o.depth;
  pthread_mutex_unlock(&w->mu);
  if (full) return FL_EBUSY;
  size_t events;
  /* sealing reads the dictionaries: outside the lock, on the owning thread */
  rocksdb_writebatch_t *wb = state__batch_seal(b, &events);
  if (!wb) return FL_EMISSING;
  pthread_mutex_lock(&w->mu);
  w->q[(w->head + w->n) % w->o.depth] = (sealed){wb, events, fl_now()};
  w->n++;
  uint64_t t = ++w->submitted;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (ticket) *ticket = t;
  return 0;
}

void state_writer_status_get(state_writer *w, state_writer_status *s) {
  pthread_mutex_lock(&w->mu);
  s->submitted = w->submitted;
  s->done = w->done;
  s->queued = w->n;
  s->failures = w->failures;
  s->failing = w->failing;
  memcpy(s->last_err, w->last_err, sizeof s->last_err);
  s->head_s = w->n ? fl_now() - w->q[w->head].since : 0;
  s->low_space = w->low_space;
  s->free_bytes = w->free_bytes;
  s->events_written = w->events_written;
  s->stuck = w->stuck;
  pthread_mutex_unlock(&w->mu);
}

int64_t state_writer_stop(state_writer *w, double timeout_s) {
  if (!w) return 0;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  w->stop_by = fl_now() + (timeout_s > 0 ? timeout_s : 0);
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  /* a grace second beyond the deadline for a write that was about to finish */
  struct timespec ts;
  abs_in(&ts, (timeout_s > 0 ? timeout_s : 0) + 1.0);
  if (pthread_timedjoin_np(w->th, NULL, &ts) != 0) {
    fl_error("state: the writer is still inside a write %.1f s after the stop began (is the "
             "disk frozen?): leaving it; the store is not closed (its WAL keeps what was "
             "written)",
             timeout_s + 1.0);
    return FL_EBUSY;
  }
  int64_t dropped = 0;
  for (size_t i = 0; i < w->n; i++) {
    sealed *it = &w->q[(w->head + i) % w->o.depth];
    dropped += (int64_t)it->events;
    rocksdb_writebatch_destroy(it->wb);
  }
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w->hold), free(w->q), free(w);
  return dropped;
}
