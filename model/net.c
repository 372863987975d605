/* model/net.c: what every network has whatever its backbone (model/internal.h): the
 * hyper-parameters, the backbone registry, the one parameter block and its views, the
 * activations' common part, the dropout keys and Adam.
 *
 * Parameters, gradients and Adam moments are three blocks with one layout (the backbone's
 * tensor table, model_tensor_sizes); Adam is one flat loop and a checkpoint one write. */
#include "common/common.h"
#include "model/internal.h"
#include "model/model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- backbones ---- */

static const net_backbone *const net_backbones[MODEL_NBACKBONES] = {
    [MODEL_BACKBONE_SASREC] = &net_sasrec,
};

const net_backbone *net_backbone_of(const model_hparams *hp) {
  return hp->backbone < MODEL_NBACKBONES ? net_backbones[hp->backbone] : NULL;
}

const char *model_backbone_name(uint32_t id) {
  return id < MODEL_NBACKBONES ? net_backbones[id]->name : NULL;
}

int model_backbone_parse(const char *s, uint32_t *id) {
  for (uint32_t i = 0; i < MODEL_NBACKBONES; i++)
    if (strcmp(s, net_backbones[i]->name) == 0) {
      *id = i;
      return 0;
    }
  return FL_ERANGE;
}

/* ---- hyper-parameters and the parameter block ---- */

void model_hparams_default(model_hparams *hp) {
  hp->C = 64;
  hp->NL = 2;
  hp->NH = 2;
  hp->FF = 256;
  hp->L = 50;
  hp->dropout = 0.5f;
  hp->ln_eps = 1e-12f;
  hp->backbone = MODEL_BACKBONE_SASREC;
}

int model_hparams_check(const model_hparams *hp) {
  const net_backbone *bb = net_backbone_of(hp);
  if (!bb) return FL_ERANGE;
  if (hp->C == 0 || hp->C > 4096 || hp->NH == 0 || hp->C % hp->NH != 0) return FL_ERANGE;
  if (hp->NL == 0 || hp->NL > 64 || hp->FF == 0 || hp->FF > 65536) return FL_ERANGE;
  if (hp->L == 0 || hp->L > 4096) return FL_ERANGE;
  if (!(hp->dropout >= 0.0f && hp->dropout < 1.0f)) return FL_ERANGE;
  if (!(hp->ln_eps >= 0.0f && hp->ln_eps < 1.0f)) return FL_ERANGE;
  return bb->check ? bb->check(hp) : 0;
}

size_t model_ntensors(const model_hparams *hp) {
  const net_backbone *bb = net_backbone_of(hp);
  return bb ? bb->ntensors : 0;
}

size_t model_tensor_sizes(const model_hparams *hp, size_t NI, size_t s[MODEL_MAX_TENSORS]) {
  const net_backbone *bb = net_backbone_of(hp);
  return bb ? bb->tensor_sizes(hp, NI, s) : 0;
}

const char *model_tensor_name(const model_hparams *hp, size_t i) {
  const net_backbone *bb = net_backbone_of(hp);
  return bb && i < bb->ntensors && bb->names[i] ? bb->names[i] : "?";
}

static void model_views(model_tensors *v, float *block, const model_hparams *hp, size_t NI) {
  size_t s[MODEL_MAX_TENSORS];
  model_tensor_sizes(hp, NI, s);
  for (size_t i = 0; i < model_ntensors(hp); i++) {
    v->t[i] = block;
    block += s[i];
  }
}

int model_alloc(model_net *m, const model_hparams *hp, size_t NI) {
  int err = model_hparams_check(hp);
  if (err) return err;
  if (NI == 0 || NI > INT32_MAX - 1) return FL_ERANGE;
  memset(m, 0, sizeof *m);
  m->hp = *hp;
  m->NI = NI;
  size_t s[MODEL_MAX_TENSORS];
  m->nparams = model_tensor_sizes(hp, NI, s);
  m->ntensors = model_ntensors(hp);
  m->params = xalloc_aligned(m->nparams * sizeof(float));
  model_views(&m->p, m->params, hp, NI);
  m->last_only = 1;
  return 0;
}

int model_init(model_net *m, const model_hparams *hp, size_t NI, uint64_t seed) {
  int err = model_alloc(m, hp, NI);
  if (err) return err;
  m->seed = seed;
  fl_rng r;
  fl_rng_seed(&r, seed);
  net_backbone_of(hp)->init(m, &r);
  memset(model_items(m), 0, hp->C * sizeof(float)); /* padding row */
  return 0;
}

static void train_alloc(model_net *m, int zero) {
  if (m->grads) return;
  size_t n = m->nparams * sizeof(float);
  m->grads = fl_xalloc_aligned_at(n, zero, __FILE__, __LINE__);
  m->adam_m = fl_xalloc_aligned_at(n, zero, __FILE__, __LINE__);
  m->adam_v = fl_xalloc_aligned_at(n, zero, __FILE__, __LINE__);
  model_views(&m->g, m->grads, &m->hp, m->NI);
}

void model_train_alloc(model_net *m) { train_alloc(m, 1); }

void model_train_alloc_uninit(model_net *m) { train_alloc(m, 0); }

void model_free(model_net *m) {
  free(m->params);
  free(m->grads);
  free(m->adam_m);
  free(m->adam_v);
  memset(m, 0, sizeof *m);
}

void model_set_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }

/* ---- activations ---- */

/* Activations are always written before they are read: no need to clear them. */
static float *acts_falloc(model_acts *a, size_t n) {
  a->bytes += n * sizeof(float);
  return xalloc_aligned_uninit(n * sizeof(float));
}

model_acts *net_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax, size_t nseg) {
  model_acts *a = xcalloc(1, sizeof *a);
  size_t Bq = Bmax * nseg;
  a->bb = net_backbone_of(hp);
  a->Bmax = Bmax;
  a->nseg = nseg;
  a->enc = a->bb->acts_new(hp, Bmax, Tmax, nseg, &a->bytes);
  a->h = acts_falloc(a, Bq * hp->C);
  a->dh = acts_falloc(a, Bq * hp->C);
  a->losses = acts_falloc(a, Bmax);
  a->col1 = xmalloc(Bmax * sizeof(int32_t));
  a->bytes += Bmax * sizeof(int32_t);
  for (size_t b = 0; b < Bmax; b++) a->col1[b] = 1;
  return a;
}

model_acts *model_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax) {
  return net_acts_new(hp, Bmax, Tmax, 1);
}

void model_acts_free(model_acts *a) {
  if (!a) return;
  a->bb->acts_free(a->enc);
  void *bufs[] = {a->h, a->dh, a->logits, a->col1, a->negE, a->losses};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  free(a);
}

const float *model_acts_h(const model_acts *a) { return a->h; }

size_t model_acts_bytes(const model_acts *a) { return a->bytes; }

uint64_t net_key(const model_net *m, uint64_t salt) {
  /* the salt is mixed in, not XORed on: a pass keys its sites key + s, so keys of one step
   * that differed in low bits only would share sites' mask streams */
  return fl_hash64(fl_hash64(m->seed ^ fl_hash64(m->step + 0x5eed)) ^ salt);
}

int net_batch_padded(const model_batch *bt) {
  for (size_t t = 0; t < bt->T; t++)
    if (bt->tok[t] == 0) return 1;
  return 0;
}

/* ---- Adam ---- */

void model_zero_grad(model_net *m) { memset(m->grads, 0, m->nparams * sizeof(float)); }

/* Floats before the item table (the block's last tensor): the dense part. */
static size_t dense_floats(const model_net *m) { return (size_t)(model_items(m) - m->params); }

typedef struct {
  float step_size, rbc2;
} adam_k;

static adam_k adam_begin(model_net *m, float lr) {
  m->step++;
  double bc1 = 1.0 - pow(0.9, (double)m->step), bc2 = 1.0 - pow(0.999, (double)m->step);
  adam_k k = {(float)(lr / bc1), (float)(1.0 / sqrt(bc2))};
  return k;
}

/* Adam on floats [i0, i1) of the block. */
static void adam_range(model_net *m, adam_k k, size_t i0, size_t i1) {
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  float *p = m->params, *g = m->grads, *mm = m->adam_m, *vv = m->adam_v;
  for (size_t i = i0; i < i1; i++) {
    float gi = g[i];
    mm[i] = b1 * mm[i] + (1.0f - b1) * gi;
    vv[i] = b2 * vv[i] + (1.0f - b2) * gi * gi;
    p[i] -= k.step_size * mm[i] / (sqrtf(vv[i]) * k.rbc2 + eps);
  }
}

void model_adam_step(model_net *m, float lr) {
  /* Flat over the block. The padding row's gradient is always 0 (the embedding skips it, the
   * head uses rows 1..NI), so its moments stay 0 and it never moves. */
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

void model_adam_step_rows(model_net *m, float lr, const int32_t *rows, size_t n) {
  adam_k k = adam_begin(m, lr);
  size_t d = dense_floats(m), C = m->hp.C;
  adam_range(m, k, 0, d);
  for (size_t i = 0; i < n; i++)
    adam_range(m, k, d + (size_t)rows[i] * C, d + (size_t)(rows[i] + 1) * C);
}

void model_zero_grad_rows(model_net *m, const int32_t *rows, size_t n) {
  size_t d = dense_floats(m), C = m->hp.C;
  memset(m->grads, 0, d * sizeof(float));
  for (size_t i = 0; i < n; i++) memset(m->grads + d + (size_t)rows[i] * C, 0, C * sizeof(float));
}
