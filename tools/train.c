/* tools/train.c: `flame train`, `flame eval` and `flame bench`. */
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

#include "model/model.h"

/* ---- flame train ---- */

static const char train_help[] =
    "usage: flame train --data FILE --method sasrec|flame --out FILE.ckpt [options]\n"
    "Trains SASRec, or a FLAME learnable network against a frozen anchor, with early\n"
    "stopping on validation NDCG@20, and keeps the best checkpoint (of the learnable\n"
    "network only). Progress per epoch on stderr; the last stdout line is JSON:\n"
    "{\"best_epoch\":..,\"epochs\":..,\"val\":{..},\"test\":{..},\"wall_sec\":..,...}\n"
    "  --data FILE      dataset: `user item` or `user item item ...` per line, or a RecBole\n"
    "                   .inter file (--format auto | seq | uit | inter: see flame replay)\n"
    "  --split F        train on the part before a split only (the anchor of flame replay):\n"
    "                   --split-by time (the first F of the events by timestamp; the\n"
    "                   default when the data has timestamps) | user (each user's first F)\n"
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
    "  --protocol P     default | flame (truncates histories to L+3, docs/MODEL.md section 4)\n"
    "  --threads N      BLAS threads (1)\n"
    "  --seed N         initialisation, shuffling and dropout (42)\n"
    "  --batch N        samples per step (256)\n"
    "  --lr X           Adam learning rate (0.001)\n" HPARAMS_HELP FLAME_HELP;

/* The result line of flame train (sp: the split trained before, or NULL; anc: FLAME's). */
static void print_train_result(const char *method, const char *data, const data_split *sp,
                               double split, const data_set *ds, const train_opts *o,
                               const train_result *r, int threads, const model_net *m,
                               const model_net *anc, const flame_cli *f) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "method", method);
  cJSON_AddStringToObject(j, "data", data);
  cJSON_AddStringToObject(j, "protocol", o->proto == EVAL_PROTOCOL_FLAME ? "flame" : "default");
  if (sp) {
    cJSON *sj = cJSON_AddObjectToObject(j, "split");
    cJSON_AddStringToObject(sj, "by", sp->by_time ? "time" : "user");
    cJSON_AddNumberToObject(sj, "frac", split);
    cJSON_AddNumberToObject(sj, "before", (double)ds->off[ds->nusers]);
  }
  cJSON_AddNumberToObject(j, "best_epoch", (double)r->best_epoch);
  cJSON_AddNumberToObject(j, "epochs", (double)r->epochs_run);
  if (o->state) cJSON_AddNumberToObject(j, "resumed_epoch", (double)r->resumed_epoch);
  cJSON_AddItemToObject(j, "val", tools__metrics_json(&r->val));
  cJSON_AddItemToObject(j, "test", tools__metrics_json(&r->test));
  cJSON_AddNumberToObject(j, "wall_sec", r->wall_sec);
  cJSON_AddNumberToObject(j, "best_sec", r->best_sec);
  cJSON_AddNumberToObject(j, "last_loss", r->last_loss);
  cJSON_AddNumberToObject(j, "threads", threads);
  cJSON_AddNumberToObject(j, "seed", (double)o->seed);
  cJSON_AddNumberToObject(j, "lr", o->lr);
  cJSON_AddNumberToObject(j, "batch", (double)o->batch);
  tools__add_model_json(cJSON_AddObjectToObject(j, "model"),
                        m); /* the trained (learnable) network */
  if (anc) {
    cJSON *fj = cJSON_AddObjectToObject(j, "flame");
    cJSON_AddStringToObject(fj, "anchor", f->anchor);
    cJSON_AddNumberToObject(fj, "anchor_dropout", anc->hp.dropout);
    cJSON_AddNumberToObject(fj, "tau", f->fo.tau);
    cJSON_AddNumberToObject(fj, "lambda0", f->fo.lambda0);
    cJSON_AddNumberToObject(fj, "lambda_r", f->fo.lambdaR);
    cJSON_AddNumberToObject(fj, "schedule", (double)f->fo.R);
    cJSON_AddStringToObject(fj, "mask", f->fo.blockdiag ? "blockdiag" : "tiled");
    cJSON_AddBoolToObject(fj, "detach_weights", f->fo.detach_w);
    cJSON_AddStringToObject(fj, "init", f->fo.warm_start ? "anchor" : "random");
    cJSON_AddStringToObject(fj, "modules", f->fo.per_block ? "blocks" : "2");
    cJSON_AddNumberToObject(fj, "paths", (double)f->fo.paths);
  }
  cJSON *mem = cJSON_AddObjectToObject(j, "memory_bytes");
  cJSON_AddNumberToObject(mem, "params", (double)r->param_bytes);
  cJSON_AddNumberToObject(mem, "grads", (double)r->param_bytes);
  cJSON_AddNumberToObject(mem, "adam", 2.0 * (double)r->param_bytes);
  cJSON_AddNumberToObject(mem, "train_activations", (double)r->train_act_bytes);
  cJSON_AddNumberToObject(mem, "eval_activations", (double)r->eval_act_bytes);
  tools__print_json(j);
}

int tools__cmd_train(int argc, char **argv) {
  const char *data = NULL, *method = NULL, *out = NULL, *state = NULL, *format = NULL,
             *split_by = NULL;
  double split = 0;
  model_hparams hp;
  model_hparams_default(&hp);
  train_opts o;
  train_opts_default(&o);
  flame_cli f = {.anchor = NULL, .schedule_set = 0, .anchor_dropout = -1.0f};
  flame_opts_default(&f.fo);
  int threads = DEFAULT_THREADS, shape_set = 0;
  const char *protocol = NULL;
  const tools__opt opts[] = {{"data", TOOLS_STR, &data, 0, 0},
                             {"method", TOOLS_STR, &method, 0, 0},
                             {"out", TOOLS_STR, &out, 0, 0},
                             {"state", TOOLS_STR, &state, 0, 0},
                             {"format", TOOLS_STR, &format, 0, 0},
                             {"split", TOOLS_DOUBLE, &split, 0.01, 0.99},
                             {"split-by", TOOLS_STR, &split_by, 0, 0},
                             {"epochs", TOOLS_SIZE, &o.epochs, 1, 100000},
                             {"patience", TOOLS_SIZE, &o.patience, 1, 100000},
                             {"epoch-samples", TOOLS_SIZE, &o.epoch_samples, 1, TOOLS_NO_MAX},
                             {"protocol", TOOLS_STR, &protocol, 0, 0},
                             {"threads", TOOLS_INT, &threads, 1, 256},
                             {"seed", TOOLS_U64, &o.seed, 0, TOOLS_NO_MAX},
                             {"batch", TOOLS_SIZE, &o.batch, 1, 65536},
                             {"lr", TOOLS_FLOAT, &o.lr, 1e-9, 10.0}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, train_help, &hp, &shape_set, &f))
    return 0;
  tools__protocol(protocol, &o.proto);
  tools__need("--data", data);
  tools__need("--method", method);
  tools__need("--out", out);
  int is_flame = tools__parse_method(method);
  if (is_flame) tools__need("--anchor", f.anchor);
  tools__check_flame_only(&f, is_flame);
  if (is_flame && shape_set) tools__die("with --method flame the network takes the anchor's shape");
  tools__hparams_finish(&hp);
  model_set_threads(threads);
  data_set ds;
  tools__load_data_format(data, format, &ds);
  data_split sp = {0};
  if (split > 0) { /* the part before the split only */
    data_set all = ds;
    tools__split(&all, split, split_by, &sp);
    data_prefix(&all, sp.cut, &ds);
    data_free(&all);
  } else if (split_by) {
    tools__die("--split-by goes with --split");
  }
  model_net m, anc;
  if (is_flame) {
    tools__load_anchor(&f, &anc, ds.NI);
    tools__learnable_from_anchor(&m, &anc, hp.dropout, f.fo.warm_start, o.seed);
    tools__check_paths(&f, &m.hp);
    if (!f.schedule_set) f.fo.R = o.epochs;
  } else if (model_init(&m, &hp, ds.NI, o.seed) != 0) {
    tools__die("cannot build a model for %zu items", ds.NI);
  }
  if (o.proto == EVAL_PROTOCOL_FLAME) data_truncate(&ds, m.hp.L + 3);
  o.out = out;
  o.state = state;
  fprintf(stderr, "flame train: %zu users, %zu items, %zu parameters, threads %d\n", ds.nusers,
          ds.NI, m.nparams, threads);
  train_result r;
  int err = train_model(&m, is_flame ? &anc : NULL, &f.fo, &ds, &o, &r);
  if (err) tools__die("%s", r.why[0] ? r.why : fl_strerror(err));
  print_train_result(method, data, split > 0 ? &sp : NULL, split, &ds, &o, &r, threads, &m,
                     is_flame ? &anc : NULL, &f);
  if (split > 0) data_split_free(&sp);
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

int tools__cmd_eval(int argc, char **argv) {
  const char *data = NULL, *ckpt = NULL;
  eval_protocol proto = EVAL_PROTOCOL_DEFAULT;
  int threads = DEFAULT_THREADS;
  const char *protocol = NULL;
  const tools__opt opts[] = {{"data", TOOLS_STR, &data, 0, 0},
                             {"checkpoint", TOOLS_STR, &ckpt, 0, 0},
                             {"protocol", TOOLS_STR, &protocol, 0, 0},
                             {"threads", TOOLS_INT, &threads, 1, 256}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, eval_help, NULL, NULL, NULL))
    return 0;
  tools__protocol(protocol, &proto);
  tools__need("--data", data);
  tools__need("--checkpoint", ckpt);
  model_set_threads(threads);
  model_net m;
  tools__load_ckpt(ckpt, &m);
  data_set ds;
  tools__load_data(data, &ds);
  if (ds.NI > m.NI)
    tools__die("%s has item ids up to %zu but the checkpoint knows %zu items", data, ds.NI, m.NI);
  if (proto == EVAL_PROTOCOL_FLAME) data_truncate(&ds, m.hp.L + 3);
  eval_metrics val, test;
  double t0 = fl_now();
  int err = eval_run(&m, &ds, proto, EVAL_VAL, &val);
  if (!err) err = eval_run(&m, &ds, proto, EVAL_TEST, &test);
  if (err) tools__die("%s", fl_strerror(err));
  fprintf(stderr, "flame eval: %zu users, %.2f s\n", val.users, fl_now() - t0);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddItemToObject(j, "val", tools__metrics_json(&val));
  cJSON_AddItemToObject(j, "test", tools__metrics_json(&test));
  tools__print_json(j);
  model_free(&m);
  data_free(&ds);
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
  tools__print_json(j);
  free(a), free(b), free(cm), free(t);
  return 0;
}

int tools__cmd_bench(int argc, char **argv) {
  const char *data = NULL, *method = NULL;
  size_t B = 256, steps = 12;
  uint64_t seed = 42;
  int threads = 2, pad = 0, last_only = 1, sgemm = 0;
  model_hparams hp;
  model_hparams_default(&hp);
  flame_cli f = {.anchor = NULL, .schedule_set = 0, .anchor_dropout = -1.0f};
  flame_opts_default(&f.fo);
  int no_last_only = 0;
  const tools__opt opts[] = {
      {"data", TOOLS_STR, &data, 0, 0},         {"method", TOOLS_STR, &method, 0, 0},
      {"batch", TOOLS_SIZE, &B, 1, 65536},      {"threads", TOOLS_INT, &threads, 1, 256},
      {"steps", TOOLS_SIZE, &steps, 3, 100000}, {"seed", TOOLS_U64, &seed, 0, TOOLS_NO_MAX},
      {"no-pack", TOOLS_FLAG, &pad, 0, 0},      {"no-last-only", TOOLS_FLAG, &no_last_only, 0, 0},
      {"sgemm", TOOLS_FLAG, &sgemm, 0, 0}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, bench_help, &hp, NULL, &f))
    return 0;
  last_only = !no_last_only;
  model_set_threads(threads);
  if (sgemm) return bench_sgemm(threads, steps);
  tools__need("--data", data);
  tools__need("--method", method);
  int is_flame = tools__parse_method(method);
  tools__check_flame_only(&f, is_flame);
  tools__hparams_finish(&hp);
  data_set ds;
  tools__load_data(data, &ds);
  data_sample *all = NULL;
  size_t ns = data_train_samples(&ds, &all);
  if (ns == 0) tools__die("%s has no training samples", data);
  model_net m, anc;
  if (f.anchor) {
    tools__load_anchor(&f, &anc, ds.NI);
    tools__learnable_from_anchor(&m, &anc, hp.dropout, f.fo.warm_start, seed);
  } else {
    if (model_init(&m, &hp, ds.NI, seed) != 0)
      tools__die("cannot build a model for %zu items", ds.NI);
    if (is_flame) {
      if (model_init(&anc, &hp, ds.NI, seed + 1) != 0) tools__die("cannot build the anchor");
      tools__set_anchor_dropout(&f, &anc);
    }
  }
  if (is_flame) tools__check_paths(&f, &m.hp);
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
  tools__print_json(j);
  free(t), free(pick), free(off), free(tgt), free(tok), free(all);
  model_acts_free(a);
  flame_ws_free(ws);
  model_free(&m);
  if (is_flame) model_free(&anc);
  data_free(&ds);
  return 0;
}
