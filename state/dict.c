/* state/dict.c: the dictionaries' string hash table (see internal.h).
 *
 * Open addressing with linear probing over 8-byte slots (index, hash tag), at most half full:
 * a lookup costs one hash of the id and, almost always, one slot read and one memcmp. Ids are
 * stored once, back to back, and reached through their index, so the table itself holds no
 * pointers and a rehash moves only slots. Removal is newest first only (a batch's rollback),
 * which needs no tombstones. */
#include "state/internal.h"

#include "common/common.h"

#include <stdlib.h>
#include <string.h>

/* A multiply-xorshift over 8-byte words: ids are short (most under 32 bytes), so this beats a
 * byte-at-a-time hash, and the seed keeps outside ids from choosing collisions. */
static uint64_t dict_hash(uint64_t seed, const char *s, size_t n) {
  uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, s, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    s += 8;
    n -= 8;
  }
  uint64_t w = 0;
  memcpy(&w, s, n);
  h = (h ^ w) * 0x94d049bb133111ebull;
  return fl_hash64(h);
}

static inline uint32_t dict_len(const state__dict *d, uint32_t idx) {
  return (uint32_t)(d->off[idx + 1] - d->off[idx]);
}

void state__dict_init(state__dict *d, uint64_t seed) {
  memset(d, 0, sizeof *d);
  d->seed = seed;
  d->mask = 15;
  d->slot = xcalloc(d->mask + 1, sizeof *d->slot);
  d->off_cap = 16;
  d->off = xcalloc(d->off_cap, sizeof *d->off);
  d->bytes_cap = 4096;
  d->bytes = xmalloc(d->bytes_cap);
}

void state__dict_free(state__dict *d) {
  free(d->slot);
  free(d->off);
  free(d->bytes);
  memset(d, 0, sizeof *d);
}

/* Position of id in the table, or of the empty slot where it would go. */
static size_t dict_probe(const state__dict *d, const char *id, size_t len, uint64_t h) {
  uint32_t tag = (uint32_t)(h >> 32);
  size_t pos = (size_t)h & d->mask;
  for (;;) {
    const state__slot *s = &d->slot[pos];
    if (s->idx == 0) return pos;
    if (s->tag == tag && dict_len(d, s->idx) == len &&
        memcmp(d->bytes + d->off[s->idx], id, len) == 0)
      return pos;
    pos = (pos + 1) & d->mask;
  }
}

int64_t state__dict_find(const state__dict *d, const char *id, size_t len) {
  size_t pos = dict_probe(d, id, len, dict_hash(d->seed, id, len));
  return d->slot[pos].idx ? (int64_t)d->slot[pos].idx : -1;
}

/* Doubles the table, reinserting in index order (see the file comment). */
static void dict_grow(state__dict *d) {
  size_t cap = (d->mask + 1) * 2;
  free(d->slot);
  d->slot = xcalloc(cap, sizeof *d->slot);
  d->mask = cap - 1;
  for (uint32_t i = 1; i <= d->n; i++) {
    const char *id = d->bytes + d->off[i];
    uint64_t h = dict_hash(d->seed, id, dict_len(d, i));
    size_t pos = (size_t)h & d->mask;
    while (d->slot[pos].idx) pos = (pos + 1) & d->mask;
    d->slot[pos] = (state__slot){i, (uint32_t)(h >> 32)};
  }
}

/* Stores the id bytes as index n + 1 (no table update). */
static uint32_t dict_store(state__dict *d, const char *id, size_t len) {
  uint32_t idx = d->n + 1;
  if ((size_t)idx + 2 > d->off_cap) {
    d->off_cap *= 2;
    d->off = xrealloc(d->off, d->off_cap * sizeof *d->off);
  }
  uint64_t end = d->off[idx] + len;
  if (end > d->bytes_cap) {
    size_t cap = d->bytes_cap;
    while (cap < end) cap *= 2;
    d->bytes = xrealloc(d->bytes, cap);
    d->bytes_cap = cap;
  }
  memcpy(d->bytes + d->off[idx], id, len);
  d->off[idx + 1] = end;
  d->n = idx;
  return idx;
}

static uint32_t dict_insert(state__dict *d, const char *id, size_t len, uint64_t h, size_t pos) {
  if (((size_t)d->n + 1) * 2 > d->mask + 1) {
    dict_grow(d);
    pos = dict_probe(d, id, len, h);
  }
  uint32_t idx = dict_store(d, id, len);
  d->slot[pos] = (state__slot){idx, (uint32_t)(h >> 32)};
  return idx;
}

uint32_t state__dict_intern(state__dict *d, const char *id, size_t len, int *added) {
  uint64_t h = dict_hash(d->seed, id, len);
  size_t pos = dict_probe(d, id, len, h);
  *added = 0;
  if (d->slot[pos].idx) return d->slot[pos].idx;
  if (d->n == UINT32_MAX) return 0;
  *added = 1;
  return dict_insert(d, id, len, h, pos);
}

uint32_t state__dict_append(state__dict *d, const char *id, size_t len) {
  if (d->n == UINT32_MAX) return 0;
  uint64_t h = dict_hash(d->seed, id, len);
  return dict_insert(d, id, len, h, dict_probe(d, id, len, h));
}

const char *state__dict_id(const state__dict *d, uint32_t idx, size_t *len) {
  if (idx == 0 || idx > d->n) return NULL;
  *len = dict_len(d, idx);
  return d->bytes + d->off[idx];
}

void state__dict_truncate(state__dict *d, uint32_t n) {
  while (d->n > n) {
    uint32_t idx = d->n;
    const char *id = d->bytes + d->off[idx];
    uint64_t h = dict_hash(d->seed, id, dict_len(d, idx));
    size_t pos = (size_t)h & d->mask;
    while (d->slot[pos].idx != idx) pos = (pos + 1) & d->mask;
    d->slot[pos].idx = 0;
    d->n--;
  }
}

size_t state__dict_mem(const state__dict *d) {
  return (d->mask + 1) * sizeof *d->slot + d->off_cap * sizeof *d->off + d->bytes_cap;
}
