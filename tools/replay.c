/* tools/replay.c: `flame replay`, the daemon's online learning on a dataset's stream, offline
 * and deterministic (issue 28; docs/MODEL.md section 3).
 *
 * The dataset is split (model.h, data_split_make): what a platform's model was trained on, and
 * the stream after it. Every event of the stream is first RANKED by the serving network (full
 * ranking over the items seen so far, the user's input window excluded, as the daemon's online
 * evaluation ranks; a user without history is ranked by popularity, as the daemon serves one),
 * then STORED; every --round-events events a round runs: model/round.c's round_run, the code
 * the daemon's trainer runs, with the daemon's settings (--set section.key=value overrides
 * them). Policies: frozen (the anchor's weights throughout), flame (the daemon's rounds), ce
 * (the same rounds with the anchor terms off: lambda0 = 0), retrain (a SASRec from scratch on
 * every event stored, every --retrain-events events: a nightly batch job). */
#define _GNU_SOURCE
#include "tools/internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "config/config.h"

static const char replay_help[] =
    "usage: flame replay --data FILE --policy frozen|flame|ce|retrain [options]\n"
    "Streams a dataset's events after a split through the daemon's online loop, offline:\n"
    "each event is ranked by the serving network, then stored; a round (the daemon's round\n"
    "code and settings) runs every --round-events events. Progress on stderr; the last\n"
    "stdout line is JSON: {\"policy\":..,\"split\":{..},\"events\":..,\"HR@10\":..,\n"
    "\"NDCG@10\":..,\"segments\":{\"new_users\":{..},\"new_items\":{..},\"returning\":{..},\n"
    "\"returning_idle\":{..},\"with_history\":{..}},\"rounds\":..,\"cpu_s\":..}\n"
    "(with_history: the events of users with stored history, which the network ranks; the\n"
    "others are ranked by popularity). The same data, settings and seed give the same figures.\n"
    "  --data FILE        dataset (--format: auto | seq | uit | inter; auto reads *.inter as\n"
    "                     RecBole's atomic file, anything else as `user item [item ...]`)\n"
    "  --split F          the part before the split (0.8)\n"
    "  --split-by B       time (the first F of the events by timestamp; needs timestamps) |\n"
    "                     user (each user's first F of items; the stream interleaves users);\n"
    "                     default: time when the data has timestamps, else user\n"
    "  --policy P         frozen | flame | ce | retrain\n"
    "  --anchor FILE      the anchor (trained on the part before the split, e.g. by\n"
    "                     flame train --split F); without it one is pretrained here\n"
    "  --pretrain-epochs N  epochs of that pretraining, and of every retrain (30)\n"
    "  --round-events N   events between rounds (1000)\n"
    "  --round-interval S also a round once S seconds of the events' own time have passed\n"
    "                     since the last one (the daemon's train.interval_s; timestamped data)\n"
    "  --retrain-events K events between retrains (--policy retrain; 10000)\n"
    "  --idle-events N    the returning_idle segment: returning users' events after N or more\n"
    "                     events of the stream without one of theirs (10% of the stream)\n"
    "  --set S=V          a daemon setting for the rounds (train.steps=100, train.lr=0.0005,\n"
    "                     model.dropout=0.3, ...; repeatable; flamed --help-config lists them)\n"
    "  --out-dir DIR      writes DIR/replay-<policy>.csv (the metrics every --csv-every\n"
    "                     events) and DIR/replay.svg (every policy's curve found in DIR)\n"
    "  --csv-every N      events between CSV rows (1% of the stream)\n"
    "  --seed N           pretraining, rounds (42)\n"
    "  --threads N        BLAS threads (1)\n" HPARAMS_HELP;

typedef enum { POL_FROZEN, POL_FLAME, POL_CE, POL_RETRAIN } policy;
static const char *const policy_names[] = {"frozen", "flame", "ce", "retrain"};

/* Running sums of one segment's metrics. */
typedef struct {
  double ndcg, hr;
  size_t n;
} seg;

/* returning_idle: the returning users' events that come after --idle-events or more events of
 * the stream without one of theirs (the split counts as the stream's start): what the rounds in
 * between may have made the network forget about them. */
/* with_history: the events of users with stored history, ranked by the network (the others
 * by popularity): the events the daemon's online evaluation ranks. */
enum { SEG_ALL, SEG_NEW_USERS, SEG_NEW_ITEMS, SEG_RETURNING, SEG_IDLE, SEG_HISTORY, NSEG };
static const char *const seg_names[NSEG] = {"all",       "new_users",      "new_items",
                                            "returning", "returning_idle", "with_history"};

typedef struct {
  /* the run's inputs */
  const data_set *ds;
  const data_split *sp;
  policy pol;
  round_opts ro;
  int keep_adam;
  uint64_t reanchor_rounds, seed;
  size_t round_events, retrain_events, pretrain_epochs, idle_events;
  double round_interval;  /* > 0: also a round when this much event time has passed */
  double now_ts, last_ts; /* the newest streamed event's timestamp; the last round's */
  model_hparams hp;
  /* the stream's state */
  size_t *len;             /* (nusers) events stored per user */
  size_t *last;            /* (nusers) the stream index after the user's newest event (0: before) */
  uint32_t *learn, *fresh; /* (nusers) a round's input (round_env) */
  uint64_t *count;         /* (NI + 1) events per item so far */
  uint8_t *seen, *before;  /* (NI + 1) item stored so far; stored before the split */
  size_t since_round, since_retrain;
  /* the networks */
  model_net anchor, serving;
  float *opt_m, *opt_v; /* Adam's moments of the serving version's round (keep_adam) */
  size_t opt_n;
  uint64_t opt_step, version, opt_version;
  fl_rng rng;
  /* ranking scratch */
  model_acts *acts;
  float *scores;
  int32_t *tok;
  /* figures */
  seg s[NSEG], win;
  size_t rounds, promoted, failed_retrains;
  double train_cpu;
} replay;

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void seg_add(seg *s, size_t rank) {
  s->n++;
  if (rank < 10) {
    s->hr += 1.0;
    s->ndcg += 1.0 / log2((double)rank + 2.0);
  }
}

/* ---- ranking ---- */

/* The target's rank among the items seen so far by popularity (ties: lower index first), the
 * daemon's answer for a user without history. SIZE_MAX: an item never seen. */
static size_t pop_rank(const replay *r, int32_t item) {
  if (!r->seen[item]) return SIZE_MAX;
  size_t rank = 0;
  for (size_t j = 1; j <= r->ds->NI; j++)
    rank += r->seen[j] &&
            (r->count[j] > r->count[item] || (r->count[j] == r->count[item] && j < (size_t)item));
  return rank;
}

/* The rank of user u's next item by m: items of m's table seen so far, the input window (the
 * last L stored items) excluded. SIZE_MAX: an item m or the stream does not know yet, or one
 * in the window. */
static size_t model_rank(replay *r, const model_net *m, size_t u, int32_t item) {
  const int32_t *hist = r->ds->items + r->ds->off[u];
  size_t n = r->len[u], L = m->hp.L, w = n < L ? n : L;
  memcpy(r->tok, hist + n - w, w * sizeof *r->tok);
  size_t off[2] = {0, w};
  model_batch b = {.B = 1, .T = w, .tok = r->tok, .off = off};
  model_forward(m, r->acts, &b, 0);
  model_scores(m, model_acts_h(r->acts), 1, r->scores);
  if ((size_t)item > m->NI || !r->seen[item]) return SIZE_MAX;
  for (size_t i = 0; i < w; i++)
    if ((size_t)r->tok[i] <= m->NI) r->scores[r->tok[i] - 1] = -INFINITY;
  float t = r->scores[item - 1];
  if (t == -INFINITY || isnan(t)) return SIZE_MAX;
  size_t rank = 0;
  for (size_t j = 0; j < m->NI; j++) rank += r->seen[j + 1] && r->scores[j] > t;
  return rank;
}

/* Ranks the stream's event k with the serving network, then stores it. */
static void rank_then_store(replay *r, size_t k) {
  const data_sample *ev = &r->sp->after[k];
  size_t u = ev->user;
  int32_t item = r->ds->items[r->ds->off[u] + ev->end];
  size_t rank = r->len[u] == 0 ? pop_rank(r, item) : model_rank(r, &r->serving, u, item);
  seg_add(&r->s[SEG_ALL], rank);
  seg_add(&r->win, rank);
  seg_add(&r->s[r->sp->cut[u] ? SEG_RETURNING : SEG_NEW_USERS], rank);
  if (r->sp->cut[u] && k - r->last[u] >= r->idle_events) seg_add(&r->s[SEG_IDLE], rank);
  r->last[u] = k + 1;
  if (!r->before[item]) seg_add(&r->s[SEG_NEW_ITEMS], rank);
  if (r->len[u]) seg_add(&r->s[SEG_HISTORY], rank);
  r->len[u]++;
  r->learn[u] = r->learn[u] < UINT32_MAX ? r->learn[u] + 1 : UINT32_MAX;
  r->fresh[u] = r->fresh[u] < UINT32_MAX ? r->fresh[u] + 1 : UINT32_MAX;
  r->count[item]++;
  r->seen[item] = 1;
  r->since_round++;
  r->since_retrain++;
  if (r->ds->ts) r->now_ts = r->ds->ts[r->ds->off[u] + ev->end];
}

/* ---- learning ---- */

/* A SASRec from scratch on ds (early stopping on each user's last two items, as the daemon's
 * bootstrap and flame train do) into *m. */
static int pretrain(const replay *r, const data_set *ds, uint64_t seed, model_net *m) {
  if (model_init(m, &r->hp, ds->NI ? ds->NI : 1, seed) != 0) return FL_ERANGE;
  train_opts o;
  train_opts_default(&o);
  o.epochs = r->pretrain_epochs;
  o.patience = r->pretrain_epochs < 20 ? r->pretrain_epochs : 20;
  o.seed = seed;
  o.progress = 0;
  train_result tr;
  int rc = train_model(m, NULL, NULL, ds, &o, &tr);
  if (rc != 0) model_free(m);
  return rc;
}

/* The serving network becomes the candidate's weights (a new version), and its moments are
 * kept for the next round. */
static void promote(replay *r, model_net *cand) {
  model_free(&r->serving);
  model_take_params(&r->serving, cand);
  r->version++;
  r->promoted++;
  if (r->keep_adam) {
    model_swap_moments(cand, &r->opt_m, &r->opt_v);
    r->opt_n = cand->nparams;
    r->opt_step = cand->step;
    r->opt_version = r->version;
  }
  if (r->reanchor_rounds && r->promoted % r->reanchor_rounds == 0) {
    model_free(&r->anchor);
    model_copy_params(&r->anchor, &r->serving);
  }
}

/* One round on everything stored, as the daemon's trainer runs it. */
static void run_round(replay *r) {
  data_set now;
  data_prefix(r->ds, r->len, &now);
  int keep = r->keep_adam && r->opt_m && r->opt_version == r->version;
  round_env e = {.ds = &now,
                 .learn = r->learn,
                 .fresh = r->fresh,
                 .base = &r->serving,
                 .serving = &r->serving,
                 .anchor = &r->anchor,
                 .adam_m = keep ? r->opt_m : NULL,
                 .adam_v = keep ? r->opt_v : NULL,
                 .adam_n = r->opt_n,
                 .adam_step = r->opt_step,
                 .grow_seed = r->seed ^ (r->version + 1),
                 .dropout_seed = r->seed ^ (0x9e37ull * (r->version + 1)),
                 .rng = &r->rng};
  model_net cand;
  uint8_t *held;
  round_figures f;
  int o = round_run(&r->ro, &e, 0, &cand, &held, &f);
  if (o >= 0) { /* ran: what it held out is learned next; the rest was learned */
    r->rounds++;
    for (size_t u = 0; u < now.nusers; u++) {
      r->learn[u] = held[u] == 1;
      r->fresh[u] = 0;
    }
    if (o == ROUND_PASSED) promote(r, &cand);
    model_free(&cand);
    free(held);
  }
  data_free(&now);
}

static void run_retrain(replay *r) {
  data_set now;
  data_prefix(r->ds, r->len, &now);
  size_t events = now.off[now.nusers];
  fprintf(stderr,
          "flame replay: retrain %zu from scratch on %zu stored events (%zu epochs at most)\n",
          r->promoted + r->failed_retrains + 1, events, r->pretrain_epochs);
  double t0 = fl_now();
  model_net m;
  if (pretrain(r, &now, r->seed + r->version + 1, &m) == 0) {
    model_free(&r->serving);
    r->serving = m;
    r->version++;
    r->promoted++;
    fprintf(stderr, "flame replay: retrained in %.0f s\n", fl_now() - t0);
  } else {
    r->failed_retrains++;
    fprintf(stderr, "flame replay: the retrain failed after %.0f s; the previous network serves\n",
            fl_now() - t0);
  }
  data_free(&now);
}

/* After every event: a round or a retrain when one is due. */
static void maybe_learn(replay *r) {
  double c0 = cpu_now();
  int due = r->since_round >= r->round_events || (r->round_interval > 0 && r->since_round &&
                                                  r->now_ts - r->last_ts >= r->round_interval);
  if ((r->pol == POL_FLAME || r->pol == POL_CE) && due) {
    r->since_round = 0;
    r->last_ts = r->now_ts;
    run_round(r);
  } else if (r->pol == POL_RETRAIN && r->since_retrain >= r->retrain_events) {
    r->since_retrain = 0;
    run_retrain(r);
  } else {
    return;
  }
  r->train_cpu += cpu_now() - c0;
}

/* ---- output ---- */

static double mean(double sum, size_t n) { return n ? sum / (double)n : 0.0; }

static void csv_row(FILE *f, const replay *r, size_t events) {
  const seg *a = &r->s[SEG_ALL];
  fprintf(f, "%zu,%.6f,%.6f,%.6f,%.6f,%zu,%zu,%.3f\n", events, mean(a->ndcg, a->n),
          mean(a->hr, a->n), mean(r->win.ndcg, r->win.n), mean(r->win.hr, r->win.n), r->rounds,
          r->promoted, r->train_cpu);
}

/* The curves of every DIR/replay-<policy>.csv: windowed NDCG@10 against events, one polyline
 * each, on shared axes with their ranges labelled. */
static void write_svg(const char *dir) {
  enum { MAXP = 8, MAXN = 1000 };
  double xs[MAXP][MAXN], ys[MAXP][MAXN], xmax = 1, ymax = 1e-6;
  size_t np = 0, n[MAXP] = {0};
  char names[MAXP][64];
  for (int p = 0; p < 4 && np < MAXP; p++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/replay-%s.csv", dir, policy_names[p]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    char line[256];
    snprintf(names[np], sizeof names[np], "%s", policy_names[p]);
    while (fgets(line, sizeof line, f) && n[np] < MAXN) {
      double ev, cum, hr, win;
      if (sscanf(line, "%lf,%lf,%lf,%lf", &ev, &cum, &hr, &win) != 4) continue; /* the header */
      xs[np][n[np]] = ev;
      ys[np][n[np]++] = win;
      if (ev > xmax) xmax = ev;
      if (win > ymax) ymax = win;
    }
    fclose(f);
    np++;
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/replay.svg", dir);
  FILE *f = fopen(path, "w");
  if (!f) return;
  static const char *const colors[] = {"#777", "#d62728", "#1f77b4", "#2ca02c", "#9467bd"};
  const double W = 640, H = 360, x0 = 60, y0 = 20, pw = 540, ph = 290;
  fprintf(f,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
          "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
          "fill=\"white\"/>\n<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
          "fill=\"none\" stroke=\"#ccc\"/>\n",
          W, H, x0, y0, pw, ph);
  fprintf(f,
          "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">events of the stream (0 to %.0f)"
          "</text>\n",
          x0 + pw / 2, H - 12, xmax);
  fprintf(f,
          "<text x=\"14\" y=\"%.0f\" transform=\"rotate(-90 14 %.0f)\" text-anchor=\"middle\">"
          "NDCG@10 since the last CSV row (0 to %.3f)</text>\n",
          y0 + ph / 2, y0 + ph / 2, ymax);
  for (size_t p = 0; p < np; p++) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
            colors[p % 5]);
    for (size_t i = 0; i < n[p]; i++)
      fprintf(f, "%.1f,%.1f ", x0 + pw * xs[p][i] / xmax, y0 + ph - ph * ys[p][i] / ymax);
    fprintf(f, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", x0 + 10,
            y0 + 16 + 14 * (double)p, colors[p % 5], names[p]);
  }
  fputs("</svg>\n", f);
  fclose(f);
}

static cJSON *seg_json(const seg *s) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "events", (double)s->n);
  cJSON_AddNumberToObject(o, "HR@10", mean(s->hr, s->n));
  cJSON_AddNumberToObject(o, "NDCG@10", mean(s->ndcg, s->n));
  return o;
}

static void print_result(const replay *r, const char *data, double frac, double cpu, double wall) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "policy", policy_names[r->pol]);
  cJSON_AddStringToObject(j, "data", data);
  cJSON *sp = cJSON_AddObjectToObject(j, "split");
  cJSON_AddStringToObject(sp, "by", r->sp->by_time ? "time" : "user");
  cJSON_AddNumberToObject(sp, "frac", frac);
  cJSON_AddNumberToObject(sp, "before", (double)(r->ds->off[r->ds->nusers] - r->sp->nafter));
  cJSON_AddNumberToObject(j, "events", (double)r->s[SEG_ALL].n);
  cJSON_AddNumberToObject(j, "HR@10", mean(r->s[SEG_ALL].hr, r->s[SEG_ALL].n));
  cJSON_AddNumberToObject(j, "NDCG@10", mean(r->s[SEG_ALL].ndcg, r->s[SEG_ALL].n));
  cJSON *segs = cJSON_AddObjectToObject(j, "segments");
  for (int k = SEG_NEW_USERS; k < NSEG; k++)
    cJSON_AddItemToObject(segs, seg_names[k], seg_json(&r->s[k]));
  cJSON_AddNumberToObject(j, "rounds", (double)r->rounds);
  cJSON_AddNumberToObject(j, "promoted", (double)r->promoted);
  cJSON_AddNumberToObject(j, "round_events", (double)r->round_events);
  cJSON_AddNumberToObject(j, "idle_events", (double)r->idle_events);
  if (r->round_interval > 0) cJSON_AddNumberToObject(j, "round_interval", r->round_interval);
  if (r->pol == POL_RETRAIN)
    cJSON_AddNumberToObject(j, "retrain_events", (double)r->retrain_events);
  cJSON_AddNumberToObject(j, "cpu_s", r->train_cpu);
  cJSON_AddNumberToObject(j, "total_cpu_s", cpu);
  cJSON_AddNumberToObject(j, "wall_s", wall);
  cJSON_AddNumberToObject(j, "seed", (double)r->seed);
  tools__add_model_json(cJSON_AddObjectToObject(j, "model"), &r->serving);
  tools__print_json(j);
}

/* ---- the command ---- */

static policy parse_policy(const char *s) {
  for (int p = 0; p < 4; p++)
    if (strcmp(s, policy_names[p]) == 0) return (policy)p;
  tools__die("--policy must be frozen, flame, ce or retrain, not '%s'", s);
}

/* The daemon's round settings, with --set overrides. */
static void round_settings(replay *r, const tools__list *sets) {
  config c;
  config_init(&c);
  char err[512];
  for (size_t i = 0; i < sets->n; i++) {
    const char *eq = strchr(sets->v[i], '=');
    if (!eq) tools__die("--set wants section.key=value, not '%s'", sets->v[i]);
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(eq - sets->v[i]), sets->v[i]);
    if (config_set(&c, name, eq + 1, "--set", 0, err, sizeof err) != 0) tools__die("%s", err);
  }
  config_round_opts(&c, &r->ro);
  r->keep_adam = c.train.keep_adam;
  r->reanchor_rounds = (uint64_t)c.train.reanchor_rounds;
  config_free(&c);
  if (r->pol == POL_CE) r->ro.lambda0 = 0.0f;
}

/* The anchor: loaded, or pretrained on the part before the split. */
static void make_anchor(replay *r, const char *anchor) {
  data_set pre;
  data_prefix(r->ds, r->sp->cut, &pre);
  if (anchor) {
    tools__load_ckpt(anchor, &r->anchor);
    if (r->anchor.NI < pre.NI)
      tools__die("%s knows %zu items, the part before the split has %zu", anchor, r->anchor.NI,
                 pre.NI);
  } else {
    fprintf(stderr, "flame replay: pretraining an anchor on %zu events (%zu epochs at most)\n",
            pre.off[pre.nusers], r->pretrain_epochs);
    if (pretrain(r, &pre, r->seed, &r->anchor) != 0) tools__die("pretraining the anchor failed");
  }
  model_copy_params(&r->serving, &r->anchor);
  r->version = 1;
  data_free(&pre);
}

static void replay_init(replay *r, const data_set *ds, const data_split *sp) {
  size_t nu = ds->nusers, NI = ds->NI;
  r->ds = ds;
  r->sp = sp;
  r->len = xmalloc((nu ? nu : 1) * sizeof *r->len);
  memcpy(r->len, sp->cut, nu * sizeof *r->len);
  r->learn = xcalloc(nu ? nu : 1, sizeof *r->learn);
  r->last = xcalloc(nu ? nu : 1, sizeof *r->last);
  r->fresh = xcalloc(nu ? nu : 1, sizeof *r->fresh);
  r->count = xcalloc(NI + 1, sizeof *r->count);
  r->seen = xcalloc(NI + 1, 1);
  r->before = xcalloc(NI + 1, 1);
  for (size_t u = 0; u < nu; u++)
    for (size_t i = 0; i < sp->cut[u]; i++) {
      int32_t it = ds->items[ds->off[u] + i];
      r->count[it]++;
      r->seen[it] = r->before[it] = 1;
    }
  fl_rng_seed(&r->rng, r->seed);
}

static void replay_free(replay *r) {
  model_free(&r->anchor);
  model_free(&r->serving);
  model_acts_free(r->acts);
  free(r->scores), free(r->tok), free(r->opt_m), free(r->opt_v);
  free(r->len), free(r->last), free(r->learn), free(r->fresh), free(r->count), free(r->seen),
      free(r->before);
}

/* Streams the events: rank, store, learn; a CSV row every csv_every events, progress on
 * stderr about every 10 s. */
static void stream(replay *r, FILE *csv, size_t csv_every, double t0) {
  size_t N = r->sp->nafter;
  double next_note = fl_now() + 10.0;
  size_t NI = r->ds->NI > r->anchor.NI ? r->ds->NI : r->anchor.NI; /* the widest table */
  r->acts = model_acts_new(&r->serving.hp, 1, r->serving.hp.L);
  r->scores = xmalloc(NI * sizeof *r->scores);
  r->tok = xmalloc(r->serving.hp.L * sizeof *r->tok);
  if (r->ds->ts) /* the event time of the stream's start: the first interval counts from it */
    r->last_ts = r->now_ts = r->ds->ts[r->ds->off[r->sp->after[0].user] + r->sp->after[0].end];
  for (size_t k = 0; k < N; k++) {
    rank_then_store(r, k);
    maybe_learn(r);
    if (csv && ((k + 1) % csv_every == 0 || k + 1 == N)) {
      csv_row(csv, r, k + 1);
      memset(&r->win, 0, sizeof r->win);
    }
    if (fl_now() >= next_note || k + 1 == N) {
      next_note = fl_now() + 10.0;
      fprintf(stderr,
              "flame replay: %zu/%zu events, %zu rounds (%zu promoted), NDCG@10 %.4f, %.0f s\n",
              k + 1, N, r->rounds, r->promoted, mean(r->s[SEG_ALL].ndcg, r->s[SEG_ALL].n),
              fl_now() - t0);
    }
  }
}

int tools__cmd_replay(int argc, char **argv) {
  const char *data = NULL, *format = NULL, *split_by = NULL, *pol = NULL, *anchor = NULL,
             *out_dir = NULL;
  double frac = 0.8;
  int threads = DEFAULT_THREADS;
  size_t csv_every = 0;
  tools__list sets = {0};
  replay r = {.round_events = 1000, .retrain_events = 10000, .pretrain_epochs = 30, .seed = 42};
  model_hparams_default(&r.hp);
  const tools__opt opts[] = {{"data", TOOLS_STR, &data, 0, 0},
                             {"format", TOOLS_STR, &format, 0, 0},
                             {"split", TOOLS_DOUBLE, &frac, 0.01, 0.99},
                             {"split-by", TOOLS_STR, &split_by, 0, 0},
                             {"policy", TOOLS_STR, &pol, 0, 0},
                             {"anchor", TOOLS_STR, &anchor, 0, 0},
                             {"pretrain-epochs", TOOLS_SIZE, &r.pretrain_epochs, 1, 100000},
                             {"round-events", TOOLS_SIZE, &r.round_events, 1, TOOLS_NO_MAX},
                             {"round-interval", TOOLS_DOUBLE, &r.round_interval, 1e-3, 1e12},
                             {"retrain-events", TOOLS_SIZE, &r.retrain_events, 1, TOOLS_NO_MAX},
                             {"idle-events", TOOLS_SIZE, &r.idle_events, 1, TOOLS_NO_MAX},
                             {"set", TOOLS_LIST, &sets, 0, 0},
                             {"out-dir", TOOLS_STR, &out_dir, 0, 0},
                             {"csv-every", TOOLS_SIZE, &csv_every, 1, TOOLS_NO_MAX},
                             {"seed", TOOLS_U64, &r.seed, 0, TOOLS_NO_MAX},
                             {"threads", TOOLS_INT, &threads, 1, 256}};
  int shape_set = 0;
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, replay_help, &r.hp, &shape_set,
                   NULL))
    return 0;
  tools__need("--data", data);
  tools__need("--policy", pol);
  r.pol = parse_policy(pol);
  if (anchor && shape_set) tools__die("with --anchor the network takes the anchor's shape");
  tools__hparams_finish(&r.hp);
  round_settings(&r, &sets);
  model_set_threads(threads);
  data_set ds;
  tools__load_data_format(data, format, &ds);
  data_split sp;
  tools__split(&ds, frac, split_by, &sp);
  if (sp.nafter == 0) tools__die("no events after the split");
  if (r.round_interval > 0 && !ds.ts) tools__die("--round-interval needs timestamps");
  double t0 = fl_now(), c0 = cpu_now();
  replay_init(&r, &ds, &sp);
  make_anchor(&r, anchor);
  FILE *csv = NULL;
  if (out_dir) {
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
      tools__die("%s: %s", out_dir, strerror(errno));
    char path[4200];
    snprintf(path, sizeof path, "%s/replay-%s.csv", out_dir, policy_names[r.pol]);
    if (!(csv = fopen(path, "w"))) tools__die("%s: %s", path, strerror(errno));
    fputs("events,ndcg10,hr10,ndcg10_window,hr10_window,rounds,promoted,cpu_s\n", csv);
  }
  if (!r.idle_events) r.idle_events = sp.nafter / 10 ? sp.nafter / 10 : 1;
  if (!csv_every) csv_every = sp.nafter / 100 ? sp.nafter / 100 : 1;
  stream(&r, csv, csv_every, t0);
  if (csv) {
    if (fclose(csv) != 0)
      tools__die("%s/replay-%s.csv: write failed", out_dir, policy_names[r.pol]);
    write_svg(out_dir);
  }
  print_result(&r, data, frac, cpu_now() - c0, fl_now() - t0);
  replay_free(&r);
  data_split_free(&sp);
  data_free(&ds);
  return 0;
}
