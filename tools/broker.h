/* tools/broker.h: an embedded Kafka for demos and tests (`flame broker`).
 *
 * librdkafka's mock cluster: real Kafka protocol on loopback TCP, messages kept in memory,
 * consumer groups with eager and cooperative assignors, idempotent producers. Its brokers
 * listen on ports the OS picks; with a fixed port, a small TCP forwarder on 127.0.0.1:port
 * passes bootstrap connections through to the first broker, so clients can be configured
 * before the broker starts, and find it again after it restarts (they learn the brokers'
 * own addresses from the metadata the forwarder relays). */
#ifndef FL_STREAM_BROKER_H
#define FL_STREAM_BROKER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

typedef struct stream_broker stream_broker;

/* Starts nbrokers mock brokers and creates the topics with partitions each. port 0: no
 * forwarder. Returns 0, or a negative code with err filled (e.g. the port is taken). */
int stream_broker_start(stream_broker **out, int nbrokers, int port, int partitions,
                        const char *const *topics, size_t ntopics, char *err, size_t errlen);

/* The bootstrap address for clients: 127.0.0.1:port with a forwarder, else the brokers'. */
const char *stream_broker_bootstraps(const stream_broker *b);

/* Creates one more topic (an existing one is left as it is). Returns 0 or negative. */
int stream_broker_topic(stream_broker *b, const char *topic, int partitions);

/* Takes broker id (1-based) down or back up: its connections close and it refuses new
 * ones. For tests of outages. Returns 0 or negative. */
int stream_broker_set_up(stream_broker *b, int id, int up);

/* A consumer handle that never subscribes, for looking at a topic or a group from outside
 * (watermarks, committed offsets, reading a topic by assignment). NULL on a bad address. */
rd_kafka_t *stream_observer(const char *bootstrap, const char *group);

/* The sum over partitions 0..nparts-1 of topic of the group's committed offsets (flamed
 * commits only what is durable in its state), or -1 when the broker does not answer. */
int64_t stream_group_committed(const char *bootstrap, const char *group, const char *topic,
                               int nparts);

/* Waits until the group's committed offsets reach the high watermarks of every partition
 * (as they are when called), polling every poll_ms. Returns 1, or 0 after timeout_s. */
int stream_group_caught_up(const char *bootstrap, const char *group, const char *topic, int nparts,
                           double timeout_s, int poll_ms);

/* Stops the forwarder and destroys the cluster and its messages. */
void stream_broker_stop(stream_broker *b);

#endif
