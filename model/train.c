/* model/train.c: the offline training loop behind `flame train` (SASRec, or FLAME against a
 * frozen anchor).
 *
 * One epoch = every leave-one-out training sample once, in a fresh random order, in packed
 * batches (or the next o->epoch_samples of that order); after each epoch the validation metrics
 * decide whether this is the best model so far (then it is checkpointed) and whether patience has
 * run out. The best weights are kept in memory too, so the final test evaluation needs no reload.
 *
 * With o->state the whole run is written after every epoch (ckpt_state_save), and a run that
 * finds the file continues from it: same weights, moments, best so far and place in the
 * shuffled order, so an interrupted run that is resumed ends exactly where an uninterrupted
 * one would (same binary and thread count). Dropout masks need nothing stored: they come from
 * the model's seed and step.
 */
#include "common/common.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void train_opts_default(train_opts *o) {
  memset(o, 0, sizeof *o);
  o->epochs = 200;
  o->patience = 20;
  o->batch = 256;
  o->lr = 1e-3f;
  o->proto = EVAL_PROTOCOL_DEFAULT;
  o->seed = 42;
  o->progress = 1;
}

static uint64_t train_fbits(float f) {
  uint32_t v;
  memcpy(&v, &f, sizeof v);
  return v;
}

/* The settings of this run, as a state file records them. */
static void train_key(uint64_t *key, const model_net *m, const model_net *anc, const flame_opts *fo,
                      const data_set *ds, size_t ns, const train_opts *o) {
  memset(key, 0, TRAIN_NKEYS * sizeof *key);
  key[TRAIN_KEY_NI] = m->NI;
  key[TRAIN_KEY_C] = m->hp.C;
  key[TRAIN_KEY_NL] = m->hp.NL;
  key[TRAIN_KEY_NH] = m->hp.NH;
  key[TRAIN_KEY_FF] = m->hp.FF;
  key[TRAIN_KEY_L] = m->hp.L;
  key[TRAIN_KEY_DROPOUT] = train_fbits(m->hp.dropout);
  key[TRAIN_KEY_LN_EPS] = train_fbits(m->hp.ln_eps);
  key[TRAIN_KEY_SAMPLES] = ns;
  uint32_t crc = fl_crc32(0, ds->off, (ds->nusers + 1) * sizeof *ds->off);
  key[TRAIN_KEY_DATA_CRC] = fl_crc32(crc, ds->items, ds->off[ds->nusers] * sizeof *ds->items);
  key[TRAIN_KEY_LR] = train_fbits(o->lr);
  key[TRAIN_KEY_BATCH] = o->batch;
  key[TRAIN_KEY_SEED] = o->seed;
  key[TRAIN_KEY_DROPOUT_SEED] = m->seed;
  key[TRAIN_KEY_EPOCH_SAMPLES] = o->epoch_samples;
  key[TRAIN_KEY_PROTOCOL] = (uint64_t)o->proto;
  if (!anc) return;
  key[TRAIN_KEY_ANCHOR_CRC] =
      (1ull << 32) | fl_crc32(0, anc->params, anc->nparams * sizeof *anc->params);
  key[TRAIN_KEY_ANCHOR_DROPOUT] = train_fbits(anc->hp.dropout);
  key[TRAIN_KEY_TAU] = train_fbits(fo->tau);
  key[TRAIN_KEY_LAMBDA0] = train_fbits(fo->lambda0);
  key[TRAIN_KEY_LAMBDAR] = train_fbits(fo->lambdaR);
  key[TRAIN_KEY_SCHEDULE] = fo->R;
  key[TRAIN_KEY_BLOCKDIAG] = (uint64_t)fo->blockdiag;
  key[TRAIN_KEY_DETACH] = (uint64_t)fo->detach_w;
  key[TRAIN_KEY_WARM] = (uint64_t)fo->warm_start;
  key[TRAIN_KEY_PER_BLOCK] = (uint64_t)fo->per_block;
  key[TRAIN_KEY_PATHS] = fo->paths;
  key[TRAIN_KEY_BACKBONE] = m->hp.backbone;
}

/* Writes the best weights (params at Adam step step, m's shape) to o->out, if set. On failure
 * r->why says so. */
static int train_save_best(const train_opts *o, const model_net *m, float *params, uint64_t step,
                           train_result *r) {
  model_net bm = *m;
  bm.params = params;
  bm.step = step;
  int err = o->out ? ckpt_save(o->out, &bm) : 0;
  if (err)
    snprintf(r->why, sizeof r->why, "cannot write checkpoint %s: %s", o->out, fl_strerror(err));
  return err;
}

/* ---- one training step ---- */

struct train_step_ws {
  size_t B, L, K;   /* samples per step, window, sampled candidates (0: full softmax) */
  model_acts *acts; /* cross-entropy steps */
  flame_ws *fws;    /* FLAME steps */
  int32_t *tok;     /* (B * L) */
  int32_t *tgt;     /* (B) */
  size_t *off;      /* (B + 1) */
  int32_t *neg;     /* (K) the step's candidates */
  int32_t *rows;    /* (B * L + B + K) item rows a sampled step touches */
  uint8_t *mark;    /* (NI + 1) model_batch_rows's scratch */
};

train_step_ws *train_step_ws_new(const model_hparams *hp, size_t B, size_t NI, int flame,
                                 int per_block, size_t negatives) {
  train_step_ws *w = xcalloc(1, sizeof *w);
  w->B = B;
  w->L = hp->L;
  w->K = negatives;
  /* SASRec steps need activations; FLAME's workspace has its own plain pass */
  if (flame)
    w->fws = flame_ws_new(hp, B, per_block);
  else
    w->acts = model_acts_new(hp, B, B * w->L);
  w->tok = xmalloc(B * w->L * sizeof(int32_t));
  w->tgt = xmalloc(B * sizeof(int32_t));
  w->off = xmalloc((B + 1) * sizeof(size_t));
  if (w->K) {
    w->neg = xmalloc(w->K * sizeof(int32_t));
    w->rows = xmalloc((B * w->L + B + w->K) * sizeof(int32_t));
    w->mark = xcalloc(NI + 1, 1);
  }
  return w;
}

void train_step_ws_free(train_step_ws *w) {
  if (!w) return;
  model_acts_free(w->acts);
  flame_ws_free(w->fws);
  free(w->tok);
  free(w->tgt);
  free(w->off);
  free(w->neg);
  free(w->rows);
  free(w->mark);
  free(w);
}

size_t train_step_ws_bytes(const train_step_ws *w) {
  return w->fws ? flame_ws_bytes(w->fws) : model_acts_bytes(w->acts);
}

/* The loss of batch bt (gradients accumulated): FLAME against anc, or cross-entropy. */
static float train_loss(model_net *m, const model_net *anc, train_step_ws *w, const model_batch *bt,
                        const flame_opts *fo, float lambda, float *rec) {
  if (!anc) {
    float loss = model_forward(m, w->acts, bt, 1);
    model_backward(m, w->acts, bt);
    return loss;
  }
  flame_parts parts;
  float loss = flame_step(m, anc, w->fws, bt, fo, lambda, 1, &parts);
  *rec = parts.rec;
  return loss;
}

float train_step(model_net *m, const model_net *anc, train_step_ws *w, const data_set *ds,
                 const data_sample *s, size_t nb, const flame_opts *fo, float lambda, float lr,
                 fl_rng *rng, float *rec) {
  model_batch bt;
  float r = 0.0f, loss;
  data_pack(ds, s, nb, w->L, 0, w->tok, w->off, w->tgt, &bt);
  if (w->K) { /* a big catalogue: only the rows a step touches are zeroed and moved */
    for (size_t k = 0; k < w->K; k++) w->neg[k] = (int32_t)(1 + fl_rng_below(rng, m->NI));
    bt.neg = w->neg;
    bt.nneg = w->K;
    size_t nrows = model_batch_rows(&bt, w->mark, w->rows);
    model_zero_grad_rows(m, w->rows, nrows);
    loss = train_loss(m, anc, w, &bt, fo, lambda, &r);
    model_adam_step_rows(m, lr, w->rows, nrows);
  } else {
    model_zero_grad(m);
    loss = train_loss(m, anc, w, &bt, fo, lambda, &r);
    model_adam_step(m, lr);
  }
  if (rec) *rec = r;
  return loss;
}

int train_model(model_net *m, const model_net *anc, const flame_opts *fo, const data_set *ds,
                const train_opts *o, train_result *r) {
  memset(r, 0, sizeof *r);
  double t0 = fl_now();
  data_sample *samples = NULL;
  size_t ns = data_train_samples(ds, &samples);
  if (ns == 0) {
    free(samples);
    return FL_EEMPTY;
  }
  size_t B = o->batch;
  model_train_alloc(m);
  train_step_ws *ws = train_step_ws_new(&m->hp, B, m->NI, anc != NULL, anc ? fo->per_block : 0, 0);
  float *best = xmalloc(m->nparams * sizeof(float));
  memcpy(best, m->params, m->nparams * sizeof(float));
  /* The run's progress, all of it in st: what a state file holds is what the loop uses. */
  train_state st;
  memset(&st, 0, sizeof st);
  st.best_step = m->step;
  st.best_ndcg = -1.0;
  st.cursor = ns; /* next sample of the shuffled order; ns: reshuffle first */
  int err = 0;
  fl_rng rng;
  fl_rng_seed(&rng, o->seed ^ 0x7261696eull);
  size_t per_epoch = o->epoch_samples && o->epoch_samples < ns ? o->epoch_samples : ns;
  if (o->state) {
    train_key(st.key, m, anc, fo, ds, ns, o);
    int rc = ckpt_state_load(o->state, st.key, &st, m, best, r->why, sizeof r->why);
    if (rc == -ENOENT) {
      r->why[0] = 0;
      if (o->progress) fprintf(stderr, "no training state at %s yet: a fresh run\n", o->state);
    } else if (rc != 0) {
      err = rc;
    } else {
      r->resumed_epoch = st.epoch;
      t0 -= st.elapsed_sec;
      for (uint64_t i = 0; i < st.shuffles; i++) /* each permutes the order the last one left */
        fl_shuffle(samples, ns, sizeof *samples, &rng);
      /* The best checkpoint may be missing or newer than the state (a stop between the two
       * writes): rewrite it from the state's best weights. */
      if (st.best_epoch > 0) err = train_save_best(o, m, best, st.best_step, r);
      if (o->progress)
        fprintf(stderr, "resuming %s after epoch %zu (best epoch %zu, val NDCG@20 %.4f)\n",
                o->state, (size_t)st.epoch, (size_t)st.best_epoch, st.best_ndcg);
    }
  }
  for (size_t ep = st.epoch + 1; !err && ep <= o->epochs && st.since_best < o->patience; ep++) {
    double te = fl_now();
    double loss_sum = 0.0, rec_sum = 0.0; /* FLAME: the cross-entropy part of the loss */
    size_t steps = 0;
    float lambda =
        anc ? flame_lambda(fo, (double)ep) : 0.0f; /* e counted from 1, as the reference */
    for (size_t done = 0; done < per_epoch;) {
      if (o->cancel && atomic_load(o->cancel)) {
        err = -ECANCELED;
        break;
      }
      if (st.cursor == ns) {
        st.shuffles++;
        fl_shuffle(samples, ns, sizeof *samples, &rng);
        st.cursor = 0;
      }
      size_t nb = per_epoch - done < B ? per_epoch - done : B;
      if (nb > ns - st.cursor) nb = ns - st.cursor;
      float rec;
      loss_sum +=
          train_step(m, anc, ws, ds, samples + st.cursor, nb, fo, lambda, o->lr, &rng, &rec);
      rec_sum += rec;
      st.cursor += nb;
      done += nb;
      steps++;
    }
    if (err) break;
    double tt = fl_now() - te;
    eval_metrics val;
    if ((err = eval_run(m, ds, o->proto, EVAL_VAL, &val)) != 0) break;
    st.epoch = ep;
    st.last_loss = loss_sum / (double)steps;
    int improved = val.ndcg20 > st.best_ndcg;
    if (improved) {
      st.best_ndcg = val.ndcg20;
      st.best_epoch = ep;
      st.val = val;
      st.best_sec = fl_now() - t0;
      memcpy(best, m->params, m->nparams * sizeof(float));
      st.best_step = m->step;
      st.since_best = 0;
      if ((err = train_save_best(o, m, best, st.best_step, r)) != 0) break;
    } else {
      st.since_best++;
    }
    if (o->progress) {
      char flame[96] = "";
      if (anc)
        snprintf(flame, sizeof flame, " (rec %.4f, lambda %.4g)", rec_sum / (double)steps, lambda);
      fprintf(stderr,
              "epoch %zu: loss %.4f%s  val HR@10 %.4f NDCG@10 %.4f HR@20 %.4f NDCG@20 %.4f  "
              "%.1f s (train %.1f s)%s\n",
              ep, (float)st.last_loss, flame, val.hr10, val.ndcg10, val.hr20, val.ndcg20,
              fl_now() - te, tt, improved ? "  *best" : "");
    }
    if (o->state) {
      st.elapsed_sec = fl_now() - t0;
      if ((err = ckpt_state_save(o->state, &st, m, best)) != 0) {
        snprintf(r->why, sizeof r->why, "cannot write the training state %s: %s", o->state,
                 fl_strerror(err));
        break;
      }
    }
  }
  r->epochs_run = st.epoch;
  r->best_epoch = st.best_epoch;
  r->val = st.val;
  r->best_sec = st.best_sec;
  r->last_loss = (float)st.last_loss;
  if (!err && r->best_epoch > 0) {
    memcpy(m->params, best, m->nparams * sizeof(float));
    m->step = st.best_step;
    err = eval_run(m, ds, o->proto, EVAL_TEST, &r->test);
  }
  r->wall_sec = fl_now() - t0;
  r->param_bytes = m->nparams * sizeof(float);
  r->train_act_bytes = train_step_ws_bytes(ws);
  r->eval_act_bytes = eval_workspace_bytes(m);
  free(best);
  train_step_ws_free(ws);
  free(samples);
  return err;
}
