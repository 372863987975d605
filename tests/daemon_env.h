/* tests/daemon_env.h: the real flamed binary as a child process against an embedded broker
 * (librdkafka's mock cluster, in the test's process, on loopback): shared by the ingest tests
 * (tests/stream) and the serving tests (tests/daemon). Every wait is bounded. */
#ifndef FL_TEST_DAEMON_ENV_H
#define FL_TEST_DAEMON_ENV_H
#include <sys/types.h>

#include "tools/tools.h"

enum { NPART = 4, WAIT_S = 60 };

/* $FLAMED_BIN, or ./flamed. */
const char *flamed_bin(void);

typedef struct {
  char dir[320]; /* state dir */
  char log[320]; /* its stderr, appended to by every start */
  long log_at;   /* the log's size when the running instance was started */
  pid_t pid;
} child;

/* A broker with topic <name> (NPART partitions) and <name>.dlq, and a temp dir. port 0: any. */
typedef struct {
  char tmp[200];
  tools_broker *broker;
  const char *bootstrap;
  char topic[64], group[64];
} env;

void env_up(env *v, const char *name, int port);
void env_down(env *v);
/* Paths of a daemon called name in v's temp dir. */
void child_in(child *d, const env *v, const char *name);

/* Starts flamed with the tests' settings (loopback API on an ephemeral port, training off)
 * plus extra ("--a.b=c" strings, NULL-terminated; later ones win). */
void start_daemon(child *d, const char *bootstrap, const char *group, const char *topic,
                  const char *const *extra);
/* Waits (bounded) for the child to exit; its exit status, or -1 (then it is killed). */
int wait_exit(child *d, int timeout_s);
/* SIGTERM, then wait_exit(WAIT_S). */
int stop_daemon(child *d);
void kill9(child *d);
int log_has(const child *d, const char *needle);
/* The last 3000 bytes of the child's log, on stderr (for failures). */
void dump_log(const child *d);
/* Waits (bounded) until the instance last started logs its start line, which it writes once
 * its signal handlers are in place; 1 if it did. */
int wait_started(const child *d);
/* Waits until d has made everything in v's topic durable and has started, then stops it: it
 * must exit 0. */
void finish(child *d, const env *v);
/* A loopback TCP port that was free a moment ago. */
int free_port(void);

/* Produces n messages (key keys[i] or none, value vals[i] of lens[i] bytes; lens NULL:
 * strlen) to topic, to partition part (-1: by key), idempotently, and waits (bounded) for
 * every acknowledgement; returns how many were acknowledged. */
size_t env_produce(const char *bootstrap, const char *topic, int32_t part, const char *const *keys,
                   const char *const *vals, const size_t *lens, size_t n);
/* The value of the metric line starting with name (e.g. "flamed_partitions_assigned ") in
 * GET /metrics on 127.0.0.1:port; -1 when the request fails or the line is absent. */
double env_metric(int port, const char *name);
/* 1 while the child runs (no exit reaped). */
int child_alive(child *d);
#endif
