/* bench/ingest.c: end-to-end ingest benchmark of flamed (issue 4), run by bench/ingest.sh.
 *
 * An embedded broker (in this process) on loopback; a dataset replayed with `flame produce`'s
 * replayer (users interleaved, string ids); the real flamed binary as a child with a fresh
 * state dir. Two phases, each with its own topic, group and state dir:
 *
 * 1. throughput: the whole dataset is in the topic before the daemon starts; the time from
 *    the daemon's partition assignment (its log line) to the moment the group's committed
 *    offsets (committed only after the events are durable in RocksDB; every 20 ms here) reach
 *    the high watermarks. events/s = events / that time. Peak RSS (VmHWM) and the state's
 *    size on disk after a clean stop are reported too.
 * 2. latency: the daemon runs first, then the dataset is produced at --rate events/s; the
 *    daemon's own histogram of message timestamp -> durable (1 ms buckets) gives p50/p99.
 *
 * The last stdout line is JSON. Hours of nothing: a 1M-event run takes about a minute. */
#define _GNU_SOURCE
#include "common/common.h"
#include "model/model.h"
#include "tools/tools.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The mock broker keeps 5 MB per partition and drops older messages: 32 partitions
 * (each ~3 MB) hold the whole of ml-1m (1M JSON events of ~70 bytes), which the bench checks. */
enum { NPART = 32 };

static void die(const char *msg) {
  fprintf(stderr, "ingest bench: %s\n", msg);
  exit(2);
}

static pid_t spawn(const char *bin, char **args, const char *log) {
  pid_t pid = fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
    execv(bin, args);
    _exit(127);
  }
  return pid;
}

static void start_flamed(pid_t *pid, const char *bin, const char *bootstrap, const char *dir,
                         const char *topic, const char *log) {
  char a[11][320];
  snprintf(a[0], 320, "--kafka.bootstrap.servers=%s", bootstrap);
  snprintf(a[1], 320, "--state.dir=%s", dir);
  snprintf(a[2], 320, "--stream.topic=%s", topic);
  snprintf(a[3], 320, "--stream.group=bench-%s", topic);
  snprintf(a[4], 320, "--stream.dead_letter_topic=%s.dlq", topic);
  snprintf(a[5], 320, "--kafka.auto.commit.interval.ms=20");
  snprintf(a[6], 320, "--log.stats_interval_s=1");
  snprintf(a[7], 320, "--api.listen=127.0.0.1"); /* ingest only: no training, a spare port */
  snprintf(a[8], 320, "--api.port=0");
  snprintf(a[9], 320, "--train.enabled=false");
  char *args[] = {(char *)bin, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], NULL};
  *pid = spawn(bin, args, log);
}

static int stop_child(pid_t pid) {
  kill(pid, SIGTERM);
  int st = -1;
  for (int i = 0; i < 600; i++) {
    if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    fl_sleep_ms(50);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

static long vm_hwm_kb(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long kb = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

static uint64_t du_bytes;
static int du_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  if (flag == FTW_F) du_bytes += (uint64_t)st->st_blocks * 512;
  return 0;
}

/* The last "p99 N ms" / "p50" in the log are not printed separately: parse the final stats
 * line's p99. */
static double last_p99(const char *log) {
  void *buf;
  size_t n;
  double v = -1;
  if (fl_read_file(log, &buf, &n) != 0) return -1;
  char *s = buf;
  s[n - 1] = 0;
  for (char *p = strstr(s, " p99 "); p; p = strstr(p + 1, " p99 ")) sscanf(p, " p99 %lf", &v);
  free(buf);
  return v;
}

int main(int argc, char **argv) {
  const char *data = NULL, *flamed = NULL, *workdir = NULL;
  double rate = 100000;
  static const struct option lo[] = {{"data", required_argument, 0, 'd'},
                                     {"flamed", required_argument, 0, 'f'},
                                     {"workdir", required_argument, 0, 'w'},
                                     {"rate", required_argument, 0, 'r'},
                                     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (c == 'd')
      data = optarg;
    else if (c == 'f')
      flamed = optarg;
    else if (c == 'w')
      workdir = optarg;
    else if (c == 'r')
      rate = atof(optarg);
    else
      die("usage: ingest --data FILE --flamed BIN --workdir DIR [--rate N]");
  }
  if (!data || !flamed || !workdir)
    die("usage: ingest --data FILE --flamed BIN --workdir DIR [--rate N]");
  data_set ds;
  char err[512];
  if (data_load(data, &ds, err, sizeof err)) die(err);
  uint64_t total = ds.off[ds.nusers];
  const char *topics[] = {"tput", "tput.dlq", "lat", "lat.dlq"};
  tools_broker *b;
  if (tools_broker_start(&b, 1, 0, NPART, topics, 4, err, sizeof err)) die(err);
  const char *bootstrap = tools_broker_bootstraps(b);

  /* phase 1: throughput */
  tools_produce_opts po = {.brokers = bootstrap, .topic = "tput", .format = TOOLS_PRODUCE_JSON};
  tools_produce_result pr;
  if (tools_produce_sequences(&po, ds.nusers, ds.off, ds.items, ds.user_id, &pr, err, sizeof err))
    die(err);
  {
    rd_kafka_t *rk = tools_observer(bootstrap, "bench-check");
    for (int p = 0; p < NPART; p++) {
      int64_t low, high;
      if (rd_kafka_query_watermark_offsets(rk, "tput", p, &low, &high, 10000) || low != 0)
        die("the broker dropped messages (retention): use more partitions");
    }
    rd_kafka_destroy(rk);
  }
  fprintf(stderr, "produced %" PRIu64 " events in %.2f s (%.0f/s)\n", pr.sent, pr.seconds,
          pr.sent / pr.seconds);
  char dir[512], log[512];
  snprintf(dir, sizeof dir, "%s/tput-state", workdir);
  snprintf(log, sizeof log, "%s/tput.log", workdir);
  pid_t pid;
  start_flamed(&pid, flamed, bootstrap, dir, "tput", log);
  for (int i = 0; i < 6000 && !fl_file_contains(log, "kafka: assigned"); i++) fl_sleep_ms(2);
  double t0 = fl_now();
  if (!tools_group_caught_up(bootstrap, "bench-tput", "tput", NPART, 600, 5))
    die("phase 1 did not catch up within 600 s");
  double secs = fl_now() - t0;
  long hwm = vm_hwm_kb(pid);
  if (stop_child(pid) != 0) die("flamed did not stop cleanly (phase 1)");
  du_bytes = 0;
  nftw(dir, du_one, 16, FTW_PHYS);
  fprintf(stderr,
          "ingested %" PRIu64
          " events in %.2f s: %.0f events/s, peak RSS %.1f MiB, state %.1f MiB\n",
          total, secs, total / secs, hwm / 1024.0, du_bytes / 1048576.0);

  /* phase 2: latency at a sustained rate */
  char dir2[512], log2[512];
  snprintf(dir2, sizeof dir2, "%s/lat-state", workdir);
  snprintf(log2, sizeof log2, "%s/lat.log", workdir);
  pid_t pid2;
  start_flamed(&pid2, flamed, bootstrap, dir2, "lat", log2);
  for (int i = 0; i < 6000 && !fl_file_contains(log2, "kafka: assigned"); i++) fl_sleep_ms(2);
  tools_produce_opts po2 = {
      .brokers = bootstrap, .topic = "lat", .format = TOOLS_PRODUCE_JSON, .rate = rate};
  tools_produce_result pr2;
  if (tools_produce_sequences(&po2, ds.nusers, ds.off, ds.items, ds.user_id, &pr2, err, sizeof err))
    die(err);
  if (!tools_group_caught_up(bootstrap, "bench-lat", "lat", NPART, 600, 5))
    die("phase 2 did not catch up");
  if (stop_child(pid2) != 0) die("flamed did not stop cleanly (phase 2)");
  double p99 = last_p99(log2);
  fprintf(stderr, "at %.0f events/s offered (%.0f achieved): p99 produce-to-durable %.0f ms\n",
          rate, pr2.sent / pr2.seconds, p99);

  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "data", data);
  cJSON_AddNumberToObject(j, "events", (double)total);
  cJSON_AddNumberToObject(j, "produce_events_per_sec", pr.sent / pr.seconds);
  cJSON_AddNumberToObject(j, "ingest_sec", secs);
  cJSON_AddNumberToObject(j, "ingest_events_per_sec", total / secs);
  cJSON_AddNumberToObject(j, "peak_rss_mib", hwm / 1024.0);
  cJSON_AddNumberToObject(j, "state_disk_mib", du_bytes / 1048576.0);
  cJSON_AddNumberToObject(j, "latency_rate", rate);
  cJSON_AddNumberToObject(j, "latency_achieved_rate", pr2.sent / pr2.seconds);
  cJSON_AddNumberToObject(j, "latency_p99_ms", p99);
  char *s = cJSON_PrintUnformatted(j);
  puts(s);
  free(s);
  cJSON_Delete(j);
  tools_broker_stop(b);
  data_free(&ds);
  return 0;
}
