/* model/internal.h: what model/'s files share beyond model.h (tests use it too): the layer
 * kernels (kernels.c), and the network as a backbone behind an ops table (net.c), a scoring
 * head and the cross-entropy objective (head.c), which FLAME (flame.c) runs in stages.
 *
 * ---- the layer kernels (kernels.c) ----
 *
 * llm.c conventions: outputs first, a comment with every argument's shape, backward
 * functions ACCUMULATE (+=) into every gradient they write (input and weight gradients
 * alike); callers clear them. A NULL gradient pointer means "not wanted" (the frozen anchor
 * of FLAME needs input gradients only). Kernels are pure: no allocation, no I/O.
 *
 * Dropout masks are not stored: element i of a dropout site keeps its value iff a hash of
 * key + i clears the threshold, so backward regenerates the same mask from the
 * same key. A key of 0 with p > 0 still drops; "no dropout" is p == 0. */
#ifndef FL_MODEL_INTERNAL_H
#define FL_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/model.h"

/* Dropout: threshold on the top 32 bits of the hash. p in [0, 1). */
typedef struct {
  float p;        /* drop probability; 0 = identity */
  float scale;    /* 1 / (1 - p) */
  uint32_t thres; /* keep iff hash >= thres */
  uint32_t key;   /* per site and step */
} kern_dropout;
kern_dropout kern_dropout_make(float p, uint64_t key);
static inline float kern_dropout_factor(const kern_dropout *d, uint64_t i);

/* out (T, C) = item[tok[t]] + pos[posidx[t]]. item (NI+1, C), pos (L, C). */
void embedding_forward(float *out, const int32_t *tok, const int32_t *posidx, const float *item,
                       const float *pos, size_t T, size_t C);
/* ditem[tok[t]] += dout[t] (skipping tok 0: the padding row never learns); dpos likewise.
 * Either gradient may be NULL. */
void embedding_backward(float *ditem, float *dpos, const float *dout, const int32_t *tok,
                        const int32_t *posidx, size_t T, size_t C);

/* out (N, C) = LN(inp (N, C)) * w (C) + b (C); mean, rstd (N) are kept for backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, size_t N, size_t C, float eps);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, size_t N, size_t C);

/* out (N, OC; row stride ldo) = inp (N, IC; stride ldi) . w (OC, IC)^T + b (OC or NULL). */
void linear_forward(float *out, size_t ldo, const float *inp, size_t ldi, const float *w,
                    const float *b, size_t N, size_t IC, size_t OC);
/* dinp (N, IC; ldi) += dout . w;  dw (OC, IC) += dout^T . inp;  db (OC) += sum of dout rows.
 * dout (N, OC; ldo). Any gradient may be NULL. */
void linear_backward(float *dinp, size_t ldi, float *dw, float *db, const float *dout, size_t ldo,
                     const float *inp, size_t ldinp, const float *w, size_t N, size_t IC,
                     size_t OC);

/* Multi-head causal self-attention over packed samples.
 *
 * Sample b's keys and values are rows off[b] .. off[b+1) of k and v: nseg segments of n
 * rows each (nseg = 1 for SASRec; 2 for FLAME's concatenation of two embeddings of the same
 * sequence), segment s holding positions 0..n-1. Its queries are rows qoff[b] .. qoff[b+1)
 * of q; query j stands at key row qrow[qoff[b] + j] (absolute) or, with qrow NULL, at the
 * sample's j-th key row (qoff == off: every position is a query). A query at position t of
 * segment sq attends the keys at positions 0..t of every segment (FLAME's 2x2 tiled mask;
 * plain causal for nseg = 1) or, with blockdiag, of segment sq only. Keys whose token is 0
 * are masked when tok (T) is given (explicit padding).
 *
 * P receives the softmax probabilities before dropout, sample b's block at P + poff[b] laid
 * out (NH, nq, nseg * n) (attention_poff computes poff). Dropout on P uses drop.key. */
typedef struct {
  size_t B;           /* samples */
  size_t nseg;        /* segments per sample */
  int blockdiag;      /* 1: a query sees its own segment only */
  const size_t *off;  /* (B + 1) key rows of each sample */
  const size_t *qoff; /* (B + 1) query rows of each sample */
  const size_t *qrow; /* (qoff[B]) key row of each query, or NULL (qoff == off) */
  const size_t *poff; /* (B + 1) offsets of the samples in P */
  const int32_t *tok; /* (off[B]) tokens (0 = padding), or NULL: no padding */
} attn_layout;

size_t attention_poff(size_t *poff, const size_t *off, const size_t *qoff, size_t B, size_t NH);
/* Floats of scratch the attention kernels need for samples of up to Lmax key rows. */
size_t attention_scratch_floats(size_t Lmax, size_t C, size_t NH);
/* out (Tq, C) from q (Tq, C; stride ldq), k, v (T, C; stride ldkv). */
void attention_forward(float *out, float *P, const float *q, size_t ldq, const float *k,
                       const float *v, size_t ldkv, const attn_layout *lay, size_t C, size_t NH,
                       const kern_dropout *drop, float *scratch);
/* Accumulates dq (Tq, C; lddq), dk, dv (T, C; lddkv). scratch as for the forward. */
void attention_backward(float *dq, float *dk, float *dv, size_t lddq, size_t lddkv,
                        const float *dout, const float *P, const float *q, size_t ldq,
                        const float *k, const float *v, size_t ldkv, const attn_layout *lay,
                        size_t C, size_t NH, const kern_dropout *drop, float *scratch);

/* Exact GELU: out = x * Phi(x) (erf form). */
void gelu_forward(float *out, const float *inp, size_t N);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N);

/* x (N) = dropout(x) in place. */
void dropout_forward(float *x, size_t N, const kern_dropout *d);
/* dinp (N) += dropout'(dout). */
void dropout_backward(float *dinp, const float *dout, size_t N, const kern_dropout *d);
/* out (N) = res + dropout(x)   (the residual branch of a post-LN block; out may alias x). */
void residual_dropout_forward(float *out, const float *res, const float *x, size_t N,
                              const kern_dropout *d);

/* Full softmax cross-entropy. logits (B, NI) are replaced by probabilities; losses (B)
 * receive -log p[target]; returns their mean. tgt in 1..NI (column tgt - 1). */
float crossentropy_forward(float *logits, float *losses, const int32_t *tgt, size_t B, size_t NI);
/* probs (B, NI) become dlogits = (probs - onehot) * dloss, in place (dloss = 1/B for a mean). */
void crossentropy_backward(float *probs, const int32_t *tgt, size_t B, size_t NI, float dloss);

/* Helpers shared by kernels and the model. */
float kern_dot(const float *a, const float *b, size_t n);

/* exp(x) in plain float operations the compiler vectorises (glibc's expf is a scalar call,
 * and the softmax over the catalogue does millions per step). Cody-Waite range reduction
 * and Cephes' degree-6 polynomial: within 2 ulp of expf over the float range; exact 0 below
 * -87.3 (where expf's result is denormal or 0), overflow clamped at 88.7. */
static inline float kern_expf(float x) {
  float xc = x > 88.7f ? 88.7f : (x < -87.3f ? -87.3f : x);
  /* n = round(x / ln 2) by the 1.5 * 2^23 trick (exact for |n| < 2^22) */
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  float z = r * r;
  float y =
      ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) *
           r +
       1.6666665459e-1f) *
          r +
      5.0000001201e-1f;
  y = y * z + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return x < -87.3f ? 0.0f : y * scale;
}

static inline float kern_dropout_factor(const kern_dropout *d, uint64_t i) {
  /* murmur3's 32-bit finaliser of (i + key): 32-bit multiplies vectorise on AVX2, 64-bit ones
   * do not. Indices stay below 2^32 (a site has at most Tmax * max(C, FF, NH * L) elements). */
  uint32_t h = (uint32_t)i + d->key;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h >= d->thres ? d->scale : 0.0f;
}

/* ---- datasets (data.c, events.c) ---- */
/* Zeroes *ds and err, and reads path whole into *buf (free it): 0, or -errno with "path:
 * reason" in err. */
int data__read(const char *path, data_set *ds, char **buf, size_t *len, char *err, size_t errlen);

/* ---- the network in stages: a backbone behind an ops table (net.c, head.c, sasrec.c) ----
 *
 * A network is three parts (docs/MODEL.md section 1):
 *   - the BACKBONE maps a packed batch to a representation at the last position of every
 *     sample: an embedding stage, then blocks 0 .. NL - 1. Each backbone is one file (sasrec.c)
 *     and one net_backbone table; model_hparams.backbone picks it. Its parameters are its own
 *     tensor table, whose LAST tensor is the item table (NI + 1, C) that every backbone has,
 *     so a bigger catalogue's block has the smaller one's as its prefix whatever the backbone.
 *   - the SCORING HEAD (head.c) scores a representation against the item table (tied
 *     embedding: score of item i = h . item[i]), the same for every backbone.
 *   - the OBJECTIVE: the cross-entropy of model_forward/model_backward (head.c, full or
 *     sampled softmax), or FLAME (flame.c), which runs the stages of two networks apart: two
 *     embeddings (the learnable network's and the frozen anchor's) concatenated per sample
 *     and run through both encoders under the 2x2 tiled mask, the anchor's backward giving
 *     input gradients only. Both use only the stages below, so they work with any backbone.
 * Each stage keeps what its backward needs in a model_acts; dropout masks derive from the
 * key a stage is given. */

/* The rows of an encoder pass: sample b is rows off[b] .. off[b+1): nseg segments of n
 * tokens each (1 for SASRec; 2 for FLAME's [learnable embedding; anchor embedding]).
 * blockdiag: a segment attends to itself only (FLAME's ablation). tok (off[B]) marks
 * explicit padding with 0, or is NULL. */
typedef struct {
  size_t B;
  size_t nseg;
  int blockdiag;
  const size_t *off;
  const int32_t *tok;
} net_layout;

/* Activations of a pass: the backbone's own (enc) and the head's. Allocated once for the
 * largest batch (net_acts_new); every allocation is counted in bytes. */
struct model_acts {
  const struct net_backbone *bb;
  void *enc;         /* the backbone's activations (its acts_new) */
  size_t Bmax, nseg; /* samples and segments per sample it was made for */
  size_t B, T;       /* the last embedding pass: samples, tokens */
  int has_loss;      /* the last model_forward computed a loss */
  /* the representations the backbone's last block writes and the head reads */
  float *h;  /* (Bmax * nseg, C) outputs at the last position of every segment */
  float *dh; /* (Bmax * nseg, C) their gradient (the head writes, the backbone reads) */
  /* the head's cross-entropy */
  float *logits;     /* (Bmax, NI or 1 + nneg) logits, probabilities, dlogits */
  size_t logits_cap; /* floats allocated in logits */
  int32_t *col1;     /* (Bmax) all 1: a sampled row's target is its column 0 */
  float *negE;       /* (nneg, C) the sampled candidates' rows, then their gradient */
  size_t negE_cap;   /* floats allocated in negE */
  float *losses;     /* (Bmax) */
  size_t bytes;      /* allocated here, beyond the backbone's enc_bytes */
};

/* A backbone: its tensor table and its stages. Stage contracts:
 *   embed_forward: (T, C) embedding of a packed batch (nseg = 1), returned (inside a); sets
 *     a->B and a->T. embed_backward: accumulates the embedding's parameter gradients into g
 *     from dX0 (T, C).
 *   blocks_forward: blocks l0 .. l1 - 1 on X0 (lay->off[B] rows, C; read again by backward, so
 *     it must stay unchanged). When l1 is the network's last block, writes and returns a->h:
 *     the outputs at the last position of every segment, (B * nseg, C), sample-major.
 *     Otherwise returns every row (T, C): the input of the next range.
 *   blocks_backward: backward of the last blocks_forward from dH, shaped like its output.
 *     Weight gradients are accumulated into g unless g is NULL (a frozen network: input
 *     gradients only). Returns dX0 (T, C), valid until the next pass on a.
 *   encoder_flops: useful forward FLOPs of blocks l0 .. l1 - 1 over the batch's samples
 *     repeated in nseg segments (multiply-add = 2; padding tokens not counted). */
typedef struct net_backbone {
  const char *name;         /* as --backbone and checkpoints' messages spell it */
  size_t ntensors;          /* tensors in its table, the item table last */
  const char *const *names; /* (ntensors) tensor names, for messages */
  /* floats of each tensor for hp and NI items into sizes (ntensors); returns the total */
  size_t (*tensor_sizes)(const model_hparams *hp, size_t NI, size_t *sizes);
  /* 0 if hp's shape fits this backbone (beyond model_hparams_check), else FL_ERANGE */
  int (*check)(const model_hparams *hp);
  /* initialises m's parameters (allocated, views set) from r; the padding row is zeroed by
   * the caller */
  void (*init)(model_net *m, fl_rng *r);
  /* the backbone's activations for up to Bmax samples, Tmax rows, nseg segments per sample
   * (each at most L rows); adds what it allocates to *bytes */
  void *(*acts_new)(const model_hparams *hp, size_t Bmax, size_t Tmax, size_t nseg, size_t *bytes);
  void (*acts_free)(void *enc);
  const float *(*embed_forward)(const model_net *m, model_acts *a, const model_batch *bt, int train,
                                uint64_t key);
  void (*embed_backward)(const model_net *m, const model_tensors *g, model_acts *a,
                         const float *dx0, const model_batch *bt);
  const float *(*blocks_forward)(const model_net *m, model_acts *a, const float *X0,
                                 const net_layout *lay, int train, uint64_t key, size_t l0,
                                 size_t l1);
  const float *(*blocks_backward)(const model_net *m, const model_tensors *g, model_acts *a,
                                  const float *dH);
  double (*encoder_flops)(const model_net *m, const model_batch *b, size_t nseg, int blockdiag,
                          size_t l0, size_t l1);
} net_backbone;

/* The backbones this build knows (sasrec.c). */
extern const net_backbone net_sasrec;
/* The backbone of hp (NULL if hp->backbone is unknown). */
const net_backbone *net_backbone_of(const model_hparams *hp);

/* 1 if the batch carries explicit padding (item-0 tokens): the attention must mask them. */
int net_batch_padded(const model_batch *bt);

/* Activations for passes of up to Bmax samples, Tmax rows, nseg segments per sample (each
 * at most L rows). model_acts_new is nseg = 1. */
model_acts *net_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax, size_t nseg);

/* Dropout key of a pass from the model's seed, its step and a salt (different salts give
 * independent masks in the same step: keys far apart, as a pass's sites are key + site). */
uint64_t net_key(const model_net *m, uint64_t salt);

/* The stages of m's backbone (the contracts above net_backbone). */
static inline const float *net_embed_forward(const model_net *m, model_acts *a,
                                             const model_batch *bt, int train, uint64_t key) {
  return a->bb->embed_forward(m, a, bt, train, key);
}
static inline void net_embed_backward(const model_net *m, const model_tensors *g, model_acts *a,
                                      const float *dx0, const model_batch *bt) {
  a->bb->embed_backward(m, g, a, dx0, bt);
}
static inline const float *net_blocks_forward(const model_net *m, model_acts *a, const float *X0,
                                              const net_layout *lay, int train, uint64_t key,
                                              size_t l0, size_t l1) {
  return a->bb->blocks_forward(m, a, X0, lay, train, key, l0, l1);
}
static inline const float *net_blocks_backward(const model_net *m, const model_tensors *g,
                                               model_acts *a, const float *dH) {
  return a->bb->blocks_backward(m, g, a, dH);
}
static inline double net_encoder_flops(const model_net *m, const model_batch *b, size_t nseg,
                                       int blockdiag, size_t l0, size_t l1) {
  return net_backbone_of(&m->hp)->encoder_flops(m, b, nseg, blockdiag, l0, l1);
}

#endif
