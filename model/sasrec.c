/* model/sasrec.c: the SASRec network (docs/MODEL.md section 1) on packed batches.
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
#include "model/internal.h"
#include "model/model.h"

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

static void train_alloc(model_sasrec *m, int zero) {
  if (m->grads) return;
  size_t n = m->nparams * sizeof(float);
  m->grads = fl_xalloc_aligned_at(n, zero, __FILE__, __LINE__);
  m->adam_m = fl_xalloc_aligned_at(n, zero, __FILE__, __LINE__);
  m->adam_v = fl_xalloc_aligned_at(n, zero, __FILE__, __LINE__);
  model_views(&m->g, m->grads, &m->hp, m->NI);
}

void model_train_alloc(model_sasrec *m) { train_alloc(m, 1); }

void model_train_alloc_uninit(model_sasrec *m) { train_alloc(m, 0); }

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

struct model_acts {
  model_hparams hp;
  size_t Bmax, Tmax, nseg_max;
  /* the current passes */
  size_t B, T;               /* embedding pass: samples, tokens */
  float p_emb, p_enc;        /* dropout rate of the embedding / encoder pass: its network's
                                rate when training, else 0 (the acts may serve two networks
                                of different rates, as FLAME's anchor and learnable do) */
  uint64_t key_emb, key_enc; /* their dropout keys */
  int has_loss, last_only;
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
  float *h;                   /* (Bq, C) outputs at the last positions */
  float *logits;              /* (Bmax, NI or 1 + nneg) logits, probabilities, dlogits */
  size_t logits_cap;          /* floats allocated in logits */
  int32_t *col1;              /* (Bmax) all 1: a sampled row's target is its column 0 */
  float *negE;                /* (nneg, C) the sampled candidates' rows, then their gradient */
  size_t negE_cap;            /* floats allocated in negE */
  float *losses;              /* (Bmax) */
  /* backward scratch */
  float *dA, *dB, *dr, *dx1, *dproj, *datty; /* (Tmax, C) */
  float *dff1, *dff2;                        /* (Tmax, FF) */
  float *dqkv;                               /* (Tmax, 3C) */
  float *dqlast, *dxq, *dh;                  /* (Bq, C), Bq = Bmax * nseg */
  float *scratch;                            /* attention_scratch_floats(nseg * L, C, NH) */
  size_t bytes;                              /* everything allocated for these passes */
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

model_acts *net_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax, size_t nseg) {
  model_acts *a = xcalloc(1, sizeof *a);
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
  a->h = falloc(a, Bq * C);
  a->losses = falloc(a, Bmax);
  a->col1 = acts_xmalloc(a, Bmax * sizeof(int32_t));
  for (size_t b = 0; b < Bmax; b++) a->col1[b] = 1;
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
  a->dh = falloc(a, Bq * C);
  a->scratch = falloc(a, attention_scratch_floats(Lk, C, NH));
  return a;
}

model_acts *model_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax) {
  return net_acts_new(hp, Bmax, Tmax, 1);
}

void model_acts_free(model_acts *a) {
  if (!a) return;
  for (size_t l = 0; l < a->hp.NL; l++) {
    layer_acts *la = &a->layer[l];
    void *bufs[] = {la->qkv, la->att, la->poff, la->atty, la->r1,       la->ln1_mean, la->ln1_rstd,
                    la->x1,  la->fch, la->fcg,  la->r2,   la->ln2_mean, la->ln2_rstd, la->xout};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  }
  free(a->layer);
  void *bufs[] = {a->posidx,  a->last_row, a->qoff_last, a->emb,    a->lne_mean, a->lne_rstd,
                  a->x0,      a->xq,       a->qlast,     a->h,      a->logits,   a->losses,
                  a->dA,      a->dB,       a->dr,        a->dx1,    a->dproj,    a->datty,
                  a->dff1,    a->dff2,     a->dqkv,      a->dqlast, a->dxq,      a->dh,
                  a->scratch, a->col1,     a->negE};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  free(a);
}

const float *model_acts_h(const model_acts *a) { return a->h; }

size_t model_acts_bytes(const model_acts *a) { return a->bytes; }

/* Dropout sites: 0 = embedding, then 3 per block (attention probabilities, attention
 * output, FFN output), each keyed by its pass's key. */
static kern_dropout site(const model_acts *a, int enc, size_t s) {
  return kern_dropout_make(enc ? a->p_enc : a->p_emb, (enc ? a->key_enc : a->key_emb) + s);
}

#define W(m, i) ((m)->p.t[(i)])

/* A gradient tensor plus an offset, or NULL for a frozen network. */
static float *gp(const model_tensors *g, int i, size_t off) { return g ? g->t[i] + off : NULL; }

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

uint64_t net_key(const model_sasrec *m, uint64_t salt) {
  /* the salt is mixed in, not XORed on: a pass keys its sites key + s (site()), so keys of
   * one step that differed in low bits only would share sites' mask streams */
  return fl_hash64(fl_hash64(m->seed ^ fl_hash64(m->step + 0x5eed)) ^ salt);
}

void model_scores(const model_sasrec *m, const float *h, size_t B, float *scores) {
  size_t C = m->hp.C;
  if (B == 1) { /* one row: a GEMV streams the table once; a GEMM would pack all of it first */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m->NI, (int)C, 1.0f, W(m, MODEL_T_ITEM) + C,
                (int)C, h, 1, 0.0f, scores, 1);
    return;
  }
  model_matmul(scores, m->NI, h, C, 0, W(m, MODEL_T_ITEM) + C, C, 1, B, m->NI, C, 1.0f, 0.0f);
}

/* ---- embedding ---- */

const float *net_embed_forward(const model_sasrec *m, model_acts *a, const model_batch *bt,
                               int train, uint64_t key) {
  size_t C = m->hp.C, L = m->hp.L, B = bt->B, T = bt->T;
  assert(B <= a->Bmax && T <= a->Tmax && bt->off[B] == T);
  a->B = B;
  a->T = T;
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

void net_embed_backward(const model_sasrec *m, const model_tensors *g, model_acts *a,
                        const float *dx0, const model_batch *bt) {
  size_t C = m->hp.C, T = a->T;
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

const float *net_blocks_forward(const model_sasrec *m, model_acts *a, const float *X0,
                                const net_layout *lay, int train, uint64_t key, size_t l0,
                                size_t l1) {
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
    memcpy(a->h, X, Bq * C * sizeof(float));
  } else {
    for (size_t i = 0; i < Bq; i++) memcpy(a->h + i * C, X + a->last_row[i] * C, C * sizeof(float));
  }
  return a->h;
}

const float *net_blocks_backward(const model_sasrec *m, const model_tensors *g, model_acts *a,
                                 const float *dH) {
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

/* ---- the plain SASRec pass ---- */

int net_batch_padded(const model_batch *bt) {
  for (size_t t = 0; t < bt->T; t++)
    if (bt->tok[t] == 0) return 1;
  return 0;
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
    *buf = falloc(a, need);
    *cap = need;
  }
  return *buf;
}

/* The sampled loss (model_batch): logits (B, 1 + K), column 0 the target, columns 1..K the
 * candidates, whose rows are gathered into negE (K, C) so that one GEMM scores them. */
static float sampled_forward(const model_sasrec *m, model_acts *a, const model_batch *bt) {
  size_t C = m->hp.C, B = bt->B, K = bt->nneg, N = K + 1;
  const float *E = W(m, MODEL_T_ITEM);
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
static void sampled_backward(model_sasrec *m, model_acts *a, const model_batch *bt) {
  size_t C = m->hp.C, B = a->B, K = bt->nneg, N = K + 1;
  const float *E = W(m, MODEL_T_ITEM);
  float *gE = m->g.t[MODEL_T_ITEM];
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

float model_forward(const model_sasrec *m, model_acts *a, const model_batch *bt, int train) {
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

void model_backward(model_sasrec *m, model_acts *a, const model_batch *bt) {
  size_t C = m->hp.C, B = a->B, NI = m->NI;
  assert(a->has_loss && m->grads && B == bt->B && a->T == bt->T);
  if (bt->neg) {
    sampled_backward(m, a, bt);
  } else { /* tied output: dh = dlogits . item[1..];  ditem[1..] += dlogits^T . h */
    crossentropy_backward(a->logits, bt->tgt, B, NI, 1.0f / (float)B);
    model_matmul(a->dh, C, a->logits, NI, 0, W(m, MODEL_T_ITEM) + C, C, 0, B, C, NI, 1.0f, 0.0f);
    model_matmul(m->g.t[MODEL_T_ITEM] + C, C, a->logits, NI, 1, a->h, C, 0, NI, C, B, 1.0f, 1.0f);
  }
  const float *dx0 = net_blocks_backward(m, &m->g, a, a->dh);
  net_embed_backward(m, &m->g, a, dx0, bt);
}

void model_zero_grad(model_sasrec *m) { zero(m->grads, m->nparams); }

/* Floats before the item table (the block's last tensor): the dense part. */
static size_t dense_floats(const model_sasrec *m) {
  return (size_t)(m->p.t[MODEL_T_ITEM] - m->params);
}

typedef struct {
  float step_size, rbc2;
} adam_k;

static adam_k adam_begin(model_sasrec *m, float lr) {
  m->step++;
  double bc1 = 1.0 - pow(0.9, (double)m->step), bc2 = 1.0 - pow(0.999, (double)m->step);
  adam_k k = {(float)(lr / bc1), (float)(1.0 / sqrt(bc2))};
  return k;
}

/* Adam on floats [i0, i1) of the block. */
static void adam_range(model_sasrec *m, adam_k k, size_t i0, size_t i1) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  float *p = m->params, *g = m->grads, *mm = m->adam_m, *vv = m->adam_v;
  for (size_t i = i0; i < i1; i++) {
    float gi = g[i];
    mm[i] = b1 * mm[i] + (1.0f - b1) * gi;
    vv[i] = b2 * vv[i] + (1.0f - b2) * gi * gi;
    p[i] -= k.step_size * mm[i] / (sqrtf(vv[i]) * k.rbc2 + eps);
  }
}

void model_adam_step(model_sasrec *m, float lr) {
  /* Flat over the block. The padding row's gradient is always 0 (embedding_backward skips
   * it, the output uses rows 1..NI), so its moments stay 0 and it never moves. */
  adam_range(m, adam_begin(m, lr), 0, m->nparams);
}

size_t model_batch_rows(const model_batch *b, uint8_t *mark, int32_t *rows) {
  size_t n = 0;
  const int32_t *lists[3] = {b->tok, b->tgt, b->neg};
  size_t lens[3] = {b->T, b->tgt ? b->B : 0, b->neg ? b->nneg : 0};
  for (int l = 0; l < 3; l++)
    for (size_t i = 0; i < lens[l]; i++) {
      int32_t r = lists[l][i];
      if (r > 0 && !mark[r]) {
        mark[r] = 1;
        rows[n++] = r;
      }
    }
  for (size_t i = 0; i < n; i++) mark[rows[i]] = 0;
  return n;
}

void model_adam_step_rows(model_sasrec *m, float lr, const int32_t *rows, size_t n) {
  adam_k k = adam_begin(m, lr);
  size_t d = dense_floats(m), C = m->hp.C;
  adam_range(m, k, 0, d);
  for (size_t i = 0; i < n; i++)
    adam_range(m, k, d + (size_t)rows[i] * C, d + (size_t)(rows[i] + 1) * C);
}

void model_zero_grad_rows(model_sasrec *m, const int32_t *rows, size_t n) {
  size_t d = dense_floats(m), C = m->hp.C;
  zero(m->grads, d);
  for (size_t i = 0; i < n; i++) zero(m->grads + d + (size_t)rows[i] * C, C);
}

double net_encoder_flops(const model_sasrec *m, const model_batch *b, size_t nseg, int blockdiag,
                         size_t l0, size_t l1) {
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

double model_step_flops(const model_sasrec *m, const model_batch *b) {
  double fwd = net_encoder_flops(m, b, 1, 0, 0, m->hp.NL);
  double cols = b->neg ? (double)b->nneg + 1.0 : (double)m->NI;
  fwd += 2.0 * (double)b->B * m->hp.C * cols; /* tied output */
  return 3.0 * fwd; /* backward = input and weight gradients = 2x forward */
}
