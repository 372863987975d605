/* tests/common/test_common.c: error text, atomic files, file reading, CRC-32, the random
 * number generators and the thread set-up of common/.
 *
 * File tests run in a fresh temp dir each and remove it; the statistical tests use fixed seeds
 * and bounds several standard errors wide, so they are deterministic and never flaky. */
#define _GNU_SOURCE
#include "testutil.h"
#include "utf8_ref.h"

#include "common/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- fl_strerror ---- */

static void test_strerror_codes(void **state) {
  (void)state;
  assert_string_equal(fl_strerror(0), "success");
  assert_string_equal(fl_strerror(FL_EMAGIC), "not a flame file (bad magic number)");
  assert_string_equal(fl_strerror(FL_ECHECKSUM), "checksum mismatch (file corrupted)");
  assert_string_equal(fl_strerror(FL_EEMPTY), "no usable data");
  assert_string_equal(fl_strerror(FL_ELOCKED), "locked by another process");
  assert_string_equal(fl_strerror(FL_ECORRUPT), "data corrupted");
  assert_string_equal(fl_strerror(FL_ESTORAGE), "storage error");
  /* Every code of the table has its own text, distinct from the others. */
  for (int e = FL_EBASE + 1; e < FL_ELAST; e++) {
    const char *t = fl_strerror(e);
    assert_non_null(t);
    assert_true(strlen(t) > 0);
    assert_string_not_equal(t, "unknown error");
    for (int f = FL_EBASE + 1; f < e; f++) assert_string_not_equal(t, fl_strerror(f));
  }
  /* The codes never collide with errno values. */
  assert_true(-(FL_EBASE + 1) > 200);
}

static void test_strerror_errno(void **state) {
  (void)state;
  assert_string_equal(fl_strerror(-ENOENT), strerror(ENOENT));
  assert_string_equal(fl_strerror(-EACCES), strerror(EACCES));
  assert_string_equal(fl_strerror(-ENOSPC), strerror(ENOSPC));
  /* Out-of-table values still give text, never NULL. */
  assert_non_null(fl_strerror(1));
  assert_non_null(fl_strerror(INT_MIN));
  assert_non_null(fl_strerror(FL_EBASE));
}

/* ---- fl_write_atomic / fl_read_file ---- */

/* Number of directory entries other than . and .. */
static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
  closedir(d);
  return n;
}

static void test_write_atomic_roundtrip(void **state) {
  tu_file_fixture *fx = *state;
  /* Binary content with NUL bytes: nothing may stop at the first zero. */
  unsigned char data[1000];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 7);
  assert_int_equal(fl_write_atomic(fx->path, data, sizeof data), 0);

  void *buf = NULL;
  size_t n = 0;
  assert_int_equal(fl_read_file(fx->path, &buf, &n), 0);
  assert_int_equal(n, sizeof data);
  assert_memory_equal(buf, data, sizeof data);
  assert_int_equal(((char *)buf)[n], 0); /* the promised terminator past the end */
  free(buf);
  /* No temp file left beside it. */
  assert_int_equal(count_entries(fx->dir), 1);
}

static void test_write_atomic_empty(void **state) {
  tu_file_fixture *fx = *state;
  assert_int_equal(fl_write_atomic(fx->path, "", 0), 0);
  void *buf = NULL;
  size_t n = 99;
  assert_int_equal(fl_read_file(fx->path, &buf, &n), 0);
  assert_int_equal(n, 0);
  free(buf);
}

static void test_write_atomic_replaces(void **state) {
  tu_file_fixture *fx = *state;
  const char *old_text = "old contents, quite a bit longer than the new ones";
  const char *new_text = "new";
  assert_int_equal(fl_write_atomic(fx->path, old_text, strlen(old_text)), 0);

  /* A reader holding the old file open keeps seeing the old bytes: the new file replaced it
   * by rename, it was not truncated and rewritten in place. */
  int fd = open(fx->path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(fl_write_atomic(fx->path, new_text, strlen(new_text)), 0);
  char old_buf[128] = {0};
  ssize_t got = read(fd, old_buf, sizeof old_buf - 1);
  close(fd);
  assert_int_equal(got, (ssize_t)strlen(old_text));
  assert_string_equal(old_buf, old_text);

  void *buf = NULL;
  size_t n = 0;
  assert_int_equal(fl_read_file(fx->path, &buf, &n), 0);
  assert_int_equal(n, strlen(new_text));
  assert_memory_equal(buf, new_text, n);
  free(buf);
  assert_int_equal(count_entries(fx->dir), 1);
}

static void test_write_atomic_missing_dir(void **state) {
  tu_file_fixture *fx = *state;
  char path[600];
  snprintf(path, sizeof path, "%s/no-such-dir/file.bin", fx->dir);
  assert_int_equal(fl_write_atomic(path, "x", 1), -ENOENT);
  /* Nothing was created anywhere. */
  assert_int_equal(count_entries(fx->dir), 0);
  assert_int_equal(access(path, F_OK), -1);
}

static void test_read_file_missing(void **state) {
  tu_file_fixture *fx = *state;
  void *buf = (void *)0x1;
  size_t n = 42;
  assert_int_equal(fl_read_file(fx->path, &buf, &n), -ENOENT);
  /* A directory is refused, not read. */
  assert_int_equal(fl_read_file(fx->dir, &buf, &n), -EISDIR);
}

/* ---- fl_crc32 ---- */

static void test_crc32(void **state) {
  (void)state;
  const char *check = "123456789";
  /* The standard CRC-32 check value (as zip and zlib compute it). */
  assert_int_equal(fl_crc32(0, check, 9), 0xCBF43926u);
  assert_int_equal(fl_crc32(0, check, 0), 0);
  /* Incremental: summing in pieces equals summing at once. */
  uint32_t c = fl_crc32(0, check, 4);
  c = fl_crc32(c, check + 4, 5);
  assert_int_equal(c, 0xCBF43926u);
}

/* ---- fl_rng ---- */

static void test_rng_determinism(void **state) {
  (void)state;
  fl_rng a, b, c;
  fl_rng_seed(&a, 42);
  fl_rng_seed(&b, 42);
  fl_rng_seed(&c, 43);
  int differs = 0;
  for (int i = 0; i < 1000; i++) {
    uint64_t x = fl_rng_u64(&a);
    assert_true(x == fl_rng_u64(&b));
    differs |= x != fl_rng_u64(&c);
  }
  assert_true(differs);
  /* Re-seeding restarts the sequence. */
  fl_rng_seed(&a, 7);
  uint64_t first = fl_rng_u64(&a);
  fl_rng_u64(&a);
  fl_rng_seed(&a, 7);
  assert_true(fl_rng_u64(&a) == first);
}

static void test_rng_uniform_and_below(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 1);
  for (int i = 0; i < 10000; i++) {
    double u = fl_rng_uniform(&r);
    assert_true(u >= 0.0 && u < 1.0);
  }
  const uint64_t ns[] = {1, 2, 7, 1000, (uint64_t)1 << 40, UINT64_MAX};
  for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
    for (int i = 0; i < 10000; i++) assert_true(fl_rng_below(&r, ns[k]) < ns[k]);
  /* Small ranges are covered whole, roughly evenly. */
  int hits[7] = {0};
  for (int i = 0; i < 70000; i++) hits[fl_rng_below(&r, 7)]++;
  for (int v = 0; v < 7; v++) assert_in_range(hits[v], 9000, 11000);
}

/* A permutation, the same for the same seed, of elements of any size. */
static void test_shuffle(void **state) {
  (void)state;
  uint32_t a[100], b[100];
  struct {
    uint64_t x;
    char pad[20];
  } w[100];
  for (uint32_t i = 0; i < 100; i++) a[i] = b[i] = i, w[i].x = i;
  fl_rng r1, r2, r3;
  fl_rng_seed(&r1, 9);
  fl_rng_seed(&r2, 9);
  fl_rng_seed(&r3, 9);
  fl_shuffle(a, 100, sizeof *a, &r1);
  fl_shuffle(b, 100, sizeof *b, &r2);
  fl_shuffle(w, 100, sizeof *w, &r3);
  assert_memory_equal(a, b, sizeof a);
  int seen[100] = {0}, moved = 0;
  for (int i = 0; i < 100; i++) {
    seen[a[i]]++;
    moved += a[i] != (uint32_t)i;
    assert_int_equal(w[i].x, a[i]); /* the same draws whatever the element size */
  }
  for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1);
  assert_true(moved > 50);
  fl_shuffle(a, 0, sizeof *a, &r1); /* nothing to do */
}

/* fl_buf: grows, stays NUL-terminated, formats. */
static void test_buf(void **state) {
  (void)state;
  fl_buf b = {0};
  fl_buf_put(&b, "", 0);
  assert_string_equal(b.p, "");
  for (int i = 0; i < 1000; i++) fl_buf_printf(&b, "%d,", i);
  fl_buf_puts(&b, "end");
  assert_int_equal(b.n, strlen(b.p));
  assert_memory_equal(b.p, "0,1,2,", 6);
  assert_string_equal(b.p + b.n - 7, "999,end");
  fl_buf_free(&b);
  assert_null(b.p);
  assert_int_equal(b.n, 0);
}

static void test_rng_normal_moments(void **state) {
  (void)state;
  fl_rng r;
  fl_rng_seed(&r, 12345);
  const int n = 100000;
  double sum = 0, sumsq = 0;
  for (int i = 0; i < n; i++) {
    float x = fl_rng_normal(&r);
    assert_true(isfinite(x));
    sum += x;
    sumsq += (double)x * x;
  }
  double mean = sum / n, var = sumsq / n - mean * mean;
  /* Standard errors are about 0.003 (mean) and 0.0045 (variance): bounds are ~7 of them. */
  assert_true(fabs(mean) < 0.02);
  assert_true(fabs(var - 1.0) < 0.03);
}

/* ---- allocation ---- */

static void test_alloc_aligned(void **state) {
  (void)state;
  for (size_t n = 0; n < 300; n += 37) {
    unsigned char *p = xalloc_aligned(n);
    assert_int_equal((uintptr_t)p % 64, 0);
    for (size_t i = 0; i < n; i++) assert_int_equal(p[i], 0);
    free(p);
  }
  /* a big block: 2 MB-aligned (the huge-page hint needs it), cleared to its last byte */
  size_t big = (5u << 20) + 100;
  unsigned char *b = xalloc_aligned(big);
  assert_int_equal((uintptr_t)b % (2u << 20), 0);
  for (size_t i = 0; i < big; i += 4093) assert_int_equal(b[i], 0);
  assert_int_equal(b[big - 1], 0);
  free(b);
  b = xalloc_aligned_uninit(big);
  assert_int_equal((uintptr_t)b % (2u << 20), 0);
  b[0] = b[big - 1] = 7;
  free(b);
  int *q = xcalloc(10, sizeof *q);
  for (int i = 0; i < 10; i++) assert_int_equal(q[i], 0);
  q = xrealloc(q, 20 * sizeof *q);
  assert_int_equal(q[9], 0);
  free(q);
}

/* The byte-order helpers write the documented bytes whatever the host, and read them back;
 * big-endian keys sort as their numbers. */
static void test_byte_order(void **state) {
  (void)state;
  unsigned char b[9] = {0};
  fl_put_le32(b + 1, 0x01020304u); /* unaligned */
  assert_memory_equal(b + 1, "\x04\x03\x02\x01", 4);
  assert_int_equal(fl_get_le32(b + 1), 0x01020304u);
  fl_put_be32(b + 1, 0x01020304u);
  assert_memory_equal(b + 1, "\x01\x02\x03\x04", 4);
  assert_int_equal(fl_get_be32(b + 1), 0x01020304u);
  fl_put_le64(b + 1, 0x0102030405060708ull);
  assert_memory_equal(b + 1, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
  assert_true(fl_get_le64(b + 1) == 0x0102030405060708ull);
  assert_int_equal(fl_get_le16(b + 1), 0x0708);
  unsigned char lo[4], hi[4];
  fl_put_be32(lo, 255);
  fl_put_be32(hi, 256);
  assert_true(memcmp(lo, hi, 4) < 0);
}

/* fl_utf8_clean against the reference (tests/utf8_ref.h, built another way): every 1- and
 * 2-byte string, and every 3-byte one with a 3-byte lead. */
static void test_utf8_clean(void **state) {
  (void)state;
  unsigned char b[3];
  for (unsigned x = 0; x < 256; x++) {
    b[0] = (unsigned char)x;
    assert_int_equal(fl_utf8_clean(b, 1), ref_utf8_clean(b, 1));
    for (unsigned y = 0; y < 256; y++) {
      b[1] = (unsigned char)y;
      if (fl_utf8_clean(b, 2) != ref_utf8_clean(b, 2)) fail_msg("%02x %02x", x, y);
    }
  }
  for (unsigned x = 0xE0; x < 0xF0; x++)
    for (unsigned y = 0; y < 256; y++)
      for (unsigned z = 0; z < 256; z++) {
        b[0] = (unsigned char)x, b[1] = (unsigned char)y, b[2] = (unsigned char)z;
        if (fl_utf8_clean(b, 3) != ref_utf8_clean(b, 3)) fail_msg("%02x %02x %02x", x, y, z);
      }
  assert_true(fl_utf8_clean("", 0));
  assert_false(fl_utf8_clean("a\0b", 3));
}

static void test_sort_doubles(void **state) {
  (void)state;
  double v[] = {3.5, -1.0, 2.0, 2.0, -7.25, 0.0};
  fl_sort_doubles(v, 6);
  double want[] = {-7.25, -1.0, 0.0, 2.0, 2.0, 3.5};
  for (int i = 0; i < 6; i++) assert_true(v[i] == want[i]);
  fl_sort_doubles(v, 0); /* nothing to sort */
}

/* ---- threads ---- */

static void *thread_setup_main(void *arg) {
  int *out = arg;              /* [the thread's niceness after, name ok] */
  fl_thread_setup("unit", 19); /* absolute, and always allowed: the lowest priority */
  out[0] = getpriority(PRIO_PROCESS, (id_t)gettid());
  char name[16] = "";
  pthread_getname_np(pthread_self(), name, sizeof name);
  out[1] = !strcmp(name, "flamed-unit");
  return NULL;
}

/* fl_thread_setup names the calling thread and renices it alone. */
static void test_thread_setup(void **state) {
  (void)state;
  int before = getpriority(PRIO_PROCESS, 0), out[2] = {0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, thread_setup_main, out), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_true(out[1]);
  assert_int_equal(out[0], 19);
  /* the main thread keeps its niceness (a renice of getpid() would change it) */
  assert_int_equal(getpriority(PRIO_PROCESS, 0), before);
}

int test_common(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strerror_codes),
      cmocka_unit_test(test_strerror_errno),
      cmocka_unit_test_setup_teardown(test_write_atomic_roundtrip, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_write_atomic_empty, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_write_atomic_replaces, tu_file_setup, tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_write_atomic_missing_dir, tu_file_setup,
                                      tu_file_teardown),
      cmocka_unit_test_setup_teardown(test_read_file_missing, tu_file_setup, tu_file_teardown),
      cmocka_unit_test(test_crc32),
      cmocka_unit_test(test_rng_determinism),
      cmocka_unit_test(test_rng_uniform_and_below),
      cmocka_unit_test(test_rng_normal_moments),
      cmocka_unit_test(test_shuffle),
      cmocka_unit_test(test_buf),
      cmocka_unit_test(test_alloc_aligned),
      cmocka_unit_test(test_sort_doubles),
      cmocka_unit_test(test_byte_order),
      cmocka_unit_test(test_utf8_clean),
      cmocka_unit_test(test_thread_setup),
  };
  return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
