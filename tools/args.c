/* tools/args.c: the helpers every command of the `flame` tool uses (tools/internal.h). */
#define _GNU_SOURCE
#include "tools/internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tools__cmd = "flame";

_Noreturn void tools__die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "flame %s: ", tools__cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(EXIT_USAGE);
}

/* ---- argument parsing helpers ---- */

size_t tools__arg_size(const char *opt, const char *v, size_t lo, size_t hi) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi)
    tools__die("%s: expected an integer in [%zu, %zu], got '%s'", opt, lo, hi, v);
  return (size_t)x;
}

double tools__arg_double(const char *opt, const char *v, double lo, double hi) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !(x >= lo && x <= hi))
    tools__die("%s: expected a number in [%g, %g], got '%s'", opt, lo, hi, v);
  return x;
}

void tools__need(const char *what, const char *v) {
  if (!v) tools__die("%s is required (see flame %s --help)", what, tools__cmd);
}

void tools__load_data(const char *path, data_set *ds) { tools__load_data_format(path, NULL, ds); }

void tools__load_data_format(const char *path, const char *format, data_set *ds) {
  char err[512];
  data_format f = DATA_FORMAT_AUTO;
  if (format && data_format_parse(format, &f) != 0)
    tools__die("--format must be auto, seq, uit or inter, not '%s'", format);
  if (data_load_format(path, f, ds, err, sizeof err) != 0) tools__die("%s", err);
}

void tools__split(const data_set *ds, double frac, const char *by, data_split *sp) {
  int by_time = ds->ts != NULL;
  if (by && strcmp(by, "time") == 0)
    by_time = 1;
  else if (by && strcmp(by, "user") == 0)
    by_time = 0;
  else if (by)
    tools__die("--split-by must be time or user, not '%s'", by);
  if (by_time && !ds->ts) tools__die("--split-by time needs timestamps, and the data has none");
  if (data_split_make(ds, frac, by_time, sp) != 0) tools__die("--split %g is not in (0, 1)", frac);
}

void tools__load_ckpt(const char *path, model_net *m) {
  char err[512];
  if (ckpt_load(path, m, err, sizeof err) != 0) tools__die("%s", err);
}

cJSON *tools__metrics_json(const eval_metrics *e) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "HR@10", e->hr10);
  cJSON_AddNumberToObject(o, "NDCG@10", e->ndcg10);
  cJSON_AddNumberToObject(o, "HR@20", e->hr20);
  cJSON_AddNumberToObject(o, "NDCG@20", e->ndcg20);
  return o;
}

void tools__print_json(cJSON *o) {
  char *s = cJSON_PrintUnformatted(o);
  printf("%s\n", s);
  fflush(stdout);
  cJSON_free(s);
  cJSON_Delete(o);
}

/* The shape of a model, as import-pt and inspect report it. */
void tools__add_model_json(cJSON *j, const model_net *m) {
  cJSON_AddStringToObject(j, "backbone", model_backbone_name(m->hp.backbone));
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

int tools__flame_option(int c, const char *arg, flame_cli *f) {
  switch (c) {
  case OPT_ANCHOR:
    f->anchor = arg;
    break;
  case OPT_TAU:
    f->fo.tau = (float)tools__arg_double("--tau", arg, 1e-3, 1e3);
    break;
  case OPT_LAMBDA0:
    f->fo.lambda0 = (float)tools__arg_double("--lambda0", arg, 1e-12, 1e6);
    break;
  case OPT_LAMBDAR:
    f->fo.lambdaR = (float)tools__arg_double("--lambda-r", arg, 1e-12, 1e6);
    break;
  case OPT_SCHEDULE:
    f->fo.R = tools__arg_size("--schedule", arg, 1, 1000000);
    f->schedule_set = 1;
    break;
  case OPT_MASK:
    if (strcmp(arg, "tiled") && strcmp(arg, "blockdiag"))
      tools__die("--mask: expected tiled or blockdiag, got '%s'", arg);
    f->fo.blockdiag = strcmp(arg, "blockdiag") == 0;
    break;
  case OPT_DETACH:
    f->fo.detach_w = 1;
    break;
  case OPT_INIT:
    if (strcmp(arg, "random") && strcmp(arg, "anchor"))
      tools__die("--init: expected random or anchor, got '%s'", arg);
    f->fo.warm_start = strcmp(arg, "anchor") == 0;
    break;
  case OPT_MODULES:
    if (strcmp(arg, "2") && strcmp(arg, "blocks"))
      tools__die("--modules: expected 2 or blocks, got '%s'", arg);
    f->fo.per_block = strcmp(arg, "blocks") == 0;
    break;
  case OPT_PATHS:
    f->fo.paths = tools__arg_size("--paths", arg, 2, 256);
    break;
  case OPT_ANCHOR_DROPOUT:
    f->anchor_dropout = (float)tools__arg_double("--anchor-dropout", arg, 0.0, 0.95);
    break;
  default:
    return 0;
  }
  return 1;
}

int tools__hparams_option(int c, const char *arg, model_hparams *hp) {
  switch (c) {
  case OPT_DIM:
    hp->C = (uint32_t)tools__arg_size("--dim", arg, 2, 4096);
    break;
  case OPT_BLOCKS:
    hp->NL = (uint32_t)tools__arg_size("--blocks", arg, 1, 64);
    break;
  case OPT_HEADS:
    hp->NH = (uint32_t)tools__arg_size("--heads", arg, 1, 64);
    break;
  case OPT_MAXLEN:
    hp->L = (uint32_t)tools__arg_size("--maxlen", arg, 1, 4096);
    break;
  case OPT_DROPOUT:
    hp->dropout = (float)tools__arg_double("--dropout", arg, 0.0, 0.95);
    break;
  default:
    return 0;
  }
  return 1;
}

void tools__hparams_finish(model_hparams *hp) {
  hp->FF = 4 * hp->C;
  if (model_hparams_check(hp) != 0)
    tools__die("--dim %u must be a multiple of --heads %u", (unsigned)hp->C, (unsigned)hp->NH);
}

/* --paths must not exceed the paths the modules give. */
void tools__check_paths(const flame_cli *f, const model_hparams *hp) {
  size_t modules = f->fo.per_block ? 1 + hp->NL : 2;
  if (modules > 8) tools__die("--modules blocks supports networks of up to 7 blocks");
  if (f->fo.paths > ((size_t)1 << modules))
    tools__die("--paths %zu: %zu modules give only %zu paths", f->fo.paths, modules,
               (size_t)1 << modules);
}

/* Returns 1 for flame, 0 for sasrec. */
int tools__parse_method(const char *method) {
  if (strcmp(method, "sasrec") == 0) return 0;
  if (strcmp(method, "flame") == 0) return 1;
  tools__die("--method: expected sasrec or flame, got '%s'", method);
}

/* The anchor's dropout in training: --anchor-dropout if given, else its own rate. */
void tools__set_anchor_dropout(const flame_cli *f, model_net *anc) {
  if (f->anchor_dropout >= 0.0f) anc->hp.dropout = f->anchor_dropout;
}

/* Loads the anchor for a dataset with items up to NI, at --anchor-dropout if given. */
void tools__load_anchor(const flame_cli *f, model_net *anc, size_t NI) {
  tools__load_ckpt(f->anchor, anc);
  if (NI > anc->NI)
    tools__die("%s: the data has item ids up to %zu but the anchor knows %zu items", f->anchor, NI,
               anc->NI);
  tools__set_anchor_dropout(f, anc);
}

/* The FLAME-only options given without --method flame are refused. */
void tools__check_flame_only(const flame_cli *f, int is_flame) {
  if (is_flame) return;
  if (f->anchor) tools__die("--anchor goes with --method flame");
  if (f->anchor_dropout >= 0.0f) tools__die("--anchor-dropout goes with --method flame");
}

/* The learnable network of a FLAME run: the anchor's shape (dropout as given), random
 * weights from seed (the paper) or a copy of the anchor's (warm start). */
void tools__learnable_from_anchor(model_net *m, const model_net *anc, float dropout, int warm,
                                  uint64_t seed) {
  model_hparams hp = anc->hp;
  hp.dropout = dropout;
  if (model_init(m, &hp, anc->NI, seed) != 0)
    tools__die("cannot build a model for %zu items", anc->NI);
  if (warm) memcpy(m->params, anc->params, m->nparams * sizeof(float));
}

void tools__bad_option(int argc, char **argv) {
  (void)argc;
  tools__die("unknown or incomplete option '%s' (see flame %s --help)", argv[optind - 1],
             tools__cmd);
}

/* ---- the option table ---- */

/* getopt_long's val of opts[i]: above the shape and FLAME options' codes. */
enum { OPT_TABLE = 2000 };

static void set_option(const tools__opt *o, const char *arg) {
  char name[64];
  snprintf(name, sizeof name, "--%s", o->name);
  size_t hi = o->hi < 0 ? SIZE_MAX : (size_t)o->hi, lo = (size_t)o->lo;
  switch (o->kind) {
  case TOOLS_STR:
    *(const char **)o->dst = arg;
    break;
  case TOOLS_FLAG:
    *(int *)o->dst = 1;
    break;
  case TOOLS_SIZE:
    *(size_t *)o->dst = tools__arg_size(name, arg, lo, hi);
    break;
  case TOOLS_INT:
    *(int *)o->dst = (int)tools__arg_size(name, arg, lo, hi);
    break;
  case TOOLS_U64:
    *(uint64_t *)o->dst = tools__arg_size(name, arg, lo, hi);
    break;
  case TOOLS_DOUBLE:
    *(double *)o->dst = tools__arg_double(name, arg, o->lo, o->hi);
    break;
  case TOOLS_FLOAT:
    *(float *)o->dst = (float)tools__arg_double(name, arg, o->lo, o->hi);
    break;
  case TOOLS_LIST: {
    tools__list *l = o->dst;
    if (l->n == sizeof l->v / sizeof l->v[0]) tools__die("%s given more than 64 times", name);
    l->v[l->n++] = arg;
    break;
  }
  }
}

int tools__parse(int argc, char **argv, const tools__opt *opts, size_t n, const char *help,
                 model_hparams *hp, int *shape_set, flame_cli *f) {
  static const struct option shape[] = {HPARAMS_LONGOPTS}, flame[] = {FLAME_LONGOPTS};
  size_t ns = hp ? sizeof shape / sizeof *shape : 0, nf = f ? sizeof flame / sizeof *flame : 0;
  struct option *lo = xcalloc(n + ns + nf + 2, sizeof *lo);
  for (size_t i = 0; i < n; i++)
    lo[i] =
        (struct option){opts[i].name, opts[i].kind == TOOLS_FLAG ? no_argument : required_argument,
                        0, OPT_TABLE + (int)i};
  lo[n] = (struct option){"help", no_argument, 0, 'h'};
  memcpy(lo + n + 1, shape, ns * sizeof *lo);
  memcpy(lo + n + 1 + ns, flame, nf * sizeof *lo);
  int c, helped = 0;
  while (!helped && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (c >= OPT_TABLE && c < OPT_TABLE + (int)n) {
      set_option(&opts[c - OPT_TABLE], optarg);
    } else if (c == 'h') {
      fputs(help, stdout);
      helped = 1;
    } else if (hp && tools__hparams_option(c, optarg, hp)) {
      if (shape_set) *shape_set |= c != OPT_DROPOUT;
    } else if (!f || !tools__flame_option(c, optarg, f)) {
      free(lo);
      tools__bad_option(argc, argv);
    }
  }
  free(lo);
  if (helped) return 1;
  if (optind < argc) tools__die("unexpected argument '%s'", argv[optind]);
  return 0;
}

void tools__protocol(const char *s, eval_protocol *out) {
  if (s && eval_protocol_parse(s, out))
    tools__die("--protocol: expected default or flame, got '%s'", s);
}
