/* model/sasrec.c: the SASRec backbone (docs/MODEL.md section 1) on packed batches: its tensor
 * table, its initialisation, its activations and its stages (the net_backbone contract in
 * model/internal.h); the head, the objectives and Adam are the backbone's neighbours.
 *
 * Two exact shortcuts (see model.h): packed batches skip padding entirely, and with
 * last_only the last block computes its queries, attention output, Wo, LayerNorms and FFN
 * for each sample's last position only: nothing else of that block reaches the loss. Keys
 * and values of the last block are still computed for every position. */
#include "common/common.h"
#include "model/internal.h"
#include "model/model.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the tensor table ---- */

static const char *const sasrec_names[MODEL_NTENSORS] = {
    [MODEL_T_POS] = "pos",           [MODEL_T_LNE_W] = "lne_w", [MODEL_T_LNE_B] = "lne_b",
    [MODEL_T_QKVW] = "qkvw",         [MODEL_T_QKVB] = "qkvb",   [MODEL_T_ATTPROJW] = "attprojw",
    [MODEL_T_ATTPROJB] = "attprojb", [MODEL_T_LN1W] = "ln1w",   [MODEL_T_LN1B] = "ln1b",
    [MODEL_T_FCW] = "fcw",           [MODEL_T_FCB] = "fcb",     [MODEL_T_FCPROJW] = "fcprojw",
    [MODEL_T_FCPROJB] = "fcprojb",   [MODEL_T_LN2W] = "ln2w",   [MODEL_T_LN2B] = "ln2b",
    [MODEL_T_ITEM] = "item",
};

static size_t sasrec_tensor_sizes(const model_hparams *hp, size_t NI, size_t *s) {
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

/* Linear and Embedding weights N(0, 0.02^2), biases 0, LN gamma 1 / beta 0. */
static void sasrec_init(model_net *m, fl_rng *r) {
  size_t s[MODEL_NTENSORS];
  sasrec_tensor_sizes(&m->hp, m->NI, s);
  static const int normal[] = {MODEL_T_POS, MODEL_T_QKVW,    MODEL_T_ATTPROJW,
                               MODEL_T_FCW, MODEL_T_FCPROJW, MODEL_T_ITEM};
  for (size_t i = 0; i < sizeof normal / sizeof normal[0]; i++) {
    float *t = m->p.t[normal[i]];
    for (size_t j = 0; j < s[normal[i]]; j++) t[j] = 0.02f * fl_rng_normal(r);
  }
  static const int ones[] = {MODEL_T_LNE_W, MODEL_T_LN1W, MODEL_T_LN2W};
  for (size_t i = 0; i < sizeof ones / sizeof ones[0]; i++)
    for (size_t j = 0; j < s[ones[i]]; j++) m->p.t[ones[i]][j] = 1.0f;
}

/* ---- activations ---- */

typedef struct {
  float *qkv;                 /* (T, 3C) Q|K|V (Q unused in a last-only block) */
  float *att;                 /* softmax probabilities, (NH, nq, nk) per sample */
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

/* A pass's activations of this backbone (model_acts.enc); the representations h and their
 * gradient dh are model_acts's. */
typedef struct {
  model_hparams hp;
  size_t Bmax, Tmax, nseg_max;
  /* the current passes */
  float p_emb, p_enc;        /* dropout rate of the embedding / encoder pass: its network's
                                rate when training, else 0 (the acts may serve two networks
                                of different rates, as FLAME's anchor and learnable do) */
  uint64_t key_emb, key_enc; /* their dropout keys */
  int last_only;
  size_t l0, l1;     /* its blocks: l0 .. l1 - 1 */
  net_layout lay;    /* the encoder pass's rows */
  const float *X0;   /* its input (T, C) */
  int32_t *posidx;   /* (Tmax) position of every token */
  size_t *last_row;  /* (Bmax * nseg) row of each segment's newest token */
  size_t *qoff_last; /* (Bmax + 1) query offsets of a last-only block */
  /* forward */
  float *emb;                 /* (Tmax, C) item + position, LN_emb input */
  float *lne_mean, *lne_rstd; /* (Tmax) */
  float *x0;                  /* (Tmax, C) embedding output */
  layer_acts *layer;          /* (NL) */
  float *xq;                  /* (Bq, C) last-only block: inputs at the last positions */
  float *qlast;               /* (Bq, C) last-only block: queries */
  /* backward scratch */
  float *dA, *dB, *dr, *dx1, *dproj, *datty; /* (Tmax, C) */
  float *dff1, *dff2;                        /* (Tmax, FF) */
  float *dqkv;                               /* (Tmax, 3C) */
  float *dqlast, *dxq;                       /* (Bq, C), Bq = Bmax * nseg */
  float *scratch;                            /* attention_scratch_floats(nseg * L, C, NH) */
  size_t bytes;                              /* everything allocated here */
} sasrec_acts;

/* Activations are always written before they are read: no need to clear them. Every
 * allocation is counted in a->bytes (model_acts_bytes). */
static float *falloc(sasrec_acts *a, size_t n) {
  a->bytes += n * sizeof(float);
  return xalloc_aligned_uninit(n * sizeof(float));
}

static void *acts_xmalloc(sasrec_acts *a, size_t n) {
  a->bytes += n;
  return xmalloc(n);
}

static void *sasrec_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax, size_t nseg,
                             size_t *bytes) {
  sasrec_acts *a = xcalloc(1, sizeof *a);
  size_t C = hp->C, FF = hp->FF, NL = hp->NL, NH = hp->NH, Lk = nseg * hp->L;
  size_t Bq = Bmax * nseg;
  a->hp = *hp;
  a->Bmax = Bmax;
  a->Tmax = Tmax;
  a->nseg_max = nseg;
  a->posidx = acts_xmalloc(a, Tmax * sizeof(int32_t));
  a->last_row = acts_xmalloc(a, Bq * sizeof(size_t));
  a->qoff_last = acts_xmalloc(a, (Bmax + 1) * sizeof(size_t));
  a->emb = falloc(a, Tmax * C);
  a->lne_mean = falloc(a, Tmax);
  a->lne_rstd = falloc(a, Tmax);
  a->x0 = falloc(a, Tmax * C);
  a->layer = xcalloc(NL, sizeof(layer_acts));
  a->bytes += NL * sizeof(layer_acts);
  /* sum over samples of nq * nk <= Tmax * Lk (a sample has at most Lk key rows) */
  size_t att_cap = NH * Tmax * (Lk < Tmax ? Lk : Tmax);
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
  a->xq = falloc(a, Bq * C);
  a->qlast = falloc(a, Bq * C);
  a->dA = falloc(a, Tmax * C);
  a->dB = falloc(a, Tmax * C);
  a->dr = falloc(a, Tmax * C);
  a->dx1 = falloc(a, Tmax * C);
  a->dproj = falloc(a, Tmax * C);
  a->datty = falloc(a, Tmax * C);
  a->dff1 = falloc(a, Tmax * FF);
  a->dff2 = falloc(a, Tmax * FF);
  a->dqkv = falloc(a, Tmax * 3 * C);
  a->dqlast = falloc(a, Bq * C);
  a->dxq = falloc(a, Bq * C);
  a->scratch = falloc(a, attention_scratch_floats(Lk, C, NH));
  *bytes += a->bytes;
  return a;
}

static void sasrec_acts_free(void *enc) {
  sasrec_acts *a = enc;
  for (size_t l = 0; l < a->hp.NL; l++) {
    layer_acts *la = &a->layer[l];
    void *bufs[] = {la->qkv, la->att, la->poff, la->atty, la->r1,       la->ln1_mean, la->ln1_rstd,
                    la->x1,  la->fch, la->fcg,  la->r2,   la->ln2_mean, la->ln2_rstd, la->xout};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  }
  free(a->layer);
  void *bufs[] = {a->posidx, a->last_row, a->qoff_last, a->emb,  a->lne_mean, a->lne_rstd,
                  a->x0,     a->xq,       a->qlast,     a->dA,   a->dB,       a->dr,
                  a->dx1,    a->dproj,    a->datty,     a->dff1, a->dff2,     a->dqkv,
                  a->dqlast, a->dxq,      a->scratch};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  free(a);
}

/* Dropout sites: 0 = embedding, then 3 per block (attention probabilities, attention
 * output, FFN output), each keyed by its pass's key. */
static kern_dropout site(const sasrec_acts *a, int enc, size_t s) {
  return kern_dropout_make(enc ? a->p_enc : a->p_emb, (enc ? a->key_enc : a->key_emb) + s);
}

#define W(m, i) ((m)->p.t[(i)])

/* A gradient tensor plus an offset, or NULL for a frozen network. */
static float *gp(const model_tensors *g, int i, size_t off) { return g ? g->t[i] + off : NULL; }

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

/* ---- embedding ---- */

static const float *sasrec_embed_forward(const model_net *m, model_acts *A, const model_batch *bt,
                                         int train, uint64_t key) {
  sasrec_acts *a = A->enc;
  size_t C = m->hp.C, L = m->hp.L, B = bt->B, T = bt->T;
  assert(B <= a->Bmax && T <= a->Tmax && bt->off[B] == T);
  A->B = B;
  A->T = T;
  a->p_emb = train ? m->hp.dropout : 0.0f;
  a->key_emb = key;
  for (size_t b = 0; b < B; b++) {
    size_t n = bt->off[b + 1] - bt->off[b];
    assert(n >= 1 && n <= L);
    for (size_t i = 0; i < n; i++) a->posidx[bt->off[b] + i] = (int32_t)(L - n + i);
  }
  embedding_forward(a->emb, bt->tok, a->posidx, W(m, MODEL_T_ITEM), W(m, MODEL_T_POS), T, C);
  layernorm_forward(a->x0, a->lne_mean, a->lne_rstd, a->emb, W(m, MODEL_T_LNE_W),
                    W(m, MODEL_T_LNE_B), T, C, m->hp.ln_eps);
  kern_dropout kd = site(a, 0, 0);
  dropout_forward(a->x0, T * C, &kd);
  return a->x0;
}

static void sasrec_embed_backward(const model_net *m, const model_tensors *g, model_acts *A,
                                  const float *dx0, const model_batch *bt) {
  sasrec_acts *a = A->enc;
  size_t C = m->hp.C, T = A->T;
  kern_dropout kd = site(a, 0, 0);
  zero(a->dr, T * C);
  dropout_backward(a->dr, dx0, T * C, &kd);
  zero(a->dproj, T * C);
  layernorm_backward(a->dproj, gp(g, MODEL_T_LNE_W, 0), gp(g, MODEL_T_LNE_B, 0), a->dr, a->emb,
                     W(m, MODEL_T_LNE_W), a->lne_mean, a->lne_rstd, T, C);
  embedding_backward(gp(g, MODEL_T_ITEM, 0), gp(g, MODEL_T_POS, 0), a->dproj, bt->tok, a->posidx, T,
                     C);
}

/* ---- encoder ---- */

static const float *sasrec_blocks_forward(const model_net *m, model_acts *A, const float *X0,
                                          const net_layout *lay, int train, uint64_t key, size_t l0,
                                          size_t l1) {
  sasrec_acts *a = A->enc;
  const model_hparams *hp = &m->hp;
  assert(l0 < l1 && l1 <= hp->NL);
  size_t C = hp->C, FF = hp->FF, NH = hp->NH, B = lay->B, T = lay->off[B], nseg = lay->nseg;
  size_t Bq = B * nseg; /* queries of a last-only block: the last position of each segment */
  assert(B <= a->Bmax && T <= a->Tmax && nseg <= a->nseg_max);
  a->lay = *lay;
  a->X0 = X0;
  a->p_enc = train ? hp->dropout : 0.0f;
  a->key_enc = key;
  a->l0 = l0;
  a->l1 = l1;
  a->last_only = m->last_only && l1 == hp->NL; /* only the network's last block */
  for (size_t b = 0; b < B; b++) {
    size_t n = (lay->off[b + 1] - lay->off[b]) / nseg;
    for (size_t s = 0; s < nseg; s++) a->last_row[b * nseg + s] = lay->off[b] + s * n + n - 1;
    a->qoff_last[b] = b * nseg;
  }
  a->qoff_last[B] = Bq;

  const float *X = X0;
  kern_dropout kd;
  for (size_t l = l0; l < l1; l++) {
    layer_acts *la = &a->layer[l];
    int last = a->last_only && l == hp->NL - 1;
    size_t Tq = last ? Bq : T;
    const size_t *qoff = last ? a->qoff_last : lay->off;
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
      for (size_t i = 0; i < Bq; i++)
        memcpy(a->xq + i * C, X + a->last_row[i] * C, C * sizeof(float));
      linear_forward(a->qlast, C, a->xq, C, wqkv, bqkv, Bq, C, C);
      xq = a->xq;
      q = a->qlast;
      ldq = C;
    }
    attention_poff(la->poff, lay->off, qoff, B, NH);
    attn_layout al = {B,        nseg,    lay->blockdiag, lay->off, qoff, last ? a->last_row : NULL,
                      la->poff, lay->tok};
    kd = site(a, 1, 1 + 3 * l);
    attention_forward(la->atty, la->att, q, ldq, la->qkv + C, la->qkv + 2 * C, 3 * C, &al, C, NH,
                      &kd, a->scratch);
    linear_forward(la->r1, C, la->atty, C, W(m, MODEL_T_ATTPROJW) + l * C * C,
                   W(m, MODEL_T_ATTPROJB) + l * C, Tq, C, C);
    kd = site(a, 1, 2 + 3 * l);
    residual_dropout_forward(la->r1, xq, la->r1, Tq * C, &kd);
    layernorm_forward(la->x1, la->ln1_mean, la->ln1_rstd, la->r1, W(m, MODEL_T_LN1W) + l * C,
                      W(m, MODEL_T_LN1B) + l * C, Tq, C, hp->ln_eps);
    linear_forward(la->fch, FF, la->x1, C, W(m, MODEL_T_FCW) + l * FF * C,
                   W(m, MODEL_T_FCB) + l * FF, Tq, C, FF);
    gelu_forward(la->fcg, la->fch, Tq * FF);
    linear_forward(la->r2, C, la->fcg, FF, W(m, MODEL_T_FCPROJW) + l * C * FF,
                   W(m, MODEL_T_FCPROJB) + l * C, Tq, FF, C);
    kd = site(a, 1, 3 + 3 * l);
    residual_dropout_forward(la->r2, la->x1, la->r2, Tq * C, &kd);
    layernorm_forward(la->xout, la->ln2_mean, la->ln2_rstd, la->r2, W(m, MODEL_T_LN2W) + l * C,
                      W(m, MODEL_T_LN2B) + l * C, Tq, C, hp->ln_eps);
    X = la->xout;
  }
  if (l1 < hp->NL) return X; /* an inner range: every row, for the next range */
  if (a->last_only) {
    memcpy(A->h, X, Bq * C * sizeof(float));
  } else {
    for (size_t i = 0; i < Bq; i++) memcpy(A->h + i * C, X + a->last_row[i] * C, C * sizeof(float));
  }
  return A->h;
}

static const float *sasrec_blocks_backward(const model_net *m, const model_tensors *g,
                                           model_acts *A, const float *dH) {
  sasrec_acts *a = A->enc;
  const model_hparams *hp = &m->hp;
  const net_layout *lay = &a->lay;
  size_t C = hp->C, FF = hp->FF, NH = hp->NH, B = lay->B, T = lay->off[B], nseg = lay->nseg;
  size_t Bq = B * nseg;
  kern_dropout kd;

  const float *dcur; /* gradient w.r.t. the current block's output (Tq, C) */
  if (a->last_only || a->l1 < hp->NL) {
    dcur = dH; /* last positions of a last-only block, or every row of an inner range */
  } else {
    zero(a->dA, T * C);
    for (size_t i = 0; i < Bq; i++)
      memcpy(a->dA + a->last_row[i] * C, dH + i * C, C * sizeof(float));
    dcur = a->dA;
  }

  for (size_t l = a->l1; l-- > a->l0;) {
    layer_acts *la = &a->layer[l];
    int last = a->last_only && l == hp->NL - 1;
    size_t Tq = last ? Bq : T;
    const size_t *qoff = last ? a->qoff_last : lay->off;
    const float *X = l == a->l0 ? a->X0 : a->layer[l - 1].xout;
    const float *wqkv = W(m, MODEL_T_QKVW) + l * 3 * C * C;
    float *dwqkv = gp(g, MODEL_T_QKVW, l * 3 * C * C), *dbqkv = gp(g, MODEL_T_QKVB, l * 3 * C);

    /* LN_ffn, residual, FFN */
    zero(a->dr, Tq * C);
    layernorm_backward(a->dr, gp(g, MODEL_T_LN2W, l * C), gp(g, MODEL_T_LN2B, l * C), dcur, la->r2,
                       W(m, MODEL_T_LN2W) + l * C, la->ln2_mean, la->ln2_rstd, Tq, C);
    memcpy(a->dx1, a->dr, Tq * C * sizeof(float));
    zero(a->dproj, Tq * C);
    kd = site(a, 1, 3 + 3 * l);
    dropout_backward(a->dproj, a->dr, Tq * C, &kd);
    zero(a->dff1, Tq * FF);
    linear_backward(a->dff1, FF, gp(g, MODEL_T_FCPROJW, l * C * FF), gp(g, MODEL_T_FCPROJB, l * C),
                    a->dproj, C, la->fcg, FF, W(m, MODEL_T_FCPROJW) + l * C * FF, Tq, FF, C);
    zero(a->dff2, Tq * FF);
    gelu_backward(a->dff2, la->fch, a->dff1, Tq * FF);
    linear_backward(a->dx1, C, gp(g, MODEL_T_FCW, l * FF * C), gp(g, MODEL_T_FCB, l * FF), a->dff2,
                    FF, la->x1, C, W(m, MODEL_T_FCW) + l * FF * C, Tq, C, FF);

    /* LN_att, residual, Wo */
    zero(a->dr, Tq * C);
    layernorm_backward(a->dr, gp(g, MODEL_T_LN1W, l * C), gp(g, MODEL_T_LN1B, l * C), a->dx1,
                       la->r1, W(m, MODEL_T_LN1W) + l * C, la->ln1_mean, la->ln1_rstd, Tq, C);
    zero(a->dproj, Tq * C);
    kd = site(a, 1, 2 + 3 * l);
    dropout_backward(a->dproj, a->dr, Tq * C, &kd);
    zero(a->datty, Tq * C);
    linear_backward(a->datty, C, gp(g, MODEL_T_ATTPROJW, l * C * C), gp(g, MODEL_T_ATTPROJB, l * C),
                    a->dproj, C, la->atty, C, W(m, MODEL_T_ATTPROJW) + l * C * C, Tq, C, C);

    /* attention and the Q/K/V projections */
    float *dxin = dcur == a->dA ? a->dB : a->dA;
    zero(a->dqkv, T * 3 * C);
    kd = site(a, 1, 1 + 3 * l);
    attn_layout al = {B,        nseg,    lay->blockdiag, lay->off, qoff, last ? a->last_row : NULL,
                      la->poff, lay->tok};
    if (!last) {
      attention_backward(a->dqkv, a->dqkv + C, a->dqkv + 2 * C, 3 * C, 3 * C, a->datty, la->att,
                         la->qkv, 3 * C, la->qkv + C, la->qkv + 2 * C, 3 * C, &al, C, NH, &kd,
                         a->scratch);
      memcpy(dxin, a->dr, T * C * sizeof(float)); /* the residual path */
      linear_backward(dxin, C, dwqkv, dbqkv, a->dqkv, 3 * C, X, C, wqkv, T, C, 3 * C);
    } else {
      zero(a->dqlast, Bq * C);
      attention_backward(a->dqlast, a->dqkv + C, a->dqkv + 2 * C, C, 3 * C, a->datty, la->att,
                         a->qlast, C, la->qkv + C, la->qkv + 2 * C, 3 * C, &al, C, NH, &kd,
                         a->scratch);
      memcpy(a->dxq, a->dr, Bq * C * sizeof(float)); /* the residual path */
      linear_backward(a->dxq, C, dwqkv, dbqkv, a->dqlast, C, a->xq, C, wqkv, Bq, C, C);
      zero(dxin, T * C);
      linear_backward(dxin, C, dwqkv ? dwqkv + C * C : NULL, dbqkv ? dbqkv + C : NULL, a->dqkv + C,
                      3 * C, X, C, wqkv + C * C, T, C, 2 * C);
      for (size_t i = 0; i < Bq; i++) {
        float *d = dxin + a->last_row[i] * C;
        const float *s = a->dxq + i * C;
        for (size_t c = 0; c < C; c++) d[c] += s[c];
      }
    }
    dcur = dxin;
  }
  return dcur;
}

static double sasrec_encoder_flops(const model_net *m, const model_batch *b, size_t nseg,
                                   int blockdiag, size_t l0, size_t l1) {
  const model_hparams *hp = &m->hp;
  double C = hp->C, FF = hp->FF, fwd = 0.0, S = (double)nseg;
  double T = 0.0, pairs_full = 0.0, pairs_last = 0.0;
  /* (query, key) pairs: a query at position t sees t + 1 keys in each visible segment */
  double seen = blockdiag ? 1.0 : S;
  for (size_t s = 0; s < b->B; s++) {
    double n = 0.0;
    for (size_t t = b->off[s]; t < b->off[s + 1]; t++) n += b->tok[t] != 0;
    T += S * n;
    pairs_full += S * seen * n * (n + 1) / 2;
    pairs_last += S * seen * n;
  }
  double per_token = 2.0 * (3 * C * C + C * C + 2 * C * FF); /* QKV, Wo, FFN */
  double Bq = (double)b->B * S;
  for (size_t l = l0; l < l1; l++) {
    int last = m->last_only && l == hp->NL - 1;
    if (!last) {
      fwd += T * per_token + 4.0 * C * pairs_full; /* QK^T and PV: 2 * HS * NH = 2C each */
    } else {
      fwd += T * 2.0 * (2 * C * C) + Bq * 2.0 * (C * C + C * C + 2 * C * FF) + 4.0 * C * pairs_last;
    }
  }
  return fwd;
}

const net_backbone net_sasrec = {
    .name = "sasrec",
    .ntensors = MODEL_NTENSORS,
    .names = sasrec_names,
    .tensor_sizes = sasrec_tensor_sizes,
    .check = NULL,
    .init = sasrec_init,
    .acts_new = sasrec_acts_new,
    .acts_free = sasrec_acts_free,
    .embed_forward = sasrec_embed_forward,
    .embed_backward = sasrec_embed_backward,
    .blocks_forward = sasrec_blocks_forward,
    .blocks_backward = sasrec_blocks_backward,
    .encoder_flops = sasrec_encoder_flops,
};
