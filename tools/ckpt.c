/* tools/ckpt.c: `flame import-pt`, `flame init` and `flame inspect`. */
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

/* ---- flame import-pt ---- */

static const char import_help[] =
    "usage: flame import-pt --in FILE.pt --out FILE.ckpt\n"
    "Converts the FLAME authors' PyTorch SASRec weights (a zip of raw float32 arrays,\n"
    "docs/MODEL.md section 5) into a flame checkpoint. Prints a JSON summary.\n";

int tools__cmd_import(int argc, char **argv) {
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
      tools__bad_option(argc, argv);
    }
  }
  if (optind < argc) tools__die("unexpected argument '%s'", argv[optind]);
  tools__need("--in", in);
  tools__need("--out", out);
  model_sasrec m;
  char err[512];
  if (ptimport_load(in, &m, err, sizeof err) != 0) tools__die("%s", err);
  int rc = ckpt_save(out, &m);
  if (rc) tools__die("%s: %s", out, fl_strerror(rc));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "out", out);
  tools__add_model_json(j, &m);
  tools__print_json(j);
  model_free(&m);
  return 0;
}

/* ---- flame init ---- */

static const char init_help[] =
    "usage: flame init --items N --out FILE.ckpt [--dim N] [--blocks N] [--heads N]\n"
    "                  [--maxlen N] [--seed N]\n"
    "Writes an untrained SASRec checkpoint (docs/MODEL.md's initialisation) for N items: a "
    "stand-in\n"
    "anchor for serving benchmarks with large synthetic catalogues, where training one is\n"
    "beside the point.\n" HPARAMS_HELP;

int tools__cmd_init(int argc, char **argv) {
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
      items = tools__arg_size("--items", optarg, 1, 2147483646);
      break;
    case 's':
      seed = tools__arg_size("--seed", optarg, 0, SIZE_MAX);
      break;
    case 'h':
      fputs(init_help, stdout);
      return 0;
    default:
      if (!tools__hparams_option(c, optarg, &hp)) tools__bad_option(argc, argv);
    }
  }
  if (optind < argc) tools__die("unexpected argument '%s'", argv[optind]);
  tools__need("--out", out);
  if (!items) tools__die("--items is required");
  tools__hparams_finish(&hp);
  model_sasrec m;
  if (model_init(&m, &hp, items, seed) != 0)
    tools__die("cannot build a model for %zu items", items);
  int err = ckpt_save(out, &m);
  if (err) tools__die("%s: %s", out, fl_strerror(err));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "out", out);
  cJSON_AddNumberToObject(j, "items", (double)items);
  cJSON_AddNumberToObject(j, "parameters", (double)m.nparams);
  tools__print_json(j);
  model_free(&m);
  return 0;
}

/* ---- flame inspect ---- */

static const char inspect_help[] =
    "usage: flame inspect --checkpoint FILE\n"
    "Validates a checkpoint and prints its header and parameter statistics as JSON.\n";

int tools__cmd_inspect(int argc, char **argv) {
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
      tools__bad_option(argc, argv);
    }
  }
  if (optind < argc) tools__die("unexpected argument '%s'", argv[optind]);
  tools__need("--checkpoint", ckpt);
  model_sasrec m;
  tools__load_ckpt(ckpt, &m);
  double sq = 0.0;
  for (size_t i = 0; i < m.nparams; i++) sq += (double)m.params[i] * m.params[i];
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "checkpoint", ckpt);
  tools__add_model_json(j, &m);
  cJSON_AddNumberToObject(j, "param_rms", sqrt(sq / (double)m.nparams));
  tools__print_json(j);
  model_free(&m);
  return 0;
}
