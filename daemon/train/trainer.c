/* daemon/train/trainer.c: the trainer thread, its commands and stats, start and stop (see
 * train.h; internal.h lists the folder's other files). */
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

static const char *const outcome_names[] = {"promoted", "rejected_worse", "rejected_nonfinite",
                                            "bootstrapped", "failed"};
const char *trainer_outcome_name(int o) {
  return o >= 0 && o < TRAINER_OUTCOMES ? outcome_names[o] : "unknown";
}

static void read_round_cfg(round_cfg *r, const config *c) {
  config_round_opts(c, &r->learn);
  r->interval_s = c->train.interval_s;
  r->duty = c->train.duty;
  r->min_new_events = (uint64_t)c->train.min_new_events;
  r->reanchor_rounds = (uint64_t)c->train.reanchor_rounds;
  r->keep = (size_t)c->model.keep;
  r->popular = (size_t)c->model.popular;
  r->keep_adam = c->train.keep_adam;
}

void trainer_reconfigure(trainer *t, const config *cfg) {
  pthread_mutex_lock(&t->mu);
  read_round_cfg(&t->rc, cfg);
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

static void log_round(uint64_t n, const trainer_round *r, int stopping) {
  const char *what = trainer_outcome_name(r->outcome);
  if (r->outcome == TRAINER_BOOTSTRAPPED) {
    fl_info("round %" PRIu64 ": bootstrapped; serving version %" PRIu64, n, r->version);
  } else if (r->outcome == TRAINER_FAILED && stopping) {
    fl_info("round %" PRIu64 ": stopped after %.1f s by the shutdown (the serving version stays)",
            n, r->sec);
  } else if (r->outcome == TRAINER_FAILED) {
    fl_warn("round %" PRIu64 ": failed after %.1f s (see above)", n, r->sec);
  } else {
    char sampled[64] = "", retained[96] = "", carried[64] = "";
    if (r->f.carried)
      snprintf(carried, sizeof carried, " (%" PRIu64 " with last round's holdout)", r->f.carried);
    if (r->f.negatives)
      snprintf(sampled, sizeof sampled, ", sampled softmax over %" PRIu64 " items", r->f.negatives);
    if (r->f.retain)
      snprintf(retained, sizeof retained, "; %" PRIu64 " retained users %.4f / %.4f", r->f.retain,
               r->f.cand_retain_ndcg10, r->f.serv_retain_ndcg10);
    fl_info("round %" PRIu64 ": %" PRIu64 " users%s of %" PRIu64
            " read (%.2f s), loss %.4f (rec %.4f%s), %.1f s; holdout %" PRIu64
            " users NDCG@10 candidate %.4f serving %.4f (HR@10 %.4f / %.4f)%s: %s%s",
            n, r->f.users, carried, r->read_users, r->read_sec, r->f.loss, r->f.rec, sampled,
            r->sec, r->f.holdout, r->f.cand_ndcg10, r->f.serv_ndcg10, r->f.cand_hr10,
            r->f.serv_hr10, retained, what,
            r->outcome == TRAINER_PROMOTED ? " as a new version" : "");
  }
}

/* The pending events that start a round early (under mu): train.min_new_events, and after a
 * declined round that many more than it had, since retrying at once would spin on the same
 * too-few users. */
static uint64_t events_due(const trainer *t) {
  return t->retry_at > t->rc.min_new_events ? t->retry_at : t->rc.min_new_events;
}

static void *run(void *arg) {
  trainer *t = arg;
  fl_thread_setup("trainer", t->nice);
  model_set_threads(t->threads);
  pthread_mutex_lock(&t->mu);
  double next = fl_now() + t->rc.interval_s;
  while (!t->stop) {
    while (!t->stop && !t->now && !t->reanchor &&
           (t->paused || (fl_now() < next && t->pending < events_due(t)))) {
      double wait = t->paused ? 1.0 : next - fl_now();
      if (wait > 1.0) wait = 1.0;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      long ns = ts.tv_nsec + (long)(wait * 1e9);
      ts.tv_sec += ns / 1000000000L;
      ts.tv_nsec = ns % 1000000000L;
      pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    if (t->stop) break;
    if (t->reanchor) {
      t->reanchor = 0;
      pthread_mutex_unlock(&t->mu);
      train__reanchor(t);
      pthread_mutex_lock(&t->mu);
      continue;
    }
    int forced = t->now;
    t->now = 0;
    if (t->paused && !forced) continue;
    uset touched = t->touched;
    memset(&t->touched, 0, sizeof t->touched);
    uint64_t pending = t->pending;
    t->pending = 0;
    t->st.pending_events = 0;
    t->st.running = 1;
    uset carried = t->carried, held_out = {0};
    memset(&t->carried, 0, sizeof t->carried);
    round_cfg rc = t->rc;
    pthread_mutex_unlock(&t->mu);
    trainer_round rr;
    int o = train__round_run(t, &touched, &carried, forced, &rc, &rr, &held_out);
    pthread_mutex_lock(&t->mu);
    t->st.running = 0;
    next = fl_now() + t->rc.interval_s;
    /* did not run: keep what was touched and carried for the next try; ran: carry what it
     * held out */
    train__uset_merge(&t->carried, o < 0 ? &carried : &held_out);
    if (o < 0) {
      train__uset_merge(&t->touched, &touched);
      t->pending += pending;
      /* more than the declined round saw: events that landed while it ran count */
      t->retry_at = pending + t->rc.min_new_events;
      t->st.pending_events = t->pending;
      t->st.skipped++;
    } else {
      t->retry_at = 0;
      t->st.rounds++;
      t->st.outcomes[o]++;
      t->st.last = rr;
      if (t->st.nhistory == TRAINER_HISTORY) {
        memmove(t->st.history, t->st.history + 1, (TRAINER_HISTORY - 1) * sizeof rr);
        t->st.nhistory--;
      }
      t->st.history[t->st.nhistory++] = rr;
      uint64_t n = t->st.rounds, every = t->rc.reanchor_rounds;
      pthread_mutex_unlock(&t->mu);
      log_round(n, &rr, atomic_load(&t->cancel));
      if (o == TRAINER_PROMOTED && every && ++t->since_anchor >= every) {
        fl_info("re-anchor: scheduled after %" PRIu64 " promotions (train.reanchor_rounds)", every);
        train__reanchor(t);
      }
      pthread_mutex_lock(&t->mu);
    }
    train__uset_free(&touched);
    train__uset_free(&carried);
    train__uset_free(&held_out);
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

void trainer_touch(trainer *t, const char *user, size_t len, size_t n) {
  pthread_mutex_lock(&t->mu);
  train__uset_add(&t->touched, user, len, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
  t->pending += n;
  t->st.pending_events = t->pending;
  if (t->pending >= events_due(t)) pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

void trainer_command(trainer *t, trainer_cmd c) {
  pthread_mutex_lock(&t->mu);
  switch (c) {
  case TRAINER_TRAIN_NOW:
    t->now = 1;
    break;
  case TRAINER_PAUSE:
    t->paused = 1;
    break;
  case TRAINER_RESUME:
    t->paused = 0;
    break;
  case TRAINER_REANCHOR:
    t->reanchor = 1;
    break;
  }
  t->st.paused = t->paused;
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

void trainer_get_stats(trainer *t, trainer_stats *s) {
  pthread_mutex_lock(&t->mu);
  *s = t->st;
  pthread_mutex_unlock(&t->mu);
}

static void trainer_free(trainer *t) {
  if (t->has_anchor) model_free(&t->anchor);
  free(t->known);
  free(t->opt_m);
  free(t->opt_v);
  train__uset_free(&t->touched);
  train__uset_free(&t->carried);
  train__round_state_free(t);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

void trainer_stop(trainer *t) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  t->stop = 1;
  atomic_store(&t->cancel, 1);
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
  pthread_join(t->th, NULL);
  trainer_free(t);
}

int trainer_start(trainer **out, const config *cfg, state_db *db, serve_slot *slot, char *err,
                  size_t errlen) {
  *out = NULL;
  trainer *t = xcalloc(1, sizeof *t);
  t->db = db;
  t->slot = slot;
  t->baseline = cfg->api.online_eval_baseline && cfg->api.online_eval_per_s > 0;
  if (*cfg->model.dir)
    snprintf(t->dir, sizeof t->dir, "%s", cfg->model.dir);
  else
    snprintf(t->dir, sizeof t->dir, "%s/models", cfg->state.dir);
  model_hparams_default(&t->boot_hp);
  t->boot_hp.C = (uint32_t)cfg->model.dim;
  t->boot_hp.NL = (uint32_t)cfg->model.blocks;
  t->boot_hp.NH = (uint32_t)cfg->model.heads;
  t->boot_hp.FF = 4 * t->boot_hp.C;
  t->boot_hp.L = (uint32_t)cfg->model.maxlen;
  t->boot_hp.dropout = (float)cfg->model.dropout;
  t->boot_users = (size_t)cfg->train.bootstrap_min_users;
  t->boot_events = (size_t)cfg->train.bootstrap_min_events;
  t->boot_epochs = (size_t)cfg->train.bootstrap_epochs;
  t->seed = (uint64_t)cfg->train.seed;
  t->seq_len = (size_t)cfg->state.seq_len;
  t->pool.cap = (size_t)cfg->train.replay_pool;
  t->threads = (int)cfg->train.threads;
  t->nice = (int)cfg->train.nice;
  fl_rng_seed(&t->rng, t->seed ^ 0x747261696eull);
  read_round_cfg(&t->rc, cfg);
  t->paused = !cfg->train.enabled;
  const char *poison = getenv("FLAMED_TEST_POISON_ROUNDS");
  if (poison) t->poison = atoi(poison);
  if ((poison = getenv("FLAMED_TEST_POISON_BOOTSTRAPS"))) t->poison_boot = atoi(poison);
  t->st.paused = t->paused;
  atomic_init(&t->cancel, 0);
  pthread_mutex_init(&t->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&t->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (mkdir(t->dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "model dir %s: %s", t->dir, strerror(errno));
    trainer_free(t);
    return -errno;
  }
  train__remove_stale_temps(t->dir);
  int rc = train__load_anchor(t, cfg, err, errlen);
  if (rc != 0) {
    trainer_free(t);
    return rc;
  }
  serve_model *s = train__load_newest(t);
  if (s && !t->has_anchor) { /* a validated model, rather than an anchor from scratch */
    uint64_t v = train__anchor_from(t, s);
    s->anchor_version = v;
    fl_warn("anchor: none loads; snapshot version %" PRIu64 " becomes anchor version %" PRIu64,
            s->version, v);
  }
  if (!s && t->has_anchor) { /* warm start: the anchor's weights are version 1 */
    s = train__snapshot_of(t, &t->anchor, ++t->version, NULL, 0);
    if ((rc = train__save_snapshot(t, s, (size_t)cfg->model.keep)) != 0) {
      snprintf(err, errlen, "cannot write a snapshot into %s: %s", t->dir, fl_strerror(rc));
      serve_model_unref(s);
      trainer_free(t);
      return rc;
    }
  }
  if (s) {
    fl_info("serving model version %" PRIu64 " (%zu items)%s", s->version, s->m.NI,
            s->version == 1 && !s->holdout.users ? ", the anchor's weights" : "");
    serve_slot_publish(slot, s);
  } else {
    fl_info("no anchor yet: serving popularity until one is bootstrapped (needs %zu users and %zu "
            "events)",
            t->boot_users, t->boot_events);
    serve_slot_publish(slot, serve_model_new(0, NULL, NULL, 0));
  }
  if (pthread_create(&t->th, NULL, run, t) != 0) {
    snprintf(err, errlen, "cannot start the trainer thread");
    trainer_free(t);
    return -EAGAIN;
  }
  *out = t;
  return 0;
}
