/* tests/stream/test_ingest.c: the daemon's ingest end to end: the real flamed binary
 * (FLAMED_BIN), an embedded broker (librdkafka's mock cluster) on loopback in this process, and
 * the real RocksDB state in a temp dir.
 *
 * Ground truth is what this test produced: every good event in its user's order, every
 * malformed one with the reason the dead-letter topic must show. "Done" is observed from the
 * outside: the group's committed offsets (advisory, committed only after the events are
 * durable) reach the topic's high watermarks. Then the daemon is stopped and its state opened
 * and compared exactly. Every wait is bounded. */
#define _GNU_SOURCE
#include "daemon_env.h"
#include "testutil.h"

#include "common/common.h"
#include "state/state.h"
#include "stream/stream.h"
#include "tools/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- what the test produces ---- */

typedef struct {
  char *key, *payload;
  size_t len;
  int reason;       /* STREAM_OK for a good event, else the expected rejection */
  const char *user; /* good events: the user id as stored, and the item */
  const char *item;
  int32_t partition; /* filled by the delivery report */
  int acked;
} tmsg;

typedef struct {
  tmsg *m;
  size_t n, cap;
  char **users; /* distinct user ids of good events */
  size_t nusers;
} workload;

static void add_msg(workload *w, const char *key, const char *payload, size_t len, int reason,
                    const char *user, const char *item) {
  if (w->n == w->cap) {
    w->cap = w->cap ? 2 * w->cap : 256;
    w->m = xrealloc(w->m, w->cap * sizeof *w->m);
  }
  tmsg *m = &w->m[w->n++];
  memset(m, 0, sizeof *m);
  m->key = strdup(key);
  m->payload = xmalloc(len + 1);
  memcpy(m->payload, payload, len);
  m->payload[len] = 0;
  m->len = len;
  m->reason = reason;
  m->user = user;
  m->item = item ? strdup(item) : NULL;
  m->partition = -1;
}

static void free_workload(workload *w) {
  for (size_t i = 0; i < w->n; i++)
    free(w->m[i].key), free(w->m[i].payload), free((char *)w->m[i].item);
  for (size_t i = 0; i < w->nusers; i++) free(w->users[i]);
  free(w->m), free(w->users);
  memset(w, 0, sizeof *w);
}

/* nusers users (ids with multi-byte UTF-8 and a comma among them), per events each, in
 * JSON and CSV alternately, users interleaved; with malformed, one of every rejection kind
 * every 97 messages. */
static void make_workload(workload *w, size_t nusers, size_t per, int malformed) {
  memset(w, 0, sizeof *w);
  w->users = xcalloc(nusers, sizeof *w->users);
  w->nusers = nusers;
  for (size_t u = 0; u < nusers; u++) {
    char id[64];
    if (u % 7 == 3)
      snprintf(id, sizeof id, "ユーザー-%zu", u);
    else if (u % 7 == 5)
      snprintf(id, sizeof id, "user, with comma %zu", u);
    else
      snprintf(id, sizeof id, "u%zu", u);
    w->users[u] = strdup(id);
  }
  int64_t ts = 1700000000000;
  static const char *bad[][2] = {
      {"", "empty"},
      {"{\"user\":\"x\",", "bad_json"},
      {"a,\"b", "bad_csv"},
      {"{\"item\":\"i1\"}", "no_user"},
      {"{\"user\":\"u1\"}", "no_item"},
      {"{\"user\":1.5,\"item\":\"i1\"}", "bad_id"},
      {"{\"user\":\"\xff\xfe\",\"item\":\"i1\"}", "not_utf8"},
      {"{\"user\":\"u1\",\"item\":\"i1\",\"ts\":\"soon\"}", "bad_ts"},
      {"{\"user\":\"u1\",\"item\":\"i1\",\"ts\":5}", "ts_range"},
  };
  size_t nbad = sizeof bad / sizeof bad[0], k = 0;
  for (size_t r = 0; r < per; r++) {
    for (size_t u = 0; u < nusers; u++) {
      char item[64], payload[512];
      snprintf(item, sizeof item, "item-%zu", (u * 31 + r * 7) % 500);
      const char *uid = w->users[u];
      int n;
      if ((r + u) % 2 == 0 || strchr(uid, ','))
        n = snprintf(payload, sizeof payload,
                     "{\"user\":\"%s\",\"item\":\"%s\",\"ts\":%" PRId64 ",\"type\":\"view\"}", uid,
                     item, ts++);
      else
        n = snprintf(payload, sizeof payload, "%s,%s,%" PRId64, uid, item, ts++);
      add_msg(w, uid, payload, (size_t)n, STREAM_OK, uid, item);
      if (malformed && (r + u) % 53 == 0) {
        /* a type the test's settings weigh 0: consumed, neither stored nor dead-lettered */
        n = snprintf(payload, sizeof payload,
                     "{\"user\":\"%s\",\"item\":\"spam\",\"type\":\"spam\"}", uid);
        add_msg(w, uid, payload, (size_t)n, STREAM_OK, NULL, NULL);
      }
      if (malformed && ++k % 97 == 0) {
        size_t kind = (k / 97) % (nbad + 2); /* nbad, nbad + 1: built below */
        if (kind == nbad) {
          /* id_too_long: 257 bytes */
          char big[400];
          memset(big, 'x', 257);
          big[257] = 0;
          n = snprintf(payload, sizeof payload, "{\"user\":\"%s\",\"item\":\"i\"}", big);
          add_msg(w, "long", payload, (size_t)n, STREAM_R_ID_TOO_LONG, NULL, NULL);
        } else if (kind == nbad + 1) {
          /* too_large: above stream.max_message_bytes (4096) */
          char *huge = xmalloc(5000);
          memset(huge, ' ', 5000);
          memcpy(huge, "{\"user\":\"u\",\"item\":\"i\"}", 23);
          add_msg(w, "huge", huge, 5000, STREAM_R_TOO_LARGE, NULL, NULL);
          free(huge);
        } else {
          int reason = -1;
          for (int q = 1; q < STREAM_R_COUNT; q++)
            if (!strcmp(stream_reason_name((stream_reason)q), bad[kind][1])) reason = q;
          assert_true(reason > 0);
          add_msg(w, "bad", bad[kind][0], strlen(bad[kind][0]), reason, NULL, NULL);
        }
      }
    }
  }
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  tmsg *t = m->_private;
  if (!m->err) t->partition = m->partition, t->acked = 1;
}

/* Produces messages [from, to) of w, idempotently (a user's order is kept), and waits for
 * every acknowledgement. */
static void produce_range(const char *bootstrap, const char *topic, workload *w, size_t from,
                          size_t to) {
  char e[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "enable.idempotence", "true", e, sizeof e), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "linger.ms", "2", e, sizeof e), 0);
  rd_kafka_conf_set(conf, "log_level", "3", e, sizeof e);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  assert_non_null(rk);
  for (size_t i = from; i < to; i++) {
    tmsg *t = &w->m[i];
    for (int tries = 0;; tries++) {
      rd_kafka_resp_err_t err =
          rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(t->key, strlen(t->key)),
                            RD_KAFKA_V_VALUE(t->payload, t->len), RD_KAFKA_V_OPAQUE(t),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      if (!err) break;
      assert_int_equal(err, RD_KAFKA_RESP_ERR__QUEUE_FULL);
      assert_true(tries < 1000);
      rd_kafka_poll(rk, 10);
    }
  }
  assert_int_equal(rd_kafka_flush(rk, WAIT_S * 1000), 0);
  rd_kafka_destroy(rk);
  for (size_t i = from; i < to; i++) assert_true(w->m[i].acked);
}

/* ---- observing the group from outside ---- */

static void high_watermarks(rd_kafka_t *rk, const char *topic, int64_t *hi) {
  for (int p = 0; p < NPART; p++) {
    int64_t lo;
    assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 10000), 0);
  }
}

/* Reads a whole topic (from the beginning to the high watermarks). */
typedef struct {
  char *payload;
  size_t len;
  char reason[32];
} dlq_msg;

static size_t read_topic(const char *bootstrap, const char *topic, dlq_msg **out) {
  rd_kafka_t *rk = tools_observer(bootstrap, "test-reader");
  assert_non_null(rk);
  int64_t hi[NPART];
  high_watermarks(rk, topic, hi);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NPART);
  size_t want = 0;
  for (int p = 0; p < NPART; p++) {
    rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    want += (size_t)hi[p];
  }
  assert_int_equal(rd_kafka_assign(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  dlq_msg *m = xcalloc(want + 1, sizeof *m);
  size_t n = 0;
  for (int i = 0; i < WAIT_S * 10 && n < want; i++) {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
    if (!msg) continue;
    if (!msg->err) {
      m[n].payload = xmalloc(msg->len + 1);
      memcpy(m[n].payload, msg->payload, msg->len);
      m[n].payload[msg->len] = 0;
      m[n].len = msg->len;
      rd_kafka_headers_t *h;
      const void *v;
      size_t vl;
      if (rd_kafka_message_headers(msg, &h) == 0 &&
          rd_kafka_header_get_last(h, "flamed-reject-reason", &v, &vl) == 0)
        snprintf(m[n].reason, sizeof m[n].reason, "%.*s", (int)vl, (const char *)v);
      n++;
    }
    rd_kafka_message_destroy(msg);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  assert_int_equal(n, want);
  *out = m;
  return n;
}

/* ---- checking the state ---- */

static state_db *open_state(const char *dir) {
  state_opts o = {dir, STATE_SEQ_LEN_MAX, 8, 0, 1, 0, NULL};
  state_db *db;
  char err[512];
  int rc = state_open(&db, &o, err, sizeof err);
  if (rc) fprintf(stderr, "state_open: %s\n", err);
  assert_int_equal(rc, 0);
  return db;
}

/* Does user's stored sequence equal exactly its good events in w (in order)? With part >= 0
 * only users whose events went to that partition are asked about. */
static int user_matches(state_db *db, const workload *w, const char *user) {
  size_t cap = 0, nexp = 0;
  for (size_t i = 0; i < w->n; i++) cap += w->m[i].user && !strcmp(w->m[i].user, user);
  state_entry *e = xcalloc(cap + 8, sizeof *e);
  size_t n = 0;
  int rc = state_seq_get(db, user, strlen(user), e, cap + 8, &n);
  int ok = rc == 0 && n == cap;
  for (size_t i = 0; ok && i < w->n; i++) {
    if (!w->m[i].user || strcmp(w->m[i].user, user)) continue;
    size_t len;
    const char *id = state_item_id(db, e[nexp].item, &len);
    if (!id || len != strlen(w->m[i].item) || memcmp(id, w->m[i].item, len)) ok = 0;
    nexp++;
  }
  if (!ok)
    fprintf(stderr, "user '%s': stored %zu events (rc %d), expected %zu\n", user, n, rc, cap);
  free(e);
  return ok;
}

static int32_t user_partition(const workload *w, const char *user) {
  for (size_t i = 0; i < w->n; i++)
    if (w->m[i].user && !strcmp(w->m[i].user, user)) return w->m[i].partition;
  return -1;
}

static void check_all_users(const char *dir, const workload *w) {
  state_db *db = open_state(dir);
  size_t bad = 0;
  for (size_t u = 0; u < w->nusers; u++) bad += !user_matches(db, w, w->users[u]);
  state_close(db);
  assert_int_equal(bad, 0);
}

/* ---- the environment of one test ---- */

/* ---- tests ---- */

/* Every good event stored in order exactly once; every malformed one in the dead-letter topic
 * with its reason, and its offset consumed. */
static void test_good_and_malformed(void **state) {
  (void)state;
  env v;
  env_up(&v, "mixed", 0);
  workload w;
  make_workload(&w, 40, 30, 1);
  produce_range(v.bootstrap, v.topic, &w, 0, w.n);
  child d;
  child_in(&d, &v, "d");
  const char *weights[] = {"--stream.type_weights=view:1,spam:0", NULL};
  start_daemon(&d, v.bootstrap, v.group, v.topic, weights);
  finish(&d, &v);
  check_all_users(d.dir, &w);
  size_t spam = 0;
  for (size_t i = 0; i < w.n; i++) spam += w.m[i].reason == STREAM_OK && !w.m[i].user;
  char filtered[64];
  snprintf(filtered, sizeof filtered, "filtered %zu ", spam);
  assert_true(spam > 10);
  assert_true(log_has(&d, filtered));
  /* the dead-letter topic: exactly the malformed messages, each with its reason */
  char dlq[80];
  snprintf(dlq, sizeof dlq, "%s.dlq", v.topic);
  dlq_msg *got;
  size_t n = read_topic(v.bootstrap, dlq, &got), want = 0;
  for (size_t i = 0; i < w.n; i++) {
    if (w.m[i].reason == STREAM_OK) continue;
    want++;
    int found = 0;
    for (size_t j = 0; j < n && !found; j++) {
      if (got[j].len == w.m[i].len && !memcmp(got[j].payload, w.m[i].payload, got[j].len) &&
          !strcmp(got[j].reason, stream_reason_name((stream_reason)w.m[i].reason))) {
        found = 1;
        got[j].len = (size_t)-1; /* matched once */
      }
    }
    if (!found)
      fprintf(stderr, "not in the dead-letter topic with reason %s: '%.60s'\n",
              stream_reason_name((stream_reason)w.m[i].reason), w.m[i].payload);
    assert_true(found);
  }
  assert_int_equal(n, want);
  assert_true(want >= 10);
  for (size_t j = 0; j < n; j++) free(got[j].payload);
  free(got);
  assert_true(log_has(&d, "stats: consumed"));
  free_workload(&w);
  env_down(&v);
}

/* kill -9 at random moments while ingesting (small batches, fsync on, so ingest is slow enough
 * to be caught in the middle), restart, several times: the final state equals the ground
 * truth, no loss, no duplicate. */
static void test_kill9_restart(void **state) {
  (void)state;
  env v;
  env_up(&v, "kill9", 0);
  workload w;
  make_workload(&w, 200, 100, 0);
  produce_range(v.bootstrap, v.topic, &w, 0, w.n);
  child d;
  child_in(&d, &v, "d");
  /* small fsynced batches: ingest takes seconds, so kills land in the middle of it; static
   * membership lets each restart take its partitions back without waiting for the killed
   * member's session to time out */
  const char *slow[] = {"--stream.batch_max=5", "--state.sync=true",
                        "--kafka.group.instance.id=kill9", NULL};
  fl_rng r;
  fl_rng_seed(&r, (uint64_t)time(NULL));
  int kills = 5, mid = 0;
  int64_t done = 0;
  for (int i = 0; i < kills; i++) {
    start_daemon(&d, v.bootstrap, v.group, v.topic, slow);
    /* wait for progress beyond the last kill's, then kill at a random moment after it */
    int64_t now = done;
    for (int t = 0; t < WAIT_S * 10 && now <= done; t++) {
      fl_sleep_ms(100);
      now = tools_group_committed(v.bootstrap, v.group, v.topic, NPART);
    }
    fl_sleep_ms((int)fl_rng_below(&r, 400));
    kill9(&d);
    mid += now > done && now < (int64_t)w.n;
    fprintf(stderr, "kill -9 #%d after %" PRId64 " of %zu events committed\n", i + 1, now, w.n);
    done = now;
  }
  assert_true(mid >= 3); /* most kills interrupted an ingest in progress */
  start_daemon(&d, v.bootstrap, v.group, v.topic, NULL);
  finish(&d, &v);
  check_all_users(d.dir, &w);
  free_workload(&w);
  env_down(&v);
}

/* Two daemons in one group, the second joining mid-stream: for every partition the daemon
 * that owns it at the end holds every one of its users' sequences complete and in order. */
static void run_rebalance(const char *name, const char *strategy) {
  env v;
  env_up(&v, name, 0);
  workload w;
  make_workload(&w, 80, 40, 0);
  char strat[128];
  snprintf(strat, sizeof strat, "--kafka.partition.assignment.strategy=%s", strategy);
  const char *extra[] = {strat, "--stream.batch_max=50", NULL};
  child a, b;
  child_in(&a, &v, "a");
  child_in(&b, &v, "b");
  produce_range(v.bootstrap, v.topic, &w, 0, w.n / 2);
  start_daemon(&a, v.bootstrap, v.group, v.topic, extra);
  fl_sleep_ms(1500);
  start_daemon(&b, v.bootstrap, v.group, v.topic, extra);
  produce_range(v.bootstrap, v.topic, &w, w.n / 2, w.n);
  int caught = tools_group_caught_up(v.bootstrap, v.group, v.topic, NPART, WAIT_S, 100);
  int sa = stop_daemon(&a), sb = stop_daemon(&b);
  if (!caught || sa || sb) dump_log(&a), dump_log(&b);
  assert_true(caught);
  assert_int_equal(sa, 0);
  assert_int_equal(sb, 0);
  assert_true(log_has(&b, "assigned"));
  /* who holds each partition up to its end */
  rd_kafka_t *rk = tools_observer(v.bootstrap, "test-reader");
  assert_non_null(rk);
  int64_t hi[NPART];
  high_watermarks(rk, v.topic, hi);
  rd_kafka_destroy(rk);
  state_db *db[2] = {open_state(a.dir), open_state(b.dir)};
  int owners[2] = {0, 0};
  size_t bad = 0;
  for (int p = 0; p < NPART; p++) {
    int owner = -1;
    for (int k = 0; k < 2; k++) {
      int64_t off;
      if (state_offset_get(db[k], v.topic, p, &off) == 0 && off == hi[p]) owner = k;
    }
    assert_true(owner >= 0);
    owners[owner]++;
    for (size_t u = 0; u < w.nusers; u++)
      if (user_partition(&w, w.users[u]) == p) bad += !user_matches(db[owner], &w, w.users[u]);
  }
  state_close(db[0]), state_close(db[1]);
  assert_int_equal(bad, 0);
  /* the rebalance really split the work */
  assert_true(owners[0] > 0 && owners[1] > 0);
  free_workload(&w);
  env_down(&v);
}

static void test_rebalance_eager(void **state) { (void)state, run_rebalance("eager", "range"); }
static void test_rebalance_cooperative(void **state) {
  (void)state, run_rebalance("coop", "cooperative-sticky");
}

/* The broker is down when the daemon starts: it waits, says so, and recovers by itself once
 * the broker is up. */
static void test_broker_down_at_start(void **state) {
  (void)state;
  char tmp[200], bootstrap[64];
  assert_int_equal(tu_mkdtemp(tmp, sizeof tmp), 0);
  int port = free_port();
  snprintf(bootstrap, sizeof bootstrap, "127.0.0.1:%d", port);
  child d;
  memset(&d, 0, sizeof d);
  snprintf(d.dir, sizeof d.dir, "%s/state", tmp);
  snprintf(d.log, sizeof d.log, "%s/d.log", tmp);
  start_daemon(&d, bootstrap, "flamed-late", "late", NULL);
  fl_sleep_ms(2500);
  assert_int_equal(waitpid(d.pid, NULL, WNOHANG), 0); /* still running */
  env v;
  memcpy(v.tmp, tmp, sizeof tmp);
  snprintf(v.topic, sizeof v.topic, "late");
  snprintf(v.group, sizeof v.group, "flamed-late");
  const char *topics[] = {"late", "late.dlq"};
  char err[512];
  assert_int_equal(tools_broker_start(&v.broker, 1, port, NPART, topics, 2, err, sizeof err), 0);
  v.bootstrap = tools_broker_bootstraps(v.broker);
  workload w;
  make_workload(&w, 20, 20, 0);
  produce_range(v.bootstrap, v.topic, &w, 0, w.n);
  finish(&d, &v);
  assert_true(log_has(&d, "Connection refused") || log_has(&d, "brokers are down"));
  check_all_users(d.dir, &w);
  free_workload(&w);
  env_down(&v);
}

/* The broker goes away while flamed runs; a SIGTERM then cannot leave the consumer group,
 * and the drain gives up after stream.close_timeout_s: exit 0, everything consumed stored. */
static void test_broker_gone_at_stop(void **state) {
  (void)state;
  env v;
  env_up(&v, "gone", 0);
  child d;
  child_in(&d, &v, "gone");
  const char *extra[] = {"--stream.close_timeout_s=1", NULL};
  start_daemon(&d, v.bootstrap, v.group, v.topic, extra);
  workload w;
  make_workload(&w, 20, 20, 0);
  produce_range(v.bootstrap, v.topic, &w, 0, w.n);
  assert_true(tools_group_caught_up(v.bootstrap, v.group, v.topic, NPART, WAIT_S, 100));
  tools_broker_stop(v.broker);
  v.broker = NULL;
  fl_sleep_ms(500);
  double t0 = fl_now();
  kill(d.pid, SIGTERM);
  int st = wait_exit(&d, 20); /* 1 s of close timeout, 2 s of dead-letter flush, slack */
  if (st != 0) dump_log(&d);
  assert_int_equal(st, 0);
  assert_true(fl_now() - t0 < 20);
  assert_true(log_has(&d, "did not leave its group within stream.close_timeout_s"));
  check_all_users(d.dir, &w);
  free_workload(&w);
  tu_rmtree(v.tmp);
}

/* An unusable state dir, and a second daemon on the same dir, exit 1 with a clear line. */
static void test_state_dir_errors(void **state) {
  (void)state;
  env v;
  env_up(&v, "dirs", 0);
  child a, b, c;
  child_in(&a, &v, "a");
  child_in(&b, &v, "a"); /* same dir */
  snprintf(b.log, sizeof b.log, "%s/b.log", v.tmp);
  start_daemon(&a, v.bootstrap, v.group, v.topic, NULL);
  fl_sleep_ms(1000);
  start_daemon(&b, v.bootstrap, v.group, v.topic, NULL);
  int sb = wait_exit(&b, WAIT_S);
  if (sb != 1) dump_log(&b);
  assert_int_equal(sb, 1);
  assert_true(log_has(&b, "lock"));
  assert_int_equal(stop_daemon(&a), 0);
  /* a state dir whose parent is a regular file */
  child_in(&c, &v, "c");
  char file[300];
  snprintf(file, sizeof file, "%s/plainfile", v.tmp);
  tu_write_file(file, "x");
  snprintf(c.dir, sizeof c.dir, "%s/plainfile/state", v.tmp);
  start_daemon(&c, v.bootstrap, v.group, v.topic, NULL);
  assert_int_equal(wait_exit(&c, WAIT_S), 1);
  assert_true(log_has(&c, "plainfile"));
  env_down(&v);
}

/* The replay order, from the start and from the end, on users of lengths 3, 1, 2 and an
 * empty one: each user appears once per item, and aligned at the end every user's last
 * event is in the last round. */
static void test_replay_order(void **state) {
  (void)state;
  const size_t off[] = {0, 3, 4, 6, 6};
  size_t order[6];
  const size_t start[] = {0, 1, 2, 0, 2, 0}, end[] = {0, 0, 2, 0, 1, 2};
  stream_replay_order(4, off, 0, order);
  for (size_t i = 0; i < 6; i++) assert_int_equal(order[i], start[i]);
  stream_replay_order(4, off, 1, order);
  for (size_t i = 0; i < 6; i++) assert_int_equal(order[i], end[i]);
}

/* Runs `flame produce` with args (a printf format taking the brokers, the topic and the
 * data file, in that order) into topic, checks its output reports `sent` (e.g. "\"sent\":7"),
 * then checks that the 7 events of test_produce_tool's
 * data all arrived and user-1's in file order (read back per partition, which is the order a
 * consumer sees). */
static void produce_checked(const char *bin, const env *v, const char *topic, const char *data,
                            const char *args_fmt, const char *sent) {
  char args[1024];
  snprintf(args, sizeof args, args_fmt, v->bootstrap, topic, data);
  tu_run_result r = tu_run(bin, v->tmp, args);
  if (r.status != 0) fprintf(stderr, "flame %s: %d\n%s", args, r.status, r.err);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, sent));
  tu_run_free(&r);
  dlq_msg *m;
  size_t n = read_topic(v->bootstrap, topic, &m);
  assert_int_equal(n, 7);
  const char *want[] = {"item-5", "item-6", "item-7", "item-11"};
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (strstr(m[i].payload, "\"user\":\"user-1\"")) {
      assert_true(k < 4);
      char item[32];
      snprintf(item, sizeof item, "\"item\":\"%s\"", want[k++]);
      assert_non_null(strstr(m[i].payload, item));
    }
    free(m[i].payload);
  }
  free(m);
  assert_int_equal(k, 4);
}

/* `flame produce` replays a dataset: every event once, string ids, each user's order kept,
 * interleaved from the start of the sequences or from their ends, whole or in two parts. */
static void test_produce_tool(void **state) {
  (void)state;
  const char *bin = getenv("FLAME_BIN");
  assert_non_null(bin);
  env v;
  env_up(&v, "replay", 0);
  char data[300], args[1024];
  snprintf(data, sizeof data, "%s/data.txt", v.tmp);
  /* user-1's items in file order: 5 6 7 11 */
  tu_write_file(data, "1 5 6 7\n2 8 9\n3 10\n1 11\n");
  produce_checked(bin, &v, v.topic, data, "produce --brokers %s --topic %s --data %s --format json",
                  "\"sent\":7");
  char end[80];
  snprintf(end, sizeof end, "%s.end", v.topic);
  produce_checked(bin, &v, end, data, "produce --brokers %s --topic %s --data %s --align end",
                  "\"sent\":7");
  /* the same replay in two parts (--limit, then --skip) sends the same events in order */
  char split[80];
  snprintf(split, sizeof split, "%s.split", v.topic);
  snprintf(args, sizeof args, "produce --brokers %s --topic %s --data %s --align end --limit 3",
           v.bootstrap, split, data);
  tu_run_result r = tu_run(bin, v.tmp, args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "\"sent\":3"));
  tu_run_free(&r);
  produce_checked(bin, &v, split, data,
                  "produce --brokers %s --topic %s --data %s --align end --skip 3", "\"sent\":4");
  snprintf(args, sizeof args, "produce --brokers %s --topic %s --data %s --align middle",
           v.bootstrap, v.topic, data);
  r = tu_run(bin, v.tmp, args);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "--align"));
  tu_run_free(&r);
  /* --malformed-every 3 (the demo's bad events): after every 2 events one malformed message,
   * then the event; the 7 events all still arrive, in each user's order */
  snprintf(args, sizeof args,
           "produce --brokers %s --topic %s.dlq --data %s --format json --malformed-every 3",
           v.bootstrap, v.topic, data);
  r = tu_run(bin, v.tmp, args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "\"sent\":10")); /* 7 events + floor(6 / 2) malformed */
  tu_run_free(&r);
  char dlq[80];
  snprintf(dlq, sizeof dlq, "%s.dlq", v.topic);
  dlq_msg *m;
  size_t n = read_topic(v.bootstrap, dlq, &m);
  assert_int_equal(n, 10);
  size_t good = 0;
  stream_limits lim = {65536, 256, 946684800000LL, 86400000LL};
  for (size_t i = 0; i < n; i++) {
    stream_event e;
    good += stream_event_decode(&e, m[i].payload, strlen(m[i].payload), STREAM_FORMAT_JSON, &lim,
                                -1, fl_wall_ms()) == STREAM_OK;
    free(m[i].payload);
  }
  free(m);
  assert_int_equal(good, 7);
  env_down(&v);
}

int test_ingest(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_and_malformed),   cmocka_unit_test(test_kill9_restart),
      cmocka_unit_test(test_rebalance_eager),      cmocka_unit_test(test_rebalance_cooperative),
      cmocka_unit_test(test_broker_down_at_start), cmocka_unit_test(test_broker_gone_at_stop),
      cmocka_unit_test(test_state_dir_errors),     cmocka_unit_test(test_produce_tool),
      cmocka_unit_test(test_replay_order),
  };
  return cmocka_run_group_tests_name("stream/ingest", tests, NULL, NULL);
}
