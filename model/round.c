/* model/round.c: one online fine-tuning round (model.h, "online rounds"): select users, hold
 * out, build the learner, select samples, learn, validate. The daemon's trainer
 * (daemon/train/round.c: its sequences from RocksDB, promotion into snapshots) and `flame
 * replay` (the same stream offline) are its two drivers; neither re-implements any of it. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"

int round_passes(const round_figures *f, double margin) {
  return f->cand_ndcg10 >= f->serv_ndcg10 - margin &&
         (!f->retain || f->cand_retain_ndcg10 >= f->serv_retain_ndcg10 - margin);
}

int round_gate(const model_net *m, const model_net *serving, const data_set *ds, const uint32_t *hu,
               size_t nh, const uint32_t *ru, size_t nret, double margin, round_figures *f) {
  if (!model_params_finite(m)) return ROUND_NONFINITE;
  eval_metrics mc = eval_newest(m, ds, hu, nh), ms = {0};
  if (serving) ms = eval_newest(serving, ds, hu, nh);
  f->cand_ndcg10 = mc.ndcg10;
  f->cand_hr10 = mc.hr10;
  f->serv_ndcg10 = ms.ndcg10;
  f->serv_hr10 = ms.hr10;
  f->holdout = nh;
  if (serving && nret) { /* without a serving model there is nothing to forget */
    f->retain = nret;
    f->cand_retain_ndcg10 = eval_newest(m, ds, ru, nret).ndcg10;
    f->serv_retain_ndcg10 = eval_newest(serving, ds, ru, nret).ndcg10;
  }
  return round_passes(f, margin) ? ROUND_PASSED : ROUND_WORSE;
}

const model_net *round_anchor_for(const model_net *anc, const uint8_t *known, const model_net *lrn,
                                  model_net *ext) {
  size_t NI = lrn->NI, C = lrn->hp.C;
  int need = NI > anc->NI;
  for (size_t i = 1; known && i <= anc->NI && !need; i++) need = !known[i];
  if (!need) return anc;
  model_grow(ext, anc, NI, 0);
  float *rows = model_items(ext);
  const float *lr = model_items(lrn);
  for (size_t i = 1; i <= NI; i++)
    if (i > anc->NI || (known && !known[i])) memcpy(rows + i * C, lr + i * C, C * sizeof(float));
  return ext;
}

/* A round's working set: whom it chose and the samples. Owns every buffer it points to. */
typedef struct {
  const round_opts *o;
  const round_env *e;
  round_figures *f;
  uint32_t *tu; /* (nt) users with events to learn and 2+ items, shuffled */
  uint32_t *ou; /* (no) the others, shuffled: the first nr are replayed */
  size_t nt, no, nr, nnew, ncarried;
  uint8_t *held; /* (users) 1: the user's newest event is held out */
  uint32_t *hu;  /* (nh) holdout users */
  size_t nh;
  const uint32_t *ru; /* (nret) retained users: ou after the replayed ones */
  size_t nret;
  model_net *lrn;
  data_sample *smp; /* (ns) the training samples */
  size_t ns;
} round_ctx;

/* Users: those with events to learn (holdout candidates), then a replay sample of the others.
 * 0, or -EAGAIN when too few users have new events (carried events alone never start one). */
static int select_users(round_ctx *x, int forced) {
  const data_set *ds = x->e->ds;
  x->tu = xmalloc((ds->nusers + 1) * sizeof *x->tu);
  x->ou = xmalloc((ds->nusers + 1) * sizeof *x->ou);
  for (size_t u = 0; u < ds->nusers; u++) {
    size_t len = ds->off[u + 1] - ds->off[u];
    if (len < 2) continue;
    if (x->e->learn[u]) {
      x->tu[x->nt++] = (uint32_t)u;
      x->nnew += x->e->fresh[u] > 0;
      x->ncarried += x->e->learn[u] > x->e->fresh[u];
    } else {
      x->ou[x->no++] = (uint32_t)u;
    }
  }
  if (x->nnew < x->o->min_users && !forced) return -EAGAIN;
  fl_shuffle(x->tu, x->nt, sizeof *x->tu, x->e->rng);
  fl_shuffle(x->ou, x->no, sizeof *x->ou, x->e->rng);
  x->nr = x->no < x->o->replay ? x->no : x->o->replay;
  return 0;
}

/* The holdout: users with new events and 3+ items, their newest event (not one carried from the
 * last round's holdout: that one is learned now); the driver carries it to the next round (the
 * held flags), or each round would withhold its holdout from training for good. Then the
 * retained users: neither touched nor replayed; their newest event (after at least one other)
 * shows what the candidate forgot. ou is shuffled, so each round checks another sample. */
static void select_holdout(round_ctx *x) {
  const data_set *ds = x->e->ds;
  size_t cap = x->o->holdout;
  x->held = xcalloc(ds->nusers ? ds->nusers : 1, 1);
  x->hu = xmalloc((x->nt + x->nr + 1) * sizeof *x->hu);
  for (size_t i = 0; i < x->nt && x->nh < cap; i++) {
    uint32_t u = x->tu[i];
    if (x->e->fresh[u] && ds->off[u + 1] - ds->off[u] >= 3) {
      x->held[u] = 1;
      x->hu[x->nh++] = u;
    }
  }
  if (x->nh == 0) /* a forced round without new events: validate on replayed users instead */
    for (size_t i = 0; i < x->nr && x->nh < cap; i++) {
      uint32_t u = x->ou[i];
      if (ds->off[u + 1] - ds->off[u] >= 3) {
        x->held[u] = 2; /* an old event: nothing to carry */
        x->hu[x->nh++] = u;
      }
    }
  x->ru = x->ou + x->nr;
  x->nret = x->no - x->nr < x->o->retain ? x->no - x->nr : x->o->retain;
}

/* Rows for the items new to the base network (indices above old_NI): the mean of the rows of
 * the up to ROUND_CONTEXT known items before each of their occurrences in the sequences, so
 * that a new item scores like the items it follows from its first round on (a random row
 * ranks it last until rounds have learned it). Items with no known item before them keep
 * their random rows. O(events stored). */
enum { ROUND_CONTEXT = 3 };
static void seed_new_rows(model_net *m, size_t old_NI, const data_set *ds) {
  size_t NI = m->NI, C = m->hp.C;
  if (NI <= old_NI) return;
  float *rows = model_items(m), *sum = xcalloc((NI - old_NI) * C, sizeof *sum);
  uint32_t *n = xcalloc(NI - old_NI, sizeof *n);
  for (size_t u = 0; u < ds->nusers; u++) {
    const int32_t *s = ds->items + ds->off[u];
    size_t len = ds->off[u + 1] - ds->off[u];
    for (size_t k = 1; k < len; k++) {
      size_t it = (size_t)s[k];
      if (it <= old_NI || it > NI) continue;
      float *acc = sum + (it - old_NI - 1) * C;
      for (size_t j = k, used = 0; j-- > 0 && used < ROUND_CONTEXT;) {
        if ((size_t)s[j] > old_NI) continue; /* another new item: no row to copy yet */
        const float *src = rows + (size_t)s[j] * C;
        for (size_t c = 0; c < C; c++) acc[c] += src[c];
        n[it - old_NI - 1]++;
        used++;
      }
    }
  }
  for (size_t i = 0; i < NI - old_NI; i++)
    if (n[i])
      for (size_t c = 0; c < C; c++) rows[(old_NI + 1 + i) * C + c] = sum[i * C + c] / (float)n[i];
  free(sum);
  free(n);
}

/* The learnable network: the base weights, rows for new items, and the driver's Adam moments
 * when they belong to those weights (new rows' moments zero). Every step clears the gradients
 * it uses, so they start undefined. */
static void make_learner(round_ctx *x) {
  const round_env *e = x->e;
  size_t NI = e->ds->NI > e->base->NI ? e->ds->NI : e->base->NI;
  if (e->anchor->NI > NI) NI = e->anchor->NI;
  model_net *lrn = x->lrn;
  model_grow(lrn, e->base, NI, e->grow_seed);
  if (x->o->seed_rows) seed_new_rows(lrn, e->base->NI, e->ds);
  lrn->hp.dropout = x->o->dropout;
  lrn->seed = e->dropout_seed;
  model_train_alloc_uninit(lrn);
  size_t kept = 0;
  if (e->adam_m && e->adam_n <= lrn->nparams) {
    kept = e->adam_n;
    memcpy(lrn->adam_m, e->adam_m, kept * sizeof(float));
    memcpy(lrn->adam_v, e->adam_v, kept * sizeof(float));
    lrn->step = e->adam_step;
  }
  memset(lrn->adam_m + kept, 0, (lrn->nparams - kept) * sizeof(float));
  memset(lrn->adam_v + kept, 0, (lrn->nparams - kept) * sizeof(float));
}

/* Samples: the newest L prefixes of each chosen user, never reaching a held-out item; with
 * new_targets, a touched user's only those that end at an event to learn. */
static void select_samples(round_ctx *x) {
  const data_set *ds = x->e->ds;
  size_t L = x->lrn->hp.L, cap = 0, users = x->nt + x->nr;
  for (size_t i = 0; i < users; i++) {
    uint32_t u = i < x->nt ? x->tu[i] : x->ou[i - x->nt];
    size_t len = ds->off[u + 1] - ds->off[u], last = len - (x->held[u] != 0);
    size_t first = last > L + 1 ? last - L : 1;
    if (x->o->new_targets && i < x->nt) {
      size_t first_new = len > x->e->learn[u] ? len - x->e->learn[u] : 1;
      if (first_new > first) first = first_new;
    }
    for (size_t end = first; end < last; end++) {
      if (x->ns == cap) x->smp = xrealloc(x->smp, (cap = cap ? 2 * cap : 4096) * sizeof *x->smp);
      x->smp[x->ns++] = (data_sample){u, (uint32_t)end};
    }
  }
}

/* o->steps FLAME steps against the anchor (lambda from lambda0 to lambda_r over the round), or
 * with lambda0 = 0 plain cross-entropy steps (no anchor pass: a third of the cost); a big
 * catalogue with a sampled softmax; the losses go to f. */
static void learn(round_ctx *x) {
  const round_opts *o = x->o;
  const round_env *e = x->e;
  model_net *lrn = x->lrn, ext = {0};
  int flame = o->lambda0 > 0;
  const model_net *anc = flame ? round_anchor_for(e->anchor, e->known, lrn, &ext) : NULL;
  flame_opts fo;
  flame_opts_default(&fo);
  fo.tau = o->tau;
  fo.lambda0 = o->lambda0;
  fo.lambdaR = o->lambda_r;
  fo.R = o->steps > 1 ? o->steps - 1 : 1;
  size_t B = o->batch, K = lrn->NI > o->sampled_items ? o->negatives : 0;
  train_step_ws *ws = train_step_ws_new(&lrn->hp, B, lrn->NI, flame, 0, K);
  double loss = 0, rec = 0;
  size_t steps = 0, at = x->ns;
  for (size_t s = 0; s < o->steps && !(e->cancel && atomic_load(e->cancel)); s++) {
    double ts = fl_now();
    if (at >= x->ns) {
      fl_shuffle(x->smp, x->ns, sizeof *x->smp, e->rng);
      at = 0;
    }
    size_t nb = x->ns - at < B ? x->ns - at : B;
    float lambda = flame ? flame_lambda(&fo, (double)s) : 0.0f, r;
    loss += train_step(lrn, anc, ws, e->ds, x->smp + at, nb, &fo, lambda, o->lr, e->rng, &r);
    rec += r;
    at += nb;
    steps++;
    if (e->on_step) e->on_step(e->ctx, fl_now() - ts);
  }
  train_step_ws_free(ws);
  if (ext.params) model_free(&ext);
  x->f->loss = steps ? (float)(loss / (double)steps) : 0.0f;
  x->f->rec = steps ? (float)(rec / (double)steps) : 0.0f;
  x->f->negatives = K;
}

int round_run(const round_opts *o, const round_env *e, int forced, model_net *cand, uint8_t **held,
              round_figures *f) {
  memset(f, 0, sizeof *f);
  memset(cand, 0, sizeof *cand);
  *held = NULL;
  round_ctx x = {.o = o, .e = e, .f = f, .lrn = cand};
  int outcome = -EAGAIN;
  if (select_users(&x, forced) == 0) {
    select_holdout(&x);
    make_learner(&x);
    select_samples(&x);
    if (x.ns > 0) { /* else nobody with two events: nothing to learn from */
      learn(&x);
      f->users = x.nt + x.nr;
      f->carried = x.ncarried;
      f->holdout = x.nh;
      if (e->poison) cand->params[cand->nparams / 2] = NAN;
      outcome = e->cancel && atomic_load(e->cancel)
                    ? ROUND_CANCELLED
                    : round_gate(cand, e->serving, e->ds, x.hu, x.nh, x.ru, x.nret, o->margin, f);
    }
  }
  if (outcome == -EAGAIN) {
    if (cand->params || cand->grads) model_free(cand);
  } else {
    *held = x.held;
    x.held = NULL;
  }
  free(x.smp);
  free(x.held);
  free(x.hu);
  free(x.tu);
  free(x.ou);
  return outcome;
}
