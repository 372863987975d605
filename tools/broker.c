/* tools/broker.c: the embedded Kafka (librdkafka's mock cluster) and its bootstrap forwarder.
 *
 * The forwarder runs its own libuv loop on its own thread: it accepts on 127.0.0.1:port and
 * pipes each connection to the first broker's listener, byte for byte, until either side
 * closes. It carries bootstrap and metadata traffic only (clients then talk to the brokers'
 * advertised addresses directly), so it needs no flow control beyond libuv's write queue. */
#define _GNU_SOURCE
#include "tools/tools.h"

#include "common/common.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

struct tools_broker {
  rd_kafka_t *rk; /* the handle that hosts the cluster (a producer nobody uses) */
  rd_kafka_mock_cluster_t *mc;
  char bootstraps[256];
  /* forwarder */
  int port;
  struct sockaddr_in upstream;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop;
  pthread_t thread;
  int running;
};

/* One forwarded connection: a client and its upstream socket. */
typedef struct {
  uv_tcp_t side[2]; /* 0 client, 1 upstream */
  uv_connect_t conn;
  int open; /* handles not yet closed */
  int closing;
} fwd_pair;

typedef struct {
  uv_write_t req;
  char *buf;
} fwd_write;

static void pair_closed(uv_handle_t *h) {
  fwd_pair *p = h->data;
  if (--p->open == 0) free(p);
}

static void pair_close(fwd_pair *p) {
  if (p->closing) return;
  p->closing = 1;
  for (int i = 0; i < 2; i++) uv_close((uv_handle_t *)&p->side[i], pair_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  buf->base = xmalloc(suggested);
  buf->len = suggested;
}

static void on_written(uv_write_t *req, int status) {
  fwd_write *w = (fwd_write *)req;
  free(w->buf);
  free(w);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  fwd_pair *p = s->data;
  if (n < 0) {
    free(buf->base);
    pair_close(p);
    return;
  }
  if (n == 0 || p->closing) {
    free(buf->base);
    return;
  }
  uv_stream_t *to = (uv_stream_t *)&p->side[s == (uv_stream_t *)&p->side[0] ? 1 : 0];
  fwd_write *w = xmalloc(sizeof *w);
  w->buf = buf->base;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
  if (uv_write(&w->req, to, &b, 1, on_written) != 0) {
    free(w->buf), free(w);
    pair_close(p);
  }
}

static void on_upstream(uv_connect_t *req, int status) {
  fwd_pair *p = req->data;
  if (status != 0 || p->closing) {
    pair_close(p);
    return;
  }
  for (int i = 0; i < 2; i++) uv_read_start((uv_stream_t *)&p->side[i], on_alloc, on_read);
}

static void on_accept(uv_stream_t *server, int status) {
  tools_broker *b = server->data;
  if (status != 0) return;
  fwd_pair *p = xcalloc(1, sizeof *p);
  for (int i = 0; i < 2; i++) {
    uv_tcp_init(&b->loop, &p->side[i]);
    p->side[i].data = p;
  }
  p->open = 2;
  p->conn.data = p;
  if (uv_accept(server, (uv_stream_t *)&p->side[0]) != 0 ||
      uv_tcp_connect(&p->conn, &p->side[1], (const struct sockaddr *)&b->upstream, on_upstream) !=
          0)
    pair_close(p);
}

static void close_any(uv_handle_t *h, void *arg) {
  if (uv_is_closing(h)) return;
  if (h->type == UV_TCP && h->data && h->data != arg) {
    pair_close(h->data); /* a forwarded connection: closes both of its sides */
    return;
  }
  uv_close(h, NULL);
}

static void on_stop(uv_async_t *a) {
  tools_broker *b = a->data;
  uv_walk(&b->loop, close_any, b);
}

static void *forwarder_main(void *arg) {
  tools_broker *b = arg;
  fl_log_set_thread_tag("broker");
  uv_run(&b->loop, UV_RUN_DEFAULT);
  return NULL;
}

static int forwarder_start(tools_broker *b, char *err, size_t errlen) {
  const char *first = rd_kafka_mock_cluster_bootstraps(b->mc);
  char host[64];
  int uport = 0;
  if (sscanf(first, "%63[^:]:%d", host, &uport) != 2 || uv_ip4_addr(host, uport, &b->upstream)) {
    snprintf(err, errlen, "cannot parse the mock cluster's address '%s'", first);
    return FL_EFORMAT;
  }
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", b->port, &addr);
  uv_loop_init(&b->loop);
  uv_tcp_init(&b->loop, &b->listener);
  uv_async_init(&b->loop, &b->stop, on_stop);
  b->listener.data = b, b->stop.data = b;
  int rc = uv_tcp_bind(&b->listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&b->listener, 64, on_accept);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on 127.0.0.1:%d: %s", b->port, uv_strerror(rc));
    uv_close((uv_handle_t *)&b->listener, NULL);
    uv_close((uv_handle_t *)&b->stop, NULL);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    return rc;
  }
  if (pthread_create(&b->thread, NULL, forwarder_main, b) != 0) abort();
  b->running = 1;
  snprintf(b->bootstraps, sizeof b->bootstraps, "127.0.0.1:%d", b->port);
  return 0;
}

int tools_broker_start(tools_broker **out, int nbrokers, int port, int partitions,
                       const char *const *topics, size_t ntopics, char *err, size_t errlen) {
  tools_broker *b = xcalloc(1, sizeof *b);
  char e[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  /* the hosting handle talks to nobody: keep it quiet */
  rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
  b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (!b->rk) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "kafka: %s", e);
    free(b);
    return FL_ERANGE;
  }
  b->mc = rd_kafka_mock_cluster_new(b->rk, nbrokers);
  if (!b->mc) {
    snprintf(err, errlen, "cannot create the mock cluster (no loopback listener?)");
    rd_kafka_destroy(b->rk);
    free(b);
    return FL_ERANGE;
  }
  snprintf(b->bootstraps, sizeof b->bootstraps, "%s", rd_kafka_mock_cluster_bootstraps(b->mc));
  for (size_t i = 0; i < ntopics; i++) {
    int rc = tools_broker_topic(b, topics[i], partitions);
    if (rc) {
      snprintf(err, errlen, "cannot create topic '%s'", topics[i]);
      tools_broker_stop(b);
      return rc;
    }
  }
  b->port = port;
  if (port > 0) {
    int rc = forwarder_start(b, err, errlen);
    if (rc) {
      b->port = 0;
      tools_broker_stop(b);
      return rc;
    }
  }
  *out = b;
  return 0;
}

const char *tools_broker_bootstraps(const tools_broker *b) { return b->bootstraps; }

int tools_broker_topic(tools_broker *b, const char *topic, int partitions) {
  rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(b->mc, topic, partitions, 1);
  return e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS ? 0
                                                                                        : FL_ERANGE;
}

int tools_broker_set_up(tools_broker *b, int id, int up) {
  rd_kafka_resp_err_t e =
      up ? rd_kafka_mock_broker_set_up(b->mc, id) : rd_kafka_mock_broker_set_down(b->mc, id);
  return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : FL_ERANGE;
}

void tools_broker_stop(tools_broker *b) {
  if (!b) return;
  if (b->running) {
    uv_async_send(&b->stop);
    pthread_join(b->thread, NULL);
    uv_loop_close(&b->loop);
  }
  rd_kafka_mock_cluster_destroy(b->mc);
  rd_kafka_destroy(b->rk);
  free(b);
}

rd_kafka_t *tools_observer(const char *bootstrap, const char *group) {
  char e[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e) ||
      rd_kafka_conf_set(conf, "group.id", group, e, sizeof e) ||
      rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof e) ||
      rd_kafka_conf_set(conf, "log_level", "3", e, sizeof e)) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
  if (!rk) rd_kafka_conf_destroy(conf);
  return rk;
}

/* Committed offsets of partitions 0..nparts-1 into off (-1 where none); 0 or -1. */
static int committed(rd_kafka_t *rk, const char *topic, int nparts, int64_t *off) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
  for (int p = 0; p < nparts; p++) rd_kafka_topic_partition_list_add(l, topic, p);
  int rc = rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
  for (int p = 0; p < nparts && rc == 0; p++) off[p] = l->elems[p].offset;
  rd_kafka_topic_partition_list_destroy(l);
  return rc;
}

int64_t tools_group_committed(const char *bootstrap, const char *group, const char *topic,
                              int nparts) {
  rd_kafka_t *rk = tools_observer(bootstrap, group);
  if (!rk) return -1;
  int64_t *off = xcalloc((size_t)nparts, sizeof *off), sum = -1;
  if (committed(rk, topic, nparts, off) == 0) {
    sum = 0;
    for (int p = 0; p < nparts; p++) sum += off[p] > 0 ? off[p] : 0;
  }
  free(off);
  rd_kafka_destroy(rk);
  return sum;
}

int tools_group_caught_up(const char *bootstrap, const char *group, const char *topic, int nparts,
                          double timeout_s, int poll_ms) {
  rd_kafka_t *rk = tools_observer(bootstrap, group);
  if (!rk) return 0;
  int64_t *hi = xcalloc((size_t)nparts, sizeof *hi), *off = xcalloc((size_t)nparts, sizeof *off);
  int ok = 1;
  for (int p = 0; p < nparts && ok; p++) {
    int64_t lo;
    ok = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 10000) == 0;
  }
  double t0 = fl_now();
  int done = 0;
  while (ok && !done && fl_now() - t0 < timeout_s) {
    done = committed(rk, topic, nparts, off) == 0;
    for (int p = 0; p < nparts && done; p++) done = off[p] >= hi[p];
    if (!done) fl_sleep_ms(poll_ms);
  }
  free(hi), free(off);
  rd_kafka_destroy(rk);
  return done;
}
