/* tests/model/test_kernels.c: every layer kernel against central differences, and the BLAS
 * path against the naive matmul. Loss of a kernel = sum(out * R) for a fixed random R, so
 * the analytic gradient is the backward of dout = R. Tiny shapes (B=2..3, T<=8, C=16). */
#include "common/common.h"
#include "gradcheck.h"
#include "model/internal.h"
#include "model/model.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void fill(float *x, size_t n, fl_rng *r, float scale) {
  for (size_t i = 0; i < n; i++) x[i] = scale * fl_rng_normal(r);
}

static float *vec(size_t n, fl_rng *r, float scale) {
  float *x = xcalloc(n, sizeof(float));
  if (r) fill(x, n, r, scale);
  return x;
}

/* ---- matmul: BLAS vs reference, every transpose and stride ---- */

static void test_matmul_blas_vs_ref(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 1);
  size_t M = 7, N = 5, K = 9, pad = 3;
  for (int ta = 0; ta < 2; ta++) {
    for (int tb = 0; tb < 2; tb++) {
      size_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
      float *A = vec((ta ? K : M) * lda, &r, 1.0f), *Bm = vec((tb ? N : K) * ldb, &r, 1.0f);
      float *C1 = vec(M * ldc, &r, 1.0f), *C2 = xmalloc(M * ldc * sizeof(float));
      memcpy(C2, C1, M * ldc * sizeof(float));
      model_matmul(C1, ldc, A, lda, ta, Bm, ldb, tb, M, N, K, 0.5f, 0.25f);
      model_matmul_ref(C2, ldc, A, lda, ta, Bm, ldb, tb, M, N, K, 0.5f, 0.25f);
      for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < ldc; j++) assert_float_equal(C1[i * ldc + j], C2[i * ldc + j], 1e-5);
      free(A), free(Bm), free(C1), free(C2);
    }
  }
}

/* ---- embedding ---- */

typedef struct {
  float *out, *item, *pos, *R;
  int32_t *tok, *posidx;
  size_t T, C;
} emb_ctx;

static double emb_loss(void *p) {
  emb_ctx *c = p;
  embedding_forward(c->out, c->tok, c->posidx, c->item, c->pos, c->T, c->C);
  return gc_dotd(c->out, c->R, c->T * c->C);
}

static void test_embedding(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 2);
  size_t T = 6, C = 16, NI = 5, L = 4;
  int32_t tok[] = {1, 3, 3, 0, 5, 2}, posidx[] = {0, 1, 2, 3, 3, 1};
  emb_ctx c = {vec(T * C, NULL, 0),
               vec((NI + 1) * C, &r, 1),
               vec(L * C, &r, 1),
               vec(T * C, &r, 1),
               tok,
               posidx,
               T,
               C};
  float *ditem = vec((NI + 1) * C, NULL, 0), *dpos = vec(L * C, NULL, 0);
  embedding_backward(ditem, dpos, c.R, tok, posidx, T, C);
  for (size_t i = 0; i < C; i++) assert_true(ditem[i] == 0.0f); /* padding row never learns */
  /* the padding row is excluded from the check: its true derivative is not zero */
  assert_int_equal(
      gc_check("item", c.item + C, NI * C, ditem + C, emb_loss, &c, 1000, 1e-2, 1e-3, 1e-3), 0);
  assert_int_equal(gc_check("pos", c.pos, L * C, dpos, emb_loss, &c, 1000, 1e-2, 1e-3, 1e-3), 0);
  free(c.out), free(c.item), free(c.pos), free(c.R), free(ditem), free(dpos);
}

/* ---- layernorm ---- */

typedef struct {
  float *out, *mean, *rstd, *inp, *w, *b, *R;
  size_t N, C;
} ln_ctx;

static double ln_loss(void *p) {
  ln_ctx *c = p;
  layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C, 1e-12f);
  return gc_dotd(c->out, c->R, c->N * c->C);
}

static void test_layernorm(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 3);
  size_t N = 5, C = 16;
  ln_ctx c = {vec(N * C, NULL, 0),
              vec(N, NULL, 0),
              vec(N, NULL, 0),
              vec(N * C, &r, 1),
              vec(C, &r, 1),
              vec(C, &r, 1),
              vec(N * C, &r, 1),
              N,
              C};
  ln_loss(&c);
  float *dinp = vec(N * C, NULL, 0), *dw = vec(C, NULL, 0), *db = vec(C, NULL, 0);
  layernorm_backward(dinp, dw, db, c.R, c.inp, c.w, c.mean, c.rstd, N, C);
  assert_int_equal(gc_check("inp", c.inp, N * C, dinp, ln_loss, &c, 1000, 1e-2, 2e-3, 1e-2), 0);
  assert_int_equal(gc_check("w", c.w, C, dw, ln_loss, &c, 1000, 1e-2, 2e-3, 1e-2), 0);
  assert_int_equal(gc_check("b", c.b, C, db, ln_loss, &c, 1000, 1e-2, 2e-3, 1e-2), 0);
  free(c.out), free(c.mean), free(c.rstd), free(c.inp), free(c.w), free(c.b), free(c.R);
  free(dinp), free(dw), free(db);
}

/* ---- linear (strided input and output, as the QKV split uses them) ---- */

typedef struct {
  float *out, *inp, *w, *b, *R;
  size_t N, IC, OC, ldi, ldo;
} lin_ctx;

static double lin_loss(void *p) {
  lin_ctx *c = p;
  linear_forward(c->out, c->ldo, c->inp, c->ldi, c->w, c->b, c->N, c->IC, c->OC);
  double s = 0.0;
  for (size_t i = 0; i < c->N; i++) s += gc_dotd(c->out + i * c->ldo, c->R + i * c->ldo, c->OC);
  return s;
}

static void test_linear(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 4);
  size_t N = 4, IC = 16, OC = 12, ldi = 20, ldo = 15;
  lin_ctx c = {vec(N * ldo, NULL, 0),
               vec(N * ldi, &r, 1),
               vec(OC * IC, &r, 0.5f),
               vec(OC, &r, 1),
               vec(N * ldo, &r, 1),
               N,
               IC,
               OC,
               ldi,
               ldo};
  float *dinp = vec(N * ldi, NULL, 0), *dw = vec(OC * IC, NULL, 0), *db = vec(OC, NULL, 0);
  linear_backward(dinp, ldi, dw, db, c.R, ldo, c.inp, ldi, c.w, N, IC, OC);
  assert_int_equal(gc_check("inp", c.inp, N * ldi, dinp, lin_loss, &c, 1000, 1e-2, 2e-3, 1e-2), 0);
  assert_int_equal(gc_check("w", c.w, OC * IC, dw, lin_loss, &c, 1000, 1e-2, 2e-3, 1e-2), 0);
  assert_int_equal(gc_check("b", c.b, OC, db, lin_loss, &c, 1000, 1e-2, 2e-3, 1e-2), 0);
  /* accumulation: a second backward doubles the gradients */
  float w0 = dw[7];
  linear_backward(NULL, ldi, dw, NULL, c.R, ldo, c.inp, ldi, c.w, N, IC, OC);
  assert_float_equal(dw[7], 2 * w0, 1e-4);
  free(c.out), free(c.inp), free(c.w), free(c.b), free(c.R), free(dinp), free(dw), free(db);
}

/* ---- attention: full blocks, last-position blocks, explicit padding, dropout, and the
 * two-segment layouts of FLAME (tiled and block-diagonal masks) ---- */

typedef struct {
  float *out, *P, *q, *kv, *R, *scratch;
  size_t ldq, C, NH, Tq;
  attn_layout lay;
  kern_dropout drop;
} att_ctx;

static double att_loss(void *p) {
  att_ctx *c = p;
  attention_forward(c->out, c->P, c->q, c->ldq, c->kv, c->kv + c->C, 3 * c->C, &c->lay, c->C, c->NH,
                    &c->drop, c->scratch);
  return gc_dotd(c->out, c->R, c->Tq * c->C);
}

enum { ATT_FULL, ATT_LAST, ATT_PADDED, ATT_TILED, ATT_TILED_LAST, ATT_BLOCKDIAG };

/* C = 16 exercises the generic head size (8); C = 64 the instance specialised for 32. */
static void run_attention_case(int kind, float p, size_t C) {
  fl_rng r;
  fl_rng_seed(&r, 5 + (uint64_t)kind);
  size_t B = 3, NH = 2;
  /* one segment: samples of 1, 3 and 5 tokens (padded: windows of 5 with leading zeros);
   * two segments: the same lengths doubled */
  static const size_t off1[] = {0, 1, 4, 9}, off_pad[] = {0, 5, 10, 15}, off2[] = {0, 2, 8, 18};
  static const int32_t tok_pad[] = {0, 0, 0, 0, 7, 0, 0, 3, 4, 5, 1, 2, 3, 4, 5};
  static const size_t qoff_last1[] = {0, 1, 2, 3}, qrow_last1[] = {0, 3, 8};
  static const size_t qoff_last2[] = {0, 2, 4, 6}, qrow_last2[] = {0, 1, 4, 7, 12, 17};
  int two = kind == ATT_TILED || kind == ATT_TILED_LAST || kind == ATT_BLOCKDIAG;
  int lastq = kind == ATT_LAST || kind == ATT_TILED_LAST;
  attn_layout lay = {B, two ? 2 : 1, kind == ATT_BLOCKDIAG, NULL, NULL, NULL, NULL, NULL};
  lay.off = kind == ATT_PADDED ? off_pad : two ? off2 : off1;
  lay.qoff = lastq ? (two ? qoff_last2 : qoff_last1) : lay.off;
  lay.qrow = lastq ? (two ? qrow_last2 : qrow_last1) : NULL;
  lay.tok = kind == ATT_PADDED ? tok_pad : NULL;
  size_t T = lay.off[B], Tq = lay.qoff[B], poff[4];
  size_t np = attention_poff(poff, lay.off, lay.qoff, B, NH);
  lay.poff = poff;
  att_ctx c = {vec(Tq * C, NULL, 0),
               vec(np, NULL, 0),
               vec(Tq * 3 * C, &r, 1),
               vec(T * 3 * C, &r, 1),
               vec(Tq * C, &r, 1),
               vec(attention_scratch_floats(10, C, NH), NULL, 0),
               3 * C,
               C,
               NH,
               Tq,
               lay,
               kern_dropout_make(p, 99)};
  att_loss(&c);
  float *dq = vec(Tq * 3 * C, NULL, 0), *dkv = vec(T * 3 * C, NULL, 0);
  attention_backward(dq, dkv, dkv + C, 3 * C, 3 * C, c.R, c.P, c.q, 3 * C, c.kv, c.kv + C, 3 * C,
                     &c.lay, C, NH, &c.drop, c.scratch);
  /* only the Q columns of q and the K|V columns of kv are inputs */
  assert_int_equal(gc_check("q", c.q, Tq * 3 * C, dq, att_loss, &c, 2000, 1e-2, 2e-3, 1e-2), 0);
  assert_int_equal(gc_check("kv", c.kv, T * 3 * C, dkv, att_loss, &c, 2000, 1e-2, 2e-3, 1e-2), 0);
  free(c.out), free(c.P), free(c.q), free(c.kv), free(c.R), free(c.scratch), free(dq), free(dkv);
}

static void test_attention_full(void **s) { (void)s, run_attention_case(ATT_FULL, 0.0f, 16); }
static void test_attention_last(void **s) { (void)s, run_attention_case(ATT_LAST, 0.0f, 16); }
static void test_attention_padded(void **s) { (void)s, run_attention_case(ATT_PADDED, 0.0f, 16); }
static void test_attention_dropout(void **s) { (void)s, run_attention_case(ATT_FULL, 0.5f, 16); }
static void test_attention_tiled(void **s) { (void)s, run_attention_case(ATT_TILED, 0.3f, 16); }
static void test_attention_tiled_last(void **s) {
  (void)s, run_attention_case(ATT_TILED_LAST, 0.0f, 16);
}
static void test_attention_blockdiag(void **s) {
  (void)s, run_attention_case(ATT_BLOCKDIAG, 0.0f, 16);
}
static void test_attention_head32(void **s) {
  (void)s;
  run_attention_case(ATT_FULL, 0.5f, 64);
  run_attention_case(ATT_TILED, 0.3f, 64);
  run_attention_case(ATT_TILED_LAST, 0.3f, 64);
}

/* Forward values against a direct double-precision evaluation of the masks: the tiled mask
 * lets position t of either segment see positions 0..t of both; the block-diagonal one of
 * its own segment only (then each segment is exactly a one-segment causal attention). */
static void test_attention_masks_by_hand(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 12);
  size_t C = 8, NH = 1, n = 3, nk = 2 * n;
  size_t off[] = {0, nk}, poff[2];
  float *q = vec(nk * 3 * C, &r, 1), *P = vec(nk * nk, NULL, 0), *out = vec(nk * C, NULL, 0);
  float *scr = vec(attention_scratch_floats(nk, C, NH), NULL, 0);
  kern_dropout d = kern_dropout_make(0.0f, 0);
  attention_poff(poff, off, off, 1, NH);
  for (int bd = 0; bd < 2; bd++) {
    attn_layout lay = {1, 2, bd, off, off, NULL, poff, NULL};
    attention_forward(out, P, q, 3 * C, q + C, q + 2 * C, 3 * C, &lay, C, NH, &d, scr);
    for (size_t i = 0; i < nk; i++) {
      size_t seg = i / n, t = i % n;
      double w[6] = {0}, sum = 0.0;
      for (size_t k = 0; k < nk; k++) {
        if (k % n > t || (bd && k / n != seg)) continue;
        double sc = 0.0;
        for (size_t c = 0; c < C; c++) sc += (double)q[i * 3 * C + c] * q[k * 3 * C + C + c];
        w[k] = exp(sc / sqrt((double)C));
        sum += w[k];
      }
      for (size_t c = 0; c < C; c++) {
        double want = 0.0;
        for (size_t k = 0; k < nk; k++) want += w[k] / sum * q[k * 3 * C + 2 * C + c];
        assert_float_equal(out[i * C + c], want, 1e-5);
      }
    }
  }
  free(q), free(P), free(out), free(scr);
}

/* The last-position block must equal the full block's last rows exactly in value. */
static void test_attention_last_equals_full(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 11);
  size_t B = 2, C = 16, NH = 2, off[] = {0, 3, 8}, qlast[] = {0, 1, 2}, qrow[] = {2, 7}, pf[3],
         pl[3];
  size_t T = 8;
  float *qkv = vec(T * 3 * C, &r, 1), *outf = vec(T * C, NULL, 0), *outl = vec(B * C, NULL, 0);
  float *Pf = vec(attention_poff(pf, off, off, B, NH), NULL, 0);
  float *Pl = vec(attention_poff(pl, off, qlast, B, NH), NULL, 0);
  float *ql = vec(B * C, NULL, 0);
  memcpy(ql, qkv + 2 * 3 * C, C * sizeof(float));
  memcpy(ql + C, qkv + 7 * 3 * C, C * sizeof(float));
  kern_dropout d = kern_dropout_make(0.0f, 0);
  float *scr = vec(attention_scratch_floats(8, C, NH), NULL, 0);
  attn_layout full = {B, 1, 0, off, off, NULL, pf, NULL},
              last = {B, 1, 0, off, qlast, qrow, pl, NULL};
  attention_forward(outf, Pf, qkv, 3 * C, qkv + C, qkv + 2 * C, 3 * C, &full, C, NH, &d, scr);
  attention_forward(outl, Pl, ql, C, qkv + C, qkv + 2 * C, 3 * C, &last, C, NH, &d, scr);
  for (size_t c = 0; c < C; c++) {
    assert_float_equal(outl[c], outf[2 * C + c], 1e-6);
    assert_float_equal(outl[C + c], outf[7 * C + c], 1e-6);
  }
  free(qkv), free(outf), free(outl), free(Pf), free(Pl), free(ql), free(scr);
}

/* ---- GELU, dropout, residual ---- */

typedef struct {
  float *out, *inp, *R;
  size_t N;
} ew_ctx;

static double gelu_loss(void *p) {
  ew_ctx *c = p;
  gelu_forward(c->out, c->inp, c->N);
  return gc_dotd(c->out, c->R, c->N);
}

static void test_gelu(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 6);
  size_t N = 64;
  ew_ctx c = {vec(N, NULL, 0), vec(N, &r, 2), vec(N, &r, 1), N};
  float *d = vec(N, NULL, 0);
  gelu_backward(d, c.inp, c.R, N);
  assert_int_equal(gc_check("x", c.inp, N, d, gelu_loss, &c, 1000, 1e-2, 1e-3, 1e-2), 0);
  /* exact GELU values: gelu(1) = 0.8413447, gelu(-1) = -0.1586553 */
  float x[2] = {1.0f, -1.0f}, y[2];
  gelu_forward(y, x, 2);
  assert_float_equal(y[0], 0.8413447f, 1e-6);
  assert_float_equal(y[1], -0.1586553f, 1e-6);
  free(c.out), free(c.inp), free(c.R), free(d);
}

/* kern_expf against libm over the softmax range; GELU against the erff formula. */
static void test_fast_exp_erf(void **state) {
  (void)state;
  double worst = 0.0;
  for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
    double want = expf(x), got = kern_expf(x);
    double rel = fabs(got - want) / want;
    worst = rel > worst ? rel : worst;
  }
  assert_true(worst < 3e-7); /* about 2 ulp */
  assert_true(kern_expf(-100.0f) == 0.0f);
  assert_true(kern_expf(0.0f) == 1.0f);
  float xs[4001], ys[4001];
  for (int i = 0; i <= 4000; i++) xs[i] = -10.0f + i * 0.005f;
  gelu_forward(ys, xs, 4001);
  for (int i = 0; i <= 4000; i++) {
    double x = xs[i], want = 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    assert_true(fabs(ys[i] - want) <= 2e-7 * (1.0 + fabs(x)));
  }
}

static void test_dropout(void **state) {
  (void)state;
  size_t N = 100000;
  float *x = xmalloc(N * sizeof(float)), *dx = vec(N, NULL, 0), *ones = xmalloc(N * sizeof(float));
  for (size_t i = 0; i < N; i++) x[i] = ones[i] = 1.0f;
  kern_dropout d = kern_dropout_make(0.5f, 42);
  dropout_forward(x, N, &d);
  size_t kept = 0;
  for (size_t i = 0; i < N; i++) {
    assert_true(x[i] == 0.0f || x[i] == 2.0f); /* inverted: kept values scale by 1/(1-p) */
    kept += x[i] != 0.0f;
  }
  assert_true(kept > 49000 && kept < 51000);
  /* backward regenerates the same mask */
  dropout_backward(dx, ones, N, &d);
  for (size_t i = 0; i < N; i++) assert_true(dx[i] == x[i]);
  /* a different key gives a different mask; p = 0 is the identity */
  kern_dropout d2 = kern_dropout_make(0.5f, 43), d0 = kern_dropout_make(0.0f, 42);
  size_t same = 0;
  for (size_t i = 0; i < 1000; i++)
    same += kern_dropout_factor(&d2, i) == kern_dropout_factor(&d, i);
  assert_true(same < 600);
  float y = 3.0f;
  dropout_forward(&y, 1, &d0);
  assert_true(y == 3.0f);
  /* residual: out = res + dropout(x) */
  float res[4] = {1, 2, 3, 4}, xx[4] = {1, 1, 1, 1}, out[4];
  residual_dropout_forward(out, res, xx, 4, &d);
  for (size_t i = 0; i < 4; i++) assert_true(out[i] == res[i] + kern_dropout_factor(&d, i));
  free(x), free(dx), free(ones);
}

/* ---- cross-entropy ---- */

typedef struct {
  float *logits, *work, *losses;
  int32_t *tgt;
  size_t B, NI;
} ce_ctx;

static double ce_loss(void *p) {
  ce_ctx *c = p;
  memcpy(c->work, c->logits, c->B * c->NI * sizeof(float));
  return crossentropy_forward(c->work, c->losses, c->tgt, c->B, c->NI);
}

static void test_crossentropy(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 7);
  size_t B = 3, NI = 11;
  int32_t tgt[] = {1, 11, 5};
  ce_ctx c = {vec(B * NI, &r, 2), vec(B * NI, NULL, 0), vec(B, NULL, 0), tgt, B, NI};
  double l = ce_loss(&c);
  /* value: mean of logsumexp - logit[target], in double */
  double ref = 0.0;
  for (size_t b = 0; b < B; b++) {
    double mx = -1e30, s = 0.0;
    for (size_t i = 0; i < NI; i++) mx = fmax(mx, c.logits[b * NI + i]);
    for (size_t i = 0; i < NI; i++) s += exp(c.logits[b * NI + i] - mx);
    ref += log(s) + mx - c.logits[b * NI + tgt[b] - 1];
  }
  assert_float_equal(l, ref / B, 1e-5);
  crossentropy_backward(c.work, tgt, B, NI, 1.0f / B);
  float *d = xmalloc(B * NI * sizeof(float));
  memcpy(d, c.work, B * NI * sizeof(float));
  assert_int_equal(gc_check("logits", c.logits, B * NI, d, ce_loss, &c, 1000, 1e-2, 1e-3, 1e-2), 0);
  free(c.logits), free(c.work), free(c.losses), free(d);
}

int test_kernels(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matmul_blas_vs_ref),
      cmocka_unit_test(test_embedding),
      cmocka_unit_test(test_layernorm),
      cmocka_unit_test(test_linear),
      cmocka_unit_test(test_attention_full),
      cmocka_unit_test(test_attention_last),
      cmocka_unit_test(test_attention_padded),
      cmocka_unit_test(test_attention_dropout),
      cmocka_unit_test(test_attention_last_equals_full),
      cmocka_unit_test(test_attention_tiled),
      cmocka_unit_test(test_attention_tiled_last),
      cmocka_unit_test(test_attention_blockdiag),
      cmocka_unit_test(test_attention_head32),
      cmocka_unit_test(test_attention_masks_by_hand),
      cmocka_unit_test(test_gelu),
      cmocka_unit_test(test_fast_exp_erf),
      cmocka_unit_test(test_dropout),
      cmocka_unit_test(test_crossentropy),
  };
  return cmocka_run_group_tests_name("model/kernels", tests, NULL, NULL);
}
