/* model/flame.c: FLAME training steps (docs/MODEL.md section 2).
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
#include "model/internal.h"
#include "model/model.h"

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
  o->per_block = 0;
  o->paths = 0;
}

float flame_lambda(const flame_opts *o, double e) {
  return (float)(o->lambda0 * pow((double)o->lambdaR / o->lambda0, e / (double)o->R));
}

/* ---- NT-Xent ---- */

/* mean_b a_b . b_b over B rows of C: the similarity behind a pair's weight. */
static float mean_dot(const float *a, const float *b, size_t B, size_t C) {
  double s = 0.0;
  for (size_t i = 0; i < B; i++) s += kern_dot(a + i * C, b + i * C, C);
  return (float)(s / (double)B);
}

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
  if (sim) *sim = mean_dot(a, b, B, C);
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

/* ---- the step ----
 *
 * Modules and stages. Stage 0 is the embedding layer; the paper's two modules make stage 1
 * the whole encoder, per-block modules make stage s block s - 1. A path picks a network for
 * every stage: bit s of its number is 0 for the learnable network, 1 for the anchor, so with
 * two modules paths 0..3 are ll, fl, lf, ff (embedding source first). Stage s runs each
 * network that some selected path takes there on the concatenation of the live prefixes
 * (the length-s path prefixes of the selected paths) under the tiled mask, which doubles the
 * segments; the last stage's last positions are the paths' representations. With all four
 * paths of the two-module case this is exactly the two encoder passes of docs/MODEL.md section 2.
 */

enum { MAX_STAGES = 8, MAX_PATHS = 1 << MAX_STAGES };

struct flame_ws {
  size_t Bmax, C, NL;
  size_t nstages;                 /* 2, or 1 + NL with per-block modules */
  model_acts *plain;              /* the learnable network's plain pass */
  model_acts *emb[2];             /* embedding passes: learnable (0), anchor (1) */
  model_acts *enc[MAX_STAGES][2]; /* stage s >= 1, network x */
  float *xin[MAX_STAGES];         /* stage s input (2^s Bmax L, C) */
  float *dxin[MAX_STAGES];        /* its gradient, summed over the networks */
  float *dout[MAX_STAGES][2];     /* gradient of network x's stage-s output */
  size_t *off[MAX_STAGES];        /* (Bmax + 1) sample offsets of stage s's input */
  int32_t *tok[MAX_STAGES];       /* its tokens (for explicit padding) */
  float *z, *dz;                  /* (2^nstages, Bmax, C) path representations */
  float *dxl;                     /* (Bmax L, C) gradient of the learnable embedding */
  float *scratch;                 /* flame_ntxent_scratch */
  size_t bytes;                   /* allocated outside the model_acts */
};

/* Every workspace buffer goes through here so flame_ws_bytes is what was allocated. */
static void *ws_alloc(flame_ws *ws, size_t bytes) {
  ws->bytes += bytes;
  return xalloc_aligned_uninit(bytes);
}

flame_ws *flame_ws_new(const model_hparams *hp, size_t Bmax, int per_block) {
  flame_ws *ws = xcalloc(1, sizeof *ws);
  size_t L = hp->L, C = hp->C, F = sizeof(float), T = Bmax * L;
  ws->Bmax = Bmax;

  ws->C = C;
  ws->NL = hp->NL;
  ws->nstages = per_block ? 1 + hp->NL : 2;
  assert(ws->nstages <= MAX_STAGES);
  ws->plain = model_acts_new(hp, Bmax, T);
  for (int x = 0; x < 2; x++) ws->emb[x] = model_acts_new(hp, Bmax, T);
  for (size_t st = 1; st < ws->nstages; st++) {
    size_t nseg = (size_t)1 << st, rows = nseg * T;
    for (int x = 0; x < 2; x++) {
      ws->enc[st][x] = net_acts_new(hp, Bmax, rows, nseg);
      /* the last stage's output gradient is (B * 2^s, C); inner stages' every row */
      ws->dout[st][x] = ws_alloc(ws, (st + 1 == ws->nstages ? nseg * Bmax : rows) * C * F);
    }
    ws->xin[st] = ws_alloc(ws, rows * C * F);
    ws->dxin[st] = ws_alloc(ws, rows * C * F);
    ws->off[st] = ws_alloc(ws, (Bmax + 1) * sizeof(size_t));
    ws->tok[st] = ws_alloc(ws, rows * sizeof(int32_t));
  }
  size_t P = (size_t)1 << ws->nstages;
  ws->z = ws_alloc(ws, P * Bmax * C * F);
  ws->dz = ws_alloc(ws, P * Bmax * C * F);
  ws->dxl = ws_alloc(ws, T * C * F);
  ws->scratch = ws_alloc(ws, flame_ntxent_scratch(Bmax, C) * F);
  return ws;
}

size_t flame_ws_bytes(const flame_ws *ws) {
  size_t n = ws->bytes + model_acts_bytes(ws->plain);
  for (int x = 0; x < 2; x++) n += model_acts_bytes(ws->emb[x]);
  for (size_t st = 1; st < ws->nstages; st++)
    for (int x = 0; x < 2; x++) n += model_acts_bytes(ws->enc[st][x]);
  return n;
}

void flame_ws_free(flame_ws *ws) {
  if (!ws) return;
  model_acts_free(ws->plain);
  for (int x = 0; x < 2; x++) model_acts_free(ws->emb[x]);
  for (size_t st = 1; st < ws->nstages; st++) {
    for (int x = 0; x < 2; x++) {
      model_acts_free(ws->enc[st][x]);
      free(ws->dout[st][x]);
    }
    free(ws->xin[st]);
    free(ws->dxin[st]);
    free(ws->off[st]);
    free(ws->tok[st]);
  }
  free(ws->z);
  free(ws->dz);
  free(ws->dxl);
  free(ws->scratch);
  free(ws);
}

/* Dropout-key salts: the plain pass uses 0 (as model_forward does). */
enum { SALT_EMB = 1, SALT_ENC = 3, SALT_PATHS = 99 };

/* The plan of one step: the selected paths and the live prefixes of every stage. */
typedef struct {
  size_t S;                           /* stages */
  size_t k;                           /* selected paths */
  int path[MAX_PATHS];                /* their numbers, ascending */
  size_t nseg[MAX_STAGES + 1];        /* live prefixes of length s (stage s's input segments) */
  int seg[MAX_STAGES + 1][MAX_PATHS]; /* those prefixes, ascending */
  int used[MAX_STAGES][2];            /* network x runs at stage s */
} flame_plan;

/* Index of prefix q among the live prefixes of length s. */
static size_t seg_index(const flame_plan *pl, size_t s, int q) {
  for (size_t j = 0; j < pl->nseg[s]; j++)
    if (pl->seg[s][j] == q) return j;
  assert(0 && "not a live prefix");
  return 0;
}

static void make_plan(flame_plan *pl, size_t S, size_t npaths, uint64_t key) {
  size_t P = (size_t)1 << S;
  memset(pl, 0, sizeof *pl);
  pl->S = S;
  int chosen[MAX_PATHS] = {0};
  if (npaths == 0 || npaths >= P) {
    for (size_t q = 0; q < P; q++) chosen[q] = 1;
  } else { /* a random subset: partial Fisher-Yates over the path numbers */
    int perm[MAX_PATHS];
    fl_rng r;
    fl_rng_seed(&r, key);
    for (size_t q = 0; q < P; q++) perm[q] = (int)q;
    for (size_t i = 0; i < npaths; i++) {
      size_t j = i + (size_t)fl_rng_below(&r, P - i);
      int t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
      chosen[perm[i]] = 1;
    }
  }
  for (size_t q = 0; q < P; q++)
    if (chosen[q]) pl->path[pl->k++] = (int)q;
  for (size_t s = 1; s <= S; s++) {
    int live[MAX_PATHS] = {0};
    for (size_t i = 0; i < pl->k; i++) live[pl->path[i] & ((1 << s) - 1)] = 1;
    for (int q = 0; q < (1 << s); q++)
      if (live[q]) pl->seg[s][pl->nseg[s]++] = q;
  }
  for (size_t i = 0; i < pl->k; i++)
    for (size_t s = 0; s < S; s++) pl->used[s][(pl->path[i] >> s) & 1] = 1;
}

/* Blocks of stage s >= 1. */
static void stage_blocks(const flame_ws *ws, size_t s, size_t *l0, size_t *l1) {
  *l0 = ws->nstages == 2 ? 0 : s - 1;
  *l1 = ws->nstages == 2 ? ws->NL : s;
}

float flame_step(model_net *lrn, const model_net *anc, flame_ws *ws, const model_batch *bt,
                 const flame_opts *o, float lambda, int train, flame_parts *parts) {
  size_t C = ws->C, B = bt->B, T = bt->T, S = ws->nstages;
  const model_net *net[2] = {lrn, anc};
  const model_tensors *grad[2] = {&lrn->g, NULL}; /* the anchor: input gradients only */
  assert(B <= ws->Bmax && lrn->grads && bt->tgt);
  assert(anc->hp.backbone == lrn->hp.backbone && anc->hp.C == lrn->hp.C &&
         anc->hp.NL == lrn->hp.NL && anc->hp.L == lrn->hp.L);
  assert(S == (o->per_block ? 1 + lrn->hp.NL : 2));
#ifndef NDEBUG
  for (size_t t = 0; t < T; t++) assert((size_t)bt->tok[t] <= anc->NI); /* the anchor's table */
#endif
  flame_plan pl;
  make_plan(&pl, S, o->paths, net_key(lrn, SALT_PATHS));
  double flops = model_step_flops(lrn, bt);

  /* the plain pass */
  float rec = model_forward(lrn, ws->plain, bt, train);
  model_backward(lrn, ws->plain, bt);

  /* stage 0: the embeddings the live prefixes of length 1 need */
  const float *emb[2] = {NULL, NULL};
  for (size_t j = 0; j < pl.nseg[1]; j++) {
    int x = pl.seg[1][j];
    emb[x] = net_embed_forward(net[x], ws->emb[x], bt, train, net_key(lrn, SALT_EMB + x));
  }
  int has_pad = net_batch_padded(bt);

  /* stages 1 .. S-1 on the concatenation of the live prefixes */
  const float *out[MAX_STAGES][2] = {{NULL}};
  for (size_t s = 1; s < S; s++) {
    size_t ns = pl.nseg[s], l0, l1;
    stage_blocks(ws, s, &l0, &l1);
    for (size_t b = 0; b < B; b++) {
      size_t o0 = bt->off[b], n = bt->off[b + 1] - o0;
      ws->off[s][b] = ns * o0;
      for (size_t j = 0; j < ns; j++) {
        int q = pl.seg[s][j];
        /* segment j = prefix q: its last stage's network x = top bit, from segment p */
        const float *src;
        if (s == 1) {
          src = emb[q] + o0 * C;
        } else {
          int x = (q >> (s - 1)) & 1, p = q & ((1 << (s - 1)) - 1);
          src = out[s - 1][x] + (pl.nseg[s - 1] * o0 + seg_index(&pl, s - 1, p) * n) * C;
        }
        memcpy(ws->xin[s] + (ns * o0 + j * n) * C, src, n * C * sizeof(float));
        memcpy(ws->tok[s] + ns * o0 + j * n, bt->tok + o0, n * sizeof(int32_t));
      }
    }
    ws->off[s][B] = ns * T;
    net_layout lay = {B, ns, o->blockdiag, ws->off[s], has_pad ? ws->tok[s] : NULL};
    for (int x = 0; x < 2; x++) {
      if (!pl.used[s][x]) continue;
      out[s][x] = net_blocks_forward(net[x], ws->enc[s][x], ws->xin[s], &lay, train,
                                     net_key(lrn, SALT_ENC + 2 * (s - 1) + (size_t)x), l0, l1);
      flops += (x ? 2.0 : 3.0) * net_encoder_flops(net[x], bt, ns, o->blockdiag, l0, l1);
    }
  }

  /* the paths' representations: the last stage's outputs are (B * nseg, C) */
  size_t k = pl.k, nl = pl.nseg[S - 1];
  float *z[MAX_PATHS], *dz[MAX_PATHS];
  for (size_t i = 0; i < k; i++) {
    int q = pl.path[i], x = (q >> (S - 1)) & 1;
    size_t j = seg_index(&pl, S - 1, q & ((1 << (S - 1)) - 1));
    z[i] = ws->z + i * B * C;
    dz[i] = ws->dz + i * B * C;
    for (size_t b = 0; b < B; b++)
      memcpy(z[i] + b * C, out[S - 1][x] + (b * nl + j) * C, C * sizeof(float));
  }
  memset(ws->dz, 0, k * B * C * sizeof(float));

  /* the pair losses: weights from the similarities, then each pair forward and backward */
  size_t np = k * (k - 1) / 2;
  float sim[MAX_PATHS * (MAX_PATHS - 1) / 2], w[MAX_PATHS * (MAX_PATHS - 1) / 2],
      lp[MAX_PATHS * (MAX_PATHS - 1) / 2];
  int pa[MAX_PATHS * (MAX_PATHS - 1) / 2], pb[MAX_PATHS * (MAX_PATHS - 1) / 2];
  float mx = -INFINITY, wsum = 0.0f;
  for (size_t i = 0, p = 0; i < k; i++) {
    for (size_t j = i + 1; j < k; j++, p++) {
      pa[p] = (int)i;
      pb[p] = (int)j;
      sim[p] = mean_dot(z[i], z[j], B, C);
      mx = -sim[p] > mx ? -sim[p] : mx;
    }
  }
  for (size_t p = 0; p < np; p++) wsum += w[p] = expf(-sim[p] - mx);
  double pair_total = 0.0;
  for (size_t p = 0; p < np; p++) {
    w[p] /= wsum;
    lp[p] = flame_ntxent(z[pa[p]], z[pb[p]], B, C, o->tau, NULL, lambda * w[p], dz[pa[p]],
                         dz[pb[p]], ws->scratch);
    pair_total += (double)w[p] * lp[p];
    flops += 6.0 * 4.0 * (double)(B * B) * (double)C; /* (2B)^2 C: one product forward, two back */
  }
  if (!o->detach_w) {
    /* L = sum_p w_p L_p, w = softmax(s), s_p = -mean_b a_b . b_b:
     * dL/ds_p = w_p (L_p - sum_q w_q L_q);  ds_p/da_b = -b_b / B */
    for (size_t p = 0; p < np; p++) {
      float ds = lambda * w[p] * (lp[p] - (float)pair_total), kk = -ds / (float)B;
      const float *a = z[pa[p]], *b2 = z[pb[p]];
      float *da = dz[pa[p]], *db = dz[pb[p]];
      for (size_t i = 0; i < B * C; i++) {
        da[i] += kk * b2[i];
        db[i] += kk * a[i];
      }
    }
  }

  /* backward, stage by stage: scatter the path gradients, then each stage's input gradient
   * to the outputs of the stage before (or, at stage 1, to the learnable embedding) */
  for (int x = 0; x < 2; x++)
    if (pl.used[S - 1][x]) memset(ws->dout[S - 1][x], 0, B * nl * C * sizeof(float));
  for (size_t i = 0; i < k; i++) {
    int q = pl.path[i], x = (q >> (S - 1)) & 1;
    size_t j = seg_index(&pl, S - 1, q & ((1 << (S - 1)) - 1));
    for (size_t b = 0; b < B; b++) {
      float *d = ws->dout[S - 1][x] + (b * nl + j) * C;
      for (size_t c = 0; c < C; c++) d[c] += dz[i][b * C + c];
    }
  }
  int emb_grad = 0;
  for (size_t s = S - 1; s >= 1; s--) {
    size_t ns = pl.nseg[s], rows = ns * T;
    memset(ws->dxin[s], 0, rows * C * sizeof(float));
    for (int x = 0; x < 2; x++) {
      if (!pl.used[s][x]) continue;
      const float *d = net_blocks_backward(net[x], grad[x], ws->enc[s][x], ws->dout[s][x]);
      for (size_t i = 0; i < rows * C; i++) ws->dxin[s][i] += d[i];
    }
    if (s > 1)
      for (int x = 0; x < 2; x++)
        if (pl.used[s - 1][x])
          memset(ws->dout[s - 1][x], 0, pl.nseg[s - 1] * T * C * sizeof(float));
    for (size_t b = 0; b < B; b++) {
      size_t o0 = bt->off[b], n = bt->off[b + 1] - o0;
      for (size_t j = 0; j < ns; j++) {
        int q = pl.seg[s][j];
        const float *src = ws->dxin[s] + (ns * o0 + j * n) * C;
        float *dst;
        if (s == 1) {
          if (q != 0) continue; /* the anchor's embedding is frozen */
          dst = ws->dxl + o0 * C;
          emb_grad = 1;
          memcpy(dst, src, n * C * sizeof(float));
          continue;
        }
        int x = (q >> (s - 1)) & 1, p = q & ((1 << (s - 1)) - 1);
        dst = ws->dout[s - 1][x] + (pl.nseg[s - 1] * o0 + seg_index(&pl, s - 1, p) * n) * C;
        for (size_t i = 0; i < n * C; i++) dst[i] += src[i];
      }
    }
  }
  if (emb_grad) net_embed_backward(lrn, &lrn->g, ws->emb[0], ws->dxl, bt);

  if (parts) {
    memset(parts, 0, sizeof *parts);
    parts->rec = rec;
    parts->npairs = np;
    for (size_t p = 0; p < np && p < FLAME_MAX_PAIRS; p++) {
      parts->pair[p] = lp[p];
      parts->w[p] = w[p];
    }
    parts->flops = flops;
  }
  return rec + lambda * (float)pair_total;
}
