/* tests/model/tiny.h: the tiny model shape the model tests share. */
#ifndef FL_TEST_TINY_H
#define FL_TEST_TINY_H

#include "model/model.h"
#include "testutil.h"

/* C = 16, NH = 2 (HS = 8), FF = 32, L = 8; NL blocks and the dropout as given. */
static inline void tiny_hparams(model_hparams *hp, uint32_t NL, float dropout) {
  model_hparams_default(hp);
  hp->C = 16;
  hp->NL = NL;
  hp->NH = 2;
  hp->FF = 32;
  hp->L = 8;
  hp->dropout = dropout;
}

/* Loads a dataset, failing the test with data_load's message. */
static inline void tiny_load(const char *path, data_set *ds) {
  char err[512];
  int rc = data_load(path, ds, err, sizeof err);
  if (rc != 0) fail_msg("data_load: %d %s", rc, err);
}

#endif
