/* model/train.c: the offline training loop behind `flame train` (SASRec, or FLAME against a
 * frozen anchor).
 *
 * One epoch = every leave-one-out training sample once, in a fresh random order, in packed
 * batches (or the next o->epoch_samples of that order); after each epoch the validation metrics
 * decide whether this is the best model so far (then it is checkpointed) and whether patience has
 * run out. The best weights are kept in memory too, so the final test evaluation needs no reload.
 */
#include "common/common.h"
#include "model.h"

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

int train_model(model_sasrec *m, const model_sasrec *anc, const flame_opts *fo, const data_set *ds,
                const train_opts *o, train_result *r) {
  memset(r, 0, sizeof *r);
  double t0 = fl_now();
  data_sample *samples = NULL;
  size_t ns = data_train_samples(ds, &samples);
  if (ns == 0) {
    free(samples);
    return FL_EEMPTY;
  }
  size_t B = o->batch, L = m->hp.L;
  model_train_alloc(m);
  /* SASRec steps need activations; FLAME's workspace has its own plain pass */
  model_acts *a = anc ? NULL : model_acts_new(&m->hp, B, B * L);
  flame_ws *ws = anc ? flame_ws_new(&m->hp, B, fo->per_block) : NULL;
  int32_t *tok = xmalloc(B * L * sizeof(int32_t)), *tgt = xmalloc(B * sizeof(int32_t));
  size_t *off = xmalloc((B + 1) * sizeof(size_t));
  float *best = xmalloc(m->nparams * sizeof(float));
  memcpy(best, m->params, m->nparams * sizeof(float));
  uint64_t best_step = m->step;
  double best_ndcg = -1.0;
  size_t since_best = 0;
  int err = 0;
  fl_rng rng;
  fl_rng_seed(&rng, o->seed ^ 0x7261696eull);
  size_t per_epoch = o->epoch_samples && o->epoch_samples < ns ? o->epoch_samples : ns;
  size_t cursor = ns; /* next sample of the shuffled order; ns: reshuffle first */
  for (size_t ep = 1; ep <= o->epochs; ep++) {
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
      if (cursor == ns) {
        fl_shuffle(samples, ns, sizeof *samples, &rng);
        cursor = 0;
      }
      size_t nb = per_epoch - done < B ? per_epoch - done : B;
      if (nb > ns - cursor) nb = ns - cursor;
      model_batch bt;
      data_pack(ds, samples + cursor, nb, L, 0, tok, off, tgt, &bt);
      cursor += nb;
      done += nb;
      model_zero_grad(m);
      if (anc) {
        flame_parts parts;
        loss_sum += flame_step(m, anc, ws, &bt, fo, lambda, 1, &parts);
        rec_sum += parts.rec;
      } else {
        loss_sum += model_forward(m, a, &bt, 1);
        model_backward(m, a, &bt);
      }
      model_adam_step(m, o->lr);
      steps++;
    }
    if (err) break;
    double tt = fl_now() - te;
    eval_metrics val;
    if ((err = eval_run(m, ds, o->proto, EVAL_VAL, &val)) != 0) break;
    r->epochs_run = ep;
    r->last_loss = (float)(loss_sum / (double)steps);
    int improved = val.ndcg20 > best_ndcg;
    if (improved) {
      best_ndcg = val.ndcg20;
      r->best_epoch = ep;
      r->val = val;
      r->best_sec = fl_now() - t0;
      memcpy(best, m->params, m->nparams * sizeof(float));
      best_step = m->step;
      since_best = 0;
      if (o->out && (err = ckpt_save(o->out, m)) != 0) {
        fl_error("cannot write checkpoint %s: %s", o->out, fl_strerror(err));
        break;
      }
    } else {
      since_best++;
    }
    if (o->progress) {
      char flame[96] = "";
      if (anc)
        snprintf(flame, sizeof flame, " (rec %.4f, lambda %.4g)", rec_sum / (double)steps, lambda);
      fprintf(stderr,
              "epoch %zu: loss %.4f%s  val HR@10 %.4f NDCG@10 %.4f HR@20 %.4f NDCG@20 %.4f  "
              "%.1f s (train %.1f s)%s\n",
              ep, r->last_loss, flame, val.hr10, val.ndcg10, val.hr20, val.ndcg20, fl_now() - te,
              tt, improved ? "  *best" : "");
    }
    if (since_best >= o->patience) break;
  }
  if (!err && r->best_epoch > 0) {
    memcpy(m->params, best, m->nparams * sizeof(float));
    m->step = best_step;
    err = eval_run(m, ds, o->proto, EVAL_TEST, &r->test);
  }
  r->wall_sec = fl_now() - t0;
  r->param_bytes = m->nparams * sizeof(float);
  r->train_act_bytes = ws ? flame_ws_bytes(ws) : model_acts_bytes(a);
  r->eval_act_bytes = eval_workspace_bytes(m);
  free(best);
  free(off);
  free(tgt);
  free(tok);
  model_acts_free(a);
  flame_ws_free(ws);
  free(samples);
  return err;
}
