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
  const tools__opt opts[] = {{"in", TOOLS_STR, &in, 0, 0}, {"out", TOOLS_STR, &out, 0, 0}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, import_help, NULL, NULL, NULL))
    return 0;
  tools__need("--in", in);
  tools__need("--out", out);
  model_net m;
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
  const tools__opt opts[] = {{"out", TOOLS_STR, &out, 0, 0},
                             {"items", TOOLS_SIZE, &items, 1, 2147483646},
                             {"seed", TOOLS_U64, &seed, 0, TOOLS_NO_MAX}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, init_help, &hp, NULL, NULL))
    return 0;
  tools__need("--out", out);
  if (!items) tools__die("--items is required");
  tools__hparams_finish(&hp);
  model_net m;
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
  const tools__opt opts[] = {{"checkpoint", TOOLS_STR, &ckpt, 0, 0}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, inspect_help, NULL, NULL, NULL))
    return 0;
  tools__need("--checkpoint", ckpt);
  model_net m;
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
