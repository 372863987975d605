/* daemon/oeval.h: the online (prequential) evaluation, off the loop.
 *
 * The loop hands over each sampled event with the history before it and references to the
 * serving snapshot and the baseline (the anchor's weights); one thread, niced like the trainer
 * and named flamed-eval, ranks the event with both and adds to the sums. A ranking is a
 * forward pass and a scan of the catalogue (about 9 ms at 1M items, twice with the
 * baseline): on the loop it held the requests that arrived meanwhile. The queue is bounded;
 * an event that does not fit is not ranked (the sample is a sample). */
#ifndef FL_OEVAL_H
#define FL_OEVAL_H

#include "daemon/serve.h"

#include <stddef.h>
#include <stdint.h>

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
