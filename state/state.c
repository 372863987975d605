/* state/state.c: the RocksDB store (see state.h for the contract).
 *
 * Layout: five column families.
 *   seq      user id -> sequence value: [fmt][entries oldest first, 16 bytes each]; written
 *            only by merges (merge.c), one operand per touched user per batch.
 *   items    'i' + item id -> [fmt][u32 LE index]; 'n' + u32 BE index -> [fmt][item id]
 *            (big-endian so the reverse entries iterate in index order).
 *   users    user id -> [fmt][u32 LE index][i64 LE first-seen ts_ms].
 *   offsets  topic + '\0' + u32 BE partition -> [fmt][i64 LE next offset].
 *   meta     "schema" -> [fmt][u32 LE schema version];
 *            "counters" -> [fmt][u64 LE events][u32 LE items][u32 LE users].
 * fmt is the format byte STATE__FMT; every value is validated before use.
 *
 * Dictionaries live in memory (dict.c), loaded and cross-checked at open: the reverse item
 * entries must run 1..n without a gap, every forward entry must agree with them, and both
 * counts must equal the counters stored in the same WriteBatches. An index is assigned at
 * state_batch_add and stored by the commit of that batch; a clear rolls the table back.
 *
 * The seq family has its own memtable (hashed on the user id) and merge operator: see
 * build_options and merge.c.
 *
 * Crash safety comes from one rocksdb_write per batch. With the WAL on, recovery replays whole
 * batches across all column families. atomic_flush is on as well, so that with the WAL off the
 * column families are flushed together and never disagree after a crash, and so that the tiny
 * column families never pin old WAL files. */
#define _GNU_SOURCE
#include "state/state.h"

#include "common/common.h"
#include "state/internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE__SCHEMA 1 /* layout version stored in meta "schema" */

enum { CF_SEQ, CF_ITEMS, CF_USERS, CF_OFFSETS, CF_META, CF_N };
static const char *const cf_names[CF_N] = {"seq", "items", "users", "offsets", "meta"};

struct state_db {
  rocksdb_t *rdb;
  rocksdb_options_t *opts;                  /* the database and every family but seq */
  rocksdb_options_t *seq_opts;              /* seq: merge operator, hashed memtable */
  rocksdb_cache_t *cache;                   /* block cache, NULL when cache_mb = 0 */
  rocksdb_column_family_handle_t *cf[CF_N]; /* ours, by CF_* */
  rocksdb_column_family_handle_t **handles; /* every opened family (default, unknown ones) */
  size_t nhandles;                          /* entries of handles */
  rocksdb_readoptions_t *ro;                /* point reads */
  rocksdb_readoptions_t *ro_scan;           /* full scans: do not fill the block cache */
  rocksdb_writeoptions_t *wo;               /* commits */
  rocksdb_writeoptions_t *wo_bad;           /* sync without WAL: state_test_fail_commits */
  state__merge *merge;                      /* owned by the merge operator */
  char *dir;                                /* o->dir, copied */
  size_t seq_len;                           /* entries kept per user */
  state__dict items, users;                 /* dictionaries, committed + current batch */
  _Atomic uint64_t events;                  /* events written (any thread may write) */
  uint64_t sealed;                          /* events committed or handed to the writer:
                                             * the meta counter of the next batch starts here
                                             * (owning thread) */
  atomic_int fail_commits;                  /* test hook: writes left to fail */
  state_batch *batch;                       /* the one live batch, or NULL */
};

typedef struct {
  uint32_t slot; /* the user's slot in the batch */
  uint32_t item; /* dense item index */
  float weight;  /* event weight */
  int64_t ts_ms; /* event time */
} batch_event;

typedef struct {
  char topic[STATE_TOPIC_MAX + 1]; /* NUL-terminated */
  int32_t partition;               /* >= 0 */
  int64_t next;                    /* next offset to consume */
} batch_offset;

struct state_batch {
  state_db *db;
  rocksdb_writebatch_t *wb;     /* rebuilt by every synchronous commit attempt */
  rocksdb_writebatch_t *wb_out; /* the one batch_build is filling */
  batch_event *ev;              /* [nev] events in arrival order */
  size_t nev, ev_cap;
  /* Users touched by this batch: slot s has user slot_user[s] and slot_n[s] events; a map
   * from user index to slot (open addressing, keys 0 = empty) finds them, and slot_pos[s]
   * remembers where s sits in it so a reset empties exactly the used positions. */
  uint32_t *slot_user, *slot_n;
  size_t *slot_pos;
  size_t nslot, slot_cap;
  uint32_t *map_key, *map_slot; /* [map_mask + 1] */
  size_t map_mask;
  /* Dictionary sizes when the batch started: entries above them are the batch's own. */
  uint32_t item_base, user_base;
  int64_t *new_user_ts; /* first-seen ts of user user_base + 1 + i */
  size_t new_user_cap;
  batch_offset *off; /* [noff] */
  size_t noff, off_cap;
  /* Commit scratch: per-slot operand start and progress, and the operand bytes. */
  size_t *scr_start;
  uint32_t *scr_seen;
  char *scr;
  size_t scr_cap;
};

/* ---- helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* The code for a RocksDB error message. Order matters: a lock held elsewhere may also read
 * "Permission denied" on some systems, while "While open a file for lock" with EACCES is a
 * permission problem. */
static int rocks_code(const char *msg) {
  if (strstr(msg, "lock hold by current process") || strstr(msg, "While lock file"))
    return FL_ELOCKED;
  if (strstr(msg, "Permission denied")) return -EACCES;
  if (strstr(msg, "No space left")) return -ENOSPC;
  if (strncmp(msg, "Corruption:", 11) == 0) return FL_ECORRUPT;
  /* CURRENT names a MANIFEST that is gone. */
  if (strstr(msg, "/MANIFEST-") && strstr(msg, "No such file")) return FL_ECORRUPT;
  return FL_ESTORAGE;
}

/* Takes a RocksDB error string: returns its code, writes "state: <what>: <msg>" to err, and
 * frees it. */
static int rocks_fail(char *rerr, char *err, size_t errlen, const char *what) {
  int code = rocks_code(rerr);
  const char *hint = code == FL_ELOCKED ? " (is another flamed using this directory?)" : "";
  set_err(err, errlen, "state: %s: %s%s", what, rerr, hint);
  rocksdb_free(rerr);
  return code;
}

static uint64_t random_seed(void) {
  uint64_t s;
  if (getrandom(&s, sizeof s, GRND_NONBLOCK) == (ssize_t)sizeof s) return s;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return fl_hash64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid());
}

/* Point read into a malloc'd copy (*val, *len); 1 found, 0 missing, < 0 error. */
static int get_value(state_db *db, int cf, const char *key, size_t klen, char **val, size_t *len,
                     char *err, size_t errlen) {
  char *rerr = NULL;
  *val = rocksdb_get_cf(db->rdb, db->ro, db->cf[cf], key, klen, len, &rerr);
  if (rerr) return rocks_fail(rerr, err, errlen, db->dir);
  return *val != NULL;
}

/* ---- open ---- */

/* Creates dir if missing and checks access. */
static int prepare_dir(const char *dir, char *err, size_t errlen) {
  struct stat st;
  if (stat(dir, &st) != 0) {
    if (errno != ENOENT) {
      int e = errno;
      set_err(err, errlen, "state: %s: %s", dir, strerror(e));
      return -e;
    }
    if (mkdir(dir, 0750) != 0) {
      int e = errno;
      set_err(err, errlen, "state: cannot create %s: %s%s", dir, strerror(e),
              e == ENOENT ? " (its parent directory must exist)" : "");
      return -e;
    }
    return 0;
  }
  if (!S_ISDIR(st.st_mode)) {
    set_err(err, errlen, "state: %s is not a directory", dir);
    return -ENOTDIR;
  }
  if (access(dir, R_OK | W_OK | X_OK) != 0) {
    int e = errno;
    set_err(err, errlen, "state: %s: %s (the store needs read, write and search access)", dir,
            strerror(e));
    return -e;
  }
  return 0;
}

static int has_suffix(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

/* 1 when dir has a CURRENT file; 0 when it has none and no data files either (a new store);
 * FL_ECORRUPT when SST or WAL files exist without CURRENT, where RocksDB would silently start
 * an empty database beside them. */
static int check_current(const char *dir, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/CURRENT", dir);
  if (access(path, F_OK) == 0) return 1;
  DIR *d = opendir(dir);
  if (!d) {
    int e = errno;
    set_err(err, errlen, "state: %s: %s", dir, strerror(e));
    return -e;
  }
  struct dirent *de;
  const char *found = NULL;
  while ((de = readdir(d)) != NULL) {
    if (has_suffix(de->d_name, ".sst") || has_suffix(de->d_name, ".log")) {
      found = de->d_name;
      break;
    }
  }
  int rc = 0;
  if (found) {
    set_err(err, errlen,
            "state: %s: no CURRENT file but RocksDB data files (%s) are present: the store is "
            "damaged; restore it or move it away",
            dir, found);
    rc = FL_ECORRUPT;
  }
  closedir(d);
  return rc;
}

/* The seq family's prefix extractor: the whole key (a user id), so its memtable hashes users
 * (see build_options). */
static char *whole_key(void *st, const char *key, size_t n, size_t *out_n) {
  (void)st;
  *out_n = n;
  return (char *)key; /* RocksDB wraps it in a Slice at once; nothing to free */
}
static unsigned char whole_key_in_domain(void *st, const char *key, size_t n) {
  (void)st, (void)key, (void)n;
  return 1;
}
static unsigned char whole_key_in_range(void *st, const char *key, size_t n) {
  (void)st, (void)key, (void)n;
  return 0;
}
static const char *whole_key_name(void *st) {
  (void)st;
  return "flame.whole_key";
}
static void whole_key_destroy(void *st) { (void)st; }

static void build_options(state_db *db, const state_opts *o) {
  static const int compression[] = {rocksdb_no_compression, rocksdb_snappy_compression,
                                    rocksdb_lz4_compression, rocksdb_zstd_compression};
  rocksdb_options_t *opts = rocksdb_options_create();
  db->opts = opts;
  rocksdb_options_set_create_if_missing(opts, 1);
  rocksdb_options_set_create_missing_column_families(opts, 1);
  rocksdb_options_set_atomic_flush(opts, 1); /* see the file comment */
  rocksdb_options_set_compression(opts, compression[o->compression]);
  /* Level sizes follow the data, which keeps space amplification near 1.1. */
  rocksdb_options_set_level_compaction_dynamic_level_bytes(opts, 1);
  /* The daemon runs on a couple of cores beside the trainer: two background jobs. */
  rocksdb_options_set_max_background_jobs(opts, 2);
  /* RocksDB's own LOG files, bounded. Kept out of the store's directory when o->log_dir is
   * set: Debian's RocksDB is built with assertions on, and a LOG write that fails on a full
   * state disk aborts the process (WritableFileWriter's sync_without_flush_called_). */
  rocksdb_options_set_keep_log_file_num(opts, 4);
  rocksdb_options_set_max_log_file_size(opts, 4 << 20);
  if (o->log_dir && *o->log_dir) rocksdb_options_set_db_log_dir(opts, o->log_dir);
  /* 16 MiB memtables (instead of 64): a restart replays at most about that much WAL (a few
   * hundred ms), and a read merges fewer unflushed operands. */
  rocksdb_options_set_write_buffer_size(opts, 16 << 20);
  /* One writer at a time (the writer thread, state.h), and the hashed memtable below
   * requires this. */
  rocksdb_options_set_allow_concurrent_memtable_write(opts, 0);

  rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
  if (o->cache_mb) {
    db->cache = rocksdb_cache_create_lru(o->cache_mb << 20);
    rocksdb_block_based_options_set_block_cache(t, db->cache);
  } else {
    rocksdb_block_based_options_set_no_block_cache(t, 1);
  }
  /* Reads of users with no stored sequence (new users) skip SST files without a block read. */
  rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(10));
  rocksdb_options_set_block_based_table_factory(opts, t);
  rocksdb_block_based_options_destroy(t);

  /* seq: a batch inserts one merge per touched user, in random key order as far as the
   * memtable is concerned. In the default skiplist memtable each such insert descends ~10
   * levels of cache misses: that was 2/3 of a commit on MovieLens (3,700 users per batch of
   * 10,000 events). A memtable hashed on the user id (a prefix extractor returning the whole
   * key) with a sorted list per bucket finds the user's bucket at once and puts the new
   * operand first in it, as it sorts before the user's older ones: the writer's CPU per event
   * went from ~1.8 to ~0.7 us. The price: a flush or a full scan first sorts the memtable
   * (cheap, the buckets being sorted already; a flush does it on RocksDB's thread), and scans
   * must ask for total order (ro_scan). A bucket that grows past 256 entries becomes a
   * skiplist by itself. */
  db->seq_opts = rocksdb_options_create_copy(opts);
  rocksdb_options_set_prefix_extractor(
      db->seq_opts,
      rocksdb_slicetransform_create(NULL, whole_key_destroy, whole_key, whole_key_in_domain,
                                    whole_key_in_range, whole_key_name));
  rocksdb_options_set_hash_link_list_rep(db->seq_opts, 100003);
  rocksdb_options_set_merge_operator(db->seq_opts, state__merge_create(o->seq_len, &db->merge));

  db->ro = rocksdb_readoptions_create();
  db->ro_scan = rocksdb_readoptions_create();
  rocksdb_readoptions_set_fill_cache(db->ro_scan, 0);
  rocksdb_readoptions_set_total_order_seek(db->ro_scan, 1);
  db->wo = rocksdb_writeoptions_create();
  rocksdb_writeoptions_disable_WAL(db->wo, !o->wal);
  rocksdb_writeoptions_set_sync(db->wo, (unsigned char)(o->wal && o->sync));
  db->wo_bad = rocksdb_writeoptions_create();
  rocksdb_writeoptions_disable_WAL(db->wo_bad, 1);
  rocksdb_writeoptions_set_sync(db->wo_bad, 1);
}

static int open_rocks(state_db *db, int exists, char *err, size_t errlen) {
  char *rerr = NULL;
  char **listed = NULL;
  size_t nlisted = 0;
  if (exists) {
    listed = rocksdb_list_column_families(db->opts, db->dir, &nlisted, &rerr);
    if (rerr) {
      rocksdb_list_column_families_destroy(listed, nlisted);
      return rocks_fail(rerr, err, errlen, db->dir);
    }
  }
  /* Every existing family must be opened; ours are added when missing. */
  size_t cap = nlisted + CF_N + 1, n = 0;
  const char **names = xmalloc(cap * sizeof *names);
  names[n++] = "default";
  for (size_t i = 0; i < nlisted; i++)
    if (strcmp(listed[i], "default") != 0) names[n++] = listed[i];
  for (int c = 0; c < CF_N; c++) {
    size_t i = 1;
    while (i < n && strcmp(names[i], cf_names[c]) != 0) i++;
    if (i == n) names[n++] = cf_names[c];
  }
  const rocksdb_options_t **cfo = xmalloc(n * sizeof *cfo);
  for (size_t i = 0; i < n; i++) cfo[i] = strcmp(names[i], "seq") == 0 ? db->seq_opts : db->opts;
  db->handles = xcalloc(n, sizeof *db->handles);
  db->rdb = rocksdb_open_column_families(db->opts, db->dir, (int)n, names, cfo, db->handles, &rerr);
  int rc = 0;
  if (rerr) {
    rc = rocks_fail(rerr, err, errlen, db->dir);
  } else {
    db->nhandles = n;
    for (size_t i = 0; i < n; i++)
      for (int c = 0; c < CF_N; c++)
        if (strcmp(names[i], cf_names[c]) == 0) db->cf[c] = db->handles[i];
  }
  free(cfo);
  free(names);
  rocksdb_list_column_families_destroy(listed, nlisted);
  return rc;
}

/* 1 when none of our column families holds a key. */
static int all_empty(state_db *db) {
  for (int c = 0; c < CF_N; c++) {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->rdb, db->ro_scan, db->cf[c]);
    rocksdb_iter_seek_to_first(it);
    int valid = rocksdb_iter_valid(it);
    rocksdb_iter_destroy(it);
    if (valid) return 0;
  }
  return 1;
}

static void counters_value(char v[17], uint64_t events, uint32_t items, uint32_t users) {
  v[0] = STATE__FMT;
  fl_put_le64(v + 1, events);
  fl_put_le32(v + 9, items);
  fl_put_le32(v + 13, users);
}

/* Reads (or, for a new store, writes) the schema version and the counters. */
static int load_meta(state_db *db, uint32_t *items, uint32_t *users, char *err, size_t errlen) {
  char *v;
  size_t n;
  int rc = get_value(db, CF_META, "schema", 6, &v, &n, err, errlen);
  if (rc < 0) return rc;
  if (rc == 0) {
    if (!all_empty(db)) {
      set_err(err, errlen, "state: %s: data without a schema version: not a flamed store?",
              db->dir);
      return FL_ECORRUPT;
    }
    /* A new store (or one killed between its creation and this write: still empty). */
    char schema[5], counters[17], *rerr = NULL;
    schema[0] = STATE__FMT;
    fl_put_le32(schema + 1, STATE__SCHEMA);
    counters_value(counters, 0, 0, 0);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(wb, db->cf[CF_META], "schema", 6, schema, sizeof schema);
    rocksdb_writebatch_put_cf(wb, db->cf[CF_META], "counters", 8, counters, sizeof counters);
    rocksdb_write(db->rdb, db->wo, wb, &rerr);
    rocksdb_writebatch_destroy(wb);
    if (rerr) return rocks_fail(rerr, err, errlen, db->dir);
    *items = *users = 0;
    db->events = 0;
    db->sealed = 0;
    return 0;
  }
  int ok = n == 5 && (unsigned char)v[0] == STATE__FMT;
  uint32_t schema = ok ? fl_get_le32(v + 1) : 0;
  rocksdb_free(v);
  if (!ok) {
    set_err(err, errlen, "state: %s: malformed schema record in meta (%zu bytes)", db->dir, n);
    return FL_ECORRUPT;
  }
  if (schema != STATE__SCHEMA) {
    set_err(err, errlen, "state: %s: schema version %u, this build reads version %d only", db->dir,
            schema, STATE__SCHEMA);
    return FL_EVERSION;
  }
  rc = get_value(db, CF_META, "counters", 8, &v, &n, err, errlen);
  if (rc < 0) return rc;
  ok = rc == 1 && n == 17 && (unsigned char)v[0] == STATE__FMT;
  if (ok) {
    db->events = fl_get_le64(v + 1);
    db->sealed = db->events;
    *items = fl_get_le32(v + 9);
    *users = fl_get_le32(v + 13);
  }
  rocksdb_free(v);
  if (!ok) {
    set_err(err, errlen, "state: %s: meta counters %s", db->dir, rc == 1 ? "malformed" : "missing");
    return FL_ECORRUPT;
  }
  return 0;
}

static int iter_status(rocksdb_iterator_t *it, state_db *db, char *err, size_t errlen) {
  char *rerr = NULL;
  rocksdb_iter_get_error(it, &rerr);
  return rerr ? rocks_fail(rerr, err, errlen, db->dir) : 0;
}

static int load_items(state_db *db, uint32_t count, char *err, size_t errlen) {
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->rdb, db->ro_scan, db->cf[CF_ITEMS]);
  const char *what = NULL;
  size_t klen, vlen;
  /* Reverse entries first: they come in index order and must run 1..count. */
  for (rocksdb_iter_seek(it, "n", 1); !what && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    const char *k = rocksdb_iter_key(it, &klen);
    const char *v = rocksdb_iter_value(it, &vlen);
    if (klen < 1 || k[0] != 'n')
      what = "unknown key";
    else if (klen != 5 || fl_get_be32(k + 1) != db->items.n + 1 || db->items.n == count)
      what = "reverse entries not dense from 1";
    else if (vlen < 2 || vlen > STATE_ID_MAX + 1 || (unsigned char)v[0] != STATE__FMT)
      what = "malformed reverse entry";
    else if (state__dict_find(&db->items, v + 1, vlen - 1) >= 0)
      what = "two indices for one id";
    else
      state__dict_append(&db->items, v + 1, vlen - 1);
  }
  int rc = what ? 0 : iter_status(it, db, err, errlen);
  if (!what && !rc && db->items.n != count) what = "fewer reverse entries than the counter";
  /* Forward entries ('i' sorts before 'n') must agree with them, one for one. */
  uint32_t forward = 0;
  for (rocksdb_iter_seek_to_first(it); !what && !rc && rocksdb_iter_valid(it);
       rocksdb_iter_next(it)) {
    const char *k = rocksdb_iter_key(it, &klen);
    const char *v = rocksdb_iter_value(it, &vlen);
    if (klen >= 1 && k[0] == 'n') break;
    if (klen < 2 || klen > STATE_ID_MAX + 1 || k[0] != 'i')
      what = "unknown key";
    else if (vlen != 5 || (unsigned char)v[0] != STATE__FMT ||
             state__dict_find(&db->items, k + 1, klen - 1) != (int64_t)fl_get_le32(v + 1))
      what = "forward entry does not match the reverse one";
    else
      forward++;
  }
  if (!what && !rc) rc = iter_status(it, db, err, errlen);
  if (!what && !rc && forward != count) what = "forward entries missing";
  rocksdb_iter_destroy(it);
  if (what) {
    set_err(err, errlen, "state: %s: item dictionary corrupt (%s; %u of %u items loaded)", db->dir,
            what, db->items.n, count);
    return FL_ECORRUPT;
  }
  return rc;
}

typedef struct {
  uint32_t idx; /* user index from the stored value */
  uint32_t len; /* id length */
  size_t off;   /* id offset in the gathered bytes */
} user_rec;

static int user_rec_cmp(const void *a, const void *b) {
  uint32_t x = ((const user_rec *)a)->idx, y = ((const user_rec *)b)->idx;
  return (x > y) - (x < y);
}

static int load_users(state_db *db, uint32_t count, char *err, size_t errlen) {
  /* Keys come in id order: gather (index, id) records, sort them by index, check they run
   * 1..count, then insert in index order. Memory follows the data, never the (untrusted)
   * counter. */
  user_rec *rec = NULL;
  size_t nrec = 0, rec_cap = 0, nids = 0, ids_cap = 0;
  char *ids = NULL;
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->rdb, db->ro_scan, db->cf[CF_USERS]);
  const char *what = NULL;
  size_t klen, vlen;
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    const char *k = rocksdb_iter_key(it, &klen);
    const char *v = rocksdb_iter_value(it, &vlen);
    if (klen < 1 || klen > STATE_ID_MAX || vlen != 13 || (unsigned char)v[0] != STATE__FMT) {
      what = "malformed entry";
      break;
    }
    if (nrec == rec_cap) {
      rec_cap = rec_cap ? rec_cap * 2 : 1024;
      rec = xrealloc(rec, rec_cap * sizeof *rec);
    }
    if (nids + klen > ids_cap) {
      ids_cap = ids_cap ? ids_cap * 2 : 65536;
      ids = xrealloc(ids, ids_cap);
    }
    rec[nrec++] = (user_rec){fl_get_le32(v + 1), (uint32_t)klen, nids};
    memcpy(ids + nids, k, klen);
    nids += klen;
  }
  int rc = what ? 0 : iter_status(it, db, err, errlen);
  rocksdb_iter_destroy(it);
  if (!what && !rc) {
    if (nrec) qsort(rec, nrec, sizeof *rec, user_rec_cmp);
    if (nrec != count) what = "entry count differs from the counter";
    for (size_t i = 0; !what && i < nrec; i++)
      if (rec[i].idx != i + 1) what = "indices not dense from 1";
    for (size_t i = 0; !what && i < nrec; i++)
      state__dict_append(&db->users, ids + rec[i].off, rec[i].len);
  }
  free(ids);
  free(rec);
  if (what) {
    set_err(err, errlen, "state: %s: user dictionary corrupt (%s; %u users expected)", db->dir,
            what, count);
    return FL_ECORRUPT;
  }
  return rc;
}

int state_open(state_db **out, const state_opts *o, char *err, size_t errlen) {
  *out = NULL;
  if (!o->dir || !*o->dir) {
    set_err(err, errlen, "state: no directory given");
    return FL_ERANGE;
  }
  if (o->seq_len < 1 || o->seq_len > STATE_SEQ_LEN_MAX) {
    set_err(err, errlen, "state: seq_len %zu is out of range 1..%u", o->seq_len, STATE_SEQ_LEN_MAX);
    return FL_ERANGE;
  }
  if (o->compression < STATE_COMPRESSION_NONE || o->compression > STATE_COMPRESSION_ZSTD) {
    set_err(err, errlen, "state: unknown compression %d", o->compression);
    return FL_ERANGE;
  }
  if (o->sync && !o->wal) {
    set_err(err, errlen, "state: sync needs the write-ahead log (wal = 1)");
    return FL_ERANGE;
  }
  if (o->cache_mb > ((size_t)1 << 24)) {
    set_err(err, errlen, "state: cache_mb %zu is too large", o->cache_mb);
    return FL_ERANGE;
  }
  int rc = prepare_dir(o->dir, err, errlen);
  if (rc) return rc;
  int exists = check_current(o->dir, err, errlen);
  if (exists < 0) return exists;

  state_db *db = xcalloc(1, sizeof *db);
  size_t dlen = strlen(o->dir);
  db->dir = xmalloc(dlen + 1);
  memcpy(db->dir, o->dir, dlen + 1);
  db->seq_len = o->seq_len;
  state__dict_init(&db->items, random_seed());
  state__dict_init(&db->users, random_seed());
  build_options(db, o);
  uint32_t items = 0, users = 0;
  if ((rc = open_rocks(db, exists, err, errlen)) != 0 ||
      (rc = load_meta(db, &items, &users, err, errlen)) != 0 ||
      (rc = load_items(db, items, err, errlen)) != 0 ||
      (rc = load_users(db, users, err, errlen)) != 0) {
    state_close(db);
    return rc;
  }
  fl_info("state: opened %s: %u users, %u items, %llu events, seq_len %zu", db->dir, users, items,
          (unsigned long long)db->events, db->seq_len);
  *out = db;
  return 0;
}

void state_close(state_db *db) {
  if (!db) return;
  if (db->batch) {
    fl_error("state_close(%s): a batch is still live (free it first)", db->dir);
    abort();
  }
  for (size_t i = 0; i < db->nhandles; i++) rocksdb_column_family_handle_destroy(db->handles[i]);
  free(db->handles);
  if (db->rdb) rocksdb_close(db->rdb);
  if (db->opts) rocksdb_options_destroy(db->opts);
  if (db->seq_opts) rocksdb_options_destroy(db->seq_opts); /* releases the merge operator */
  if (db->cache) rocksdb_cache_destroy(db->cache);
  if (db->ro) rocksdb_readoptions_destroy(db->ro);
  if (db->ro_scan) rocksdb_readoptions_destroy(db->ro_scan);
  if (db->wo) rocksdb_writeoptions_destroy(db->wo);
  if (db->wo_bad) rocksdb_writeoptions_destroy(db->wo_bad);
  state__dict_free(&db->items);
  state__dict_free(&db->users);
  free(db->dir);
  free(db);
}

/* ---- dictionaries ---- */

int64_t state_item_find(const state_db *db, const char *id, size_t len) {
  return state__dict_find(&db->items, id, len);
}

const char *state_item_id(const state_db *db, uint32_t idx, size_t *len) {
  return state__dict_id(&db->items, idx, len);
}

uint32_t state_item_count(const state_db *db) { return db->items.n; }

int64_t state_user_find(const state_db *db, const char *id, size_t len) {
  return state__dict_find(&db->users, id, len);
}

const char *state_user_id(const state_db *db, uint32_t idx, size_t *len) {
  return state__dict_id(&db->users, idx, len);
}

uint32_t state_user_count(const state_db *db) { return db->users.n; }

/* ---- batches ---- */

state_batch *state_batch_new(state_db *db) {
  if (db->batch) return NULL;
  state_batch *b = xcalloc(1, sizeof *b);
  b->db = db;
  b->wb = rocksdb_writebatch_create();
  b->map_mask = 1023;
  b->map_key = xcalloc(b->map_mask + 1, sizeof *b->map_key);
  b->map_slot = xcalloc(b->map_mask + 1, sizeof *b->map_slot);
  b->item_base = db->items.n;
  b->user_base = db->users.n;
  db->batch = b;
  return b;
}

/* Empties the batch; the dictionary entries above the bases are kept (commit) or were rolled
 * back (clear) by the caller. */
static void batch_reset(state_batch *b) {
  for (size_t s = 0; s < b->nslot; s++) b->map_key[b->slot_pos[s]] = 0;
  b->nslot = 0;
  b->nev = 0;
  b->noff = 0;
  b->item_base = b->db->items.n;
  b->user_base = b->db->users.n;
}

void state_batch_clear(state_batch *b) {
  state__dict_truncate(&b->db->items, b->item_base);
  state__dict_truncate(&b->db->users, b->user_base);
  batch_reset(b);
}

void state_batch_free(state_batch *b) {
  if (!b) return;
  state_batch_clear(b);
  b->db->batch = NULL;
  rocksdb_writebatch_destroy(b->wb);
  free(b->ev);
  free(b->slot_user);
  free(b->slot_n);
  free(b->slot_pos);
  free(b->map_key);
  free(b->map_slot);
  free(b->new_user_ts);
  free(b->off);
  free(b->scr_start);
  free(b->scr_seen);
  free(b->scr);
  free(b);
}

static inline size_t map_home(uint32_t user, size_t mask) {
  return (size_t)((user * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

static void map_grow(state_batch *b) {
  size_t cap = (b->map_mask + 1) * 2;
  free(b->map_key);
  free(b->map_slot);
  b->map_key = xcalloc(cap, sizeof *b->map_key);
  b->map_slot = xcalloc(cap, sizeof *b->map_slot);
  b->map_mask = cap - 1;
  for (size_t s = 0; s < b->nslot; s++) {
    size_t pos = map_home(b->slot_user[s], b->map_mask);
    while (b->map_key[pos]) pos = (pos + 1) & b->map_mask;
    b->map_key[pos] = b->slot_user[s];
    b->map_slot[pos] = (uint32_t)s;
    b->slot_pos[s] = pos;
  }
}

/* The batch slot of user (dense index), created on first sight. */
static uint32_t batch_slot(state_batch *b, uint32_t user) {
  size_t pos = map_home(user, b->map_mask);
  while (b->map_key[pos]) {
    if (b->map_key[pos] == user) return b->map_slot[pos];
    pos = (pos + 1) & b->map_mask;
  }
  if (b->nslot == b->slot_cap) {
    b->slot_cap = b->slot_cap ? b->slot_cap * 2 : 1024;
    b->slot_user = xrealloc(b->slot_user, b->slot_cap * sizeof *b->slot_user);
    b->slot_n = xrealloc(b->slot_n, b->slot_cap * sizeof *b->slot_n);
    b->slot_pos = xrealloc(b->slot_pos, b->slot_cap * sizeof *b->slot_pos);
  }
  uint32_t s = (uint32_t)b->nslot++;
  b->slot_user[s] = user;
  b->slot_n[s] = 0;
  b->map_key[pos] = user;
  b->map_slot[pos] = s;
  b->slot_pos[s] = pos;
  if (b->nslot * 2 > b->map_mask + 1) map_grow(b);
  return s;
}

int state_batch_add(state_batch *b, const char *user, size_t ulen, const char *item, size_t ilen,
                    int64_t ts_ms, float weight) {
  state_db *db = b->db;
  if (ulen < 1 || ulen > STATE_ID_MAX || ilen < 1 || ilen > STATE_ID_MAX || !isfinite(weight))
    return FL_ERANGE;
  int item_added, user_added;
  uint32_t it = state__dict_intern(&db->items, item, ilen, &item_added);
  if (!it) return FL_ERANGE;
  uint32_t u = state__dict_intern(&db->users, user, ulen, &user_added);
  if (!u) {
    if (item_added) state__dict_truncate(&db->items, it - 1);
    return FL_ERANGE;
  }
  if (user_added) {
    size_t k = u - b->user_base - 1;
    if (k >= b->new_user_cap) {
      b->new_user_cap = b->new_user_cap ? b->new_user_cap * 2 : 1024;
      b->new_user_ts = xrealloc(b->new_user_ts, b->new_user_cap * sizeof *b->new_user_ts);
    }
    b->new_user_ts[k] = ts_ms;
  }
  uint32_t s = batch_slot(b, u);
  b->slot_n[s]++;
  if (b->nev == b->ev_cap) {
    b->ev_cap = b->ev_cap ? b->ev_cap * 2 : 4096;
    b->ev = xrealloc(b->ev, b->ev_cap * sizeof *b->ev);
  }
  b->ev[b->nev++] = (batch_event){s, it, weight, ts_ms};
  return 0;
}

int64_t state_batch_item(state_batch *b, const char *item, size_t ilen) {
  if (ilen < 1 || ilen > STATE_ID_MAX) return FL_ERANGE;
  int added;
  uint32_t it = state__dict_intern(&b->db->items, item, ilen, &added);
  return it ? (int64_t)it : FL_ERANGE;
}

int state_batch_offset(state_batch *b, const char *topic, int32_t partition, int64_t next_offset) {
  size_t tlen = topic ? strlen(topic) : 0;
  if (tlen < 1 || tlen > STATE_TOPIC_MAX || partition < 0 || next_offset < 0) return FL_ERANGE;
  for (size_t i = 0; i < b->noff; i++) {
    if (b->off[i].partition == partition && strcmp(b->off[i].topic, topic) == 0) {
      b->off[i].next = next_offset;
      return 0;
    }
  }
  if (b->noff == b->off_cap) {
    b->off_cap = b->off_cap ? b->off_cap * 2 : 16;
    b->off = xrealloc(b->off, b->off_cap * sizeof *b->off);
  }
  batch_offset *o = &b->off[b->noff++];
  memcpy(o->topic, topic, tlen + 1);
  o->partition = partition;
  o->next = next_offset;
  return 0;
}

size_t state_batch_events(const state_batch *b) { return b->nev; }

/* Adds one merge per touched user: the user's newest min(events, seq_len) entries. */
static void commit_sequences(state_batch *b) {
  state_db *db = b->db;
  size_t keep_max = db->seq_len, total = 0;
  b->scr_start = xrealloc(b->scr_start, (b->nslot + 1) * sizeof *b->scr_start);
  b->scr_seen = xrealloc(b->scr_seen, (b->nslot + 1) * sizeof *b->scr_seen);
  for (size_t s = 0; s < b->nslot; s++) {
    size_t keep = b->slot_n[s] < keep_max ? b->slot_n[s] : keep_max;
    b->scr_start[s] = total;
    b->scr_seen[s] = 0;
    total += 1 + keep * STATE__ENTRY_BYTES;
  }
  b->scr_start[b->nslot] = total;
  if (total > b->scr_cap) {
    b->scr_cap = total;
    b->scr = xrealloc(b->scr, total);
  }
  for (size_t s = 0; s < b->nslot; s++) b->scr[b->scr_start[s]] = STATE__FMT;
  for (size_t j = 0; j < b->nev; j++) {
    const batch_event *e = &b->ev[j];
    uint32_t s = e->slot, r = b->scr_seen[s]++;
    size_t keep = (b->scr_start[s + 1] - b->scr_start[s] - 1) / STATE__ENTRY_BYTES;
    size_t skip = b->slot_n[s] - keep;
    if (r < skip) continue;
    state_entry en = {e->item, e->weight, e->ts_ms};
    state__entry_put(b->scr + b->scr_start[s] + 1 + (r - skip) * STATE__ENTRY_BYTES, &en);
  }
  for (size_t s = 0; s < b->nslot; s++) {
    size_t ulen;
    const char *uid = state__dict_id(&db->users, b->slot_user[s], &ulen);
    rocksdb_writebatch_merge_cf(b->wb_out, db->cf[CF_SEQ], uid, ulen, b->scr + b->scr_start[s],
                                b->scr_start[s + 1] - b->scr_start[s]);
  }
}

/* Adds the dictionary entries this batch assigned. */
static void commit_dictionaries(state_batch *b) {
  state_db *db = b->db;
  char key[1 + STATE_ID_MAX], val[1 + STATE_ID_MAX];
  for (uint64_t i = (uint64_t)b->item_base + 1; i <= db->items.n; i++) {
    size_t len;
    const char *id = state__dict_id(&db->items, (uint32_t)i, &len);
    key[0] = 'i';
    memcpy(key + 1, id, len);
    val[0] = STATE__FMT;
    fl_put_le32(val + 1, (uint32_t)i);
    rocksdb_writebatch_put_cf(b->wb_out, db->cf[CF_ITEMS], key, 1 + len, val, 5);
    key[0] = 'n';
    fl_put_be32(key + 1, (uint32_t)i);
    memcpy(val + 1, id, len);
    rocksdb_writebatch_put_cf(b->wb_out, db->cf[CF_ITEMS], key, 5, val, 1 + len);
  }
  for (uint64_t u = (uint64_t)b->user_base + 1; u <= db->users.n; u++) {
    size_t len;
    const char *id = state__dict_id(&db->users, (uint32_t)u, &len);
    val[0] = STATE__FMT;
    fl_put_le32(val + 1, (uint32_t)u);
    fl_put_le64(val + 5, (uint64_t)b->new_user_ts[u - b->user_base - 1]);
    rocksdb_writebatch_put_cf(b->wb_out, db->cf[CF_USERS], id, len, val, 13);
  }
}

static size_t offset_key(char *key, const char *topic, int32_t partition) {
  size_t tlen = strlen(topic);
  memcpy(key, topic, tlen);
  key[tlen] = 0;
  fl_put_be32(key + tlen + 1, (uint32_t)partition);
  return tlen + 5;
}

static int batch_empty(const state_batch *b) {
  return b->nev == 0 && b->noff == 0 && b->db->items.n == b->item_base;
}

/* Fills wb with everything the batch changes (the state's next meta counters included). */
static void batch_build(state_batch *b, rocksdb_writebatch_t *wb) {
  state_db *db = b->db;
  b->wb_out = wb;
  commit_sequences(b);
  commit_dictionaries(b);
  for (size_t i = 0; i < b->noff; i++) {
    char key[STATE_TOPIC_MAX + 5], val[9];
    size_t klen = offset_key(key, b->off[i].topic, b->off[i].partition);
    val[0] = STATE__FMT;
    fl_put_le64(val + 1, (uint64_t)b->off[i].next);
    rocksdb_writebatch_put_cf(wb, db->cf[CF_OFFSETS], key, klen, val, sizeof val);
  }
  char counters[17];
  counters_value(counters, db->sealed + b->nev, db->items.n, db->users.n);
  rocksdb_writebatch_put_cf(wb, db->cf[CF_META], "counters", 8, counters, sizeof counters);
}

int state__write(state_db *db, rocksdb_writebatch_t *wb, size_t events, char *err, size_t errlen) {
  const rocksdb_writeoptions_t *wo = db->wo;
  int left = atomic_load(&db->fail_commits);
  while (left > 0 && !atomic_compare_exchange_weak(&db->fail_commits, &left, left - 1)) {
  }
  if (left > 0) wo = db->wo_bad;
  char *rerr = NULL;
  rocksdb_write(db->rdb, wo, wb, &rerr);
  if (rerr) {
    char what[64];
    snprintf(what, sizeof what, "commit of %zu events failed", events);
    return rocks_fail(rerr, err, errlen, what);
  }
  atomic_fetch_add(&db->events, events);
  return 0;
}

int state_batch_commit(state_batch *b, char *err, size_t errlen) {
  if (batch_empty(b)) return 0;
  rocksdb_writebatch_clear(b->wb);
  batch_build(b, b->wb);
  int rc = state__write(b->db, b->wb, b->nev, err, errlen);
  rocksdb_writebatch_clear(b->wb);
  if (rc) return rc;
  b->db->sealed += b->nev;
  batch_reset(b);
  return 0;
}

rocksdb_writebatch_t *state__batch_seal(state_batch *b, size_t *events) {
  *events = b->nev;
  if (batch_empty(b)) return NULL;
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
  batch_build(b, wb);
  b->db->sealed += b->nev;
  batch_reset(b);
  return wb;
}

const char *state__dir(const state_db *db) { return db->dir; }

/* ---- reads ---- */

int state_offset_get(state_db *db, const char *topic, int32_t partition, int64_t *next) {
  size_t tlen = topic ? strlen(topic) : 0;
  if (tlen < 1 || tlen > STATE_TOPIC_MAX || partition < 0) return FL_ERANGE;
  char key[STATE_TOPIC_MAX + 5], *rerr = NULL;
  size_t klen = offset_key(key, topic, partition), vlen;
  rocksdb_pinnableslice_t *ps =
      rocksdb_get_pinned_cf(db->rdb, db->ro, db->cf[CF_OFFSETS], key, klen, &rerr);
  if (rerr) {
    rocksdb_free(rerr);
    return FL_ESTORAGE;
  }
  if (!ps) return FL_EMISSING;
  const char *v = rocksdb_pinnableslice_value(ps, &vlen);
  int64_t x = vlen == 9 && (unsigned char)v[0] == STATE__FMT ? (int64_t)fl_get_le64(v + 1) : -1;
  rocksdb_pinnableslice_destroy(ps);
  if (x < 0) return FL_ECORRUPT;
  *next = x;
  return 0;
}

/* Decodes the newest min(max, seq_len) entries of a sequence value into out (*n of them).
 * FL_ECORRUPT when it does not validate. */
static int seq_decode(const state_db *db, const char *v, size_t vlen, state_entry *out, size_t max,
                      size_t *n) {
  int64_t c = state__seq_count(v, vlen);
  if (c < 0) return FL_ECORRUPT;
  size_t take = (size_t)c;
  if (take > db->seq_len) take = db->seq_len;
  if (take > max) take = max;
  const char *p = v + 1 + ((size_t)c - take) * STATE__ENTRY_BYTES;
  for (size_t i = 0; i < take; i++) {
    state__entry_get(&out[i], p + i * STATE__ENTRY_BYTES);
    if (out[i].item == 0) return FL_ECORRUPT;
  }
  *n = take;
  return 0;
}

int state_seq_get(state_db *db, const char *user, size_t ulen, state_entry *out, size_t max,
                  size_t *n) {
  *n = 0;
  if (ulen < 1 || ulen > STATE_ID_MAX) return FL_ERANGE;
  char *rerr = NULL;
  rocksdb_pinnableslice_t *ps =
      rocksdb_get_pinned_cf(db->rdb, db->ro, db->cf[CF_SEQ], user, ulen, &rerr);
  if (rerr) {
    int code = rocks_code(rerr);
    rocksdb_free(rerr);
    return code == FL_ECORRUPT ? code : FL_ESTORAGE;
  }
  if (!ps) return FL_EMISSING;
  size_t vlen;
  const char *v = rocksdb_pinnableslice_value(ps, &vlen);
  int rc = seq_decode(db, v, vlen, out, max, n);
  rocksdb_pinnableslice_destroy(ps);
  if (rc) *n = 0;
  return rc;
}

int state_seq_foreach(state_db *db,
                      int (*fn)(void *ctx, const char *user, size_t ulen, const state_entry *e,
                                size_t n),
                      void *ctx) {
  state_entry *e = xmalloc(db->seq_len * sizeof *e);
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->rdb, db->ro_scan, db->cf[CF_SEQ]);
  int rc = 0;
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t klen, vlen, n;
    const char *k = rocksdb_iter_key(it, &klen);
    const char *v = rocksdb_iter_value(it, &vlen);
    if (klen < 1 || klen > STATE_ID_MAX || seq_decode(db, v, vlen, e, db->seq_len, &n) != 0) {
      rc = FL_ECORRUPT;
      break;
    }
    if ((rc = fn(ctx, k, klen, e, n)) != 0) break;
  }
  if (rc == 0) {
    char *rerr = NULL;
    rocksdb_iter_get_error(it, &rerr);
    if (rerr) {
      rc = rocks_code(rerr) == FL_ECORRUPT ? FL_ECORRUPT : FL_ESTORAGE;
      rocksdb_free(rerr);
    }
  }
  rocksdb_iter_destroy(it);
  free(e);
  return rc;
}

int state_get_stats(state_db *db, state_stats *s) {
  memset(s, 0, sizeof *s);
  s->users = db->users.n;
  s->items = db->items.n;
  s->events = atomic_load(&db->events);
  s->seq_dropped = atomic_load(&db->merge->dropped);
  DIR *d = opendir(db->dir);
  if (!d) return -errno;
  struct dirent *de;
  char path[4096];
  while ((de = readdir(d)) != NULL) {
    /* WAL files are NNNNNN.log; RocksDB's info logs are LOG and LOG.old.* */
    if (!has_suffix(de->d_name, ".sst") && !has_suffix(de->d_name, ".log")) continue;
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", db->dir, de->d_name);
    if (stat(path, &st) == 0) s->disk_bytes += (uint64_t)st.st_size;
  }
  closedir(d);
  return 0;
}

void state_test_fail_commits(state_db *db, int n) {
  atomic_store(&db->fail_commits, n > 0 ? n : 0);
}
