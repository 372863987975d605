/* model/sasrec.c: the SASRec network (docs/FLAME.md section 1) on packed batches.
 *
 * Parameters, gradients and Adam moments are three blocks with one layout
 * (model_tensor_sizes); Adam is one flat loop and a checkpoint one write. Activations of a
 * pass live in model_acts, allocated once for the largest batch.
 *
 * Two exact shortcuts (see model.h): packed batches skip padding entirely, and with
 * last_only the last block computes its queries, attention output, Wo, LayerNorms and FFN
 * for each sample's last position only: nothing else of that block reaches the loss. Keys
 * and values of the last block are still computed for every position. */
#include "common/common.h"
#include "kernels.h"
#include "model.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void model_hparams_default(model_hparams *hp) {
  hp->C = 64;
  hp->NL = 2;
  hp->NH = 2;
  hp->FF = 256;
  hp->L = 50;
  hp->dropout = 0.5f;
  hp->ln_eps = 1e-12f;
}

int model_hparams_check(const model_hparams *hp) {
  if (hp->C == 0 || hp->C > 4096 || hp->NH == 0 || hp->C % hp->NH != 0) return FL_ERANGE;
  if (hp->NL == 0 || hp->NL > 64 || hp->FF == 0 || hp->FF > 65536) return FL_ERANGE;
  if (hp->L == 0 || hp->L > 4096) return FL_ERANGE;
  if (!(hp->dropout >= 0.0f && hp->dropout < 1.0f)) return FL_ERANGE;
  if (!(hp->ln_eps >= 0.0f && hp->ln_eps < 1.0f)) return FL_ERANGE;
  return 0;
}

size_t model_tensor_sizes(const model_hparams *hp, size_t NI, size_t s[MODEL_NTENSORS]) {
  size_t C = hp->C, NL = hp->NL, FF = hp->FF;
  s[MODEL_T_POS] = (size_t)hp->L * C;
  s[MODEL_T_LNE_W] = C;
  s[MODEL_T_LNE_B] = C;
  s[MODEL_T_QKVW] = NL * 3 * C * C;
  s[MODEL_T_QKVB] = NL * 3 * C;
  s[MODEL_T_ATTPROJW] = NL * C * C;
  s[MODEL_T_ATTPROJB] = NL * C;
  s[MODEL_T_LN1W] = NL * C;
  s[MODEL_T_LN1B] = NL * C;
  s[MODEL_T_FCW] = NL * FF * C;
  s[MODEL_T_FCB] = NL * FF;
  s[MODEL_T_FCPROJW] = NL * C * FF;
  s[MODEL_T_FCPROJB] = NL * C;
  s[MODEL_T_LN2W] = NL * C;
  s[MODEL_T_LN2B] = NL * C;
  s[MODEL_T_ITEM] = (NI + 1) * C;
  size_t total = 0;
  for (int i = 0; i < MODEL_NTENSORS; i++) total += s[i];
  return total;
}

static void model_views(model_tensors *v, float *block, const model_hparams *hp, size_t NI) {
  size_t s[MODEL_NTENSORS];
  model_tensor_sizes(hp, NI, s);
  for (int i = 0; i < MODEL_NTENSORS; i++) {
    v->t[i] = block;
    block += s[i];
  }
}

int model_alloc(model_sasrec *m, const model_hparams *hp, size_t NI) {
  int err = model_hparams_check(hp);
  if (err) return err;
  if (NI == 0 || NI > INT32_MAX - 1) return FL_ERANGE;
  memset(m, 0, sizeof *m);
  m->hp = *hp;
  m->NI = NI;
  size_t s[MODEL_NTENSORS];
  m->nparams = model_tensor_sizes(hp, NI, s);
  m->params = xalloc_aligned(m->nparams * sizeof(float));
  model_views(&m->p, m->params, hp, NI);
  m->last_only = 1;
  return 0;
}

int model_init(model_sasrec *m, const model_hparams *hp, size_t NI, uint64_t seed) {
  int err = model_alloc(m, hp, NI);
  if (err) return err;
  m->seed = seed;
  fl_rng r;
  fl_rng_seed(&r, seed);
  size_t s[MODEL_NTENSORS];
  model_tensor_sizes(hp, NI, s);
  static const int normal[] = {MODEL_T_POS, MODEL_T_QKVW,    MODEL_T_ATTPROJW,
                               MODEL_T_FCW, MODEL_T_FCPROJW, MODEL_T_ITEM};
  for (size_t i = 0; i < sizeof normal / sizeof normal[0]; i++) {
    float *t = m->p.t[normal[i]];
    for (size_t j = 0; j < s[normal[i]]; j++) t[j] = 0.02f * fl_rng_normal(&r);
  }
  static const int ones[] = {MODEL_T_LNE_W, MODEL_T_LN1W, MODEL_T_LN2W};
  for (size_t i = 0; i < sizeof ones / sizeof ones[0]; i++)
    for (size_t j = 0; j < s[ones[i]]; j++) m->p.t[ones[i]][j] = 1.0f;
  memset(m->p.t[MODEL_T_ITEM], 0, hp->C * sizeof(float)); /* padding row */
  return 0;
}

void model_train_alloc(model_sasrec *m) {
  if (m->grads) return;
  m->grads = xalloc_aligned(m->nparams * sizeof(float));
  m->adam_m = xalloc_aligned(m->nparams * sizeof(float));
  m->adam_v = xalloc_aligned(m->nparams * sizeof(float));
  model_views(&m->g, m->grads, &m->hp, m->NI);
}

void model_free(model_sasrec *m) {
  free(m->params);
  free(m->grads);
  free(m->adam_m);
  free(m->adam_v);
  memset(m, 0, sizeof *m);
}

void model_set_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }

/* ---- activations ---- */

typedef struct {
  float *qkv;                 /* (T, 3C) Q|K|V (Q unused in a last-only block) */
  float *att;                 /* softmax probabilities, (NH, nq, n) per sample */
  size_t *poff;               /* (B + 1) offsets of samples in att */
  float *atty;                /* (Tq, C) attention output before Wo */
  float *r1;                  /* (Tq, C) residual sum before LN_att */
  float *ln1_mean, *ln1_rstd; /* (Tq) */
  float *x1;                  /* (Tq, C) LN_att output */
  float *fch;                 /* (Tq, FF) W1 output before GELU */
  float *fcg;                 /* (Tq, FF) GELU output */
  float *r2;                  /* (Tq, C) residual sum before LN_ffn */
  float *ln2_mean, *ln2_rstd; /* (Tq) */
  float *xout;                /* (Tq, C) block output */
} layer_acts;

struct model_acts {
  model_hparams hp;
  size_t Bmax, Tmax;
  /* the current batch */
  size_t B, T;
  int train, has_loss, last_only, has_pad;
  uint64_t key;      /* dropout key of this pass */
  int32_t *posidx;   /* (Tmax) position of every token */
  size_t *last_row;  /* (Bmax) row of each sample's newest token */
  size_t *qoff_last; /* (Bmax + 1) 0, 1, ..., B: query offsets of a last-only block */
  /* forward */
  float *emb;                 /* (Tmax, C) item + position, LN_emb input */
  float *lne_mean, *lne_rstd; /* (Tmax) */
  float *x0;                  /* (Tmax, C) embedding output (block 0 input) */
  layer_acts *layer;          /* (NL) */
  float *xq;                  /* (Bmax, C) last-only block: inputs at the last positions */
  float *qlast;               /* (Bmax, C) last-only block: queries */
  float *h;                   /* (Bmax, C) sequence representations */
  float *logits;              /* (Bmax, NI) logits, then probabilities, then dlogits */
  size_t logits_cap;          /* floats allocated in logits */
  float *losses;              /* (Bmax) */
  /* backward scratch */
  float *dA, *dB, *dr, *dx1, *dproj, *datty; /* (Tmax, C) */
  float *dff1, *dff2;                        /* (Tmax, FF) */
  float *dqkv;                               /* (Tmax, 3C) */
  float *dqlast, *dxq, *dh;                  /* (Bmax, C) */
  float *scratch;                            /* attention_scratch_floats(L, C, NH) */
  size_t bytes;                              /* everything allocated for this pass */
};

/* Activations are always written before they are read: no need to clear them. Every
 * allocation is counted in a->bytes (model_acts_bytes). */
static float *falloc(model_acts *a, size_t n) {
  a->bytes += n * sizeof(float);
  return xalloc_aligned_uninit(n * sizeof(float));
}

static void *acts_xmalloc(model_acts *a, size_t n) {
  a->bytes += n;
  return xmalloc(n);
}

model_acts *model_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax) {
  model_acts *a = xcalloc(1, sizeof *a);
  size_t C = hp->C, FF = hp->FF, NL = hp->NL, NH = hp->NH, L = hp->L;
  a->hp = *hp;
  a->Bmax = Bmax;
  a->Tmax = Tmax;
  a->posidx = acts_xmalloc(a, Tmax * sizeof(int32_t));
  a->last_row = acts_xmalloc(a, Bmax * sizeof(size_t));
  a->qoff_last = acts_xmalloc(a, (Bmax + 1) * sizeof(size_t));
  a->emb = falloc(a, Tmax * C);
  a->lne_mean = falloc(a, Tmax);
  a->lne_rstd = falloc(a, Tmax);
  a->x0 = falloc(a, Tmax * C);
  a->layer = xcalloc(NL, sizeof(layer_acts));
  a->bytes += NL * sizeof(layer_acts);
  /* sum over samples of n * nq <= Tmax * L (a sample has at most L tokens). */
  size_t att_cap = NH * Tmax * (L < Tmax ? L : Tmax);
  for (size_t l = 0; l < NL; l++) {
    layer_acts *la = &a->layer[l];
    la->qkv = falloc(a, Tmax * 3 * C);
    la->att = falloc(a, att_cap);
    la->poff = acts_xmalloc(a, (Bmax + 1) * sizeof(size_t));
    la->atty = falloc(a, Tmax * C);
    la->r1 = falloc(a, Tmax * C);
    la->ln1_mean = falloc(a, Tmax);
    la->ln1_rstd = falloc(a, Tmax);
    la->x1 = falloc(a, Tmax * C);
    la->fch = falloc(a, Tmax * FF);
    la->fcg = falloc(a, Tmax * FF);
    la->r2 = falloc(a, Tmax * C);
    la->ln2_mean = falloc(a, Tmax);
    la->ln2_rstd = falloc(a, Tmax);
    la->xout = falloc(a, Tmax * C);
  }
  a->xq = falloc(a, Bmax * C);
  a->qlast = falloc(a, Bmax * C);
  a->h = falloc(a, Bmax * C);
  a->losses = falloc(a, Bmax);
  a->dA = falloc(a, Tmax * C);
  a->dB = falloc(a, Tmax * C);
  a->dr = falloc(a, Tmax * C);
  a->dx1 = falloc(a, Tmax * C);
  a->dproj = falloc(a, Tmax * C);
  a->datty = falloc(a, Tmax * C);
  a->dff1 = falloc(a, Tmax * FF);
  a->dff2 = falloc(a, Tmax * FF);
  a->dqkv = falloc(a, Tmax * 3 * C);
  a->dqlast = falloc(a, Bmax * C);
  a->dxq = falloc(a, Bmax * C);
  a->dh = falloc(a, Bmax * C);
  a->scratch = falloc(a, attention_scratch_floats(L, C, NH));
  return a;
}

void model_acts_free(model_acts *a) {
  if (!a) return;
  for (size_t l = 0; l < a->hp.NL; l++) {
    layer_acts *la = &a->layer[l];
    free(la->qkv);
    free(la->att);
    free(la->poff);
    free(la->atty);
    free(la->r1);
    free(la->ln1_mean);
    free(la->ln1_rstd);
    free(la->x1);
    free(la->fch);
    free(la->fcg);
    free(la->r2);
    free(la->ln2_mean);
    free(la->ln2_rstd);
    free(la->xout);
  }
  free(a->layer);
  void *bufs[] = {a->posidx,   a->last_row, a->qoff_last, a->emb,   a->lne_mean,
                  a->lne_rstd, a->x0,       a->xq,        a->qlast, a->h,
                  a->logits,   a->losses,   a->dA,        a->dB,    a->dr,
                  a->dx1,      a->dproj,    a->datty,     a->dff1,  a->dff2,
                  a->dqkv,     a->dqlast,   a->dxq,       a->dh,    a->scratch};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  free(a);
}

const float *model_acts_h(const model_acts *a) { return a->h; }

size_t model_acts_bytes(const model_acts *a) { return a->bytes; }

/* Dropout sites of one pass: 0 = embedding, then 3 per block (attention probabilities,
 * attention output, FFN output). */
static kern_dropout site(const model_acts *a, size_t s) {
  return kern_dropout_make(a->train ? a->hp.dropout : 0.0f, a->key + s);
}

#define W(m, i) ((m)->p.t[(i)])
#define G(m, i) ((m)->g.t[(i)])

void model_scores(const model_sasrec *m, const float *h, size_t B, float *scores) {
  size_t C = m->hp.C;
  model_matmul(scores, m->NI, h, C, 0, W(m, MODEL_T_ITEM) + C, C, 1, B, m->NI, C, 1.0f, 0.0f);
}

float model_forward(const model_sasrec *m, model_acts *a, const model_batch *bt, int train) {
  const model_hparams *hp = &m->hp;
  size_t C = hp->C, FF = hp->FF, NH = hp->NH, L = hp->L, B = bt->B, T = bt->T;
  assert(B <= a->Bmax && T <= a->Tmax && bt->off[B] == T);
  a->B = B;
  a->T = T;
  a->train = train;
  a->last_only = m->last_only;
  a->key = fl_hash64(m->seed ^ fl_hash64(m->step + 0x5eed));
  a->has_pad = 0;
  for (size_t b = 0; b < B; b++) {
    size_t n = bt->off[b + 1] - bt->off[b];
    assert(n >= 1 && n <= L);
    for (size_t i = 0; i < n; i++) a->posidx[bt->off[b] + i] = (int32_t)(L - n + i);
    a->last_row[b] = bt->off[b + 1] - 1;
    a->qoff_last[b] = b;
  }
  a->qoff_last[B] = B;
  for (size_t t = 0; t < T; t++) a->has_pad |= bt->tok[t] == 0;
  const int32_t *padtok = a->has_pad ? bt->tok : NULL;

  embedding_forward(a->emb, bt->tok, a->posidx, W(m, MODEL_T_ITEM), W(m, MODEL_T_POS), T, C);
  layernorm_forward(a->x0, a->lne_mean, a->lne_rstd, a->emb, W(m, MODEL_T_LNE_W),
                    W(m, MODEL_T_LNE_B), T, C, hp->ln_eps);
  kern_dropout kd = site(a, 0);
  dropout_forward(a->x0, T * C, &kd);

  const float *X = a->x0;
  for (size_t l = 0; l < hp->NL; l++) {
    layer_acts *la = &a->layer[l];
    int last = a->last_only && l == hp->NL - 1;
    size_t Tq = last ? B : T;
    const size_t *qoff = last ? a->qoff_last : bt->off;
    const float *wqkv = W(m, MODEL_T_QKVW) + l * 3 * C * C;
    const float *bqkv = W(m, MODEL_T_QKVB) + l * 3 * C;
    const float *xq, *q;
    size_t ldq;
    if (!last) {
      linear_forward(la->qkv, 3 * C, X, C, wqkv, bqkv, T, C, 3 * C);
      xq = X;
      q = la->qkv;
      ldq = 3 * C;
    } else {
      linear_forward(la->qkv + C, 3 * C, X, C, wqkv + C * C, bqkv + C, T, C, 2 * C);
      for (size_t b = 0; b < B; b++)
        memcpy(a->xq + b * C, X + a->last_row[b] * C, C * sizeof(float));
      linear_forward(a->qlast, C, a->xq, C, wqkv, bqkv, B, C, C);
      xq = a->xq;
      q = a->qlast;
      ldq = C;
    }
    attention_poff(la->poff, bt->off, qoff, B, NH);
    attn_layout lay = {B, 1, 0, bt->off, qoff, last ? a->last_row : NULL, la->poff, padtok};
    kd = site(a, 1 + 3 * l);
    attention_forward(la->atty, la->att, q, ldq, la->qkv + C, la->qkv + 2 * C, 3 * C, &lay, C, NH,
                      &kd, a->scratch);
    linear_forward(la->r1, C, la->atty, C, W(m, MODEL_T_ATTPROJW) + l * C * C,
                   W(m, MODEL_T_ATTPROJB) + l * C, Tq, C, C);
    kd = site(a, 2 + 3 * l);
    residual_dropout_forward(la->r1, xq, la->r1, Tq * C, &kd);
    layernorm_forward(la->x1, la->ln1_mean, la->ln1_rstd, la->r1, W(m, MODEL_T_LN1W) + l * C,
                      W(m, MODEL_T_LN1B) + l * C, Tq, C, hp->ln_eps);
    linear_forward(la->fch, FF, la->x1, C, W(m, MODEL_T_FCW) + l * FF * C,
                   W(m, MODEL_T_FCB) + l * FF, Tq, C, FF);
    gelu_forward(la->fcg, la->fch, Tq * FF);
    linear_forward(la->r2, C, la->fcg, FF, W(m, MODEL_T_FCPROJW) + l * C * FF,
                   W(m, MODEL_T_FCPROJB) + l * C, Tq, FF, C);
    kd = site(a, 3 + 3 * l);
    residual_dropout_forward(la->r2, la->x1, la->r2, Tq * C, &kd);
    layernorm_forward(la->xout, la->ln2_mean, la->ln2_rstd, la->r2, W(m, MODEL_T_LN2W) + l * C,
                      W(m, MODEL_T_LN2B) + l * C, Tq, C, hp->ln_eps);
    X = la->xout;
  }
  if (a->last_only) {
    memcpy(a->h, X, B * C * sizeof(float));
  } else {
    for (size_t b = 0; b < B; b++) memcpy(a->h + b * C, X + a->last_row[b] * C, C * sizeof(float));
  }

  a->has_loss = bt->tgt != NULL;
  if (!a->has_loss) return 0.0f;
  size_t need = a->Bmax * m->NI;
  if (a->logits_cap < need) { /* once per catalogue size, not per step */
    free(a->logits);
    a->bytes -= a->logits_cap * sizeof(float);
    a->logits = falloc(a, need);
    a->logits_cap = need;
  }
  model_scores(m, a->h, B, a->logits);
  return crossentropy_forward(a->logits, a->losses, bt->tgt, B, m->NI);
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

void model_backward(model_sasrec *m, model_acts *a, const model_batch *bt) {
  const model_hparams *hp = &m->hp;
  size_t C = hp->C, FF = hp->FF, NH = hp->NH, B = a->B, T = a->T, NI = m->NI;
  assert(a->has_loss && m->grads && B == bt->B && T == bt->T);
  const int32_t *padtok = a->has_pad ? bt->tok : NULL;

  /* tied output: dh = dlogits . item[1..];  ditem[1..] += dlogits^T . h */
  crossentropy_backward(a->logits, bt->tgt, B, NI, 1.0f / (float)B);
  model_matmul(a->dh, C, a->logits, NI, 0, W(m, MODEL_T_ITEM) + C, C, 0, B, C, NI, 1.0f, 0.0f);
  model_matmul(G(m, MODEL_T_ITEM) + C, C, a->logits, NI, 1, a->h, C, 0, NI, C, B, 1.0f, 1.0f);

  float *dcur; /* gradient w.r.t. the current block's output (Tq, C) */
  if (a->last_only) {
    dcur = a->dh;
  } else {
    dcur = a->dA;
    zero(dcur, T * C);
    for (size_t b = 0; b < B; b++)
      memcpy(dcur + a->last_row[b] * C, a->dh + b * C, C * sizeof(float));
  }

  for (size_t l = hp->NL; l-- > 0;) {
    layer_acts *la = &a->layer[l];
    int last = a->last_only && l == hp->NL - 1;
    size_t Tq = last ? B : T;
    const size_t *qoff = last ? a->qoff_last : bt->off;
    const float *X = l == 0 ? a->x0 : a->layer[l - 1].xout;
    const float *xq = last ? a->xq : X;
    float *wqkv = W(m, MODEL_T_QKVW) + l * 3 * C * C;
    float *dwqkv = G(m, MODEL_T_QKVW) + l * 3 * C * C, *dbqkv = G(m, MODEL_T_QKVB) + l * 3 * C;
    kern_dropout kd;

    /* LN_ffn, residual, FFN */
    zero(a->dr, Tq * C);
    layernorm_backward(a->dr, G(m, MODEL_T_LN2W) + l * C, G(m, MODEL_T_LN2B) + l * C, dcur, la->r2,
                       W(m, MODEL_T_LN2W) + l * C, la->ln2_mean, la->ln2_rstd, Tq, C);
    memcpy(a->dx1, a->dr, Tq * C * sizeof(float));
    zero(a->dproj, Tq * C);
    kd = site(a, 3 + 3 * l);
    dropout_backward(a->dproj, a->dr, Tq * C, &kd);
    zero(a->dff1, Tq * FF);
    linear_backward(a->dff1, FF, G(m, MODEL_T_FCPROJW) + l * C * FF, G(m, MODEL_T_FCPROJB) + l * C,
                    a->dproj, C, la->fcg, FF, W(m, MODEL_T_FCPROJW) + l * C * FF, Tq, FF, C);
    zero(a->dff2, Tq * FF);
    gelu_backward(a->dff2, la->fch, a->dff1, Tq * FF);
    linear_backward(a->dx1, C, G(m, MODEL_T_FCW) + l * FF * C, G(m, MODEL_T_FCB) + l * FF, a->dff2,
                    FF, la->x1, C, W(m, MODEL_T_FCW) + l * FF * C, Tq, C, FF);

    /* LN_att, residual, Wo */
    zero(a->dr, Tq * C);
    layernorm_backward(a->dr, G(m, MODEL_T_LN1W) + l * C, G(m, MODEL_T_LN1B) + l * C, a->dx1,
                       la->r1, W(m, MODEL_T_LN1W) + l * C, la->ln1_mean, la->ln1_rstd, Tq, C);
    zero(a->dproj, Tq * C);
    kd = site(a, 2 + 3 * l);
    dropout_backward(a->dproj, a->dr, Tq * C, &kd);
    zero(a->datty, Tq * C);
    linear_backward(a->datty, C, G(m, MODEL_T_ATTPROJW) + l * C * C, G(m, MODEL_T_ATTPROJB) + l * C,
                    a->dproj, C, la->atty, C, W(m, MODEL_T_ATTPROJW) + l * C * C, Tq, C, C);

    /* attention and the Q/K/V projections */
    float *dxin = dcur == a->dA ? a->dB : a->dA;
    zero(a->dqkv, T * 3 * C);
    kd = site(a, 1 + 3 * l);
    attn_layout lay = {B, 1, 0, bt->off, qoff, last ? a->last_row : NULL, la->poff, padtok};
    if (!last) {
      attention_backward(a->dqkv, a->dqkv + C, a->dqkv + 2 * C, 3 * C, 3 * C, a->datty, la->att,
                         la->qkv, 3 * C, la->qkv + C, la->qkv + 2 * C, 3 * C, &lay, C, NH, &kd,
                         a->scratch);
      memcpy(dxin, a->dr, T * C * sizeof(float)); /* the residual path */
      linear_backward(dxin, C, dwqkv, dbqkv, a->dqkv, 3 * C, X, C, wqkv, T, C, 3 * C);
    } else {
      zero(a->dqlast, B * C);
      attention_backward(a->dqlast, a->dqkv + C, a->dqkv + 2 * C, C, 3 * C, a->datty, la->att,
                         a->qlast, C, la->qkv + C, la->qkv + 2 * C, 3 * C, &lay, C, NH, &kd,
                         a->scratch);
      memcpy(a->dxq, a->dr, B * C * sizeof(float)); /* the residual path */
      linear_backward(a->dxq, C, dwqkv, dbqkv, a->dqlast, C, xq, C, wqkv, B, C, C);
      zero(dxin, T * C);
      linear_backward(dxin, C, dwqkv + C * C, dbqkv + C, a->dqkv + C, 3 * C, X, C, wqkv + C * C, T,
                      C, 2 * C);
      for (size_t b = 0; b < B; b++) {
        float *d = dxin + a->last_row[b] * C;
        const float *s = a->dxq + b * C;
        for (size_t c = 0; c < C; c++) d[c] += s[c];
      }
    }
    dcur = dxin;
  }

  /* embedding: dropout, LN_emb, tables */
  kern_dropout kd = site(a, 0);
  zero(a->dr, T * C);
  dropout_backward(a->dr, dcur, T * C, &kd);
  zero(a->dproj, T * C);
  layernorm_backward(a->dproj, G(m, MODEL_T_LNE_W), G(m, MODEL_T_LNE_B), a->dr, a->emb,
                     W(m, MODEL_T_LNE_W), a->lne_mean, a->lne_rstd, T, C);
  embedding_backward(G(m, MODEL_T_ITEM), G(m, MODEL_T_POS), a->dproj, bt->tok, a->posidx, T, C);
}

void model_zero_grad(model_sasrec *m) { zero(m->grads, m->nparams); }

void model_adam_step(model_sasrec *m, float lr) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  m->step++;
  double bc1 = 1.0 - pow(b1, (double)m->step), bc2 = 1.0 - pow(b2, (double)m->step);
  float step_size = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
  float *p = m->params, *g = m->grads, *mm = m->adam_m, *vv = m->adam_v;
  /* Flat over the block. The padding row's gradient is always 0 (embedding_backward skips
   * it, the output uses rows 1..NI), so its moments stay 0 and it never moves. */
  for (size_t i = 0; i < m->nparams; i++) {
    float gi = g[i];
    mm[i] = b1 * mm[i] + (1.0f - b1) * gi;
    vv[i] = b2 * vv[i] + (1.0f - b2) * gi * gi;
    p[i] -= step_size * mm[i] / (sqrtf(vv[i]) * rbc2 + eps);
  }
}

double model_step_flops(const model_sasrec *m, const model_batch *b) {
  const model_hparams *hp = &m->hp;
  double C = hp->C, FF = hp->FF, fwd = 0.0;
  double T = 0.0, att_full = 0.0, att_last = 0.0;
  for (size_t s = 0; s < b->B; s++) {
    double n = 0.0;
    for (size_t t = b->off[s]; t < b->off[s + 1]; t++) n += b->tok[t] != 0;
    T += n;
    att_full += n * (n + 1) / 2; /* (query, key) pairs under the causal mask */
    att_last += n;
  }
  double per_token = 2.0 * (3 * C * C + C * C + 2 * C * FF); /* QKV, Wo, FFN */
  for (size_t l = 0; l < hp->NL; l++) {
    int last = m->last_only && l == hp->NL - 1;
    if (!last) {
      fwd += T * per_token + 4.0 * C * att_full; /* QK^T and PV: 2 * HS * NH = 2C each */
    } else {
      fwd += T * 2.0 * (2 * C * C) + (double)b->B * 2.0 * (C * C + C * C + 2 * C * FF) +
             4.0 * C * att_last;
    }
  }
  fwd += 2.0 * (double)b->B * C * (double)m->NI; /* tied output */
  return 3.0 * fwd; /* backward = input and weight gradients = 2x forward */
}
