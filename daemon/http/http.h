/* daemon/http/http.h: a small HTTP/1.1 server on the libuv loop, with http-parser doing the
 * parsing.
 *
 * What it owns is connection hygiene, so that handlers only see complete, bounded requests:
 * - keep-alive and pipelining: responses leave in request order; a connection whose responses
 *   pile up unsent stops being read until they drain;
 * - caps on open connections, in all (max_conns) and from one peer address (max_conns_per_peer,
 *   loopback included): the connection over either gets a 503 with "Connection: close" and
 *   "Retry-After: 1";
 * - request head and body limits (431, 413);
 * - three clocks: a request head must arrive within header_ms (of the accept for a
 *   connection's first request, of its first byte for later ones), a whole request within
 *   request_ms of its first byte, and a connection between requests is closed after idle_ms;
 * - RFC 9112 strictness: 400 for anything http-parser refuses (ambiguous framing included:
 *   Content-Length together with Transfer-Encoding, bad chunk sizes, a bad method), for a
 *   header name holding a space ("Host : x"), obsolete line folding, two Authorization
 *   headers, and a Transfer-Encoding whose final coding is not chunked; 501 for any other
 *   Transfer-Encoding than exactly "chunked" ("gzip, chunked"); 505 for a version other than
 *   HTTP/1.0 and HTTP/1.1. Upgrades (websockets, h2c) and CONNECT are refused with 400. Error
 *   bodies say what was wrong in plain words, never the parser's internals;
 * - HEAD: the handler's answer is sent without its body (Content-Length still the body's).
 * Every response that ends a connection (an error, "Connection: close", HTTP/1.0) is followed
 * by a graceful close: FIN after the response, then whatever the client still sends is read
 * and dropped until it closes (at most 2 s), so that it reads the response instead of a reset.
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

/* Request methods, numbered as http-parser numbers them (the server passes the parser's value
 * on and checks the numbers at compile time), so that handlers need not know the parser. A
 * method not named here arrives with the parser's number and matches no route. */
typedef enum {
  HTTP_M_DELETE = 0,
  HTTP_M_GET = 1,
  HTTP_M_HEAD = 2,
  HTTP_M_POST = 3,
  HTTP_M_PUT = 4
} http_req_method;

/* One complete request. Pointers are valid during the handler call only. A HEAD reaches the
 * handler as HTTP_M_HEAD: answer it as the GET (the server sends no body). */
typedef struct {
  http_req_method method; /* HTTP_M_GET, HTTP_M_HEAD, HTTP_M_POST, ... */
  const char *path;       /* the URL path, up to '?' (not decoded), NUL-terminated */
  const char *query;      /* after '?' (not decoded), NUL-terminated; "" when none */
  const char *auth;       /* the Authorization header's value, NUL-terminated, or NULL */
  const char *body;       /* the body (NUL-terminated for convenience; may hold NULs) */
  size_t body_len;
  struct http_conn *conn; /* opaque: the connection, for http_defer */
} http_req;

/* The handler's answer. status and body must be set; content_type defaults to
 * application/json. The body buffer arrives empty and is owned by the server. */
typedef struct {
  int status;
  const char *content_type; /* a static string */
  const char *allow;        /* with a 405: the methods the path takes ("GET, HEAD"), static */
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
  const char *host;          /* address to bind ("127.0.0.1", "0.0.0.0", "::1") */
  int port;                  /* 0: an ephemeral port (http_server_port tells which) */
  size_t max_conns;          /* open connections at most; more get a 503 and are closed */
  size_t max_conns_per_peer; /* open connections from one IP address; more: 503; 0: no cap */
  size_t max_head;           /* bytes of request line + headers; more: 431 */
  size_t max_body;           /* bytes of body; more: 413 */
  size_t max_pipeline;       /* responses queued unsent on a connection before reading pauses */
  uint64_t header_ms;        /* ms for a request head to arrive (see above); 0: only request_ms */
  uint64_t idle_ms;          /* ms: a connection between requests is closed after this */
  uint64_t request_ms;       /* ms: a started request must arrive in full within this */
} http_opts;

/* Counters (loop thread). refused_full and refused_peer count 503s at accept (max_conns,
 * max_conns_per_peer); closed_header, closed_timeout and closed_idle count connections closed
 * by the three clocks (header_ms, request_ms, idle_ms); bad_requests counts every error the
 * server answers itself (the 503s included); open counts every connection, those being
 * refused or closing gracefully included. */
typedef struct {
  uint64_t accepted, refused_full, refused_peer, closed_header, closed_idle, closed_timeout,
      bad_requests, requests;
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
/* ---- query strings (http-parser does not split or decode them) ---- */

/* Percent-decodes s[0..n) into out (cap bytes; '+' is a space, as in forms). Returns the
 * decoded length, or -1 for a bad escape or a value longer than cap. out is not terminated. */
long http_pct_decode(const char *s, size_t n, char *out, size_t cap);
/* Finds key in the query string q (pairs split on '&', "key=value") and decodes the first
 * one's value into out (cap bytes, *len set). 1 found, 0 absent, -1 bad escape or too long. */
int http_query_get(const char *q, const char *key, char *out, size_t cap, size_t *len);

#endif
