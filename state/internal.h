/* state/internal.h: internals shared by the files of state/ and by tests/state/; not API.
 *
 * Two pieces live here: the dictionary (an open-addressing string hash table with dense
 * indices) and the binary format of sequence values with the merge operator that appends to
 * them. */
#ifndef FL_STATE_INTERNAL_H
#define FL_STATE_INTERNAL_H

#include "common/common.h"
#include "state/state.h"

#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- Dictionary: id bytes <-> dense index 1..n ----
 *
 * Ids live back to back in one byte buffer; off[i]..off[i+1] delimits id i. The hash table
 * holds (index, 32 hash bits) pairs with linear probing. Entries are only ever removed newest
 * first (state__dict_truncate), which lets a removal simply empty the slot: no entry inserted
 * earlier can have probed past a later one's slot, and a rehash reinserts in index order so
 * the table always looks as if built by sequential inserts. */
typedef struct {
  uint32_t idx; /* dense index, 0 = empty slot */
  uint32_t tag; /* high 32 bits of the id's hash: most mismatches end without touching bytes */
} state__slot;

typedef struct {
  state__slot *slot; /* [mask + 1], a power of two, at most half full */
  size_t mask;       /* slot count - 1 */
  uint32_t n;        /* entries = highest index */
  uint64_t *off;     /* [n + 2]: id i is bytes[off[i] .. off[i + 1]); off[0] unused */
  size_t off_cap;    /* capacity of off, entries */
  char *bytes;       /* every id, back to back */
  size_t bytes_cap;  /* capacity of bytes */
  uint64_t seed;     /* per-table hash seed: ids come from outside (hash flooding) */
} state__dict;

void state__dict_init(state__dict *d, uint64_t seed);
void state__dict_free(state__dict *d);
/* Index of id, or -1. */
int64_t state__dict_find(const state__dict *d, const char *id, size_t len);
/* Index of id, appending it as index n + 1 when absent (*added = 1). Returns 0 when the
 * table is full (UINT32_MAX entries); then nothing changed. */
uint32_t state__dict_intern(state__dict *d, const char *id, size_t len, int *added);
/* Appends id as index n + 1 without looking for it (the caller knows it is absent). */
uint32_t state__dict_append(state__dict *d, const char *id, size_t len);
/* Id bytes of idx (1..n) and their length; NULL for idx 0 or > n. */
const char *state__dict_id(const state__dict *d, uint32_t idx, size_t *len);
/* Removes every entry with index > n, newest first. */
void state__dict_truncate(state__dict *d, uint32_t n);
/* Bytes of heap the table uses. */
size_t state__dict_mem(const state__dict *d);

/* ---- Stored values ----
 *
 * Every stored value starts with a format byte, STATE__FMT. A sequence value and a merge
 * operand have the same layout: the format byte, then entries oldest first, each 16 bytes
 * little-endian: item u32, weight f32 (IEEE bits), ts_ms i64. */
#define STATE__FMT 1
#define STATE__ENTRY_BYTES 16

static inline void state__entry_put(char *p, const state_entry *e) {
  uint32_t w;
  memcpy(&w, &e->weight, 4);
  fl_put_le32(p, e->item);
  fl_put_le32(p + 4, w);
  fl_put_le64(p + 8, (uint64_t)e->ts_ms);
}
static inline void state__entry_get(state_entry *e, const char *p) {
  uint32_t w = fl_get_le32(p + 4);
  e->item = fl_get_le32(p);
  memcpy(&e->weight, &w, 4);
  e->ts_ms = (int64_t)fl_get_le64(p + 8);
}

/* Entries in a sequence value or operand, or -1 when its layout does not validate. */
static inline int64_t state__seq_count(const char *v, size_t n) {
  if (n < 1 || (unsigned char)v[0] != STATE__FMT || (n - 1) % STATE__ENTRY_BYTES != 0) return -1;
  return (int64_t)((n - 1) / STATE__ENTRY_BYTES);
}

/* ---- The merge operator of the "seq" column family ----
 *
 * Operands are appended entries; a full merge keeps the newest seq_len entries of
 * existing + operands, a partial merge concatenates operands and truncates the same way.
 * RocksDB owns the operator (and frees this state through its destructor) once it is set in
 * the options: keep the pointer only while the database is open. */
typedef struct {
  _Atomic size_t seq_len;       /* entries kept; stored with release before RocksDB may
                                 * call the operator on its threads, read with acquire there
                                 * (RocksDB's own hand-over is invisible to TSan) */
  atomic_uint_fast64_t dropped; /* corrupt existing values or operands dropped by full merges */
} state__merge;

/* A new operator with its state (written to *st). */
rocksdb_mergeoperator_t *state__merge_create(size_t seq_len, state__merge **st);

/* ---- Writes (writer.c) ----
 * A batch sealed into a WriteBatch of its own, and the write of one: the seal runs on the
 * owning thread (it reads the dictionaries), the write on any thread (rocksdb_write is
 * thread-safe, and the WriteBatch owns copies of every key and value). */

/* The batch's changes as a new WriteBatch (NULL when the batch is empty), *events its event
 * count; the batch is emptied for reuse and its dictionary entries count as stored: the
 * caller must write the sealed batches in the order sealed, retrying until each succeeds. */
rocksdb_writebatch_t *state__batch_seal(state_batch *b, size_t *events);
/* One rocksdb_write of wb (events: its event count, added to the stats on success). 0, or a
 * negative code with err filled. Honours state_test_fail_commits. */
int state__write(state_db *db, rocksdb_writebatch_t *wb, size_t events, char *err, size_t errlen);
/* The store's directory. */
const char *state__dir(const state_db *db);

#endif
