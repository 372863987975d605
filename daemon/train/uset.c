/* daemon/train/uset.c: a set of user ids with counts (open addressing on fl_hash_bytes, the ids
 * back to back in one buffer): the users touched since the last round and how many of their
 * events are new, the users a round held out, the ids a round reads. */
#include "daemon/train/internal.h"

#include <stdlib.h>
#include <string.h>

/* Slot of id, or the empty slot where it would go (cap > 0). */
static size_t probe(const uset *s, const char *id, size_t len, uint64_t h) {
  size_t i = h & (s->cap - 1);
  while (s->hash[i]) {
    const uset_slot *e = &s->slot[i];
    if (s->hash[i] == h && e->len == len && memcmp(s->bytes + e->off, id, len) == 0) return i;
    i = (i + 1) & (s->cap - 1);
  }
  return i;
}

static void grow(uset *s) {
  size_t cap = s->cap ? 2 * s->cap : 1024;
  uset g = {
      .hash = xcalloc(cap, sizeof *g.hash), .slot = xmalloc(cap * sizeof *g.slot), .cap = cap};
  g.bytes = s->bytes; /* the ids stay where they are: only the slots move */
  g.nbytes = s->nbytes;
  g.bytes_cap = s->bytes_cap;
  for (size_t i = 0; i < s->cap; i++) {
    if (!s->hash[i]) continue;
    size_t j = s->hash[i] & (cap - 1);
    while (g.hash[j]) j = (j + 1) & (cap - 1);
    g.hash[j] = s->hash[i];
    g.slot[j] = s->slot[i];
  }
  g.n = s->n;
  free(s->hash);
  free(s->slot);
  *s = g;
}

void train__uset_add(uset *s, const char *id, size_t len, uint32_t k) {
  if (2 * (s->n + 1) > s->cap) grow(s);
  uint64_t h = fl_hash_bytes(id, len);
  size_t i = probe(s, id, len, h);
  if (!s->hash[i]) {
    if (s->nbytes + len > s->bytes_cap) {
      while (s->nbytes + len > s->bytes_cap) s->bytes_cap = s->bytes_cap ? 2 * s->bytes_cap : 16384;
      s->bytes = xrealloc(s->bytes, s->bytes_cap);
    }
    memcpy(s->bytes + s->nbytes, id, len);
    s->hash[i] = h;
    s->slot[i] = (uset_slot){.off = s->nbytes, .len = (uint32_t)len, .cnt = 0};
    s->nbytes += len;
    s->n++;
  }
  uint32_t *c = &s->slot[i].cnt;
  *c = *c > UINT32_MAX - k ? UINT32_MAX : *c + k;
}

void train__uset_merge(uset *dst, const uset *src) {
  for (size_t i = 0; i < src->cap; i++)
    if (src->hash[i])
      train__uset_add(dst, src->bytes + src->slot[i].off, src->slot[i].len, src->slot[i].cnt);
}

uint32_t train__uset_get(const uset *s, const char *id, size_t len) {
  if (!s->cap) return 0;
  size_t i = probe(s, id, len, fl_hash_bytes(id, len));
  return s->hash[i] ? s->slot[i].cnt : 0;
}

const char *train__uset_at(const uset *s, size_t i, size_t *len) {
  if (i >= s->cap || !s->hash[i]) return NULL;
  *len = s->slot[i].len;
  return s->bytes + s->slot[i].off;
}

void train__uset_free(uset *s) {
  free(s->hash);
  free(s->slot);
  free(s->bytes);
  memset(s, 0, sizeof *s);
}
