/* daemon/flamed.c: the flamed daemon.
 *
 * One libuv loop owns the Kafka consumer (stream/), the state writes (state/), the HTTP API
 * and admin API (daemon/api/api.h), signals and the periodic stats line; the trainer
 * (daemon/train/train.h) runs on its own thread and publishes models into the serving slot.
 * Under systemd (Type=notify) it speaks sd_notify: READY once it serves, a STATUS line and
 * WATCHDOG (when WatchdogSec is set) from a loop timer, so they stop if the loop stalls,
 * RELOADING then READY around a SIGHUP reload of the reloadable settings, STOPPING at a drain.
 * Without NOTIFY_SOCKET these are no-ops.
 * Exit codes: 0 after a clean drain, 1 when the daemon cannot run (state dir or model dir
 * unusable, a bad anchor, a port that cannot be bound, Kafka client cannot be created), 2 for
 * usage and configuration errors. */
#define _GNU_SOURCE
#include "common/common.h"
#include "config/config.h"
#include "daemon/api/api.h"
#include "daemon/http/http.h"
#include "daemon/serve/serve.h"
#include "daemon/train/train.h"
#include "state/state.h"
#include "stream/stream.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>

#define FLAMED_VERSION "0.5.0"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static void usage(FILE *f) {
  fputs("usage: flamed [--config FILE] [--section.key=value ...] [--test-config | --dump-config]\n"
        "The flamed daemon: consumes interaction events from Kafka, keeps every user's recent\n"
        "items in RocksDB exactly once, fine-tunes a FLAME model on them on a trainer thread,\n"
        "and serves recommendations over HTTP (api.port; admin API on api.admin_port).\n"
        "Logs go to stderr; SIGTERM or SIGINT drains and exits; SIGHUP reloads the settings\n"
        "that can change while running (log.*, train.*, model.dropout/keep/popular).\n"
        "  --config FILE        settings file (INI); without it, the built-in defaults\n"
        "  --section.key=value  overrides a setting after the file (the last one wins),\n"
        "                       e.g. --state.dir=/tmp/flamed --kafka.bootstrap.servers=host:9092\n"
        "  --test-config        validates the settings (incl. the [kafka] properties) and exits\n"
        "  --dump-config        prints every effective setting with its help, and exits\n"
        "  --help, --version\n"
        "Exit status: 0 clean shutdown, 1 cannot run (state dir, Kafka) or must be restarted (a\n"
        "state store that refuses writes after a full disk), 2 bad usage or settings.\n",
        f);
}

typedef struct {
  uv_loop_t loop;
  config cfg;
  state_db *db;
  serve_slot slot;
  trainer *tr;
  api *api;
  http_server *http, *admin;
  stream_consumer *consumer;
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t stats, status; /* the stats line; systemd's STATUS and WATCHDOG */
  int argc;                 /* the command line, read again by a reload */
  char **argv;
  stream_stats last;
  double last_t;
  int stopping;
  int restart; /* stopping because only a restart helps (exit status 1) */
} flamed;

static void stats_line(flamed *d) {
  stream_stats s;
  stream_consumer_stats(d->consumer, &s);
  state_stats ss = {0};
  state_get_stats(d->db, &ss);
  double now = fl_now(), dt = now - d->last_t;
  double rate = dt > 0 ? (double)(s.messages - d->last.messages) / dt : 0;
  uint64_t rej = 0;
  char reasons[512];
  size_t n = 0;
  reasons[0] = 0;
  for (int r = 1; r < STREAM_R_COUNT; r++) {
    rej += s.rejected[r];
    if (s.rejected[r] && n < sizeof reasons - 64)
      n += (size_t)snprintf(reasons + n, sizeof reasons - n, "%s%s %" PRIu64, n ? ", " : " (",
                            stream_reason_name((stream_reason)r), s.rejected[r]);
  }
  if (n) snprintf(reasons + n, sizeof reasons - n, ")");
  fl_info("stats: consumed %" PRIu64 " (%.0f/s) stored %" PRIu64 " rejected %" PRIu64
          "%s filtered %" PRIu64 " lag %" PRId64 " partitions %d batches %" PRIu64
          " p99 %.0f ms users %" PRIu64 " items %" PRIu64 " disk %.1f MiB%s",
          s.messages, rate, s.stored, rej, reasons, s.filtered, s.lag, s.assigned, s.batches,
          stream_lat_quantile(s.lat_ms, 0.99), ss.users, ss.items, ss.disk_bytes / 1048576.0,
          s.low_space ? " PAUSED (low disk space)"
          : s.paused  ? " PAUSED (state writes behind)"
                      : "");
  d->last = s;
  d->last_t = now;
}

static void on_stats(uv_timer_t *t) { stats_line(t->data); }

/* The consumer's commit hook, on the loop, for every batch made durable: the data path from
 * ingest to the trainer (each user run in the batch, a batch being mostly runs per partition,
 * is one note of its new events), then the API's figures and its online evaluation. */
static void on_commit(void *ctx, const stream_stored *ev, size_t n) {
  flamed *d = ctx;
  for (size_t i = 0; i < n && d->tr; i++) {
    size_t j = i;
    while (j + 1 < n && ev[j + 1].user == ev[i].user) j++;
    size_t len;
    const char *id = state_user_id(d->db, ev[i].user, &len);
    if (id) trainer_touch(d->tr, id, len, j - i + 1);
    i = j;
  }
  api_on_stored(d->api, ev, n);
}

static void on_consumer_closed(void *arg) {
  flamed *d = arg;
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sighup, NULL);
  uv_close((uv_handle_t *)&d->stats, NULL);
  uv_close((uv_handle_t *)&d->status, NULL);
}

static void stop_servers(flamed *d) {
  if (d->http) http_server_stop(d->http, NULL, NULL);
  if (d->admin) http_server_stop(d->admin, NULL, NULL);
  d->http = d->admin = NULL;
  api_deps_of(d->api)->server = api_deps_of(d->api)->admin = NULL;
}

static int listen_on(flamed *d, const char *host, int64_t port, http_handler h, http_server **out,
                     const char *what) {
  const config *c = &d->cfg;
  http_opts o = {.host = host,
                 .port = (int)port,
                 .max_conns = (size_t)c->api.max_conns,
                 .max_conns_per_peer = (size_t)c->api.max_conns_per_peer,
                 .max_head = (size_t)c->api.max_head_bytes,
                 .max_body = (size_t)c->api.max_body_bytes,
                 .max_pipeline = (size_t)c->api.max_pipeline,
                 .idle_ms = (uint64_t)c->api.idle_timeout_ms,
                 .header_ms = (uint64_t)c->api.header_timeout_ms,
                 .request_ms = (uint64_t)c->api.request_timeout_ms};
  char err[512];
  if (http_server_start(out, &d->loop, &o, h, d->api, err, sizeof err) != 0) {
    fl_error("%s: %s", what, err);
    return -1;
  }
  fl_info("%s listening on %s:%d", what, host, http_server_port(*out));
  return 0;
}

static int load_config(config *cfg, int argc, char **argv, int *test, int *dump);

/* Where RocksDB's LOG files go (state.rocksdb_log_dir): off the state disk by default, so
 * that a full state disk cannot abort RocksDB on a LOG write. */
static void rocksdb_log_dir(const config *c, char *out, size_t n) {
  const char *dir = c->state.rocksdb_log_dir;
  if (!dir || !*dir) dir = getenv("RUNTIME_DIRECTORY");
  if (dir && strchr(dir, ':')) dir = NULL; /* systemd lists several as a:b: not ours to pick */
  if (!dir || !*dir) dir = getenv("TMPDIR");
  if (!dir || !*dir) dir = "/tmp";
  snprintf(out, n, "%s", dir);
}

/* systemd's STATUS line: lag, serving version, the last round. */
static void status_line(flamed *d, char *buf, size_t n) {
  stream_stats st;
  stream_consumer_stats(d->consumer, &st);
  serve_model *s = serve_slot_get(&d->slot);
  trainer_stats ts;
  memset(&ts, 0, sizeof ts);
  if (d->tr) trainer_get_stats(d->tr, &ts);
  char lag[32] = "unknown";
  if (st.lag >= 0) snprintf(lag, sizeof lag, "%" PRId64, st.lag);
  snprintf(buf, n,
           "lag %s, %" PRIu64 " events stored, model v%" PRIu64 "%s, %" PRIu64 " rounds%s%s", lag,
           st.stored, s ? s->version : 0, s && !s->has_net ? " (popularity)" : "", ts.rounds,
           ts.rounds ? ", last " : "", ts.rounds ? trainer_outcome_name(ts.last.outcome) : "");
  serve_model_unref(s);
}

/* READY=1 with the STATUS line: at start, and after a reload. */
static void notify_ready(flamed *d) {
  char line[256];
  status_line(d, line, sizeof line);
  sd_notifyf(0, "READY=1\nSTATUS=%s", line);
}

/* The periodic stats line, every log.stats_interval_s (0: none). */
static void start_stats_timer(flamed *d) {
  uv_timer_stop(&d->stats);
  if (d->cfg.log.stats_interval_s > 0) {
    uint64_t ms = (uint64_t)d->cfg.log.stats_interval_s * 1000;
    uv_timer_start(&d->stats, on_stats, ms, ms);
  }
}

/* The drain every stop goes through: servers first, then the consumer (its batch, offsets and
 * group); the loop ends when the consumer has closed. */
static void begin_stop(flamed *d, const char *why) {
  d->stopping = 1;
  sd_notify(0, "STOPPING=1\nSTATUS=draining");
  uv_timer_stop(&d->status);
  fl_info("%s: draining (finishing the batch, leaving the consumer group, answering requests "
          "in flight)",
          why);
  stop_servers(d);
  stream_consumer_stop(d->consumer, on_consumer_closed, d);
}

static void on_status(uv_timer_t *t) {
  flamed *d = t->data;
  stream_stats st;
  stream_consumer_stats(d->consumer, &st);
  if (st.writer_stuck && !d->stopping) { /* only a reopen clears it: exit 1 for a restart */
    d->restart = 1;
    begin_stop(d, "the state store refuses writes since the disk was full");
    return;
  }
  char line[256];
  status_line(d, line, sizeof line);
  /* WATCHDOG=1 comes from this timer on the loop: a stalled loop stops it */
  sd_notifyf(0, "STATUS=%s%s", line, sd_watchdog_enabled(0, NULL) > 0 ? "\nWATCHDOG=1" : "");
}

/* SIGHUP: the settings are read again from the same file and command line; the reloadable
 * ones are applied (log level, the rounds' settings); any other change is named and left for
 * a restart. Kafka, RocksDB and the listeners are not touched. */
static void reload(flamed *d) {
  uint64_t now_us = (uint64_t)(fl_now() * 1e6);
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "\nSTATUS=reloading the settings", now_us);
  config next;
  config_init(&next);
  int test = 0, dump = 0;
  if (load_config(&next, d->argc, d->argv, &test, &dump) != 0) {
    fl_error("SIGHUP: the settings do not load (above); the running ones stay");
  } else {
    char names[1024];
    size_t n = config_needs_restart(&d->cfg, &next, names, sizeof names);
    if (n) fl_warn("SIGHUP: %zu changed setting(s) take effect only after a restart: %s", n, names);
    d->cfg.log = next.log;
    fl_log_level = d->cfg.log.level;
    d->cfg.train = next.train;
    d->cfg.model.dropout = next.model.dropout;
    d->cfg.model.keep = next.model.keep;
    d->cfg.model.popular = next.model.popular;
    if (d->tr) trainer_reconfigure(d->tr, &d->cfg);
    start_stats_timer(d);
    fl_info("SIGHUP: settings reloaded");
    fl_debug("SIGHUP: debug lines are on (log.level)");
  }
  config_free(&next);
  notify_ready(d);
}

static void on_signal(uv_signal_t *h, int signum) {
  flamed *d = h->data;
  if (signum == SIGHUP) {
    if (!d->stopping) reload(d);
    return;
  }
  if (d->stopping) {
    fl_warn("%s again: still draining (kill -9 is safe too: nothing is lost)", strsignal(signum));
    return;
  }
  begin_stop(d, strsignal(signum));
}

static int load_config(config *cfg, int argc, char **argv, int *test, int *dump) {
  char err[1024];
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      exit(0);
    } else if (!strcmp(a, "--version")) {
      printf("flamed %s\n", FLAMED_VERSION);
      exit(0);
    } else if (!strcmp(a, "--config") && i + 1 < argc) {
      path = argv[++i];
    } else if (!strncmp(a, "--config=", 9)) {
      path = a + 9;
    } else if (!strcmp(a, "--test-config")) {
      *test = 1;
    } else if (!strcmp(a, "--dump-config")) {
      *dump = 1;
    }
  }
  if (path && config_load_file(cfg, path, err, sizeof err) != 0) {
    fprintf(stderr, "flamed: %s\n", err);
    return -1;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--config")) {
      i++;
      continue;
    }
    if (!strncmp(a, "--config=", 9) || !strcmp(a, "--test-config") || !strcmp(a, "--dump-config"))
      continue;
    int rc = config_apply_arg(cfg, a, err, sizeof err);
    if (rc < 0) {
      fprintf(stderr, "flamed: %s\n", err);
      return -1;
    }
    if (rc == 1) {
      fprintf(stderr, "flamed: unknown argument '%s' (see flamed --help)\n", a);
      return -1;
    }
  }
  /* a dump is for reading and for writing config files: it needs no brokers yet */
  if (config_validate(cfg, err, sizeof err) != 0 ||
      (!*dump && stream_config_check(cfg, err, sizeof err) != 0)) {
    fprintf(stderr, "flamed: %s\n", err);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  flamed d;
  memset(&d, 0, sizeof d);
  d.argc = argc;
  d.argv = argv;
  int test = 0, dump = 0;
  config_init(&d.cfg);
  if (load_config(&d.cfg, argc, argv, &test, &dump) != 0) {
    config_free(&d.cfg);
    return EXIT_USAGE;
  }
  if (dump) config_dump(&d.cfg, stdout);
  if (test) fprintf(stderr, "flamed: settings are valid\n");
  if (test || dump) {
    config_free(&d.cfg);
    return 0;
  }
  fl_log_level = d.cfg.log.level;
  fl_log_set_thread_tag("loop");
  /* a reader that went away must not kill the daemon: writes then fail with EPIPE */
  signal(SIGPIPE, SIG_IGN);
  /* A stop or reload signal that arrives while the daemon starts (opening the state, loading
   * the anchor) waits until the loop's handlers are in place, instead of killing the process
   * with the default action: every start then ends in a drain and exit 0. The threads started
   * meanwhile inherit the mask, so the signals go to the loop's thread. */
  sigset_t stops;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  sigaddset(&stops, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stops, NULL);

  char err[1024];
  int rc = EXIT_RUNTIME;
  char log_dir[4096];
  rocksdb_log_dir(&d.cfg, log_dir, sizeof log_dir);
  state_opts so = {d.cfg.state.dir,
                   (size_t)d.cfg.state.seq_len,
                   (size_t)d.cfg.state.cache_mb,
                   d.cfg.state.compression,
                   d.cfg.state.wal,
                   d.cfg.state.sync,
                   log_dir};
  if (state_open(&d.db, &so, err, sizeof err) != 0) {
    fl_error("state: %s", err);
    goto out_cfg;
  }
  uv_loop_init(&d.loop);
  /* the scoring workers are libuv's pool, sized by this variable when it first starts */
  if (d.cfg.api.workers > 0 && !getenv("UV_THREADPOOL_SIZE")) {
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, d.cfg.api.workers);
    setenv("UV_THREADPOOL_SIZE", n, 1);
  }
  serve_slot_init(&d.slot);
  /* the trainer first: importing an anchor may intern its catalogue in the state */
  if (trainer_start(&d.tr, &d.cfg, d.db, &d.slot, err, sizeof err) != 0) {
    fl_error("%s", err);
    goto out_slot;
  }
  api_deps deps = {.loop = &d.loop, .cfg = &d.cfg, .db = d.db, .slot = &d.slot, .tr = d.tr};
  if (api_new(&d.api, &deps, err, sizeof err) != 0) {
    fl_error("%s", err);
    goto out_trainer;
  }
  if (listen_on(&d, d.cfg.api.listen, d.cfg.api.port, api_handle, &d.http, "api") != 0 ||
      (*d.cfg.api.admin_token_file && listen_on(&d, d.cfg.api.admin_listen, d.cfg.api.admin_port,
                                                api_admin_handle, &d.admin, "admin api") != 0)) {
    goto out_servers;
  }
  if (!*d.cfg.api.admin_token_file) fl_info("admin api off (api.admin_token_file is not set)");
  if (stream_consumer_new(&d.consumer, &d.loop, &d.cfg, d.db, err, sizeof err) != 0) {
    fl_error("%s", err);
    goto out_servers;
  }
  stream_consumer_on_commit(d.consumer, on_commit, &d);
  api_deps_of(d.api)->consumer = d.consumer;
  api_deps_of(d.api)->server = d.http;
  api_deps_of(d.api)->admin = d.admin;
  uv_signal_init(&d.loop, &d.sigterm);
  uv_signal_init(&d.loop, &d.sigint);
  uv_signal_init(&d.loop, &d.sighup);
  uv_timer_init(&d.loop, &d.stats);
  uv_timer_init(&d.loop, &d.status);
  d.sigterm.data = d.sigint.data = d.sighup.data = d.stats.data = d.status.data = &d;
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  uv_signal_start(&d.sighup, on_signal, SIGHUP);
  pthread_sigmask(SIG_UNBLOCK, &stops, NULL); /* a signal held since the start arrives now */
  d.last_t = fl_now();
  start_stats_timer(&d);
  fl_info("flamed %s: state %s (%" PRIu32 " users, %" PRIu32 " items)", FLAMED_VERSION,
          d.cfg.state.dir, state_user_count(d.db), state_item_count(d.db));
  if (stream_consumer_start(d.consumer, err, sizeof err) != 0) {
    fl_error("%s", err);
    d.stopping = 1;
    stop_servers(&d);
    stream_consumer_stop(d.consumer, on_consumer_closed, &d);
  } else {
    rc = 0;
    /* systemd: serving from here on; STATUS every 2 s, or WATCHDOG at half its interval */
    uint64_t wd_us = 0, every_ms = 2000;
    if (sd_watchdog_enabled(0, &wd_us) > 0 && wd_us / 2000 < every_ms)
      every_ms = wd_us / 2000 > 0 ? wd_us / 2000 : 1;
    notify_ready(&d);
    uv_timer_start(&d.status, on_status, every_ms, every_ms);
  }
  uv_run(&d.loop, UV_RUN_DEFAULT);
  if (rc == 0) stats_line(&d);
  if (d.restart) {
    fl_error("flamed: exiting with status 1 so that the supervisor restarts it (the state store "
             "must be reopened)");
    rc = EXIT_RUNTIME;
  }
  if (stream_consumer_free(d.consumer) == FL_EBUSY) {
    /* the writer is stuck in a frozen disk: closing the store would wait with it. What is
     * durable is in the WAL; what was not is consumed again at the next start. */
    fl_error("flamed: exiting without closing the state (a write is stuck in the disk)");
    _exit(EXIT_RUNTIME);
  }
  goto out_closed;
out_servers:
  if (d.http) http_server_stop(d.http, NULL, NULL);
  if (d.admin) http_server_stop(d.admin, NULL, NULL);
  uv_run(&d.loop, UV_RUN_DEFAULT); /* runs the servers' close callbacks */
out_closed:
  api_free(d.api);
out_trainer:
  trainer_stop(d.tr); /* before the state closes: it reads the state */
out_slot:
  serve_slot_free(&d.slot);
  if (uv_loop_close(&d.loop) != 0) fl_warn("loop closed with handles still open");
  fl_info("flamed: stopped");
  state_close(d.db);
out_cfg:
  config_free(&d.cfg);
  return rc;
}
