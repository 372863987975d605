/* daemon/http.c: see http.h. One struct conn per TCP connection: the bytes read but not yet
 * parsed (`in`), the request being assembled, and the count of responses written but not yet
 * sent. Parsing pauses (http_parser_pause) when that count reaches max_pipeline and resumes as
 * writes complete, so a client that pipelines without reading cannot make the daemon buffer
 * without bound. */
#include "http.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_CHUNK 16384

typedef struct http_conn conn; /* http.h's http_deferred is a connection with an answer due */

struct http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t stop_timer;
  http_opts o;
  http_handler h;
  void *ctx;
  conn *conns; /* doubly linked list of open connections */
  http_stats st;
  int port;
  int stopping, timer_closed;
  int handles; /* listener + stop timer + connections not yet freed */
  void (*done)(void *arg);
  void *done_arg;
};

struct http_conn {
  http_server *s;
  conn *prev, *next;
  uv_tcp_t tcp;
  uv_timer_t timer;
  http_parser p;
  fl_buf in; /* bytes read, parsed up to in_off */
  size_t in_off;
  fl_buf url, field, value, auth, body;
  int value_last; /* the last header callback was a value: a new field ends that header */
  size_t head;    /* bytes of request line and headers so far */
  int err_status; /* set by a callback that rejects the request (413, 431, 400) */
  int in_request; /* a message has begun and not completed */
  size_t writes;  /* responses written, not yet sent */
  int paused, reading, closing, close_after;
  int deferred; /* a handler deferred its answer (http_defer): nothing more is parsed */
  int handles;  /* tcp + timer, until both close callbacks ran */
  char rbuf[READ_CHUNK];
};

typedef struct {
  uv_write_t req;
  conn *c;
  size_t n;
  char data[];
} wreq;

const char *http_status_text(int st) {
  switch (st) {
  case 200:
    return "OK";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Payload Too Large";
  case 415:
    return "Unsupported Media Type";
  case 422:
    return "Unprocessable Entity";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

static void close_stop_timer(http_server *s);

static void maybe_done(http_server *s) {
  if (s->stopping && s->handles == 0) {
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    free(s);
    if (done) done(arg);
  }
}

/* Drops one of the connection's holds (its two handles, and a deferred answer). */
static void conn_release(conn *c) {
  if (--c->handles > 0) return;
  http_server *s = c->s;
  fl_buf_free(&c->in);
  fl_buf_free(&c->url);
  fl_buf_free(&c->field);
  fl_buf_free(&c->value);
  fl_buf_free(&c->auth);
  fl_buf_free(&c->body);
  free(c);
  s->handles--;
  maybe_done(s);
}

static void conn_freed(uv_handle_t *h) { conn_release(h->data); }

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  http_server *s = c->s;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->st.open--;
  uv_close((uv_handle_t *)&c->tcp, conn_freed);
  uv_close((uv_handle_t *)&c->timer, conn_freed);
  if (s->stopping && !s->conns) close_stop_timer(s);
}

static void on_timer(uv_timer_t *t) {
  conn *c = t->data;
  if (c->in_request)
    c->s->st.closed_timeout++;
  else
    c->s->st.closed_idle++;
  conn_close(c);
}

static void arm_timer(conn *c) {
  if (c->closing || c->deferred) return; /* a deferred answer is the server's to give */
  uv_timer_start(&c->timer, on_timer, c->in_request ? c->s->o.request_ms : c->s->o.idle_ms, 0);
}

static void parse_input(conn *c);
static void read_start(conn *c);

/* Stops parsing and reading: too many answers unsent, or one deferred. */
static void pause_input(conn *c) {
  c->paused = 1;
  http_parser_pause(&c->p, 1);
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

/* Goes on with the requests pipelined behind, once nothing holds them back any more. */
static void resume_input(conn *c) {
  if (!c->paused || c->deferred || c->closing || c->close_after ||
      c->writes >= c->s->o.max_pipeline)
    return;
  c->paused = 0;
  http_parser_pause(&c->p, 0);
  parse_input(c);
  if (!c->paused && !c->closing && !c->close_after) read_start(c);
}

static void on_written(uv_write_t *w, int status) {
  wreq *r = (wreq *)w;
  conn *c = r->c;
  free(r);
  c->writes--;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->close_after) {
    if (c->writes == 0) conn_close(c);
    return;
  }
  arm_timer(c);
  resume_input(c);
}

/* Queues one response. close: the connection closes once it is sent. */
static void send_resp(conn *c, int status, const char *ctype, const char *body, size_t blen,
                      int close) {
  char head[256];
  int keep10 = !close && c->p.http_major == 1 && c->p.http_minor == 0;
  int hn = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                    http_status_text(status), ctype, blen,
                    close    ? "Connection: close\r\n"
                    : keep10 ? "Connection: keep-alive\r\n"
                             : "");
  wreq *r = xmalloc(sizeof *r + (size_t)hn + blen);
  r->c = c;
  r->n = (size_t)hn + blen;
  memcpy(r->data, head, (size_t)hn);
  if (blen) memcpy(r->data + hn, body, blen);
  uv_buf_t b = uv_buf_init(r->data, (unsigned)r->n);
  if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(r);
    conn_close(c);
    return;
  }
  c->writes++;
  if (close) {
    c->close_after = 1;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

static void send_error(conn *c, int status, const char *msg) {
  char body[160];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", msg);
  c->s->st.bad_requests++;
  send_resp(c, status, "application/json", body, (size_t)n, 1);
}

/* ---- http_parser callbacks (c = p->data) ---- */

static int head_add(conn *c, size_t n) {
  c->head += n;
  if (c->head > c->s->o.max_head) {
    c->err_status = 431;
    return -1;
  }
  return 0;
}

static int on_begin(http_parser *p) {
  conn *c = p->data;
  c->in_request = 1;
  c->head = 0;
  c->url.n = c->field.n = c->value.n = c->auth.n = c->body.n = 0;
  c->value_last = 0;
  arm_timer(c);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (head_add(c, n)) return -1;
  fl_buf_put(&c->url, at, n);
  return 0;
}

static void header_done(conn *c) {
  if (c->field.n == 13 && !strncasecmp(c->field.p, "authorization", 13)) {
    c->auth.n = 0;
    fl_buf_put(&c->auth, c->value.p ? c->value.p : "", c->value.n);
  }
  c->field.n = c->value.n = 0;
}

static int on_field(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (head_add(c, n)) return -1;
  if (c->value_last) header_done(c);
  c->value_last = 0;
  fl_buf_put(&c->field, at, n);
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (head_add(c, n)) return -1;
  c->value_last = 1;
  fl_buf_put(&c->value, at, n);
  return 0;
}

static int on_headers_done(http_parser *p) {
  conn *c = p->data;
  if (c->value_last) header_done(c);
  c->value_last = 0;
  if (p->upgrade || p->method == HTTP_CONNECT) {
    c->err_status = 400;
    return -1;
  }
  if (p->content_length != ULLONG_MAX && p->content_length > c->s->o.max_body) {
    c->err_status = 413;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (c->body.n + n > c->s->o.max_body) {
    c->err_status = 413;
    return -1;
  }
  fl_buf_put(&c->body, at, n);
  return 0;
}

/* Sends the answer to the request just parsed, then pauses reading if too many answers are
 * unsent (or the connection is closing). */
static void respond(conn *c, http_resp *rs) {
  http_server *s = c->s;
  int close = !http_should_keep_alive(&c->p) || s->stopping;
  send_resp(c, rs->status, rs->content_type ? rs->content_type : "application/json",
            rs->body.p ? rs->body.p : "", rs->body.n, close);
  fl_buf_free(&rs->body);
  if (c->closing || c->close_after) {
    http_parser_pause(&c->p, 1); /* nothing more is read from this connection */
    return;
  }
  arm_timer(c);
  if (c->writes >= s->o.max_pipeline) pause_input(c);
}

http_deferred *http_defer(const http_req *rq) {
  conn *c = rq->conn;
  c->deferred = 1;
  c->handles++; /* the connection outlives a close until http_finish */
  return c;
}

void http_finish(http_deferred *c, http_resp *rs) {
  c->deferred = 0;
  if (c->closing) {
    fl_buf_free(&rs->body);
    conn_release(c);
    return;
  }
  c->handles--; /* the handles still hold it */
  respond(c, rs);
  resume_input(c);
}

static int on_complete(http_parser *p) {
  conn *c = p->data;
  http_server *s = c->s;
  c->in_request = 0;
  s->st.requests++;
  fl_buf_put(&c->url, "", 0);
  fl_buf_put(&c->body, "", 0);
  char *q = strchr(c->url.p, '?');
  if (q) *q++ = 0;
  http_req rq = {.method = p->method,
                 .path = c->url.p,
                 .query = q ? q : "",
                 .auth = c->auth.n ? c->auth.p : NULL,
                 .body = c->body.p,
                 .body_len = c->body.n,
                 .conn = c};
  http_resp rs = {.status = 500, .content_type = NULL, .body = {0}};
  s->h(s->ctx, &rq, &rs);
  if (c->deferred) { /* parsing stops here until http_finish */
    fl_buf_free(&rs.body);
    pause_input(c);
    uv_timer_stop(&c->timer);
    return 0;
  }
  respond(c, &rs);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_done,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static void parse_input(conn *c) {
  while (c->in_off < c->in.n && !c->paused && !c->closing && !c->close_after) {
    size_t n = http_parser_execute(&c->p, &settings, c->in.p + c->in_off, c->in.n - c->in_off);
    c->in_off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e == HPE_PAUSED) break;
    if (e != HPE_OK) {
      int st = c->err_status ? c->err_status : 400;
      send_error(c, st,
                 st == 413   ? "request body too large"
                 : st == 431 ? "request head too large"
                             : http_errno_description(e));
      break;
    }
    if (n == 0) break;
  }
  if (c->in_off == c->in.n)
    c->in.n = c->in_off = 0;
  else if (c->in_off > 0) {
    memmove(c->in.p, c->in.p + c->in_off, c->in.n - c->in_off);
    c->in.n -= c->in_off;
    c->in_off = 0;
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)hint;
  conn *c = h->data;
  *b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  conn *c = st->data;
  if (n < 0) { /* EOF or an error: whatever is queued is lost with the peer */
    conn_close(c);
    return;
  }
  if (n == 0 || c->closing) return;
  fl_buf_put(&c->in, b->base, (size_t)n);
  parse_input(c);
}

static void read_start(conn *c) {
  if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

static void on_connection(uv_stream_t *l, int status) {
  http_server *s = l->data;
  if (status < 0 || s->stopping) return;
  conn *c = xcalloc(1, sizeof *c);
  c->s = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  s->handles++;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->st.open++;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  s->st.accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->p, HTTP_REQUEST);
  c->p.data = c;
  if (s->st.open > s->o.max_conns) {
    s->st.refused_full++;
    send_error(c, 503, "too many connections");
    return;
  }
  arm_timer(c);
  read_start(c);
}

static void server_handle_closed(uv_handle_t *h) {
  http_server *s = h->data;
  s->handles--;
  maybe_done(s);
}

static void close_stop_timer(http_server *s) {
  if (s->timer_closed) return;
  s->timer_closed = 1;
  uv_close((uv_handle_t *)&s->stop_timer, server_handle_closed);
}

int http_server_start(http_server **out, uv_loop_t *loop, const http_opts *o, http_handler h,
                      void *ctx, char *err, size_t errlen) {
  *out = NULL;
  struct sockaddr_storage sa;
  if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&sa) != 0 &&
      uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&sa) != 0) {
    snprintf(err, errlen, "'%s' is not an IP address", o->host);
    return FL_ERANGE;
  }
  http_server *s = xcalloc(1, sizeof *s);
  s->loop = loop;
  s->o = *o;
  s->h = h;
  s->ctx = ctx;
  uv_tcp_init(loop, &s->listener);
  uv_timer_init(loop, &s->stop_timer);
  s->listener.data = s->stop_timer.data = s;
  s->handles = 2;
  int rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", o->host, o->port, uv_strerror(rc));
    s->stopping = 1; /* s is freed by the close callbacks, when the caller's loop runs them */
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    close_stop_timer(s);
    return rc == UV_EADDRINUSE ? -EADDRINUSE : rc == UV_EACCES ? -EACCES : FL_ERANGE;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  *out = s;
  return 0;
}

int http_server_port(const http_server *s) { return s->port; }

void http_server_stats(const http_server *s, http_stats *st) { *st = s->st; }

static void on_stop_timeout(uv_timer_t *t) {
  http_server *s = t->data;
  while (s->conns) conn_close(s->conns); /* the last one closes the timer */
}

void http_server_stop(http_server *s, void (*done)(void *arg), void *arg) {
  s->stopping = 1;
  s->done = done;
  s->done_arg = arg;
  uv_close((uv_handle_t *)&s->listener, server_handle_closed);
  for (conn *c = s->conns, *nx; c; c = nx) {
    nx = c->next;
    if (c->writes == 0 && !c->deferred) { /* a request still arriving is dropped */
      conn_close(c);
    } else {
      c->close_after = 1;
      if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
      c->reading = 0;
    }
  }
  if (s->conns)
    uv_timer_start(&s->stop_timer, on_stop_timeout, 2000, 0);
  else
    close_stop_timer(s);
}
