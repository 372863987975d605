/* daemon/http.h: a small HTTP/1.1 server on the libuv loop, with http-parser doing the parsing.
 *
 * What it owns is connection hygiene, so that handlers only see complete, bounded requests:
 * keep-alive and pipelining (responses leave in request order; a connection whose responses
 * pile up unsent stops being read until they drain), a cap on open connections (the one over
 * it gets a 503 and is closed), request head and body limits (431, 413, then close), an idle
 * timeout and a deadline for a request to arrive in full (slow senders are cut off), and 400
 * for anything http-parser refuses (ambiguous framing included: Content-Length together with
 * Transfer-Encoding, bad chunk sizes, a bad method or version). Upgrades (websockets, h2c) and
 * CONNECT are refused with 400.
 *
 * Handlers run synchronously on the loop thread, one complete request at a time, and fill a
 * response; a handler must not block. A handler whose work belongs on another thread defers
 * its answer (http_defer) and sends it later (http_finish). Everything here runs on the loop
 * thread. */
#ifndef FL_DAEMON_HTTP_H
#define FL_DAEMON_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/common.h"

typedef struct http_server http_server;

/* One complete request. Pointers are valid during the handler call only. */
typedef struct {
  int method;        /* enum http_method of http_parser.h (HTTP_GET, HTTP_POST, ...) */
  const char *path;  /* the URL path, up to '?' (not decoded), NUL-terminated */
  const char *query; /* after '?' (not decoded), NUL-terminated; "" when none */
  const char *auth;  /* the Authorization header's value, NUL-terminated, or NULL */
  const char *body;  /* the body (NUL-terminated for convenience; may hold NULs) */
  size_t body_len;
  struct http_conn *conn; /* opaque: the connection, for http_defer */
} http_req;

/* The handler's answer. status and body must be set; content_type defaults to
 * application/json. The body buffer arrives empty and is owned by the server. */
typedef struct {
  int status;
  const char *content_type; /* a static string */
  fl_buf body;
} http_resp;

typedef void (*http_handler)(void *ctx, const http_req *rq, http_resp *rs);

/* A deferred answer. The handler calls http_defer and returns (its http_resp is then unused);
 * later, on the loop thread, http_finish sends rs (taking its body) and ends the deferral.
 * Until then the connection reads no further request, so pipelined responses keep their
 * order, and a stopping server waits for the answer (within its 2 s bound). If the client
 * went away meanwhile, http_finish sends nothing. Every deferral must be finished once. */
typedef struct http_conn http_deferred;
http_deferred *http_defer(const http_req *rq);
void http_finish(http_deferred *d, http_resp *rs);

typedef struct {
  const char *host;    /* address to bind ("127.0.0.1", "0.0.0.0", "::1") */
  int port;            /* 0: an ephemeral port (http_server_port tells which) */
  size_t max_conns;    /* open connections at most; more get a 503 and are closed */
  size_t max_head;     /* bytes of request line + headers; more: 431 */
  size_t max_body;     /* bytes of body; more: 413 */
  size_t max_pipeline; /* responses queued unsent on a connection before reading pauses */
  uint64_t idle_ms;    /* a connection with no request in progress is closed after this */
  uint64_t request_ms; /* a started request must arrive in full within this */
} http_opts;

/* Counters (loop thread). */
typedef struct {
  uint64_t accepted, refused_full, closed_idle, closed_timeout, bad_requests, requests;
  size_t open;
} http_stats;

/* Binds and listens. 0, or a negative code with err filled (the address cannot be bound, or is
 * not an IP address). */
int http_server_start(http_server **out, uv_loop_t *loop, const http_opts *o, http_handler h,
                      void *ctx, char *err, size_t errlen);
/* The bound port. */
int http_server_port(const http_server *s);
/* Stops accepting and closes every connection after its queued responses are sent (bounded:
 * at most 2 s); calls done(arg) once all handles are closed, then the server is freed. */
void http_server_stop(http_server *s, void (*done)(void *arg), void *arg);
void http_server_stats(const http_server *s, http_stats *st);

/* The reason phrase of a status code ("Not Found"). */
const char *http_status_text(int status);
#endif
