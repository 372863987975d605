/* daemon/train/anchor.c: the frozen anchor the rounds train against (set, imported with its
 * rows mapped to state items, re-anchored from the serving network) and the serving snapshots
 * the trainer makes from networks. */
#define _GNU_SOURCE
#include "daemon/train/internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A new anchor version: above every one the dir has had. */
uint64_t train__next_anchor_version(trainer *t) {
  if (t->st.anchor_version > t->anchor_top) t->anchor_top = t->st.anchor_version;
  return ++t->anchor_top;
}

int train__same_shape(const model_hparams *a, const model_hparams *b) {
  return a->backbone == b->backbone && a->C == b->C && a->NL == b->NL && a->NH == b->NH &&
         a->FF == b->FF && a->L == b->L;
}

void train__set_anchor(trainer *t, model_net *m, const uint8_t *known) {
  if (t->has_anchor) model_free(&t->anchor);
  free(t->known);
  t->anchor = *m;
  memset(m, 0, sizeof *m);
  t->known = xmalloc(t->anchor.NI + 1);
  if (known)
    memcpy(t->known, known, t->anchor.NI + 1);
  else
    memset(t->known, 1, t->anchor.NI + 1);
  t->known[0] = 0;
  t->has_anchor = 1;
  if (t->baseline) /* the online baseline follows the anchor (version 0: never served) */
    serve_slot_set_base(t->slot, train__snapshot_of(t, &t->anchor, 0, NULL, 0));
}

/* Maps an imported anchor's rows to state indices through the id template, interning its
 * catalogue in the state (main thread, before the consumer exists). */
int train__map_anchor(trainer *t, model_net *a, const char *tmpl, char *err, size_t errlen) {
  state_batch *b = state_batch_new(t->db);
  if (!b) {
    snprintf(err, errlen, "the state has a batch open");
    return FL_ERANGE;
  }
  const char *brace = strstr(tmpl, "{}");
  size_t pre = (size_t)(brace - tmpl);
  uint32_t *idx = xmalloc((a->NI + 1) * sizeof *idx);
  uint32_t top = state_item_count(t->db);
  int rc = 0;
  for (size_t i = 1; i <= a->NI && rc == 0; i++) {
    char id[STATE_ID_MAX + 32];
    int n = snprintf(id, sizeof id, "%.*s%zu%s", (int)pre, tmpl, i, brace + 2);
    int64_t x = n > 0 && n <= STATE_ID_MAX ? state_batch_item(b, id, (size_t)n) : FL_ERANGE;
    if (x < 0) {
      snprintf(err, errlen, "anchor row %zu: item id '%s' is not a valid id", i, id);
      rc = FL_ERANGE;
    } else {
      idx[i] = (uint32_t)x;
      if (idx[i] > top) top = idx[i];
    }
  }
  if (rc == 0 && (rc = state_batch_commit(b, err, errlen)) == 0) {
    size_t C = a->hp.C;
    model_net m;
    model_grow(&m, a, top, t->seed); /* the non-item tensors; item rows rewritten below */
    uint8_t *known = xcalloc(top + 1, 1);
    float *rows = model_items(&m);
    for (size_t i = 1; i <= a->NI; i++) {
      memcpy(rows + (size_t)idx[i] * C, model_items(a) + i * C, C * sizeof(float));
      known[idx[i]] = 1;
    }
    memset(rows, 0, C * sizeof(float)); /* padding */
    size_t nk = 0;
    for (size_t i = 1; i <= top; i++) nk += known[i];
    train__set_anchor(t, &m, known);
    free(known);
    fl_info("anchor: %zu item rows mapped to state items through '%s' (%zu state items, %zu of "
            "them unknown to the anchor)",
            a->NI, tmpl, (size_t)top, (size_t)top - nk);
  }
  free(idx);
  state_batch_free(b);
  return rc;
}

/* A snapshot of *m's parameters, which it takes over (*m is left empty). */
serve_model *train__snapshot_take(trainer *t, model_net *m, uint64_t version, const uint32_t *pop,
                                  size_t npop) {
  serve_model *s = serve_model_new(version, m, pop, npop);
  s->anchor_version = t->st.anchor_version;
  s->trained_at_ms = fl_wall_ms();
  return s;
}

serve_model *train__snapshot_of(trainer *t, const model_net *src, uint64_t version,
                                const uint32_t *pop, size_t npop) {
  model_net m;
  model_copy_params(&m, src);
  return train__snapshot_take(t, &m, version, pop, npop);
}

/* The network of snapshot s becomes the frozen anchor, a new anchor version written to the
 * dir (a failed write is logged; the anchor then holds until restart). Returns its version. */
uint64_t train__anchor_from(trainer *t, const serve_model *s) {
  model_net m;
  model_copy_params(&m, &s->m);
  train__set_anchor(t, &m, NULL);
  t->since_anchor = 0;
  uint64_t v = train__next_anchor_version(t);
  int rc = train__save_anchor(t, v);
  pthread_mutex_lock(&t->mu); /* the loop reads the stats */
  t->st.anchor_version = v;
  pthread_mutex_unlock(&t->mu);
  if (rc != 0)
    fl_error("anchor: cannot write anchor version %" PRIu64 " to %s: %s (it holds until restart)",
             v, t->dir, fl_strerror(rc));
  return v;
}

void train__reanchor(trainer *t) {
  serve_model *cur = serve_slot_get(t->slot);
  if (!cur || !cur->has_net) {
    fl_warn("re-anchor: no model is serving yet; nothing changed");
    serve_model_unref(cur);
    return;
  }
  uint64_t v = train__anchor_from(t, cur);
  pthread_mutex_lock(&t->mu);
  t->st.reanchors++;
  pthread_mutex_unlock(&t->mu);
  fl_info("re-anchor: serving version %" PRIu64 " is now anchor version %" PRIu64, cur->version, v);
  serve_model_unref(cur);
}
