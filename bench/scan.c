/* bench/scan.c: the cost of one recommendation over a big catalogue, without HTTP (issue 5,
 * item 2; RESULTS 15).
 *
 * An untrained model of --items items (model_init, the default shape), published as a serving
 * snapshot (serve_model_new: the int8 table, in huge pages where the kernel gives them), then
 * --calls calls of serve_recommend on one thread, each for a history of 10 random items,
 * k = 10, seen items excluded: what a scoring worker does per request. Prints the per-call
 * p50/p90/max; the last stdout line is JSON. The first call is not timed (it sizes the
 * workspace).
 *
 * usage: flame_scan_bench [--items N] [--calls N] [--seed S] */
#include "common/common.h"
#include "daemon/serve/serve.h"
#include "model/model.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  size_t items = 1000000, calls = 200;
  uint64_t seed = 42;
  static const struct option opts[] = {{"items", required_argument, 0, 'i'},
                                       {"calls", required_argument, 0, 'c'},
                                       {"seed", required_argument, 0, 's'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    if (o == 'i')
      items = strtoull(optarg, NULL, 10);
    else if (o == 'c')
      calls = strtoull(optarg, NULL, 10);
    else if (o == 's')
      seed = strtoull(optarg, NULL, 10);
    else {
      fprintf(o == 'h' ? stdout : stderr,
              "usage: flame_scan_bench [--items N (1000000)] [--calls N (200)] [--seed S (42)]\n");
      return o == 'h' ? 0 : 2;
    }
  }
  if (items < 10 || calls < 1) {
    fprintf(stderr, "flame_scan_bench: --items must be at least 10 and --calls at least 1\n");
    return 2;
  }
  model_set_threads(1);
  model_hparams hp;
  model_hparams_default(&hp);
  model_net m;
  if (model_init(&m, &hp, items, seed) != 0) {
    fprintf(stderr, "flame_scan_bench: cannot build a model of %zu items\n", items);
    return 1;
  }
  serve_model *s = serve_model_new(1, &m, NULL, 0);
  serve_ws *w = serve_ws_new();
  fl_rng r;
  fl_rng_seed(&r, seed + 1);
  double *t = xmalloc(calls * sizeof(double));
  for (size_t c = 0; c <= calls; c++) {
    uint32_t hist[10];
    for (size_t i = 0; i < 10; i++) hist[i] = (uint32_t)(1 + fl_rng_below(&r, items));
    serve_hit hits[10];
    int fb;
    double t0 = fl_now();
    size_t got = serve_recommend(s, w, hist, 10, 10, &(serve_filter){.exclude_seen = 1}, hits, &fb);
    if (got != 10 || fb) {
      fprintf(stderr, "flame_scan_bench: %zu hits (fallback %d), expected 10 from the model\n", got,
              fb);
      return 1;
    }
    if (c > 0) t[c - 1] = (fl_now() - t0) * 1e3;
  }
  fl_sort_doubles(t, calls);
  double p50 = t[calls / 2], p90 = t[calls * 9 / 10], mx = t[calls - 1];
  printf("%zu items, C %u: serve_recommend p50 %.2f ms, p90 %.2f ms, max %.2f ms over %zu calls\n",
         items, (unsigned)hp.C, p50, p90, mx, calls);
  printf("{\"items\":%zu,\"C\":%u,\"calls\":%zu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"max_ms\":%.3f}\n",
         items, (unsigned)hp.C, calls, p50, p90, mx);
  free(t);
  serve_ws_free(w);
  serve_model_unref(s);
  return 0;
}
