/* common/common.h: errors, logging, allocation, time and atomic files shared by every module.
 *
 * Errors are negative ints: either -errno or one of the FL_E* codes below (from -999 up, far
 * beyond any errno value, so the two never collide). fl_strerror() translates both. */
#ifndef FL_COMMON_H
#define FL_COMMON_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* X(name, text): the project's error table. */
#define FL_ERRORS(X)                                                                               \
  X(EFORMAT, "malformed input")                                                                    \
  X(EMAGIC, "not a flame file (bad magic number)")                                                 \
  X(EVERSION, "unsupported format version")                                                        \
  X(ECHECKSUM, "checksum mismatch (file corrupted)")                                               \
  X(ETRUNC, "file truncated")                                                                      \
  X(ESHAPE, "shapes do not match")                                                                 \
  X(ERANGE, "value out of range")                                                                  \
  X(EMISSING, "required entry missing")                                                            \
  X(EEMPTY, "no usable data")                                                                      \
  X(ELOCKED, "locked by another process")                                                          \
  X(ECORRUPT, "data corrupted")                                                                    \
  X(ESTORAGE, "storage error")                                                                     \
  X(ESETTINGS, "written under other settings")                                                     \
  X(EBUSY, "busy: try again later")

/* clang-format cannot see that FL_ERRORS(FL_X) expands to a list ending in a comma. */
/* clang-format off */
enum {
  FL_EBASE = -1000,
#define FL_X(name, text) FL_##name,
  FL_ERRORS(FL_X)
#undef FL_X
  FL_ELAST
};
/* clang-format on */

/* Text for an error code: FL_E* or -errno. Never NULL. */
const char *fl_strerror(int err);

/* Logging: one logger for the whole process. Levels debug < info < warn < error. The
 * macro checks the level before formatting. Each thread may set a short tag (loop, train,
 * kafka, main) shown on every line. Lines go to stderr. */
enum { FL_LOG_DEBUG, FL_LOG_INFO, FL_LOG_WARN, FL_LOG_ERROR };
/* The level below which lines are dropped. Atomic: SIGHUP's reload writes it on the loop
 * while every thread reads it; a plain store is an atomic store, the macro loads it relaxed
 * (a line near the change may go either way, nothing else depends on it). */
extern _Atomic int fl_log_level;
void fl_log_set_thread_tag(const char *tag); /* tag must outlive the thread */
/* A background thread's first call: the log tag, the name "flamed-<tag>" (top -H, perf,
 * bench/serve.sh), and, for nice > 0, the niceness of this thread only (Linux schedules
 * threads one by one); a renice that fails is a warning, the thread keeps the process's. */
void fl_thread_setup(const char *tag, int nice);
void fl_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fl_log(level, ...)                                                                         \
  do {                                                                                             \
    if ((level) >= atomic_load_explicit(&fl_log_level, memory_order_relaxed))                      \
      fl_log_write((level), __VA_ARGS__);                                                          \
  } while (0)
#define fl_debug(...) fl_log(FL_LOG_DEBUG, __VA_ARGS__)
#define fl_info(...) fl_log(FL_LOG_INFO, __VA_ARGS__)
#define fl_warn(...) fl_log(FL_LOG_WARN, __VA_ARGS__)
#define fl_error(...) fl_log(FL_LOG_ERROR, __VA_ARGS__)

/* Allocation that aborts with size and place on out-of-memory: out-of-memory is the one
 * failure we do not try to survive. Sizes are checked for multiplication overflow. */
void *fl_xmalloc_at(size_t n, const char *file, int line);
void *fl_xcalloc_at(size_t count, size_t size, const char *file, int line);
void *fl_xrealloc_at(void *p, size_t n, const char *file, int line);
#define xmalloc(n) fl_xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(c, s) fl_xcalloc_at((c), (s), __FILE__, __LINE__)
#define xrealloc(p, n) fl_xrealloc_at((p), (n), __FILE__, __LINE__)
/* 64-byte aligned; free with free(). zero = 1 clears it (parameter blocks); zero = 0 leaves
 * pages untouched until first written (activation buffers sized for the largest batch stay
 * out of the resident set until a batch that large arrives). Blocks of 2 MB and more are
 * 2 MB-aligned and backed by transparent huge pages where the kernel allows (a hint): on a
 * paravirtualized host every 4 KB page the daemon maps lengthens the serving tail, and a
 * 1M-item model is hundreds of MB (bench/RESULTS.md section 15). */
void *fl_xalloc_aligned_at(size_t n, int zero, const char *file, int line);
#define xalloc_aligned(n) fl_xalloc_aligned_at((n), 1, __FILE__, __LINE__)
#define xalloc_aligned_uninit(n) fl_xalloc_aligned_at((n), 0, __FILE__, __LINE__)

/* A growable byte buffer (HTTP responses, metrics text). Zero-initialised is empty; p is
 * NUL-terminated whenever n > 0 or after any put. */
typedef struct {
  char *p;
  size_t n, cap;
} fl_buf;
void fl_buf_put(fl_buf *b, const void *s, size_t n);
void fl_buf_puts(fl_buf *b, const char *s);
void fl_buf_printf(fl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fl_buf_free(fl_buf *b);

/* Monotonic clock in seconds. */
double fl_now(void);
/* Sorts v[0..n) ascending (benchmark timings). */
void fl_sort_doubles(double *v, size_t n);
/* Wall clock in ms since the Unix epoch (Kafka's timestamps). */
int64_t fl_wall_ms(void);
/* Sleeps ms milliseconds (interrupted sleeps are not resumed). */
void fl_sleep_ms(int ms);

/* Writes n bytes to path atomically: a temp file beside it, fsync, rename over path, fsync
 * the directory. Either the old or the complete new file is visible after a crash.
 * Returns 0 or -errno. */
int fl_write_atomic(const char *path, const void *buf, size_t n);

/* Reads a whole file into a fresh buffer (caller frees). Returns 0 or -errno. */
int fl_read_file(const char *path, void **buf, size_t *n);

/* 1 if the file at path contains needle, 0 if not or unreadable (logs, in tests and benches). */
int fl_file_contains(const char *path, const char *needle);

/* CRC-32 (zlib's polynomial, as zip uses): crc = fl_crc32(0, buf, n) for a fresh sum. */
uint32_t fl_crc32(uint32_t crc, const void *buf, size_t n);

/* Deterministic random numbers. fl_rng is a small sequential generator (splitmix64) for
 * initialisation and shuffling; fl_hash64 is a counter-based generator: the same inputs give
 * the same bits on any thread, which is how dropout masks are regenerated in backward
 * instead of being stored. */
typedef struct {
  uint64_t s; /* state */
} fl_rng;
void fl_rng_seed(fl_rng *r, uint64_t seed);
uint64_t fl_rng_u64(fl_rng *r);
double fl_rng_uniform(fl_rng *r);             /* [0, 1) */
float fl_rng_normal(fl_rng *r);               /* N(0, 1) */
uint64_t fl_rng_below(fl_rng *r, uint64_t n); /* [0, n), n > 0 */
/* Fisher-Yates shuffle of n elements of size bytes (size <= 64), drawing from r. */
void fl_shuffle(void *base, size_t n, size_t size, fl_rng *r);
static inline uint64_t fl_hash64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
/* A 64-bit hash of n bytes (FNV-1a, then fl_hash64's mixing), never 0: the same on every
 * machine, so two daemons pick the same ids by it. */
static inline uint64_t fl_hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
  return fl_hash64(h) | 1;
}

/* 1 when p[0..n) is valid UTF-8 (RFC 3629: shortest forms only, no surrogates, nothing above
 * U+10FFFF) holding no control character: no C0 (so no NUL), no DEL, no C1 (U+0080..U+009F).
 * What an id must be (stream_id_check adds the length bounds). */
int fl_utf8_clean(const void *p, size_t n);

/* Byte order of the project's binary formats (checkpoints, RocksDB keys and values, the
 * PyTorch zip), independent of the host's: p points at 4 or 8 bytes, any alignment.
 * Big-endian keys sort as their numbers do (RocksDB compares bytes); a float travels as its
 * IEEE-754 bits. */
static inline void fl_put_le32(void *p, uint32_t v) {
  unsigned char *b = p;
  for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static inline void fl_put_le64(void *p, uint64_t v) {
  fl_put_le32(p, (uint32_t)v);
  fl_put_le32((unsigned char *)p + 4, (uint32_t)(v >> 32));
}
static inline void fl_put_be32(void *p, uint32_t v) {
  unsigned char *b = p;
  for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (24 - 8 * i));
}
static inline uint16_t fl_get_le16(const void *p) {
  const unsigned char *b = p;
  return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t fl_get_le32(const void *p) {
  const unsigned char *b = p;
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t fl_get_le64(const void *p) {
  return (uint64_t)fl_get_le32(p) | (uint64_t)fl_get_le32((const unsigned char *)p + 4) << 32;
}
static inline uint32_t fl_get_be32(const void *p) {
  const unsigned char *b = p;
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static inline void fl_put_lef32(void *p, float f) {
  uint32_t v;
  memcpy(&v, &f, sizeof v);
  fl_put_le32(p, v);
}
static inline float fl_get_lef32(const void *p) {
  uint32_t v = fl_get_le32(p);
  float f;
  memcpy(&f, &v, sizeof f);
  return f;
}

#endif
