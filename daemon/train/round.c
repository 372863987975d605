/* daemon/train/round.c: a round (see train.h for what it does and decides).
 *
 * A round reads every stored sequence through state_seq_foreach (one consistent snapshot) and
 * keeps those of the touched users and a replay sample; the touched set holds 64-bit hashes
 * of user ids, filled by the loop's commit hook. Reading everything costs O(state) per round:
 * fine for millions of events, the first thing to change for much larger states. */
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
  uint32_t fresh = train__hset_get(c->touched, h), held = train__hset_get(c->carried, h);
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

/* The gate every model passes before it is published, a round's candidate or a bootstrapped
 * anchor: TRAINER_PROMOTED if m's weights are finite and trainer_round_passes on the figures
 * written to rr (m and the serving network cur, if it has one, on the newest event of the
 * holdout users hu[0..nh) of ds, and on the retained users ru[0..nret)), else the rejection. */
static int gate(const model_net *m, const serve_model *cur, const data_set *ds,
                const uint32_t *hu, size_t nh, const uint32_t *ru, size_t nret, double margin,
                trainer_round *rr) {
  if (!serve_params_finite(m)) return TRAINER_REJECTED_NONFINITE;
  eval_metrics mc = eval_newest(m, ds, hu, nh), ms = {0};
  const model_net *serving = cur && cur->has_net ? &cur->m : NULL;
  if (serving) ms = eval_newest(serving, ds, hu, nh);
  rr->cand_ndcg10 = mc.ndcg10;
  rr->cand_hr10 = mc.hr10;
  rr->serv_ndcg10 = ms.ndcg10;
  rr->serv_hr10 = ms.hr10;
  rr->holdout = nh;
  if (serving && nret) { /* without a serving model there is nothing to forget */
    rr->retain = nret;
    rr->cand_retain_ndcg10 = eval_newest(m, ds, ru, nret).ndcg10;
    rr->serv_retain_ndcg10 = eval_newest(serving, ds, ru, nret).ndcg10;
  }
  return trainer_round_passes(rr, margin) ? TRAINER_PROMOTED : TRAINER_REJECTED_WORSE;
}

/* The test hooks (trainer.h): a NaN weight in m while *left > 0 (counted down). */
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
  s->holdout = (serve_holdout){rr->cand_hr10, rr->cand_ndcg10, rr->holdout};
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

/* A round's working set: what it read, whom it chose, the network it trains. Owns every
 * buffer it points to; round_free releases them all. */
typedef struct {
  trainer *t;
  const round_cfg *rc;
  trainer_round *rr;
  collected c;
  uint32_t *pop; /* (npop) the popularity list, most frequent first */
  size_t npop;
  serve_model *cur; /* the serving snapshot (a reference) */
  uint32_t *tu;     /* (nt) touched users with 2+ items, shuffled */
  uint32_t *ou;     /* (no) the others, shuffled: the first nr are replayed */
  size_t nt, no, nr, nnew, ncarried;
  uint8_t *held; /* (users) 1: the user's newest event is held out */
  uint32_t *hu;  /* (nh) holdout users */
  size_t nh;
  const uint32_t *ru; /* (nret) retained users: ou after the replayed ones */
  size_t nret;
  model_net lrn, ext; /* the learnable network; the anchor's extension (if needed) */
  data_sample *smp;      /* (ns) the training samples */
  size_t ns;
} round_ctx;

static void round_free(round_ctx *x) {
  if (x->lrn.params || x->lrn.grads) model_free(&x->lrn);
  if (x->ext.params) model_free(&x->ext);
  free(x->smp);
  free(x->held);
  free(x->hu);
  free(x->tu);
  free(x->ou);
  serve_model_unref(x->cur);
  free(x->pop);
  collected_free(&x->c);
}

/* Users: touched ones (holdout candidates), then a replay sample of the others. 0, or -EAGAIN
 * when too few users have new events (carried events alone never start a round). */
static int round_select_users(round_ctx *x, int forced) {
  const data_set *ds = &x->c.ds;
  x->tu = xmalloc((ds->nusers + 1) * sizeof *x->tu);
  x->ou = xmalloc((ds->nusers + 1) * sizeof *x->ou);
  for (size_t u = 0; u < ds->nusers; u++) {
    size_t len = ds->off[u + 1] - ds->off[u];
    if (len < 2) continue;
    if (x->c.is_touched[u]) {
      x->tu[x->nt++] = (uint32_t)u;
      x->nnew += x->c.is_new[u] > 0;
      x->ncarried += x->c.is_touched[u] > x->c.is_new[u];
    } else {
      x->ou[x->no++] = (uint32_t)u;
    }
  }
  if (x->nnew < x->rc->min_users && !forced) return -EAGAIN;
  fl_shuffle(x->tu, x->nt, sizeof *x->tu, &x->t->rng);
  fl_shuffle(x->ou, x->no, sizeof *x->ou, &x->t->rng);
  x->nr = x->no < x->rc->replay ? x->no : x->rc->replay;
  return 0;
}

/* The holdout: users with new events and 3+ items, their newest event (not an event carried
 * from the last round's holdout: that one is learned now). The round never learns it, so it
 * is carried to the next (held_out): without that, each round would withhold up to
 * train.holdout_users new events from training for good. Then the retained users: neither
 * touched nor replayed, so the round never sees their events; their newest event (after at
 * least one other: ou holds users with 2+ items) shows what the candidate forgot. ou is
 * shuffled, so each round checks a different sample. */
static void round_select_holdout(round_ctx *x, hset *held_out) {
  const data_set *ds = &x->c.ds;
  size_t cap = x->rc->holdout;
  x->held = xcalloc(ds->nusers, 1);
  x->hu = xmalloc((x->nt + x->nr + 1) * sizeof *x->hu);
  for (size_t i = 0; i < x->nt && x->nh < cap; i++) {
    uint32_t u = x->tu[i];
    if (x->c.is_new[u] && ds->off[u + 1] - ds->off[u] >= 3) {
      x->held[u] = 1;
      x->hu[x->nh++] = u;
      train__hset_add(held_out, x->c.hash[u], 1);
    }
  }
  if (x->nh == 0) /* a forced round without new events: validate on replayed users instead */
    for (size_t i = 0; i < x->nr && x->nh < cap; i++) {
      uint32_t u = x->ou[i];
      if (ds->off[u + 1] - ds->off[u] >= 3) {
        x->held[u] = 1;
        x->hu[x->nh++] = u;
      }
    }
  x->ru = x->ou + x->nr;
  x->nret = x->no - x->nr < x->rc->retain ? x->no - x->nr : x->rc->retain;
}

/* The learnable network: the serving weights (or the anchor's), rows for new items, and the
 * kept Adam moments when they belong to those weights (new rows' moments zero). Every step
 * clears the gradients it uses, so they start undefined. */
static void round_learner(round_ctx *x) {
  trainer *t = x->t;
  const serve_model *cur = x->cur;
  const model_net *base =
      cur && cur->has_net && train__same_shape(&cur->m.hp, &t->anchor.hp) ? &cur->m : &t->anchor;
  size_t NI = x->c.ds.NI > base->NI ? x->c.ds.NI : base->NI;
  if (t->anchor.NI > NI) NI = t->anchor.NI;
  model_net *lrn = &x->lrn;
  model_grow(lrn, base, NI, t->seed ^ (t->version + 1));
  lrn->hp.dropout = x->rc->dropout;
  lrn->seed = t->seed ^ (0x9e37ull * (t->version + 1));
  model_train_alloc_uninit(lrn);
  size_t kept = 0;
  if (x->rc->keep_adam && t->opt_m && base == &cur->m && cur->version == t->opt_version &&
      t->opt_n <= lrn->nparams) {
    kept = t->opt_n;
    memcpy(lrn->adam_m, t->opt_m, kept * sizeof(float));
    memcpy(lrn->adam_v, t->opt_v, kept * sizeof(float));
    lrn->step = t->opt_step;
  }
  memset(lrn->adam_m + kept, 0, (lrn->nparams - kept) * sizeof(float));
  memset(lrn->adam_v + kept, 0, (lrn->nparams - kept) * sizeof(float));
}

/* Samples: the newest L prefixes of each chosen user, never reaching a held-out item; with
 * train.new_targets_only, a touched user's only those that end at a new event. */
static void round_select_samples(round_ctx *x) {
  const data_set *ds = &x->c.ds;
  size_t L = x->lrn.hp.L, cap = 0, users = x->nt + x->nr;
  for (size_t i = 0; i < users; i++) {
    uint32_t u = i < x->nt ? x->tu[i] : x->ou[i - x->nt];
    size_t len = ds->off[u + 1] - ds->off[u], last = len - x->held[u];
    size_t first = last > L + 1 ? last - L : 1;
    if (x->rc->new_targets && i < x->nt) {
      size_t first_new = len > x->c.is_touched[u] ? len - x->c.is_touched[u] : 1;
      if (first_new > first) first = first_new;
    }
    for (size_t end = first; end < last; end++) {
      if (x->ns == cap) x->smp = xrealloc(x->smp, (cap = cap ? 2 * cap : 4096) * sizeof *x->smp);
      x->smp[x->ns++] = (data_sample){u, (uint32_t)end};
    }
  }
}

/* train.steps FLAME steps against the anchor (lambda from train.lambda0 to train.lambda_r),
 * a big catalogue with a sampled softmax; the loss figures go to rr. */
static void round_learn(round_ctx *x) {
  trainer *t = x->t;
  const round_cfg *rc = x->rc;
  model_net *lrn = &x->lrn;
  const model_net *anc = train__anchor_for(t, lrn, &x->ext);
  flame_opts fo;
  flame_opts_default(&fo);
  fo.tau = rc->tau;
  fo.lambda0 = rc->lambda0;
  fo.lambdaR = rc->lambda_r;
  fo.R = rc->steps > 1 ? rc->steps - 1 : 1;
  size_t B = rc->batch, K = lrn->NI > rc->sampled_items ? rc->negatives : 0;
  train_step_ws *ws = train_step_ws_new(&lrn->hp, B, lrn->NI, 1, 0, K);
  double loss = 0, rec = 0;
  size_t steps = 0, at = x->ns;
  for (size_t s = 0; s < rc->steps && !atomic_load(&t->cancel); s++) {
    double ts = fl_now();
    if (at >= x->ns) {
      fl_shuffle(x->smp, x->ns, sizeof *x->smp, &t->rng);
      at = 0;
    }
    size_t nb = x->ns - at < B ? x->ns - at : B;
    float lambda = rc->lambda0 > 0 ? flame_lambda(&fo, (double)s) : 0.0f, r;
    loss += train_step(lrn, anc, ws, &x->c.ds, x->smp + at, nb, &fo, lambda, rc->lr, &t->rng, &r);
    rec += r;
    at += nb;
    steps++;
    duty_sleep(t, fl_now() - ts, rc->duty);
  }
  train_step_ws_free(ws);
  if (x->ext.params) model_free(&x->ext);
  x->rr->loss = steps ? (float)(loss / (double)steps) : 0.0f;
  x->rr->rec = steps ? (float)(rec / (double)steps) : 0.0f;
  x->rr->negatives = K;
}

/* The promoted candidate becomes the next version: its weights move into a snapshot (no
 * copy), which is written and published; its Adam moments are kept for the next round
 * (train.keep_adam). TRAINER_FAILED if the write fails (the serving version stays). */
static int round_promote(round_ctx *x) {
  trainer *t = x->t;
  model_net w;
  model_take_params(&w, &x->lrn);
  serve_model *s = train__snapshot_take(t, &w, t->version + 1, x->pop, x->npop);
  s->holdout = (serve_holdout){x->rr->cand_hr10, x->rr->cand_ndcg10, x->nh};
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

/* Select, learn, validate, promote; -EAGAIN when there is nothing to learn. */
static int round_fine_tune(round_ctx *x, int forced, hset *held_out) {
  if (round_select_users(x, forced) != 0) return -EAGAIN;
  round_select_holdout(x, held_out);
  round_learner(x);
  round_select_samples(x);
  if (x->ns == 0) return -EAGAIN; /* nobody with two events: nothing to learn from */
  round_learn(x);
  x->rr->users = x->nt + x->nr;
  x->rr->carried = x->ncarried;
  x->rr->holdout = x->nh;
  poison(&x->t->poison, &x->lrn);
  if (atomic_load(&x->t->cancel)) return TRAINER_FAILED;
  int outcome = gate(&x->lrn, x->cur, &x->c.ds, x->hu, x->nh, x->ru, x->nret, x->rc->margin, x->rr);
  return outcome == TRAINER_PROMOTED ? round_promote(x) : outcome;
}

int train__round_run(trainer *t, const hset *touched, const hset *carried, int forced,
                     const round_cfg *rc, trainer_round *rr, hset *held_out) {
  double t0 = fl_now();
  memset(rr, 0, sizeof *rr);
  round_ctx x = {.t = t, .rc = rc, .rr = rr};
  int outcome;
  int err = collect(t, touched, carried, &x.c);
  if (err != 0) {
    fl_error("round: cannot read the stored sequences: %s", fl_strerror(err));
    outcome = TRAINER_FAILED;
  } else {
    x.npop = popular_items(&x.c, rc->popular, &x.pop);
    x.cur = serve_slot_get(t->slot);
    outcome = t->has_anchor ? round_fine_tune(&x, forced, held_out)
                            : bootstrap_round(t, &x.c, x.cur, rc, rr, x.pop, x.npop);
  }
  round_free(&x);
  rr->sec = fl_now() - t0;
  rr->at_ms = fl_wall_ms();
  rr->outcome = outcome;
  return outcome;
}
