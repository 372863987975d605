/* common/common.c: error text, the logger, allocation, time, files, checksums, random numbers.
 *
 * Nothing here knows about models, Kafka or RocksDB; every module may use it. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static const char *const fl_error_text[] = {
#define FL_X(name, text) text,
    FL_ERRORS(FL_X)
#undef FL_X
};

const char *fl_strerror(int err) {
  if (err > FL_EBASE && err < FL_ELAST) return fl_error_text[err - FL_EBASE - 1];
  if (err < 0 && err > FL_EBASE) return strerror(-err);
  return err == 0 ? "success" : "unknown error";
}

_Atomic int fl_log_level = FL_LOG_INFO;
static _Thread_local const char *fl_thread_tag = "main";

void fl_log_set_thread_tag(const char *tag) { fl_thread_tag = tag; }

void fl_thread_setup(const char *tag, int nice) {
  fl_log_set_thread_tag(tag);
  char name[16]; /* the kernel's limit, with the terminator */
  snprintf(name, sizeof name, "flamed-%s", tag);
  pthread_setname_np(pthread_self(), name);
  if (nice > 0 && setpriority(PRIO_PROCESS, (id_t)gettid(), nice) != 0)
    fl_warn("cannot renice the %s thread to %d: %s (it keeps the process's niceness)", tag, nice,
            strerror(errno));
}

void fl_log_write(int level, const char *fmt, ...) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int lv = level < 0 ? 0 : level > 3 ? 3 : level;
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, names[lv], fl_thread_tag);
  va_list ap;
  va_start(ap, fmt);
  if (n >= 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  /* One fputs of a complete line keeps lines from different threads whole. */
  size_t len = strlen(line);
  if (len + 1 < sizeof line) {
    line[len] = '\n';
    line[len + 1] = 0;
  }
  fputs(line, stderr);
}

static void fl_oom(size_t n, const char *file, int line) {
  fprintf(stderr, "fatal: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
  abort();
}

void *fl_xmalloc_at(size_t n, const char *file, int line) {
  void *p = malloc(n ? n : 1);
  if (!p) fl_oom(n, file, line);
  return p;
}

void *fl_xcalloc_at(size_t count, size_t size, const char *file, int line) {
  if (size && count > SIZE_MAX / size) fl_oom(SIZE_MAX, file, line);
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) fl_oom(count * size, file, line);
  return p;
}

void *fl_xrealloc_at(void *p, size_t n, const char *file, int line) {
  void *q = realloc(p, n ? n : 1);
  if (!q) fl_oom(n, file, line);
  return q;
}

enum { HUGE_PAGE = 2 << 20 };

void *fl_xalloc_aligned_at(size_t n, int zero, const char *file, int line) {
  void *p = NULL;
  size_t rounded = (n + 63) & ~(size_t)63;
  int huge = rounded >= HUGE_PAGE;
  if (posix_memalign(&p, huge ? HUGE_PAGE : 64, rounded ? rounded : 64) != 0) fl_oom(n, file, line);
  /* before the first touch, so that the first fault of each 2 MB takes a huge page; only
   * whole huge pages; refused (THP off, an old kernel): 4 KB pages, as without it */
  if (huge) (void)madvise(p, rounded & ~(size_t)(HUGE_PAGE - 1), MADV_HUGEPAGE);
  if (zero) memset(p, 0, rounded);
  return p;
}

double fl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void fl_sort_doubles(double *v, size_t n) { qsort(v, n, sizeof *v, cmp_double); }

int64_t fl_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fl_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int fl_write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int fl_write_atomic(const char *path, const void *buf, size_t n) {
  size_t len = strlen(path);
  char *tmp = xmalloc(len + 32);
  snprintf(tmp, len + 32, "%s.tmp.%ld", path, (long)getpid());
  int err = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    err = -errno;
    goto fail_open;
  }
  if ((err = fl_write_all(fd, buf, n)) != 0) goto fail_write;
  if (fsync(fd) != 0) {
    err = -errno;
    goto fail_write;
  }
  if (close(fd) != 0) {
    err = -errno;
    fd = -1;
    goto fail_write;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    err = -errno;
    goto fail_write;
  }
  /* fsync the directory so the rename itself survives a crash. */
  char *dcopy = xmalloc(len + 1);
  memcpy(dcopy, path, len + 1);
  int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dcopy);
  if (dfd >= 0) {
    if (fsync(dfd) != 0) err = -errno;
    close(dfd);
  }
  free(tmp);
  return err;
fail_write:
  if (fd >= 0) close(fd);
  unlink(tmp);
fail_open:
  free(tmp);
  return err;
}

int fl_read_file(const char *path, void **buf, size_t *n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
  }
  size_t size = (size_t)st.st_size;
  char *p = xmalloc(size + 1);
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, p + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int err = r < 0 ? -errno : FL_ETRUNC;
      free(p);
      close(fd);
      return err;
    }
    got += (size_t)r;
  }
  close(fd);
  p[size] = 0; /* convenient for text files; not counted in n */
  *buf = p;
  *n = size;
  return 0;
}

uint32_t fl_crc32(uint32_t crc, const void *buf, size_t n) {
  const unsigned char *p = buf;
  /* zlib takes uInt lengths: feed large buffers in pieces. */
  while (n > 0) {
    uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = (uint32_t)crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return crc;
}

void fl_rng_seed(fl_rng *r, uint64_t seed) { r->s = seed; }

uint64_t fl_rng_u64(fl_rng *r) {
  r->s += 0x9e3779b97f4a7c15ull;
  return fl_hash64(r->s);
}

double fl_rng_uniform(fl_rng *r) {
  return (double)(fl_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

float fl_rng_normal(fl_rng *r) {
  /* Box-Muller; 1 - u keeps the log argument in (0, 1]. */
  double u1 = 1.0 - fl_rng_uniform(r), u2 = fl_rng_uniform(r);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t fl_rng_below(fl_rng *r, uint64_t n) {
  /* Lemire's multiply-shift; the tiny bias is irrelevant for shuffling. */
  return (uint64_t)(((__uint128_t)fl_rng_u64(r) * n) >> 64);
}

void fl_shuffle(void *base, size_t n, size_t size, fl_rng *r) {
  unsigned char tmp[64], *b = base;
  if (size > sizeof tmp) abort(); /* a programmer error: shuffle indices instead */
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)fl_rng_below(r, i);
    memcpy(tmp, b + (i - 1) * size, size);
    memcpy(b + (i - 1) * size, b + j * size, size);
    memcpy(b + j * size, tmp, size);
  }
}

static void buf_reserve(fl_buf *b, size_t extra) {
  if (b->n + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + extra + 1) cap *= 2;
  b->p = xrealloc(b->p, cap);
  b->cap = cap;
}

void fl_buf_put(fl_buf *b, const void *s, size_t n) {
  buf_reserve(b, n);
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

void fl_buf_puts(fl_buf *b, const char *s) { fl_buf_put(b, s, strlen(s)); }

void fl_buf_printf(fl_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n <= 0) return;
  buf_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->n += (size_t)n;
}

void fl_buf_free(fl_buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

int fl_file_contains(const char *path, const char *needle) {
  void *buf;
  size_t n;
  if (fl_read_file(path, &buf, &n) != 0) return 0;
  int found = memmem(buf, n, needle, strlen(needle)) != NULL;
  free(buf);
  return found;
}

/* Unicode table 3-7 gives the allowed second bytes. */
int fl_utf8_clean(const void *p, size_t n) {
  const unsigned char *s = p;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7F) return 0;
      i++;
      continue;
    }
    size_t more;
    unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (c < 0xC2) return 0;        /* a stray continuation byte, or an overlong 2-byte form */
    if (c == 0xC2) {
      more = 1;
      lo = 0xA0; /* C1 controls U+0080..U+009F */
    } else if (c < 0xE0) {
      more = 1;
    } else if (c < 0xF0) {
      more = 2;
      if (c == 0xE0) lo = 0xA0; /* overlong */
      if (c == 0xED) hi = 0x9F; /* surrogates U+D800..U+DFFF */
    } else if (c < 0xF5) {
      more = 3;
      if (c == 0xF0) lo = 0x90; /* overlong */
      if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
      return 0;
    }
    if (n - i <= more) return 0; /* truncated */
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= more; k++)
      if ((s[i + k] & 0xC0) != 0x80) return 0;
    i += more + 1;
  }
  return 1;
}
