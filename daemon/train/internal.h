/* daemon/train/internal.h: what the trainer's files share (train.h is the folder's contract).
 *
 *   trainer.c  the thread, its commands and stats, start and stop
 *   round.c    a round: read the stored sequences, select users and samples, learn, validate
 *              (the gate), promote; the bootstrap round
 *   anchor.c   the frozen anchor (set, imported rows mapped, re-anchored) and the serving
 *              snapshots made from networks
 *   modeldir.c the model directory: versions, pruning, stale temps, corrupt files set aside,
 *              the newest usable checkpoint, writes
 *   uset.c     sets of user ids with counts (the touched users, those held out)
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

/* A set of user ids with counts (open addressing on fl_hash_bytes; 0 = empty): the users
 * touched since the last round and how many of their events are new. */
typedef struct {
  uint64_t off;      /* the id's first byte in bytes */
  uint32_t len, cnt; /* its length; its count */
} uset_slot;

typedef struct {
  uint64_t *hash; /* (cap) the id's fl_hash_bytes, 0: an empty slot */
  uset_slot *slot;
  size_t cap, n;
  char *bytes; /* every id, back to back */
  size_t nbytes, bytes_cap;
} uset;

/* The replay pool: a uniform sample (a reservoir, Vitter's algorithm R) of up to cap stored
 * users, from which a round draws the users it replays and retains, so that it reads the
 * touched users' sequences and that sample, never the whole state. Rebuilt by a round that
 * reads every stored sequence (the first one after start, and those before an anchor exists);
 * after it, every user a round sees for the first time is offered to it. Trainer thread only. */
typedef struct {
  char **id;
  uint32_t *len;
  size_t n, cap;
  uint64_t seen; /* users offered: each one is in the pool with probability cap / seen */
  int ready;     /* 1 once a full read has filled it */
} upool;

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
  uset touched;
  uset carried; /* users whose newest event the last round held out: the next round learns it */
  uint64_t pending;
  uint64_t retry_at; /* after a declined round: the pending events the next one waits for */
  int now, reanchor, stop, paused;
  trainer_stats st;
  atomic_int cancel;
  int poison;            /* test hook: this many next candidates get a NaN weight (trainer.h) */
  int poison_boot;       /* the same for the next bootstrapped anchors */
  uint64_t since_anchor; /* promotions since the anchor was last set (thread only) */
  /* what a round would otherwise read every stored sequence for (thread only) */
  size_t seq_len; /* state.seq_len: a sequence's stored entries at most */
  upool pool;
  uint64_t *pop; /* (pop_cap) stored events per item: the popularity list's counts */
  size_t pop_cap;
};

/* ---- uset.c ---- */
/* Adds k to id's count (k = 0: adds id with count 0). */
void train__uset_add(uset *s, const char *id, size_t len, uint32_t k);
/* Adds every entry of src to dst (counts of an id in both add up). */
void train__uset_merge(uset *dst, const uset *src);
/* The count of id (0: absent). */
uint32_t train__uset_get(const uset *s, const char *id, size_t len);
/* The id in slot i (0 <= i < s->cap), or NULL for an empty slot: a walk over the set. */
const char *train__uset_at(const uset *s, size_t i, size_t *len);
void train__uset_free(uset *s);

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
int train__round_run(trainer *t, const uset *touched, const uset *carried, int forced,
                     const round_cfg *rc, trainer_round *rr, uset *held_out);
/* Frees the replay pool and the popularity counts. */
void train__round_state_free(trainer *t);
#endif
