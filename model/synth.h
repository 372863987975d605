/* model/synth.h: synthetic datasets with learnable sequential structure (internal to the
 * model module, its tests, benchmarks and the `flame` tool).
 *
 * Items are split into topics; each topic is a ring of items. A user has 1-3 tastes (topics,
 * popular topics more likely) and walks forward along the ring of its current taste, usually
 * to the very next item, sometimes skipping one or two, now and then jumping within the
 * topic, switching to another of its tastes, or picking a random popular item. A user never
 * sees an item twice (as in ml-1m), so the default protocol's exclusion of history items never
 * hides a target. The next item is thus strongly predicted by the current one (a first-order
 * model or a SASRec beats popularity by far), while popularity alone is weak. */
#ifndef FL_MODEL_SYNTH_H
#define FL_MODEL_SYNTH_H

#include <stddef.h>
#include <stdint.h>

/* Writes a dataset of `users` lines `user item item ...` (user ids 1..users in order, item ids
 * in 1..items) to path, atomically. Lengths vary around mean_len (at least 5 items per user,
 * at most min(items, 10 * max(mean_len, 5))). The same arguments give the same file byte for byte.
 * Returns 0, FL_ERANGE for unusable sizes (users = 0, items < 5 or > 2^31-1), or -errno from
 * writing. */
int synth_write(const char *path, size_t users, size_t items, size_t mean_len, uint64_t seed);

#endif
