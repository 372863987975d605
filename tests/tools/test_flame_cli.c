/* tests/tools/test_flame_cli.c: the `flame` tool's contract, on the real binary ($FLAME_BIN):
 * --help exits 0 with usage on stdout; a bad argument or an unreadable file prints ONE line
 * "flame <cmd>: ..." on stderr and exits 2; a result is the last stdout line, one JSON object.
 * Also the whole offline path on tiny synthetic data: synth, train, eval, inspect, import
 * refusal. */
#define _GNU_SOURCE
#include "common/common.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void test_help(void **state) {
  (void)state;
  const char *cmds[] = {"train", "eval", "import-pt", "bench", "synth", "init", "inspect"};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    char args[64], want[64];
    snprintf(args, sizeof args, "%s --help", cmds[i]);
    snprintf(want, sizeof want, "usage: flame %s", cmds[i]);
    tu_run_result r = run(args);
    assert_int_equal(r.status, 0);
    assert_memory_equal(r.out, want, strlen(want));
    tu_run_free(&r);
  }
  tu_run_result r = run("--help");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "train"));
  tu_run_free(&r);
}

static void test_bad_arguments(void **state) {
  (void)state;
  tu_run_result r = run("");
  assert_int_equal(r.status, 2);
  tu_run_free(&r);
  expect_usage_error("frobnicate", "flame: unknown command 'frobnicate'");
  expect_usage_error("train --epochs abc", "flame train: --epochs: expected an integer");
  expect_usage_error("train --data x.txt --out y", "flame train: --method is required");
  expect_usage_error("train --data x.txt --method lstm --out y", "flame train: --method: expected");
  expect_usage_error("train --data nowhere.txt --method sasrec --out y",
                     "flame train: nowhere.txt: No such file");
  expect_usage_error("train --data x.txt --method flame --out y",
                     "flame train: --anchor is required");
  expect_usage_error("eval --data x.txt", "flame eval: --checkpoint is required");
  expect_usage_error("train --data x.txt --method flame --modules 3 --out y",
                     "flame train: --modules: expected 2 or blocks");
  expect_usage_error("train --data x.txt --method sasrec --anchor-dropout 0 --out y",
                     "flame train: --anchor-dropout goes with --method flame");
  expect_usage_error("train --data x.txt --method flame --anchor-dropout 1 --out y",
                     "flame train: --anchor-dropout: expected a number in [0, 0.95], got '1'");
  expect_usage_error("bench --bogus", "flame bench: unknown or incomplete option '--bogus'");
  expect_usage_error("bench --threads 0 --sgemm", "flame bench: --threads: expected an integer");
  expect_usage_error("synth --out s.txt --users -3", "flame synth: --users: expected an integer");
  expect_usage_error("inspect", "flame inspect: --checkpoint is required");
  expect_usage_error("import-pt --in nowhere.pt --out x.ckpt", "flame import-pt: nowhere.pt");
}

/* synth -> train -> eval -> inspect on a tiny dataset; corrupted files are refused. */
static void test_offline_path(void **state) {
  (void)state;
  tu_run_result r = run("synth --out data.txt --users 150 --items 60 --mean-len 8 --seed 3");
  assert_int_equal(r.status, 0);
  tu_run_free(&r);
  cJSON *j = run_json("train --data data.txt --method sasrec --out m.ckpt --epochs 2 --maxlen 8 "
                      "--dim 16 --batch 64");
  assert_true(cJSON_IsNumber(cJSON_GetObjectItem(j, "best_epoch")));
  cJSON *test = cJSON_GetObjectItem(j, "test");
  assert_true(cJSON_IsNumber(cJSON_GetObjectItem(test, "NDCG@20")));
  double ndcg = cJSON_GetObjectItem(test, "NDCG@20")->valuedouble;
  cJSON_Delete(j);
  /* eval of the written checkpoint reproduces the training run's test figure */
  j = run_json("eval --data data.txt --checkpoint m.ckpt");
  assert_float_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "test"), "NDCG@20")->valuedouble,
                     ndcg, 1e-9);
  assert_non_null(cJSON_GetObjectItem(j, "val"));
  cJSON_Delete(j);
  /* --state: 1 epoch, then resumed to 2, ends as the 2-epoch run did; other settings refused */
  const char *st = "train --data data.txt --method sasrec --out s.ckpt --state s.state --maxlen 8 "
                   "--dim 16 --batch 64 --epochs";
  char args[300];
  for (int e = 1; e <= 2; e++) {
    snprintf(args, sizeof args, "%s %d", st, e);
    j = run_json(args);
    assert_int_equal(cJSON_GetObjectItem(j, "resumed_epoch")->valueint, e - 1);
    assert_int_equal(cJSON_GetObjectItem(j, "epochs")->valueint, e);
    if (e == 2)
      assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "test"), "NDCG@20")->valuedouble ==
                  ndcg);
    cJSON_Delete(j);
  }
  snprintf(args, sizeof args, "%s 3 --lr 0.002", st);
  r = run(args);
  assert_int_equal(r.status, 2);
  const char *want = "flame train: s.state: the run it holds has lr 0.001, this one 0.002;";
  if (!strstr(r.err, want)) fail_msg("stderr: %s", r.err);
  tu_run_free(&r);
  j = run_json("inspect --checkpoint m.ckpt");
  assert_int_equal(cJSON_GetObjectItem(j, "dim")->valueint, 16);
  assert_string_equal(cJSON_GetObjectItem(j, "backbone")->valuestring, "sasrec");
  cJSON_Delete(j);
  /* an untrained checkpoint of the asked shape, which eval reads */
  r = run("init --items 60 --out u.ckpt --dim 16 --blocks 1 --maxlen 8");
  assert_int_equal(r.status, 0);
  tu_run_free(&r);
  j = run_json("inspect --checkpoint u.ckpt");
  assert_int_equal(cJSON_GetObjectItem(j, "items")->valueint, 60);
  assert_int_equal(cJSON_GetObjectItem(j, "blocks")->valueint, 1);
  assert_int_equal(cJSON_GetObjectItem(j, "step")->valueint, 0);
  cJSON_Delete(j);
  r = run("eval --data data.txt --checkpoint u.ckpt");
  assert_int_equal(r.status, 0);
  tu_run_free(&r);
  expect_usage_error("init --out v.ckpt", "flame init: --items is required");
  /* FLAME against the model just trained, one epoch; --dropout is the learnable network's,
   * the anchor keeps its checkpoint's 0.5 */
  j = run_json("train --data data.txt --method flame --anchor m.ckpt --out f.ckpt --epochs 1 "
               "--batch 64 --dropout 0.25");
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "flame"), "mask")->valuestring,
                      "tiled");
  assert_float_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "dropout")->valuedouble,
                     0.25, 1e-6);
  assert_float_equal(
      cJSON_GetObjectItem(cJSON_GetObjectItem(j, "flame"), "anchor_dropout")->valuedouble, 0.5,
      1e-6);
  double loss = cJSON_GetObjectItem(j, "last_loss")->valuedouble;
  cJSON_Delete(j);
  /* --anchor-dropout 0: the anchor runs as in evaluation, so the training loss differs */
  j = run_json("train --data data.txt --method flame --anchor m.ckpt --out f0.ckpt --epochs 1 "
               "--batch 64 --dropout 0.25 --anchor-dropout 0");
  assert_float_equal(
      cJSON_GetObjectItem(cJSON_GetObjectItem(j, "flame"), "anchor_dropout")->valuedouble, 0.0,
      1e-9);
  assert_true(cJSON_GetObjectItem(j, "last_loss")->valuedouble != loss);
  cJSON_Delete(j);
  j = run_json("inspect --checkpoint f.ckpt");
  assert_float_equal(cJSON_GetObjectItem(j, "dropout")->valuedouble, 0.25, 1e-6);
  cJSON_Delete(j);
  /* per-block modules with a random subset of paths; more paths than exist are refused */
  j = run_json("train --data data.txt --method flame --anchor m.ckpt --out g.ckpt --epochs 1 "
               "--batch 64 --modules blocks --paths 3");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "flame"), "paths")->valueint, 3);
  cJSON_Delete(j);
  expect_usage_error("train --data data.txt --method flame --anchor m.ckpt --out g.ckpt --paths 5",
                     "flame train: --paths 5: 2 modules give only 4 paths");
  /* a truncated checkpoint and a non-zip .pt are refused with one line */
  char cmd[600];
  snprintf(cmd, sizeof cmd, "head -c 100 '%s/m.ckpt' > '%s/cut.ckpt'", dir, dir);
  assert_int_equal(system(cmd), 0);
  expect_usage_error("eval --data data.txt --checkpoint cut.ckpt",
                     "flame eval: cut.ckpt: file truncated");
  expect_usage_error("import-pt --in data.txt --out z.ckpt", "flame import-pt: data.txt");
}

int test_flame_cli(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_offline_path),
  };
  return cmocka_run_group_tests_name("daemon/flame_cli", tests, setup, teardown);
}
