/* tests/model/test_ckpt.c: checkpoint round trip and refusal of damaged files.
 *
 * Every damaged file is made from a good checkpoint of a tiny model by cutting, flipping or
 * rewriting bytes (recomputing the header CRC where the point is to reach a later check),
 * and must be refused with the right code and a non-empty message, leaving the caller's
 * model untouched. */
#include "testutil.h"
#include "tiny.h"

#include "common/common.h"
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR 76u      /* header size of format version 1 */
#define OFF_VER 8u   /* u32 version */
#define OFF_C 16u    /* u32 C */
#define OFF_NI 44u   /* u64 NI */
#define OFF_NP 60u   /* u64 nparams */
#define OFF_HCRC 72u /* u32 header CRC over [0, 72) */

typedef struct {
  char dir[256];
  char path[300]; /* the good checkpoint */
  char bad[300];  /* scratch path for damaged copies */
  model_net m;    /* the saved model */
  unsigned char *good;
  size_t n;
} ckpt_fix;

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void fix_header_crc(unsigned char *b) { put_u32(b + OFF_HCRC, fl_crc32(0, b, OFF_HCRC)); }

static void write_bytes(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (n) assert_int_equal(fwrite(b, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static int setup(void **state) {
  ckpt_fix *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(tu_mkdtemp(f->dir, sizeof f->dir), 0);
  snprintf(f->path, sizeof f->path, "%s/ckpt.bin", f->dir);
  snprintf(f->bad, sizeof f->bad, "%s/bad.bin", f->dir);
  model_hparams hp;
  tiny_hparams(&hp, 1, 0.5f);
  assert_int_equal(model_init(&f->m, &hp, 20, 1234), 0);
  f->m.step = 0x123456789ull; /* above 2^32: checks the u64 field */
  assert_int_equal(ckpt_save(f->path, &f->m), 0);
  void *b;
  assert_int_equal(fl_read_file(f->path, &b, &f->n), 0);
  f->good = b;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  ckpt_fix *f = *state;
  model_free(&f->m);
  free(f->good);
  tu_rmtree(f->dir);
  free(f);
  return 0;
}

/* Loads path and expects code with a message; the output model must stay untouched. */
static void expect_refused(const char *path, int code) {
  model_net m;
  memset(&m, 0xAB, sizeof m);
  model_net before;
  memcpy(&before, &m, sizeof m); /* bytewise, padding included */
  char err[512] = "";
  int rc = ckpt_load(path, &m, err, sizeof err);
  if (rc != code) fprintf(stderr, "expected %d, got %d: %s\n", code, rc, err);
  assert_int_equal(rc, code);
  assert_true(strlen(err) > 0);
  assert_non_null(strstr(err, path)); /* the message names the file */
  assert_null(strchr(err, '\n'));     /* one line */
  assert_memory_equal(&m, &before, sizeof m);
}

/* Writes a copy of the good file with modifications applied by the caller. */
static unsigned char *copy_good(const ckpt_fix *f) {
  unsigned char *b = malloc(f->n + 16);
  assert_non_null(b);
  memcpy(b, f->good, f->n);
  return b;
}

static void test_round_trip(void **state) {
  ckpt_fix *f = *state;
  assert_int_equal(f->n, HDR + f->m.nparams * sizeof(float));
  assert_memory_equal(f->good, "FLAMECKP", 8);
  model_net m;
  char err[256] = "";
  assert_int_equal(ckpt_load(f->path, &m, err, sizeof err), 0);
  assert_int_equal(m.hp.C, f->m.hp.C);
  assert_int_equal(m.hp.NL, f->m.hp.NL);
  assert_int_equal(m.hp.NH, f->m.hp.NH);
  assert_int_equal(m.hp.FF, f->m.hp.FF);
  assert_int_equal(m.hp.L, f->m.hp.L);
  assert_memory_equal(&m.hp.dropout, &f->m.hp.dropout, sizeof(float));
  assert_memory_equal(&m.hp.ln_eps, &f->m.hp.ln_eps, sizeof(float));
  assert_int_equal(m.NI, 20);
  assert_int_equal(m.step, 0x123456789ull);
  assert_int_equal(m.nparams, f->m.nparams);
  assert_memory_equal(m.params, f->m.params, m.nparams * sizeof(float));
  /* The views point into the new block, tensor by tensor as in the saved model. */
  for (int t = 0; t < MODEL_NTENSORS; t++)
    assert_int_equal(m.p.t[t] - m.params, f->m.p.t[t] - f->m.params);
  assert_null(m.grads);
  assert_null(m.adam_m);

  /* Saving the loaded model gives the same bytes. */
  char again[300];
  snprintf(again, sizeof again, "%s/again.bin", f->dir);
  assert_int_equal(ckpt_save(again, &m), 0);
  void *b;
  size_t n;
  assert_int_equal(fl_read_file(again, &b, &n), 0);
  assert_int_equal(n, f->n);
  assert_memory_equal(b, f->good, n);
  free(b);
  model_free(&m);
}

static void test_save_overwrites(void **state) {
  ckpt_fix *f = *state;
  model_net m2;
  model_hparams hp;
  tiny_hparams(&hp, 1, 0.5f);
  hp.NL = 2;
  assert_int_equal(model_init(&m2, &hp, 7, 99), 0);
  char p[300];
  snprintf(p, sizeof p, "%s/over.bin", f->dir);
  assert_int_equal(ckpt_save(p, &f->m), 0);
  assert_int_equal(ckpt_save(p, &m2), 0);
  model_net m;
  char err[256];
  assert_int_equal(ckpt_load(p, &m, err, sizeof err), 0);
  assert_int_equal(m.hp.NL, 2);
  assert_int_equal(m.NI, 7);
  assert_memory_equal(m.params, m2.params, m2.nparams * sizeof(float));
  model_free(&m);
  model_free(&m2);
}

static void test_truncated(void **state) {
  ckpt_fix *f = *state;
  size_t cuts[] = {0, 4, 8, 40, HDR - 1, HDR, HDR + 1, HDR + 100, f->n / 2, f->n - 4, f->n - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
    write_bytes(f->bad, f->good, cuts[i]);
    expect_refused(f->bad, FL_ETRUNC);
  }
}

static void test_trailing_garbage(void **state) {
  ckpt_fix *f = *state;
  unsigned char *b = copy_good(f);
  memset(b + f->n, 0, 4);
  write_bytes(f->bad, b, f->n + 4);
  expect_refused(f->bad, FL_EFORMAT);
  free(b);
}

static void test_payload_flip(void **state) {
  ckpt_fix *f = *state;
  size_t at[] = {HDR, HDR + 123, f->n - 1};
  for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
    unsigned char *b = copy_good(f);
    b[at[i]] ^= 0x10;
    write_bytes(f->bad, b, f->n);
    expect_refused(f->bad, FL_ECHECKSUM);
    free(b);
  }
}

static void test_header_flip(void **state) {
  ckpt_fix *f = *state;
  /* Bytes past magic, version and header size, up to and including the header CRC. */
  size_t at[] = {OFF_C, 36, OFF_NI, 53, OFF_NP, 68, OFF_HCRC, HDR - 1};
  for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
    unsigned char *b = copy_good(f);
    b[at[i]] ^= 0x01;
    write_bytes(f->bad, b, f->n);
    expect_refused(f->bad, FL_ECHECKSUM);
    free(b);
  }
}

static void test_bad_magic(void **state) {
  ckpt_fix *f = *state;
  unsigned char *b = copy_good(f);
  memcpy(b, "FLAMECKQ", 8);
  write_bytes(f->bad, b, f->n);
  expect_refused(f->bad, FL_EMAGIC);
  write_bytes(f->bad, "hello", 5); /* short and foreign: foreign wins */
  expect_refused(f->bad, FL_EMAGIC);
  free(b);
}

static void test_bad_version(void **state) {
  ckpt_fix *f = *state;
  uint32_t versions[] = {0, 3, 0x01000000u};
  for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
    unsigned char *b = copy_good(f);
    put_u32(b + OFF_VER, versions[i]);
    fix_header_crc(b); /* a consistent file of another version */
    write_bytes(f->bad, b, f->n);
    expect_refused(f->bad, FL_EVERSION);
    free(b);
  }
}

/* The good (version 1, SASRec) file rewritten as version 2 with this backbone id: the v1
 * header up to the CRCs, the backbone, both CRCs recomputed, the same payload. */
static unsigned char *as_version2(const ckpt_fix *f, uint32_t backbone, size_t *n) {
  *n = f->n + 4;
  unsigned char *b = malloc(*n);
  assert_non_null(b);
  memcpy(b, f->good, 68);
  put_u32(b + OFF_VER, 2);
  put_u32(b + 12, HDR + 4);
  put_u32(b + 68, backbone);
  memcpy(b + HDR + 4, f->good + HDR, f->n - HDR);
  put_u32(b + 72, fl_crc32(0, b + HDR + 4, f->n - HDR));
  put_u32(b + 76, fl_crc32(0, b, 76));
  return b;
}

/* Checkpoints record the backbone: a version 1 file is SASRec's; version 2 names it, and a
 * backbone this build does not know is refused by name before any shape check. SASRec is
 * still written as version 1, byte for byte as before the backbone existed. */
static void test_backbone(void **state) {
  ckpt_fix *f = *state;
  assert_int_equal(f->good[OFF_VER], 1);
  model_net m;
  char err[512] = "";
  assert_int_equal(ckpt_load(f->path, &m, err, sizeof err), 0);
  assert_int_equal(m.hp.backbone, MODEL_BACKBONE_SASREC);
  model_free(&m);
  size_t n;
  unsigned char *b = as_version2(f, MODEL_BACKBONE_SASREC, &n);
  write_bytes(f->bad, b, n);
  assert_int_equal(ckpt_load(f->bad, &m, err, sizeof err), 0);
  assert_int_equal(m.hp.backbone, MODEL_BACKBONE_SASREC);
  assert_int_equal(m.nparams, f->m.nparams);
  assert_memory_equal(m.params, f->m.params, m.nparams * sizeof(float));
  model_free(&m);
  free(b);
  b = as_version2(f, 7, &n);
  write_bytes(f->bad, b, n);
  expect_refused(f->bad, FL_ERANGE);
  assert_int_equal(ckpt_load(f->bad, &m, err, sizeof err), FL_ERANGE);
  assert_non_null(strstr(err, "backbone 7"));
  assert_non_null(strstr(err, "sasrec"));
  free(b);
}

/* Headers with a valid CRC but contents that must still be refused. */
static void test_bad_fields(void **state) {
  ckpt_fix *f = *state;
  unsigned char *b = copy_good(f);
  put_u32(b + 12, HDR + 4); /* header size */
  fix_header_crc(b);
  write_bytes(f->bad, b, f->n);
  expect_refused(f->bad, FL_EFORMAT);

  memcpy(b, f->good, f->n);
  put_u32(b + OFF_C, 0); /* C = 0 */
  fix_header_crc(b);
  write_bytes(f->bad, b, f->n);
  expect_refused(f->bad, FL_ERANGE);

  memcpy(b, f->good, f->n);
  put_u64(b + OFF_NI, 0); /* no items */
  fix_header_crc(b);
  write_bytes(f->bad, b, f->n);
  expect_refused(f->bad, FL_ERANGE);

  memcpy(b, f->good, f->n);
  put_u64(b + OFF_NI, 1ull << 40);
  fix_header_crc(b);
  write_bytes(f->bad, b, f->n);
  expect_refused(f->bad, FL_ERANGE);

  memcpy(b, f->good, f->n);
  put_u64(b + OFF_NP, f->m.nparams - 1); /* disagrees with the shapes */
  fix_header_crc(b);
  write_bytes(f->bad, b, f->n - 4);
  expect_refused(f->bad, FL_ESHAPE);

  memcpy(b, f->good, f->n);
  put_u64(b + OFF_NI, 21); /* one more item than the payload holds: looks truncated */
  put_u64(b + OFF_NP, f->m.nparams + f->m.hp.C);
  fix_header_crc(b);
  write_bytes(f->bad, b, f->n);
  expect_refused(f->bad, FL_ETRUNC);
  free(b);
}

static void test_nan_param(void **state) {
  ckpt_fix *f = *state;
  float vals[] = {NAN, INFINITY, -INFINITY};
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
    model_net m;
    model_hparams hp;
    tiny_hparams(&hp, 1, 0.5f);
    assert_int_equal(model_init(&m, &hp, 20, 5), 0);
    m.p.t[MODEL_T_FCW][17] = vals[i];
    assert_int_equal(ckpt_save(f->bad, &m), 0); /* written as is, CRCs valid */
    expect_refused(f->bad, FL_ERANGE);
    model_free(&m);
  }
}

static void test_unreadable(void **state) {
  ckpt_fix *f = *state;
  char p[300];
  snprintf(p, sizeof p, "%s/does-not-exist.bin", f->dir);
  expect_refused(p, -ENOENT);
  expect_refused(f->dir, -EISDIR); /* a directory */
}

static void test_save_unwritable(void **state) {
  ckpt_fix *f = *state;
  char p[300];
  snprintf(p, sizeof p, "%s/no-such-dir/ckpt.bin", f->dir);
  assert_int_equal(ckpt_save(p, &f->m), -ENOENT);
}

/* A training state round-trips every field and block, and a damaged, foreign or mismatched
 * file is refused before a byte of the caller's model is written. */
static void test_state(void **state) {
  ckpt_fix *f = *state;
  model_net *m = &f->m;
  model_train_alloc(m);
  size_t np = m->nparams;
  for (size_t i = 0; i < np; i++) {
    m->adam_m[i] = (float)i * 1e-3f;
    m->adam_v[i] = (float)i * 1e-5f;
  }
  float *best = xmalloc(np * sizeof *best);
  for (size_t i = 0; i < np; i++) best[i] = -(float)i;
  train_state s = {.epoch = 7,
                   .since_best = 2,
                   .best_epoch = 5,
                   .best_step = 0x100000002ull,
                   .shuffles = 0xfedcba9876543210ull,
                   .cursor = 33,
                   .best_ndcg = 0.25,
                   .best_sec = 1.5,
                   .elapsed_sec = 2.5,
                   .last_loss = 3.25};
  s.val = (eval_metrics){.hr10 = 0.5, .ndcg10 = 0.125, .hr20 = 0.75, .ndcg20 = 0.25, .users = 9};
  for (int k = 0; k < TRAIN_NKEYS; k++) s.key[k] = 1000u + (uint64_t)k;
  s.key[TRAIN_KEY_LR] = 0x3a03126fu; /* 0.0005f */
  char p[300], err[512];
  snprintf(p, sizeof p, "%s/run.state", f->dir);
  assert_int_equal(ckpt_state_save(p, &s, m, best), 0);

  model_net n;
  model_hparams hp = m->hp;
  assert_int_equal(model_init(&n, &hp, m->NI, 99), 0);
  model_train_alloc(&n);
  float *nb = xcalloc(np, sizeof *nb);
  train_state t;
  memset(&t, 0, sizeof t);
  assert_int_equal(ckpt_state_load(p, s.key, &t, &n, nb, err, sizeof err), 0);
  assert_memory_equal(n.params, m->params, np * sizeof(float));
  assert_memory_equal(n.adam_m, m->adam_m, np * sizeof(float));
  assert_memory_equal(n.adam_v, m->adam_v, np * sizeof(float));
  assert_memory_equal(nb, best, np * sizeof(float));
  assert_memory_equal(&t, &s, sizeof s); /* every field (and no padding: the same memset) */
  assert_true(n.step == m->step);

  /* Refusals leave the model as it was: reinitialise it and compare after each. */
  float *before = xmalloc(np * sizeof *before);
  memset(n.params, 0, np * sizeof(float));
  memcpy(before, n.params, np * sizeof(float));
  uint64_t want[TRAIN_NKEYS];
  memcpy(want, s.key, sizeof want);
  want[TRAIN_KEY_LR] = 0x3a83126fu; /* 0.001f */
  assert_int_equal(ckpt_state_load(p, want, &t, &n, nb, err, sizeof err), FL_ESETTINGS);
  if (!strstr(err, "has lr 0.0005") || !strstr(err, "this one 0.001")) fail_msg("message: %s", err);
  assert_memory_equal(n.params, before, np * sizeof(float));

  void *b;
  size_t len;
  assert_int_equal(fl_read_file(p, &b, &len), 0);
  unsigned char *bytes = b;
  bytes[len / 2] ^= 0x10; /* a payload bit */
  write_bytes(f->bad, bytes, len);
  assert_int_equal(ckpt_state_load(f->bad, s.key, &t, &n, nb, err, sizeof err), FL_ECHECKSUM);
  bytes[len / 2] ^= 0x10;
  write_bytes(f->bad, bytes, len - 1);
  assert_int_equal(ckpt_state_load(f->bad, s.key, &t, &n, nb, err, sizeof err), FL_ETRUNC);
  assert_int_equal(ckpt_state_load(f->path, s.key, &t, &n, nb, err, sizeof err), FL_EMAGIC);
  put_u32(bytes + 8, 3);
  write_bytes(f->bad, bytes, len);
  assert_int_equal(ckpt_state_load(f->bad, s.key, &t, &n, nb, err, sizeof err), FL_EVERSION);
  assert_memory_equal(n.params, before, np * sizeof(float));

  /* A version-1 state (before the backbone was a setting: one key fewer) is SASRec's. */
  size_t kb = 16 + 8 * (size_t)TRAIN_KEY_BACKBONE; /* the backbone key's bytes */
  memmove(bytes + kb, bytes + kb + 8, len - kb - 8);
  size_t len1 = len - 8;
  put_u32(bytes + 8, 1);
  put_u32(bytes + 12, TRAIN_NKEYS - 1);
  put_u32(bytes + len1 - 4, fl_crc32(0, bytes, len1 - 4));
  write_bytes(f->bad, bytes, len1);
  assert_int_equal(ckpt_state_load(f->bad, s.key, &t, &n, nb, err, sizeof err), FL_ESETTINGS);
  assert_non_null(strstr(err, "backbone"));
  want[TRAIN_KEY_LR] = s.key[TRAIN_KEY_LR];
  want[TRAIN_KEY_BACKBONE] = MODEL_BACKBONE_SASREC;
  assert_int_equal(ckpt_state_load(f->bad, want, &t, &n, nb, err, sizeof err), 0);
  assert_memory_equal(n.adam_v, m->adam_v, np * sizeof(float));
  free(b);

  /* Another network (more items): refused on the parameter count. */
  model_net big;
  assert_int_equal(model_init(&big, &hp, m->NI + 1, 1), 0);
  model_train_alloc(&big);
  float *bb = xmalloc(big.nparams * sizeof *bb);
  assert_int_equal(ckpt_state_load(p, s.key, &t, &big, bb, err, sizeof err), FL_ESHAPE);
  snprintf(p, sizeof p, "%s/missing.state", f->dir);
  assert_int_equal(ckpt_state_load(p, s.key, &t, &n, nb, err, sizeof err), -ENOENT);
  free(bb);
  model_free(&big);
  free(before);
  free(nb);
  model_free(&n);
  free(best);
}

int test_ckpt(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_save_overwrites, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trailing_garbage, setup, teardown),
      cmocka_unit_test_setup_teardown(test_payload_flip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_header_flip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_fields, setup, teardown),
      cmocka_unit_test_setup_teardown(test_backbone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nan_param, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unreadable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_save_unwritable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state, setup, teardown),
  };
  return cmocka_run_group_tests_name("model/ckpt", tests, NULL, NULL);
}
