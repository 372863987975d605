/* model/flame.c: FLAME training steps (docs/FLAME.md section 2).
 *
 * One step on a packed batch:
 *   1. the plain pass of the learnable network: cross-entropy over the catalogue;
 *   2. the learnable and the anchor embeddings of the same samples (fresh dropout masks),
 *      concatenated per sample into two segments [Xl; Xf];
 *   3. both encoders on the concatenation under the 2x2 tiled mask: the learnable encoder's
 *      last positions are z_ll (first segment) and z_fl (second), the anchor's z_lf and z_ff;
 *   4. the six NT-Xent pair losses, weighted by the softmax of their negative mean
 *      similarity, times lambda;
 *   5. backward: the anchor encoder gives input gradients only (no weight-gradient GEMMs, no
 *      optimizer state); the gradient of the concatenation's first segment flows into the
 *      learnable embedding; the second segment's (the anchor's embedding) is dropped.
 * The weights w are computed first from the similarities (cheap), so each pair's NT-Xent
 * runs forward and backward in one go; the gradient through w (unless detached) needs every
 * pair's loss and is added afterwards. */
#include "common/common.h"
#include "kernels.h"
#include "model.h"
#include "net.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void flame_opts_default(flame_opts *o) {
  o->tau = 1.0f;
  o->lambda0 = 1.0f;
  o->lambdaR = 1e-5f;
  o->R = 200;
  o->blockdiag = 0;
  o->detach_w = 0;
  o->warm_start = 0;
}

float flame_lambda(const flame_opts *o, double e) {
  return (float)(o->lambda0 * pow((double)o->lambdaR / o->lambda0, e / (double)o->R));
}

/* ---- NT-Xent ---- */

size_t flame_ntxent_scratch(size_t B, size_t C) { return 4 * B * C + 4 * B * B; }

float flame_ntxent(const float *a, const float *b, size_t B, size_t C, float tau, float *sim,
                   float g, float *da, float *db, float *scratch) {
  size_t N = 2 * B;
  float *Z = scratch, *S = Z + N * C, *dZ = S + N * N;
  memcpy(Z, a, B * C * sizeof(float));
  memcpy(Z + B * C, b, B * C * sizeof(float));
  /* S (N, N) = Z Z^T / tau, the diagonal replaced by -10000 (a sample is not its own
   * positive); the positive of row r is the same sequence in the other half. */
  model_matmul(S, N, Z, C, 0, Z, C, 1, N, N, C, 1.0f / tau, 0.0f);
  double loss = 0.0;
  for (size_t r = 0; r < N; r++) {
    float *row = S + r * N;
    size_t pos = r < B ? r + B : r - B;
    row[r] = -10000.0f;
    float mx = -INFINITY;
    for (size_t c = 0; c < N; c++) mx = row[c] > mx ? row[c] : mx;
    float spos = row[pos];
    for (size_t c = 0; c < N; c++) row[c] = kern_expf(row[c] - mx);
    double sum = 0.0;
    for (size_t c = 0; c < N; c++) sum += row[c];
    loss += (double)mx + log(sum) - (double)spos;
    if (!da) continue;
    /* dL/dS[r, c] = g (softmax - onehot(pos)) / N; the diagonal is a constant */
    float k = g / (float)N, inv = (float)(1.0 / sum);
    for (size_t c = 0; c < N; c++) row[c] *= inv * k;
    row[pos] -= k;
    row[r] = 0.0f;
  }
  if (sim) {
    double s = 0.0;
    for (size_t i = 0; i < B; i++) s += kern_dot(a + i * C, b + i * C, C);
    *sim = (float)(s / (double)B);
  }
  if (da) {
    /* S = Z Z^T / tau  =>  dZ = (dS + dS^T) Z / tau */
    model_matmul(dZ, C, S, N, 0, Z, C, 0, N, C, N, 1.0f / tau, 0.0f);
    model_matmul(dZ, C, S, N, 1, Z, C, 0, N, C, N, 1.0f / tau, 1.0f);
    for (size_t i = 0; i < B * C; i++) {
      da[i] += dZ[i];
      db[i] += dZ[B * C + i];
    }
  }
  return (float)(loss / (double)N);
}

/* ---- the step ---- */

struct flame_ws {
  size_t Bmax, L, C;
  model_acts *plain; /* the learnable network's plain pass */
  model_acts *emb_l; /* the learnable embedding of the concatenation */
  model_acts *emb_a; /* the anchor's embedding */
  model_acts *enc_l; /* the learnable encoder on the concatenation */
  model_acts *enc_a; /* the anchor encoder on the concatenation */
  float *xc;         /* (2 Bmax L, C) the concatenation */
  size_t *off2;      /* (Bmax + 1) its sample offsets */
  int32_t *tok2;     /* (2 Bmax L) its tokens (for explicit padding) */
  float *z, *dz;     /* (4, Bmax, C) z_ll, z_fl, z_lf, z_ff and their gradients */
  float *dhl, *dha;  /* (2 Bmax, C) gradients at the encoders' last positions */
  float *dxl;        /* (Bmax L, C) gradient of the learnable embedding */
  float *scratch;    /* flame_ntxent_scratch */
  size_t bytes;      /* allocated outside the model_acts */
};

/* Every workspace buffer goes through here so flame_ws_bytes is what was allocated. */
static void *ws_alloc(flame_ws *ws, size_t bytes) {
  ws->bytes += bytes;
  return xalloc_aligned_uninit(bytes);
}

flame_ws *flame_ws_new(const model_hparams *hp, size_t Bmax) {
  flame_ws *ws = xcalloc(1, sizeof *ws);
  size_t L = hp->L, C = hp->C, F = sizeof(float);
  ws->Bmax = Bmax;
  ws->L = L;
  ws->C = C;
  ws->plain = model_acts_new(hp, Bmax, Bmax * L);
  ws->emb_l = model_acts_new(hp, Bmax, Bmax * L);
  ws->emb_a = model_acts_new(hp, Bmax, Bmax * L);
  ws->enc_l = net_acts_new(hp, Bmax, 2 * Bmax * L, 2);
  ws->enc_a = net_acts_new(hp, Bmax, 2 * Bmax * L, 2);
  ws->xc = ws_alloc(ws, 2 * Bmax * L * C * F);
  ws->off2 = ws_alloc(ws, (Bmax + 1) * sizeof(size_t));
  ws->tok2 = ws_alloc(ws, 2 * Bmax * L * sizeof(int32_t));
  ws->z = ws_alloc(ws, 4 * Bmax * C * F);
  ws->dz = ws_alloc(ws, 4 * Bmax * C * F);
  ws->dhl = ws_alloc(ws, 2 * Bmax * C * F);
  ws->dha = ws_alloc(ws, 2 * Bmax * C * F);
  ws->dxl = ws_alloc(ws, Bmax * L * C * F);
  ws->scratch = ws_alloc(ws, flame_ntxent_scratch(Bmax, C) * F);
  return ws;
}

size_t flame_ws_bytes(const flame_ws *ws) {
  return ws->bytes + model_acts_bytes(ws->plain) + model_acts_bytes(ws->emb_l) +
         model_acts_bytes(ws->emb_a) + model_acts_bytes(ws->enc_l) + model_acts_bytes(ws->enc_a);
}

void flame_ws_free(flame_ws *ws) {
  if (!ws) return;
  model_acts_free(ws->plain);
  model_acts_free(ws->emb_l);
  model_acts_free(ws->emb_a);
  model_acts_free(ws->enc_l);
  model_acts_free(ws->enc_a);
  void *bufs[] = {ws->xc,  ws->off2, ws->tok2, ws->z,      ws->dz,
                  ws->dhl, ws->dha,  ws->dxl,  ws->scratch};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  free(ws);
}

/* Dropout-key salts: the plain pass uses 0 (as model_forward does). */
enum { SALT_EMB_L = 1, SALT_EMB_A, SALT_ENC_L, SALT_ENC_A };

/* The six pairs of the four paths z_ll, z_fl, z_lf, z_ff. */
static const int pair_a[6] = {0, 0, 0, 1, 1, 2}, pair_b[6] = {1, 2, 3, 2, 3, 3};

float flame_step(model_sasrec *lrn, const model_sasrec *anc, flame_ws *ws, const model_batch *bt,
                 const flame_opts *o, float lambda, int train, flame_parts *parts) {
  size_t C = ws->C, B = bt->B, T = bt->T;
  assert(B <= ws->Bmax && lrn->grads && bt->tgt);
  assert(anc->hp.C == lrn->hp.C && anc->hp.NL == lrn->hp.NL && anc->hp.L == lrn->hp.L);

  /* 1. the plain pass */
  float rec = model_forward(lrn, ws->plain, bt, train);
  model_backward(lrn, ws->plain, bt);

  /* 2. both embeddings, concatenated per sample */
  const float *xl = net_embed_forward(lrn, ws->emb_l, bt, train, net_key(lrn, SALT_EMB_L));
  const float *xf = net_embed_forward(anc, ws->emb_a, bt, train, net_key(lrn, SALT_EMB_A));
  int has_pad = 0;
  for (size_t b = 0; b < B; b++) {
    size_t s = bt->off[b], n = bt->off[b + 1] - s;
    ws->off2[b] = 2 * s;
    memcpy(ws->xc + 2 * s * C, xl + s * C, n * C * sizeof(float));
    memcpy(ws->xc + (2 * s + n) * C, xf + s * C, n * C * sizeof(float));
    memcpy(ws->tok2 + 2 * s, bt->tok + s, n * sizeof(int32_t));
    memcpy(ws->tok2 + 2 * s + n, bt->tok + s, n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) has_pad |= bt->tok[s + i] == 0;
  }
  ws->off2[B] = 2 * T;
  net_layout lay = {B, 2, o->blockdiag, ws->off2, has_pad ? ws->tok2 : NULL};

  /* 3. both encoders: rows 2b and 2b + 1 of their outputs are the two segments' ends */
  const float *hl =
      net_encoder_forward(lrn, ws->enc_l, ws->xc, &lay, train, net_key(lrn, SALT_ENC_L));
  const float *ha =
      net_encoder_forward(anc, ws->enc_a, ws->xc, &lay, train, net_key(lrn, SALT_ENC_A));
  float *z[4], *dz[4];
  for (int p = 0; p < 4; p++) {
    z[p] = ws->z + (size_t)p * B * C;
    dz[p] = ws->dz + (size_t)p * B * C;
  }
  for (size_t b = 0; b < B; b++) {
    memcpy(z[0] + b * C, hl + 2 * b * C, C * sizeof(float));       /* ll */
    memcpy(z[1] + b * C, hl + (2 * b + 1) * C, C * sizeof(float)); /* fl */
    memcpy(z[2] + b * C, ha + 2 * b * C, C * sizeof(float));       /* lf */
    memcpy(z[3] + b * C, ha + (2 * b + 1) * C, C * sizeof(float)); /* ff */
  }
  memset(ws->dz, 0, 4 * B * C * sizeof(float));

  /* 4. weights from the similarities, then each pair forward and backward */
  float sim[6], w[6], lp[6], mx = -INFINITY, wsum = 0.0f;
  for (int p = 0; p < 6; p++) {
    double s = 0.0;
    for (size_t b = 0; b < B; b++) s += kern_dot(z[pair_a[p]] + b * C, z[pair_b[p]] + b * C, C);
    sim[p] = (float)(s / (double)B);
    mx = -sim[p] > mx ? -sim[p] : mx;
  }
  for (int p = 0; p < 6; p++) wsum += w[p] = expf(-sim[p] - mx);
  for (int p = 0; p < 6; p++) w[p] /= wsum;
  double pair_total = 0.0;
  for (int p = 0; p < 6; p++) {
    lp[p] = flame_ntxent(z[pair_a[p]], z[pair_b[p]], B, C, o->tau, NULL, lambda * w[p],
                         dz[pair_a[p]], dz[pair_b[p]], ws->scratch);
    pair_total += (double)w[p] * lp[p];
  }
  if (!o->detach_w) {
    /* L = sum_p w_p L_p, w = softmax(s), s_p = -mean_b a_b . b_b:
     * dL/ds_p = w_p (L_p - sum_q w_q L_q);  ds_p/da_b = -b_b / B */
    for (int p = 0; p < 6; p++) {
      float ds = lambda * w[p] * (lp[p] - (float)pair_total), k = -ds / (float)B;
      float *a = z[pair_a[p]], *b2 = z[pair_b[p]], *da = dz[pair_a[p]], *db = dz[pair_b[p]];
      for (size_t i = 0; i < B * C; i++) {
        da[i] += k * b2[i];
        db[i] += k * a[i];
      }
    }
  }

  /* 5. backward through both encoders and the learnable embedding */
  for (size_t b = 0; b < B; b++) {
    memcpy(ws->dhl + 2 * b * C, dz[0] + b * C, C * sizeof(float));
    memcpy(ws->dhl + (2 * b + 1) * C, dz[1] + b * C, C * sizeof(float));
    memcpy(ws->dha + 2 * b * C, dz[2] + b * C, C * sizeof(float));
    memcpy(ws->dha + (2 * b + 1) * C, dz[3] + b * C, C * sizeof(float));
  }
  const float *dxl_c = net_encoder_backward(lrn, &lrn->g, ws->enc_l, ws->dhl);
  const float *dxa_c = net_encoder_backward(anc, NULL, ws->enc_a, ws->dha);
  for (size_t b = 0; b < B; b++) {
    size_t s = bt->off[b], n = bt->off[b + 1] - s;
    const float *u = dxl_c + 2 * s * C, *v = dxa_c + 2 * s * C;
    float *d = ws->dxl + s * C;
    for (size_t i = 0; i < n * C; i++) d[i] = u[i] + v[i];
  }
  net_embed_backward(lrn, &lrn->g, ws->emb_l, ws->dxl, bt);

  if (parts) {
    parts->rec = rec;
    for (int p = 0; p < 6; p++) {
      parts->pair[p] = lp[p];
      parts->w[p] = w[p];
    }
  }
  return rec + lambda * (float)pair_total;
}

double flame_step_flops(const model_sasrec *lrn, const model_batch *b, const flame_opts *o) {
  double enc2 = net_encoder_flops(lrn, b, 2, o->blockdiag);
  double N = 2.0 * (double)b->B, C = lrn->hp.C;
  /* the plain step; the learnable encoder on the concatenation with weight gradients (3x
   * forward); the anchor's with input gradients only (2x); six NT-Xent pairs, each one
   * (N, N, C) product forward and two backward */
  return model_step_flops(lrn, b) + 3.0 * enc2 + 2.0 * enc2 + 6.0 * 3.0 * 2.0 * N * N * C;
}
