/* model/eval.c: offline evaluation: leave-one-out full ranking, HR@{10,20} and NDCG@{10,20}.
 *
 * Design. Two protocols share one code path and differ only in which items count as the
 * user's history and what their scores become before ranking (model.h, docs/MODEL.md
 * section 4):
 *   default: history = the model's input window, scores set to -inf (torch_ref.py evaluate);
 *   flame:   history = every item before the target, scores set to 0 (the reference code).
 * The rank is the number of items scoring strictly above the target after that treatment, so
 * ties go in the target's favour, as in both references. A NaN target score ranks last (NI).
 *
 * eval_run reuses the training data path: a validation or test sample is just the sample
 * (user, end) with end = len - 2 or len - 1, packed by data_pack, so the input windows are
 * exactly those training uses. Users are scored in batches of EVAL_BATCH through one
 * activation block and one (B, NI) score buffer allocated up front. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/internal.h"
#include "model/model.h"

/* Contract (see model.h): target and every history id must be in 1..NI (programmer error
 * otherwise). Rank = #items scoring strictly above the target after the history treatment,
 * the target's own score read after it too (so a target inside its history is scored -inf or
 * 0, as in the references); NaN scores never count as above, a NaN target ranks NI. */
size_t eval_rank(float *scores, size_t NI, int32_t target, const int32_t *hist, size_t nhist,
                 eval_protocol proto) {
  assert(target >= 1 && (size_t)target <= NI);
  float fill = proto == EVAL_PROTOCOL_FLAME ? 0.0f : -INFINITY;
  for (size_t j = 0; j < nhist; j++) {
    assert(hist[j] >= 1 && (size_t)hist[j] <= NI);
    scores[hist[j] - 1] = fill;
  }
  float t = scores[target - 1];
  if (isnan(t)) return NI;
  size_t rank = 0;
  for (size_t i = 0; i < NI; i++) rank += scores[i] > t;
  return rank;
}

void eval_ranks_chunked(const model_net *m, const float *h, size_t B, const int32_t *tgt,
                        const int32_t *tok, const size_t *off, float *scratch, size_t *rank) {
  size_t C = m->hp.C, NI = m->NI;
  const float *E = model_items(m);
  float *t = xmalloc((B ? B : 1) * sizeof(float)); /* the targets' scores */
  for (size_t b = 0; b < B; b++) {
    assert(tgt[b] >= 1 && (size_t)tgt[b] <= NI);
    t[b] = kern_dot(h + b * C, E + (size_t)tgt[b] * C, C);
    rank[b] = 0;
    for (size_t x = off[b]; x < off[b + 1]; x++)
      if (tok[x] == tgt[b]) t[b] = -INFINITY;
  }
  for (size_t i0 = 1; i0 <= NI; i0 += EVAL_CHUNK) { /* items i0 .. i0 + w - 1 */
    size_t w = NI + 1 - i0 < EVAL_CHUNK ? NI + 1 - i0 : EVAL_CHUNK;
    model_matmul(scratch, w, h, C, 0, E + i0 * C, C, 1, B, w, C, 1.0f, 0.0f);
    for (size_t b = 0; b < B; b++) {
      const float *s = scratch + b * w;
      size_t above = 0;
      for (size_t i = 0; i < w; i++) above += s[i] > t[b];
      /* the target and each distinct history item are not ranked: take back their counts */
      for (size_t x = off[b]; x <= off[b + 1]; x++) {
        int32_t it = x < off[b + 1] ? tok[x] : tgt[b];
        if ((size_t)it < i0 || (size_t)it >= i0 + w) continue;
        size_t y = off[b];
        while (y < x && tok[y] != it) y++; /* y < x <= off[b + 1]: a history item */
        if (y == x) above -= s[(size_t)it - i0] > t[b];
      }
      rank[b] += above;
    }
  }
  for (size_t b = 0; b < B; b++)
    if (isnan(t[b])) rank[b] = NI;
  free(t);
}

void eval_add_rank(eval_metrics *m, size_t rank) {
  double gain = 1.0 / log2((double)rank + 2.0);
  if (rank < 10) {
    m->hr10 += 1.0;
    m->ndcg10 += gain;
  }
  if (rank < 20) {
    m->hr20 += 1.0;
    m->ndcg20 += gain;
  }
  m->users++;
}

/* Divides the sums by the user count; with no users the metrics stay 0. */
void eval_finish(eval_metrics *m) {
  if (m->users == 0) return;
  double n = (double)m->users;
  m->hr10 /= n;
  m->ndcg10 /= n;
  m->hr20 /= n;
  m->ndcg20 /= n;
}

/* Users per forward pass: large enough for the GEMMs to run at speed, small enough that the
 * (B, NI) score buffer stays modest (256 x 12k items = 12 MB). */
#define EVAL_BATCH 256

size_t eval_workspace_bytes(const model_net *m) {
  model_acts *a = model_acts_new(&m->hp, EVAL_BATCH, EVAL_BATCH * m->hp.L); /* pages untouched */
  size_t bytes = model_acts_bytes(a) + EVAL_BATCH * m->NI * sizeof(float);
  model_acts_free(a);
  return bytes;
}

/* Contract (see model.h): evaluates users with at least 3 items; m is only read (forward in
 * eval mode, no dropout). Returns 0 with *out filled, FL_ESHAPE if the dataset holds item ids
 * beyond the model's table (ds->NI > m->NI), FL_EEMPTY (and zeroed metrics) if no user has 3
 * items. Allocates one activation block and one score buffer for the whole run. */
int eval_run(const model_net *m, const data_set *ds, eval_protocol proto, eval_split split,
             eval_metrics *out) {
  memset(out, 0, sizeof *out);
  if (ds->NI > m->NI) return FL_ESHAPE;
  size_t L = m->hp.L, NI = m->NI, Bmax = EVAL_BATCH;
  size_t back = split == EVAL_VAL ? 2 : 1; /* the target is items[len - back] */

  data_sample *s = xmalloc(Bmax * sizeof *s);
  int32_t *tok = xmalloc(Bmax * L * sizeof *tok);
  size_t *off = xmalloc((Bmax + 1) * sizeof *off);
  int32_t *tgt = xmalloc(Bmax * sizeof *tgt);
  float *scores = xmalloc(Bmax * NI * sizeof *scores);
  model_acts *acts = model_acts_new(&m->hp, Bmax, Bmax * L);

  size_t u = 0;
  while (u < ds->nusers) {
    size_t B = 0;
    for (; u < ds->nusers && B < Bmax; u++) {
      size_t len = ds->off[u + 1] - ds->off[u];
      if (len < 3) continue;
      s[B].user = (uint32_t)u;
      s[B].end = (uint32_t)(len - back);
      B++;
    }
    if (B == 0) break;
    model_batch batch;
    data_pack(ds, s, B, L, 0, tok, off, tgt, &batch);
    batch.tgt = NULL; /* eval: representations only, no loss */
    model_forward(m, acts, &batch, 0);
    model_scores(m, model_acts_h(acts), B, scores);
    for (size_t b = 0; b < B; b++) {
      const int32_t *hist;
      size_t nhist;
      if (proto == EVAL_PROTOCOL_FLAME) {
        hist = ds->items + ds->off[s[b].user];
        nhist = s[b].end;
      } else {
        hist = tok + off[b];
        nhist = off[b + 1] - off[b];
      }
      eval_add_rank(out, eval_rank(scores + b * NI, NI, tgt[b], hist, nhist, proto));
    }
  }

  model_acts_free(acts);
  free(scores);
  free(tgt);
  free(off);
  free(tok);
  free(s);
  if (out->users == 0) return FL_EEMPTY;
  eval_finish(out);
  return 0;
}

/* Users per pass of eval_newest: the daemon's holdouts are a few hundred users. */
#define EVAL_NEWEST_BATCH 128

/* Contract (see model.h). Users are scored in batches of EVAL_NEWEST_BATCH through one
 * activation block, the catalogue in chunks (eval_ranks_chunked). */
eval_metrics eval_newest(const model_net *m, const data_set *ds, const uint32_t *users, size_t n) {
  eval_metrics r = {0};
  size_t B = EVAL_NEWEST_BATCH, L = m->hp.L;
  model_acts *a = model_acts_new(&m->hp, B, B * L);
  float *scores = xmalloc(B * EVAL_CHUNK * sizeof(float));
  int32_t *tok = xmalloc(B * L * sizeof(int32_t)), tgt[EVAL_NEWEST_BATCH];
  size_t *off = xmalloc((B + 1) * sizeof(size_t)), rank[EVAL_NEWEST_BATCH];
  for (size_t i = 0; i < n; i += B) {
    size_t nb = n - i < B ? n - i : B, T = 0, b = 0;
    off[0] = 0;
    for (size_t j = 0; j < nb; j++) {
      const int32_t *s = ds->items + ds->off[users[i + j]];
      size_t len = ds->off[users[i + j] + 1] - ds->off[users[i + j]], k = 0;
      for (size_t x = len - 1; x > 0 && k < L; x--) k += (size_t)s[x - 1] <= m->NI;
      if (k == 0 || (size_t)s[len - 1] > m->NI) { /* nothing the model knows: a miss */
        eval_add_rank(&r, SIZE_MAX); /* a miss at any cutoff, whatever the catalogue size */
        continue;
      }
      size_t w = T + k;
      for (size_t x = len - 1; x > 0 && w > T; x--)
        if ((size_t)s[x - 1] <= m->NI) tok[--w] = s[x - 1];
      T += k;
      tgt[b] = s[len - 1];
      off[++b] = T;
    }
    if (b == 0) continue;
    model_batch bt = {.B = b, .T = T, .tok = tok, .off = off, .tgt = NULL};
    model_forward(m, a, &bt, 0);
    eval_ranks_chunked(m, model_acts_h(a), b, tgt, tok, off, scores, rank);
    for (size_t j = 0; j < b; j++) eval_add_rank(&r, rank[j]);
  }
  eval_finish(&r);
  free(off);
  free(tok);
  free(scores);
  model_acts_free(a);
  return r;
}

int eval_protocol_parse(const char *s, eval_protocol *out) {
  if (s && strcmp(s, "default") == 0) {
    *out = EVAL_PROTOCOL_DEFAULT;
    return 0;
  }
  if (s && strcmp(s, "flame") == 0) {
    *out = EVAL_PROTOCOL_FLAME;
    return 0;
  }
  return FL_ERANGE;
}
