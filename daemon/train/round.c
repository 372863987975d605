/* daemon/train/round.c: a round (see train.h for what it does and decides): the driver of
 * model/round.c's round_run, which selects, learns and validates; here the sequences are read
 * from the state, and a passing candidate is promoted into a snapshot.
 *
 * What a round reads costs O(users touched + replay sample), not O(state): the sequences of
 * the touched users (their ids come from the loop's commit hook), of the users the last round
 * held out, and of train.replay_users + train.retain_users others drawn from the replay pool,
 * a uniform reservoir of up to train.replay_pool stored users; the popularity list comes from
 * counts kept across rounds. One round reads every stored sequence (one consistent snapshot)
 * to fill the pool and the counts: the first after start, and every round before an anchor
 * exists (the bootstrap pretrains on all of them). */
#define _GNU_SOURCE
#include "daemon/train/internal.h"

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

/* ---- a round's data ---- */

typedef struct {
  trainer *t;
  const uset *touched, *carried;
  int full; /* 1: every stored sequence is read (the pool and the counts are rebuilt) */
  data_set ds;
  size_t cap_users, cap_items;
  uint32_t *is_touched; /* (cap_users) events per user to learn as targets: new since the last
                         * round, plus the one the last round held out (0: none) */
  uint32_t *is_new;     /* (cap_users) of those, the new ones (only these can be held out) */
  uint64_t *id_off;     /* (cap_users + 1) user u's id is ids[id_off[u] .. id_off[u + 1]) */
  char *ids;
  size_t ids_cap;
  uint64_t events, unreadable; /* events read; touched sequences that did not validate */
} collected;

/* A user first seen since the last round that ran: every stored event is new. */
static int first_seen(const collected *c, size_t u) {
  return c->is_new[u] && c->ds.off[u + 1] - c->ds.off[u] <= c->is_new[u];
}

static const char *user_id(const collected *c, size_t u, size_t *len) {
  *len = c->id_off[u + 1] - c->id_off[u];
  return c->ids + c->id_off[u];
}

static void count_item(trainer *t, uint32_t it, int64_t k) {
  if (it >= t->pop_cap) {
    size_t nc = t->pop_cap ? t->pop_cap : 4096;
    while (nc <= it) nc *= 2;
    t->pop = xrealloc(t->pop, nc * sizeof *t->pop);
    memset(t->pop + t->pop_cap, 0, (nc - t->pop_cap) * sizeof *t->pop);
    t->pop_cap = nc;
  }
  t->pop[it] = (uint64_t)((int64_t)t->pop[it] + k);
}

/* Offers a user to the replay pool (algorithm R: kept with probability cap / seen). */
static void pool_offer(trainer *t, const char *id, size_t len) {
  upool *p = &t->pool;
  uint64_t seen = ++p->seen;
  size_t at = p->n;
  if (p->n == p->cap) {
    at = (size_t)fl_rng_below(&t->rng, seen);
    if (at >= p->cap) return;
    free(p->id[at]);
  } else {
    p->n++;
  }
  p->id[at] = xmalloc(len ? len : 1);
  memcpy(p->id[at], id, len);
  p->len[at] = (uint32_t)len;
}

static void pool_clear(upool *p) {
  for (size_t i = 0; i < p->n; i++) free(p->id[i]);
  p->n = 0;
  p->seen = 0;
}

void train__round_state_free(trainer *t) {
  pool_clear(&t->pool);
  free(t->pool.id);
  free(t->pool.len);
  free(t->pop);
}

static int collect_one(void *ctx, const char *user, size_t ulen, const state_entry *e, size_t n) {
  collected *c = ctx;
  data_set *ds = &c->ds;
  if (ds->nusers + 1 >= c->cap_users) {
    c->cap_users *= 2;
    ds->off = xrealloc(ds->off, (c->cap_users + 1) * sizeof *ds->off);
    c->is_touched = xrealloc(c->is_touched, c->cap_users * sizeof *c->is_touched);
    c->is_new = xrealloc(c->is_new, c->cap_users * sizeof *c->is_new);
    c->id_off = xrealloc(c->id_off, (c->cap_users + 1) * sizeof *c->id_off);
  }
  size_t at = ds->off[ds->nusers];
  if (at + n > c->cap_items) {
    while (at + n > c->cap_items) c->cap_items = c->cap_items ? 2 * c->cap_items : 65536;
    ds->items = xrealloc(ds->items, c->cap_items * sizeof *ds->items);
  }
  for (size_t i = 0; i < n; i++) {
    ds->items[at + i] = (int32_t)e[i].item;
    if (e[i].item > ds->NI) ds->NI = e[i].item;
  }
  size_t u = ds->nusers, io = c->id_off[u];
  if (io + ulen > c->ids_cap) {
    while (io + ulen > c->ids_cap) c->ids_cap *= 2;
    c->ids = xrealloc(c->ids, c->ids_cap);
  }
  memcpy(c->ids + io, user, ulen);
  c->id_off[u + 1] = io + ulen;
  uint32_t fresh = train__uset_get(c->touched, user, ulen);
  uint32_t held = train__uset_get(c->carried, user, ulen);
  c->is_new[u] = fresh;
  c->is_touched[u] = fresh > UINT32_MAX - held ? UINT32_MAX : fresh + held;
  ds->off[++ds->nusers] = at + n;
  c->events += n;
  if (c->full && !first_seen(c, u)) { /* the rest once the round runs (round_account) */
    for (size_t i = 0; i + fresh < n; i++) count_item(c->t, e[i].item, 1);
    pool_offer(c->t, user, ulen);
  }
  return 0;
}

static void collect_init(trainer *t, const uset *touched, const uset *carried, int full,
                         collected *c) {
  memset(c, 0, sizeof *c);
  c->t = t;
  c->touched = touched;
  c->carried = carried;
  c->full = full;
  c->cap_users = 4096;
  c->ds.off = xcalloc(c->cap_users + 1, sizeof *c->ds.off);
  c->is_touched = xmalloc(c->cap_users * sizeof *c->is_touched);
  c->is_new = xmalloc(c->cap_users * sizeof *c->is_new);
  c->id_off = xcalloc(c->cap_users + 1, sizeof *c->id_off);
  c->ids_cap = 65536;
  c->ids = xmalloc(c->ids_cap);
}

/* One user's stored sequence into c; a user without one (never committed) is skipped, and so
 * is one that does not validate (counted; its next commit replaces it). */
static int read_user(collected *c, const char *id, size_t len, state_entry *buf) {
  size_t n;
  int rc = state_seq_get(c->t->db, id, len, buf, c->t->seq_len, &n);
  if (rc == FL_EMISSING) return 0;
  if (rc == FL_ECORRUPT) {
    c->unreadable++;
    return 0;
  }
  return rc ? rc : collect_one(c, id, len, buf, n);
}

static int read_set(collected *c, const uset *s, const uset *skip, state_entry *buf) {
  for (size_t i = 0; i < s->cap; i++) {
    size_t len;
    const char *id = train__uset_at(s, i, &len);
    if (!id || (skip && train__uset_get(skip, id, len))) continue;
    int rc = read_user(c, id, len, buf);
    if (rc) return rc;
  }
  return 0;
}

/* The touched and carried users' sequences and up to `sample` others drawn from the replay
 * pool (a partial shuffle of it): O(touched + sample) reads, whatever the state holds. */
static int collect_some(collected *c, size_t sample) {
  trainer *t = c->t;
  state_entry *buf = xmalloc(t->seq_len * sizeof *buf);
  int rc = read_set(c, c->touched, NULL, buf);
  if (!rc) rc = read_set(c, c->carried, c->touched, buf);
  upool *p = &t->pool;
  for (size_t i = 0, got = 0; !rc && i < p->n && got < sample; i++) {
    size_t j = i + (size_t)fl_rng_below(&t->rng, p->n - i);
    char *id = p->id[j];
    uint32_t len = p->len[j];
    p->id[j] = p->id[i], p->len[j] = p->len[i];
    p->id[i] = id, p->len[i] = len;
    if (train__uset_get(c->touched, id, len) || train__uset_get(c->carried, id, len)) continue;
    size_t before = c->ds.nusers;
    rc = read_user(c, id, len, buf);
    got += c->ds.nusers > before;
  }
  free(buf);
  return rc;
}

/* Every stored sequence (one consistent snapshot): the replay pool and the popularity counts
 * are rebuilt from it. O(state): the first round after start, and rounds before an anchor. */
static int collect_all(collected *c) {
  trainer *t = c->t;
  pool_clear(&t->pool);
  if (!t->pool.id) {
    t->pool.id = xmalloc(t->pool.cap * sizeof *t->pool.id);
    t->pool.len = xmalloc(t->pool.cap * sizeof *t->pool.len);
  }
  if (t->pop) memset(t->pop, 0, t->pop_cap * sizeof *t->pop);
  int rc = state_seq_foreach(t->db, collect_one, c);
  t->pool.ready = rc == 0;
  return rc;
}

/* The new events of c's users in the popularity counts (sign -1 takes them out again). */
static void count_new(trainer *t, const collected *c, int sign) {
  for (size_t u = 0; u < c->ds.nusers; u++) {
    size_t n = c->ds.off[u + 1] - c->ds.off[u], k = c->is_new[u] < n ? c->is_new[u] : n;
    for (size_t i = n - k; i < n; i++) count_item(t, (uint32_t)c->ds.items[c->ds.off[u] + i], sign);
  }
}

static int collect(trainer *t, const uset *touched, const uset *carried, const round_cfg *rc,
                   collected *c) {
  int full = !t->has_anchor || !t->pool.ready;
  collect_init(t, touched, carried, full, c);
  int err = full ? collect_all(c) : collect_some(c, rc->learn.replay + rc->learn.retain);
  c->ds.user_id = xcalloc(c->ds.nusers + 1, sizeof *c->ds.user_id); /* data_free frees it */
  if (!err) count_new(t, c, 1);
  return err;
}

/* After a round that ran: the users first seen go into the replay pool. After one that did
 * not (its touched users come back next time), their new events leave the counts again. */
static void round_account(trainer *t, const collected *c, int ran) {
  if (!ran) {
    count_new(t, c, -1);
    return;
  }
  for (size_t u = 0; u < c->ds.nusers; u++) {
    if (!first_seen(c, u)) continue;
    size_t len;
    const char *id = user_id(c, u, &len);
    pool_offer(t, id, len);
  }
}

static void collected_free(collected *c) {
  data_free(&c->ds);
  free(c->is_touched);
  free(c->is_new);
  free(c->id_off);
  free(c->ids);
}

/* The most frequent items, most frequent first (ties: lower index first). */
static size_t popular_items(const trainer *t, size_t k, uint32_t **out) {
  size_t n = 0;
  uint32_t *v = xmalloc((k ? k : 1) * sizeof *v);
  const uint64_t *cnt = t->pop;
  for (size_t i = 1; i < t->pop_cap; i++) {
    if (!cnt[i]) continue;
    if (n < k)
      n++;
    else if (cnt[i] <= cnt[v[k - 1]])
      continue;
    size_t j = n - 1; /* insertion into the sorted list, dropping the last if full */
    while (j > 0 && cnt[v[j - 1]] < cnt[i]) {
      v[j] = v[j - 1];
      j--;
    }
    v[j] = (uint32_t)i;
  }
  *out = v;
  return n;
}

/* The trainer's outcome of a ROUND_* result. */
static int outcome_of(int r) {
  switch (r) {
  case ROUND_PASSED:
    return TRAINER_PROMOTED;
  case ROUND_WORSE:
    return TRAINER_REJECTED_WORSE;
  case ROUND_NONFINITE:
    return TRAINER_REJECTED_NONFINITE;
  default:
    return TRAINER_FAILED;
  }
}

/* The test hook of bootstraps (trainer.h): a NaN weight in m while *left > 0 (counted down). */
static void poison(int *left, model_net *m) {
  if (*left > 0) {
    (*left)--;
    m->params[m->nparams / 2] = NAN;
  }
}

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
static int bootstrap(trainer *t, const collected *c, const serve_model *cur, model_net *m,
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
  rr->f.loss = r.last_loss;
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
  model_net m;
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
  if (nh > rc->learn.holdout) nh = rc->learn.holdout;
  round_figures f = {.loss = rr->f.loss}; /* the pretraining's loss; the gate adds its figures */
  int outcome = atomic_load(&t->cancel)
                    ? TRAINER_FAILED
                    : outcome_of(round_gate(&m, cur && cur->has_net ? &cur->m : NULL, &c->ds, hu,
                                            nh, NULL, 0, rc->learn.margin, &f));
  rr->f = f;
  free(hu);
  if (outcome != TRAINER_PROMOTED) {
    if (outcome != TRAINER_FAILED)
      fl_warn("bootstrap: the pretrained anchor fails the gate (%s): not published, the next "
              "round pretrains again",
              trainer_outcome_name(outcome));
    model_free(&m);
    return outcome;
  }
  train__set_anchor(t, &m, NULL);
  uint64_t v = train__next_anchor_version(t);
  pthread_mutex_lock(&t->mu); /* the loop reads the stats */
  t->st.anchor_version = v;
  pthread_mutex_unlock(&t->mu);
  if ((err = train__save_anchor(t, v)) != 0) {
    fl_error("cannot write the bootstrapped anchor to %s: %s", t->dir, fl_strerror(err));
    return TRAINER_FAILED;
  }
  serve_model *s = train__snapshot_of(t, &t->anchor, ++t->version, pop, npop);
  s->holdout = (serve_holdout){rr->f.cand_hr10, rr->f.cand_ndcg10, rr->f.holdout};
  if ((err = train__save_snapshot(t, s, rc->keep)) != 0) {
    fl_error("cannot write snapshot version %" PRIu64 ": %s", s->version, fl_strerror(err));
    serve_model_unref(s);
    return TRAINER_FAILED;
  }
  rr->version = s->version;
  serve_slot_publish(t->slot, s);
  return TRAINER_BOOTSTRAPPED;
}

/* ---- the round ---- */

/* A round's working set around model/round.c's round_run: what it read, the serving snapshot,
 * the candidate. Owns every buffer it points to; round_free releases them all. */
typedef struct {
  trainer *t;
  const round_cfg *rc;
  trainer_round *rr;
  collected c;
  uint32_t *pop; /* (npop) the popularity list, most frequent first */
  size_t npop;
  serve_model *cur; /* the serving snapshot (a reference) */
  model_net lrn;    /* the candidate */
  uint8_t *held;    /* (users) round_run's holdout flags */
} round_ctx;

static void round_free(round_ctx *x) {
  if (x->lrn.params || x->lrn.grads) model_free(&x->lrn);
  free(x->held);
  serve_model_unref(x->cur);
  free(x->pop);
  collected_free(&x->c);
}

/* After every step: the trainer uses about train.duty of a core. */
static void after_step(void *ctx, double sec) {
  round_ctx *x = ctx;
  duty_sleep(x->t, sec, x->rc->duty);
}

/* The promoted candidate becomes the next version: its weights move into a snapshot (no
 * copy), which is written and published; its Adam moments are kept for the next round
 * (train.keep_adam). TRAINER_FAILED if the write fails (the serving version stays). */
static int round_promote(round_ctx *x) {
  trainer *t = x->t;
  model_net w;
  model_take_params(&w, &x->lrn);
  serve_model *s = train__snapshot_take(t, &w, t->version + 1, x->pop, x->npop);
  s->holdout = (serve_holdout){x->rr->f.cand_hr10, x->rr->f.cand_ndcg10, x->rr->f.holdout};
  int err = train__save_snapshot(t, s, x->rc->keep);
  if (err != 0) {
    fl_error("cannot write snapshot version %" PRIu64 " to %s: %s (the serving version stays)",
             s->version, t->dir, fl_strerror(err));
    serve_model_unref(s);
    return TRAINER_FAILED;
  }
  x->rr->version = ++t->version;
  serve_slot_publish(t->slot, s);
  if (x->rc->keep_adam) { /* a swap, not a copy: the old moments go with lrn */
    model_swap_moments(&x->lrn, &t->opt_m, &t->opt_v);
    t->opt_n = x->lrn.nparams;
    t->opt_step = x->lrn.step;
    t->opt_version = t->version;
  }
  return TRAINER_PROMOTED;
}

/* round_run from the serving weights (or the anchor's, when the serving network has another
 * shape), with the kept Adam moments when they belong to them; the users whose newest event it
 * held out go to held_out; a passing candidate is promoted. -EAGAIN when it did not run. */
static int round_fine_tune(round_ctx *x, int forced, uset *held_out) {
  trainer *t = x->t;
  const serve_model *cur = x->cur;
  const model_net *serving = cur && cur->has_net ? &cur->m : NULL;
  const model_net *base =
      serving && train__same_shape(&serving->hp, &t->anchor.hp) ? serving : &t->anchor;
  int keep = x->rc->keep_adam && t->opt_m && base == serving && cur->version == t->opt_version;
  round_env e = {.ds = &x->c.ds,
                 .learn = x->c.is_touched,
                 .fresh = x->c.is_new,
                 .base = base,
                 .serving = serving,
                 .anchor = &t->anchor,
                 .known = t->known,
                 .adam_m = keep ? t->opt_m : NULL,
                 .adam_v = keep ? t->opt_v : NULL,
                 .adam_n = t->opt_n,
                 .adam_step = t->opt_step,
                 .grow_seed = t->seed ^ (t->version + 1),
                 .dropout_seed = t->seed ^ (0x9e37ull * (t->version + 1)),
                 .rng = &t->rng,
                 .cancel = &t->cancel,
                 .on_step = after_step,
                 .ctx = x,
                 .poison = t->poison > 0};
  round_figures f;
  int r = round_run(&x->rc->learn, &e, forced, &x->lrn, &x->held, &f);
  if (r == -EAGAIN) return -EAGAIN;
  if (t->poison > 0) t->poison--;
  x->rr->f = f;
  for (size_t u = 0; u < x->c.ds.nusers; u++) {
    if (x->held[u] != 1) continue;
    size_t len;
    const char *id = user_id(&x->c, u, &len);
    train__uset_add(held_out, id, len, 1);
  }
  return r == ROUND_PASSED ? round_promote(x) : outcome_of(r);
}

int train__round_run(trainer *t, const uset *touched, const uset *carried, int forced,
                     const round_cfg *rc, trainer_round *rr, uset *held_out) {
  double t0 = fl_now();
  memset(rr, 0, sizeof *rr);
  round_ctx x = {.t = t, .rc = rc, .rr = rr};
  int outcome;
  int err = collect(t, touched, carried, rc, &x.c);
  rr->read_sec = fl_now() - t0;
  if (err != 0) {
    fl_error("round: cannot read the stored sequences: %s", fl_strerror(err));
    outcome = TRAINER_FAILED;
  } else {
    if (x.c.unreadable)
      fl_warn("round: %" PRIu64 " stored sequences do not validate and were skipped (each "
              "user's next event replaces its sequence)",
              x.c.unreadable);
    x.npop = popular_items(t, rc->popular, &x.pop);
    x.cur = serve_slot_get(t->slot);
    outcome = t->has_anchor ? round_fine_tune(&x, forced, held_out)
                            : bootstrap_round(t, &x.c, x.cur, rc, rr, x.pop, x.npop);
    round_account(t, &x.c, outcome != -EAGAIN);
    rr->read_users = x.c.ds.nusers;
  }
  round_free(&x);
  rr->sec = fl_now() - t0;
  rr->at_ms = fl_wall_ms();
  rr->outcome = outcome;
  return outcome;
}
