/* daemon/train/trainer.c: see trainer.h.
 *
 * Layout of the model dir: anchor-<version>.ckpt (the newest that loads is the anchor:
 * imported with its rows mapped to state indices, bootstrapped, or re-anchored; two kept) and
 * model-<version>.ckpt (the promoted snapshots, newest model.keep kept), and corrupt/ (the
 * checkpoints found corrupt at start, the newest CORRUPT_KEEP versions of each kind). Versions
 * are zero-padded to 20 digits so that names sort by version; a version number is never
 * reused, not even a corrupt one's.
 *
 * A round reads every stored sequence through state_seq_foreach (one consistent snapshot) and
 * keeps those of the touched users and a replay sample; the touched set holds 64-bit hashes
 * of user ids, filled by the loop's commit hook. Reading everything costs O(state) per round:
 * fine for millions of events, the first thing to change for much larger states. */
#define _GNU_SOURCE
#include "daemon/train/train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "model/model.h"

#define ANCHOR_PREFIX "anchor-"
#define MODEL_PREFIX "model-"
#define CORRUPT_DIR "corrupt"

/* Corrupt checkpoints of each kind kept in corrupt/ (the newest versions): enough to look at
 * what went wrong, few enough that a flapping disk cannot fill the volume with them. */
enum { CORRUPT_KEEP = 3 };

/* The reloadable settings of a round (train.*, model.dropout/keep/popular). */
typedef struct {
  double interval_s, margin, duty;
  uint64_t min_new_events, min_users, reanchor_rounds;
  size_t steps, batch, replay, holdout, retain, keep, popular, sampled_items, negatives;
  float lr, tau, lambda0, lambda_r, dropout;
  int keep_adam, new_targets;
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
  model_sasrec anchor;
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

static const char *const outcome_names[] = {"promoted", "rejected_worse", "rejected_nonfinite",
                                            "bootstrapped", "failed"};

const char *trainer_outcome_name(int o) {
  return o >= 0 && o < TRAINER_OUTCOMES ? outcome_names[o] : "unknown";
}

/* ---- hash set ---- */

static void hset_merge(hset *dst, const hset *src);

static void hset_add(hset *s, uint64_t h, uint32_t k) {
  if (2 * (s->n + 1) > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 1024;
    hset g = {xcalloc(cap, sizeof(uint64_t)), xcalloc(cap, sizeof(uint32_t)), cap, 0};
    hset_merge(&g, s);
    free(s->slot);
    free(s->cnt);
    *s = g;
  }
  size_t i = h & (s->cap - 1);
  while (s->slot[i] && s->slot[i] != h) i = (i + 1) & (s->cap - 1);
  if (!s->slot[i]) {
    s->slot[i] = h;
    s->n++;
  }
  s->cnt[i] = s->cnt[i] > UINT32_MAX - k ? UINT32_MAX : s->cnt[i] + k;
}

/* Adds every entry of src to dst (counts of a hash in both add up). */
static void hset_merge(hset *dst, const hset *src) {
  for (size_t i = 0; i < src->cap; i++)
    if (src->slot[i]) hset_add(dst, src->slot[i], src->cnt[i]);
}

/* The count of h (0: absent). */
static uint32_t hset_get(const hset *s, uint64_t h) {
  if (!s->cap) return 0;
  size_t i = h & (s->cap - 1);
  while (s->slot[i]) {
    if (s->slot[i] == h) return s->cnt[i];
    i = (i + 1) & (s->cap - 1);
  }
  return 0;
}

static void hset_free(hset *s) {
  free(s->slot);
  free(s->cnt);
  memset(s, 0, sizeof *s);
}

/* ---- settings ---- */

static void read_round_cfg(round_cfg *r, const config *c) {
  r->interval_s = c->train.interval_s;
  r->margin = c->train.margin;
  r->duty = c->train.duty;
  r->min_new_events = (uint64_t)c->train.min_new_events;
  r->min_users = (uint64_t)c->train.min_users;
  r->reanchor_rounds = (uint64_t)c->train.reanchor_rounds;
  r->steps = (size_t)c->train.steps;
  r->batch = (size_t)c->train.batch;
  r->replay = (size_t)c->train.replay_users;
  r->holdout = (size_t)c->train.holdout_users;
  r->retain = (size_t)c->train.retain_users;
  r->keep = (size_t)c->model.keep;
  r->popular = (size_t)c->model.popular;
  r->lr = (float)c->train.lr;
  r->tau = (float)c->train.tau;
  r->lambda0 = (float)c->train.lambda0;
  r->lambda_r = (float)c->train.lambda_r;
  r->dropout = (float)c->model.dropout;
  r->keep_adam = c->train.keep_adam;
  r->new_targets = c->train.new_targets_only;
  r->sampled_items = (size_t)c->train.sampled_items;
  r->negatives = (size_t)c->train.negatives;
}

void trainer_reconfigure(trainer *t, const config *cfg) {
  pthread_mutex_lock(&t->mu);
  read_round_cfg(&t->rc, cfg);
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

/* ---- files ---- */

/* The highest version among dir/<prefix><20 digits>.ckpt files, listing all of them (sorted
 * newest first) into *vers when not NULL. Returns how many. */
static size_t list_versions(const char *dir, const char *prefix, uint64_t **vers) {
  DIR *d = opendir(dir);
  size_t n = 0, cap = 0;
  uint64_t *v = NULL;
  if (d) {
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
      const char *s = e->d_name;
      if (strncmp(s, prefix, pl) || strlen(s) != pl + 20 + 5 || strcmp(s + pl + 20, ".ckpt"))
        continue;
      char *end;
      uint64_t x = strtoull(s + pl, &end, 10);
      if (end != s + pl + 20) continue;
      if (n == cap) v = xrealloc(v, (cap = cap ? 2 * cap : 16) * sizeof *v);
      v[n++] = x;
    }
    closedir(d);
  }
  for (size_t i = 1; i < n; i++) /* insertion sort, descending: a handful of files */
    for (size_t j = i; j > 0 && v[j] > v[j - 1]; j--) {
      uint64_t x = v[j];
      v[j] = v[j - 1];
      v[j - 1] = x;
    }
  if (vers)
    *vers = v;
  else
    free(v);
  return n;
}

static void version_path(char *buf, size_t n, const char *dir, const char *prefix, uint64_t v) {
  snprintf(buf, n, "%s/%s%020" PRIu64 ".ckpt", dir, prefix, v);
}

/* Deletes all but the newest keep files of prefix. */
static void prune(const char *dir, const char *prefix, size_t keep) {
  uint64_t *v;
  size_t n = list_versions(dir, prefix, &v);
  for (size_t i = keep; i < n; i++) {
    char p[4300];
    version_path(p, sizeof p, dir, prefix, v[i]);
    if (unlink(p) != 0) fl_warn("cannot delete old snapshot %s: %s", p, strerror(errno));
  }
  free(v);
}

/* The highest version of prefix in dir and in dir/corrupt/ (0: none). */
static uint64_t top_version(const char *dir, const char *prefix) {
  char cdir[4200];
  snprintf(cdir, sizeof cdir, "%s/" CORRUPT_DIR, dir);
  uint64_t *v, *cv, top = 0;
  size_t n = list_versions(dir, prefix, &v), cn = list_versions(cdir, prefix, &cv);
  if (n) top = v[0];
  if (cn && cv[0] > top) top = cv[0];
  free(v);
  free(cv);
  return top;
}

/* 1 if name ends in ".tmp." and digits: a temp file of fl_write_atomic. */
static int is_temp_name(const char *name) {
  const char *p = NULL;
  for (const char *q = strstr(name, ".tmp."); q; q = strstr(q + 1, ".tmp.")) p = q;
  if (!p || p == name || !p[5]) return 0;
  for (p += 5; *p; p++)
    if (*p < '0' || *p > '9') return 0;
  return 1;
}

/* Deletes the temp files (<name>.tmp.<pid>) that writes interrupted by a crash or kill -9 left
 * in dir, each logged with its size. Run at start, before anything in this process writes
 * there (the trainer is the dir's only writer), so every one is stale, even one named with our
 * own pid: a daemon that is pid 1 in a container has the same pid at every start. */
static void remove_stale_temps(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    char p[4400];
    struct stat st;
    if (!is_temp_name(e->d_name)) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (unlink(p) != 0)
      fl_warn("model dir: cannot delete the stale temp file %s: %s", p, strerror(errno));
    else
      fl_info("model dir: deleted %s (%lld bytes), left by an interrupted write", p,
              (long long)st.st_size);
  }
  closedir(d);
}

/* A checkpoint dir/<prefix><v>.ckpt failed to load with rc (why: the loader's message). A
 * corrupt one (an FL_E* code: magic, version, CRC, shape, non-finite, truncated) is moved into
 * dir/corrupt/, where the newest CORRUPT_KEEP versions of prefix are kept, so it no longer
 * counts as a snapshot nor against model.keep; one that could not be read (-errno: permissions,
 * I/O) is left where it is, as it may read next time, and so is one that cannot be moved. */
static void set_aside(trainer *t, const char *prefix, uint64_t v, int rc, const char *why) {
  char from[4200], cdir[4200], to[4300];
  version_path(from, sizeof from, t->dir, prefix, v);
  if (rc <= FL_EBASE || rc >= FL_ELAST) {
    fl_warn("cannot read %s (%s): left in place, skipped", from, why);
    return;
  }
  snprintf(cdir, sizeof cdir, "%s/" CORRUPT_DIR, t->dir);
  version_path(to, sizeof to, cdir, prefix, v);
  if ((mkdir(cdir, 0750) != 0 && errno != EEXIST) || rename(from, to) != 0) {
    fl_warn("corrupt checkpoint %s (%s): cannot move it into %s: %s; skipped", from, why, cdir,
            strerror(errno));
    return;
  }
  fl_warn("corrupt checkpoint moved into %s: %s", cdir, why);
  pthread_mutex_lock(&t->mu); /* the loop reads the stats */
  t->st.quarantined++;
  pthread_mutex_unlock(&t->mu);
  prune(cdir, prefix, CORRUPT_KEEP);
}

/* A new anchor version: above every one the dir has had. */
static uint64_t next_anchor_version(trainer *t) {
  if (t->st.anchor_version > t->anchor_top) t->anchor_top = t->st.anchor_version;
  return ++t->anchor_top;
}

/* ---- models ---- */

static int same_shape(const model_hparams *a, const model_hparams *b) {
  return a->C == b->C && a->NL == b->NL && a->NH == b->NH && a->FF == b->FF && a->L == b->L;
}

/* dst = src with NI rows (NI >= src->NI): the same parameters, new rows N(0, 0.02^2).
 * Each round grows into a fresh model of exactly the catalogue's size: its weights must be a
 * copy anyway (the serving snapshot they start from is immutable and stays in service).
 * Blocks kept with headroom across rounds would save the allocations and their page faults,
 * which RESULTS 14 found to be a measurable share of a 1M-item round on a paravirtualized
 * host; not done yet. */
static void grow_copy(model_sasrec *dst, const model_sasrec *src, size_t NI, uint64_t seed) {
  if (model_alloc(dst, &src->hp, NI) != 0) {
    fl_error("cannot allocate a model of %zu items", NI);
    abort();
  } /* shapes come from a valid model */
  dst->seed = seed;
  memcpy(dst->params, src->params, src->nparams * sizeof(float)); /* the item table is last */
  /* Only the new rows are drawn: drawing the whole model first (model_init) cost a 1M-item
   * catalogue 64M normal draws, about 2 s of the trainer's CPU, every round. */
  fl_rng r;
  fl_rng_seed(&r, seed);
  float *item = dst->p.t[MODEL_T_ITEM];
  for (size_t j = (src->NI + 1) * src->hp.C; j < (NI + 1) * src->hp.C; j++)
    item[j] = 0.02f * fl_rng_normal(&r);
}

/* The anchor as the round sees it: NI rows; rows the anchor never trained come from lrn. */
static const model_sasrec *anchor_for(trainer *t, const model_sasrec *lrn, model_sasrec *ext) {
  size_t NI = lrn->NI, C = lrn->hp.C;
  int need = NI > t->anchor.NI;
  for (size_t i = 1; i <= t->anchor.NI && !need; i++) need = !t->known[i];
  if (!need) return &t->anchor;
  grow_copy(ext, &t->anchor, NI, 0);
  float *rows = ext->p.t[MODEL_T_ITEM];
  const float *lr = lrn->p.t[MODEL_T_ITEM];
  for (size_t i = 1; i <= NI; i++)
    if (i > t->anchor.NI || !t->known[i]) memcpy(rows + i * C, lr + i * C, C * sizeof(float));
  return ext;
}

static serve_model *snapshot_of(trainer *t, const model_sasrec *src, uint64_t version,
                                const uint32_t *pop, size_t npop);

static void set_anchor(trainer *t, model_sasrec *m, const uint8_t *known) {
  if (t->has_anchor) model_free(&t->anchor);
  free(t->known);
  t->anchor = *m;
  memset(m, 0, sizeof *m);
  t->known = xmalloc(t->anchor.NI + 1);
  if (known)
    memcpy(t->known, known, t->anchor.NI + 1);
  else
    memset(t->known, 1, t->anchor.NI + 1);
  t->known[0] = 0;
  t->has_anchor = 1;
  if (t->baseline) /* the online baseline follows the anchor (version 0: never served) */
    serve_slot_set_base(t->slot, snapshot_of(t, &t->anchor, 0, NULL, 0));
}

static int save_anchor(trainer *t, uint64_t version) {
  char p[4200];
  version_path(p, sizeof p, t->dir, ANCHOR_PREFIX, version);
  int rc = ckpt_save(p, &t->anchor);
  if (rc == 0) prune(t->dir, ANCHOR_PREFIX, 2);
  return rc;
}

/* Maps an imported anchor's rows to state indices through the id template, interning its
 * catalogue in the state (main thread, before the consumer exists). */
static int map_anchor(trainer *t, model_sasrec *a, const char *tmpl, char *err, size_t errlen) {
  state_batch *b = state_batch_new(t->db);
  if (!b) {
    snprintf(err, errlen, "the state has a batch open");
    return FL_ERANGE;
  }
  const char *brace = strstr(tmpl, "{}");
  size_t pre = (size_t)(brace - tmpl);
  uint32_t *idx = xmalloc((a->NI + 1) * sizeof *idx);
  uint32_t top = state_item_count(t->db);
  int rc = 0;
  for (size_t i = 1; i <= a->NI && rc == 0; i++) {
    char id[STATE_ID_MAX + 32];
    int n = snprintf(id, sizeof id, "%.*s%zu%s", (int)pre, tmpl, i, brace + 2);
    int64_t x = n > 0 && n <= STATE_ID_MAX ? state_batch_item(b, id, (size_t)n) : FL_ERANGE;
    if (x < 0) {
      snprintf(err, errlen, "anchor row %zu: item id '%s' is not a valid id", i, id);
      rc = FL_ERANGE;
    } else {
      idx[i] = (uint32_t)x;
      if (idx[i] > top) top = idx[i];
    }
  }
  if (rc == 0 && (rc = state_batch_commit(b, err, errlen)) == 0) {
    size_t C = a->hp.C;
    model_sasrec m;
    grow_copy(&m, a, top, t->seed); /* the non-item tensors; item rows rewritten below */
    uint8_t *known = xcalloc(top + 1, 1);
    float *rows = m.p.t[MODEL_T_ITEM];
    for (size_t i = 1; i <= a->NI; i++) {
      memcpy(rows + (size_t)idx[i] * C, a->p.t[MODEL_T_ITEM] + i * C, C * sizeof(float));
      known[idx[i]] = 1;
    }
    memset(rows, 0, C * sizeof(float)); /* padding */
    size_t nk = 0;
    for (size_t i = 1; i <= top; i++) nk += known[i];
    set_anchor(t, &m, known);
    free(known);
    fl_info("anchor: %zu item rows mapped to state items through '%s' (%zu state items, %zu of "
            "them unknown to the anchor)",
            a->NI, tmpl, (size_t)top, (size_t)top - nk);
  }
  free(idx);
  state_batch_free(b);
  return rc;
}

/* ---- snapshots ---- */

/* dst = a parameters-only copy of src (no gradients or Adam state). */
static void copy_params(model_sasrec *dst, const model_sasrec *src) {
  if (model_alloc(dst, &src->hp, src->NI) != 0) { /* shapes come from a valid model */
    fl_error("cannot allocate a model of %zu items", src->NI);
    abort();
  }
  memcpy(dst->params, src->params, src->nparams * sizeof(float));
}

/* A snapshot of *m's parameters, which it takes over (*m is left empty). */
static serve_model *snapshot_take(trainer *t, model_sasrec *m, uint64_t version,
                                  const uint32_t *pop, size_t npop) {
  serve_model *s = serve_model_new(version, m, pop, npop);
  s->anchor_version = t->st.anchor_version;
  s->trained_at_ms = fl_wall_ms();
  return s;
}

static serve_model *snapshot_of(trainer *t, const model_sasrec *src, uint64_t version,
                                const uint32_t *pop, size_t npop) {
  model_sasrec m;
  copy_params(&m, src);
  return snapshot_take(t, &m, version, pop, npop);
}

static int save_snapshot(trainer *t, const serve_model *s, size_t keep) {
  char p[4200];
  version_path(p, sizeof p, t->dir, MODEL_PREFIX, s->version);
  int rc = ckpt_save(p, &s->m);
  if (rc == 0) prune(t->dir, MODEL_PREFIX, keep);
  return rc;
}

/* The newest snapshot in the dir that loads (ckpt_load refuses non-finite weights) and has
 * the anchor's shape (any shape without an anchor). Every snapshot is read, the older ones
 * too, so that a corrupt one is set aside at start rather than kept in one of model.keep's
 * places: that reads model.keep files once per start. */
static serve_model *load_newest(trainer *t) {
  uint64_t *v;
  size_t n = list_versions(t->dir, MODEL_PREFIX, &v);
  t->version = top_version(t->dir, MODEL_PREFIX); /* never reused, even a broken one's */
  serve_model *s = NULL;
  for (size_t i = 0; i < n; i++) {
    char p[4200], err[512];
    version_path(p, sizeof p, t->dir, MODEL_PREFIX, v[i]);
    model_sasrec m;
    int rc = ckpt_load(p, &m, err, sizeof err);
    if (rc != 0) {
      set_aside(t, MODEL_PREFIX, v[i], rc, err);
      continue;
    }
    if (s || (t->has_anchor && !same_shape(&m.hp, &t->anchor.hp))) {
      if (!s) fl_warn("snapshot %s does not fit the anchor: skipped", p);
      model_free(&m);
      continue;
    }
    struct stat st;
    s = serve_model_new(v[i], &m, NULL, 0);
    s->anchor_version = t->st.anchor_version;
    if (stat(p, &st) == 0) s->trained_at_ms = (int64_t)st.st_mtime * 1000;
  }
  free(v);
  return s;
}

/* ---- a round's data ---- */

typedef struct {
  const hset *touched, *carried;
  data_set ds;
  size_t cap_users, cap_items;
  uint32_t *is_touched; /* (cap_users) events per user to learn as targets: new since the last
                         * round, plus the one the last round held out (0: none) */
  uint32_t *is_new;     /* (cap_users) of those, the new ones (only these can be held out) */
  uint64_t *hash;       /* (cap_users) fl_hash_bytes of the user id, the touched sets' key */
  uint64_t *count;      /* (cap_count) events per item */
  size_t cap_count;
  uint64_t events;
} collected;

static int collect_one(void *ctx, const char *user, size_t ulen, const state_entry *e, size_t n) {
  collected *c = ctx;
  data_set *ds = &c->ds;
  if (ds->nusers + 1 >= c->cap_users) {
    c->cap_users = c->cap_users ? 2 * c->cap_users : 4096;
    ds->off = xrealloc(ds->off, (c->cap_users + 1) * sizeof *ds->off);
    c->is_touched = xrealloc(c->is_touched, c->cap_users * sizeof *c->is_touched);
    c->is_new = xrealloc(c->is_new, c->cap_users * sizeof *c->is_new);
    c->hash = xrealloc(c->hash, c->cap_users * sizeof *c->hash);
  }
  size_t at = ds->off[ds->nusers];
  if (at + n > c->cap_items) {
    while (at + n > c->cap_items) c->cap_items = c->cap_items ? 2 * c->cap_items : 65536;
    ds->items = xrealloc(ds->items, c->cap_items * sizeof *ds->items);
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t it = e[i].item;
    ds->items[at + i] = (int32_t)it;
    if (it > ds->NI) ds->NI = it;
    if (it >= c->cap_count) {
      size_t nc = c->cap_count ? c->cap_count : 4096;
      while (nc <= it) nc *= 2;
      c->count = xrealloc(c->count, nc * sizeof *c->count);
      memset(c->count + c->cap_count, 0, (nc - c->cap_count) * sizeof *c->count);
      c->cap_count = nc;
    }
    c->count[it]++;
  }
  uint64_t h = fl_hash_bytes(user, ulen);
  uint32_t fresh = hset_get(c->touched, h), held = hset_get(c->carried, h);
  c->hash[ds->nusers] = h;
  c->is_new[ds->nusers] = fresh;
  c->is_touched[ds->nusers] = fresh > UINT32_MAX - held ? UINT32_MAX : fresh + held;
  ds->off[++ds->nusers] = at + n;
  c->events += n;
  return 0;
}

static int collect(trainer *t, const hset *touched, const hset *carried, collected *c) {
  memset(c, 0, sizeof *c);
  c->touched = touched;
  c->carried = carried;
  c->cap_users = 4096;
  c->ds.off = xcalloc(c->cap_users + 1, sizeof *c->ds.off);
  c->is_touched = xmalloc(c->cap_users * sizeof *c->is_touched);
  c->is_new = xmalloc(c->cap_users * sizeof *c->is_new);
  c->hash = xmalloc(c->cap_users * sizeof *c->hash);
  int rc = state_seq_foreach(t->db, collect_one, c);
  c->ds.user_id = xcalloc(c->ds.nusers + 1, sizeof *c->ds.user_id); /* data_free frees it */
  return rc;
}

static void collected_free(collected *c) {
  data_free(&c->ds);
  free(c->is_touched);
  free(c->is_new);
  free(c->hash);
  free(c->count);
}

/* The most frequent items, most frequent first (ties: lower index first). */
static size_t popular_items(const collected *c, size_t k, uint32_t **out) {
  size_t n = 0;
  uint32_t *v = xmalloc((k ? k : 1) * sizeof *v);
  for (size_t i = 1; i < c->cap_count; i++) {
    if (!c->count[i]) continue;
    if (n < k)
      n++;
    else if (c->count[i] <= c->count[v[k - 1]])
      continue;
    size_t j = n - 1; /* insertion into the sorted list, dropping the last if full */
    while (j > 0 && c->count[v[j - 1]] < c->count[i]) {
      v[j] = v[j - 1];
      j--;
    }
    v[j] = (uint32_t)i;
  }
  *out = v;
  return n;
}

/* HR@10 and NDCG@10 of m on the holdout: each user's last item, from the L known items
 * before it (items beyond m's table are left out of the input; a target beyond it is a miss);
 * the input items are excluded from the ranking (the default protocol). */
static eval_metrics holdout_eval(const model_sasrec *m, const data_set *ds, const uint32_t *users,
                                 size_t n) {
  eval_metrics r = {0};
  size_t B = 128, L = m->hp.L;
  model_acts *a = model_acts_new(&m->hp, B, B * L);
  float *scores = xmalloc(B * EVAL_CHUNK * sizeof(float));
  int32_t *tok = xmalloc(B * L * sizeof(int32_t)), tgt[128];
  size_t *off = xmalloc((B + 1) * sizeof(size_t)), rank[128];
  for (size_t i = 0; i < n; i += B) {
    size_t nb = n - i < B ? n - i : B, T = 0, b = 0;
    off[0] = 0;
    for (size_t j = 0; j < nb; j++) {
      const int32_t *s = ds->items + ds->off[users[i + j]];
      size_t len = ds->off[users[i + j] + 1] - ds->off[users[i + j]], k = 0;
      for (size_t x = len - 1; x > 0 && k < L; x--) k += (size_t)s[x - 1] <= m->NI;
      if (k == 0 || (size_t)s[len - 1] > m->NI) { /* nothing the model knows: a miss */
        eval_add_rank(&r, m->NI);
        continue;
      }
      size_t w = T + k;
      for (size_t x = len - 1; x > 0 && w > T; x--)
        if ((size_t)s[x - 1] <= m->NI) tok[--w] = s[x - 1];
      T += k;
      tgt[b] = s[len - 1];
      off[++b] = T;
    }
    if (b == 0) continue;
    model_batch bt = {.B = b, .T = T, .tok = tok, .off = off, .tgt = NULL};
    model_forward(m, a, &bt, 0);
    eval_ranks_chunked(m, model_acts_h(a), b, tgt, tok, off, scores, rank);
    for (size_t j = 0; j < b; j++) eval_add_rank(&r, rank[j]);
  }
  eval_finish(&r);
  free(off);
  free(tok);
  free(scores);
  model_acts_free(a);
  return r;
}

/* The gate every model passes before it is published, a round's candidate or a bootstrapped
 * anchor: TRAINER_PROMOTED if m's weights are finite and trainer_round_passes on the figures
 * written to rr (m and the serving network cur, if it has one, on the newest event of the
 * holdout users hu[0..nh) of ds, and on the retained users ru[0..nret)), else the rejection. */
static int gate(const model_sasrec *m, const serve_model *cur, const data_set *ds,
                const uint32_t *hu, size_t nh, const uint32_t *ru, size_t nret, double margin,
                trainer_round *rr) {
  if (!serve_params_finite(m)) return TRAINER_REJECTED_NONFINITE;
  eval_metrics mc = holdout_eval(m, ds, hu, nh), ms = {0};
  const model_sasrec *serving = cur && cur->has_net ? &cur->m : NULL;
  if (serving) ms = holdout_eval(serving, ds, hu, nh);
  rr->cand_ndcg10 = mc.ndcg10;
  rr->cand_hr10 = mc.hr10;
  rr->serv_ndcg10 = ms.ndcg10;
  rr->serv_hr10 = ms.hr10;
  rr->holdout = nh;
  if (serving && nret) { /* without a serving model there is nothing to forget */
    rr->retain = nret;
    rr->cand_retain_ndcg10 = holdout_eval(m, ds, ru, nret).ndcg10;
    rr->serv_retain_ndcg10 = holdout_eval(serving, ds, ru, nret).ndcg10;
  }
  return trainer_round_passes(rr, margin) ? TRAINER_PROMOTED : TRAINER_REJECTED_WORSE;
}

/* The test hooks (trainer.h): a NaN weight in m while *left > 0 (counted down). */
static void poison(int *left, model_sasrec *m) {
  if (*left > 0) {
    (*left)--;
    m->params[m->nparams / 2] = NAN;
  }
}

/* ---- the round ---- */

/* Sleeps so that the trainer uses about `duty` of a core: work took dt seconds. Wakes early
 * when stopping. */
static void duty_sleep(trainer *t, double dt, double duty) {
  if (duty >= 1.0 || dt <= 0) return;
  double ms = dt * (1.0 - duty) / duty * 1000.0;
  while (ms > 0 && !atomic_load(&t->cancel)) {
    int step = ms > 50 ? 50 : (int)ms + 1;
    fl_sleep_ms(step);
    ms -= step;
  }
}

/* Pretrains a SASRec anchor from scratch into *m once the history is large enough (-EAGAIN
 * before); cur is what serves meanwhile. Nothing is published or kept here. */
static int bootstrap(trainer *t, const collected *c, const serve_model *cur, model_sasrec *m,
                     trainer_round *rr) {
  size_t ready = 0;
  for (size_t u = 0; u < c->ds.nusers; u++) ready += c->ds.off[u + 1] - c->ds.off[u] >= 3;
  if (ready < t->boot_users || c->events < t->boot_events) return -EAGAIN;
  char serving[64] = "popularity";
  if (cur && cur->has_net) snprintf(serving, sizeof serving, "version %" PRIu64, cur->version);
  fl_info("bootstrap: pretraining a SASRec anchor on %zu users and %" PRIu64
          " events (%zu epochs); serving %s meanwhile",
          ready, c->events, t->boot_epochs, serving);
  if (model_init(m, &t->boot_hp, c->ds.NI, t->seed) != 0) return FL_ERANGE;
  train_opts o;
  train_opts_default(&o);
  o.epochs = o.patience = t->boot_epochs;
  o.seed = t->seed;
  o.progress = 0;
  o.cancel = &t->cancel;
  train_result r;
  int rc = train_model(m, NULL, NULL, &c->ds, &o, &r);
  if (rc != 0) {
    model_free(m);
    return rc;
  }
  rr->loss = r.last_loss;
  fl_info("bootstrap: anchor trained in %.0f s, best epoch %zu, validation NDCG@10 %.4f HR@10 %.4f",
          r.wall_sec, r.best_epoch, r.val.ndcg10, r.val.hr10);
  return 0;
}

/* A round without an anchor: pretrains one once the history allows (-EAGAIN before), and
 * publishes it (as a new snapshot version, and keeps it as the anchor) only if it passes the
 * gate, judged on the newest event of up to train.holdout_users users, which pretraining never
 * learns (it trains on all but each user's last two events). Returns the round's outcome. */
static int bootstrap_round(trainer *t, const collected *c, serve_model *cur, const round_cfg *rc,
                           trainer_round *rr, const uint32_t *pop, size_t npop) {
  model_sasrec m;
  int err = bootstrap(t, c, cur, &m, rr);
  if (err == -EAGAIN) {
    if (!cur || !cur->has_net) serve_slot_publish(t->slot, serve_model_new(0, NULL, pop, npop));
    return -EAGAIN;
  }
  if (err != 0) return TRAINER_FAILED;
  poison(&t->poison_boot, &m);
  uint32_t *hu = xmalloc((c->ds.nusers + 1) * sizeof *hu);
  size_t nh = 0;
  for (size_t u = 0; u < c->ds.nusers; u++)
    if (c->ds.off[u + 1] - c->ds.off[u] >= 3) hu[nh++] = (uint32_t)u;
  fl_shuffle(hu, nh, sizeof *hu, &t->rng);
  if (nh > rc->holdout) nh = rc->holdout;
  int outcome = atomic_load(&t->cancel) ? TRAINER_FAILED
                                        : gate(&m, cur, &c->ds, hu, nh, NULL, 0, rc->margin, rr);
  free(hu);
  if (outcome != TRAINER_PROMOTED) {
    if (outcome != TRAINER_FAILED)
      fl_warn("bootstrap: the pretrained anchor fails the gate (%s): not published, the next "
              "round pretrains again",
              trainer_outcome_name(outcome));
    model_free(&m);
    return outcome;
  }
  set_anchor(t, &m, NULL);
  uint64_t v = next_anchor_version(t);
  pthread_mutex_lock(&t->mu); /* the loop reads the stats */
  t->st.anchor_version = v;
  pthread_mutex_unlock(&t->mu);
  if ((err = save_anchor(t, v)) != 0) {
    fl_error("cannot write the bootstrapped anchor to %s: %s", t->dir, fl_strerror(err));
    return TRAINER_FAILED;
  }
  serve_model *s = snapshot_of(t, &t->anchor, ++t->version, pop, npop);
  s->holdout = (serve_holdout){rr->cand_hr10, rr->cand_ndcg10, rr->holdout};
  if ((err = save_snapshot(t, s, rc->keep)) != 0) {
    fl_error("cannot write snapshot version %" PRIu64 ": %s", s->version, fl_strerror(err));
    serve_model_unref(s);
    return TRAINER_FAILED;
  }
  rr->version = s->version;
  serve_slot_publish(t->slot, s);
  return TRAINER_BOOTSTRAPPED;
}

/* One round on the users touched since the last one and those carried from it; returns its
 * outcome, or -EAGAIN when it did not run (too few users with new events, or no anchor and not
 * enough history to bootstrap one). The users whose newest event it held out are added to
 * held_out (once each): the next round learns those events. */
static int round_run(trainer *t, const hset *touched, const hset *carried, int forced,
                     const round_cfg *rc, trainer_round *rr, hset *held_out) {
  double t0 = fl_now();
  memset(rr, 0, sizeof *rr);
  collected c;
  int err = collect(t, touched, carried, &c);
  if (err != 0) {
    fl_error("round: cannot read the stored sequences: %s", fl_strerror(err));
    collected_free(&c);
    return TRAINER_FAILED;
  }
  uint32_t *pop;
  size_t npop = popular_items(&c, rc->popular, &pop);
  int outcome = -EAGAIN;
  serve_model *cur = serve_slot_get(t->slot);
  if (!t->has_anchor) {
    outcome = bootstrap_round(t, &c, cur, rc, rr, pop, npop);
    goto out;
  }
  /* users: touched ones (holdout candidates), then a replay sample of the others */
  size_t nt = 0, no = 0, nnew = 0, ncarried = 0;
  uint32_t *tu = xmalloc((c.ds.nusers + 1) * sizeof *tu),
           *ou = xmalloc((c.ds.nusers + 1) * sizeof *ou);
  for (size_t u = 0; u < c.ds.nusers; u++) {
    size_t len = c.ds.off[u + 1] - c.ds.off[u];
    if (len < 2) continue;
    if (c.is_touched[u]) {
      tu[nt++] = (uint32_t)u;
      nnew += c.is_new[u] > 0;
      ncarried += c.is_touched[u] > c.is_new[u];
    } else {
      ou[no++] = (uint32_t)u;
    }
  }
  if (nnew < rc->min_users && !forced) { /* carried events alone never start a round */
    free(tu);
    free(ou);
    goto out;
  }
  fl_shuffle(tu, nt, sizeof *tu, &t->rng);
  fl_shuffle(ou, no, sizeof *ou, &t->rng);
  size_t nr = no < rc->replay ? no : rc->replay;
  /* holdout: users with new events and 3+ items, their newest event (not an event carried
   * from the last round's holdout: that one is learned now). The round never learns it, so it
   * is carried to the next: without that, each round would withhold up to
   * train.holdout_users new events from training for good. */
  uint8_t *held = xcalloc(c.ds.nusers, 1);
  uint32_t *hu = xmalloc((nt + nr + 1) * sizeof *hu);
  size_t nh = 0;
  for (size_t i = 0; i < nt && nh < rc->holdout; i++)
    if (c.is_new[tu[i]] && c.ds.off[tu[i] + 1] - c.ds.off[tu[i]] >= 3) {
      held[tu[i]] = 1;
      hu[nh++] = tu[i];
      hset_add(held_out, c.hash[tu[i]], 1);
    }
  if (nh == 0) /* a forced round without new events: validate on replayed users instead */
    for (size_t i = 0; i < nr && nh < rc->holdout; i++)
      if (c.ds.off[ou[i] + 1] - c.ds.off[ou[i]] >= 3) {
        held[ou[i]] = 1;
        hu[nh++] = ou[i];
      }
  /* retained users: neither touched nor replayed, so the round never sees their events; their
   * newest event (after at least one other: ou holds users with 2+ items) shows what the
   * candidate forgot. ou is shuffled, so each round checks a different sample. */
  const uint32_t *ru = ou + nr;
  size_t nret = no - nr < rc->retain ? no - nr : rc->retain;
  /* the learnable network: the serving weights (or the anchor's), rows for new items */
  const model_sasrec *base =
      cur && cur->has_net && same_shape(&cur->m.hp, &t->anchor.hp) ? &cur->m : &t->anchor;
  size_t NI = c.ds.NI > base->NI ? c.ds.NI : base->NI;
  if (t->anchor.NI > NI) NI = t->anchor.NI;
  model_sasrec lrn, ext = {0};
  grow_copy(&lrn, base, NI, t->seed ^ (t->version + 1));
  lrn.hp.dropout = rc->dropout;
  lrn.seed = t->seed ^ (0x9e37ull * (t->version + 1));
  /* every step clears the gradients it uses; the moments are the kept ones or zero (new
   * rows' too), each written once */
  model_train_alloc_uninit(&lrn);
  size_t kept = 0;
  if (rc->keep_adam && t->opt_m && base == &cur->m && cur->version == t->opt_version &&
      t->opt_n <= lrn.nparams) {
    kept = t->opt_n;
    memcpy(lrn.adam_m, t->opt_m, kept * sizeof(float));
    memcpy(lrn.adam_v, t->opt_v, kept * sizeof(float));
    lrn.step = t->opt_step;
  }
  memset(lrn.adam_m + kept, 0, (lrn.nparams - kept) * sizeof(float));
  memset(lrn.adam_v + kept, 0, (lrn.nparams - kept) * sizeof(float));
  const model_sasrec *anc = anchor_for(t, &lrn, &ext);
  /* samples: the newest L prefixes of each user, never reaching a held-out item */
  size_t L = lrn.hp.L, ns = 0, cap = 0;
  data_sample *smp = NULL;
  size_t users = nt + nr;
  for (size_t i = 0; i < users; i++) {
    uint32_t u = i < nt ? tu[i] : ou[i - nt];
    size_t len = c.ds.off[u + 1] - c.ds.off[u], last = len - held[u];
    size_t first = last > L + 1 ? last - L : 1;
    if (rc->new_targets && i < nt) { /* only the prefixes that end at a new event */
      size_t first_new = len > c.is_touched[u] ? len - c.is_touched[u] : 1;
      if (first_new > first) first = first_new;
    }
    for (size_t end = first; end < last; end++) {
      if (ns == cap) smp = xrealloc(smp, (cap = cap ? 2 * cap : 4096) * sizeof *smp);
      smp[ns++] = (data_sample){u, (uint32_t)end};
    }
  }
  if (ns == 0) { /* nobody with two events: nothing to learn from (outcome stays -EAGAIN) */
    if (ext.params) model_free(&ext);
    goto free_round;
  }
  flame_opts fo;
  flame_opts_default(&fo);
  fo.tau = rc->tau;
  fo.lambda0 = rc->lambda0;
  fo.lambdaR = rc->lambda_r;
  fo.R = rc->steps > 1 ? rc->steps - 1 : 1;
  size_t B = rc->batch;
  flame_ws *ws = flame_ws_new(&lrn.hp, B, 0);
  int32_t *tok = xmalloc(B * L * sizeof(int32_t)), *tgt = xmalloc(B * sizeof(int32_t));
  size_t *off = xmalloc((B + 1) * sizeof(size_t));
  /* a big catalogue: sampled softmax, and only the rows a step touches are zeroed and moved */
  size_t K = NI > rc->sampled_items ? rc->negatives : 0;
  int32_t *neg = K ? xmalloc(K * sizeof(int32_t)) : NULL;
  int32_t *rows = K ? xmalloc((B * L + B + K) * sizeof(int32_t)) : NULL;
  uint8_t *mark = K ? xcalloc(NI + 1, 1) : NULL;
  double loss = 0, rec = 0;
  size_t steps = 0, at = ns;
  for (size_t s = 0; s < rc->steps && ns > 0 && !atomic_load(&t->cancel); s++) {
    double ts = fl_now();
    if (at >= ns) {
      fl_shuffle(smp, ns, sizeof *smp, &t->rng);
      at = 0;
    }
    size_t nb = ns - at < B ? ns - at : B;
    model_batch bt;
    data_pack(&c.ds, smp + at, nb, L, 0, tok, off, tgt, &bt);
    at += nb;
    float lambda = rc->lambda0 > 0 ? flame_lambda(&fo, (double)s) : 0.0f;
    flame_parts parts;
    if (K) {
      for (size_t k = 0; k < K; k++) neg[k] = (int32_t)(1 + fl_rng_below(&t->rng, NI));
      bt.neg = neg;
      bt.nneg = K;
      size_t nrows = model_batch_rows(&bt, mark, rows);
      model_zero_grad_rows(&lrn, rows, nrows);
      loss += flame_step(&lrn, anc, ws, &bt, &fo, lambda, 1, &parts);
      model_adam_step_rows(&lrn, rc->lr, rows, nrows);
    } else {
      model_zero_grad(&lrn);
      loss += flame_step(&lrn, anc, ws, &bt, &fo, lambda, 1, &parts);
      model_adam_step(&lrn, rc->lr);
    }
    rec += parts.rec;
    steps++;
    duty_sleep(t, fl_now() - ts, rc->duty);
  }
  rr->loss = steps ? (float)(loss / (double)steps) : 0.0f;
  rr->rec = steps ? (float)(rec / (double)steps) : 0.0f;
  rr->users = users;
  rr->carried = ncarried;
  rr->holdout = nh;
  rr->negatives = K;
  free(mark);
  free(rows);
  free(neg);
  free(off);
  free(tgt);
  free(tok);
  flame_ws_free(ws);
  free(smp);
  if (ext.params) model_free(&ext);
  poison(&t->poison, &lrn);
  outcome = atomic_load(&t->cancel) ? TRAINER_FAILED
                                    : gate(&lrn, cur, &c.ds, hu, nh, ru, nret, rc->margin, rr);
  if (outcome == TRAINER_PROMOTED) {
    /* the round's weights move into the snapshot (lrn is freed below): a copy would cost
     * a big catalogue's table again in memory bandwidth, which serving shares */
    model_sasrec w = lrn;
    w.grads = w.adam_m = w.adam_v = NULL;
    memset(&w.g, 0, sizeof w.g);
    lrn.params = NULL;
    serve_model *s = snapshot_take(t, &w, t->version + 1, pop, npop);
    s->holdout = (serve_holdout){rr->cand_hr10, rr->cand_ndcg10, nh};
    if ((err = save_snapshot(t, s, rc->keep)) != 0) {
      fl_error("cannot write snapshot version %" PRIu64 " to %s: %s (the serving version "
               "stays)",
               s->version, t->dir, fl_strerror(err));
      serve_model_unref(s);
      outcome = TRAINER_FAILED;
    } else {
      rr->version = ++t->version;
      serve_slot_publish(t->slot, s);
      if (rc->keep_adam) { /* the round's moments are kept: a swap, not a copy */
        float *m = t->opt_m, *v = t->opt_v;
        t->opt_m = lrn.adam_m;
        t->opt_v = lrn.adam_v;
        lrn.adam_m = m; /* the old ones go with lrn */
        lrn.adam_v = v;
        t->opt_n = lrn.nparams;
        t->opt_step = lrn.step;
        t->opt_version = t->version;
      }
    }
  }
free_round:
  model_free(&lrn);
  free(held);
  free(hu);
  free(tu);
  free(ou);
out:
  serve_model_unref(cur);
  free(pop);
  collected_free(&c);
  rr->sec = fl_now() - t0;
  rr->at_ms = fl_wall_ms();
  rr->outcome = outcome;
  return outcome;
}

/* The network of snapshot s becomes the frozen anchor, a new anchor version written to the
 * dir (a failed write is logged; the anchor then holds until restart). Returns its version. */
static uint64_t anchor_from(trainer *t, const serve_model *s) {
  model_sasrec m;
  copy_params(&m, &s->m);
  set_anchor(t, &m, NULL);
  t->since_anchor = 0;
  uint64_t v = next_anchor_version(t);
  int rc = save_anchor(t, v);
  pthread_mutex_lock(&t->mu); /* the loop reads the stats */
  t->st.anchor_version = v;
  pthread_mutex_unlock(&t->mu);
  if (rc != 0)
    fl_error("anchor: cannot write anchor version %" PRIu64 " to %s: %s (it holds until restart)",
             v, t->dir, fl_strerror(rc));
  return v;
}

static void reanchor(trainer *t) {
  serve_model *cur = serve_slot_get(t->slot);
  if (!cur || !cur->has_net) {
    fl_warn("re-anchor: no model is serving yet; nothing changed");
    serve_model_unref(cur);
    return;
  }
  uint64_t v = anchor_from(t, cur);
  pthread_mutex_lock(&t->mu);
  t->st.reanchors++;
  pthread_mutex_unlock(&t->mu);
  fl_info("re-anchor: serving version %" PRIu64 " is now anchor version %" PRIu64, cur->version, v);
  serve_model_unref(cur);
}

int trainer_round_passes(const trainer_round *r, double margin) {
  return r->cand_ndcg10 >= r->serv_ndcg10 - margin &&
         (!r->retain || r->cand_retain_ndcg10 >= r->serv_retain_ndcg10 - margin);
}

static void log_round(uint64_t n, const trainer_round *r, int stopping) {
  const char *what = trainer_outcome_name(r->outcome);
  if (r->outcome == TRAINER_BOOTSTRAPPED) {
    fl_info("round %" PRIu64 ": bootstrapped; serving version %" PRIu64, n, r->version);
  } else if (r->outcome == TRAINER_FAILED && stopping) {
    fl_info("round %" PRIu64 ": stopped after %.1f s by the shutdown (the serving version stays)",
            n, r->sec);
  } else if (r->outcome == TRAINER_FAILED) {
    fl_warn("round %" PRIu64 ": failed after %.1f s (see above)", n, r->sec);
  } else {
    char sampled[64] = "", retained[96] = "", carried[64] = "";
    if (r->carried)
      snprintf(carried, sizeof carried, " (%" PRIu64 " with last round's holdout)", r->carried);
    if (r->negatives)
      snprintf(sampled, sizeof sampled, ", sampled softmax over %" PRIu64 " items", r->negatives);
    if (r->retain)
      snprintf(retained, sizeof retained, "; %" PRIu64 " retained users %.4f / %.4f", r->retain,
               r->cand_retain_ndcg10, r->serv_retain_ndcg10);
    fl_info("round %" PRIu64 ": %" PRIu64
            " users%s, loss %.4f (rec %.4f%s), %.1f s; holdout %" PRIu64
            " users NDCG@10 candidate %.4f serving %.4f (HR@10 %.4f / %.4f)%s: %s%s",
            n, r->users, carried, r->loss, r->rec, sampled, r->sec, r->holdout, r->cand_ndcg10,
            r->serv_ndcg10, r->cand_hr10, r->serv_hr10, retained, what,
            r->outcome == TRAINER_PROMOTED ? " as a new version" : "");
  }
}

static void *run(void *arg) {
  trainer *t = arg;
  fl_thread_setup("trainer", t->nice);
  model_set_threads(t->threads);
  pthread_mutex_lock(&t->mu);
  double next = fl_now() + t->rc.interval_s;
  while (!t->stop) {
    while (!t->stop && !t->now && !t->reanchor &&
           (t->paused || (fl_now() < next && t->pending < t->rc.min_new_events))) {
      double wait = t->paused ? 1.0 : next - fl_now();
      if (wait > 1.0) wait = 1.0;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      long ns = ts.tv_nsec + (long)(wait * 1e9);
      ts.tv_sec += ns / 1000000000L;
      ts.tv_nsec = ns % 1000000000L;
      pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    if (t->stop) break;
    if (t->reanchor) {
      t->reanchor = 0;
      pthread_mutex_unlock(&t->mu);
      reanchor(t);
      pthread_mutex_lock(&t->mu);
      continue;
    }
    int forced = t->now;
    t->now = 0;
    if (t->paused && !forced) continue;
    hset touched = t->touched;
    memset(&t->touched, 0, sizeof t->touched);
    uint64_t pending = t->pending;
    t->pending = 0;
    t->st.pending_events = 0;
    t->st.running = 1;
    hset carried = t->carried, held_out = {0};
    memset(&t->carried, 0, sizeof t->carried);
    round_cfg rc = t->rc;
    pthread_mutex_unlock(&t->mu);
    trainer_round rr;
    int o = round_run(t, &touched, &carried, forced, &rc, &rr, &held_out);
    pthread_mutex_lock(&t->mu);
    t->st.running = 0;
    next = fl_now() + t->rc.interval_s;
    /* did not run: keep what was touched and carried for the next try; ran: carry what it
     * held out */
    hset_merge(&t->carried, o < 0 ? &carried : &held_out);
    if (o < 0) {
      hset_merge(&t->touched, &touched);
      t->pending += pending;
      t->st.pending_events = t->pending;
      t->st.skipped++;
    } else {
      t->st.rounds++;
      t->st.outcomes[o]++;
      t->st.last = rr;
      if (t->st.nhistory == TRAINER_HISTORY) {
        memmove(t->st.history, t->st.history + 1, (TRAINER_HISTORY - 1) * sizeof rr);
        t->st.nhistory--;
      }
      t->st.history[t->st.nhistory++] = rr;
      uint64_t n = t->st.rounds, every = t->rc.reanchor_rounds;
      pthread_mutex_unlock(&t->mu);
      log_round(n, &rr, atomic_load(&t->cancel));
      if (o == TRAINER_PROMOTED && every && ++t->since_anchor >= every) {
        fl_info("re-anchor: scheduled after %" PRIu64 " promotions (train.reanchor_rounds)", every);
        reanchor(t);
      }
      pthread_mutex_lock(&t->mu);
    }
    hset_free(&touched);
    hset_free(&carried);
    hset_free(&held_out);
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

/* ---- the loop's side ---- */

void trainer_touch(trainer *t, const char *user, size_t len, size_t n) {
  uint64_t h = fl_hash_bytes(user, len);
  pthread_mutex_lock(&t->mu);
  hset_add(&t->touched, h, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
  t->pending += n;
  t->st.pending_events = t->pending;
  if (t->pending >= t->rc.min_new_events) pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

void trainer_command(trainer *t, trainer_cmd c) {
  pthread_mutex_lock(&t->mu);
  switch (c) {
  case TRAINER_TRAIN_NOW:
    t->now = 1;
    break;
  case TRAINER_PAUSE:
    t->paused = 1;
    break;
  case TRAINER_RESUME:
    t->paused = 0;
    break;
  case TRAINER_REANCHOR:
    t->reanchor = 1;
    break;
  }
  t->st.paused = t->paused;
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

void trainer_get_stats(trainer *t, trainer_stats *s) {
  pthread_mutex_lock(&t->mu);
  *s = t->st;
  pthread_mutex_unlock(&t->mu);
}

static void trainer_free(trainer *t) {
  if (t->has_anchor) model_free(&t->anchor);
  free(t->known);
  free(t->opt_m);
  free(t->opt_v);
  hset_free(&t->touched);
  hset_free(&t->carried);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

void trainer_stop(trainer *t) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  t->stop = 1;
  atomic_store(&t->cancel, 1);
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
  pthread_join(t->th, NULL);
  trainer_free(t);
}

/* The daemon's own newest anchor that loads (corrupt ones are set aside), else model.anchor
 * imported as a new anchor version; neither: no anchor yet (0). Fails only on model.anchor. */
static int load_anchor(trainer *t, const config *cfg, char *err, size_t errlen) {
  uint64_t *v;
  size_t n = list_versions(t->dir, ANCHOR_PREFIX, &v);
  t->anchor_top = top_version(t->dir, ANCHOR_PREFIX);
  char p[4200], why[512];
  for (size_t i = 0; i < n && !t->has_anchor; i++) { /* the daemon's own anchor wins */
    version_path(p, sizeof p, t->dir, ANCHOR_PREFIX, v[i]);
    model_sasrec m;
    int rc = ckpt_load(p, &m, why, sizeof why);
    if (rc != 0) {
      set_aside(t, ANCHOR_PREFIX, v[i], rc, why);
      fl_warn("anchor %s is not usable: trying an older one", p);
      continue;
    }
    set_anchor(t, &m, NULL);
    t->st.anchor_version = v[i];
    fl_info("anchor: %s (version %" PRIu64 ", %zu items)", p, v[i], t->anchor.NI);
  }
  free(v);
  if (t->has_anchor || !*cfg->model.anchor) return 0;
  model_sasrec m;
  int rc = ckpt_load(cfg->model.anchor, &m, why, sizeof why);
  if (rc != 0) {
    snprintf(err, errlen, "model.anchor %s: %s", cfg->model.anchor, why);
    return rc;
  }
  if (*cfg->model.anchor_item_ids) {
    rc = map_anchor(t, &m, cfg->model.anchor_item_ids, err, errlen);
    model_free(&m);
    if (rc != 0) return rc;
  } else {
    set_anchor(t, &m, NULL);
  }
  t->st.anchor_version = next_anchor_version(t);
  if ((rc = save_anchor(t, t->st.anchor_version)) != 0) {
    snprintf(err, errlen, "cannot write the anchor into %s: %s", t->dir, fl_strerror(rc));
    return rc;
  }
  fl_info("anchor: imported %s (%zu items) as anchor version %" PRIu64, cfg->model.anchor,
          t->anchor.NI, t->st.anchor_version);
  return 0;
}

int trainer_start(trainer **out, const config *cfg, state_db *db, serve_slot *slot, char *err,
                  size_t errlen) {
  *out = NULL;
  trainer *t = xcalloc(1, sizeof *t);
  t->db = db;
  t->slot = slot;
  t->baseline = cfg->api.online_eval_baseline && cfg->api.online_eval_per_s > 0;
  if (*cfg->model.dir)
    snprintf(t->dir, sizeof t->dir, "%s", cfg->model.dir);
  else
    snprintf(t->dir, sizeof t->dir, "%s/models", cfg->state.dir);
  model_hparams_default(&t->boot_hp);
  t->boot_hp.C = (uint32_t)cfg->model.dim;
  t->boot_hp.NL = (uint32_t)cfg->model.blocks;
  t->boot_hp.NH = (uint32_t)cfg->model.heads;
  t->boot_hp.FF = 4 * t->boot_hp.C;
  t->boot_hp.L = (uint32_t)cfg->model.maxlen;
  t->boot_hp.dropout = (float)cfg->model.dropout;
  t->boot_users = (size_t)cfg->train.bootstrap_min_users;
  t->boot_events = (size_t)cfg->train.bootstrap_min_events;
  t->boot_epochs = (size_t)cfg->train.bootstrap_epochs;
  t->seed = (uint64_t)cfg->train.seed;
  t->threads = (int)cfg->train.threads;
  t->nice = (int)cfg->train.nice;
  fl_rng_seed(&t->rng, t->seed ^ 0x747261696eull);
  read_round_cfg(&t->rc, cfg);
  t->paused = !cfg->train.enabled;
  const char *poison = getenv("FLAMED_TEST_POISON_ROUNDS");
  if (poison) t->poison = atoi(poison);
  if ((poison = getenv("FLAMED_TEST_POISON_BOOTSTRAPS"))) t->poison_boot = atoi(poison);
  t->st.paused = t->paused;
  atomic_init(&t->cancel, 0);
  pthread_mutex_init(&t->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&t->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (mkdir(t->dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "model dir %s: %s", t->dir, strerror(errno));
    trainer_free(t);
    return -errno;
  }
  remove_stale_temps(t->dir);
  int rc = load_anchor(t, cfg, err, errlen);
  if (rc != 0) {
    trainer_free(t);
    return rc;
  }
  serve_model *s = load_newest(t);
  if (s && !t->has_anchor) { /* a validated model, rather than an anchor from scratch */
    uint64_t v = anchor_from(t, s);
    s->anchor_version = v;
    fl_warn("anchor: none loads; snapshot version %" PRIu64 " becomes anchor version %" PRIu64,
            s->version, v);
  }
  if (!s && t->has_anchor) { /* warm start: the anchor's weights are version 1 */
    s = snapshot_of(t, &t->anchor, ++t->version, NULL, 0);
    if ((rc = save_snapshot(t, s, (size_t)cfg->model.keep)) != 0) {
      snprintf(err, errlen, "cannot write a snapshot into %s: %s", t->dir, fl_strerror(rc));
      serve_model_unref(s);
      trainer_free(t);
      return rc;
    }
  }
  if (s) {
    fl_info("serving model version %" PRIu64 " (%zu items)%s", s->version, s->m.NI,
            s->version == 1 && !s->holdout.users ? ", the anchor's weights" : "");
    serve_slot_publish(slot, s);
  } else {
    fl_info("no anchor yet: serving popularity until one is bootstrapped (needs %zu users and %zu "
            "events)",
            t->boot_users, t->boot_events);
    serve_slot_publish(slot, serve_model_new(0, NULL, NULL, 0));
  }
  if (pthread_create(&t->th, NULL, run, t) != 0) {
    snprintf(err, errlen, "cannot start the trainer thread");
    trainer_free(t);
    return -EAGAIN;
  }
  *out = t;
  return 0;
}
