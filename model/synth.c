/* model/synth.c: the synthetic dataset generator (see model.h, "synthetic datasets", for the model
 * of a user).
 *
 * Design. A random permutation of the items is cut into topics of about SYNTH_TOPIC items;
 * each topic's slice is its ring, the order a user walks it in. Topic popularity follows a
 * Zipf-like law and walks start near the head of a ring more often than near its tail, so some
 * items are clearly more popular than others (popularity is a real, if weak, baseline). A
 * user's cursor in each of its tastes points at the next item it would take there; taking an
 * item moves the cursor 1-3 places on (mostly 1) or, rarely, to a random place. Items the user
 * already took are skipped, so a sequence never repeats an item and the true next item is
 * almost always the first unseen successor of the current one.
 *
 * Everything comes from one fl_rng seeded by the caller, so a file is reproducible. The file
 * is built in memory and written with fl_write_atomic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"

/* Items per topic (about). */
#define SYNTH_TOPIC 64
/* Per-step probabilities: switch to another of the user's tastes, take a random popular item
 * (noise), replace the current taste by a new topic (slow drift of interests). */
#define SYNTH_P_SWITCH 0.08
#define SYNTH_P_NOISE 0.05
#define SYNTH_P_NEWTASTE 0.01
/* Cursor moves after taking an item: +1, +2, +3, else a random place in the topic. */
#define SYNTH_P_STEP1 0.75
#define SYNTH_P_STEP2 0.12
#define SYNTH_P_STEP3 0.05
#define SYNTH_MAX_TASTES 3

typedef struct {
  fl_rng rng;
  size_t items;   /* NI */
  size_t K;       /* topics */
  int32_t *ring;  /* (items) topic k's ring is ring[tstart[k] .. tstart[k+1]) */
  size_t *tstart; /* (K + 1) */
  double *cum;    /* (K) cumulative topic weights, cum[K-1] = 1 */
  uint64_t *seen; /* (items + 1) the last user (index + 1) who took each item */
} synth_state;

/* A topic drawn by popularity (the first k with r < cum[k]). */
static size_t synth_topic(synth_state *st) {
  double r = fl_rng_uniform(&st->rng);
  size_t lo = 0, hi = st->K - 1;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r < st->cum[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* A starting place in topic k, skewed towards the head of the ring. */
static size_t synth_start(synth_state *st, size_t k) {
  double u = fl_rng_uniform(&st->rng);
  size_t S = st->tstart[k + 1] - st->tstart[k];
  return (size_t)(u * u * (double)S);
}

/* A popular item user `stamp` has not taken yet; the caller guarantees one exists. */
static int32_t synth_noise(synth_state *st, uint64_t stamp) {
  size_t k = synth_topic(st);
  int32_t it = st->ring[st->tstart[k] + synth_start(st, k)];
  if (st->seen[it] == stamp) {
    /* Rare: scan on from a random item. */
    size_t i = (size_t)fl_rng_below(&st->rng, st->items);
    while (st->seen[st->ring[i]] == stamp) i = (i + 1) % st->items;
    it = st->ring[i];
  }
  return it;
}

/* Appends the decimal digits of v. */
static char *synth_put_u64(char *p, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

int synth_write(const char *path, size_t users, size_t items, size_t mean_len, uint64_t seed) {
  if (users == 0 || items < 5 || items > INT32_MAX) return FL_ERANGE;
  size_t mean = mean_len < 5 ? 5 : mean_len;
  size_t maxlen = 10 * mean < items ? 10 * mean : items;

  synth_state st;
  fl_rng_seed(&st.rng, seed);
  st.items = items;
  st.K = (items + SYNTH_TOPIC / 2) / SYNTH_TOPIC;
  if (st.K == 0) st.K = 1;
  st.ring = xmalloc(items * sizeof *st.ring);
  st.tstart = xmalloc((st.K + 1) * sizeof *st.tstart);
  st.cum = xmalloc(st.K * sizeof *st.cum);
  st.seen = xcalloc(items + 1, sizeof *st.seen);

  /* Fisher-Yates: the rings are slices of a random permutation, so ids say nothing. */
  for (size_t i = 0; i < items; i++) st.ring[i] = (int32_t)(i + 1);
  for (size_t i = items - 1; i > 0; i--) {
    size_t j = (size_t)fl_rng_below(&st.rng, i + 1);
    int32_t t = st.ring[i];
    st.ring[i] = st.ring[j];
    st.ring[j] = t;
  }
  double total = 0;
  for (size_t k = 0; k < st.K; k++) {
    st.tstart[k] = k * items / st.K;
    total += pow((double)(k + 1), -0.7);
    st.cum[k] = total;
  }
  st.tstart[st.K] = items;
  for (size_t k = 0; k < st.K; k++) st.cum[k] /= total;
  st.cum[st.K - 1] = 1.0;

  size_t cap = 1 << 16, n = 0;
  char *buf = xmalloc(cap);
  for (size_t u = 0; u < users; u++) {
    uint64_t stamp = (uint64_t)u + 1;
    size_t ntastes = 1 + (size_t)fl_rng_below(&st.rng, SYNTH_MAX_TASTES);
    size_t taste[SYNTH_MAX_TASTES], cursor[SYNTH_MAX_TASTES];
    for (size_t j = 0; j < ntastes; j++) {
      taste[j] = synth_topic(&st);
      cursor[j] = synth_start(&st, taste[j]);
    }
    /* 5 + an exponential tail: mean `mean`, clipped to [5, maxlen]. */
    double extra = -log(1.0 - fl_rng_uniform(&st.rng)) * (double)(mean - 5);
    size_t len = 5 + (extra < (double)maxlen ? (size_t)extra : maxlen);
    if (len > maxlen) len = maxlen;

    /* A line: the user id and len items, at most 21 bytes each. */
    if (cap - n < (len + 1) * 21) {
      while (cap - n < (len + 1) * 21) cap *= 2;
      buf = xrealloc(buf, cap);
    }
    char *p = synth_put_u64(buf + n, stamp);
    size_t cur = 0;
    for (size_t t = 0; t < len; t++) {
      double r = fl_rng_uniform(&st.rng);
      int32_t it = 0;
      if (t > 0 && r < SYNTH_P_NOISE) {
        it = synth_noise(&st, stamp);
      } else {
        if (t > 0 && r < SYNTH_P_NOISE + SYNTH_P_SWITCH) {
          if (ntastes > 1) cur = (cur + 1 + (size_t)fl_rng_below(&st.rng, ntastes - 1)) % ntastes;
        } else if (t > 0 && r < SYNTH_P_NOISE + SYNTH_P_SWITCH + SYNTH_P_NEWTASTE) {
          taste[cur] = synth_topic(&st);
          cursor[cur] = synth_start(&st, taste[cur]);
        }
        /* The first item at or after the cursor that the user has not taken; a topic the
         * user has exhausted is replaced by a fresh one (a few tries, then noise). */
        for (int tries = 0; tries < 4 && it == 0; tries++) {
          size_t k = taste[cur], base = st.tstart[k], S = st.tstart[k + 1] - base;
          for (size_t s = 0; s < S; s++) {
            size_t c = (cursor[cur] + s) % S;
            if (st.seen[st.ring[base + c]] != stamp) {
              it = st.ring[base + c];
              cursor[cur] = c;
              break;
            }
          }
          if (it == 0) {
            taste[cur] = synth_topic(&st);
            cursor[cur] = synth_start(&st, taste[cur]);
          }
        }
        if (it == 0) it = synth_noise(&st, stamp);
        /* Move the cursor on past the item just taken. */
        size_t k = taste[cur], S = st.tstart[k + 1] - st.tstart[k];
        double m = fl_rng_uniform(&st.rng);
        if (m < SYNTH_P_STEP1)
          cursor[cur] = (cursor[cur] + 1) % S;
        else if (m < SYNTH_P_STEP1 + SYNTH_P_STEP2)
          cursor[cur] = (cursor[cur] + 2) % S;
        else if (m < SYNTH_P_STEP1 + SYNTH_P_STEP2 + SYNTH_P_STEP3)
          cursor[cur] = (cursor[cur] + 3) % S;
        else
          cursor[cur] = (size_t)fl_rng_below(&st.rng, S);
      }
      st.seen[it] = stamp;
      *p++ = ' ';
      p = synth_put_u64(p, (uint64_t)it);
    }
    *p++ = '\n';
    n = (size_t)(p - buf);
  }

  int rc = fl_write_atomic(path, buf, n);
  free(buf);
  free(st.seen);
  free(st.cum);
  free(st.tstart);
  free(st.ring);
  return rc;
}
