/* daemon/api/api.h: flamed's HTTP API and admin API (handlers for daemon/http/http.h), the
 * Prometheus metrics, and the online (prequential) evaluation of the serving model on incoming
 * events.
 *
 * Public routes (JSON unless said otherwise; errors are {"error": "..."} with a 4xx):
 * - GET /v1/recommend?user=U&k=10[&exclude_seen=true]: top-k for a stored user
 * - POST /v1/recommend {"history":["item",...],"k":10,"exclude_seen":false}
 * - GET /v1/users/U/history: the stored sequence
 * - GET /v1/model: version, age, holdout, anchor, rounds
 * - GET /healthz: the loop answers
 * - GET /readyz: a model serves and partitions are assigned
 * - GET /metrics: Prometheus text format 0.0.4
 * - GET /: the status page, HTML for people (daemon/api/internal.h)
 *
 * Admin routes (the admin listener only; "Authorization: Bearer <token>", else 401):
 * - POST /v1/admin/rollback | train-now | reanchor | pause-training | resume-training
 *
 * Every GET route answers HEAD too (the server drops the body); a route asked with a method
 * it does not take answers 405 with an Allow header. Ids from clients (user, history items)
 * must pass stream_id_check (stream/stream.h), and JSON bodies are read by stream_json_parse:
 * the API takes exactly the ids and the JSON that ingest takes.
 *
 * Everything runs on the loop thread, except the scoring of recommendations for catalogues of
 * at least api.offload_items items: that runs on libuv's thread pool (api.workers threads),
 * and the answer is sent from the loop when it is done. */
#ifndef FL_DAEMON_API_H
#define FL_DAEMON_API_H
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "daemon/http/http.h"
#include "daemon/serve/serve.h"
#include "daemon/train/train.h"
#include "state/state.h"
#include "stream/stream.h"

typedef struct api api;

/* The parts the API reads. consumer, trainer and the servers may be NULL (tests); they are set
 * once created, before the loop runs. */
typedef struct {
  uv_loop_t *loop; /* for the scoring workers (NULL: everything on the calling thread) */
  const config *cfg;
  state_db *db;
  serve_slot *slot;
  trainer *tr;
  stream_consumer *consumer;
  http_server *server, *admin;
} api_deps;

/* Reads the admin token file (if api.admin_token_file is set). 0, or a negative code with err
 * filled: the file is unreadable, not a regular file, owned by another user than us or root,
 * writable by group or others, or does not hold exactly one token of 16 to 511 visible ASCII
 * bytes (a final "\n" or "\r\n" allowed; a NUL, control byte, space or second line refuses
 * it). A token file group or others can read is loaded with a warning. */
int api_new(api **out, const api_deps *deps, char *err, size_t errlen);
void api_free(api *a);
/* Later-created parts (the servers exist only after api_new: they take the api as context). */
api_deps *api_deps_of(api *a);

/* The two handlers (ctx = the api). */
void api_handle(void *ctx, const http_req *rq, http_resp *rs);
void api_admin_handle(void *ctx, const http_req *rq, http_resp *rs);

/* Events just made durable (the daemon's commit hook passes them on, on the loop): counted for
 * the status page's ingest chart, and a rate-limited sample of them handed to the online
 * evaluation against the serving model. */
void api_on_stored(api *a, const stream_stored *ev, size_t n);

#endif
