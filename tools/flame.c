/* tools/flame.c: the `flame` offline tool: train, eval, import-pt, bench, synth, inspect.
 *
 * A thin layer over model/: it parses arguments, loads files, calls the engine and prints.
 * broker and produce are the Kafka side of demos, tests and the ingest benchmark.
 * Contract shared by every subcommand (later work and benchmarks call it): --help prints
 * usage and exits 0; a bad argument or an unreadable file prints ONE line
 * "flame <cmd>: <what>" on stderr and exits 2; progress goes to stderr; the result is the
 * last stdout line, one JSON object. */
#define _GNU_SOURCE
#include "common/common.h"
#include "model/model.h"
#include "model/synth.h"
#include "tools/broker.h"
#include "tools/produce.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

static const char *cmd = "flame";

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "flame %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(EXIT_USAGE);
}

/* ---- argument parsing helpers ---- */

static size_t arg_size(const char *opt, const char *v, size_t lo, size_t hi) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi)
    die("%s: expected an integer in [%zu, %zu], got '%s'", opt, lo, hi, v);
  return (size_t)x;
}

static double arg_double(const char *opt, const char *v, double lo, double hi) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !(x >= lo && x <= hi))
    die("%s: expected a number in [%g, %g], got '%s'", opt, lo, hi, v);
  return x;
}

static void need(const char *what, const char *v) {
  if (!v) die("%s is required (see flame %s --help)", what, cmd);
}

/* BLAS threads when --threads is not given. One: OpenBLAS's worker threads spin between
 * calls, so on a machine whose other cores are busy (a daemon, another job) a second thread
 * slowed a step down up to 8x (a 4 s demo epoch took 60 s); on idle cores --threads 2 is
 * ~1.5x faster (bench/RESULTS.md). Ask for it where the cores are yours. */
enum { DEFAULT_THREADS = 1 };

static void load_data(const char *path, data_set *ds) {
  char err[512];
  if (data_load(path, ds, err, sizeof err) != 0) die("%s", err);
}

static void load_ckpt(const char *path, model_sasrec *m) {
  char err[512];
  if (ckpt_load(path, m, err, sizeof err) != 0) die("%s", err);
}

static cJSON *metrics_json(const eval_metrics *e) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "HR@10", e->hr10);
  cJSON_AddNumberToObject(o, "NDCG@10", e->ndcg10);
  cJSON_AddNumberToObject(o, "HR@20", e->hr20);
  cJSON_AddNumberToObject(o, "NDCG@20", e->ndcg20);
  return o;
}

static void print_json(cJSON *o) {
  char *s = cJSON_PrintUnformatted(o);
  printf("%s\n", s);
  fflush(stdout);
  cJSON_free(s);
  cJSON_Delete(o);
}

/* The shape of a model, as import-pt and inspect report it. */
static void add_model_json(cJSON *j, const model_sasrec *m) {
  cJSON_AddNumberToObject(j, "items", (double)m->NI);
  cJSON_AddNumberToObject(j, "dim", m->hp.C);
  cJSON_AddNumberToObject(j, "blocks", m->hp.NL);
  cJSON_AddNumberToObject(j, "heads", m->hp.NH);
  cJSON_AddNumberToObject(j, "ffn", m->hp.FF);
  cJSON_AddNumberToObject(j, "maxlen", m->hp.L);
  cJSON_AddNumberToObject(j, "dropout", m->hp.dropout);
  cJSON_AddNumberToObject(j, "step", (double)m->step);
  cJSON_AddNumberToObject(j, "params", (double)m->nparams);
}

/* Options shared by the commands that build a model. */
enum {
  OPT_DIM = 1000,
  OPT_BLOCKS,
  OPT_HEADS,
  OPT_MAXLEN,
  OPT_DROPOUT,
  OPT_NO_PACK,
  OPT_NO_LAST_ONLY,
  OPT_SGEMM,
  OPT_MEAN_LEN,
  OPT_ANCHOR,
  OPT_TAU,
  OPT_LAMBDA0,
  OPT_LAMBDAR,
  OPT_SCHEDULE,
  OPT_MASK,
  OPT_DETACH,
  OPT_INIT,
  OPT_MODULES,
  OPT_PATHS,
  OPT_ANCHOR_DROPOUT,
};

/* The FLAME settings shared by train and bench. */
typedef struct {
  flame_opts fo;
  const char *anchor;   /* --anchor FILE or NULL */
  int schedule_set;     /* --schedule given (else R = --epochs) */
  float anchor_dropout; /* --anchor-dropout P, or < 0: the anchor's checkpoint's rate */
} flame_cli;

static int flame_option(int c, const char *arg, flame_cli *f) {
  switch (c) {
  case OPT_ANCHOR:
    f->anchor = arg;
    break;
  case OPT_TAU:
    f->fo.tau = (float)arg_double("--tau", arg, 1e-3, 1e3);
    break;
  case OPT_LAMBDA0:
    f->fo.lambda0 = (float)arg_double("--lambda0", arg, 1e-12, 1e6);
    break;
  case OPT_LAMBDAR:
    f->fo.lambdaR = (float)arg_double("--lambda-r", arg, 1e-12, 1e6);
    break;
  case OPT_SCHEDULE:
    f->fo.R = arg_size("--schedule", arg, 1, 1000000);
    f->schedule_set = 1;
    break;
  case OPT_MASK:
    if (strcmp(arg, "tiled") && strcmp(arg, "blockdiag"))
      die("--mask: expected tiled or blockdiag, got '%s'", arg);
    f->fo.blockdiag = strcmp(arg, "blockdiag") == 0;
    break;
  case OPT_DETACH:
    f->fo.detach_w = 1;
    break;
  case OPT_INIT:
    if (strcmp(arg, "random") && strcmp(arg, "anchor"))
      die("--init: expected random or anchor, got '%s'", arg);
    f->fo.warm_start = strcmp(arg, "anchor") == 0;
    break;
  case OPT_MODULES:
    if (strcmp(arg, "2") && strcmp(arg, "blocks"))
      die("--modules: expected 2 or blocks, got '%s'", arg);
    f->fo.per_block = strcmp(arg, "blocks") == 0;
    break;
  case OPT_PATHS:
    f->fo.paths = arg_size("--paths", arg, 2, 256);
    break;
  case OPT_ANCHOR_DROPOUT:
    f->anchor_dropout = (float)arg_double("--anchor-dropout", arg, 0.0, 0.95);
    break;
  default:
    return 0;
  }
  return 1;
}

#define FLAME_HELP                                                                                 \
  "FLAME (--method flame):\n"                                                                      \
  "  --anchor FILE    the frozen anchor (a flame checkpoint); the learnable network takes\n"       \
  "                   its shape and item table size, --dropout applies to the learnable\n"         \
  "                   network only\n"                                                              \
  "  --anchor-dropout P  the anchor's dropout in training (default: its checkpoint's\n"            \
  "                   rate, as in the paper; 0 runs it as in evaluation)\n"                        \
  "  --tau X          NT-Xent temperature (1)\n"                                                   \
  "  --lambda0 X      lambda at the start of the schedule (1)\n"                                   \
  "  --lambda-r X     lambda at its end (1e-5)\n"                                                  \
  "  --schedule N     schedule length R in epochs (--epochs)\n"                                    \
  "  --mask M         tiled (the paper) | blockdiag (independent paths, an ablation)\n"            \
  "  --detach-weights the pair weights are a stop-gradient (default: not detached)\n"              \
  "  --init I         random (the paper) | anchor (warm start from the anchor's weights)\n"        \
  "  --modules M      2 (the paper: embedding, encoder) | blocks (the embedding and every\n"       \
  "                   block are modules: 2^(1+blocks) paths)\n"                                    \
  "  --paths K        a random subset of K paths each step (default: all)\n"

/* clang-format off: one option per line reads better than what the formatter makes of it */
// clang-format off
#define FLAME_LONGOPTS                                    \
  {"anchor", required_argument, 0, OPT_ANCHOR},           \
  {"tau", required_argument, 0, OPT_TAU},                 \
  {"lambda0", required_argument, 0, OPT_LAMBDA0},         \
  {"lambda-r", required_argument, 0, OPT_LAMBDAR},        \
  {"schedule", required_argument, 0, OPT_SCHEDULE},       \
  {"mask", required_argument, 0, OPT_MASK},               \
  {"detach-weights", no_argument, 0, OPT_DETACH},         \
  {"init", required_argument, 0, OPT_INIT},               \
  {"modules", required_argument, 0, OPT_MODULES},         \
  {"paths", required_argument, 0, OPT_PATHS},             \
  {"anchor-dropout", required_argument, 0, OPT_ANCHOR_DROPOUT}
// clang-format on

static int hparams_option(int c, const char *arg, model_hparams *hp) {
  switch (c) {
  case OPT_DIM:
    hp->C = (uint32_t)arg_size("--dim", arg, 2, 4096);
    break;
  case OPT_BLOCKS:
    hp->NL = (uint32_t)arg_size("--blocks", arg, 1, 64);
    break;
  case OPT_HEADS:
    hp->NH = (uint32_t)arg_size("--heads", arg, 1, 64);
    break;
  case OPT_MAXLEN:
    hp->L = (uint32_t)arg_size("--maxlen", arg, 1, 4096);
    break;
  case OPT_DROPOUT:
    hp->dropout = (float)arg_double("--dropout", arg, 0.0, 0.95);
    break;
  default:
    return 0;
  }
  return 1;
}

static void hparams_finish(model_hparams *hp) {
  hp->FF = 4 * hp->C;
  if (model_hparams_check(hp) != 0)
    die("--dim %u must be a multiple of --heads %u", (unsigned)hp->C, (unsigned)hp->NH);
}

#define HPARAMS_HELP                                                                               \
  "  --dim N          channels d (64); the FFN is 4d wide\n"                                       \
  "  --blocks N       transformer blocks (2)\n"                                                    \
  "  --heads N        attention heads (2)\n"                                                       \
  "  --maxlen N       max sequence length L (50)\n"                                                \
  "  --dropout P      dropout probability (0.5)\n"

#define HPARAMS_LONGOPTS                                                                           \
  {"dim", required_argument, 0, OPT_DIM}, {"blocks", required_argument, 0, OPT_BLOCKS},            \
      {"heads", required_argument, 0, OPT_HEADS}, {"maxlen", required_argument, 0, OPT_MAXLEN}, {  \
    "dropout", required_argument, 0, OPT_DROPOUT                                                   \
  }

/* --paths must not exceed the paths the modules give. */
static void check_paths(const flame_cli *f, const model_hparams *hp) {
  size_t modules = f->fo.per_block ? 1 + hp->NL : 2;
  if (modules > 8) die("--modules blocks supports networks of up to 7 blocks");
  if (f->fo.paths > ((size_t)1 << modules))
    die("--paths %zu: %zu modules give only %zu paths", f->fo.paths, modules, (size_t)1 << modules);
}

/* Returns 1 for flame, 0 for sasrec. */
static int parse_method(const char *method) {
  if (strcmp(method, "sasrec") == 0) return 0;
  if (strcmp(method, "flame") == 0) return 1;
  die("--method: expected sasrec or flame, got '%s'", method);
}

/* The anchor's dropout in training: --anchor-dropout if given, else its own rate. */
static void set_anchor_dropout(const flame_cli *f, model_sasrec *anc) {
  if (f->anchor_dropout >= 0.0f) anc->hp.dropout = f->anchor_dropout;
}

/* Loads the anchor for a dataset with items up to NI, at --anchor-dropout if given. */
static void load_anchor(const flame_cli *f, model_sasrec *anc, size_t NI) {
  load_ckpt(f->anchor, anc);
  if (NI > anc->NI)
    die("%s: the data has item ids up to %zu but the anchor knows %zu items", f->anchor, NI,
        anc->NI);
  set_anchor_dropout(f, anc);
}

/* The FLAME-only options given without --method flame are refused. */
static void check_flame_only(const flame_cli *f, int is_flame) {
  if (is_flame) return;
  if (f->anchor) die("--anchor goes with --method flame");
  if (f->anchor_dropout >= 0.0f) die("--anchor-dropout goes with --method flame");
}

/* The learnable network of a FLAME run: the anchor's shape (dropout as given), random
 * weights from seed (the paper) or a copy of the anchor's (warm start). */
static void learnable_from_anchor(model_sasrec *m, const model_sasrec *anc, float dropout, int warm,
                                  uint64_t seed) {
  model_hparams hp = anc->hp;
  hp.dropout = dropout;
  if (model_init(m, &hp, anc->NI, seed) != 0) die("cannot build a model for %zu items", anc->NI);
  if (warm) memcpy(m->params, anc->params, m->nparams * sizeof(float));
}

static void bad_option(int argc, char **argv) {
  (void)argc;
  die("unknown or incomplete option '%s' (see flame %s --help)", argv[optind - 1], cmd);
}

/* ---- flame train ---- */

static const char train_help[] =
    "usage: flame train --data FILE --method sasrec|flame --out FILE.ckpt [options]\n"
    "Trains SASRec, or a FLAME learnable network against a frozen anchor, with early\n"
    "stopping on validation NDCG@20, and keeps the best checkpoint (of the learnable\n"
    "network only). Progress per epoch on stderr; the last stdout line is JSON:\n"
    "{\"best_epoch\":..,\"epochs\":..,\"val\":{..},\"test\":{..},\"wall_sec\":..,...}\n"
    "  --data FILE      dataset: `user item` or `user item item ...` per line\n"
    "  --method M       sasrec | flame (needs --anchor)\n"
    "  --out FILE       best checkpoint, written atomically at every improvement\n"
    "  --state FILE     training state (weights, Adam, best so far, place in the order),\n"
    "                   written atomically after every epoch; a run that finds FILE\n"
    "                   continues from it and ends as the uninterrupted run would. Data and\n"
    "                   settings must be the same; --epochs and --patience may grow (FLAME:\n"
    "                   give --schedule to keep R, which defaults to --epochs)\n"
    "  --epochs N       maximum epochs (200)\n"
    "  --patience N     stop after N epochs without improvement (20)\n"
    "  --epoch-samples N  an epoch is the next N samples of the shuffled order (default: all\n"
    "                   of them); budgets long runs and validates them more often\n"
    "  --protocol P     default | flame (truncates histories to L+3, FLAME.md section 4)\n"
    "  --threads N      BLAS threads (1)\n"
    "  --seed N         initialisation, shuffling and dropout (42)\n"
    "  --batch N        samples per step (256)\n"
    "  --lr X           Adam learning rate (0.001)\n" HPARAMS_HELP FLAME_HELP;

static int cmd_train(int argc, char **argv) {
  const char *data = NULL, *method = NULL, *out = NULL, *state = NULL;
  model_hparams hp;
  model_hparams_default(&hp);
  train_opts o;
  train_opts_default(&o);
  flame_cli f = {.anchor = NULL, .schedule_set = 0, .anchor_dropout = -1.0f};
  flame_opts_default(&f.fo);
  int threads = DEFAULT_THREADS, shape_set = 0;
  static const struct option lo[] = {{"data", required_argument, 0, 'd'},
                                     {"method", required_argument, 0, 'm'},
                                     {"out", required_argument, 0, 'o'},
                                     {"state", required_argument, 0, 'S'},
                                     {"epochs", required_argument, 0, 'e'},
                                     {"patience", required_argument, 0, 'p'},
                                     {"epoch-samples", required_argument, 0, 'E'},
                                     {"protocol", required_argument, 0, 'P'},
                                     {"threads", required_argument, 0, 't'},
                                     {"seed", required_argument, 0, 's'},
                                     {"batch", required_argument, 0, 'b'},
                                     {"lr", required_argument, 0, 'l'},
                                     {"help", no_argument, 0, 'h'},
                                     HPARAMS_LONGOPTS,
                                     FLAME_LONGOPTS,
                                     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'd':
      data = optarg;
      break;
    case 'm':
      method = optarg;
      break;
    case 'o':
      out = optarg;
      break;
    case 'S':
      state = optarg;
      break;
    case 'e':
      o.epochs = arg_size("--epochs", optarg, 1, 100000);
      break;
    case 'p':
      o.patience = arg_size("--patience", optarg, 1, 100000);
      break;
    case 'E':
      o.epoch_samples = arg_size("--epoch-samples", optarg, 1, SIZE_MAX);
      break;
    case 'P':
      if (eval_protocol_parse(optarg, &o.proto))
        die("--protocol: expected default or flame, got '%s'", optarg);
      break;
    case 't':
      threads = (int)arg_size("--threads", optarg, 1, 256);
      break;
    case 's':
      o.seed = arg_size("--seed", optarg, 0, SIZE_MAX);
      break;
    case 'b':
      o.batch = arg_size("--batch", optarg, 1, 65536);
      break;
    case 'l':
      o.lr = (float)arg_double("--lr", optarg, 1e-9, 10.0);
      break;
    case 'h':
      fputs(train_help, stdout);
      return 0;
    default:
      if (hparams_option(c, optarg, &hp)) {
        shape_set |= c != OPT_DROPOUT;
      } else if (!flame_option(c, optarg, &f)) {
        bad_option(argc, argv);
      }
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  need("--data", data);
  need("--method", method);
  need("--out", out);
  int is_flame = parse_method(method);
  if (is_flame) need("--anchor", f.anchor);
  check_flame_only(&f, is_flame);
  if (is_flame && shape_set) die("with --method flame the network takes the anchor's shape");
  hparams_finish(&hp);
  model_set_threads(threads);
  data_set ds;
  load_data(data, &ds);
  model_sasrec m, anc;
  if (is_flame) {
    load_anchor(&f, &anc, ds.NI);
    learnable_from_anchor(&m, &anc, hp.dropout, f.fo.warm_start, o.seed);
    check_paths(&f, &m.hp);
    if (!f.schedule_set) f.fo.R = o.epochs;
  } else if (model_init(&m, &hp, ds.NI, o.seed) != 0) {
    die("cannot build a model for %zu items", ds.NI);
  }
  if (o.proto == EVAL_PROTOCOL_FLAME) data_truncate(&ds, m.hp.L + 3);
  o.out = out;
  o.state = state;
  fprintf(stderr, "flame train: %zu users, %zu items, %zu parameters, threads %d\n", ds.nusers,
          ds.NI, m.nparams, threads);
  train_result r;
  int err = train_model(&m, is_flame ? &anc : NULL, &f.fo, &ds, &o, &r);
  if (err) die("%s", r.why[0] ? r.why : fl_strerror(err));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "method", method);
  cJSON_AddStringToObject(j, "data", data);
  cJSON_AddStringToObject(j, "protocol", o.proto == EVAL_PROTOCOL_FLAME ? "flame" : "default");
  cJSON_AddNumberToObject(j, "best_epoch", (double)r.best_epoch);
  cJSON_AddNumberToObject(j, "epochs", (double)r.epochs_run);
  if (state) cJSON_AddNumberToObject(j, "resumed_epoch", (double)r.resumed_epoch);
  cJSON_AddItemToObject(j, "val", metrics_json(&r.val));
  cJSON_AddItemToObject(j, "test", metrics_json(&r.test));
  cJSON_AddNumberToObject(j, "wall_sec", r.wall_sec);
  cJSON_AddNumberToObject(j, "best_sec", r.best_sec);
  cJSON_AddNumberToObject(j, "last_loss", r.last_loss);
  cJSON_AddNumberToObject(j, "threads", threads);
  cJSON_AddNumberToObject(j, "seed", (double)o.seed);
  cJSON_AddNumberToObject(j, "lr", o.lr);
  cJSON_AddNumberToObject(j, "batch", (double)o.batch);
  add_model_json(cJSON_AddObjectToObject(j, "model"), &m); /* the trained (learnable) network */
  if (is_flame) {
    cJSON *fj = cJSON_AddObjectToObject(j, "flame");
    cJSON_AddStringToObject(fj, "anchor", f.anchor);
    cJSON_AddNumberToObject(fj, "anchor_dropout", anc.hp.dropout);
    cJSON_AddNumberToObject(fj, "tau", f.fo.tau);
    cJSON_AddNumberToObject(fj, "lambda0", f.fo.lambda0);
    cJSON_AddNumberToObject(fj, "lambda_r", f.fo.lambdaR);
    cJSON_AddNumberToObject(fj, "schedule", (double)f.fo.R);
    cJSON_AddStringToObject(fj, "mask", f.fo.blockdiag ? "blockdiag" : "tiled");
    cJSON_AddBoolToObject(fj, "detach_weights", f.fo.detach_w);
    cJSON_AddStringToObject(fj, "init", f.fo.warm_start ? "anchor" : "random");
    cJSON_AddStringToObject(fj, "modules", f.fo.per_block ? "blocks" : "2");
    cJSON_AddNumberToObject(fj, "paths", (double)f.fo.paths);
  }
  cJSON *mem = cJSON_AddObjectToObject(j, "memory_bytes");
  cJSON_AddNumberToObject(mem, "params", (double)r.param_bytes);
  cJSON_AddNumberToObject(mem, "grads", (double)r.param_bytes);
  cJSON_AddNumberToObject(mem, "adam", 2.0 * (double)r.param_bytes);
  cJSON_AddNumberToObject(mem, "train_activations", (double)r.train_act_bytes);
  cJSON_AddNumberToObject(mem, "eval_activations", (double)r.eval_act_bytes);
  print_json(j);
  model_free(&m);
  if (is_flame) model_free(&anc);
  data_free(&ds);
  return 0;
}

/* ---- flame eval ---- */

static const char eval_help[] =
    "usage: flame eval --data FILE --checkpoint FILE [--protocol default|flame] [--threads N (1)]\n"
    "Full-ranking HR@10/20 and NDCG@10/20 on the leave-one-out validation and test items.\n"
    "The last stdout line is JSON: {\"val\":{\"HR@10\":..,\"NDCG@10\":..,\"HR@20\":..,\n"
    "\"NDCG@20\":..},\"test\":{...}}\n";

static int cmd_eval(int argc, char **argv) {
  const char *data = NULL, *ckpt = NULL;
  eval_protocol proto = EVAL_PROTOCOL_DEFAULT;
  int threads = DEFAULT_THREADS;
  static const struct option lo[] = {
      {"data", required_argument, 0, 'd'},     {"checkpoint", required_argument, 0, 'c'},
      {"protocol", required_argument, 0, 'P'}, {"threads", required_argument, 0, 't'},
      {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'd':
      data = optarg;
      break;
    case 'c':
      ckpt = optarg;
      break;
    case 'P':
      if (eval_protocol_parse(optarg, &proto))
        die("--protocol: expected default or flame, got '%s'", optarg);
      break;
    case 't':
      threads = (int)arg_size("--threads", optarg, 1, 256);
      break;
    case 'h':
      fputs(eval_help, stdout);
      return 0;
    default:
      bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  need("--data", data);
  need("--checkpoint", ckpt);
  model_set_threads(threads);
  model_sasrec m;
  load_ckpt(ckpt, &m);
  data_set ds;
  load_data(data, &ds);
  if (ds.NI > m.NI)
    die("%s has item ids up to %zu but the checkpoint knows %zu items", data, ds.NI, m.NI);
  if (proto == EVAL_PROTOCOL_FLAME) data_truncate(&ds, m.hp.L + 3);
  eval_metrics val, test;
  double t0 = fl_now();
  int err = eval_run(&m, &ds, proto, EVAL_VAL, &val);
  if (!err) err = eval_run(&m, &ds, proto, EVAL_TEST, &test);
  if (err) die("%s", fl_strerror(err));
  fprintf(stderr, "flame eval: %zu users, %.2f s\n", val.users, fl_now() - t0);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddItemToObject(j, "val", metrics_json(&val));
  cJSON_AddItemToObject(j, "test", metrics_json(&test));
  print_json(j);
  model_free(&m);
  data_free(&ds);
  return 0;
}

/* ---- flame import-pt ---- */

static const char import_help[] =
    "usage: flame import-pt --in FILE.pt --out FILE.ckpt\n"
    "Converts the FLAME authors' PyTorch SASRec weights (a zip of raw float32 arrays,\n"
    "FLAME.md section 5) into a flame checkpoint. Prints a JSON summary.\n";

static int cmd_import(int argc, char **argv) {
  const char *in = NULL, *out = NULL;
  static const struct option lo[] = {{"in", required_argument, 0, 'i'},
                                     {"out", required_argument, 0, 'o'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'i':
      in = optarg;
      break;
    case 'o':
      out = optarg;
      break;
    case 'h':
      fputs(import_help, stdout);
      return 0;
    default:
      bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  need("--in", in);
  need("--out", out);
  model_sasrec m;
  char err[512];
  if (ptimport_load(in, &m, err, sizeof err) != 0) die("%s", err);
  int rc = ckpt_save(out, &m);
  if (rc) die("%s: %s", out, fl_strerror(rc));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "out", out);
  add_model_json(j, &m);
  print_json(j);
  model_free(&m);
  return 0;
}

/* ---- flame bench ---- */

static const char bench_help[] =
    "usage: flame bench --data FILE --method sasrec|flame [options]\n"
    "Times training steps on random batches of the dataset's training samples (as\n"
    "../shared/bench/torch_ref.py bench does): the median of all steps after 2 warm-up\n"
    "steps. The last stdout line is JSON with torch_ref.py's keys plus useful GFLOP/s.\n"
    "  --batch N        samples per step (256)\n"
    "  --maxlen N       max sequence length L (50)\n"
    "  --threads N      BLAS threads (2)\n"
    "  --steps N        steps including 2 warm-up (12)\n"
    "  --seed N         (42)\n"
    "  --no-pack        compute the padded window (measures what packing buys)\n"
    "  --no-last-only   compute the whole last block (measures what the shortcut buys)\n"
    "  --sgemm          measure the machine's sgemm throughput instead (1024^3)\n"
    "  --anchor FILE    (flame) the frozen anchor; without it a random frozen network\n"
    "                   stands in (speed does not depend on its weights)\n"
    "  --mask M, --detach-weights, --init I, --modules M, --paths K, --anchor-dropout P\n"
    "                   (flame) as for train\n";

static double median(double *v, size_t n) {
  fl_sort_doubles(v, n);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench_sgemm(int threads, size_t steps) {
  size_t n = 1024;
  float *a = xalloc_aligned(n * n * sizeof(float)), *b = xalloc_aligned(n * n * sizeof(float));
  float *cm = xalloc_aligned(n * n * sizeof(float));
  for (size_t i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
  double *t = xmalloc(steps * sizeof(double));
  for (size_t s = 0; s < steps; s++) {
    double t0 = fl_now();
    model_matmul(cm, n, a, n, 0, b, n, 1, n, n, n, 1.0f, 0.0f);
    t[s] = fl_now() - t0;
  }
  double med = median(t + 2, steps - 2);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "impl", "openblas-sgemm");
  cJSON_AddNumberToObject(j, "n", (double)n);
  cJSON_AddNumberToObject(j, "threads", threads);
  cJSON_AddNumberToObject(j, "sec", med);
  cJSON_AddNumberToObject(j, "gflops", 2.0 * n * n * n / med / 1e9);
  print_json(j);
  free(a), free(b), free(cm), free(t);
  return 0;
}

static int cmd_bench(int argc, char **argv) {
  const char *data = NULL, *method = NULL;
  size_t B = 256, steps = 12;
  uint64_t seed = 42;
  int threads = 2, pad = 0, last_only = 1, sgemm = 0;
  model_hparams hp;
  model_hparams_default(&hp);
  static const struct option lo[] = {{"data", required_argument, 0, 'd'},
                                     {"method", required_argument, 0, 'm'},
                                     {"batch", required_argument, 0, 'b'},
                                     {"threads", required_argument, 0, 't'},
                                     {"steps", required_argument, 0, 'n'},
                                     {"seed", required_argument, 0, 's'},
                                     {"no-pack", no_argument, 0, OPT_NO_PACK},
                                     {"no-last-only", no_argument, 0, OPT_NO_LAST_ONLY},
                                     {"sgemm", no_argument, 0, OPT_SGEMM},
                                     {"help", no_argument, 0, 'h'},
                                     HPARAMS_LONGOPTS,
                                     FLAME_LONGOPTS,
                                     {0, 0, 0, 0}};
  flame_cli f = {.anchor = NULL, .schedule_set = 0, .anchor_dropout = -1.0f};
  flame_opts_default(&f.fo);
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'd':
      data = optarg;
      break;
    case 'm':
      method = optarg;
      break;
    case 'b':
      B = arg_size("--batch", optarg, 1, 65536);
      break;
    case 't':
      threads = (int)arg_size("--threads", optarg, 1, 256);
      break;
    case 'n':
      steps = arg_size("--steps", optarg, 3, 100000);
      break;
    case 's':
      seed = arg_size("--seed", optarg, 0, SIZE_MAX);
      break;
    case OPT_NO_PACK:
      pad = 1;
      break;
    case OPT_NO_LAST_ONLY:
      last_only = 0;
      break;
    case OPT_SGEMM:
      sgemm = 1;
      break;
    case 'h':
      fputs(bench_help, stdout);
      return 0;
    default:
      if (!hparams_option(c, optarg, &hp) && !flame_option(c, optarg, &f)) bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  model_set_threads(threads);
  if (sgemm) return bench_sgemm(threads, steps);
  need("--data", data);
  need("--method", method);
  int is_flame = parse_method(method);
  check_flame_only(&f, is_flame);
  hparams_finish(&hp);
  data_set ds;
  load_data(data, &ds);
  data_sample *all = NULL;
  size_t ns = data_train_samples(&ds, &all);
  if (ns == 0) die("%s has no training samples", data);
  model_sasrec m, anc;
  if (f.anchor) {
    load_anchor(&f, &anc, ds.NI);
    learnable_from_anchor(&m, &anc, hp.dropout, f.fo.warm_start, seed);
  } else {
    if (model_init(&m, &hp, ds.NI, seed) != 0) die("cannot build a model for %zu items", ds.NI);
    if (is_flame) {
      if (model_init(&anc, &hp, ds.NI, seed + 1) != 0) die("cannot build the anchor");
      set_anchor_dropout(&f, &anc);
    }
  }
  if (is_flame) check_paths(&f, &m.hp);
  m.last_only = last_only;
  if (is_flame) anc.last_only = last_only;
  model_train_alloc(&m);
  size_t L = m.hp.L;
  model_acts *a = model_acts_new(&m.hp, B, B * L);
  flame_ws *ws = is_flame ? flame_ws_new(&m.hp, B, f.fo.per_block) : NULL;
  int32_t *tok = xmalloc(B * L * sizeof(int32_t)), *tgt = xmalloc(B * sizeof(int32_t));
  size_t *off = xmalloc((B + 1) * sizeof(size_t));
  data_sample *pick = xmalloc(B * sizeof(data_sample));
  double *t = xmalloc(steps * sizeof(double)), flops = 0.0, tokens = 0.0;
  fl_rng r;
  fl_rng_seed(&r, seed);
  flame_parts parts;
  for (size_t s = 0; s < steps; s++) {
    for (size_t i = 0; i < B; i++) pick[i] = all[fl_rng_below(&r, ns)];
    model_batch bt;
    data_pack(&ds, pick, B, L, pad, tok, off, tgt, &bt);
    double t0 = fl_now();
    model_zero_grad(&m);
    if (is_flame) {
      flame_step(&m, &anc, ws, &bt, &f.fo, 1.0f, 1, &parts);
    } else {
      model_forward(&m, a, &bt, 1);
      model_backward(&m, a, &bt);
    }
    model_adam_step(&m, 1e-3f);
    t[s] = fl_now() - t0;
    if (s >= 2) {
      flops += is_flame ? parts.flops : model_step_flops(&m, &bt);
      tokens += (double)bt.T;
    }
  }
  double med = median(t + 2, steps - 2);
  double mean_flops = flops / (double)(steps - 2);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "impl", "flame");
  cJSON_AddStringToObject(j, "method", method);
  cJSON_AddStringToObject(j, "data", data);
  cJSON_AddNumberToObject(j, "items", (double)ds.NI);
  cJSON_AddNumberToObject(j, "batch", (double)B);
  cJSON_AddNumberToObject(j, "maxlen", L);
  cJSON_AddNumberToObject(j, "threads", threads);
  cJSON_AddNumberToObject(j, "sec_per_step", med);
  cJSON_AddNumberToObject(j, "samples_per_sec", (double)B / med);
  cJSON_AddNumberToObject(j, "useful_gflop_per_step", mean_flops / 1e9);
  cJSON_AddNumberToObject(j, "useful_gflops", mean_flops / med / 1e9);
  cJSON_AddNumberToObject(j, "tokens_per_step", tokens / (double)(steps - 2));
  cJSON_AddBoolToObject(j, "packed", !pad);
  cJSON_AddBoolToObject(j, "last_only", last_only);
  print_json(j);
  free(t), free(pick), free(off), free(tgt), free(tok), free(all);
  model_acts_free(a);
  flame_ws_free(ws);
  model_free(&m);
  if (is_flame) model_free(&anc);
  data_free(&ds);
  return 0;
}

/* ---- flame synth ---- */

static const char synth_help[] =
    "usage: flame synth --out FILE [--users N] [--items N] [--mean-len N] [--seed N]\n"
    "Writes a synthetic `user item item ...` dataset with learnable sequential structure\n"
    "(topics walked in order, 1-3 tastes per user, drift): for demos and tests.\n"
    "  --users N (2000)  --items N (500)  --mean-len N (20)  --seed N (1)\n";

static int cmd_synth(int argc, char **argv) {
  const char *out = NULL;
  size_t users = 2000, items = 500, mean_len = 20;
  uint64_t seed = 1;
  static const struct option lo[] = {{"out", required_argument, 0, 'o'},
                                     {"users", required_argument, 0, 'u'},
                                     {"items", required_argument, 0, 'i'},
                                     {"mean-len", required_argument, 0, OPT_MEAN_LEN},
                                     {"seed", required_argument, 0, 's'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'u':
      users = arg_size("--users", optarg, 1, 100000000);
      break;
    case 'i':
      items = arg_size("--items", optarg, 5, 2147483646);
      break;
    case OPT_MEAN_LEN:
      mean_len = arg_size("--mean-len", optarg, 5, 100000);
      break;
    case 's':
      seed = arg_size("--seed", optarg, 0, SIZE_MAX);
      break;
    case 'h':
      fputs(synth_help, stdout);
      return 0;
    default:
      bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  need("--out", out);
  int err = synth_write(out, users, items, mean_len, seed);
  if (err) die("%s: %s", out, fl_strerror(err));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "out", out);
  cJSON_AddNumberToObject(j, "users", (double)users);
  cJSON_AddNumberToObject(j, "items", (double)items);
  print_json(j);
  return 0;
}

/* ---- flame init ---- */

static const char init_help[] =
    "usage: flame init --items N --out FILE.ckpt [--dim N] [--blocks N] [--heads N]\n"
    "                  [--maxlen N] [--seed N]\n"
    "Writes an untrained SASRec checkpoint (FLAME.md's initialisation) for N items: a stand-in\n"
    "anchor for serving benchmarks with large synthetic catalogues, where training one is\n"
    "beside the point.\n" HPARAMS_HELP;

static int cmd_init(int argc, char **argv) {
  const char *out = NULL;
  size_t items = 0;
  uint64_t seed = 42;
  model_hparams hp;
  model_hparams_default(&hp);
  static const struct option lo[] = {{"out", required_argument, 0, 'o'},
                                     {"items", required_argument, 0, 'i'},
                                     {"seed", required_argument, 0, 's'},
                                     {"help", no_argument, 0, 'h'},
                                     HPARAMS_LONGOPTS,
                                     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'i':
      items = arg_size("--items", optarg, 1, 2147483646);
      break;
    case 's':
      seed = arg_size("--seed", optarg, 0, SIZE_MAX);
      break;
    case 'h':
      fputs(init_help, stdout);
      return 0;
    default:
      if (!hparams_option(c, optarg, &hp)) bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  need("--out", out);
  if (!items) die("--items is required");
  hparams_finish(&hp);
  model_sasrec m;
  if (model_init(&m, &hp, items, seed) != 0) die("cannot build a model for %zu items", items);
  int err = ckpt_save(out, &m);
  if (err) die("%s: %s", out, fl_strerror(err));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "out", out);
  cJSON_AddNumberToObject(j, "items", (double)items);
  cJSON_AddNumberToObject(j, "parameters", (double)m.nparams);
  print_json(j);
  model_free(&m);
  return 0;
}

/* ---- flame inspect ---- */

static const char inspect_help[] =
    "usage: flame inspect --checkpoint FILE\n"
    "Validates a checkpoint and prints its header and parameter statistics as JSON.\n";

static int cmd_inspect(int argc, char **argv) {
  const char *ckpt = NULL;
  static const struct option lo[] = {
      {"checkpoint", required_argument, 0, 'c'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'c':
      ckpt = optarg;
      break;
    case 'h':
      fputs(inspect_help, stdout);
      return 0;
    default:
      bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  need("--checkpoint", ckpt);
  model_sasrec m;
  load_ckpt(ckpt, &m);
  double sq = 0.0;
  for (size_t i = 0; i < m.nparams; i++) sq += (double)m.params[i] * m.params[i];
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "checkpoint", ckpt);
  add_model_json(j, &m);
  cJSON_AddNumberToObject(j, "param_rms", sqrt(sq / (double)m.nparams));
  print_json(j);
  model_free(&m);
  return 0;
}

/* ---- flame broker ---- */

static volatile sig_atomic_t stop_requested; /* read by produce's loop, set by signals */
static void on_stop_signal(int sig) { stop_requested = 1; }

static void catch_stop_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

static const char broker_help[] =
    "usage: flame broker [--port P] [--partitions N] [--topics a,b] [--brokers N]\n"
    "Runs an embedded Kafka (librdkafka's mock cluster: the real protocol, messages in memory)\n"
    "on loopback until SIGINT/SIGTERM. Prints its bootstrap address on the first stdout line\n"
    "as JSON: {\"bootstrap\":\"127.0.0.1:P\",...}. For demos and tests, not production.\n"
    "  --port P        a fixed bootstrap port on 127.0.0.1 (default: the brokers' own\n"
    "                  OS-chosen ports); clients may then start before the broker\n"
    "  --partitions N  partitions of each topic (4)\n"
    "  --topics LIST   topics to create (events,events.dlq); others are created on first use\n"
    "  --brokers N     brokers in the cluster (1)\n";

static int cmd_broker(int argc, char **argv) {
  int port = 0, partitions = 4, nbrokers = 1;
  char *topics = xmalloc(256);
  snprintf(topics, 256, "events,events.dlq");
  static const struct option lo[] = {
      {"port", required_argument, 0, 'p'},   {"partitions", required_argument, 0, 'n'},
      {"topics", required_argument, 0, 't'}, {"brokers", required_argument, 0, 'b'},
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'p':
      port = (int)arg_size("--port", optarg, 1, 65535);
      break;
    case 'n':
      partitions = (int)arg_size("--partitions", optarg, 1, 1000);
      break;
    case 't':
      free(topics);
      topics = strdup(optarg);
      break;
    case 'b':
      nbrokers = (int)arg_size("--brokers", optarg, 1, 16);
      break;
    case 'h':
      fputs(broker_help, stdout);
      free(topics);
      return 0;
    default:
      bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  const char *names[64];
  size_t nt = 0;
  for (char *save = NULL, *t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (nt == 64) die("--topics: at most 64 topics");
    names[nt++] = t;
  }
  catch_stop_signals();
  stream_broker *b;
  char err[512];
  if (stream_broker_start(&b, nbrokers, port, partitions, names, nt, err, sizeof err) != 0)
    die("%s", err);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "bootstrap", stream_broker_bootstraps(b));
  cJSON_AddNumberToObject(j, "brokers", nbrokers);
  cJSON_AddNumberToObject(j, "partitions", partitions);
  print_json(j);
  fflush(stdout);
  fprintf(stderr, "flame broker: serving on %s until SIGINT/SIGTERM\n",
          stream_broker_bootstraps(b));
  while (!stop_requested) pause();
  stream_broker_stop(b);
  free(topics);
  return 0;
}

/* ---- flame produce ---- */

static const char produce_help[] =
    "usage: flame produce --brokers B --topic T --data FILE [--rate N] [--format json|csv]\n"
    "                     [--skip N] [--limit N] [--malformed-every N] [--align start|end]\n"
    "Replays a dataset (`user item` or `user item item ...` lines) as a clickstream keyed by\n"
    "user: users interleaved, each user's order preserved, string ids (\"user-7\",\n"
    "\"item-42\") and ts = the produce time in ms. Stops early on SIGINT/SIGTERM. The last\n"
    "stdout line is JSON: {\"sent\":..,\"failed\":..,\"seconds\":..,\"events_per_sec\":..}.\n"
    "  --brokers B     bootstrap servers, e.g. 127.0.0.1:9092\n"
    "  --topic T       the topic to write\n"
    "  --data FILE     the dataset\n"
    "  --rate N        events per second (default: as fast as the broker takes them)\n"
    "  --format F      json (default) | csv\n"
    "  --skip N        leave out the first N events of the replay (with --limit N, a\n"
    "                  replay in two parts, e.g. at two rates)\n"
    "  --limit N       stop after N events\n"
    "  --align A       start (default): every user's first event, then every user's second,\n"
    "                  ...; end: aligned at the ends of the sequences, so that every user's\n"
    "                  last event comes in the last round (the time order the leave-last-out\n"
    "                  protocol assumes: the items a model was validated and tested on are\n"
    "                  the newest)\n"
    "  --malformed-every N  every Nth message is a malformed one (bad JSON, no item, an\n"
    "                  empty user, a bad ts in turn) followed by the real event: for demos\n";

static int cmd_produce(int argc, char **argv) {
  stream_produce_opts o = {.format = STREAM_PRODUCE_JSON};
  const char *data = NULL;
  static const struct option lo[] = {{"brokers", required_argument, 0, 'b'},
                                     {"topic", required_argument, 0, 't'},
                                     {"data", required_argument, 0, 'd'},
                                     {"rate", required_argument, 0, 'r'},
                                     {"format", required_argument, 0, 'f'},
                                     {"skip", required_argument, 0, 's'},
                                     {"limit", required_argument, 0, 'l'},
                                     {"malformed-every", required_argument, 0, 'm'},
                                     {"align", required_argument, 0, 'a'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'b':
      o.brokers = optarg;
      break;
    case 't':
      o.topic = optarg;
      break;
    case 'd':
      data = optarg;
      break;
    case 'r':
      o.rate = arg_double("--rate", optarg, 0, 1e9);
      break;
    case 'f':
      if (!strcmp(optarg, "json"))
        o.format = STREAM_PRODUCE_JSON;
      else if (!strcmp(optarg, "csv"))
        o.format = STREAM_PRODUCE_CSV;
      else
        die("--format: expected json or csv, got '%s'", optarg);
      break;
    case 's':
      o.skip = arg_size("--skip", optarg, 0, SIZE_MAX);
      break;
    case 'l':
      o.limit = arg_size("--limit", optarg, 1, SIZE_MAX);
      break;
    case 'm':
      o.malformed_every = arg_size("--malformed-every", optarg, 2, SIZE_MAX);
      break;
    case 'a':
      if (!strcmp(optarg, "start"))
        o.align_end = 0;
      else if (!strcmp(optarg, "end"))
        o.align_end = 1;
      else
        die("--align: expected start or end, got '%s'", optarg);
      break;
    case 'h':
      fputs(produce_help, stdout);
      return 0;
    default:
      bad_option(argc, argv);
    }
  }
  if (optind < argc) die("unexpected argument '%s'", argv[optind]);
  need("--brokers", o.brokers);
  need("--topic", o.topic);
  need("--data", data);
  data_set ds;
  load_data(data, &ds);
  catch_stop_signals();
  o.stop = &stop_requested;
  stream_produce_result r;
  char err[512];
  if (stream_produce_sequences(&o, ds.nusers, ds.off, ds.items, ds.user_id, &r, err, sizeof err))
    die("%s", err);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "sent", (double)r.sent);
  cJSON_AddNumberToObject(j, "failed", (double)r.failed);
  cJSON_AddNumberToObject(j, "seconds", r.seconds);
  cJSON_AddNumberToObject(j, "events_per_sec", r.seconds > 0 ? (double)r.sent / r.seconds : 0);
  print_json(j);
  data_free(&ds);
  return r.failed ? 1 : 0;
}

/* ---- main ---- */

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *what;
} commands[] = {
    {"train", cmd_train, "train a model (early stopping, best checkpoint)"},
    {"eval", cmd_eval, "full-ranking HR/NDCG@10/20 of a checkpoint"},
    {"import-pt", cmd_import, "convert the FLAME authors' PyTorch weights"},
    {"bench", cmd_bench, "time training steps (or --sgemm)"},
    {"synth", cmd_synth, "write a synthetic dataset"},
    {"init", cmd_init, "write an untrained checkpoint (serving benchmarks)"},
    {"inspect", cmd_inspect, "validate and describe a checkpoint"},
    {"broker", cmd_broker, "run an embedded Kafka on loopback (demos, tests)"},
    {"produce", cmd_produce, "replay a dataset into a Kafka topic as a clickstream"},
};

static void usage(FILE *f) {
  fputs("usage: flame COMMAND [options]   (flame COMMAND --help for its options)\n", f);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(argv[1], commands[i].name) == 0) {
      cmd = commands[i].name;
      opterr = 0; /* our own one-line messages */
      return commands[i].fn(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "flame: unknown command '%s' (flame --help lists the commands)\n", argv[1]);
  return EXIT_USAGE;
}
