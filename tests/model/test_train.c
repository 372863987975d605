/* tests/model/test_train.c: the offline training loop (model/train.c): budgeted epochs, and
 * resumable runs (--state) that end bit for bit where an uninterrupted run ends. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"
#include "testutil.h"
#include "tiny.h"

typedef struct {
  char dir[256];
  char data[320], a[320], b[320], state[320];
  data_set ds;
} train_fixture;

/* A synthetic dataset with a sequential signal (200 users, 60 items). */
static int setup(void **state) {
  train_fixture *f = xcalloc(1, sizeof *f);
  if (tu_mkdtemp(f->dir, sizeof f->dir) != 0) {
    free(f);
    return -1;
  }
  snprintf(f->data, sizeof f->data, "%s/data.txt", f->dir);
  snprintf(f->a, sizeof f->a, "%s/a.ckpt", f->dir);
  snprintf(f->b, sizeof f->b, "%s/b.ckpt", f->dir);
  snprintf(f->state, sizeof f->state, "%s/run.state", f->dir);
  if (synth_write(f->data, 200, 60, 12, 3) != 0) return -1;
  tiny_load(f->data, &f->ds);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  train_fixture *f = *state;
  data_free(&f->ds);
  tu_rmtree(f->dir);
  free(f);
  return 0;
}

static void small_opts(train_opts *o) {
  train_opts_default(o);
  o->batch = 32;
  o->progress = 0;
}

static void l10_hparams(model_hparams *hp) {
  tiny_hparams(hp, 1, 0.5f);
  hp->L = 10;
}

/* --epoch-samples: at least the whole set is the default epoch, bit for bit; a smaller epoch
 * runs every epoch asked for, walks on through the shuffled order (64 samples an epoch still
 * learn the sequential signal after a few passes), and validates each time. */
static void test_train_epoch_samples(void **state) {
  train_fixture *f = *state;
  const data_set *ds = &f->ds;
  model_hparams hp;
  l10_hparams(&hp);
  train_opts o;
  small_opts(&o);
  o.epochs = 2;
  model_net a, b;
  train_result ra, rb;
  assert_int_equal(model_init(&a, &hp, ds->NI, 1), 0);
  assert_int_equal(model_init(&b, &hp, ds->NI, 1), 0);
  assert_int_equal(train_model(&a, NULL, NULL, ds, &o, &ra), 0);
  o.epoch_samples = 1u << 30;
  assert_int_equal(train_model(&b, NULL, NULL, ds, &o, &rb), 0);
  assert_int_equal(memcmp(a.params, b.params, a.nparams * sizeof(float)), 0);
  assert_true(ra.test.ndcg20 == rb.test.ndcg20);
  model_free(&b);

  data_sample *smp = NULL;
  size_t ns = data_train_samples(ds, &smp);
  free(smp);
  assert_true(ns > 640);
  assert_int_equal(model_init(&b, &hp, ds->NI, 1), 0);
  o.epoch_samples = 64;
  o.epochs = 3 * ns / 64;
  o.patience = o.epochs;
  assert_int_equal(train_model(&b, NULL, NULL, ds, &o, &rb), 0);
  assert_int_equal(rb.epochs_run, o.epochs);
  assert_true(rb.best_epoch > 1);
  if (!(rb.test.hr10 > 2 * ra.test.hr10 / 3))
    fail_msg("64-sample epochs: test HR@10 %.3f, 2 full epochs %.3f", rb.test.hr10, ra.test.hr10);
  model_free(&a);
  model_free(&b);
}

/* Trains a fresh model (seed 1) with o, an anchor given for FLAME; returns the result and
 * leaves the trained weights in *m (caller frees). */
static train_result run(const train_fixture *f, model_net *m, const model_net *anc,
                        const flame_opts *fo, const train_opts *o, int want) {
  model_hparams hp;
  l10_hparams(&hp);
  assert_int_equal(model_init(m, &hp, f->ds.NI, 1), 0);
  train_result r;
  assert_int_equal(train_model(m, anc, fo, &f->ds, o, &r), want);
  return r;
}

/* Same weights, same checkpoint file, same result as the uninterrupted run a. */
static void same_run(const train_fixture *f, const model_net *a, const train_result *ra,
                     const model_net *b, const train_result *rb) {
  assert_memory_equal(a->params, b->params, a->nparams * sizeof(float));
  assert_true(a->step == b->step);
  assert_true(tu_same_file(f->a, f->b));
  assert_int_equal(ra->best_epoch, rb->best_epoch);
  assert_int_equal(ra->epochs_run, rb->epochs_run);
  assert_memory_equal(&ra->val, &rb->val, sizeof ra->val);
  assert_memory_equal(&ra->test, &rb->test, sizeof ra->test);
  assert_true(ra->last_loss == rb->last_loss);
}

/* --state, SASRec with epochs of 2/3 of the samples (so stops fall inside a shuffled order,
 * and the order is reshuffled several times; dropout is on): 6 epochs in one go, or 2 + 2 + 2
 * with two resumes, end identical. */
static void test_train_resume_sasrec(void **state) {
  train_fixture *f = *state;
  data_sample *smp = NULL;
  size_t ns = data_train_samples(&f->ds, &smp);
  free(smp);
  train_opts o;
  small_opts(&o);
  o.epoch_samples = 2 * ns / 3 + 1;
  o.epochs = o.patience = 6;
  o.out = f->a;
  model_net a, b;
  train_result ra = run(f, &a, NULL, NULL, &o, 0), rb;
  assert_true(ra.best_epoch > 1);

  o.out = f->b;
  o.state = f->state;
  for (size_t stop = 2; stop <= 6; stop += 2) {
    o.epochs = stop;
    rb = run(f, &b, NULL, NULL, &o, 0);
    assert_int_equal(rb.resumed_epoch, stop - 2);
    assert_int_equal(rb.epochs_run, stop);
    if (stop < 6) model_free(&b);
  }
  same_run(f, &a, &ra, &b, &rb);
  model_free(&b);

  /* A finished run resumed again only evaluates its best weights. */
  rb = run(f, &b, NULL, NULL, &o, 0);
  assert_int_equal(rb.resumed_epoch, 6);
  same_run(f, &a, &ra, &b, &rb);
  model_free(&b);

  /* Another setting or other data is refused, and the state file is kept as it was. */
  void *before;
  size_t n;
  assert_int_equal(fl_read_file(f->state, &before, &n), 0);
  o.lr = 2e-3f;
  rb = run(f, &b, NULL, NULL, &o, FL_ESETTINGS);
  model_free(&b);
  o.lr = 1e-3f;
  data_set other;
  assert_int_equal(synth_write(f->b, 200, 60, 12, 4), 0);
  tiny_load(f->b, &other);
  model_hparams hp;
  l10_hparams(&hp);
  assert_int_equal(model_init(&b, &hp, f->ds.NI, 1), 0);
  assert_int_equal(train_model(&b, NULL, NULL, &other, &o, &rb), FL_ESETTINGS);
  model_free(&b);
  data_free(&other);
  void *after;
  size_t m;
  assert_int_equal(fl_read_file(f->state, &after, &m), 0);
  assert_true(n == m && memcmp(before, after, n) == 0);
  free(before);
  free(after);
  model_free(&a);
}

/* --state under FLAME (a random frozen anchor, the schedule over 4 epochs): 4 epochs in one
 * go, or 2 + 2, end identical; the anchor is part of the settings. */
static void test_train_resume_flame(void **state) {
  train_fixture *f = *state;
  model_hparams hp;
  l10_hparams(&hp);
  model_net anc;
  assert_int_equal(model_init(&anc, &hp, f->ds.NI, 7), 0);
  flame_opts fo;
  flame_opts_default(&fo);
  fo.R = 4;
  train_opts o;
  small_opts(&o);
  o.epochs = o.patience = 4;
  o.out = f->a;
  model_net a, b;
  train_result ra = run(f, &a, &anc, &fo, &o, 0), rb;

  o.out = f->b;
  o.state = f->state;
  o.epochs = 2;
  rb = run(f, &b, &anc, &fo, &o, 0);
  model_free(&b);
  o.epochs = 4;
  rb = run(f, &b, &anc, &fo, &o, 0);
  assert_int_equal(rb.resumed_epoch, 2);
  same_run(f, &a, &ra, &b, &rb);
  model_free(&b);

  anc.params[anc.nparams - 1] += 1.0f;
  rb = run(f, &b, &anc, &fo, &o, FL_ESETTINGS);
  model_free(&b);
  model_free(&a);
  model_free(&anc);
}

int test_train(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_train_epoch_samples, setup, teardown),
      cmocka_unit_test_setup_teardown(test_train_resume_sasrec, setup, teardown),
      cmocka_unit_test_setup_teardown(test_train_resume_flame, setup, teardown),
  };
  return cmocka_run_group_tests_name("model/train", tests, NULL, NULL);
}
