/* daemon/train/train.h: the trainer thread: FLAME fine-tuning rounds against the frozen anchor,
 * validation, promotion into the serving slot, snapshots on disk (docs/MODEL.md section 3).
 *
 * Start (trainer_start, on the main thread before the loop runs): the model dir is tidied
 * first: temp files an interrupted write left (<name>.tmp.<pid>) are deleted, and every
 * checkpoint that does not load (bad magic, version, CRC, shape, non-finite weights) is moved
 * into <model dir>/corrupt/ (the newest few per kind kept there; counted in
 * trainer_stats.quarantined), so it never counts against model.keep. The anchor is the newest
 * <model dir>/anchor-<version>.ckpt that loads (imported, bootstrapped or re-anchored earlier),
 * else model.anchor, else the network of the newest snapshot that loads (a validated model:
 * it becomes a new anchor version, as a re-anchor would make it). The newest valid snapshot is
 * published at once; without one, a copy of the anchor is version 1 (the learnable network
 * starts as the anchor: warm start). With nothing valid at all the slot holds a
 * popularity-only snapshot (version 0) until enough history is stored to pretrain an anchor
 * (train.bootstrap_*), which is published only if it passes the gate below.
 *
 * A round, every train.interval_s (earlier after train.min_new_events events; at once on
 * trainer_command TRAIN_NOW): the stored sequences of the users touched since the last round
 * plus train.replay_users others at random (drawn from the replay pool, a uniform sample of
 * train.replay_pool stored users: a round never reads every stored sequence, except the first
 * after start, which fills the pool); the newest event of up to train.holdout_users
 * users with new events is held out (and learned in the next round that runs). train.steps FLAME
 * steps (lambda from train.lambda0 to train.lambda_r over the round) start from the serving
 * weights, with rows for new items. The candidate is promoted only if every weight is finite and
 * its holdout NDCG@10 is at most train.margin below the serving model's on the same holdout, and
 * the same holds on the newest event of up to train.retain_users users the round neither learned
 * from nor replayed (what it forgot, which the touched users' holdout cannot show); either way the
 * round is logged and counted. A promoted version is written atomically to <model
 * dir>/model-<version>.ckpt (the last model.keep kept) and published.
 *
 * Re-anchoring (the serving network becomes the frozen anchor, a new anchor version, logged)
 * happens on TRAINER_REANCHOR and, with train.reanchor_rounds, after that many promotions.
 *
 * Item indices are the state's. An anchor imported with model.anchor_item_ids (a template such
 * as "item-{}": row i of the anchor is the item with that id) is mapped into the state's
 * indices at start, interning its catalogue in the state. Items the anchor never saw use the
 * learnable network's row (as of the round's start) in the anchor's path.
 *
 * Test hooks (in the spirit of SQLite's): the environment variable FLAMED_TEST_POISON_ROUNDS=n
 * gives the next n candidates of rounds a NaN weight, so the rejection path runs for real;
 * FLAMED_TEST_POISON_BOOTSTRAPS=n does the same to the next n bootstrapped anchors.
 *
 * Threads: trainer_touch, trainer_command, trainer_get_stats are called from the loop; the
 * round runs on the trainer's thread; state reads go through the state's thread-safe reads. */
#ifndef FL_DAEMON_TRAINER_H
#define FL_DAEMON_TRAINER_H
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "daemon/serve/serve.h"
#include "state/state.h"

typedef struct trainer trainer;

typedef enum {
  TRAINER_TRAIN_NOW, /* a round now, even if paused or with few new events */
  TRAINER_PAUSE,     /* no rounds until resumed (a round in progress finishes) */
  TRAINER_RESUME,
  TRAINER_REANCHOR, /* the serving network becomes the frozen anchor */
} trainer_cmd;

enum { TRAINER_HISTORY = 32 };

typedef struct {
  int64_t at_ms;       /* wall clock at the round's end */
  double sec;          /* its duration */
  round_figures f;     /* what model/round.c's round measured (a bootstrap: loss and the gate's) */
  uint64_t read_users; /* stored sequences the round read (touched, carried, the sample) */
  double read_sec;     /* the seconds reading them took */
  int outcome;         /* TRAINER_PROMOTED, TRAINER_REJECTED_*, ... */
  uint64_t version;    /* the version promoted (0 if none) */
} trainer_round;

enum {
  TRAINER_PROMOTED,
  TRAINER_REJECTED_WORSE,
  TRAINER_REJECTED_NONFINITE,
  TRAINER_BOOTSTRAPPED,
  TRAINER_FAILED,
  TRAINER_OUTCOMES
};

typedef struct {
  uint64_t rounds; /* rounds run (every outcome) */
  uint64_t outcomes[TRAINER_OUTCOMES];
  uint64_t skipped; /* rounds declined: too few users with new events (the next one waits for
                     * train.min_new_events more events, or the interval) */
  uint64_t reanchors;
  uint64_t quarantined;                   /* checkpoints moved into <model dir>/corrupt/ */
  uint64_t anchor_version;                /* 0: no anchor yet */
  int paused, running;                    /* running: a round (or the bootstrap) is in progress */
  uint64_t pending_events;                /* stored since the last round */
  trainer_round last;                     /* the last round (rounds > 0) */
  trainer_round history[TRAINER_HISTORY]; /* the last rounds, oldest first */
  size_t nhistory;
} trainer_stats;

/* Creates and tidies the model directory, loads the anchor and the newest snapshot
 * (publishing it into slot), and starts the thread. db and slot must outlive the trainer.
 * Returns 0, or a negative code with err filled (an unreadable or corrupt model.anchor, an
 * unusable model dir). */
int trainer_start(trainer **out, const config *cfg, state_db *db, serve_slot *slot, char *err,
                  size_t errlen);
/* Notes that user (id bytes) has n new stored events (the loop's commit hook). */
void trainer_touch(trainer *t, const char *user, size_t len, size_t n);
/* Queues a command for the thread. REANCHOR and ROLLBACK-like effects are logged when done. */
void trainer_command(trainer *t, trainer_cmd c);
/* The settings a round reads (the reloadable train.*): copied at the next round. */
void trainer_reconfigure(trainer *t, const config *cfg);
void trainer_get_stats(trainer *t, trainer_stats *s);
/* Stops the thread (a round in progress stops at its next step) and frees the trainer. */
void trainer_stop(trainer *t);

/* "promoted", "rejected_worse", ...: the metrics label of an outcome. */
const char *trainer_outcome_name(int outcome);
#endif
