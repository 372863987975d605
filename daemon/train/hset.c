/* daemon/train/hset.c: a map from 64-bit hashes to counts (open addressing, 0 = empty): the
 * users touched since the last round and how many of their events are new. */
#define _GNU_SOURCE
#include "daemon/train/internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void train__hset_add(hset *s, uint64_t h, uint32_t k) {
  if (2 * (s->n + 1) > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 1024;
    hset g = {xcalloc(cap, sizeof(uint64_t)), xcalloc(cap, sizeof(uint32_t)), cap, 0};
    train__hset_merge(&g, s);
    free(s->slot);
    free(s->cnt);
    *s = g;
  }
  size_t i = h & (s->cap - 1);
  while (s->slot[i] && s->slot[i] != h) i = (i + 1) & (s->cap - 1);
  if (!s->slot[i]) {
    s->slot[i] = h;
    s->n++;
  }
  s->cnt[i] = s->cnt[i] > UINT32_MAX - k ? UINT32_MAX : s->cnt[i] + k;
}

/* Adds every entry of src to dst (counts of a hash in both add up). */
void train__hset_merge(hset *dst, const hset *src) {
  for (size_t i = 0; i < src->cap; i++)
    if (src->slot[i]) train__hset_add(dst, src->slot[i], src->cnt[i]);
}

/* The count of h (0: absent). */
uint32_t train__hset_get(const hset *s, uint64_t h) {
  if (!s->cap) return 0;
  size_t i = h & (s->cap - 1);
  while (s->slot[i]) {
    if (s->slot[i] == h) return s->cnt[i];
    i = (i + 1) & (s->cap - 1);
  }
  return 0;
}

void train__hset_free(hset *s) {
  free(s->slot);
  free(s->cnt);
  memset(s, 0, sizeof *s);
}
