/* model/head.c: the scoring head and the cross-entropy objective, the same for every
 * backbone (model/internal.h). The head is tied to the item table: the score of item i for a
 * representation h is h . item[i]. model_forward runs the backbone's stages, then the
 * cross-entropy over the whole catalogue or over sampled candidates (model_batch);
 * model_backward runs them back. */
#include "common/common.h"
#include "model/internal.h"
#include "model/model.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void model_scores(const model_net *m, const float *h, size_t B, float *scores) {
  size_t C = m->hp.C;
  const float *E = model_items(m) + C; /* row 0 is padding */
  if (B == 1) { /* one row: a GEMV streams the table once; a GEMM would pack all of it first */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m->NI, (int)C, 1.0f, E, (int)C, h, 1, 0.0f,
                scores, 1);
    return;
  }
  model_matmul(scores, m->NI, h, C, 0, E, C, 1, B, m->NI, C, 1.0f, 0.0f);
}

/* One segment per sample; the padding mask only when the batch carries explicit padding. */
static net_layout plain_layout(const model_batch *bt) {
  net_layout lay = {bt->B, 1, 0, bt->off, net_batch_padded(bt) ? bt->tok : NULL};
  return lay;
}

/* Grows a buffer of acts to at least need floats (once per shape, not per step). */
static float *acts_grow(model_acts *a, float **buf, size_t *cap, size_t need) {
  if (*cap < need) {
    free(*buf);
    a->bytes -= *cap * sizeof(float);
    *buf = xalloc_aligned_uninit(need * sizeof(float));
    a->bytes += need * sizeof(float);
    *cap = need;
  }
  return *buf;
}

/* The sampled loss (model_batch): logits (B, 1 + K), column 0 the target, columns 1..K the
 * candidates, whose rows are gathered into negE (K, C) so that one GEMM scores them. */
static float sampled_forward(const model_net *m, model_acts *a, const model_batch *bt) {
  size_t C = m->hp.C, B = bt->B, K = bt->nneg, N = K + 1;
  const float *E = model_items(m);
  acts_grow(a, &a->negE, &a->negE_cap, K * C);
  for (size_t k = 0; k < K; k++) {
    assert(bt->neg[k] >= 1 && (size_t)bt->neg[k] <= m->NI);
    memcpy(a->negE + k * C, E + (size_t)bt->neg[k] * C, C * sizeof(float));
  }
  model_matmul(a->logits + 1, N, a->h, C, 0, a->negE, C, 1, B, K, C, 1.0f, 0.0f);
  float shift = m->NI > 1 ? logf((float)(m->NI - 1) / (float)K) : 0.0f;
  for (size_t b = 0; b < B; b++) {
    float *row = a->logits + b * N;
    row[0] = kern_dot(a->h + b * C, E + (size_t)bt->tgt[b] * C, C);
    for (size_t k = 0; k < K; k++)
      row[1 + k] = bt->neg[k] == bt->tgt[b] ? -1e30f : row[1 + k] + shift;
  }
  return crossentropy_forward(a->logits, a->losses, a->col1, B, N);
}

/* Its backward: dh = dlogits . [item[tgt]; negE], and the same rows' gradients. */
static void sampled_backward(model_net *m, model_acts *a, const model_batch *bt) {
  size_t C = m->hp.C, B = a->B, K = bt->nneg, N = K + 1;
  const float *E = model_items(m);
  float *gE = model_item_grads(m);
  crossentropy_backward(a->logits, a->col1, B, N, 1.0f / (float)B);
  model_matmul(a->dh, C, a->logits + 1, N, 0, a->negE, C, 0, B, C, K, 1.0f, 0.0f);
  for (size_t b = 0; b < B; b++) {
    float d = a->logits[b * N];
    const float *h = a->h + b * C, *et = E + (size_t)bt->tgt[b] * C;
    float *dh = a->dh + b * C, *gt = gE + (size_t)bt->tgt[b] * C;
    for (size_t c = 0; c < C; c++) {
      dh[c] += d * et[c];
      gt[c] += d * h[c];
    }
  }
  /* negE's rows are no longer needed: it takes their gradient (K, C) = dlogits^T . h */
  model_matmul(a->negE, C, a->logits + 1, N, 1, a->h, C, 0, K, C, B, 1.0f, 0.0f);
  for (size_t k = 0; k < K; k++) {
    float *g = gE + (size_t)bt->neg[k] * C;
    const float *d = a->negE + k * C;
    for (size_t c = 0; c < C; c++) g[c] += d[c];
  }
}

float model_forward(const model_net *m, model_acts *a, const model_batch *bt, int train) {
  uint64_t key = net_key(m, 0);
  const float *x0 = net_embed_forward(m, a, bt, train, key);
  net_layout lay = plain_layout(bt);
  net_blocks_forward(m, a, x0, &lay, train, key, 0, m->hp.NL);
  a->has_loss = bt->tgt != NULL;
  if (!a->has_loss) return 0.0f;
  acts_grow(a, &a->logits, &a->logits_cap, a->Bmax * (bt->neg ? 1 + bt->nneg : m->NI));
  if (bt->neg) return sampled_forward(m, a, bt);
  model_scores(m, a->h, bt->B, a->logits);
  return crossentropy_forward(a->logits, a->losses, bt->tgt, bt->B, m->NI);
}

void model_backward(model_net *m, model_acts *a, const model_batch *bt) {
  size_t C = m->hp.C, B = a->B, NI = m->NI;
  assert(a->has_loss && m->grads && B == bt->B && a->T == bt->T);
  if (bt->neg) {
    sampled_backward(m, a, bt);
  } else { /* tied output: dh = dlogits . item[1..];  ditem[1..] += dlogits^T . h */
    crossentropy_backward(a->logits, bt->tgt, B, NI, 1.0f / (float)B);
    model_matmul(a->dh, C, a->logits, NI, 0, model_items(m) + C, C, 0, B, C, NI, 1.0f, 0.0f);
    model_matmul(model_item_grads(m) + C, C, a->logits, NI, 1, a->h, C, 0, NI, C, B, 1.0f, 1.0f);
  }
  const float *dx0 = net_blocks_backward(m, &m->g, a, a->dh);
  net_embed_backward(m, &m->g, a, dx0, bt);
}

double model_step_flops(const model_net *m, const model_batch *b) {
  double fwd = net_encoder_flops(m, b, 1, 0, 0, m->hp.NL);
  double cols = b->neg ? (double)b->nneg + 1.0 : (double)m->NI;
  fwd += 2.0 * (double)b->B * m->hp.C * cols; /* tied output */
  return 3.0 * fwd; /* backward = input and weight gradients = 2x forward */
}
