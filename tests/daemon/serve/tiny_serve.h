/* tests/daemon/serve/tiny_serve.h: the tiny serving snapshot the daemon tests share. */
#ifndef FL_TEST_TINY_SERVE_H
#define FL_TEST_TINY_SERVE_H

#include "daemon/serve/serve.h"
#include "testutil.h"

/* A network of C = 16, 1 block, L = 6 over ni items (weights from seed), version 3, and a
 * popularity list 5, 9, 1, 2, 3, 4, 6, 7. */
static inline serve_model *tiny_snapshot_of(size_t ni, uint64_t seed) {
  model_hparams hp;
  model_hparams_default(&hp);
  hp.C = 16;
  hp.NL = 1;
  hp.FF = 32;
  hp.L = 6;
  model_net m;
  assert_int_equal(model_init(&m, &hp, ni, seed), 0);
  uint32_t pop[] = {5, 9, 1, 2, 3, 4, 6, 7};
  return serve_model_new(3, &m, pop, 8);
}

#endif
