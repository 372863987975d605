/* stream/consumer.c: Kafka -> validated events -> one state write per drain, on the writer.
 *
 * Design notes (the contract is in stream.h):
 * - librdkafka's main queue is forwarded to the consumer queue (rd_kafka_poll_set_consumer),
 *   so rebalances, errors and messages all arrive through the one queue we drain, and the
 *   rebalance callback runs on the loop thread inside rd_kafka_consume_batch_queue().
 * - The timer drains every tick whether or not anything is queued: a drain is also what
 *   tells librdkafka that the application is alive (max.poll.interval.ms), so an idle topic,
 *   a full disk or a stalled write never makes the member leave its group.
 * - A drain consumes and decodes, and seals the batch to the state writer (state/state.h),
 *   which writes it on its own thread; each sealed batch is a "flight" here until written.
 *   Its bookkeeping (latencies, the commit hook, the advisory Kafka offsets) runs when the
 *   writer reports it durable. While the writer's queue is full or the disk is low on space
 *   the partitions are paused and drains take nothing; a message that still arrives is given
 *   back (its partition is sought back to it), so nothing is skipped.
 * - Dead-letter messages of a batch are flushed (bounded) before its offsets become durable,
 *   so a crash cannot consume a rejected event without it having reached the dead-letter
 *   topic. If the dead-letter topic is unreachable the flush times out once, the consumer
 *   falls back to asynchronous delivery (counted failures) and logs it, and ingest goes on. */
#define _GNU_SOURCE
#include "stream/stream.h"

#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REASON_HEADER "flamed-reject-reason"
#define SOURCE_HEADER "flamed-source"
#define TRUNCATED_HEADER "flamed-truncated-from" /* the original value's length, when cut */
/* A dead-letter record's value and key are cut to these: below the smallest message.max.bytes
 * a broker or topic is likely to have (Kafka's default is 1 MiB) with room for the headers. */
#define DLQ_VALUE_MAX (64u * 1024u)
#define DLQ_KEY_MAX 1024u
enum {
  TICK_MS = 100,      /* timer: polls the consumer, delivery reports, close progress */
  DLQ_FLUSH_MS = 500, /* bound on waiting for a batch's dead-letter deliveries */
  DLQ_CLOSE_FLUSH_MS = 2000,
  STALL_WARN_S = 10,       /* a write waiting this long is logged as a stall */
  KAFKA_DESTROY_MS = 2000, /* bound on destroying a client at shutdown */
};

/* One batch from its first message until the writer has made it durable. */
typedef struct {
  rd_kafka_topic_partition_list_t *boff; /* its next offsets, for the advisory store */
  int64_t *lat_ts;                       /* (batch_max) message timestamps of stored events */
  size_t nlat;
  stream_stored *added; /* (batch_max) its stored events, for the commit hook */
  size_t nadded;
  size_t events;
  uint64_t ticket; /* the writer's */
  double sealed_at;
} flight;

struct stream_consumer {
  uv_loop_t *loop;
  const config *cfg;
  state_db *db;
  stream_limits lim;
  rd_kafka_t *rk;                          /* the consumer */
  rd_kafka_queue_t *q;                     /* its queue (main queue forwarded into it) */
  rd_kafka_t *dlq;                         /* dead-letter producer, or NULL */
  int pipefd[2];                           /* librdkafka writes to [1] on empty -> non-empty */
  uv_poll_t poll;                          /* watches pipefd[0] */
  uv_idle_t idle;                          /* re-arms a drain that stopped at batch_max */
  uv_timer_t timer;                        /* TICK_MS housekeeping */
  int handles_open;                        /* uv handles not yet closed */
  state_batch *batch;                      /* the batch being built */
  state_writer *writer;                    /* writes sealed batches on its thread */
  uv_async_t written;                      /* the writer's wakeups */
  flight *fl;                              /* ring of nfl: in flight from fl_head, then cur */
  size_t nfl, fl_head, fl_n;               /* fl_n in flight (sealed, not yet written) */
  flight *cur;                             /* the batch being built */
  rd_kafka_topic_partition_list_t *sub;    /* next offsets handed to the writer, per partition */
  rd_kafka_topic_partition_list_t *expect; /* per partition: next offset due after a reset */
  rd_kafka_message_t **msgs;               /* (batch_max) drain buffer */
  rd_kafka_topic_t *run_rkt;               /* the partition of the current run of messages */
  int32_t run_partition;
  int run_idx; /* its element in cur->boff, -1: look it up */
  void (*on_commit)(void *ctx, const stream_stored *ev, size_t n);
  void *on_commit_ctx;
  int failing_seen; /* the writer's failing flag as last seen */
  int stall_logged; /* the current stall was logged */
  int dlq_in_batch; /* dead-letter messages produced by this batch */
  int dlq_async;    /* the last flush timed out: deliver asynchronously */
  int started, stopping, closed, finished;
  int abandoned;   /* the close did not complete in stream.close_timeout_s */
  double close_by; /* fl_now() deadline of the close */
  void (*done)(void *arg);
  void *done_arg;
  stream_stats st;
};

/* ---- librdkafka callbacks ---- */

/* librdkafka's syslog levels (0 emerg .. 7 debug) onto ours; runs on librdkafka's threads
 * (fl_log_write writes whole lines, so this is safe). */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  int lv = level <= 3   ? FL_LOG_ERROR
           : level == 4 ? FL_LOG_WARN
           : level <= 6 ? FL_LOG_INFO
                        : FL_LOG_DEBUG;
  fl_log(lv, "kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

/* Errors surface through the queue we drain, so this runs on the loop thread. Most are
 * transient (a broker down, a refused connection) and librdkafka retries by itself: log them
 * at warn, counted, and let the client recover. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  stream_consumer *c = opaque;
  c->st.kafka_errors++;
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char buf[512];
    rd_kafka_fatal_error(rk, buf, sizeof buf);
    fl_error("kafka: fatal error: %s (the consumer cannot continue; restart the daemon)", buf);
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
    fl_warn("kafka: all brokers are down (%s): waiting for them to come back", reason);
  else
    fl_warn("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void dlq_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  stream_consumer *c = opaque;
  if (m->err) {
    c->st.dlq_failed++;
    fl_warn("dead-letter delivery failed: %s", rd_kafka_err2str(m->err));
  } else {
    c->st.dlq_sent++;
    if (c->dlq_async) {
      c->dlq_async = 0;
      fl_info("dead-letter topic reachable again: flushing each batch's rejects again");
    }
  }
}

/* The next offset of a partition already handed to the writer, or -1. */
static int64_t submitted_offset(const stream_consumer *c, const char *topic, int32_t partition) {
  rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(c->sub, topic, partition);
  return p ? p->offset : -1;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
  stream_consumer *c = opaque;
  int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  rd_kafka_error_t *e = NULL;
  c->st.rebalances++;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    /* Seek every partition to the state's own truth. Batches handed to the writer but not
     * yet written hold offsets beyond the stored ones: start from those, or their events
     * would be consumed twice (the writer never drops a batch while running). */
    char line[1024];
    size_t n = 0;
    line[0] = 0;
    for (int i = 0; i < parts->cnt; i++) {
      rd_kafka_topic_partition_t *p = &parts->elems[i];
      int64_t off = submitted_offset(c, p->topic, p->partition);
      if (off < 0 && state_offset_get(c->db, p->topic, p->partition, &off) != 0)
        off = c->cfg->stream.start_offset == CONFIG_START_LATEST ? RD_KAFKA_OFFSET_END
                                                                 : RD_KAFKA_OFFSET_BEGINNING;
      p->offset = off;
      if (n < sizeof line - 64)
        n += (size_t)snprintf(line + n, sizeof line - n, "%s%s[%" PRId32 "]@%s", i ? " " : "",
                              p->topic, p->partition,
                              off == RD_KAFKA_OFFSET_BEGINNING ? "beginning"
                              : off == RD_KAFKA_OFFSET_END     ? "end"
                                                               : "stored");
    }
    fl_info("kafka: assigned %d partition(s) (%s): %s", parts->cnt, coop ? "cooperative" : "eager",
            line);
    if (coop) {
      e = rd_kafka_incremental_assign(rk, parts);
      c->st.assigned += parts->cnt;
    } else {
      rd_kafka_assign(rk, parts);
      c->st.assigned = parts->cnt;
    }
    /* the first message of each partition tells whether librdkafka had to reset it */
    for (int i = 0; i < parts->cnt; i++)
      if (parts->elems[i].offset >= 0) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        rd_kafka_topic_partition_t *x =
            rd_kafka_topic_partition_list_find(c->expect, p->topic, p->partition);
        if (!x) x = rd_kafka_topic_partition_list_add(c->expect, p->topic, p->partition);
        x->offset = p->offset;
      }
    /* Assigned partitions start unpaused: pause them again while we cannot take messages. */
    if (c->st.paused) rd_kafka_pause_partitions(rk, parts);
    /* Tell the group where the state stands (advisory, for lag tools): a partition with
     * nothing new to consume would otherwise keep whatever a killed predecessor last
     * managed to commit. */
    rd_kafka_topic_partition_list_t *known = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
      if (parts->elems[i].offset >= 0)
        rd_kafka_topic_partition_list_add(known, parts->elems[i].topic, parts->elems[i].partition)
            ->offset = parts->elems[i].offset;
    if (known->cnt) rd_kafka_offsets_store(rk, known);
    rd_kafka_topic_partition_list_destroy(known);
  } else {
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
      fl_error("kafka: rebalance error: %s", rd_kafka_err2str(err));
    /* Batches in flight stay queued on the writer: another member starts from its own
     * state's offsets, so nothing here waits for them. */
    fl_info("kafka: %s %d partition(s)%s", rd_kafka_assignment_lost(rk) ? "lost" : "revoked",
            parts->cnt, coop ? " (cooperative)" : "");
    if (coop) {
      e = rd_kafka_incremental_unassign(rk, parts);
      c->st.assigned -= parts->cnt;
    } else {
      rd_kafka_assign(rk, NULL);
      c->st.assigned = 0;
    }
  }
  if (e) {
    fl_error("kafka: rebalance: %s", rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
  }
}

/* ---- the batch ---- */

static double type_weight(const stream_consumer *c, const stream_event *ev) {
  if (ev->type_len == 0) return c->cfg->stream.default_type_weight;
  for (size_t i = 0; i < c->cfg->stream.ntypes; i++) {
    const config_type_weight *t = &c->cfg->stream.types[i];
    if (strlen(t->name) == ev->type_len && memcmp(t->name, ev->type, ev->type_len) == 0)
      return t->weight;
  }
  return c->cfg->stream.default_type_weight;
}

/* The dead-letter record of m: its key and value, cut to DLQ_VALUE_MAX bytes so that no
 * broker's size limit refuses it (an over-long message is the commonest reject of all), with
 * the reason, the source and, when cut, the original length in headers. */
static void dead_letter(stream_consumer *c, const rd_kafka_message_t *m, stream_reason r) {
  if (!c->dlq) return;
  char src[300], orig[32];
  snprintf(src, sizeof src, "%s/%" PRId32 "/%" PRId64, rd_kafka_topic_name(m->rkt), m->partition,
           m->offset);
  size_t klen = m->key_len < DLQ_KEY_MAX ? m->key_len : DLQ_KEY_MAX;
  size_t vlen = m->len < DLQ_VALUE_MAX ? m->len : DLQ_VALUE_MAX;
  int cut = klen < m->key_len || vlen < m->len;
  snprintf(orig, sizeof orig, "%zu", m->len);
  rd_kafka_headers_t *h = rd_kafka_headers_new(3);
  rd_kafka_header_add(h, REASON_HEADER, -1, stream_reason_name(r), -1);
  rd_kafka_header_add(h, SOURCE_HEADER, -1, src, -1);
  if (cut) rd_kafka_header_add(h, TRUNCATED_HEADER, -1, orig, -1);
  rd_kafka_resp_err_t err =
      rd_kafka_producev(c->dlq, RD_KAFKA_V_TOPIC(c->cfg->stream.dead_letter_topic),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(m->key, klen),
                        RD_KAFKA_V_VALUE(m->payload, vlen), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
  if (err) {
    rd_kafka_headers_destroy(h); /* owned by the message only on success */
    c->st.dlq_failed++;
    fl_warn("dead-letter produce failed: %s", rd_kafka_err2str(err));
    return;
  }
  if (cut) c->st.dlq_truncated++;
  c->dlq_in_batch++;
}

/* The first message of a partition after its assignment: when it is not at the offset the
 * state asked for, librdkafka reset the position (auto.offset.reset: the stored offset was
 * out of range, usually deleted by retention while flamed was away): counted, and the
 * offsets jumped over with it. */
static void after_assign(stream_consumer *c, const rd_kafka_message_t *m) {
  const char *topic = rd_kafka_topic_name(m->rkt);
  rd_kafka_topic_partition_t *x =
      rd_kafka_topic_partition_list_find(c->expect, topic, m->partition);
  if (!x) return;
  if (m->offset != x->offset) {
    c->st.offset_resets++;
    int64_t gap = m->offset > x->offset ? m->offset - x->offset : 0;
    c->st.offsets_skipped += (uint64_t)gap;
    fl_warn("kafka: %s[%" PRId32 "]: the stored offset %" PRId64 " is out of range: the "
            "partition was reset to offset %" PRId64 " (stream.start_offset)%s",
            topic, m->partition, x->offset, m->offset,
            gap ? ": the offsets between were never consumed (gone from the broker)" : "");
  }
  rd_kafka_topic_partition_list_del(c->expect, topic, m->partition);
}

/* Decodes one message into the batch (or the dead-letter topic) and records its offset. */
static void take(stream_consumer *c, const rd_kafka_message_t *m, int64_t now) {
  if (m->err) {
    /* not a record: a consumer error delivered as a message */
    c->st.kafka_errors++;
    fl_warn("kafka: consume error: %s", rd_kafka_message_errstr(m));
    return;
  }
  if (c->expect->cnt) after_assign(c, m);
  c->st.messages++;
  flight *f = c->cur;
  rd_kafka_timestamp_type_t tstype;
  int64_t mts = rd_kafka_message_timestamp(m, &tstype);
  stream_event ev;
  stream_reason r =
      stream_event_decode(&ev, m->payload, m->len, c->cfg->stream.format, &c->lim, mts, now);
  if (r == STREAM_OK) {
    double w = type_weight(c, &ev);
    if (w <= 0) {
      c->st.filtered++;
    } else {
      int rc =
          state_batch_add(c->batch, ev.user, ev.user_len, ev.item, ev.item_len, ev.ts_ms, (float)w);
      if (rc != 0) {
        /* only an id the state cannot hold gets here: treat it as a reject, never a stop */
        r = STREAM_R_BAD_ID;
      } else {
        if (mts >= 0) f->lat_ts[f->nlat++] = mts;
        /* both ids were just found or assigned: the lookups cannot miss */
        f->added[f->nadded++] =
            (stream_stored){(uint32_t)state_user_find(c->db, ev.user, ev.user_len),
                            (uint32_t)state_item_find(c->db, ev.item, ev.item_len), ev.ts_ms};
      }
    }
  }
  if (r != STREAM_OK) {
    c->st.rejected[r]++;
    dead_letter(c, m, r);
  }
  /* A drain returns each partition's messages as runs: look the partition up only when the
   * run changes (a lookup compares topic names). The state hears the offsets once per drain. */
  if (m->rkt != c->run_rkt || m->partition != c->run_partition || c->run_idx < 0) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *p =
        rd_kafka_topic_partition_list_find(f->boff, topic, m->partition);
    if (!p) p = rd_kafka_topic_partition_list_add(f->boff, topic, m->partition);
    c->run_rkt = m->rkt, c->run_partition = m->partition, c->run_idx = (int)(p - f->boff->elems);
  }
  f->boff->elems[c->run_idx].offset = m->offset + 1;
}

/* Messages that arrived while we could not take them: each partition is sought back to its
 * first one, so they are fetched again once consumption resumes. */
static void give_back(stream_consumer *c, rd_kafka_message_t **msgs, ssize_t n) {
  rd_kafka_topic_partition_list_t *l = NULL;
  for (ssize_t i = 0; i < n; i++) {
    rd_kafka_message_t *m = msgs[i];
    if (m->err) {
      take(c, m, 0); /* errors and resets are handled as ever */
    } else {
      const char *topic = rd_kafka_topic_name(m->rkt);
      if (!l) l = rd_kafka_topic_partition_list_new(4);
      if (!rd_kafka_topic_partition_list_find(l, topic, m->partition))
        rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = m->offset;
    }
    rd_kafka_message_destroy(m);
  }
  if (!l) return;
  c->st.given_back += (uint64_t)l->cnt;
  rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, l, 0);
  if (e) {
    fl_error("kafka: seek back of messages not taken: %s", rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
  }
  rd_kafka_topic_partition_list_destroy(l);
}

static void set_paused(stream_consumer *c, int paused) {
  if (c->st.paused == paused) return;
  rd_kafka_topic_partition_list_t *a = NULL;
  if (rd_kafka_assignment(c->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
    if (paused)
      rd_kafka_pause_partitions(c->rk, a);
    else
      rd_kafka_resume_partitions(c->rk, a);
    rd_kafka_topic_partition_list_destroy(a);
  }
  c->st.paused = paused;
}

/* Whether a drain may take messages: the writer has room and the disk has space. Room is
 * counted in flights not yet landed, not in the writer's queue: a write the writer finished
 * has left its queue but stays in flight here until collect() lands it, and the ring holds
 * state.write_queue of them plus the one being filled. Counting the writer's queue let a drain
 * between a write's end and its landing seal one flight too many, and the new current flight
 * was the oldest one, reset before it landed: its events went uncounted and unannounced to
 * the trainer (a burst of writes after a frozen disk thawed showed it; the data was stored). */
static int accepting(stream_consumer *c) {
  state_writer_status ws;
  state_writer_status_get(c->writer, &ws);
  c->st.low_space = ws.low_space;
  return c->fl_n < (size_t)c->cfg->state.write_queue && !ws.low_space;
}

static void flight_reset(flight *f) {
  rd_kafka_topic_partition_list_destroy(f->boff);
  f->boff = rd_kafka_topic_partition_list_new(8);
  f->nlat = f->nadded = f->events = 0;
}

/* Hands the batch to the writer (accepting() said it has room). */
static void submit(stream_consumer *c) {
  flight *f = c->cur;
  if (f->boff->cnt == 0) return; /* nothing consumed: nothing to write */
  if (c->dlq && c->dlq_in_batch && !c->dlq_async) {
    if (rd_kafka_flush(c->dlq, DLQ_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      c->dlq_async = 1;
      fl_warn("dead-letter topic '%s' did not confirm within %d ms: rejects are now delivered "
              "asynchronously (a crash may lose some; counted in dlq_failed)",
              c->cfg->stream.dead_letter_topic, DLQ_FLUSH_MS);
    }
  }
  for (int i = 0; i < f->boff->cnt; i++)
    state_batch_offset(c->batch, f->boff->elems[i].topic, f->boff->elems[i].partition,
                       f->boff->elems[i].offset);
  f->events = state_batch_events(c->batch);
  if (state_writer_submit(c->writer, c->batch, &f->ticket) != 0) {
    /* cannot happen after accepting(); keep the batch in hand for the next drain */
    fl_error("state: the writer refused a batch it had room for");
    return;
  }
  f->sealed_at = fl_now();
  for (int i = 0; i < f->boff->cnt; i++) {
    rd_kafka_topic_partition_t *e = &f->boff->elems[i];
    rd_kafka_topic_partition_t *p =
        rd_kafka_topic_partition_list_find(c->sub, e->topic, e->partition);
    if (!p) p = rd_kafka_topic_partition_list_add(c->sub, e->topic, e->partition);
    p->offset = e->offset;
  }
  c->dlq_in_batch = 0;
  c->fl_n++;
  c->cur = &c->fl[(c->fl_head + c->fl_n) % c->nfl];
  flight_reset(c->cur);
}

/* The bookkeeping of a flight the writer made durable. */
static void landed(stream_consumer *c, flight *f) {
  c->st.batches++;
  c->st.stored += f->events;
  int64_t wms = (int64_t)((fl_now() - f->sealed_at) * 1000.0);
  c->st.write_ms[wms < 0 ? 0 : wms > STREAM_LAT_MS ? STREAM_LAT_MS : wms]++;
  int64_t now = fl_wall_ms();
  for (size_t i = 0; i < f->nlat; i++) {
    int64_t d = now - f->lat_ts[i];
    c->st.lat_ms[d < 0 ? 0 : d > STREAM_LAT_MS ? STREAM_LAT_MS : d]++;
  }
  if (c->on_commit && f->nadded) c->on_commit(c->on_commit_ctx, f->added, f->nadded);
  /* advisory: librdkafka auto-commits stored offsets to the group, for lag tools */
  if (!c->finished) rd_kafka_offsets_store(c->rk, f->boff);
}

/* Lands every flight the writer has finished, follows its failures and stalls in the stats,
 * and resumes consumption when it can take more. */
static void collect(stream_consumer *c) {
  state_writer_status ws;
  state_writer_status_get(c->writer, &ws);
  while (c->fl_n && c->fl[c->fl_head].ticket <= ws.done) {
    landed(c, &c->fl[c->fl_head]);
    c->fl_head = (c->fl_head + 1) % c->nfl;
    c->fl_n--;
  }
  c->st.write_failures = ws.failures;
  c->st.writes_queued = ws.queued;
  c->st.low_space = ws.low_space;
  c->st.free_bytes = ws.free_bytes;
  c->st.write_wait_s = ws.head_s;
  c->st.writer_stuck = ws.stuck;
  if (ws.head_s >= STALL_WARN_S && !c->stall_logged) {
    c->stall_logged = 1;
    fl_warn("state: a write has waited %.0f s (%zu queued%s): the disk is stalled; ingest "
            "pauses while the queue is full, serving goes on",
            ws.head_s, ws.queued, ws.failing ? ", failing" : "");
  } else if (ws.head_s < STALL_WARN_S && c->stall_logged) {
    c->stall_logged = 0;
    fl_info("state: writes flow again (%zu queued)", ws.queued);
  }
}

void stream_consumer_on_commit(stream_consumer *c,
                               void (*fn)(void *ctx, const stream_stored *ev, size_t n),
                               void *ctx) {
  c->on_commit = fn;
  c->on_commit_ctx = ctx;
}

/* ---- the loop side ---- */

static void finish_close(stream_consumer *c);
static void on_idle(uv_idle_t *h);

static void drain(stream_consumer *c) {
  if (c->finished) return;
  collect(c); /* land finished writes first: their flights' places are free again */
  int take_msgs = !c->stopping && accepting(c);
  if (!c->stopping) set_paused(c, !take_msgs);
  size_t max = (size_t)c->cfg->stream.batch_max;
  ssize_t n = rd_kafka_consume_batch_queue(c->q, 0, c->msgs, max);
  if (n < 0) {
    fl_warn("kafka: consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
    n = 0;
  }
  if (c->stopping) {
    /* closing: what arrives now is not stored (its offsets are not either: re-read later) */
    for (ssize_t i = 0; i < n; i++) rd_kafka_message_destroy(c->msgs[i]);
    if (rd_kafka_consumer_closed(c->rk)) finish_close(c);
    return;
  }
  if (!take_msgs) {
    give_back(c, c->msgs, n);
    uv_idle_stop(&c->idle);
    return;
  }
  int64_t now = fl_wall_ms();
  c->run_idx = -1;
  for (ssize_t i = 0; i < n; i++) {
    take(c, c->msgs[i], now);
    rd_kafka_message_destroy(c->msgs[i]);
  }
  submit(c);
  /* A full drain may have left messages behind, and librdkafka signals the pipe only when
   * the queue turns non-empty, not for what arrives while we serve it (a rebalance
   * callback's own events, for one): come back on the next loop iteration while anything
   * is queued. */
  if ((size_t)n == max || rd_kafka_queue_length(c->q) > 0)
    uv_idle_start(&c->idle, on_idle);
  else
    uv_idle_stop(&c->idle);
}

static void on_idle(uv_idle_t *h) { drain(h->data); }

static void on_pipe(uv_poll_t *h, int status, int events) {
  stream_consumer *c = h->data;
  char buf[256];
  /* empty the pipe first: a wakeup that arrives while we drain is then not lost */
  while (read(c->pipefd[0], buf, sizeof buf) > 0) {
  }
  drain(c);
}

/* The writer finished a write (or an attempt), or low space changed. */
static void on_written(uv_async_t *h) {
  stream_consumer *c = h->data;
  collect(c);
  if (c->started && !c->finished) drain(c);
}

/* Runs on the writer's thread: only wakes the loop. */
static void wake_loop(void *ctx) { uv_async_send(ctx); }

static void on_tick(uv_timer_t *h) {
  stream_consumer *c = h->data;
  if (c->dlq) rd_kafka_poll(c->dlq, 0); /* delivery reports */
  if (c->finished) return;
  collect(c);
  /* Every tick polls the consumer, queued messages or not: librdkafka counts a poll as the
   * application's sign of life (max.poll.interval.ms), and serves rebalances and errors in
   * it. It also covers a missed wakeup. */
  if (c->started) drain(c);
  if (c->stopping) {
    if (!c->finished && rd_kafka_consumer_closed(c->rk)) {
      finish_close(c);
    } else if (!c->finished && fl_now() >= c->close_by) {
      fl_warn("kafka: the consumer did not leave its group within stream.close_timeout_s "
              "(%.1f s; is the broker reachable?): exiting without it; the offsets are stored "
              "in the state, the group rebalances after its session timeout",
              c->cfg->stream.close_timeout_s);
      c->abandoned = 1;
      finish_close(c);
    }
  }
}

/* ---- lifecycle ---- */

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, const char *origin,
                    int line, char *err, size_t errlen) {
  char e[512];
  if (rd_kafka_conf_set(conf, k, v, e, sizeof e) == RD_KAFKA_CONF_OK) return 0;
  if (line > 0)
    snprintf(err, errlen, "%s:%d: kafka.%s: %s", origin, line, k, e);
  else
    snprintf(err, errlen, "%s: kafka.%s: %s", origin, k, e);
  return FL_ERANGE;
}

/* Properties of a consumer group member, which a producer would ignore with a warning. */
static int consumer_only(const char *k) {
  static const char *const prefixes[] = {
      "group.",     "enable.auto.",      "auto.",
      "fetch.",     "queued.",           "isolation.",
      "max.poll.",  "session.timeout.",  "heartbeat.",
      "check.crcs", "enable.partition.", "partition.assignment."};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
    if (strncmp(k, prefixes[i], strlen(prefixes[i])) == 0) return 1;
  return 0;
}

/* Applies the [kafka] section: the connection settings (brokers, TLS, SASL) and any other
 * librdkafka property. for_producer skips the consumer-group ones. */
static int conf_passthrough(rd_kafka_conf_t *conf, const config *cfg, int for_producer, char *err,
                            size_t errlen) {
  for (size_t i = 0; i < cfg->nkafka; i++) {
    const config_kv *kv = &cfg->kafka[i];
    if (for_producer && consumer_only(kv->key)) continue;
    int rc = conf_set(conf, kv->key, kv->value, kv->origin, kv->line, err, errlen);
    if (rc) return rc;
  }
  return 0;
}

static void conf_callbacks(rd_kafka_conf_t *conf, stream_consumer *c) {
  rd_kafka_conf_set_opaque(conf, c);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  rd_kafka_conf_set_log_cb(conf, log_cb);
}

void stream_instance_id(const config *cfg, char *out, size_t n) {
  if (cfg->stream.instance_id && *cfg->stream.instance_id) {
    snprintf(out, n, "%s", cfg->stream.instance_id);
    return;
  }
  char host[256] = "localhost", dir[PATH_MAX];
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = 0;
  if (!realpath(cfg->state.dir, dir)) snprintf(dir, sizeof dir, "%s", cfg->state.dir);
  snprintf(out, n, "flamed-%s-%08x", host, fl_crc32(0, dir, strlen(dir)));
}

/* Our defaults first (each with its reason), then the [kafka] passthrough, which wins. */
static rd_kafka_conf_t *consumer_conf(const config *cfg, stream_consumer *c, char *err,
                                      size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char instance[512];
  stream_instance_id(cfg, instance, sizeof instance);
  const char *start = cfg->stream.start_offset == CONFIG_START_LATEST ? "latest" : "earliest";
  const char *defaults[][2] = {
      {"client.id", "flamed"},
      {"group.id", cfg->stream.group},
      /* static membership: a restarted instance (kill -9 included) rejoins as itself and gets
       * its partitions back at once, instead of waiting out its dead predecessor's session */
      {"group.instance.id", cfg->stream.static_membership ? instance : NULL},
      /* offsets become "stored" only once their events are durable in the state... */
      {"enable.auto.offset.store", "false"},
      /* ...and librdkafka commits stored offsets to the group: advisory, for lag tools */
      {"enable.auto.commit", "true"},
      /* only reached when a stored offset is out of range (retention deleted it); the first
       * message after the assignment shows it, and what it skipped (after_assign) */
      {"auto.offset.reset", start},
      {"enable.partition.eof", "false"},
      /* freshness: a broker that does not answer a fetch early when data arrives (the
       * embedded mock broker) would otherwise add up to 500 ms to an event's way into the
       * state; a real broker answers early, and then this only bounds idle fetch traffic */
      {"fetch.wait.max.ms", "20"},
      /* throughput: keep fetching ahead until ~1M messages are queued locally (bounded by
       * queued.max.messages.kbytes, 64 MiB of payload). With the default of 100k the fetcher
       * stalled between drains: ml-1m over 32 partitions ingested at 142k events/s instead of
       * 550k, and 300k gave 330k; the price is ~100 MiB more peak RSS (bench/RESULTS.md) */
      {"queued.min.messages", "1000000"},
  };
  for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
    if (defaults[i][1] && conf_set(conf, defaults[i][0], defaults[i][1], "default", 0, err, errlen))
      goto fail;
  if (conf_passthrough(conf, cfg, 0, err, errlen)) goto fail;
  char v[512];
  size_t vn = sizeof v;
  if (rd_kafka_conf_get(conf, "bootstrap.servers", v, &vn) != RD_KAFKA_CONF_OK || !v[0]) {
    snprintf(err, errlen, "kafka.bootstrap.servers is not set (the brokers to consume from)");
    goto fail;
  }
  conf_callbacks(conf, c);
  rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
  return conf;
fail:
  rd_kafka_conf_destroy(conf);
  return NULL;
}

static rd_kafka_conf_t *dlq_conf(const config *cfg, stream_consumer *c, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (conf_set(conf, "client.id", "flamed-dlq", "default", 0, err, errlen)) goto fail;
  if (conf_passthrough(conf, cfg, 1, err, errlen)) goto fail;
  conf_callbacks(conf, c);
  rd_kafka_conf_set_dr_msg_cb(conf, dlq_dr_cb);
  return conf;
fail:
  rd_kafka_conf_destroy(conf);
  return NULL;
}

int stream_config_check(const config *cfg, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = consumer_conf(cfg, NULL, err, errlen);
  if (!conf) return FL_ERANGE;
  rd_kafka_conf_destroy(conf);
  if (!cfg->stream.dead_letter_topic || !cfg->stream.dead_letter_topic[0]) return 0;
  conf = dlq_conf(cfg, NULL, err, errlen);
  if (!conf) return FL_ERANGE;
  rd_kafka_conf_destroy(conf);
  return 0;
}

int stream_consumer_new(stream_consumer **out, uv_loop_t *loop, const config *cfg, state_db *db,
                        char *err, size_t errlen) {
  stream_consumer *c = xcalloc(1, sizeof *c);
  c->loop = loop, c->cfg = cfg, c->db = db;
  c->pipefd[0] = c->pipefd[1] = -1;
  c->lim = (stream_limits){(size_t)cfg->stream.max_message_bytes, (size_t)cfg->stream.max_id_bytes,
                           cfg->stream.min_ts_ms, cfg->stream.max_future_ms};
  c->st.lag = -1;
  char e[512];
  rd_kafka_conf_t *conf = consumer_conf(cfg, c, err, errlen);
  if (!conf) goto fail;
  c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
  if (!c->rk) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "kafka consumer: %s", e);
    goto fail;
  }
  if (cfg->stream.dead_letter_topic && cfg->stream.dead_letter_topic[0]) {
    conf = dlq_conf(cfg, c, err, errlen);
    if (!conf) goto fail;
    c->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
    if (!c->dlq) {
      rd_kafka_conf_destroy(conf);
      snprintf(err, errlen, "kafka dead-letter producer: %s", e);
      goto fail;
    }
  }
  rd_kafka_poll_set_consumer(c->rk);
  c->q = rd_kafka_queue_get_consumer(c->rk);
  if (pipe2(c->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
    snprintf(err, errlen, "pipe: %s", strerror(errno));
    goto fail;
  }
  uv_async_init(loop, &c->written, on_written);
  c->written.data = c;
  state_writer_opts wo = {
      .depth = (size_t)cfg->state.write_queue,
      .min_free_bytes = (uint64_t)cfg->state.min_free_mb << 20,
      .hold_path = getenv("FLAMED_TEST_HOLD_WRITES"),
      .stuck_s = getenv("FLAMED_TEST_STUCK_S") ? atof(getenv("FLAMED_TEST_STUCK_S")) : 0,
      .wake = wake_loop,
      .wake_ctx = &c->written};
  if (state_writer_start(&c->writer, db, &wo) != 0) {
    snprintf(err, errlen, "state: cannot start the writer thread");
    uv_close((uv_handle_t *)&c->written, NULL);
    goto fail;
  }
  c->batch = state_batch_new(db);
  size_t bmax = (size_t)cfg->stream.batch_max;
  c->nfl = (size_t)cfg->state.write_queue + 1;
  c->fl = xcalloc(c->nfl, sizeof *c->fl);
  for (size_t i = 0; i < c->nfl; i++) {
    c->fl[i].boff = rd_kafka_topic_partition_list_new(8);
    c->fl[i].lat_ts = xcalloc(bmax, sizeof *c->fl[i].lat_ts);
    c->fl[i].added = xcalloc(bmax, sizeof *c->fl[i].added);
  }
  c->cur = &c->fl[0];
  c->sub = rd_kafka_topic_partition_list_new(8);
  c->expect = rd_kafka_topic_partition_list_new(1);
  c->msgs = xcalloc(bmax, sizeof *c->msgs);
  uv_poll_init(loop, &c->poll, c->pipefd[0]);
  uv_idle_init(loop, &c->idle);
  uv_timer_init(loop, &c->timer);
  c->poll.data = c->idle.data = c->timer.data = c;
  c->handles_open = 4;
  *out = c;
  return 0;
fail:
  if (c->q) rd_kafka_queue_destroy(c->q);
  if (c->dlq) rd_kafka_destroy(c->dlq);
  if (c->rk) rd_kafka_destroy(c->rk);
  if (c->pipefd[0] >= 0) close(c->pipefd[0]), close(c->pipefd[1]);
  free(c);
  return FL_ERANGE;
}

int stream_consumer_start(stream_consumer *c, char *err, size_t errlen) {
  rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(t, c->cfg->stream.topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, t);
  rd_kafka_topic_partition_list_destroy(t);
  if (e) {
    snprintf(err, errlen, "kafka: subscribe to '%s': %s", c->cfg->stream.topic,
             rd_kafka_err2str(e));
    return FL_ERANGE;
  }
  rd_kafka_queue_io_event_enable(c->q, c->pipefd[1], "1", 1);
  uv_poll_start(&c->poll, UV_READABLE, on_pipe);
  uv_timer_start(&c->timer, on_tick, TICK_MS, TICK_MS);
  c->started = 1;
  char instance[512] = "";
  if (c->cfg->stream.static_membership) stream_instance_id(c->cfg, instance, sizeof instance);
  fl_info("kafka: consuming '%s' as group '%s' (%s%s)%s%s", c->cfg->stream.topic,
          c->cfg->stream.group, *instance ? "static member " : "dynamic member", instance,
          c->dlq ? ", rejects to " : "", c->dlq ? c->cfg->stream.dead_letter_topic : "");
  drain(c); /* anything queued before the pipe was armed */
  return 0;
}

static void on_closed(uv_handle_t *h) {
  stream_consumer *c = h->data;
  if (--c->handles_open == 0 && c->done) c->done(c->done_arg);
}

static void finish_close(stream_consumer *c) {
  if (c->finished) return;
  c->finished = 1;
  if (c->dlq && rd_kafka_flush(c->dlq, DLQ_CLOSE_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
    fl_warn("dead-letter topic: %d message(s) not delivered at shutdown",
            rd_kafka_outq_len(c->dlq));
  if (c->dlq) rd_kafka_poll(c->dlq, 0);
  rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
  fl_info("kafka: consumer closed (%" PRIu64 " events stored, %" PRIu64 " batches)", c->st.stored,
          c->st.batches);
  uv_close((uv_handle_t *)&c->poll, on_closed);
  uv_close((uv_handle_t *)&c->idle, on_closed);
  uv_close((uv_handle_t *)&c->timer, on_closed);
  uv_close((uv_handle_t *)&c->written, on_closed);
}

void stream_consumer_stop(stream_consumer *c, void (*done)(void *arg), void *arg) {
  if (c->stopping) return;
  c->stopping = 1;
  c->close_by = fl_now() + c->cfg->stream.close_timeout_s;
  c->done = done, c->done_arg = arg;
  uv_idle_stop(&c->idle);
  if (!c->started) {
    finish_close(c);
    return;
  }
  rd_kafka_error_t *e = rd_kafka_consumer_close_queue(c->rk, c->q);
  if (e) {
    fl_error("kafka: close: %s", rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    finish_close(c);
  }
}

typedef struct {
  rd_kafka_t *rk;
  int flags;
} destroy_job;

static void *destroy_run(void *arg) {
  destroy_job *j = arg;
  rd_kafka_destroy_flags(j->rk, j->flags);
  return NULL;
}

/* Destroys a client. librdkafka's destroy can wait tens of seconds on its broker threads (a
 * connection attempt to a broker that is gone, a JoinGroup the coordinator holds): it runs on
 * a thread of its own, waited for at most KAFKA_DESTROY_MS, and is left behind if it takes
 * longer (the process is exiting) rather than stretch the shutdown past
 * stream.close_timeout_s. */
static void kafka_destroy(rd_kafka_t *rk, int abandoned, const char *what) {
  /* a job left with its thread must outlive us: static slots, not the heap (loop thread) */
  static destroy_job jobs[8];
  static unsigned next;
  destroy_job *j = &jobs[next++ % 8];
  *j = (destroy_job){rk, abandoned ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0};
  int ms = KAFKA_DESTROY_MS;
  pthread_t th;
  if (pthread_create(&th, NULL, destroy_run, j) != 0) {
    destroy_run(j);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
  if (pthread_timedjoin_np(th, NULL, &ts) == 0) return;
  pthread_detach(th);
  fl_warn("kafka: the %s did not shut down within %d ms%s: exiting without waiting for it", what,
          ms, abandoned ? " (the broker is unreachable)" : "");
}

int stream_consumer_free(stream_consumer *c) {
  if (!c) return 0;
  /* the writer first: what it still writes needs no Kafka, and its end bounds the shutdown */
  int64_t dropped = state_writer_stop(c->writer, c->cfg->stream.close_timeout_s);
  int rc = dropped == FL_EBUSY ? FL_EBUSY : 0;
  if (dropped > 0)
    fl_error("state: %" PRId64 " events could not be written before the stop: they will be "
             "consumed again at the next start (their offsets were not written either)",
             dropped);
  rd_kafka_queue_destroy(c->q);
  /* an abandoned close must not be retried here: that would block on the absent broker */
  kafka_destroy(c->rk, c->abandoned, "consumer");
  if (c->dlq) kafka_destroy(c->dlq, c->abandoned, "dead-letter producer");
  close(c->pipefd[0]), close(c->pipefd[1]);
  state_batch_free(c->batch);
  for (size_t i = 0; i < c->nfl; i++) {
    rd_kafka_topic_partition_list_destroy(c->fl[i].boff);
    free(c->fl[i].lat_ts), free(c->fl[i].added);
  }
  rd_kafka_topic_partition_list_destroy(c->sub);
  rd_kafka_topic_partition_list_destroy(c->expect);
  free(c->fl), free(c->msgs);
  free(c);
  return rc;
}

void stream_consumer_stats(stream_consumer *c, stream_stats *s) {
  rd_kafka_topic_partition_list_t *a = NULL;
  c->st.lag = -1;
  if (!c->finished && rd_kafka_assignment(c->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
    if (a->cnt > 0 && rd_kafka_position(c->rk, a) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      int64_t lag = 0;
      int known = 0;
      for (int i = 0; i < a->cnt; i++) {
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(c->rk, a->elems[i].topic, a->elems[i].partition, &lo,
                                           &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
          continue;
        /* a partition that has not fetched yet has no position: not counted */
        int64_t pos = a->elems[i].offset;
        if (pos < 0) continue;
        lag += hi > pos ? hi - pos : 0;
        known = 1;
      }
      if (known) c->st.lag = lag;
    }
    rd_kafka_topic_partition_list_destroy(a);
  }
  *s = c->st;
}

double stream_lat_quantile(const uint64_t *lat_ms, double q) {
  uint64_t total = 0;
  for (int i = 0; i <= STREAM_LAT_MS; i++) total += lat_ms[i];
  if (total == 0) return -1;
  uint64_t want = (uint64_t)(q * (double)total);
  if (want >= total) want = total - 1;
  uint64_t acc = 0;
  for (int i = 0; i <= STREAM_LAT_MS; i++) {
    acc += lat_ms[i];
    if (acc > want) return i;
  }
  return STREAM_LAT_MS;
}

void stream_stats_fault_metrics(fl_buf *b, const stream_stats *s) {
  fl_buf_printf(
      b,
      "# HELP flamed_dead_letter_failed_total Rejected events whose dead-letter send failed.\n"
      "# TYPE flamed_dead_letter_failed_total counter\nflamed_dead_letter_failed_total %" PRIu64
      "\n# HELP flamed_dead_letter_truncated_total Dead-letter records cut to 64 KiB (the "
      "header flamed-truncated-from holds the original length).\n"
      "# TYPE flamed_dead_letter_truncated_total counter\n"
      "flamed_dead_letter_truncated_total %" PRIu64 "\n"
      "# HELP flamed_kafka_errors_total Errors librdkafka reported (most are transient).\n"
      "# TYPE flamed_kafka_errors_total counter\nflamed_kafka_errors_total %" PRIu64 "\n"
      "# HELP flamed_kafka_offset_resets_total Stored offsets found out of a partition's "
      "range.\n# TYPE flamed_kafka_offset_resets_total counter\n"
      "flamed_kafka_offset_resets_total %" PRIu64 "\n"
      "# HELP flamed_kafka_offsets_skipped_total Offsets never consumed because of those "
      "resets (deleted before flamed read them).\n"
      "# TYPE flamed_kafka_offsets_skipped_total counter\n"
      "flamed_kafka_offsets_skipped_total %" PRIu64 "\n"
      "# HELP flamed_ingest_paused 1 while ingest is paused (state writes behind, or low "
      "disk space).\n# TYPE flamed_ingest_paused gauge\nflamed_ingest_paused %d\n"
      "# HELP flamed_state_low_space 1 while the state disk has less than state.min_free_mb "
      "free.\n# TYPE flamed_state_low_space gauge\nflamed_state_low_space %d\n"
      "# HELP flamed_state_free_bytes Free bytes on the state disk at the last check (-1 "
      "before it).\n# TYPE flamed_state_free_bytes gauge\nflamed_state_free_bytes %.0f\n"
      "# HELP flamed_state_writes_queued State writes handed to the writer thread, not yet "
      "durable.\n# TYPE flamed_state_writes_queued gauge\nflamed_state_writes_queued %zu\n"
      "# HELP flamed_state_write_wait_seconds How long the oldest queued write has waited.\n"
      "# TYPE flamed_state_write_wait_seconds gauge\nflamed_state_write_wait_seconds %.3f\n",
      s->dlq_failed, s->dlq_truncated, s->kafka_errors, s->offset_resets, s->offsets_skipped,
      s->paused, s->low_space, s->free_bytes == UINT64_MAX ? -1.0 : (double)s->free_bytes,
      s->writes_queued, s->write_wait_s);
}
