/* model/kernels.c: forward and backward of every SASRec layer (see model/internal.h for the
 * conventions), plus the BLAS seam.
 *
 * Row-major everywhere. The big products (linear layers, tied output) go through
 * model_matmul (cblas_sgemm); per-sample attention is small (a few to L positions) and runs
 * as loops with vectorisable dot products and axpys. Reductions use 8 independent
 * accumulators so the compiler vectorises them without -ffast-math (and the result does not
 * depend on the thread count). */
#include "common/common.h"
#include "model/internal.h"
#include "model/model.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- BLAS seam ---- */

void model_matmul(float *C, size_t ldc, const float *A, size_t lda, int transA, const float *B,
                  size_t ldb, int transB, size_t M, size_t N, size_t K, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void model_matmul_ref(float *C, size_t ldc, const float *A, size_t lda, int transA, const float *B,
                      size_t ldb, int transB, size_t M, size_t N, size_t K, float alpha,
                      float beta) {
  for (size_t i = 0; i < M; i++) {
    for (size_t j = 0; j < N; j++) {
      double acc = 0.0;
      for (size_t p = 0; p < K; p++) {
        float a = transA ? A[p * lda + i] : A[i * lda + p];
        float b = transB ? B[j * ldb + p] : B[p * ldb + j];
        acc += (double)a * b;
      }
      float prev = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
      C[i * ldc + j] = (float)(alpha * acc) + prev;
    }
  }
}

/* ---- small vector helpers ---- */

/* The sum of 8 partial sums in one fixed pairwise order, so every reduction is deterministic. */
static inline float hsum8(const float *acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

float kern_dot(const float *a, const float *b, size_t n) {
  float acc[8] = {0};
  size_t n8 = n & ~(size_t)7;
  for (size_t i = 0; i < n8; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
  float s = hsum8(acc);
  for (size_t i = n8; i < n; i++) s += a[i] * b[i];
  return s;
}

/* y (n) += alpha * x (n) */
static inline void axpy(float *restrict y, float alpha, const float *restrict x, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static inline float vsum(const float *a, size_t n) {
  float acc[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += a[i + l];
  float s = hsum8(acc);
  for (; i < n; i++) s += a[i];
  return s;
}

static inline float vmax(const float *a, size_t n) {
  float acc[8];
  size_t i = 0;
  float m = -INFINITY;
  if (n >= 8) {
    for (int l = 0; l < 8; l++) acc[l] = a[l];
    for (i = 8; i + 8 <= n; i += 8)
      for (int l = 0; l < 8; l++) acc[l] = a[i + l] > acc[l] ? a[i + l] : acc[l];
    for (int l = 0; l < 8; l++) m = acc[l] > m ? acc[l] : m;
  }
  for (; i < n; i++) m = a[i] > m ? a[i] : m;
  return m;
}

/* erf(x) for GELU, vectorisable: Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7, at
 * the float rounding of 1 + erf(x), which is what GELU uses). */
static inline float kern_erff(float x) {
  float a = fabsf(x);
  float t = 1.0f / (1.0f + 0.3275911f * a);
  float p = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
             0.254829592f) *
            t;
  float e = 1.0f - p * kern_expf(-a * a);
  return copysignf(e, x);
}

/* ---- dropout ---- */

kern_dropout kern_dropout_make(float p, uint64_t key) {
  kern_dropout d;
  d.p = p;
  d.scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  d.thres = (uint32_t)fmin(4294967295.0, (double)p * 4294967296.0);
  d.key = (uint32_t)fl_hash64(key);
  return d;
}

/* The dropout loops copy *d to a local: kern_dropout holds floats, so through the pointer
 * every float store could alias it and the loop would not vectorise. */
void dropout_forward(float *x, size_t N, const kern_dropout *d) {
  const kern_dropout dd = *d;
  if (dd.p <= 0.0f) return;
  for (size_t i = 0; i < N; i++) x[i] *= kern_dropout_factor(&dd, i);
}

void dropout_backward(float *dinp, const float *dout, size_t N, const kern_dropout *d) {
  if (d->p <= 0.0f) {
    for (size_t i = 0; i < N; i++) dinp[i] += dout[i];
    return;
  }
  const kern_dropout dd = *d;
  for (size_t i = 0; i < N; i++) dinp[i] += dout[i] * kern_dropout_factor(&dd, i);
}

void residual_dropout_forward(float *out, const float *res, const float *x, size_t N,
                              const kern_dropout *d) {
  if (d->p <= 0.0f) {
    for (size_t i = 0; i < N; i++) out[i] = res[i] + x[i];
    return;
  }
  const kern_dropout dd = *d;
  for (size_t i = 0; i < N; i++) out[i] = res[i] + x[i] * kern_dropout_factor(&dd, i);
}

/* ---- embedding ---- */

void embedding_forward(float *out, const int32_t *tok, const int32_t *posidx, const float *item,
                       const float *pos, size_t T, size_t C) {
  for (size_t t = 0; t < T; t++) {
    const float *e = item + (size_t)tok[t] * C;
    const float *p = pos + (size_t)posidx[t] * C;
    float *o = out + t * C;
    for (size_t c = 0; c < C; c++) o[c] = e[c] + p[c];
  }
}

void embedding_backward(float *ditem, float *dpos, const float *dout, const int32_t *tok,
                        const int32_t *posidx, size_t T, size_t C) {
  for (size_t t = 0; t < T; t++) {
    const float *d = dout + t * C;
    if (ditem && tok[t] != 0) axpy(ditem + (size_t)tok[t] * C, 1.0f, d, C);
    if (dpos) axpy(dpos + (size_t)posidx[t] * C, 1.0f, d, C);
  }
}

/* ---- layernorm ---- */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, size_t N, size_t C, float eps) {
  for (size_t i = 0; i < N; i++) {
    const float *x = inp + i * C;
    float m = vsum(x, C) / (float)C;
    float v = 0.0f;
    {
      float acc[8] = {0};
      size_t c = 0;
      for (; c + 8 <= C; c += 8)
        for (int l = 0; l < 8; l++) {
          float xm = x[c + l] - m;
          acc[l] += xm * xm;
        }
      v = hsum8(acc);
      for (; c < C; c++) v += (x[c] - m) * (x[c] - m);
    }
    float s = 1.0f / sqrtf(v / (float)C + eps);
    float *o = out + i * C;
    for (size_t c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
    mean[i] = m;
    rstd[i] = s;
  }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, size_t N, size_t C) {
  for (size_t i = 0; i < N; i++) {
    const float *dy = dout + i * C;
    const float *x = inp + i * C;
    float m = mean[i], s = rstd[i];
    /* dnorm = dy * w; dx = s * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)) */
    float a1[8] = {0}, a2[8] = {0};
    size_t c = 0;
    for (; c + 8 <= C; c += 8)
      for (int l = 0; l < 8; l++) {
        float xh = (x[c + l] - m) * s;
        float dn = dy[c + l] * w[c + l];
        a1[l] += dn;
        a2[l] += dn * xh;
      }
    float dmean = hsum8(a1);
    float dvar = hsum8(a2);
    for (; c < C; c++) {
      float xh = (x[c] - m) * s;
      float dn = dy[c] * w[c];
      dmean += dn;
      dvar += dn * xh;
    }
    dmean /= (float)C;
    dvar /= (float)C;
    for (c = 0; c < C; c++) {
      float xh = (x[c] - m) * s;
      if (db) db[c] += dy[c];
      if (dw) dw[c] += dy[c] * xh;
      if (dinp) dinp[i * C + c] += s * (dy[c] * w[c] - dmean - xh * dvar);
    }
  }
}

/* ---- linear ---- */

void linear_forward(float *out, size_t ldo, const float *inp, size_t ldi, const float *w,
                    const float *b, size_t N, size_t IC, size_t OC) {
  if (N == 0) return;
  if (b) {
    for (size_t i = 0; i < N; i++) memcpy(out + i * ldo, b, OC * sizeof(float));
  }
  model_matmul(out, ldo, inp, ldi, 0, w, IC, 1, N, OC, IC, 1.0f, b ? 1.0f : 0.0f);
}

void linear_backward(float *dinp, size_t ldi, float *dw, float *db, const float *dout, size_t ldo,
                     const float *inp, size_t ldinp, const float *w, size_t N, size_t IC,
                     size_t OC) {
  if (N == 0) return;
  /* dinp (N, IC) += dout (N, OC) . w (OC, IC) */
  if (dinp) model_matmul(dinp, ldi, dout, ldo, 0, w, IC, 0, N, IC, OC, 1.0f, 1.0f);
  /* dw (OC, IC) += dout^T (OC, N) . inp (N, IC) */
  if (dw) model_matmul(dw, IC, dout, ldo, 1, inp, ldinp, 0, OC, IC, N, 1.0f, 1.0f);
  if (db) {
    for (size_t i = 0; i < N; i++) axpy(db, 1.0f, dout + i * ldo, OC);
  }
}

/* ---- attention ---- */

size_t attention_poff(size_t *poff, const size_t *off, const size_t *qoff, size_t B, size_t NH) {
  poff[0] = 0;
  for (size_t b = 0; b < B; b++) {
    size_t n = off[b + 1] - off[b], nq = qoff[b + 1] - qoff[b];
    poff[b + 1] = poff[b] + NH * nq * n;
  }
  return poff[B];
}

size_t attention_scratch_floats(size_t Lmax, size_t C, size_t NH) {
  return (C / NH) * Lmax + 3 * Lmax;
}

/* dst (HS, n) = the head-h columns of rows 0..n-1 of src (stride ld), transposed: the
 * per-query dot products against every key then vectorise across keys. */
static void gather_head_t(float *restrict dst, const float *restrict src, size_t ld, size_t n,
                          size_t h, size_t HS) {
  for (size_t s = 0; s < n; s++) {
    const float *r = src + s * ld + h * HS;
    for (size_t c = 0; c < HS; c++) dst[c * n + s] = r[c];
  }
}

/* sc[0..len) = columns 0..len) of xt (HS rows, stride ld) dotted with vec (HS). */
static void dots_t(float *restrict sc, const float *restrict xt, size_t ld, size_t len,
                   const float *restrict vec, size_t HS) {
  for (size_t s = 0; s < len; s++) sc[s] = 0.0f;
  for (size_t c = 0; c < HS; c++) {
    float vc = vec[c];
    const float *row = xt + c * ld;
    for (size_t s = 0; s < len; s++) sc[s] += vc * row[s];
  }
}

/* sc[0..len) = rows 0..len) of x (stride ld) dotted with vec (HS): for few queries per
 * sample, where transposing the keys first would cost as much as the dots themselves. */
static void dots_rows(float *restrict sc, const float *restrict x, size_t ld, size_t len,
                      const float *restrict vec, size_t HS) {
  for (size_t s = 0; s < len; s++) sc[s] = kern_dot(x + s * ld, vec, HS);
}

/* Queries per sample from which the transposed (dots_t) layout pays for its gather. */
#define ATTN_T_MIN_QUERIES 4

/* f[0..len) = the dropout factors of elements base .. base + len. */
static void drop_factors(float *restrict f, size_t len, const kern_dropout *d, size_t base) {
  const kern_dropout dd = *d;
  if (dd.p <= 0.0f) {
    for (size_t s = 0; s < len; s++) f[s] = 1.0f;
  } else {
    for (size_t s = 0; s < len; s++) f[s] = kern_dropout_factor(&dd, base + s);
  }
}

/* Where query j of sample b stands: its segment and position; n = rows per segment. */
typedef struct {
  size_t seg, t; /* the query's segment and position */
  size_t s0, s1; /* the segments it sees: s0 .. s1 - 1 */
} attn_query;

static attn_query attn_where(const attn_layout *lay, size_t b, size_t j, size_t n) {
  size_t r = lay->qrow ? lay->qrow[lay->qoff[b] + j] - lay->off[b] : j;
  attn_query q = {r / n, r % n, 0, lay->nseg};
  if (lay->blockdiag) q.s0 = q.seg, q.s1 = q.seg + 1;
  return q;
}

/* The kernels' bodies take the head size HS as an argument so that the public functions can
 * instantiate them with a constant for the common 32 (d = 64, 2 heads): the 32-wide dots and
 * axpys then unroll into a few vector instructions with no loop around them. */
static inline __attribute__((always_inline)) void
attn_forward_hs(float *out, float *P, const float *q, size_t ldq, const float *k, const float *v,
                size_t ldkv, const attn_layout *lay, size_t C, size_t NH, size_t HS,
                const kern_dropout *drop, float *scratch) {
  float scale = 1.0f / sqrtf((float)HS);
  for (size_t b = 0; b < lay->B; b++) {
    size_t nk = lay->off[b + 1] - lay->off[b], n = nk / lay->nseg;
    size_t nq = lay->qoff[b + 1] - lay->qoff[b];
    const float *kb = k + lay->off[b] * ldkv, *vb = v + lay->off[b] * ldkv;
    const int32_t *tb = lay->tok ? lay->tok + lay->off[b] : NULL;
    float *kt = scratch, *f = scratch + HS * nk;
    int tr = nq >= ATTN_T_MIN_QUERIES;
    for (size_t h = 0; h < NH; h++) {
      if (tr) gather_head_t(kt, kb, ldkv, nk, h, HS);
      for (size_t j = 0; j < nq; j++) {
        attn_query w = attn_where(lay, b, j, n);
        const float *qr = q + (lay->qoff[b] + j) * ldq + h * HS;
        size_t base = lay->poff[b] + (h * nq + j) * nk;
        float *pr = P + base;
        float *o = out + (lay->qoff[b] + j) * C + h * HS;
        float mx = -INFINITY;
        for (size_t sg = w.s0; sg < w.s1; sg++) {
          float *ps = pr + sg * n;
          if (tr)
            dots_t(ps, kt + sg * n, nk, w.t + 1, qr, HS);
          else
            dots_rows(ps, kb + sg * n * ldkv + h * HS, ldkv, w.t + 1, qr, HS);
          for (size_t s = 0; s <= w.t; s++) {
            ps[s] = (tb && tb[sg * n + s] == 0) ? -INFINITY : ps[s] * scale;
            mx = ps[s] > mx ? ps[s] : mx;
          }
        }
        memset(o, 0, HS * sizeof(float));
        float sum = 0.0f;
        for (size_t sg = w.s0; sg < w.s1; sg++) {
          float *ps = pr + sg * n;
          /* no real key at all (a padding query): every probability 0, output 0 */
          for (size_t s = 0; s <= w.t; s++) ps[s] = mx == -INFINITY ? 0.0f : kern_expf(ps[s] - mx);
          sum += vsum(ps, w.t + 1);
        }
        if (sum == 0.0f) continue;
        float inv = 1.0f / sum;
        for (size_t sg = w.s0; sg < w.s1; sg++) {
          float *ps = pr + sg * n;
          for (size_t s = 0; s <= w.t; s++) ps[s] *= inv;
          drop_factors(f, w.t + 1, drop, base + sg * n);
          /* unconditional: a dropped probability adds zero, cheaper than a branch that
           * dropout makes unpredictable */
          for (size_t s = 0; s <= w.t; s++)
            axpy(o, ps[s] * f[s], vb + (sg * n + s) * ldkv + h * HS, HS);
        }
      }
    }
  }
}

static inline __attribute__((always_inline)) void
attn_backward_hs(float *dq, float *dk, float *dv, size_t lddq, size_t lddkv, const float *dout,
                 const float *P, const float *q, size_t ldq, const float *k, const float *v,
                 size_t ldkv, const attn_layout *lay, size_t C, size_t NH, size_t HS,
                 const kern_dropout *drop, float *scratch) {
  float scale = 1.0f / sqrtf((float)HS);
  for (size_t b = 0; b < lay->B; b++) {
    size_t nk = lay->off[b + 1] - lay->off[b], n = nk / lay->nseg;
    size_t nq = lay->qoff[b + 1] - lay->qoff[b];
    const float *kb = k + lay->off[b] * ldkv, *vb = v + lay->off[b] * ldkv;
    float *dkb = dk + lay->off[b] * lddkv, *dvb = dv + lay->off[b] * lddkv;
    /* padding keys have P = 0, which removes them below: tok is not needed */
    float *vt = scratch, *f = scratch + HS * nk, *dp = f + nk;
    int tr = nq >= ATTN_T_MIN_QUERIES;
    for (size_t h = 0; h < NH; h++) {
      if (tr) gather_head_t(vt, vb, ldkv, nk, h, HS);
      for (size_t j = 0; j < nq; j++) {
        attn_query w = attn_where(lay, b, j, n);
        const float *qr = q + (lay->qoff[b] + j) * ldq + h * HS;
        float *dqr = dq + (lay->qoff[b] + j) * lddq + h * HS;
        size_t base = lay->poff[b] + (h * nq + j) * nk;
        const float *pr = P + base;
        const float *dor = dout + (lay->qoff[b] + j) * C + h * HS;
        /* dP = dropout'(dout . v_s); dv_s += P'_s dout; dS = P (dP - sum P dP) */
        float pdp = 0.0f;
        for (size_t sg = w.s0; sg < w.s1; sg++) {
          float *fs = f + sg * n, *dps = dp + sg * n;
          const float *ps = pr + sg * n;
          drop_factors(fs, w.t + 1, drop, base + sg * n);
          if (tr)
            dots_t(dps, vt + sg * n, nk, w.t + 1, dor, HS);
          else
            dots_rows(dps, vb + sg * n * ldkv + h * HS, ldkv, w.t + 1, dor, HS);
          for (size_t s = 0; s <= w.t; s++) {
            dps[s] *= fs[s];
            pdp += ps[s] * dps[s];
          }
        }
        for (size_t sg = w.s0; sg < w.s1; sg++) {
          for (size_t s = sg * n; s <= sg * n + w.t; s++) {
            if (pr[s] == 0.0f) continue;
            axpy(dvb + s * lddkv + h * HS, pr[s] * f[s], dor, HS); /* unconditional: as above */
            float ds = pr[s] * (dp[s] - pdp) * scale;
            axpy(dqr, ds, kb + s * ldkv + h * HS, HS);
            axpy(dkb + s * lddkv + h * HS, ds, qr, HS);
          }
        }
      }
    }
  }
}

void attention_forward(float *out, float *P, const float *q, size_t ldq, const float *k,
                       const float *v, size_t ldkv, const attn_layout *lay, size_t C, size_t NH,
                       const kern_dropout *drop, float *scratch) {
  if (C / NH == 32)
    attn_forward_hs(out, P, q, ldq, k, v, ldkv, lay, C, NH, 32, drop, scratch);
  else
    attn_forward_hs(out, P, q, ldq, k, v, ldkv, lay, C, NH, C / NH, drop, scratch);
}

void attention_backward(float *dq, float *dk, float *dv, size_t lddq, size_t lddkv,
                        const float *dout, const float *P, const float *q, size_t ldq,
                        const float *k, const float *v, size_t ldkv, const attn_layout *lay,
                        size_t C, size_t NH, const kern_dropout *drop, float *scratch) {
  if (C / NH == 32)
    attn_backward_hs(dq, dk, dv, lddq, lddkv, dout, P, q, ldq, k, v, ldkv, lay, C, NH, 32, drop,
                     scratch);
  else
    attn_backward_hs(dq, dk, dv, lddq, lddkv, dout, P, q, ldq, k, v, ldkv, lay, C, NH, C / NH, drop,
                     scratch);
}

/* ---- GELU ---- */

#define GELU_RSQRT2 0.70710678118654752440f
#define GELU_RSQRT2PI 0.39894228040143267794f

void gelu_forward(float *out, const float *inp, size_t N) {
  for (size_t i = 0; i < N; i++) {
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + kern_erff(x * GELU_RSQRT2));
  }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
  for (size_t i = 0; i < N; i++) {
    float x = inp[i];
    float cdf = 0.5f * (1.0f + kern_erff(x * GELU_RSQRT2));
    float pdf = GELU_RSQRT2PI * kern_expf(-0.5f * x * x);
    dinp[i] += dout[i] * (cdf + x * pdf);
  }
}

/* ---- tied full-softmax cross-entropy ---- */

float crossentropy_forward(float *logits, float *losses, const int32_t *tgt, size_t B, size_t NI) {
  double total = 0.0;
  for (size_t b = 0; b < B; b++) {
    float *row = logits + b * NI;
    float mx = vmax(row, NI);
    float lt = row[tgt[b] - 1];
    for (size_t i = 0; i < NI; i++) row[i] = kern_expf(row[i] - mx);
    float sum = vsum(row, NI);
    float inv = 1.0f / sum;
    for (size_t i = 0; i < NI; i++) row[i] *= inv;
    /* -log p = log(sum) - (logit - max): exact even where p underflows. */
    losses[b] = logf(sum) - (lt - mx);
    total += losses[b];
  }
  return B ? (float)(total / (double)B) : 0.0f;
}

void crossentropy_backward(float *probs, const int32_t *tgt, size_t B, size_t NI, float dloss) {
  for (size_t b = 0; b < B; b++) {
    float *row = probs + b * NI;
    row[tgt[b] - 1] -= 1.0f;
    for (size_t i = 0; i < NI; i++) row[i] *= dloss;
  }
}
