/* tools/produce.c: the clickstream replayer (see tools.h). */
#define _GNU_SOURCE
#include "tools/tools.h"

#include "common/common.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  uint64_t acked, failed;
  rd_kafka_resp_err_t last_err;
} produce_counts;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  produce_counts *pc = opaque;
  if (m->err) {
    pc->failed++;
    pc->last_err = m->err;
  } else {
    pc->acked++;
  }
}

/* One message, waiting while the local queue is full. */
static void produce_one(rd_kafka_t *rk, const char *topic, const char *key, size_t kl,
                        const char *v, size_t vl, produce_counts *pc) {
  for (;;) {
    rd_kafka_resp_err_t pe =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_KEY(key, kl), RD_KAFKA_V_VALUE((void *)v, vl), RD_KAFKA_V_END);
    if (pe == RD_KAFKA_RESP_ERR_NO_ERROR) return;
    if (pe != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      pc->failed++;
      pc->last_err = pe;
      return;
    }
    rd_kafka_poll(rk, 10); /* queue full: let deliveries drain it */
  }
}

void stream_replay_order(size_t nusers, const size_t *off, int align_end, size_t *order) {
  size_t maxlen = 0, n = 0;
  for (size_t u = 0; u < nusers; u++)
    if (off[u + 1] - off[u] > maxlen) maxlen = off[u + 1] - off[u];
  for (size_t round = 0; round < maxlen; round++)
    for (size_t u = 0; u < nusers; u++) {
      size_t len = off[u + 1] - off[u];
      /* user u takes part in rounds [0, len) from the start, [maxlen - len, maxlen) from
       * the end */
      if (align_end ? round >= maxlen - len : round < len) order[n++] = u;
    }
}

int tools_produce_sequences(const tools_produce_opts *o, size_t nusers, const size_t *off,
                            const int32_t *items, const int64_t *user_ids, tools_produce_result *r,
                            char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  produce_counts pc = {0};
  char e[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  const char *settings[][2] = {
      {"bootstrap.servers", o->brokers},
      {"client.id", "flame-produce"},
      /* retries must not reorder a user's events */
      {"enable.idempotence", "true"},
      /* wait up to 50 ms to fill large batches: the embedded broker answers a fetch with one
       * batch per partition, so with 5 ms batches a consumer fell behind a 100k/s stream and
       * p99 produce-to-durable was ~530 ms instead of ~80 (bench/RESULTS.md section 6) */
      {"linger.ms", "50"},
      {"batch.num.messages", "10000"},
      {"queue.buffering.max.messages", "1000000"},
  };
  for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
    if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], e, sizeof e) != RD_KAFKA_CONF_OK) {
      snprintf(err, errlen, "kafka: %s", e);
      rd_kafka_conf_destroy(conf);
      return FL_ERANGE;
    }
  rd_kafka_conf_set_opaque(conf, &pc);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (!rk) {
    snprintf(err, errlen, "kafka producer: %s", e);
    rd_kafka_conf_destroy(conf);
    return FL_ERANGE;
  }
  size_t total = off[nusers];
  size_t *order = xmalloc((total ? total : 1) * sizeof *order);
  size_t *next = xcalloc(nusers ? nusers : 1, sizeof *next); /* each user's next item */
  if (o->order)
    memcpy(order, o->order, total * sizeof *order);
  else
    stream_replay_order(nusers, off, o->align_end, order);
  double ts0 = -1; /* the first produced event's own timestamp (o->speedup) */
  double t0 = fl_now();
  uint64_t n = 0;
  char key[32], payload[160];
  for (size_t k = 0; k < total; k++) {
    size_t u = order[k];
    if (k < o->skip) {
      next[u]++;
      continue;
    }
    if ((o->limit && n >= o->limit) || (o->stop && *o->stop)) break;
    double own = o->ts ? o->ts[off[u] + next[u]] : 0;
    if (ts0 < 0) ts0 = own;
    int paced = o->ts && o->speedup > 0;
    if (paced || (o->rate > 0 && n % 64 == 0)) {
      /* pace to the timestamps or the rate: sleep until event n is due */
      double due = paced ? t0 + (own - ts0) / o->speedup : t0 + (double)n / o->rate, now = fl_now();
      if (due > now) {
        struct timespec ts = {(time_t)(due - now), (long)((due - now - (time_t)(due - now)) * 1e9)};
        nanosleep(&ts, NULL);
      }
    }
    int kl = snprintf(key, sizeof key, "user-%" PRId64, user_ids[u]);
    int item = items[off[u] + next[u]++];
    int64_t ts_ms = o->ts ? (int64_t)llround(own * 1000.0) : fl_wall_ms();
    int pl = o->format == TOOLS_PRODUCE_CSV
                 ? snprintf(payload, sizeof payload, "%s,item-%d,%" PRId64, key, item, ts_ms)
                 : snprintf(payload, sizeof payload,
                            "{\"user\":\"%s\",\"item\":\"item-%d\",\"ts\":%" PRId64 "}", key, item,
                            ts_ms);
    if (o->malformed_every && (n + 1) % o->malformed_every == 0) {
      /* a malformed message first (counted in n), then the event itself */
      static const char *const bad[] = {"{\"user\":\"", "{\"user\":\"u\"}",
                                        "{\"user\":\"\",\"item\":\"i\"}",
                                        "{\"user\":\"u\",\"item\":\"i\",\"ts\":\"yesterday\"}"};
      const char *b = bad[(n / o->malformed_every) % 4];
      produce_one(rk, o->topic, key, (size_t)kl, b, strlen(b), &pc);
      n++;
    }
    produce_one(rk, o->topic, key, (size_t)kl, payload, (size_t)pl, &pc);
    n++;
    if (n % 1024 == 0) rd_kafka_poll(rk, 0);
  }
  free(order);
  free(next);
  rd_kafka_flush(rk, 60000);
  r->seconds = fl_now() - t0;
  r->sent = pc.acked;
  r->failed = pc.failed + (uint64_t)rd_kafka_outq_len(rk);
  if (pc.failed)
    fl_warn("produce: %" PRIu64 " events failed: %s", pc.failed, rd_kafka_err2str(pc.last_err));
  rd_kafka_destroy(rk);
  return 0;
}
