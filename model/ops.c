/* model/ops.c: operations on whole networks that the daemon's trainer needs and that only
 * model/ may do, because they rely on the parameter block's layout (model.h): the item
 * table is the block's last tensor, so a network with more items has the smaller one's block
 * as its prefix, and growing the catalogue, or carrying Adam's moments over to a grown
 * network, is one copy. Ownership of the blocks moves only through these functions. */
#include "common/common.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

/* Shapes come from a valid network: a failure is a programmer error (or out of memory). */
static void ops_alloc(model_net *dst, const model_hparams *hp, size_t NI) {
  if (model_alloc(dst, hp, NI) != 0) {
    fl_error("cannot allocate a model of %zu items", NI);
    abort();
  }
}

void model_grow(model_net *dst, const model_net *src, size_t NI, uint64_t seed) {
  ops_alloc(dst, &src->hp, NI);
  dst->seed = seed;
  memcpy(dst->params, src->params, src->nparams * sizeof(float)); /* the item table is last */
  /* Only the new rows are drawn: drawing the whole model first (model_init) cost a 1M-item
   * catalogue 64M normal draws, about 2 s of the trainer's CPU, every round. */
  fl_rng r;
  fl_rng_seed(&r, seed);
  float *item = model_items(dst);
  for (size_t j = (src->NI + 1) * src->hp.C; j < (NI + 1) * src->hp.C; j++)
    item[j] = 0.02f * fl_rng_normal(&r);
}

int model_params_finite(const model_net *m) {
  float acc = 0.0f;
  for (size_t i = 0; i < m->nparams; i++) acc += m->params[i] * 0.0f; /* NaN/inf poison it */
  return acc == 0.0f;
}

void model_copy_params(model_net *dst, const model_net *src) {
  ops_alloc(dst, &src->hp, src->NI);
  memcpy(dst->params, src->params, src->nparams * sizeof(float));
}

void model_take_params(model_net *dst, model_net *src) {
  *dst = *src;
  dst->grads = dst->adam_m = dst->adam_v = NULL;
  memset(&dst->g, 0, sizeof dst->g);
  src->params = NULL;
  memset(&src->p, 0, sizeof src->p);
}

void model_swap_moments(model_net *m, float **adam_m, float **adam_v) {
  float *x = m->adam_m, *y = m->adam_v;
  m->adam_m = *adam_m;
  m->adam_v = *adam_v;
  *adam_m = x;
  *adam_v = y;
}
