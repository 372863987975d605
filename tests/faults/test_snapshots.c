/* tests/faults/test_snapshots.c: issue 26, failures 7 and 9: what a kill -9 and a bad disk
 * leave in the model dir. The trainer runs for real (trainer_start on a real state and real
 * checkpoint files in a temp dir; rounds forced with TRAINER_TRAIN_NOW, every wait bounded):
 *
 *   - temp files a killed write left (<name>.tmp.<pid>) are deleted at start, other files kept;
 *   - corrupt snapshots (bad CRC, truncated, bad magic) move into corrupt/ (the newest few
 *     kept there), are counted, never serve, never take a model.keep place and never give
 *     their version number to a new snapshot;
 *   - a corrupt newest anchor moves aside and the older one serves as the anchor; a re-anchor
 *     then takes a new version number, not the corrupt one's;
 *   - with no anchor that loads, the serving snapshot becomes the anchor, and a round fine-tunes
 *     from it instead of pretraining a new one from scratch;
 *   - with nothing valid at all, a pretrained (bootstrapped) anchor passes the gate before it
 *     is published: a non-finite one (FLAMED_TEST_POISON_BOOTSTRAPS) is not. */
#define _GNU_SOURCE
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "config/config.h"
#include "daemon/serve/serve.h"
#include "daemon/train/train.h"
#include "model/model.h"
#include "state/state.h"
#include "testutil.h"

enum { NI = 20, USERS = 40, EVENTS = 6, WAIT_MS = 180000 };

typedef struct {
  char tmp[256], models[300], state[300];
  state_db *db;
  serve_slot slot;
  config cfg;
  trainer *t;
} rig;

static void set(config *c, const char *name, const char *value) {
  char err[256];
  if (config_set(c, name, value, "test", 0, err, sizeof err) != 0) fail_msg("%s", err);
}

/* A temp dir with models/ and an open state holding USERS users of EVENTS events over NI
 * items (enough to bootstrap with the settings below), and settings for tiny, quick rounds
 * whose gate any finite candidate passes (train.margin 1). Training is off (paused): rounds
 * run only on TRAINER_TRAIN_NOW. */
static void rig_up(rig *r) {
  memset(r, 0, sizeof *r);
  assert_int_equal(tu_mkdtemp(r->tmp, sizeof r->tmp), 0);
  snprintf(r->models, sizeof r->models, "%s/models", r->tmp);
  snprintf(r->state, sizeof r->state, "%s/state", r->tmp);
  assert_int_equal(mkdir(r->models, 0750), 0);
  state_opts so = {.dir = r->state, .seq_len = 50, .wal = 1};
  char err[512];
  if (state_open(&r->db, &so, err, sizeof err) != 0) fail_msg("state_open: %s", err);
  state_batch *b = state_batch_new(r->db);
  assert_non_null(b);
  for (int u = 0; u < USERS; u++)
    for (int e = 0; e < EVENTS; e++) {
      char user[32], item[32];
      int ul = snprintf(user, sizeof user, "user-%d", u);
      int il = snprintf(item, sizeof item, "item-%d", 1 + (u * 7 + e * 3) % NI);
      assert_int_equal(state_batch_add(b, user, (size_t)ul, item, (size_t)il, 1000 * e, 1.0f), 0);
    }
  if (state_batch_commit(b, err, sizeof err) != 0) fail_msg("commit: %s", err);
  state_batch_free(b);
  serve_slot_init(&r->slot);
  config_init(&r->cfg);
  set(&r->cfg, "state.dir", r->state);
  set(&r->cfg, "model.dir", r->models);
  set(&r->cfg, "model.keep", "2");
  set(&r->cfg, "model.dim", "16");
  set(&r->cfg, "model.blocks", "1");
  set(&r->cfg, "model.maxlen", "6");
  set(&r->cfg, "train.enabled", "false");
  set(&r->cfg, "train.steps", "2");
  set(&r->cfg, "train.batch", "16");
  set(&r->cfg, "train.margin", "1");
  set(&r->cfg, "train.duty", "1");
  set(&r->cfg, "train.nice", "0");
  set(&r->cfg, "train.bootstrap_min_users", "10");
  set(&r->cfg, "train.bootstrap_min_events", "100");
  set(&r->cfg, "train.bootstrap_epochs", "1");
}

static void rig_start(rig *r) {
  char err[512] = "";
  if (trainer_start(&r->t, &r->cfg, r->db, &r->slot, err, sizeof err) != 0)
    fail_msg("trainer_start: %s", err);
}

static void rig_down(rig *r) {
  trainer_stop(r->t);
  serve_slot_free(&r->slot);
  config_free(&r->cfg);
  state_close(r->db);
  tu_rmtree(r->tmp);
}

/* dir/<prefix><20-digit version>.ckpt */
static void ckpt_path(char *buf, size_t n, const char *dir, const char *prefix, uint64_t v) {
  snprintf(buf, n, "%s/%s%020" PRIu64 ".ckpt", dir, prefix, v);
}

/* Writes a valid checkpoint of a tiny network (C = 16, 1 block, L = 6, NI items) whose
 * weights come from seed. */
static void write_model(const char *dir, const char *prefix, uint64_t v, uint64_t seed) {
  model_hparams hp;
  model_hparams_default(&hp);
  hp.C = 16;
  hp.NL = 1;
  hp.FF = 32;
  hp.L = 6;
  model_net m;
  assert_int_equal(model_init(&m, &hp, NI, seed), 0);
  char p[512];
  ckpt_path(p, sizeof p, dir, prefix, v);
  assert_int_equal(ckpt_save(p, &m), 0);
  model_free(&m);
}

/* Damages a checkpoint: 'c' flips a payload byte (CRC mismatch), 't' cuts it short, 'm'
 * replaces it with text (bad magic). */
static void damage(const char *dir, const char *prefix, uint64_t v, char how) {
  char p[512];
  ckpt_path(p, sizeof p, dir, prefix, v);
  if (how == 'm') {
    tu_write_file(p, "not a checkpoint at all, and long enough to have a header\n");
    return;
  }
  if (how == 't') {
    assert_int_equal(truncate(p, 40), 0);
    return;
  }
  FILE *f = fopen(p, "r+b");
  assert_non_null(f);
  assert_int_equal(fseek(f, 200, SEEK_SET), 0);
  int c = fgetc(f);
  assert_int_equal(fseek(f, 200, SEEK_SET), 0);
  fputc(c ^ 0x5a, f);
  fclose(f);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int ckpt_exists(const char *dir, const char *prefix, uint64_t v) {
  char p[512];
  ckpt_path(p, sizeof p, dir, prefix, v);
  return exists(p);
}

/* Files in dir whose name starts with prefix. */
static size_t count_files(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  size_t n = 0;
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d))) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

/* The serving snapshot's version, and whether it has a network. */
static uint64_t serving(rig *r, int *has_net) {
  serve_model *s = serve_slot_get(&r->slot);
  assert_non_null(s);
  uint64_t v = s->version;
  if (has_net) *has_net = s->has_net;
  serve_model_unref(s);
  return v;
}

/* Waits (bounded) until the trainer has run (or skipped) n rounds in all; its stats. */
static trainer_stats wait_rounds(rig *r, uint64_t n) {
  trainer_stats st;
  for (int ms = 0; ms < WAIT_MS; ms += 20) {
    trainer_get_stats(r->t, &st);
    if (st.rounds + st.skipped >= n && !st.running) return st;
    fl_sleep_ms(20);
  }
  fail_msg("no round %" PRIu64 " within %d ms", n, WAIT_MS);
  return st;
}

/* One forced round; its stats (it must have run). */
static trainer_stats train_now(rig *r) {
  trainer_stats st;
  trainer_get_stats(r->t, &st);
  uint64_t n = st.rounds + st.skipped + 1;
  trainer_command(r->t, TRAINER_TRAIN_NOW);
  st = wait_rounds(r, n);
  assert_int_equal(st.skipped, 0);
  return st;
}

static void test_stale_temps_deleted(void **state) {
  (void)state;
  rig r;
  rig_up(&r);
  write_model(r.models, "anchor-", 1, 1);
  write_model(r.models, "model-", 1, 1);
  char stale[512], own[512], keep1[512], keep2[512];
  /* a kill -9 at the rename: another pid's, and one with our own pid (pid 1 in a container) */
  snprintf(stale, sizeof stale, "%s/model-%020d.ckpt.tmp.3919", r.models, 6);
  snprintf(own, sizeof own, "%s/anchor-%020d.ckpt.tmp.%ld", r.models, 2, (long)getpid());
  snprintf(keep1, sizeof keep1, "%s/notes.tmp.txt", r.models); /* not a temp file's name */
  snprintf(keep2, sizeof keep2, "%s/README", r.models);
  tu_write_file(stale, "half a checkpoint");
  tu_write_file(own, "another half");
  tu_write_file(keep1, "x");
  tu_write_file(keep2, "x");
  rig_start(&r);
  assert_false(exists(stale));
  assert_false(exists(own));
  assert_true(exists(keep1));
  assert_true(exists(keep2));
  assert_true(ckpt_exists(r.models, "model-", 1));
  assert_int_equal(serving(&r, NULL), 1);
  rig_down(&r);
}

static void test_corrupt_snapshots_set_aside(void **state) {
  (void)state;
  rig r;
  rig_up(&r);
  char cdir[400];
  snprintf(cdir, sizeof cdir, "%s/corrupt", r.models);
  assert_int_equal(mkdir(cdir, 0750), 0);
  write_model(cdir, "model-", 1, 1); /* set aside by an earlier start: the oldest goes */
  write_model(r.models, "anchor-", 1, 1);
  write_model(r.models, "model-", 1, 2);
  write_model(r.models, "model-", 2, 3);
  for (uint64_t v = 3; v <= 5; v++) write_model(r.models, "model-", v, v + 1);
  damage(r.models, "model-", 3, 'c');
  damage(r.models, "model-", 4, 't');
  damage(r.models, "model-", 5, 'm');
  rig_start(&r);
  int net = 0;
  assert_int_equal(serving(&r, &net), 2); /* the newest that loads */
  assert_true(net);
  trainer_stats st;
  trainer_get_stats(r.t, &st);
  assert_int_equal(st.quarantined, 3);
  for (uint64_t v = 3; v <= 5; v++) {
    assert_false(ckpt_exists(r.models, "model-", v));
    assert_true(ckpt_exists(cdir, "model-", v));
  }
  /* bounded: only the newest few corrupt files stay */
  assert_false(ckpt_exists(cdir, "model-", 1));
  assert_true(count_files(cdir, "model-") <= 3);
  /* a promotion: model.keep = 2 keeps it and version 2, both valid; its version is above
   * every corrupt one's */
  st = train_now(&r);
  assert_int_equal(st.last.outcome, TRAINER_PROMOTED);
  assert_int_equal(st.last.version, 6);
  assert_int_equal(serving(&r, NULL), 6);
  assert_true(ckpt_exists(r.models, "model-", 6));
  assert_true(ckpt_exists(r.models, "model-", 2));
  assert_false(ckpt_exists(r.models, "model-", 1));
  assert_int_equal(count_files(r.models, "model-"), 2);
  rig_down(&r);
}

static void test_corrupt_anchor_falls_back(void **state) {
  (void)state;
  rig r;
  rig_up(&r);
  char cdir[400];
  snprintf(cdir, sizeof cdir, "%s/corrupt", r.models);
  write_model(r.models, "anchor-", 1, 1);
  write_model(r.models, "anchor-", 2, 2);
  write_model(r.models, "model-", 3, 3);
  damage(r.models, "anchor-", 2, 'c');
  rig_start(&r);
  trainer_stats st;
  trainer_get_stats(r.t, &st);
  assert_int_equal(st.anchor_version, 1);
  assert_int_equal(st.quarantined, 1);
  assert_false(ckpt_exists(r.models, "anchor-", 2));
  assert_true(ckpt_exists(cdir, "anchor-", 2));
  assert_int_equal(serving(&r, NULL), 3);
  /* a re-anchor takes a new version, not the corrupt one's */
  trainer_command(r.t, TRAINER_REANCHOR);
  for (int ms = 0; ms < WAIT_MS && st.reanchors == 0; ms += 20) {
    fl_sleep_ms(20);
    trainer_get_stats(r.t, &st);
  }
  assert_int_equal(st.reanchors, 1);
  assert_int_equal(st.anchor_version, 3);
  assert_true(ckpt_exists(r.models, "anchor-", 3));
  rig_down(&r);
}

static void test_corrupt_anchor_reanchors_from_serving(void **state) {
  (void)state;
  rig r;
  rig_up(&r);
  write_model(r.models, "anchor-", 1, 1);
  write_model(r.models, "model-", 4, 4);
  damage(r.models, "anchor-", 1, 't');
  rig_start(&r);
  trainer_stats st;
  trainer_get_stats(r.t, &st);
  assert_int_equal(st.anchor_version, 2); /* after the corrupt one's */
  int net = 0;
  assert_int_equal(serving(&r, &net), 4);
  assert_true(net);
  /* the new anchor is the serving snapshot's network */
  char a[512], s[512], err[512];
  ckpt_path(a, sizeof a, r.models, "anchor-", 2);
  ckpt_path(s, sizeof s, r.models, "model-", 4);
  model_net ma, ms;
  if (ckpt_load(a, &ma, err, sizeof err) != 0) fail_msg("%s", err);
  if (ckpt_load(s, &ms, err, sizeof err) != 0) fail_msg("%s", err);
  assert_int_equal(ma.nparams, ms.nparams);
  assert_memory_equal(ma.params, ms.params, ms.nparams * sizeof(float));
  model_free(&ma);
  model_free(&ms);
  /* the history is enough to bootstrap, yet the round fine-tunes from the serving model */
  st = train_now(&r);
  assert_int_equal(st.outcomes[TRAINER_BOOTSTRAPPED], 0);
  assert_int_equal(st.last.outcome, TRAINER_PROMOTED);
  assert_int_equal(st.anchor_version, 2);
  assert_int_equal(serving(&r, NULL), 5);
  rig_down(&r);
}

static void test_bootstrap_passes_the_gate(void **state) {
  (void)state;
  rig r;
  rig_up(&r);
  setenv("FLAMED_TEST_POISON_BOOTSTRAPS", "1", 1);
  rig_start(&r);
  unsetenv("FLAMED_TEST_POISON_BOOTSTRAPS");
  int net = 1;
  assert_int_equal(serving(&r, &net), 0);
  assert_false(net);
  /* the first pretrained anchor has a NaN weight: rejected, nothing published or kept */
  trainer_stats st = train_now(&r);
  assert_int_equal(st.last.outcome, TRAINER_REJECTED_NONFINITE);
  assert_int_equal(st.anchor_version, 0);
  assert_int_equal(serving(&r, &net), 0);
  assert_false(net);
  assert_int_equal(count_files(r.models, "anchor-"), 0);
  assert_int_equal(count_files(r.models, "model-"), 0);
  /* the next one is finite: it passes and serves */
  st = train_now(&r);
  assert_int_equal(st.last.outcome, TRAINER_BOOTSTRAPPED);
  assert_int_equal(st.anchor_version, 1);
  assert_int_equal(serving(&r, &net), 1);
  assert_true(net);
  assert_true(ckpt_exists(r.models, "anchor-", 1));
  assert_true(ckpt_exists(r.models, "model-", 1));
  rig_down(&r);
}

int test_snapshots(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stale_temps_deleted),
      cmocka_unit_test(test_corrupt_snapshots_set_aside),
      cmocka_unit_test(test_corrupt_anchor_falls_back),
      cmocka_unit_test(test_corrupt_anchor_reanchors_from_serving),
      cmocka_unit_test(test_bootstrap_passes_the_gate),
  };
  return cmocka_run_group_tests_name("faults/snapshots", tests, NULL, NULL);
}
