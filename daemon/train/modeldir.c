/* daemon/train/modeldir.c: the model directory.
 *
 * Layout of the model dir: anchor-<version>.ckpt (the newest that loads is the anchor:
 * imported with its rows mapped to state indices, bootstrapped, or re-anchored; two kept) and
 * model-<version>.ckpt (the promoted snapshots, newest model.keep kept), and corrupt/ (the
 * checkpoints found corrupt at start, the newest CORRUPT_KEEP versions of each kind). Versions
 * are zero-padded to 20 digits so that names sort by version; a version number is never
 * reused, not even a corrupt one's.
 */
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

/* The highest version among dir/<prefix><20 digits>.ckpt files, listing all of them (sorted
 * newest first) into *vers when not NULL. Returns how many. */
static size_t list_versions(const char *dir, const char *prefix, uint64_t **vers) {
  DIR *d = opendir(dir);
  size_t n = 0, cap = 0;
  uint64_t *v = NULL;
  if (d) {
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
      const char *s = e->d_name;
      if (strncmp(s, prefix, pl) || strlen(s) != pl + 20 + 5 || strcmp(s + pl + 20, ".ckpt"))
        continue;
      char *end;
      uint64_t x = strtoull(s + pl, &end, 10);
      if (end != s + pl + 20) continue;
      if (n == cap) v = xrealloc(v, (cap = cap ? 2 * cap : 16) * sizeof *v);
      v[n++] = x;
    }
    closedir(d);
  }
  for (size_t i = 1; i < n; i++) /* insertion sort, descending: a handful of files */
    for (size_t j = i; j > 0 && v[j] > v[j - 1]; j--) {
      uint64_t x = v[j];
      v[j] = v[j - 1];
      v[j - 1] = x;
    }
  if (vers)
    *vers = v;
  else
    free(v);
  return n;
}

static void version_path(char *buf, size_t n, const char *dir, const char *prefix, uint64_t v) {
  snprintf(buf, n, "%s/%s%020" PRIu64 ".ckpt", dir, prefix, v);
}

/* Deletes all but the newest keep files of prefix. */
static void prune(const char *dir, const char *prefix, size_t keep) {
  uint64_t *v;
  size_t n = list_versions(dir, prefix, &v);
  for (size_t i = keep; i < n; i++) {
    char p[4300];
    version_path(p, sizeof p, dir, prefix, v[i]);
    if (unlink(p) != 0) fl_warn("cannot delete old snapshot %s: %s", p, strerror(errno));
  }
  free(v);
}

/* The highest version of prefix in dir and in dir/corrupt/ (0: none). */
static uint64_t top_version(const char *dir, const char *prefix) {
  char cdir[4200];
  snprintf(cdir, sizeof cdir, "%s/" CORRUPT_DIR, dir);
  uint64_t *v, *cv, top = 0;
  size_t n = list_versions(dir, prefix, &v), cn = list_versions(cdir, prefix, &cv);
  if (n) top = v[0];
  if (cn && cv[0] > top) top = cv[0];
  free(v);
  free(cv);
  return top;
}

/* 1 if name ends in ".tmp." and digits: a temp file of fl_write_atomic. */
static int is_temp_name(const char *name) {
  const char *p = NULL;
  for (const char *q = strstr(name, ".tmp."); q; q = strstr(q + 1, ".tmp.")) p = q;
  if (!p || p == name || !p[5]) return 0;
  for (p += 5; *p; p++)
    if (*p < '0' || *p > '9') return 0;
  return 1;
}

/* Deletes the temp files (<name>.tmp.<pid>) that writes interrupted by a crash or kill -9 left
 * in dir, each logged with its size. Run at start, before anything in this process writes
 * there (the trainer is the dir's only writer), so every one is stale, even one named with our
 * own pid: a daemon that is pid 1 in a container has the same pid at every start. */
void train__remove_stale_temps(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    char p[4400];
    struct stat st;
    if (!is_temp_name(e->d_name)) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (unlink(p) != 0)
      fl_warn("model dir: cannot delete the stale temp file %s: %s", p, strerror(errno));
    else
      fl_info("model dir: deleted %s (%lld bytes), left by an interrupted write", p,
              (long long)st.st_size);
  }
  closedir(d);
}

/* A checkpoint dir/<prefix><v>.ckpt failed to load with rc (why: the loader's message). A
 * corrupt one (an FL_E* code: magic, version, CRC, shape, non-finite, truncated) is moved into
 * dir/corrupt/, where the newest CORRUPT_KEEP versions of prefix are kept, so it no longer
 * counts as a snapshot nor against model.keep; one that could not be read (-errno: permissions,
 * I/O) is left where it is, as it may read next time, and so is one that cannot be moved. */
static void set_aside(trainer *t, const char *prefix, uint64_t v, int rc, const char *why) {
  char from[4200], cdir[4200], to[4300];
  version_path(from, sizeof from, t->dir, prefix, v);
  if (rc <= FL_EBASE || rc >= FL_ELAST) {
    fl_warn("cannot read %s (%s): left in place, skipped", from, why);
    return;
  }
  snprintf(cdir, sizeof cdir, "%s/" CORRUPT_DIR, t->dir);
  version_path(to, sizeof to, cdir, prefix, v);
  if ((mkdir(cdir, 0750) != 0 && errno != EEXIST) || rename(from, to) != 0) {
    fl_warn("corrupt checkpoint %s (%s): cannot move it into %s: %s; skipped", from, why, cdir,
            strerror(errno));
    return;
  }
  fl_warn("corrupt checkpoint moved into %s: %s", cdir, why);
  pthread_mutex_lock(&t->mu); /* the loop reads the stats */
  t->st.quarantined++;
  pthread_mutex_unlock(&t->mu);
  prune(cdir, prefix, CORRUPT_KEEP);
}

int train__save_anchor(trainer *t, uint64_t version) {
  char p[4200];
  version_path(p, sizeof p, t->dir, ANCHOR_PREFIX, version);
  int rc = ckpt_save(p, &t->anchor);
  if (rc == 0) prune(t->dir, ANCHOR_PREFIX, 2);
  return rc;
}

int train__save_snapshot(trainer *t, const serve_model *s, size_t keep) {
  char p[4200];
  version_path(p, sizeof p, t->dir, MODEL_PREFIX, s->version);
  int rc = ckpt_save(p, &s->m);
  if (rc == 0) prune(t->dir, MODEL_PREFIX, keep);
  return rc;
}

/* What load_each hands a checkpoint that loads to: keeps *m (or frees it); 1 stops the walk. */
typedef int (*take_fn)(trainer *t, model_net *m, uint64_t v, const char *path, void *ctx);

/* Loads the checkpoints of prefix in the dir, newest first, and hands each one that loads to
 * take until it returns 1. One that does not load is set aside (set_aside); with kind, the
 * log adds that an older one is tried. */
static void load_each(trainer *t, const char *prefix, const char *kind, take_fn take, void *ctx) {
  uint64_t *v;
  size_t n = list_versions(t->dir, prefix, &v);
  for (size_t i = 0; i < n; i++) {
    char p[4200], why[512];
    version_path(p, sizeof p, t->dir, prefix, v[i]);
    model_net m;
    int rc = ckpt_load(p, &m, why, sizeof why);
    if (rc != 0) {
      set_aside(t, prefix, v[i], rc, why);
      if (kind) fl_warn("%s %s is not usable: trying an older one", kind, p);
      continue;
    }
    if (take(t, &m, v[i], p, ctx)) break;
  }
  free(v);
}

/* The newest snapshot that loads and fits the anchor is kept; every older one is read too, so
 * that a corrupt one is set aside at start rather than kept in one of model.keep's places
 * (that reads model.keep files once per start). */
static int take_snapshot(trainer *t, model_net *m, uint64_t v, const char *path, void *ctx) {
  serve_model **newest = ctx;
  if (*newest || (t->has_anchor && !train__same_shape(&m->hp, &t->anchor.hp))) {
    if (!*newest) fl_warn("snapshot %s does not fit the anchor: skipped", path);
    model_free(m);
    return 0;
  }
  struct stat st;
  serve_model *s = serve_model_new(v, m, NULL, 0);
  s->anchor_version = t->st.anchor_version;
  if (stat(path, &st) == 0) s->trained_at_ms = (int64_t)st.st_mtime * 1000;
  *newest = s;
  return 0;
}

/* The newest snapshot in the dir that loads (ckpt_load refuses non-finite weights) and has
 * the anchor's shape (any shape without an anchor). */
serve_model *train__load_newest(trainer *t) {
  t->version = top_version(t->dir, MODEL_PREFIX); /* never reused, even a broken one's */
  serve_model *s = NULL;
  load_each(t, MODEL_PREFIX, NULL, take_snapshot, &s);
  return s;
}

/* The daemon's own anchor wins: the newest that loads. */
static int take_anchor(trainer *t, model_net *m, uint64_t v, const char *path, void *ctx) {
  (void)ctx;
  train__set_anchor(t, m, NULL);
  t->st.anchor_version = v;
  fl_info("anchor: %s (version %" PRIu64 ", %zu items)", path, v, t->anchor.NI);
  return 1;
}

/* The daemon's own newest anchor that loads (corrupt ones are set aside), else model.anchor
 * imported as a new anchor version; neither: no anchor yet (0). Fails only on model.anchor. */
int train__load_anchor(trainer *t, const config *cfg, char *err, size_t errlen) {
  t->anchor_top = top_version(t->dir, ANCHOR_PREFIX);
  load_each(t, ANCHOR_PREFIX, "anchor", take_anchor, NULL);
  char why[512];
  if (t->has_anchor || !*cfg->model.anchor) return 0;
  model_net m;
  int rc = ckpt_load(cfg->model.anchor, &m, why, sizeof why);
  if (rc != 0) {
    snprintf(err, errlen, "model.anchor %s: %s", cfg->model.anchor, why);
    return rc;
  }
  if (*cfg->model.anchor_item_ids) {
    rc = train__map_anchor(t, &m, cfg->model.anchor_item_ids, err, errlen);
    model_free(&m);
    if (rc != 0) return rc;
  } else {
    train__set_anchor(t, &m, NULL);
  }
  t->st.anchor_version = train__next_anchor_version(t);
  if ((rc = train__save_anchor(t, t->st.anchor_version)) != 0) {
    snprintf(err, errlen, "cannot write the anchor into %s: %s", t->dir, fl_strerror(rc));
    return rc;
  }
  fl_info("anchor: imported %s (%zu items) as anchor version %" PRIu64, cfg->model.anchor,
          t->anchor.NI, t->st.anchor_version);
  return 0;
}
