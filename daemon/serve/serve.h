/* daemon/serve/serve.h: what the serving path reads: immutable, reference-counted model snapshots,
 * and top-k recommendation from a user's item history.
 *
 * A snapshot is built completely by its producer (the trainer, a checkpoint load), then
 * published and never written again: readers on any thread may use it for as long as they hold
 * a reference. The loop keeps one reference in its "current" pointer and swaps that pointer
 * between requests; the old snapshot is freed when its last reference goes (docs/ARCHITECTURE.md,
 * "Hot-swap: build, validate, swap, retire").
 *
 * Item indices are the state's dense indices (state/state.h, from 1). A snapshot knows the
 * items 1..NI of its table; newer items are left out of an input history and cannot be
 * recommended until a snapshot that knows them is published. */
#ifndef FL_DAEMON_SERVE_H
#define FL_DAEMON_SERVE_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef struct {
  double hr10, ndcg10; /* on the holdout this version was validated on */
  uint64_t users;      /* holdout users (0: not validated, e.g. loaded at start) */
} serve_holdout;

typedef struct serve_model {
  atomic_uint refs;
  uint64_t version;        /* 1, 2, ... in promotion order; 0 = popularity only */
  uint64_t anchor_version; /* the anchor it was trained against (0: none) */
  int64_t trained_at_ms;   /* wall clock when its round finished (0: unknown) */
  serve_holdout holdout;
  int has_net; /* 0: popularity only (no model yet) */
  model_net m; /* the learnable network, parameters only (has_net) */
  /* The item table quantized for the scan (has_net): row i (item i + 1) is q8[i*C..] times
   * q8_scale[i] (max |e| / 127, round to nearest); q8_l1[i] is the float row's L1 norm, for
   * the error bound. NaN in a row makes its scale NaN: the row is never a candidate. */
  int8_t *q8;
  float *q8_scale, *q8_l1;
  uint32_t *popular; /* item indices, most popular first (the cold-start fallback) */
  size_t npopular;
} serve_model;

/* A new snapshot holding one reference, owning net (moved in: *net is zeroed; NULL for
 * popularity only) and a copy of popular[0..npopular). */
serve_model *serve_model_new(uint64_t version, model_net *net, const uint32_t *popular,
                             size_t npopular);
serve_model *serve_model_ref(serve_model *s);
/* Drops a reference; the last one frees the snapshot. NULL is a no-op. */
void serve_model_unref(serve_model *s);

/* The serving slot: the current snapshot and the one before it (for rollback), shared by the
 * loop (readers, rollback) and the trainer (publisher) under one mutex held for a few pointer
 * moves only. A request takes a reference at its start, so a swap never changes the model
 * under a request that is being answered. */
typedef struct {
  pthread_mutex_t mu;
  serve_model *cur, *prev;
  uint64_t swaps; /* publications and rollbacks */
  /* The current anchor's weights, for the online baseline: what would serve without any
   * fine-tuning (NULL: none, or not asked for). Not served. */
  serve_model *base;
} serve_slot;

void serve_slot_init(serve_slot *sl);
/* Drops both references. */
void serve_slot_free(serve_slot *sl);
/* A new reference to the current snapshot, or NULL before the first publication. */
serve_model *serve_slot_get(serve_slot *sl);
/* Makes s current (taking over the caller's reference); the current one becomes the previous;
 * the old previous is released. */
void serve_slot_publish(serve_slot *sl, serve_model *s);
/* Sets the baseline (taking over the caller's reference; NULL clears it). */
void serve_slot_set_base(serve_slot *sl, serve_model *s);
/* A new reference to the baseline, or NULL. */
serve_model *serve_slot_get_base(serve_slot *sl);
/* Swaps back to the previous snapshot and releases the current one: 0, or FL_EMISSING when
 * there is no previous one. *rolled_back (if not NULL) gets a reference to the snapshot that
 * was current, for the caller to log and release. */
int serve_slot_rollback(serve_slot *sl, serve_model **rolled_back);

/* Per-thread scratch for serve_recommend and serve_rank (activations for one sequence, the
 * scan's candidates). */
typedef struct serve_ws serve_ws;
serve_ws *serve_ws_new(void);
void serve_ws_free(serve_ws *w);

typedef struct {
  uint32_t item; /* item index */
  float score;   /* model score (higher is better); popularity: the negated rank */
} serve_hit;

/* What a recommendation may not return: applied inside the scan, so that the answer is the
 * exact top k of the allowed items (never fewer than k while k are allowed). */
typedef struct {
  int exclude_seen;      /* the items of the history */
  const uint32_t *items; /* (nitems) these items (any order, repeats allowed) */
  size_t nitems;
} serve_filter;

/* Top-k items for a history of item indices (oldest first; the newest L that the snapshot
 * knows are used), exact: an int8 scan of the quantized table with a per-row error bound
 * finds every item that could be in the top k, and those few are scored in float (the scores
 * are the float model's, up to the rounding of one dot product). Items f rules out are never
 * returned (f NULL: none). Falls back to popularity
 * (*fallback = 1) when the snapshot has no network or no history item is known to it; the
 * popularity list is also used to fill up when the catalogue is smaller than k; both obey f.
 * Returns the number of hits written to out (at most k). Scores are finite or the item is
 * skipped. */
size_t serve_recommend(const serve_model *s, serve_ws *w, const uint32_t *hist, size_t n, size_t k,
                       const serve_filter *f, serve_hit *out, int *fallback);

/* The 0-based rank of item target for history hist: items scoring strictly higher, as
 * serve_recommend ranks with nothing excluded, or with exclude_window leaving out the items of
 * the input window (the newest model.maxlen known items of hist, as flame replay and the
 * offline evaluation rank; a target in the window is then a miss). With the popularity
 * fallback: its position in the popular list. An item the snapshot cannot rank gets SIZE_MAX
 * (a miss at any cutoff). */
size_t serve_rank(const serve_model *s, serve_ws *w, const uint32_t *hist, size_t n,
                  uint32_t target, int exclude_window);

/* ---- the online (prequential) evaluation, off the loop (oeval.c) ----
 *
 * The loop hands over each sampled event with the history before it and references to the
 * serving snapshot and the baseline (the anchor's weights); one thread, niced like the trainer
 * and named flamed-eval, ranks the event with both and adds to the sums. A ranking is a
 * forward pass and a scan of the catalogue (about 9 ms at 1M items, twice with the
 * baseline): on the loop it held the requests that arrived meanwhile. The queue is bounded;
 * an event that does not fit is not ranked (the sample is a sample). */

/* Sums over the ranked events (means = sums / events). Both models rank the same events, so
 * with a baseline the two counts are equal at every moment. */
typedef struct {
  uint64_t events, base_events;
  double hr10, ndcg10, base_hr10, base_ndcg10;
} oeval_sums;

typedef struct oeval oeval;

/* Starts the thread; queue_cap events may wait. nice: the thread's niceness (0: the
 * process's). 0, or a negative errno when the thread cannot start. */
int oeval_new(oeval **out, size_t queue_cap, int nice);
/* Queues event (hist[0..n) = the user's items before it, oldest first; target = its item).
 * Takes over the references s and base (base may be NULL): released once ranked, or at once
 * when the queue is full (returns -EAGAIN; otherwise 0). */
int oeval_push(oeval *e, serve_model *s, serve_model *base, const uint32_t *hist, size_t n,
               uint32_t target);
void oeval_get(oeval *e, oeval_sums *out);
/* Stops and joins the thread; events still queued are dropped. NULL is a no-op. */
void oeval_free(oeval *e);

#endif
