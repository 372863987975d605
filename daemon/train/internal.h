/* daemon/train/internal.h: what the trainer's files share (train.h is the folder's contract).
 *
 *   trainer.c  the thread, its commands and stats, start and stop
 *   round.c    a round: read the stored sequences, select users and samples, learn, validate
 *              (the gate), promote; the bootstrap round
 *   anchor.c   the frozen anchor (set, imported rows mapped, re-anchored) and the serving
 *              snapshots made from networks
 *   modeldir.c the model directory: versions, pruning, stale temps, corrupt files set aside,
 *              the newest usable checkpoint, writes
 *   hset.c     the set of touched users (64-bit hashes of ids, with counts)
 */
#ifndef FL_DAEMON_TRAIN_INTERNAL_H
#define FL_DAEMON_TRAIN_INTERNAL_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "daemon/train/train.h"
#include "model/model.h"

#define ANCHOR_PREFIX "anchor-"
#define MODEL_PREFIX "model-"
#define CORRUPT_DIR "corrupt"

/* Corrupt checkpoints of each kind kept in corrupt/ (the newest versions): enough to look at
 * what went wrong, few enough that a flapping disk cannot fill the volume with them. */
enum { CORRUPT_KEEP = 3 };

/* The reloadable settings of a round (train.*, model.dropout/keep/popular): what it learns
 * (config_round_opts) and what the trainer does around it. */
typedef struct {
  round_opts learn;
  double interval_s, duty;
  uint64_t min_new_events, reanchor_rounds;
  size_t keep, popular;
  int keep_adam;
} round_cfg;

/* A map from 64-bit hashes to counts (open addressing, 0 = empty): users touched since the
 * last round and how many of their events are new. */
typedef struct {
  uint64_t *slot;
  uint32_t *cnt;
  size_t cap, n;
} hset;

struct trainer {
  state_db *db;
  serve_slot *slot;
  char dir[4096];
  model_hparams boot_hp; /* shape of a bootstrapped anchor */
  size_t boot_users, boot_events, boot_epochs;
  uint64_t seed;
  int threads, nice;
  int baseline; /* keep the anchor's weights in the slot for the online baseline */
  /* Adam's moments after the round that produced version opt_version (train.keep_adam): the
   * next round from that version goes on with them (item table last: a prefix of a grown
   * block). */
  float *opt_m, *opt_v;
  size_t opt_n;
  uint64_t opt_step, opt_version;
  /* the anchor (thread-owned after start) */
  model_net anchor;
  int has_anchor;
  uint8_t *known;      /* (anchor.NI + 1) 1: the anchor has a trained row for that item */
  uint64_t version;    /* the highest snapshot version the dir has had */
  uint64_t anchor_top; /* the highest anchor version the dir has had */
  fl_rng rng;
  /* shared with the loop, under mu */
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  round_cfg rc;
  hset touched;
  hset carried; /* users whose newest event the last round held out: the next round learns it */
  uint64_t pending;
  int now, reanchor, stop, paused;
  trainer_stats st;
  atomic_int cancel;
  int poison;            /* test hook: this many next candidates get a NaN weight (trainer.h) */
  int poison_boot;       /* the same for the next bootstrapped anchors */
  uint64_t since_anchor; /* promotions since the anchor was last set (thread only) */
};

/* ---- hset.c ---- */
void train__hset_add(hset *s, uint64_t h, uint32_t k);
/* Adds every entry of src to dst (counts of a hash in both add up). */
void train__hset_merge(hset *dst, const hset *src);
/* The count of h (0: absent). */
uint32_t train__hset_get(const hset *s, uint64_t h);
void train__hset_free(hset *s);

/* ---- modeldir.c ---- */
/* Deletes the temp files that interrupted writes left in dir (at start). */
void train__remove_stale_temps(const char *dir);
/* Writes the anchor as version v (two anchor versions kept). */
int train__save_anchor(trainer *t, uint64_t version);
/* Writes snapshot s (the newest keep snapshots kept). */
int train__save_snapshot(trainer *t, const serve_model *s, size_t keep);
/* The newest snapshot that loads and fits the anchor (corrupt ones set aside); sets
 * t->version to the highest version the dir has had. NULL: none. */
serve_model *train__load_newest(trainer *t);
/* The daemon's own newest anchor that loads, else model.anchor imported as a new version. */
int train__load_anchor(trainer *t, const config *cfg, char *err, size_t errlen);

/* ---- anchor.c ---- */
/* A new anchor version: above every one the dir has had. */
uint64_t train__next_anchor_version(trainer *t);
int train__same_shape(const model_hparams *a, const model_hparams *b);
/* m becomes the anchor (taken over); known[i]: the anchor has a trained row for item i
 * (NULL: all of them). */
void train__set_anchor(trainer *t, model_net *m, const uint8_t *known);
/* Maps an imported anchor's rows to state indices through the id template. */
int train__map_anchor(trainer *t, model_net *a, const char *tmpl, char *err, size_t errlen);
/* A snapshot of *m's parameters, which it takes over (*m is left without them). */
serve_model *train__snapshot_take(trainer *t, model_net *m, uint64_t version, const uint32_t *pop,
                                  size_t npop);
/* A snapshot of a copy of src's parameters. */
serve_model *train__snapshot_of(trainer *t, const model_net *src, uint64_t version,
                                const uint32_t *pop, size_t npop);
/* The network of s becomes the frozen anchor, a new anchor version. Returns its version. */
uint64_t train__anchor_from(trainer *t, const serve_model *s);
/* TRAINER_REANCHOR: the serving network becomes the anchor. */
void train__reanchor(trainer *t);

/* ---- round.c ---- */
/* One round on the users touched since the last one and those carried from it: its outcome,
 * or -EAGAIN when it did not run. The users whose newest event it held out go to held_out. */
int train__round_run(trainer *t, const hset *touched, const hset *carried, int forced,
                     const round_cfg *rc, trainer_round *rr, hset *held_out);
#endif
