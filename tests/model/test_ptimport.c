/* tests/model/test_ptimport.c: the PyTorch-zip importer on archives built here.
 *
 * A tiny zip writer produces archives shaped like torch.save's: a prefix directory, a
 * compressed-looking data.pkl (never read), byteorder, data/<k> entries in the string order
 * PyTorch writes them (0, 1, 10, 11, ...), local headers with the data-descriptor flag, zero
 * sizes and a padding extra field (so local and central lengths differ), a trailing
 * descriptor, and a zip comment. Each key's floats encode (key, index), so the import can be
 * checked element by element against an independent statement of docs/MODEL.md section 5's map.
 * Options damage one thing at a time for the refusal cases. Nothing here reads ../shared. */
#include "testutil.h"

#include "common/common.h"
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  size_t C, NL, FF, L, NI;
} pt_shape;

/* One damage at a time; key fields are -1 when unused. */
typedef struct {
  long skip_key;         /* leave this data key out */
  long grow_key;         /* add one float to this key */
  long deflate_key;      /* mark this key as compressed (method 8) */
  long corrupt_key;      /* flip a data byte after the CRC is computed */
  long huge_key;         /* central sizes far past the end of the file */
  long zip64_key;        /* central sizes 0xFFFFFFFF (ZIP64 marker) */
  long nan_key;          /* element 1 of this key is NaN */
  const char *byteorder; /* content of <prefix>/byteorder */
  int pad_row0;          /* item_emb row 0 non-zero */
} pt_opts;

static const pt_opts NO_DAMAGE = {-1, -1, -1, -1, -1, -1, -1, "little", 0};
static const pt_shape SHAPE = {8, 2, 32, 4, 5}; /* C, NL, FF, L, NI */

typedef struct {
  unsigned char *b; /* bytes */
  size_t n, cap;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->b = realloc(b->b, b->cap);
    assert_non_null(b->b);
  }
  if (n) memcpy(b->b + b->n, p, n);
  b->n += n;
}

static void buf_u16(buf_t *b, uint32_t v) {
  unsigned char x[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
  buf_put(b, x, 2);
}

static void buf_u32(buf_t *b, uint32_t v) {
  unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 24)};
  buf_put(b, x, 4);
}

typedef struct {
  buf_t file;    /* local headers and data so far */
  buf_t central; /* central directory so far */
  size_t count;
} zip_w;

/* Appends an entry the way PyTorch's writer does; the central directory gets csize/usize
 * (normally both n) and crc. */
static void zip_add_raw(zip_w *z, const char *name, const void *data, size_t n, uint16_t method,
                        uint32_t crc, uint32_t csize, uint32_t usize) {
  size_t off = z->file.n, nlen = strlen(name);
  /* Pad the local extra field so the data starts on a 64-byte boundary, as PyTorch does;
   * the central entry has no extra field, so the two lengths differ. */
  size_t start = off + 30 + nlen + 4, pad = (64 - start % 64) % 64;
  buf_u32(&z->file, 0x04034b50u);
  buf_u16(&z->file, 20);
  buf_u16(&z->file, 0x0808); /* data descriptor follows; UTF-8 name */
  buf_u16(&z->file, method);
  buf_u16(&z->file, 0);
  buf_u16(&z->file, 0x21);
  buf_u32(&z->file, 0); /* crc and sizes: in the descriptor and the central directory */
  buf_u32(&z->file, 0);
  buf_u32(&z->file, 0);
  buf_u16(&z->file, (uint32_t)nlen);
  buf_u16(&z->file, (uint32_t)(4 + pad));
  buf_put(&z->file, name, nlen);
  buf_u16(&z->file, 0x4246); /* "FB": PyTorch's padding extra */
  buf_u16(&z->file, (uint32_t)pad);
  for (size_t i = 0; i < pad; i++) buf_put(&z->file, "Z", 1);
  buf_put(&z->file, data, n);
  buf_u32(&z->file, 0x08074b50u);
  buf_u32(&z->file, crc);
  buf_u32(&z->file, (uint32_t)n);
  buf_u32(&z->file, (uint32_t)n);

  buf_u32(&z->central, 0x02014b50u);
  buf_u16(&z->central, 0x031e);
  buf_u16(&z->central, 20);
  buf_u16(&z->central, 0x0808);
  buf_u16(&z->central, method);
  buf_u16(&z->central, 0);
  buf_u16(&z->central, 0x21);
  buf_u32(&z->central, crc);
  buf_u32(&z->central, csize);
  buf_u32(&z->central, usize);
  buf_u16(&z->central, (uint32_t)nlen);
  buf_u16(&z->central, 0); /* extra */
  buf_u16(&z->central, 0); /* comment */
  buf_u16(&z->central, 0); /* disk */
  buf_u16(&z->central, 0);
  buf_u32(&z->central, 0);
  buf_u32(&z->central, (uint32_t)off);
  buf_put(&z->central, name, nlen);
  z->count++;
}

static void zip_add(zip_w *z, const char *name, const void *data, size_t n, uint16_t method) {
  zip_add_raw(z, name, data, n, method, fl_crc32(0, data, n), (uint32_t)n, (uint32_t)n);
}

/* Appends the central directory and the end record; returns the archive (caller frees). */
static unsigned char *zip_finish(zip_w *z, const char *comment, size_t *n) {
  size_t cd_off = z->file.n, clen = strlen(comment);
  buf_put(&z->file, z->central.b, z->central.n);
  buf_u32(&z->file, 0x06054b50u);
  buf_u16(&z->file, 0);
  buf_u16(&z->file, 0);
  buf_u16(&z->file, (uint32_t)z->count);
  buf_u16(&z->file, (uint32_t)z->count);
  buf_u32(&z->file, (uint32_t)z->central.n);
  buf_u32(&z->file, (uint32_t)cd_off);
  buf_u16(&z->file, (uint32_t)clen);
  buf_put(&z->file, comment, clen);
  free(z->central.b);
  *n = z->file.n;
  return z->file.b;
}

static size_t nkeys(const pt_shape *s) { return 4 + 16 * s->NL; }

/* Float count of key k for shape s (docs/MODEL.md section 5). */
static size_t key_floats(const pt_shape *s, size_t k) {
  size_t C = s->C, FF = s->FF;
  if (k == 0) return (s->NI + 1) * C;
  if (k == 1) return s->L * C;
  if (k < 4) return C;
  if (k < 4 + 10 * s->NL) {
    size_t j = (k - 4) % 10;
    return j == 0 || j == 2 || j == 4 || j == 6 ? C * C : C;
  }
  size_t j = (k - 4 - 10 * s->NL) % 6;
  return j == 0 || j == 2 ? FF * C : j == 1 ? FF : C;
}

/* The value stored at index i of key k: exact in float32, unique per (k, i). */
static float val(size_t k, size_t i) { return (float)(k * 1000 + i); }

static int key_cmp(const void *a, const void *b) {
  char x[32], y[32];
  snprintf(x, sizeof x, "%zu", *(const size_t *)a);
  snprintf(y, sizeof y, "%zu", *(const size_t *)b);
  return strcmp(x, y);
}

static unsigned char *build_pt(const pt_shape *s, const pt_opts *o, size_t *n) {
  zip_w z = {0};
  const char *pre = "archive";
  char name[64];
  unsigned char pkl[40];
  for (size_t i = 0; i < sizeof pkl; i++) pkl[i] = (unsigned char)(i * 7 + 3);
  snprintf(name, sizeof name, "%s/data.pkl", pre);
  zip_add(&z, name, pkl, sizeof pkl, 8); /* compressed non-data entries are not refused */
  snprintf(name, sizeof name, "%s/byteorder", pre);
  zip_add(&z, name, o->byteorder, strlen(o->byteorder), 0);

  size_t K = nkeys(s), order[256];
  assert_true(K <= 256);
  for (size_t k = 0; k < K; k++) order[k] = k;
  qsort(order, K, sizeof *order, key_cmp);
  for (size_t q = 0; q < K; q++) {
    size_t k = order[q];
    if ((long)k == o->skip_key) continue;
    size_t nf = key_floats(s, k) + ((long)k == o->grow_key);
    unsigned char *d = malloc(nf * 4);
    assert_non_null(d);
    for (size_t i = 0; i < nf; i++) {
      float v = k == 0 && i < s->C && !o->pad_row0 ? 0.0f : val(k, i);
      if ((long)k == o->nan_key && i == 1) v = NAN;
      uint32_t u;
      memcpy(&u, &v, 4);
      for (int b = 0; b < 4; b++) d[4 * i + b] = (unsigned char)(u >> (8 * b));
    }
    uint32_t crc = fl_crc32(0, d, nf * 4), sz = (uint32_t)(nf * 4);
    if ((long)k == o->corrupt_key) d[5] ^= 0x40;
    if ((long)k == o->huge_key) sz = 0x7ffffff0u;
    if ((long)k == o->zip64_key) sz = 0xffffffffu;
    snprintf(name, sizeof name, "%s/data/%zu", pre, k);
    zip_add_raw(&z, name, d, nf * 4, (long)k == o->deflate_key ? 8 : 0, crc, sz, sz);
    free(d);
  }
  snprintf(name, sizeof name, "%s/version", pre);
  zip_add(&z, name, "3\n", 2, 0);
  snprintf(name, sizeof name, "%s/.data/serialization_id", pre);
  zip_add(&z, name, "0123456789", 10, 0);
  /* The comment holds a stray end-record signature that the reader must not take. */
  return zip_finish(&z, "test archive PK\x05\x06 not an end record, padding padding", n);
}

typedef struct {
  char dir[256];
  char path[300];
} pt_fix;

static int setup(void **state) {
  pt_fix *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(tu_mkdtemp(f->dir, sizeof f->dir), 0);
  snprintf(f->path, sizeof f->path, "%s/anchor.pt", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  pt_fix *f = *state;
  tu_rmtree(f->dir);
  free(f);
  return 0;
}

static void write_bytes(const char *path, const void *b, size_t n) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  if (n) assert_int_equal(fwrite(b, 1, n, fp), n);
  assert_int_equal(fclose(fp), 0);
}

static void write_pt(const char *path, const pt_shape *s, const pt_opts *o) {
  size_t n;
  unsigned char *b = build_pt(s, o, &n);
  write_bytes(path, b, n);
  free(b);
}

/* Checks one tensor range against key k; returns the floats checked. */
static size_t check_range(const float *dst, size_t k, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (dst[i] != val(k, i)) fprintf(stderr, "key %zu index %zu: got %g\n", k, i, dst[i]);
    assert_true(dst[i] == val(k, i));
  }
  return count;
}

/* Every parameter against docs/MODEL.md section 5, stated independently of the importer. */
static void check_model(const model_net *m, const pt_shape *s, int pad_row0) {
  size_t C = s->C, FF = s->FF, NL = s->NL, CC = C * C, seen = 0;
  assert_int_equal(m->hp.C, C);
  assert_int_equal(m->hp.NL, NL);
  assert_int_equal(m->hp.NH, 2);
  assert_int_equal(m->hp.FF, FF);
  assert_int_equal(m->hp.L, s->L);
  assert_true(m->hp.dropout == 0.5f);
  assert_true(m->hp.ln_eps == 1e-12f);
  assert_int_equal(m->NI, s->NI);
  assert_int_equal(m->step, 0);
  assert_null(m->grads);

  const float *item = m->p.t[MODEL_T_ITEM];
  for (size_t i = 0; i < C; i++) assert_true(item[i] == (pad_row0 ? val(0, i) : 0.0f));
  for (size_t i = C; i < (s->NI + 1) * C; i++) assert_true(item[i] == val(0, i));
  seen += (s->NI + 1) * C;
  seen += check_range(m->p.t[MODEL_T_POS], 1, s->L * C);
  seen += check_range(m->p.t[MODEL_T_LNE_W], 2, C);
  seen += check_range(m->p.t[MODEL_T_LNE_B], 3, C);
  for (size_t l = 0; l < NL; l++) {
    size_t a = 4 + 10 * l;
    seen += check_range(m->p.t[MODEL_T_QKVW] + l * 3 * CC, a + 0, CC);      /* Wq */
    seen += check_range(m->p.t[MODEL_T_QKVW] + l * 3 * CC + CC, a + 2, CC); /* Wk */
    seen += check_range(m->p.t[MODEL_T_QKVW] + l * 3 * CC + 2 * CC, a + 4, CC);
    seen += check_range(m->p.t[MODEL_T_QKVB] + l * 3 * C, a + 1, C);
    seen += check_range(m->p.t[MODEL_T_QKVB] + l * 3 * C + C, a + 3, C);
    seen += check_range(m->p.t[MODEL_T_QKVB] + l * 3 * C + 2 * C, a + 5, C);
    seen += check_range(m->p.t[MODEL_T_ATTPROJW] + l * CC, a + 6, CC);
    seen += check_range(m->p.t[MODEL_T_ATTPROJB] + l * C, a + 7, C);
    seen += check_range(m->p.t[MODEL_T_LN1W] + l * C, a + 8, C);
    seen += check_range(m->p.t[MODEL_T_LN1B] + l * C, a + 9, C);
    size_t b = 4 + 10 * NL + 6 * l;
    seen += check_range(m->p.t[MODEL_T_FCW] + l * FF * C, b + 0, FF * C);
    seen += check_range(m->p.t[MODEL_T_FCB] + l * FF, b + 1, FF);
    seen += check_range(m->p.t[MODEL_T_FCPROJW] + l * C * FF, b + 2, C * FF);
    seen += check_range(m->p.t[MODEL_T_FCPROJB] + l * C, b + 3, C);
    seen += check_range(m->p.t[MODEL_T_LN2W] + l * C, b + 4, C);
    seen += check_range(m->p.t[MODEL_T_LN2B] + l * C, b + 5, C);
  }
  /* The checks above covered the whole parameter block. */
  size_t sizes[MODEL_MAX_TENSORS];
  assert_int_equal(seen, model_tensor_sizes(&m->hp, m->NI, sizes));
}

/* Imports path expecting code, a one-line message naming the file (and containing want if
 * given), and the output model untouched. */
static void expect_refused(const char *path, int code, const char *want) {
  model_net m;
  memset(&m, 0xAB, sizeof m);
  model_net before;
  memcpy(&before, &m, sizeof m);
  char err[512] = "";
  int rc = ptimport_load(path, &m, err, sizeof err);
  if (rc != code || (want && !strstr(err, want)))
    fprintf(stderr, "expected %d '%s', got %d: %s\n", code, want ? want : "", rc, err);
  assert_int_equal(rc, code);
  assert_true(strlen(err) > 0);
  assert_non_null(strstr(err, path));
  assert_null(strchr(err, '\n'));
  if (want) assert_non_null(strstr(err, want));
  assert_memory_equal(&m, &before, sizeof m);
}

static void refuse_with(const char *path, const pt_opts *o, int code, const char *want) {
  write_pt(path, &SHAPE, o);
  expect_refused(path, code, want);
}

static void test_import(void **state) {
  pt_fix *f = *state;
  write_pt(f->path, &SHAPE, &NO_DAMAGE);
  model_net m;
  char err[512] = "";
  int rc = ptimport_load(f->path, &m, err, sizeof err);
  if (rc) fprintf(stderr, "%s\n", err);
  assert_int_equal(rc, 0);
  check_model(&m, &SHAPE, 0);
  model_free(&m);
}

static void test_import_other_shape(void **state) {
  pt_fix *f = *state;
  const pt_shape s = {4, 1, 12, 3, 9};
  write_pt(f->path, &s, &NO_DAMAGE);
  model_net m;
  char err[512] = "";
  assert_int_equal(ptimport_load(f->path, &m, err, sizeof err), 0);
  check_model(&m, &s, 0);
  model_free(&m);
}

static void test_nonzero_padding_row_kept(void **state) {
  pt_fix *f = *state;
  pt_opts o = NO_DAMAGE;
  o.pad_row0 = 1;
  write_pt(f->path, &SHAPE, &o);
  model_net m;
  char err[512] = "";
  assert_int_equal(ptimport_load(f->path, &m, err, sizeof err), 0);
  check_model(&m, &SHAPE, 1);
  model_free(&m);
}

static void test_missing_key(void **state) {
  pt_fix *f = *state;
  pt_opts o = NO_DAMAGE;
  o.skip_key = 7;
  refuse_with(f->path, &o, FL_EMISSING, "archive/data/7");
  o.skip_key = 0;
  refuse_with(f->path, &o, FL_EMISSING, "archive/data/0");
  o.skip_key = (long)nkeys(&SHAPE) - 1; /* 35 keys: not 4 + 16 NL */
  refuse_with(f->path, &o, FL_ESHAPE, "35 data entries");
}

static void test_wrong_size(void **state) {
  pt_fix *f = *state;
  pt_opts o = NO_DAMAGE;
  o.grow_key = 6;
  refuse_with(f->path, &o, FL_ESHAPE, "key 6 (block 0 Wk)");
  o.grow_key = 33;
  refuse_with(f->path, &o, FL_ESHAPE, "key 33 (block 1 b2)");
  o.grow_key = 0; /* item_emb no longer a whole number of rows */
  refuse_with(f->path, &o, FL_ESHAPE, "item_emb");
}

static void test_compressed(void **state) {
  pt_fix *f = *state;
  pt_opts o = NO_DAMAGE;
  o.deflate_key = 12;
  refuse_with(f->path, &o, FL_EFORMAT, "compressed");
}

static void test_bad_crc(void **state) {
  pt_fix *f = *state;
  pt_opts o = NO_DAMAGE;
  o.corrupt_key = 10;
  refuse_with(f->path, &o, FL_ECHECKSUM, "archive/data/10");
}

static void test_sizes_past_end(void **state) {
  pt_fix *f = *state;
  pt_opts o = NO_DAMAGE;
  o.huge_key = 3;
  refuse_with(f->path, &o, FL_ETRUNC, "archive/data/3");
  o = NO_DAMAGE;
  o.zip64_key = 3;
  refuse_with(f->path, &o, FL_EFORMAT, "ZIP64");
}

static void test_truncated(void **state) {
  pt_fix *f = *state;
  size_t n;
  unsigned char *b = build_pt(&SHAPE, &NO_DAMAGE, &n);
  size_t cuts[] = {4, 30, 100, n / 2, n - 30, n - 23, n - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
    write_bytes(f->path, b, cuts[i]);
    expect_refused(f->path, FL_ETRUNC, "truncated");
  }
  free(b);
}

static void test_not_a_zip(void **state) {
  pt_fix *f = *state;
  tu_write_file(f->path, "this is not a zip archive, just text that is long enough\n");
  expect_refused(f->path, FL_EFORMAT, "not a zip");
  write_bytes(f->path, "", 0);
  expect_refused(f->path, FL_EFORMAT, "not a zip");
  char p[300];
  snprintf(p, sizeof p, "%s/missing.pt", f->dir);
  expect_refused(p, -ENOENT, NULL);
}

static void test_byteorder_and_values(void **state) {
  pt_fix *f = *state;
  pt_opts o = NO_DAMAGE;
  o.byteorder = "big";
  refuse_with(f->path, &o, FL_EFORMAT, "byteorder");
  o = NO_DAMAGE;
  o.nan_key = 27;
  refuse_with(f->path, &o, FL_ERANGE, "key 27");
}

int test_ptimport(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_import, setup, teardown),
      cmocka_unit_test_setup_teardown(test_import_other_shape, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nonzero_padding_row_kept, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_key, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrong_size, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compressed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_crc, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sizes_past_end, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_not_a_zip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_byteorder_and_values, setup, teardown),
  };
  return cmocka_run_group_tests_name("model/ptimport", tests, NULL, NULL);
}
