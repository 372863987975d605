/* tools/data.c: `flame synth` (a synthetic dataset), `flame broker` (an embedded Kafka on
 * loopback) and `flame produce` (a dataset replayed as a clickstream). */
#define _GNU_SOURCE
#include "tools/internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "tools/tools.h"

/* ---- flame synth ---- */

static const char synth_help[] =
    "usage: flame synth --out FILE [--users N] [--items N] [--mean-len N] [--seed N]\n"
    "Writes a synthetic `user item item ...` dataset with learnable sequential structure\n"
    "(topics walked in order, 1-3 tastes per user, drift): for demos and tests.\n"
    "  --users N (2000)  --items N (500)  --mean-len N (20)  --seed N (1)\n";

int tools__cmd_synth(int argc, char **argv) {
  const char *out = NULL;
  size_t users = 2000, items = 500, mean_len = 20;
  uint64_t seed = 1;
  const tools__opt opts[] = {{"out", TOOLS_STR, &out, 0, 0},
                             {"users", TOOLS_SIZE, &users, 1, 100000000},
                             {"items", TOOLS_SIZE, &items, 5, 2147483646},
                             {"mean-len", TOOLS_SIZE, &mean_len, 5, 100000},
                             {"seed", TOOLS_U64, &seed, 0, TOOLS_NO_MAX}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, synth_help, NULL, NULL, NULL))
    return 0;
  tools__need("--out", out);
  int err = synth_write(out, users, items, mean_len, seed);
  if (err) tools__die("%s: %s", out, fl_strerror(err));
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "out", out);
  cJSON_AddNumberToObject(j, "users", (double)users);
  cJSON_AddNumberToObject(j, "items", (double)items);
  tools__print_json(j);
  return 0;
}

/* ---- flame broker ---- */

static volatile sig_atomic_t stop_requested; /* read by produce's loop, set by signals */
static void on_stop_signal(int sig) { stop_requested = 1; }

static void catch_stop_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

static const char broker_help[] =
    "usage: flame broker [--port P] [--partitions N] [--topics a,b] [--brokers N]\n"
    "Runs an embedded Kafka (librdkafka's mock cluster: the real protocol, messages in memory)\n"
    "on loopback until SIGINT/SIGTERM. Prints its bootstrap address on the first stdout line\n"
    "as JSON: {\"bootstrap\":\"127.0.0.1:P\",...}. For demos and tests, not production.\n"
    "  --port P        a fixed bootstrap port on 127.0.0.1 (default: the brokers' own\n"
    "                  OS-chosen ports); clients may then start before the broker\n"
    "  --partitions N  partitions of each topic (4)\n"
    "  --topics LIST   topics to create (events,events.dlq); others are created on first use\n"
    "  --brokers N     brokers in the cluster (1)\n";

int tools__cmd_broker(int argc, char **argv) {
  int port = 0, partitions = 4, nbrokers = 1;
  char *topics = xmalloc(256);
  snprintf(topics, 256, "events,events.dlq");
  const char *topics_arg = NULL;
  const tools__opt opts[] = {{"port", TOOLS_INT, &port, 1, 65535},
                             {"partitions", TOOLS_INT, &partitions, 1, 1000},
                             {"topics", TOOLS_STR, &topics_arg, 0, 0},
                             {"brokers", TOOLS_INT, &nbrokers, 1, 16}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, broker_help, NULL, NULL, NULL)) {
    free(topics);
    return 0;
  }
  if (topics_arg) {
    free(topics);
    topics = strdup(topics_arg);
  }
  const char *names[64];
  size_t nt = 0;
  for (char *save = NULL, *t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (nt == 64) tools__die("--topics: at most 64 topics");
    names[nt++] = t;
  }
  catch_stop_signals();
  tools_broker *b;
  char err[512];
  if (tools_broker_start(&b, nbrokers, port, partitions, names, nt, err, sizeof err) != 0)
    tools__die("%s", err);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "bootstrap", tools_broker_bootstraps(b));
  cJSON_AddNumberToObject(j, "brokers", nbrokers);
  cJSON_AddNumberToObject(j, "partitions", partitions);
  tools__print_json(j);
  fflush(stdout);
  fprintf(stderr, "flame broker: serving on %s until SIGINT/SIGTERM\n", tools_broker_bootstraps(b));
  while (!stop_requested) pause();
  tools_broker_stop(b);
  free(topics);
  return 0;
}

/* ---- flame produce ---- */

static const char produce_help[] =
    "usage: flame produce --brokers B --topic T --data FILE [--rate N] [--format json|csv]\n"
    "                     [--skip N] [--limit N] [--malformed-every N] [--align start|end]\n"
    "                     [--order users|time] [--speedup X] [--data-format F]\n"
    "Replays a dataset (`user item` or `user item item ...` lines) as a clickstream keyed by\n"
    "user: users interleaved, each user's order preserved, string ids (\"user-7\",\n"
    "\"item-42\") and ts = the produce time in ms. Stops early on SIGINT/SIGTERM. The last\n"
    "stdout line is JSON: {\"sent\":..,\"failed\":..,\"seconds\":..,\"events_per_sec\":..}.\n"
    "  --brokers B     bootstrap servers, e.g. 127.0.0.1:9092\n"
    "  --topic T       the topic to write\n"
    "  --data FILE     the dataset\n"
    "  --rate N        events per second (default: as fast as the broker takes them)\n"
    "  --format F      json (default) | csv\n"
    "  --skip N        leave out the first N events of the replay (with --limit N, a\n"
    "                  replay in two parts, e.g. at two rates)\n"
    "  --limit N       stop after N events\n"
    "  --align A       start (default): every user's first event, then every user's second,\n"
    "                  ...; end: aligned at the ends of the sequences, so that every user's\n"
    "                  last event comes in the last round (the time order the leave-last-out\n"
    "                  protocol assumes: the items a model was validated and tested on are\n"
    "                  the newest)\n"
    "  --order O       users (default): the interleaving above; time: every event in the\n"
    "                  order of its timestamp, with its own timestamp as ts (timestamped data:\n"
    "                  `user item ts` lines or .inter files)\n"
    "  --speedup X     with --order time: paced by the timestamps, X times faster (--rate is\n"
    "                  then ignored; 86400: a day a second)\n"
    "  --data-format F auto | seq | uit | inter, as for flame train --format\n"
    "  --malformed-every N  every Nth message is a malformed one (bad JSON, no item, an\n"
    "                  empty user, a bad ts in turn) followed by the real event: for demos\n";

int tools__cmd_produce(int argc, char **argv) {
  tools_produce_opts o = {.format = TOOLS_PRODUCE_JSON};
  const char *data = NULL;
  const char *format = NULL, *align = NULL, *order = NULL, *data_fmt = NULL;
  const tools__opt opts[] = {{"brokers", TOOLS_STR, &o.brokers, 0, 0},
                             {"topic", TOOLS_STR, &o.topic, 0, 0},
                             {"data", TOOLS_STR, &data, 0, 0},
                             {"rate", TOOLS_DOUBLE, &o.rate, 0, 1e9},
                             {"format", TOOLS_STR, &format, 0, 0},
                             {"skip", TOOLS_U64, &o.skip, 0, TOOLS_NO_MAX},
                             {"limit", TOOLS_U64, &o.limit, 1, TOOLS_NO_MAX},
                             {"malformed-every", TOOLS_U64, &o.malformed_every, 2, TOOLS_NO_MAX},
                             {"align", TOOLS_STR, &align, 0, 0},
                             {"order", TOOLS_STR, &order, 0, 0},
                             {"speedup", TOOLS_DOUBLE, &o.speedup, 1e-6, 1e12},
                             {"data-format", TOOLS_STR, &data_fmt, 0, 0}};
  if (tools__parse(argc, argv, opts, sizeof opts / sizeof *opts, produce_help, NULL, NULL, NULL))
    return 0;
  if (format && strcmp(format, "json") && strcmp(format, "csv"))
    tools__die("--format: expected json or csv, got '%s'", format);
  if (format) o.format = strcmp(format, "csv") ? TOOLS_PRODUCE_JSON : TOOLS_PRODUCE_CSV;
  if (align && strcmp(align, "start") && strcmp(align, "end"))
    tools__die("--align: expected start or end, got '%s'", align);
  if (align) o.align_end = strcmp(align, "end") == 0;
  tools__need("--brokers", o.brokers);
  tools__need("--topic", o.topic);
  tools__need("--data", data);
  if (order && strcmp(order, "users") && strcmp(order, "time"))
    tools__die("--order: expected users or time, got '%s'", order);
  int by_time = order && strcmp(order, "time") == 0;
  if (o.speedup > 0 && !by_time) tools__die("--speedup goes with --order time");
  data_set ds;
  tools__load_data_format(data, data_fmt, &ds);
  size_t *users = NULL;
  if (by_time) { /* the users of the events in time order, each its user's next item */
    if (!ds.ts) tools__die("--order time needs timestamps, and %s has none", data);
    size_t n = ds.off[ds.nusers];
    data_sample *ev = xmalloc((n ? n : 1) * sizeof *ev);
    data_time_order(&ds, ev);
    users = xmalloc((n ? n : 1) * sizeof *users);
    for (size_t k = 0; k < n; k++) users[k] = ev[k].user;
    free(ev);
    o.order = users;
    o.ts = ds.ts;
  }
  catch_stop_signals();
  o.stop = &stop_requested;
  tools_produce_result r;
  char err[512];
  if (tools_produce_sequences(&o, ds.nusers, ds.off, ds.items, ds.user_id, &r, err, sizeof err))
    tools__die("%s", err);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "sent", (double)r.sent);
  cJSON_AddNumberToObject(j, "failed", (double)r.failed);
  cJSON_AddNumberToObject(j, "seconds", r.seconds);
  cJSON_AddNumberToObject(j, "events_per_sec", r.seconds > 0 ? (double)r.sent / r.seconds : 0);
  tools__print_json(j);
  free(users);
  data_free(&ds);
  return r.failed ? 1 : 0;
}
