/* tests/tools/test_replay.c: `flame replay` (tools/replay.c) on the real binary and files the
 * test writes: the same run gives the same figures; an event is ranked before it is stored;
 * the rounds run (the daemon's round code) and their settings come from --set; a pretrained
 * anchor from `flame train --split` is accepted; bad arguments are one-line errors. */
#define _GNU_SOURCE
#include "common/common.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Opens dir/name for writing (the test fails if it cannot). */
static FILE *create(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  return f;
}

/* A `user item ts` file: 40 users walking rings of 30 items (a learnable next item), events
 * interleaved in time (20 steps); 10 of them join at step 14, after the split at 0.6. */
static void write_walks(const char *name) {
  FILE *f = create(name);
  long ts = 1000;
  for (int step = 0; step < 20; step++)
    for (int u = 1; u <= 50; u++) {
      if (u > 40 && step < 14) continue;
      fprintf(f, "u%d i%d %ld\n", u, (u * 7 + step) % 30, ts++);
    }
  assert_int_equal(fclose(f), 0);
}

/* The JSON line without its timings. */
static char *figures(cJSON *j) {
  cJSON_DeleteItemFromObject(j, "cpu_s");
  cJSON_DeleteItemFromObject(j, "total_cpu_s");
  cJSON_DeleteItemFromObject(j, "wall_s");
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  return s;
}

#define TINY "--dim 16 --blocks 1 --maxlen 8 --pretrain-epochs 2 --threads 1"
#define ROUNDS "--round-events 60 --set train.steps=4 --set train.min_users=1 --set train.batch=32"

static void test_deterministic_rounds(void **state) {
  (void)state;
  write_walks("w.txt");
  const char *args = "replay --data w.txt --format uit --split 0.6 --policy flame " TINY " " ROUNDS
                     " --seed 3 --out-dir out";
  cJSON *a = run_json(args);
  assert_string_equal(cJSON_GetObjectItem(a, "policy")->valuestring, "flame");
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "split"), "by")->valuestring,
                      "time");
  assert_int_equal(cJSON_GetObjectItem(a, "events")->valueint, 344); /* 860 events, 516 before */
  assert_true(cJSON_GetObjectItem(a, "rounds")->valueint >= 3);
  cJSON *seg = cJSON_GetObjectItem(a, "segments");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(seg, "new_users"), "events")->valueint,
                   60); /* the 10 late users' 6 events each */
  char *s1 = figures(a), *s2 = figures(run_json(args));
  assert_string_equal(s1, s2);
  free(s1);
  free(s2);
  /* another seed, other rounds: the figures change */
  char *s3 = figures(run_json("replay --data w.txt --format uit --split 0.6 --policy flame " TINY
                              " " ROUNDS " --seed 4"));
  s1 = figures(run_json(args));
  assert_string_not_equal(s1, s3);
  free(s1);
  free(s3);
  /* rounds by the events' own time: one every 40 s of it (the walk's events are 1 s apart),
   * however many events that is */
  cJSON *t = run_json("replay --data w.txt --format uit --split 0.6 --policy ce " TINY
                      " --round-events 100000 --round-interval 40 --set train.steps=2 "
                      "--set train.min_users=1 --set train.batch=32");
  assert_int_equal(cJSON_GetObjectItem(t, "rounds")->valueint, 344 / 40);
  cJSON_Delete(t);
  /* the CSV and the plot */
  char path[512];
  snprintf(path, sizeof path, "%s/out/replay-flame.csv", dir);
  assert_int_equal(access(path, F_OK), 0);
  snprintf(path, sizeof path, "%s/out/replay.svg", dir);
  assert_int_equal(access(path, F_OK), 0);
}

/* After the split, every event is a new user's first, of an item never seen: ranked before it
 * is stored, no event can be a hit (the item is unknown when it is ranked). Ranked after, it
 * would be a seen item of count 1 among 5, in every top 10. */
static void test_rank_before_store(void **state) {
  (void)state;
  FILE *f = create("r.txt");
  long ts = 1;
  for (int u = 1; u <= 5; u++)
    for (int i = 1; i <= 5; i++) fprintf(f, "old%d item%d %ld\n", u, i, ts++);
  for (int u = 1; u <= 5; u++) fprintf(f, "new%d fresh%d %ld\n", u, u, ts++);
  assert_int_equal(fclose(f), 0);
  cJSON *j = run_json("replay --data r.txt --format uit --split 0.84 --policy frozen " TINY);
  assert_int_equal(cJSON_GetObjectItem(j, "events")->valueint, 5);
  assert_true(cJSON_GetObjectItem(j, "HR@10")->valuedouble == 0.0);
  cJSON *seg = cJSON_GetObjectItem(j, "segments");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(seg, "new_items"), "events")->valueint,
                   5);
  cJSON_Delete(j);
}

/* returning_idle counts a returning user's event only after --idle-events events of the stream
 * without one of theirs (the split counting as the stream's start): o1 right at the start is
 * not idle, o1 again after 10 other events is, and so is o2's first event at index 12.
 * with_history counts the events of users with stored history. */
static void test_idle_segment(void **state) {
  (void)state;
  FILE *f = create("idle.txt");
  long ts = 1;
  for (int u = 1; u <= 4; u++)
    for (int i = 1; i <= 5; i++) fprintf(f, "o%d item%d %ld\n", u, i + u, ts++);
  fprintf(f, "o1 item3 %ld\n", ts++);
  for (int u = 1; u <= 10; u++) fprintf(f, "n%d item%d %ld\n", u, u % 5 + 1, ts++);
  fprintf(f, "o1 item4 %ld\no2 item5 %ld\n", ts, ts + 1);
  assert_int_equal(fclose(f), 0);
  cJSON *j = run_json("replay --data idle.txt --format uit --split 0.61 --policy frozen "
                      "--idle-events 5 " TINY);
  assert_int_equal(cJSON_GetObjectItem(j, "events")->valueint, 13);
  cJSON *seg = cJSON_GetObjectItem(j, "segments");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(seg, "returning"), "events")->valueint,
                   3);
  assert_int_equal(
      cJSON_GetObjectItem(cJSON_GetObjectItem(seg, "returning_idle"), "events")->valueint, 2);
  /* with_history: the events of users with stored history (not the ten new users' first) */
  assert_int_equal(
      cJSON_GetObjectItem(cJSON_GetObjectItem(seg, "with_history"), "events")->valueint, 3);
  cJSON_Delete(j);
}

/* An anchor trained by flame train --split on the same file and split is taken as it is. */
static void test_anchor_from_train(void **state) {
  (void)state;
  write_walks("w.txt");
  cJSON *t = run_json("train --data w.txt --format uit --split 0.6 --method sasrec --out a.ckpt "
                      "--epochs 2 --dim 16 --blocks 1 --maxlen 8");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(t, "split"), "before")->valueint, 516);
  cJSON_Delete(t);
  cJSON *j =
      run_json("replay --data w.txt --format uit --split 0.6 --policy ce --anchor a.ckpt " ROUNDS);
  assert_true(cJSON_GetObjectItem(j, "rounds")->valueint >= 1);
  cJSON_Delete(j);
  expect_usage_error("replay --data w.txt --format uit --split 0.6 --policy ce --anchor a.ckpt "
                     "--dim 32",
                     "flame replay: with --anchor the network takes the anchor's shape");
}

static void test_bad_arguments(void **state) {
  (void)state;
  write_walks("w.txt");
  expect_usage_error("replay --data w.txt --format uit --policy often",
                     "flame replay: --policy must be frozen, flame, ce or retrain");
  expect_usage_error("replay --data w.txt --format uit --policy frozen --set train.stepz=3",
                     "flame replay: --set: unknown setting train.stepz");
  expect_usage_error("replay --data w.txt --format uit --policy frozen --set train.steps",
                     "flame replay: --set wants section.key=value");
  expect_usage_error("replay --data w.txt --policy frozen --split-by time",
                     "flame replay: w.txt:1:");
  expect_usage_error("replay --data w.txt --format seq --policy frozen",
                     "flame replay: w.txt:1: user id is not an integer");
  expect_usage_error("replay --data w.txt --format uit --policy frozen --split 1.5",
                     "flame replay: --split:");
  /* the time-ordered producer wants timestamps (tests/stream/test_produce checks its order) */
  char path[512];
  snprintf(path, sizeof path, "%s/n.txt", dir);
  tu_write_file(path, "1 2 3\n");
  expect_usage_error("produce --brokers 127.0.0.1:9 --topic t --data n.txt --order time",
                     "flame produce: --order time needs timestamps");
  expect_usage_error("produce --brokers 127.0.0.1:9 --topic t --data w.txt --speedup 10",
                     "flame produce: --speedup goes with --order time");
}

int test_replay(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_deterministic_rounds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rank_before_store, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_segment, setup, teardown),
      cmocka_unit_test_setup_teardown(test_anchor_from_train, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
  };
  return cmocka_run_group_tests_name("tools/replay", tests, NULL, NULL);
}
