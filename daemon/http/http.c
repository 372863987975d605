/* daemon/http/http.c: see http.h. One struct conn per TCP connection: the bytes read but not yet
 * parsed (`in`), the request being assembled, and the count of responses written but not yet
 * sent. Parsing pauses (http_parser_pause) when that count reaches max_pipeline and resumes as
 * writes complete, so a client that pipelines without reading cannot make the daemon buffer
 * without bound.
 *
 * Strictness. Debian's http-parser is built without HTTP_PARSER_STRICT (a compile-time flag),
 * and is lenient where RFC 9112 is not: it takes a space as part of a header name, joins
 * folded header lines, takes any version number and any transfer coding before a final
 * "chunked". The callbacks close those gaps (field_ok, folded, te_add, on_headers_done); no
 * byte is parsed here a second time, except looking back from a header value to the line
 * break a fold leaves before it.
 *
 * Clocks. Each connection has one timer, armed for its next absolute deadline (arm_timer):
 * head_due (header_ms) while a request head is awaited, req_due (request_ms) while a request
 * arrives, else idle_ms. Absolute deadlines: a write completing does not extend a slow head.
 *
 * Graceful close. Closing a socket whose receive queue holds unread bytes makes the kernel send
 * a reset, and a client that gets the reset while still sending (or before reading) loses the
 * response: every response that ends a connection is followed by linger(): shutdown (a FIN
 * after the response), then reading and dropping the client's bytes until its own FIN, an
 * error, or LINGER_MS. */
#include "daemon/http/http.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

_Static_assert((int)HTTP_M_DELETE == (int)HTTP_DELETE && (int)HTTP_M_GET == (int)HTTP_GET &&
                   (int)HTTP_M_HEAD == (int)HTTP_HEAD && (int)HTTP_M_POST == (int)HTTP_POST &&
                   (int)HTTP_M_PUT == (int)HTTP_PUT,
               "http_req_method follows http-parser's numbers");

#define READ_CHUNK 16384
#define LINGER_MS 2000  /* longest a graceful close waits for the client's FIN */
#define RETRY_AFTER_S 1 /* the Retry-After of a refusal over a connection cap */

typedef struct http_conn conn; /* http.h's http_deferred is a connection with an answer due */

struct http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t stop_timer;
  http_opts o;
  http_handler h;
  void *ctx;
  conn *conns;   /* doubly linked list of open connections */
  size_t active; /* connections counted against the caps (the refused ones are not) */
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
  uv_shutdown_t shut;
  http_parser p;
  fl_buf in; /* bytes read, parsed up to in_off */
  size_t in_off;
  const char *exec_at; /* the start of the bytes handed to http_parser_execute */
  char carry;          /* the last byte before exec_at that is not a space or tab */
  fl_buf url, field, value, body;
  fl_buf auth;    /* the Authorization header's value */
  int auth_seen;  /* an Authorization header arrived (a second one is refused) */
  int value_last; /* the last header callback was a value: a new field ends that header */
  int te_codings, te_chunked, te_last_chunked; /* Transfer-Encoding: codings, chunked ones, last */
  size_t head;                                 /* bytes of request line and headers so far */
  int err_status;      /* set by a callback that rejects the request (413, 431, 400, 501...) */
  const char *err_msg; /* and what to tell the client (static) */
  int in_request;      /* a message has begun and not completed */
  int head_only;       /* the request being answered is a HEAD: the answer goes without body */
  uint64_t head_due;   /* loop ms by which the awaited request head must be complete; 0: none */
  uint64_t req_due;    /* loop ms by which the request begun must be complete */
  uint8_t peer[16];    /* the peer's address, IPv4 as IPv4-mapped IPv6 */
  int counted;         /* counted in s->active (not a refusal) */
  size_t writes;       /* responses written, not yet sent */
  int paused, reading, closing, close_after;
  int lingering; /* shut down after the last response; input is dropped until the client's FIN */
  int deferred;  /* a handler deferred its answer (http_defer): nothing more is parsed */
  int handles;   /* tcp + timer, until both close callbacks ran */
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
  case 501:
    return "Not Implemented";
  case 503:
    return "Service Unavailable";
  case 505:
    return "HTTP Version Not Supported";
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
  if (c->counted) s->active--;
  uv_close((uv_handle_t *)&c->tcp, conn_freed);
  uv_close((uv_handle_t *)&c->timer, conn_freed);
  if (s->stopping && !s->conns) close_stop_timer(s);
}

static void on_timer(uv_timer_t *t) {
  conn *c = t->data;
  if (c->lingering) {
    conn_close(c);
    return;
  }
  if (c->head_due && uv_now(c->s->loop) >= c->head_due)
    c->s->st.closed_header++;
  else if (c->in_request)
    c->s->st.closed_timeout++;
  else
    c->s->st.closed_idle++;
  conn_close(c);
}

/* Arms the timer for the connection's next deadline (see the note at the top). */
static void arm_timer(conn *c) {
  if (c->closing || c->deferred || c->lingering) return; /* a deferred answer is ours to give */
  uint64_t now = uv_now(c->s->loop), due;
  if (c->in_request)
    due = c->head_due && c->head_due < c->req_due ? c->head_due : c->req_due;
  else if (c->head_due) /* the first request, not begun yet */
    due = c->head_due;
  else
    due = now + c->s->o.idle_ms;
  uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

static void read_start(conn *c);

static void on_shutdown(uv_shutdown_t *r, int status) {
  conn *c = r->data; /* still alive: a close cancels the shutdown before its close callbacks */
  if (status < 0 && !c->closing) conn_close(c);
}

/* The graceful close after a connection's last response was sent (see the note at the top). */
static void linger(conn *c) {
  c->lingering = 1;
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
  read_start(c);
}

static void parse_input(conn *c);

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
    if (c->writes == 0) linger(c);
    return;
  }
  arm_timer(c);
  resume_input(c);
}

/* Queues one response. close: the connection closes once it is sent. allow (NULL for none): an
 * Allow header's value. retry: a Retry-After header (s), 0 for none. Without body (HEAD), the
 * Content-Length is still blen. */
static void send_resp(conn *c, int status, const char *ctype, const char *allow, int retry,
                      const char *body, size_t blen, int close) {
  char head[512], extra[160] = "";
  int keep10 = !close && c->p.http_major == 1 && c->p.http_minor == 0;
  int en = 0;
  if (allow) en += snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
  if (retry && en < (int)sizeof extra)
    snprintf(extra + en, sizeof extra - (size_t)en, "Retry-After: %d\r\n", retry);
  int hn = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                    http_status_text(status), ctype, blen, extra,
                    close    ? "Connection: close\r\n"
                    : keep10 ? "Connection: keep-alive\r\n"
                             : "");
  if (hn >= (int)sizeof head) hn = (int)sizeof head - 1; /* cannot happen: static strings */
  if (c->head_only) blen = 0;
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

/* An answer of the server's own, which closes the connection. msg: static text that needs no
 * JSON escaping. */
static void send_error(conn *c, int status, const char *msg, int retry) {
  char body[200];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
  c->s->st.bad_requests++;
  c->head_only = 0; /* an error's body is sent even to a HEAD: the connection ends with it */
  send_resp(c, status, "application/json", NULL, retry, body, (size_t)n, 1);
}

/* ---- http_parser callbacks (c = p->data) ---- */

/* Refuses the request being parsed: status and a plain message (static) for the client. */
static int reject(conn *c, int status, const char *msg) {
  c->err_status = status;
  c->err_msg = msg;
  return -1;
}

static int head_add(conn *c, size_t n) {
  c->head += n;
  return c->head > c->s->o.max_head ? reject(c, 431, "request head too large") : 0;
}

static int on_begin(http_parser *p) {
  conn *c = p->data;
  uint64_t now = uv_now(c->s->loop);
  c->in_request = 1;
  c->head = 0;
  c->url.n = c->field.n = c->value.n = c->auth.n = c->body.n = 0;
  c->auth_seen = c->value_last = 0;
  c->te_codings = c->te_chunked = c->te_last_chunked = 0;
  c->req_due = now + c->s->o.request_ms;
  /* a first request's head is due header_ms after the accept (head_due is set), later ones'
   * header_ms after their first byte */
  if (!c->head_due && c->s->o.header_ms) c->head_due = now + c->s->o.header_ms;
  arm_timer(c);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (head_add(c, n)) return -1;
  fl_buf_put(&c->url, at, n);
  return 0;
}

static int is_ows(char ch) { return ch == ' ' || ch == '\t'; }

/* Adds the codings of one Transfer-Encoding value (a comma-separated list) to the request's. */
static void te_add(conn *c, const char *v, size_t n) {
  for (size_t i = 0; i <= n;) {
    size_t j = i;
    while (j < n && v[j] != ',') j++;
    size_t a = i, b = j; /* the element, without its optional whitespace */
    while (a < b && is_ows(v[a])) a++;
    while (b > a && is_ows(v[b - 1])) b--;
    if (b > a) { /* empty list elements are allowed, and ignored (RFC 9110 5.6.1) */
      c->te_codings++;
      c->te_last_chunked = b - a == 7 && !strncasecmp(v + a, "chunked", 7);
      c->te_chunked += c->te_last_chunked;
    }
    i = j + 1;
  }
}

/* One whole header (field and value) has arrived. */
static int header_done(conn *c) {
  const char *v = c->value.p ? c->value.p : "";
  if (c->field.n == 13 && !strncasecmp(c->field.p, "authorization", 13)) {
    if (c->auth_seen++) return reject(c, 400, "more than one Authorization header");
    c->auth.n = 0;
    fl_buf_put(&c->auth, v, c->value.n);
  } else if (c->field.n == 17 && !strncasecmp(c->field.p, "transfer-encoding", 17)) {
    int before = c->te_codings;
    te_add(c, v, c->value.n);
    if (c->te_codings == before) return reject(c, 400, "empty Transfer-Encoding");
  }
  c->field.n = c->value.n = 0;
  return 0;
}

/* 1 when s[0..n) holds only tchar (RFC 9110 5.6.2), what a header name is made of. http-parser
 * checks that itself, but for the space, which it takes as part of the name. */
static int field_ok(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
          (ch && strchr("!#$%&'*+-.^_`|~", ch))))
      return 0;
  }
  return 1;
}

/* 1 when the header value piece at `at` continues a folded line: the last byte before it that
 * is not a space or tab is a line break, where an unfolded value has its ':'. */
static int folded(const conn *c, const char *at) {
  const char *q = at;
  while (q > c->exec_at && is_ows(q[-1])) q--;
  char before = q > c->exec_at ? q[-1] : c->carry;
  return before == '\n' || before == '\r';
}

static int on_field(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (head_add(c, n)) return -1;
  if (!field_ok(at, n)) return reject(c, 400, "invalid character in a header name");
  if (c->value_last && header_done(c)) return -1;
  c->value_last = 0;
  fl_buf_put(&c->field, at, n);
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (head_add(c, n)) return -1;
  /* an empty value is reported at the next line's first byte: nothing to look back from */
  if (n > 0 && folded(c, at)) return reject(c, 400, "obsolete line folding in a header");
  c->value_last = 1;
  fl_buf_put(&c->value, at, n);
  return 0;
}

static int on_headers_done(http_parser *p) {
  conn *c = p->data;
  if (c->value_last && header_done(c)) return -1;
  c->value_last = 0;
  c->head_due = 0; /* the head is in: from now on only request_ms applies */
  arm_timer(c);
  if (p->http_major != 1 || p->http_minor > 1)
    return reject(c, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
  if (c->te_codings && (!c->te_last_chunked || c->te_chunked > 1))
    return reject(c, 400, "the final Transfer-Encoding must be chunked, and only once");
  if (c->te_codings > 1) return reject(c, 501, "no Transfer-Encoding but chunked is supported");
  if (p->upgrade || p->method == HTTP_CONNECT)
    return reject(c, 400, "upgrades and CONNECT are not supported");
  if (p->content_length != ULLONG_MAX && p->content_length > c->s->o.max_body)
    return reject(c, 413, "request body too large");
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  conn *c = p->data;
  if (c->body.n + n > c->s->o.max_body) return reject(c, 413, "request body too large");
  fl_buf_put(&c->body, at, n);
  return 0;
}

/* Sends the answer to the request just parsed, then pauses reading if too many answers are
 * unsent (or the connection is closing). */
static void respond(conn *c, http_resp *rs) {
  http_server *s = c->s;
  int close = !http_should_keep_alive(&c->p) || s->stopping;
  send_resp(c, rs->status, rs->content_type ? rs->content_type : "application/json",
            rs->status == 405 ? rs->allow : NULL, 0, rs->body.p ? rs->body.p : "", rs->body.n,
            close);
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
  c->head_only = p->method == HTTP_HEAD; /* kept until the answer is sent (a deferral too) */
  http_req rq = {.method = (http_req_method)p->method,
                 .path = c->url.p,
                 .query = q ? q : "",
                 .auth = c->auth.n ? c->auth.p : NULL,
                 .body = c->body.p,
                 .body_len = c->body.n,
                 .conn = c};
  http_resp rs = {.status = 500, .content_type = NULL, .allow = NULL, .body = {0}};
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

/* What to tell a client whose request http-parser refused (its own descriptions name its
 * internals). *status: 400, or 431 for its own head limit. */
static const char *parse_error_text(enum http_errno e, int *status) {
  *status = 400;
  switch (e) {
  case HPE_HEADER_OVERFLOW:
    *status = 431;
    return "request head too large";
  case HPE_INVALID_VERSION:
    return "malformed HTTP version";
  case HPE_INVALID_METHOD:
    return "unknown method";
  case HPE_INVALID_URL:
  case HPE_INVALID_HOST:
  case HPE_INVALID_PORT:
  case HPE_INVALID_PATH:
  case HPE_INVALID_QUERY_STRING:
  case HPE_INVALID_FRAGMENT:
    return "malformed request target";
  case HPE_INVALID_HEADER_TOKEN:
    return "invalid character in a header";
  case HPE_INVALID_CONTENT_LENGTH:
    return "malformed Content-Length";
  case HPE_UNEXPECTED_CONTENT_LENGTH:
    return "Content-Length repeated or together with Transfer-Encoding";
  case HPE_INVALID_TRANSFER_ENCODING:
    return "the final Transfer-Encoding must be chunked, and only once";
  case HPE_INVALID_CHUNK_SIZE:
    return "malformed chunk";
  default:
    return "malformed request";
  }
}

/* The last byte of p[0..n) that is not a space or tab, else old. */
static char last_solid(const char *p, size_t n, char old) {
  while (n > 0 && is_ows(p[n - 1])) n--;
  return n ? p[n - 1] : old;
}

static void parse_input(conn *c) {
  while (c->in_off < c->in.n && !c->paused && !c->closing && !c->close_after) {
    c->exec_at = c->in.p + c->in_off;
    size_t n = http_parser_execute(&c->p, &settings, c->exec_at, c->in.n - c->in_off);
    c->carry = last_solid(c->exec_at, n, c->carry);
    c->in_off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e == HPE_PAUSED) break;
    if (e != HPE_OK) {
      int st;
      const char *msg = parse_error_text(e, &st);
      if (c->err_status) { /* a callback refused: it said why */
        st = c->err_status;
        msg = c->err_msg;
      }
      send_error(c, st, msg, 0);
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
  if (n == 0 || c->closing || c->lingering) return; /* lingering: the bytes are dropped */
  fl_buf_put(&c->in, b->base, (size_t)n);
  parse_input(c);
}

static void read_start(conn *c) {
  if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

/* The peer's address into c->peer (all zeros if unknown: such peers count as one). */
static void peer_of(conn *c) {
  struct sockaddr_storage sa;
  int len = sizeof sa;
  memset(c->peer, 0, sizeof c->peer);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) != 0) return;
  if (sa.ss_family == AF_INET) {
    c->peer[10] = c->peer[11] = 0xff;
    memcpy(c->peer + 12, &((struct sockaddr_in *)&sa)->sin_addr, 4);
  } else if (sa.ss_family == AF_INET6) {
    memcpy(c->peer, &((struct sockaddr_in6 *)&sa)->sin6_addr, 16);
  }
}

/* Connections other than c from c's peer counted against the caps (a linear scan: at most
 * max_conns, on accept only). */
static size_t peer_conns(const http_server *s, const conn *c) {
  size_t n = 0;
  for (const conn *o = s->conns; o; o = o->next)
    n += o != c && o->counted && !memcmp(o->peer, c->peer, sizeof c->peer);
  return n;
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
  peer_of(c);
  if (s->active >= s->o.max_conns) {
    s->st.refused_full++;
    send_error(c, 503, "too many connections", RETRY_AFTER_S);
    return;
  }
  if (s->o.max_conns_per_peer && peer_conns(s, c) >= s->o.max_conns_per_peer) {
    s->st.refused_peer++;
    send_error(c, 503, "too many connections from this address", RETRY_AFTER_S);
    return;
  }
  c->counted = 1;
  s->active++;
  if (s->o.header_ms) c->head_due = uv_now(s->loop) + s->o.header_ms;
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

/* ---- query strings ---- */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

long http_pct_decode(const char *s, size_t n, char *out, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (k == cap) return -1;
    if (s[i] == '%') {
      if (i + 2 >= n) return -1;
      int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
      if (h < 0 || l < 0) return -1;
      out[k++] = (char)(h * 16 + l);
      i += 2;
    } else {
      out[k++] = s[i] == '+' ? ' ' : s[i];
    }
  }
  return (long)k;
}

int http_query_get(const char *q, const char *key, char *out, size_t cap, size_t *len) {
  size_t kl = strlen(key);
  for (const char *p = q; *p;) {
    const char *amp = strchr(p, '&');
    size_t n = amp ? (size_t)(amp - p) : strlen(p);
    if (n > kl && !strncmp(p, key, kl) && p[kl] == '=') {
      long m = http_pct_decode(p + kl + 1, n - kl - 1, out, cap);
      if (m < 0) return -1;
      *len = (size_t)m;
      return 1;
    }
    p += n + (amp ? 1 : 0);
  }
  return 0;
}
