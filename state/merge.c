/* state/merge.c: the "seq" column family's merge operator (see internal.h for the format).
 *
 * Why a merge operator: a batch appends a few entries to thousands of users; rewriting each
 * user's whole sequence (up to seq_len x 16 bytes) would need a read and a full rewrite per
 * user per batch. A merge writes only the appended entries; RocksDB folds operands into the
 * stored value when it reads or compacts, and truncation to seq_len happens there.
 *
 * A merge must not fail: a failed full merge makes reads of the key and every compaction that
 * meets it fail, and a failed compaction stops the database's writes. So a full merge that
 * meets a value or operand that does not validate drops it, counts it, logs it (rate-limited,
 * these run on RocksDB's threads) and merges the rest. A partial merge, which RocksDB may
 * refuse freely, declines instead, leaving the decision to the full merge. */
#include "state/internal.h"

#include "common/common.h"

#include <stdlib.h>

static void merge_destroy(void *st) { free(st); }

static const char *merge_name(void *st) {
  (void)st;
  return "flame.seq_append";
}

static void merge_delete_value(void *st, const char *v, size_t n) {
  (void)st, (void)n;
  free((void *)v);
}

static void merge_note_dropped(state__merge *m, size_t key_len, size_t value_len) {
  uint_fast64_t k = atomic_fetch_add(&m->dropped, 1) + 1;
  if ((k & (k - 1)) == 0) /* 1, 2, 4, 8, ...: enough to notice, never a flood */
    fl_warn("state: dropped a corrupt stored sequence piece (%zu bytes, user id of %zu bytes) "
            "while merging; %llu so far",
            value_len, key_len, (unsigned long long)k);
}

/* Builds a value of the newest min(seq_len, total) entries of src[0..n) (oldest first,
 * src[i] = NULL for a source to skip). */
static char *merge_build(const state__merge *m, const char *const *src, const size_t *len, int n,
                         size_t *out_len) {
  size_t need = atomic_load_explicit(&m->seq_len, memory_order_acquire), have = 0;
  int first = n; /* oldest source that contributes */
  size_t first_take = 0;
  for (int i = n - 1; i >= 0 && have < need; i--) {
    if (!src[i]) continue;
    size_t c = (size_t)state__seq_count(src[i], len[i]);
    size_t take = c < need - have ? c : need - have;
    have += take;
    first = i;
    first_take = take;
  }
  char *v = xmalloc(1 + have * STATE__ENTRY_BYTES);
  char *p = v;
  *p++ = STATE__FMT;
  for (int i = first; i < n; i++) {
    if (!src[i]) continue;
    size_t c = (size_t)state__seq_count(src[i], len[i]);
    size_t take = i == first ? first_take : c;
    memcpy(p, src[i] + 1 + (c - take) * STATE__ENTRY_BYTES, take * STATE__ENTRY_BYTES);
    p += take * STATE__ENTRY_BYTES;
  }
  *out_len = (size_t)(p - v);
  return v;
}

static char *merge_full(void *st, const char *key, size_t key_len, const char *existing,
                        size_t existing_len, const char *const *ops, const size_t *ops_len,
                        int nops, unsigned char *success, size_t *new_len) {
  state__merge *m = st;
  (void)key;
  /* Sources oldest first: the existing value (if any), then the operands. */
  const char **src = xmalloc(((size_t)nops + 1) * sizeof *src);
  size_t *len = xmalloc(((size_t)nops + 1) * sizeof *len);
  int n = 0;
  if (existing) {
    int ok = state__seq_count(existing, existing_len) >= 0;
    if (!ok) merge_note_dropped(m, key_len, existing_len);
    src[n] = ok ? existing : NULL;
    len[n++] = existing_len;
  }
  for (int i = 0; i < nops; i++) {
    int ok = state__seq_count(ops[i], ops_len[i]) >= 0;
    if (!ok) merge_note_dropped(m, key_len, ops_len[i]);
    src[n] = ok ? ops[i] : NULL;
    len[n++] = ops_len[i];
  }
  char *v = merge_build(m, src, len, n, new_len);
  free(src);
  free(len);
  *success = 1;
  return v;
}

static char *merge_partial(void *st, const char *key, size_t key_len, const char *const *ops,
                           const size_t *ops_len, int nops, unsigned char *success,
                           size_t *new_len) {
  (void)key, (void)key_len;
  for (int i = 0; i < nops; i++) {
    if (state__seq_count(ops[i], ops_len[i]) < 0) {
      *success = 0;
      *new_len = 0;
      return xmalloc(1); /* RocksDB assigns from it before looking at success */
    }
  }
  *success = 1;
  return merge_build(st, (const char *const *)ops, ops_len, nops, new_len);
}

rocksdb_mergeoperator_t *state__merge_create(size_t seq_len, state__merge **st) {
  state__merge *m = xcalloc(1, sizeof *m);
  atomic_store_explicit(&m->seq_len, seq_len, memory_order_release);
  atomic_init(&m->dropped, 0);
  *st = m;
  return rocksdb_mergeoperator_create(m, merge_destroy, merge_full, merge_partial,
                                      merge_delete_value, merge_name);
}
