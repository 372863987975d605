/* tools/main.c: the `flame` offline tool: train, eval, import-pt, bench, synth, init, inspect,
 * broker, produce, dispatched from one table (tools/internal.h lists the files).
 *
 * A thin layer over model/: it parses arguments, loads files, calls the engine and prints.
 * broker and produce are the Kafka side of demos, tests and the ingest benchmark. */
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

/* ---- main ---- */

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *what;
} commands[] = {
    {"train", tools__cmd_train, "train a model (early stopping, best checkpoint)"},
    {"eval", tools__cmd_eval, "full-ranking HR/NDCG@10/20 of a checkpoint"},
    {"import-pt", tools__cmd_import, "convert the FLAME authors' PyTorch weights"},
    {"bench", tools__cmd_bench, "time training steps (or --sgemm)"},
    {"synth", tools__cmd_synth, "write a synthetic dataset"},
    {"init", tools__cmd_init, "write an untrained checkpoint (serving benchmarks)"},
    {"inspect", tools__cmd_inspect, "validate and describe a checkpoint"},
    {"broker", tools__cmd_broker, "run an embedded Kafka on loopback (demos, tests)"},
    {"produce", tools__cmd_produce, "replay a dataset into a Kafka topic as a clickstream"},
    {"replay", tools__cmd_replay, "the daemon's online learning on a dataset's stream, offline"},
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
      tools__cmd = commands[i].name;
      opterr = 0; /* our own one-line messages */
      return commands[i].fn(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "flame: unknown command '%s' (flame --help lists the commands)\n", argv[1]);
  return EXIT_USAGE;
}
