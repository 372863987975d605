/* tests/stream/test_produce.c: the replayer of the devkit (tools/produce.c) in time order:
 * events in the order given (flame produce --order time computes it with data_time_order), each
 * with its own timestamp as "ts", and, with a speedup, paced by those timestamps. On the
 * embedded broker, one partition so that the topic keeps the produce order. */
#include "testutil.h"

#include "common/common.h"
#include "tools/tools.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads n messages of partition 0 of topic from the beginning into payloads (caller frees). */
static void read_n(const char *bootstrap, const char *topic, size_t n, char **out) {
  rd_kafka_t *rk = tools_observer(bootstrap, "test-produce-reader");
  assert_non_null(rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
  assert_int_equal(rd_kafka_assign(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  size_t got = 0;
  for (int i = 0; i < 300 && got < n; i++) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m) continue;
    if (!m->err) {
      out[got] = xmalloc(m->len + 1);
      memcpy(out[got], m->payload, m->len);
      out[got++][m->len] = 0;
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  assert_int_equal(got, n);
}

static void test_time_order(void **state) {
  (void)state;
  const char *topics[] = {"timed"};
  tools_broker *b;
  char err[256];
  assert_int_equal(tools_broker_start(&b, 1, 0, 1, topics, 1, err, sizeof err), 0);
  /* two users; in time order: u1's first (t 10), u2's first (20), u2's second (30), u1's
   * second (40), seconds apart */
  size_t off[] = {0, 2, 4};
  int32_t items[] = {5, 6, 7, 8};
  double ts[] = {10, 40, 20, 30};
  int64_t ids[] = {1, 2};
  size_t order[] = {0, 1, 1, 0};
  tools_produce_opts o = {.brokers = tools_broker_bootstraps(b),
                          .topic = "timed",
                          .format = TOOLS_PRODUCE_JSON,
                          .order = order,
                          .ts = ts,
                          .speedup = 100}; /* 30 s of timestamps in 0.3 s */
  tools_produce_result r;
  double t0 = fl_now();
  assert_int_equal(tools_produce_sequences(&o, 2, off, items, ids, &r, err, sizeof err), 0);
  double took = fl_now() - t0;
  assert_int_equal(r.sent, 4);
  assert_true(took >= 0.27); /* paced: the last event is due 0.3 s after the first */
  char *m[4];
  read_n(o.brokers, "timed", 4, m);
  const char *want[] = {"{\"user\":\"user-1\",\"item\":\"item-5\",\"ts\":10000}",
                        "{\"user\":\"user-2\",\"item\":\"item-7\",\"ts\":20000}",
                        "{\"user\":\"user-2\",\"item\":\"item-8\",\"ts\":30000}",
                        "{\"user\":\"user-1\",\"item\":\"item-6\",\"ts\":40000}"};
  for (int i = 0; i < 4; i++) {
    assert_string_equal(m[i], want[i]);
    free(m[i]);
  }
  tools_broker_stop(b);
}

int test_produce(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_time_order)};
  return cmocka_run_group_tests_name("stream/produce", tests, NULL, NULL);
}
