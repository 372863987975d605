/* tests/daemon_env.c: see daemon_env.h. */
#define _GNU_SOURCE
#include "daemon_env.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"
#include "testutil.h"

const char *flamed_bin(void) {
  const char *b = getenv("FLAMED_BIN");
  return b && *b ? b : "./flamed";
}

/* Starts flamed with the test's settings plus extra ("--a.b=c" strings, NULL-terminated). */
void start_daemon(child *d, const char *bootstrap, const char *group, const char *topic,
                  const char *const *extra) {
  char a[20][400];
  int n = 0;
  snprintf(a[n++], sizeof a[0], "--kafka.bootstrap.servers=%s", bootstrap);
  snprintf(a[n++], sizeof a[0], "--state.dir=%s", d->dir);
  snprintf(a[n++], sizeof a[0], "--stream.group=%s", group);
  snprintf(a[n++], sizeof a[0], "--stream.topic=%s", topic);
  snprintf(a[n++], sizeof a[0], "--stream.dead_letter_topic=%s.dlq", topic);
  snprintf(a[n++], sizeof a[0], "--kafka.auto.commit.interval.ms=100");
  snprintf(a[n++], sizeof a[0], "--kafka.session.timeout.ms=6000");
  snprintf(a[n++], sizeof a[0], "--kafka.heartbeat.interval.ms=500");
  snprintf(a[n++], sizeof a[0], "--log.stats_interval_s=1");
  /* the mock cluster of librdkafka 2.0.2 does not implement static membership (KIP-345): a
   * static member that stops would hold its partitions for the session timeout */
  snprintf(a[n++], sizeof a[0], "--stream.static_membership=false");
  /* ingest only: an ephemeral loopback API port, no training rounds */
  snprintf(a[n++], sizeof a[0], "--api.listen=127.0.0.1");
  snprintf(a[n++], sizeof a[0], "--api.port=0");
  snprintf(a[n++], sizeof a[0], "--train.enabled=false");
  char *argv[64]; /* 12 of ours, the rest extra */
  int k = 0;
  argv[k++] = (char *)flamed_bin();
  for (int i = 0; i < n; i++) argv[k++] = a[i];
  for (int i = 0; extra && extra[i]; i++) {
    assert_true(k < 63);
    argv[k++] = (char *)extra[i];
  }
  argv[k] = NULL;
  struct stat sb;
  d->log_at = stat(d->log, &sb) == 0 ? (long)sb.st_size : 0;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* a failed assertion leaves the test without stopping its daemon: it goes with us */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
    execv(argv[0], argv);
    _exit(127);
  }
  d->pid = pid;
}

/* Waits (bounded) for the child to exit; returns its exit status, or -1 (then kills it). */
int wait_exit(child *d, int timeout_s) {
  for (int i = 0; i < timeout_s * 20; i++) {
    int st;
    pid_t r = waitpid(d->pid, &st, WNOHANG);
    if (r == d->pid) {
      d->pid = 0;
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    fl_sleep_ms(50);
  }
  kill(d->pid, SIGKILL);
  waitpid(d->pid, NULL, 0);
  d->pid = 0;
  return -1;
}

int stop_daemon(child *d) {
  kill(d->pid, SIGTERM);
  return wait_exit(d, WAIT_S);
}

void kill9(child *d) {
  kill(d->pid, SIGKILL);
  waitpid(d->pid, NULL, 0);
  d->pid = 0;
}

int log_has(const child *d, const char *needle) { return fl_file_contains(d->log, needle); }

void dump_log(const child *d) {
  void *buf;
  size_t n;
  if (fl_read_file(d->log, &buf, &n) != 0) return;
  /* The last 40 lines other than the once-a-second stats line, which would crowd out the
   * trainer's and the consumer's lines a failure needs. */
  const char *s = buf, *keep[40];
  size_t len[40], k = 0;
  for (size_t i = 0; i < n;) {
    const char *e = memchr(s + i, '\n', n - i);
    size_t l = e ? (size_t)(e - (s + i)) : n - i;
    if (!memmem(s + i, l, "] stats: ", 9)) {
      keep[k % 40] = s + i;
      len[k % 40] = l;
      k++;
    }
    i += l + 1;
  }
  fprintf(stderr, "---- %s (last %zu lines without stats) ----\n", d->log, k < 40 ? k : 40);
  for (size_t j = k < 40 ? 0 : k - 40; j < k; j++)
    fprintf(stderr, "%.*s\n", (int)len[j % 40], keep[j % 40]);
  free(buf);
}

void env_up(env *v, const char *name, int port) {
  assert_int_equal(tu_mkdtemp(v->tmp, sizeof v->tmp), 0);
  snprintf(v->topic, sizeof v->topic, "%s", name);
  snprintf(v->group, sizeof v->group, "flamed-%s", name);
  char dlq[80];
  snprintf(dlq, sizeof dlq, "%s.dlq", name);
  const char *topics[] = {v->topic, dlq};
  char err[512];
  int rc = tools_broker_start(&v->broker, 1, port, NPART, topics, 2, err, sizeof err);
  if (rc) fprintf(stderr, "broker: %s\n", err);
  assert_int_equal(rc, 0);
  v->bootstrap = tools_broker_bootstraps(v->broker);
}

void env_down(env *v) {
  tools_broker_stop(v->broker);
  tu_rmtree(v->tmp);
}

void child_in(child *d, const env *v, const char *name) {
  memset(d, 0, sizeof *d);
  snprintf(d->dir, sizeof d->dir, "%s/%s-state", v->tmp, name);
  snprintf(d->log, sizeof d->log, "%s/%s.log", v->tmp, name);
}

int wait_started(const child *d) {
  for (int i = 0; i < WAIT_S * 20; i++) {
    void *buf;
    size_t n;
    int found = 0;
    if (fl_read_file(d->log, &buf, &n) == 0) {
      size_t at = (size_t)d->log_at < n ? (size_t)d->log_at : n;
      found = memmem((char *)buf + at, n - at, "[loop] flamed ", 14) != NULL;
      free(buf);
    }
    if (found) return 1;
    fl_sleep_ms(50);
  }
  return 0;
}

/* Waits until d has made everything in v's topic durable and has started (the events may all
 * be durable before a restarted instance is up: a stop signal before its handlers exist would
 * kill it), then stops it: it must exit 0. */
void finish(child *d, const env *v) {
  int caught = tools_group_caught_up(v->bootstrap, v->group, v->topic, NPART, WAIT_S, 100);
  int started = wait_started(d);
  int st = stop_daemon(d);
  if (!caught || !started || st != 0) dump_log(d);
  assert_true(caught);
  assert_true(started);
  assert_int_equal(st, 0);
}

int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
  close(s);
  return ntohs(a.sin_port);
}

static void env_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  if (!m->err) (*(size_t *)opaque)++;
}

size_t env_produce(const char *bootstrap, const char *topic, int32_t part, const char *const *keys,
                   const char *const *vals, const size_t *lens, size_t n) {
  char e[512];
  size_t acked = 0;
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "enable.idempotence", "true", e, sizeof e), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "message.max.bytes", "4000000", e, sizeof e), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "linger.ms", "2", e, sizeof e), 0);
  rd_kafka_conf_set(conf, "log_level", "3", e, sizeof e);
  rd_kafka_conf_set_opaque(conf, &acked);
  rd_kafka_conf_set_dr_msg_cb(conf, env_dr);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  assert_non_null(rk);
  for (size_t i = 0; i < n; i++) {
    size_t len = lens ? lens[i] : strlen(vals[i]);
    const char *k = keys ? keys[i] : NULL;
    rd_kafka_resp_err_t err;
    for (int tries = 0; tries < 1000; tries++) {
      err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                              RD_KAFKA_V_PARTITION(part < 0 ? RD_KAFKA_PARTITION_UA : part),
                              RD_KAFKA_V_KEY(k, k ? strlen(k) : 0),
                              RD_KAFKA_V_VALUE((void *)vals[i], len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
      rd_kafka_poll(rk, 10);
    }
    assert_int_equal(err, 0);
    rd_kafka_poll(rk, 0);
  }
  rd_kafka_flush(rk, 30000);
  rd_kafka_destroy(rk);
  return acked;
}

double env_metric(int port, const char *name) {
  tu_http_resp m;
  if (tu_http_request(port, "GET /metrics HTTP/1.1\r\n\r\n", &m) != 200) return -1;
  char line[256]; /* at a line start: "# HELP name ..." must not match */
  snprintf(line, sizeof line, "\n%s", name);
  const char *p = strstr(m.body, line);
  double v = p ? strtod(p + strlen(line), NULL) : -1;
  tu_http_resp_free(&m, 1);
  return v;
}

int child_alive(child *d) {
  int st;
  return d->pid > 0 && waitpid(d->pid, &st, WNOHANG) == 0;
}
