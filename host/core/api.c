/* api.c: the table of host functions handed to every plugin (cloud_api), and cloud_shared.
 * SDK calls without a context argument reach the host through the one pointer bound here.
 *
 * Calls with a context find their object in the host-private invocation record, never in
 * ctx->host or ctx->socket (the plugin can write those). Calls the SDK marks "any thread"
 * copy their arguments and post them to the loop (xthread.c) when made from another thread;
 * every other call made off the loop is refused with CLOUD_ESTATE. */
#include "api.h"

#include "appdb.h"
#include "auth_jwt.h"
#include "defer.h"
#include "envfile.h"
#include "http.h"
#include "invocation.h"
#include "lifecycle.h"
#include "log.h"
#include "net_ops.h"
#include "rooms.h"
#include "store.h"
#include "stream.h"
#include "timers.h"
#include "xthread.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The host the table serves. Set once at start; the only way calls like cloud_send_to_user,
 * which carry no context, find the host (Redis keeps its `server` the same way). */
static struct host *bound;

void api_bind(struct host *h) {
  bound = h;
}

const char *api_strerror(int code) {
  switch (code) {
  case CLOUD_OK:
    return "ok";
  case CLOUD_EINVAL:
    return "invalid argument";
  case CLOUD_ECLOSED:
    return "connection closed";
  case CLOUD_ENOMEM:
    return "out of memory";
  case CLOUD_ENOUSER:
    return "no such user";
  case CLOUD_EFULL:
    return "queue full";
  case CLOUD_ESTATE:
    return "not allowed in this event";
  case CLOUD_ETOOBIG:
    return "message too big";
  case CLOUD_EIO:
    return "storage error";
  case CLOUD_EUNAVAIL:
    return "cluster unavailable";
  case CLOUD_ENOFUNC:
    return "no such function";
  case CLOUD_EFAILED:
    return "the function failed";
  default:
    return code > 0 ? "ok" : "unknown error";
  }
}

/* The connection behind a WebSocket event's context, or NULL. */
static struct conn *ctx_conn(FunctionContext *ctx) {
  return invocation_obj(bound, INV_WS, ctx);
}

/* The request behind an HTTP function's context, or NULL. */
static struct http_req *ctx_req(FunctionContext *ctx) {
  return invocation_obj(bound, INV_HTTP, ctx);
}

/* A send made on another thread, on its way to the loop. */
enum send_kind { SEND_SOCKET, SEND_USER, SEND_ROOM, SEND_ALL, SEND_DEFERRED };
struct send_item {
  struct xthread_item base;
  enum send_kind kind;
  cloud_socket s;    /* SEND_SOCKET: the target; SEND_ROOM, SEND_ALL: the one excluded */
  cloud_deferred *d; /* SEND_DEFERRED: the response the push's outcome completes */
  int is_binary;
  char name[STORE_ID_MAX + 1]; /* user id or room name */
  size_t len;
  char data[];
};

static void send_run(struct host *h, struct xthread_item *it) {
  struct send_item *m = (struct send_item *)it;
  if (h) {
    switch (m->kind) {
    case SEND_SOCKET:
      h->net->ws_send(h, m->s, m->data, m->len, m->is_binary);
      break;
    case SEND_USER:
      h->net->ws_send_to_user(h, m->name, m->data, m->len, m->is_binary);
      break;
    case SEND_ROOM:
      rooms_send(h, m->name, m->data, m->len, m->is_binary, m->s);
      break;
    case SEND_ALL:
      rooms_broadcast(h, m->data, m->len, m->is_binary, m->s);
      break;
    case SEND_DEFERRED:
      if (h->net->push_deferred(h, m->d, m->name, m->data, m->len, m->is_binary) == CLOUD_ENOMEM)
        defer_complete(h, m->d, 500, "application/json", "{\"error\":\"out of memory\"}", 24);
      break;
    }
  }
  free(m);
}

/* Copies a send made off the loop and posts it: 0 once queued (the outcome is the loop's). */
static int send_post_to(enum send_kind kind, cloud_socket s, cloud_deferred *d, const char *name,
                        const void *data, size_t len, int is_binary) {
  if ((!data && len) || (name && strlen(name) > STORE_ID_MAX))
    return CLOUD_EINVAL;
  if (len > bound->cfg.max_send_queue)
    return CLOUD_ETOOBIG;
  struct send_item *m = malloc(sizeof *m + len);
  if (!m)
    return CLOUD_ENOMEM;
  m->base.run = send_run;
  m->kind = kind;
  m->s = s;
  m->d = d;
  m->is_binary = is_binary;
  snprintf(m->name, sizeof m->name, "%s", name ? name : "");
  m->len = len;
  if (len)
    memcpy(m->data, data, len);
  int rc = xthread_post(bound, &m->base, sizeof *m + len);
  if (rc < 0)
    free(m);
  return rc;
}

static int send_post(enum send_kind kind, cloud_socket s, const char *name, const void *data,
                     size_t len, int is_binary) {
  return send_post_to(kind, s, NULL, name, data, len, is_binary);
}

static int a_socket_send(cloud_socket s, const void *data, size_t len, int is_binary) {
  if (!invocation_on_loop())
    return s.id ? send_post(SEND_SOCKET, s, NULL, data, len, is_binary) : CLOUD_ECLOSED;
  return bound->net->ws_send(bound, s, data, len, is_binary);
}

static int a_socket_close(cloud_socket s, int code, const char *reason) {
  if (!invocation_on_loop())
    return CLOUD_ESTATE;
  return bound->net->ws_close(bound, s, code, reason);
}

static int a_bind_user(FunctionContext *ctx, const char *user_id) {
  struct conn *c = ctx_conn(ctx);
  if (!c)
    return CLOUD_ESTATE;
  int rc = bound->net->ws_bind_user(bound, c, user_id);
  if (rc == 0)
    ctx->user_token = NULL; /* the token was the host-assigned user's */
  return rc;
}

static int a_send_to_user(const char *user_id, const void *data, size_t len, int is_binary) {
  if (!invocation_on_loop())
    return user_id_valid(user_id)
               ? send_post(SEND_USER, (cloud_socket){0}, user_id, data, len, is_binary)
               : CLOUD_EINVAL;
  return bound->net->ws_send_to_user(bound, user_id, data, len, is_binary);
}

/* A loop-only call made by a plugin's CLOUD_INIT or CLOUD_FINI, which run on the plugins'
 * loader and fini threads: handed to the loop, and the thread waits for it (the loop never
 * waits for those threads, so this cannot deadlock). Before the loop exists (start-up) and
 * after its queue closed (shutdown) the loop's thread is parked waiting for that very init or
 * fini: the call is made here. */
enum lc_op { LC_SHARED_GET, LC_SHARED_SET, LC_SHARED_DELETE, LC_ENV };

struct lc_call {
  struct xthread_item item; /* first: the queue hands back this address */
  enum lc_op op;
  const char *key;
  json_t *value;
  json_t *got;
  const char *text;
  int rc, done;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

static json_t *shared_get(const char *key);
static int shared_set(const char *key, json_t *value);
static int shared_delete(const char *key);

static void lc_do(struct lc_call *c) {
  switch (c->op) {
  case LC_SHARED_GET:
    c->got = shared_get(c->key);
    break;
  case LC_SHARED_SET:
    c->rc = shared_set(c->key, c->value);
    break;
  case LC_SHARED_DELETE:
    c->rc = shared_delete(c->key);
    break;
  case LC_ENV:
    c->text = envfile_get(bound->env, c->key);
    break;
  }
}

static void lc_run(struct host *h, struct xthread_item *item) {
  struct lc_call *c = (struct lc_call *)item;
  if (h)
    lc_do(c);
  pthread_mutex_lock(&c->mu);
  c->done = 1;
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

/* 1 when the call was made (its results in c), 0 when this thread may not make it. */
static int lc_call(struct lc_call *c) {
  if (!lifecycle_thread() || !bound)
    return 0;
  c->rc = CLOUD_ESTATE;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->item.run = lc_run;
  int rc = xthread_post(bound, &c->item, sizeof *c);
  if (rc == 0) {
    pthread_mutex_lock(&c->mu);
    while (!c->done)
      pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
  } else if (rc != CLOUD_EFULL) /* no queue: start-up or shutdown, the loop's thread waits */
    lc_do(c);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  return 1;
}

static json_t *a_shared_get(const char *key) {
  struct lc_call c = {.op = LC_SHARED_GET, .key = key};
  if (!invocation_on_loop())
    return lc_call(&c) ? c.got : NULL;
  return shared_get(key);
}

static json_t *shared_get(const char *key) {
  json_t *v = key ? json_object_get(bound->shared, key) : NULL;
  return v ? json_deep_copy(v) : NULL;
}

static int a_shared_set(const char *key, json_t *value) {
  struct lc_call c = {.op = LC_SHARED_SET, .key = key, .value = value};
  if (!invocation_on_loop())
    return lc_call(&c) ? c.rc : CLOUD_ESTATE;
  return shared_set(key, value);
}

static int shared_set(const char *key, json_t *value) {
  if (!key || !value)
    return CLOUD_EINVAL;
  /* A copy: the plugin keeps its object, and a later change to it does not leak in. */
  json_t *copy = json_deep_copy(value);
  if (!copy)
    return CLOUD_ENOMEM;
  return json_object_set_new(bound->shared, key, copy) ? CLOUD_EINVAL : 0;
}

static int a_shared_delete(const char *key) {
  struct lc_call c = {.op = LC_SHARED_DELETE, .key = key};
  if (!invocation_on_loop())
    return lc_call(&c) ? c.rc : CLOUD_ESTATE;
  return shared_delete(key);
}

static int shared_delete(const char *key) {
  return key && json_object_del(bound->shared, key) == 0 ? 0 : CLOUD_EINVAL;
}

static int a_response_json(FunctionContext *ctx, int status, json_t *json) {
  struct http_req *r = ctx_req(ctx);
  if (r && r->deferred)
    r = NULL; /* the deferred response is the one that counts */
  if (!r || !json) {
    json_decref(json);
    return r ? CLOUD_EINVAL : CLOUD_ESTATE;
  }
  char *s = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(json);
  if (!s)
    return CLOUD_ENOMEM;
  int rc = r->host->net->http_set_response(r, status, "application/json", s, strlen(s));
  free(s);
  return rc;
}

static int a_response_text(FunctionContext *ctx, int status, const char *text) {
  struct http_req *r = ctx_req(ctx);
  if (!r || r->deferred)
    return CLOUD_ESTATE;
  if (!text)
    return CLOUD_EINVAL;
  return r->host->net->http_set_response(r, status, "text/plain; charset=utf-8", text,
                                         strlen(text));
}

static int a_response_header(FunctionContext *ctx, const char *name, const char *value) {
  struct http_req *r = ctx_req(ctx);
  return r && !r->deferred ? r->host->net->http_add_header(r, name, value) : CLOUD_ESTATE;
}

static void a_logv(const FunctionContext *ctx, const char *fmt, va_list ap) {
  log_msgv(LOG_INFO, ctx ? ctx->function_name : NULL, ctx ? ctx->request_id : NULL, fmt, ap);
}

/* cloud_log_warn (2) and cloud_log_error (3); anything else logs at info. */
static void a_log_levelv(const FunctionContext *ctx, int level, const char *fmt, va_list ap) {
  enum log_level l = level == 3 ? LOG_ERROR : level == 2 ? LOG_WARN : LOG_INFO;
  log_msgv(l, ctx ? ctx->function_name : NULL, ctx ? ctx->request_id : NULL, fmt, ap);
}

static int a_room_join(cloud_socket s, const char *room) {
  return invocation_on_loop() ? rooms_join(bound, s, room) : CLOUD_ESTATE;
}

static int a_room_leave(cloud_socket s, const char *room) {
  return invocation_on_loop() ? rooms_leave(bound, s, room) : CLOUD_ESTATE;
}

static int a_room_send(const char *room, const void *data, size_t len, int is_binary,
                       cloud_socket except) {
  if (!invocation_on_loop())
    return room_name_valid(room) ? send_post(SEND_ROOM, except, room, data, len, is_binary)
                                 : CLOUD_EINVAL;
  return rooms_send(bound, room, data, len, is_binary, except);
}

static int a_broadcast(const void *data, size_t len, int is_binary, cloud_socket except) {
  if (!invocation_on_loop())
    return send_post(SEND_ALL, except, NULL, data, len, is_binary);
  return rooms_broadcast(bound, data, len, is_binary, except);
}

static json_t *a_room_members(const char *room) {
  return invocation_on_loop() ? rooms_members(bound, room) : NULL;
}

static json_t *a_socket_rooms(cloud_socket s) {
  return invocation_on_loop() ? rooms_of(bound, s) : NULL;
}

/* Timers belong to the function being called: the record names it, not the plugin. */
static int a_timer_start(const char *name, uint64_t first_ms, uint64_t every_ms) {
  struct invocation *inv = invocation_current(bound);
  return inv ? timers_start(bound, inv->function, name, first_ms, every_ms) : CLOUD_ESTATE;
}

static int a_timer_stop(const char *name) {
  struct invocation *inv = invocation_current(bound);
  return inv ? timers_stop(bound, inv->function, name) : CLOUD_ESTATE;
}

static cloud_deferred *a_defer(FunctionContext *ctx) {
  struct http_req *r = ctx_req(ctx);
  if (!r || r->no_defer)
    return NULL;
  cloud_deferred *d = defer_begin(bound, r, r->name);
  if (d)
    r->deferred = 1;
  return d;
}

static int a_deferred_respond(cloud_deferred *d, int status, const char *content_type,
                              const void *body, size_t len) {
  return defer_complete(bound, d, status, content_type ? content_type : "text/plain", body, len);
}

static int a_deferred_send_to_user(cloud_deferred *d, const char *user_id, const void *data,
                                   size_t len, int is_binary) {
  if (invocation_on_loop())
    return bound->net->push_deferred(bound, d, user_id, data, len, is_binary);
  /* Another thread: checked here what can be, the push itself runs on the loop. */
  if (!user_id || !defer_open(bound, d))
    return CLOUD_EINVAL;
  /* An id too long to be one is posted empty: the loop answers 404, as for any unknown id. */
  const char *user = strlen(user_id) <= STORE_ID_MAX ? user_id : "";
  return send_post_to(SEND_DEFERRED, (cloud_socket){0}, d, user, data, len, is_binary);
}

static int a_user_join(const char *user_id, const char *room) {
  return invocation_on_loop() ? rooms_user_join(bound, user_id, room) : CLOUD_ESTATE;
}

static int a_user_leave(const char *user_id, const char *room) {
  return invocation_on_loop() ? rooms_user_leave(bound, user_id, room) : CLOUD_ESTATE;
}

static json_t *a_rooms(void) {
  return invocation_on_loop() ? rooms_list(bound) : NULL;
}

static json_t *a_user_sockets(const char *user_id) {
  return invocation_on_loop() ? rooms_user_sockets(bound, user_id) : NULL;
}

static int a_room_keep(const char *room, int last_n) {
  return invocation_on_loop() ? rooms_keep(bound, room, last_n) : CLOUD_ESTATE;
}

static int a_room_history(cloud_socket s, const char *room, int n) {
  return invocation_on_loop() ? rooms_history(bound, s, room, n) : CLOUD_ESTATE;
}

static int a_user_create(const char *user_id) {
  if (!invocation_on_loop())
    return CLOUD_ESTATE;
  if (!user_id_valid(user_id))
    return CLOUD_EINVAL;
  int before = store_user_exists(bound->store, user_id);
  int rc = before < 0 ? before : store_user_ensure(bound->store, user_id);
  return rc < 0 ? CLOUD_EIO : !before;
}

static char *a_jwt_sign(json_t *claims, int ttl_s) {
  char *token = NULL;
  if (!invocation_on_loop())
    return NULL;
  return auth_jwt_sign(bound->jwt, claims, ttl_s, (int64_t)time(NULL), &token) == 0 ? token : NULL;
}

static json_t *a_jwt_verify(const char *token) {
  json_t *claims = NULL;
  const char *why;
  if (!invocation_on_loop() || !bound->jwt || !token)
    return NULL;
  return auth_jwt_verify(bound->jwt, token, (int64_t)time(NULL), &claims, &why) == 0 ? claims
                                                                                     : NULL;
}

/* cloud_invoke's nesting on the loop thread: a function that invokes itself stops here. */
static int invoke_depth;

int api_invoke_result(const char *body, size_t len, int status, json_t **result) {
  if (!result)
    return 0;
  *result = NULL;
  if (status == 204 || !len) {
    *result = json_null();
    return 0;
  }
  json_error_t e;
  json_t *v = json_loadb(body, len, JSON_DECODE_ANY, &e);
  if (!v)
    v = json_stringn(body, len);
  *result = v;
  return v ? 0 : CLOUD_EINVAL;
}

static int a_invoke(const char *function, const char *method, json_t *body, json_t **result) {
  if (result)
    *result = NULL;
  struct invocation *caller = invocation_current(bound);
  if (!caller || invoke_depth >= API_INVOKE_DEPTH)
    return CLOUD_ESTATE;
  if (!function || !*function || !strncmp(function, "__", 2) || strlen(function) > FN_NAME_MAX ||
      strchr(function, '/'))
    return CLOUD_ENOFUNC;
  if (method && (!*method || strlen(method) > 16))
    return CLOUD_EINVAL;
  /* A request of the host's own making: no connection behind it (wsi NULL), nothing can
   * wait (no_defer), its response is read back here. */
  struct http_req *r = calloc(1, sizeof *r);
  char *raw = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  char url[FN_NAME_MAX + 2];
  if (!r || (body && !raw)) {
    free(r);
    free(raw);
    return CLOUD_ENOMEM;
  }
  snprintf(url, sizeof url, "/%s", function);
  r->host = bound;
  r->no_defer = 1;
  r->content_length = -1;
  r->method = method ? method : "POST";
  snprintf(r->name, sizeof r->name, "%s", function);
  const FunctionContext *cc = caller->ctx;
  snprintf(r->request_id, sizeof r->request_id, "%s", cc && cc->request_id ? cc->request_id : "");
  r->query = json_object();
  r->headers = json_object();
  FunctionContext ctx = {.size = sizeof ctx};
  ctx.function_name = r->name;
  ctx.request_id = r->request_id;
  ctx.method = r->method;
  ctx.query = r->query;
  ctx.headers = r->headers;
  ctx.body = body;
  ctx.body_raw = raw;
  ctx.body_len = raw ? strlen(raw) : 0;
  ctx.url = url;
  ctx.user = cc ? cc->user : NULL;
  int found = 0;
  invoke_depth++;
  int rc = invoke(bound, INV_HTTP, r, function, &ctx, &found);
  invoke_depth--;
  int out;
  if (!found)
    out = CLOUD_ENOFUNC;
  else if (rc && !r->responded)
    out = CLOUD_EFAILED;
  else if (!r->responded)
    out = api_invoke_result(NULL, 0, 204, result);
  else
    out = api_invoke_result(r->resp ? (const char *)r->resp + LWS_PRE : "", r->resp_len, r->status,
                            result);
  free(raw);
  free(r->resp);
  json_decref(r->resp_headers);
  json_decref(r->query);
  json_decref(r->headers);
  free(r);
  return out;
}

struct sock_snap {
  cloud_socket *s;
  char **user;
  size_t n, cap;
};

static void snap_one(void *arg, const char *key, void *value) {
  (void)key;
  struct sock_snap *S = arg;
  struct conn *c = value;
  if (!c->established || c->gone || !c->user_id || S->n == S->cap)
    return;
  if (!(S->user[S->n] = strdup(c->user_id)))
    return;
  S->s[S->n++] = (cloud_socket){c->id};
}

int api_sockets_each_list(struct host *h, json_t **out) {
  struct sock_snap S = {0};
  S.cap = h->conns.count;
  *out = NULL;
  if (S.cap && (!(S.s = calloc(S.cap, sizeof *S.s)) || !(S.user = calloc(S.cap, sizeof *S.user)))) {
    free(S.s);
    return CLOUD_ENOMEM;
  }
  map_each(&h->conns, snap_one, &S);
  json_t *a = json_array();
  for (size_t i = 0; i < S.n; i++) {
    if (a)
      json_array_append_new(a, json_pack("[I s]", (json_int_t)S.s[i].id, S.user[i]));
    free(S.user[i]);
  }
  free(S.s);
  free(S.user);
  *out = a;
  return a ? 0 : CLOUD_ENOMEM;
}

int api_sockets_walk(json_t *list, int (*fn)(cloud_socket, const char *, void *), void *arg) {
  size_t i;
  json_t *pair;
  int calls = 0;
  json_array_foreach(list, i, pair) {
    cloud_socket s = {(uint64_t)json_integer_value(json_array_get(pair, 0))};
    calls++;
    if (fn(s, json_string_value(json_array_get(pair, 1)), arg))
      break;
  }
  return calls;
}

static int a_sockets_each(int (*fn)(cloud_socket, const char *, void *), void *arg) {
  if (!invocation_on_loop())
    return CLOUD_ESTATE;
  if (!fn)
    return CLOUD_EINVAL;
  json_t *list;
  int rc = api_sockets_each_list(bound, &list);
  if (rc < 0)
    return rc;
  rc = api_sockets_walk(list, fn, arg);
  json_decref(list);
  return rc;
}

struct sqlite3 *api_db(void) {
  return bound ? appdb_handle(bound->cfg.app_db) : NULL;
}

static int a_stream_start(FunctionContext *ctx, int status, const char *content_type) {
  struct http_req *r = ctx_req(ctx);
  uint64_t id;
  if (!r || r->deferred)
    return CLOUD_ESTATE;
  return stream_start(bound, r, ctx, status,
                      content_type ? content_type : "application/octet-stream", 0, &id);
}

static int a_stream_write(FunctionContext *ctx, const void *data, size_t len) {
  uint64_t id = stream_find(bound, ctx);
  return id ? stream_write(bound, id, data, len) : CLOUD_ECLOSED;
}

static int a_stream_end(FunctionContext *ctx) {
  uint64_t id = stream_find(bound, ctx);
  return id ? stream_end(bound, id) : CLOUD_ECLOSED;
}

static int a_sse_send(FunctionContext *ctx, const char *event, const char *data) {
  uint64_t id = stream_find(bound, ctx);
  if (!id) {
    struct http_req *r = ctx_req(ctx);
    if (!r)
      return CLOUD_ECLOSED;
    if (r->deferred)
      return CLOUD_ESTATE;
    int rc = stream_start(bound, r, ctx, 200, "text/event-stream", 1, &id);
    if (rc < 0)
      return rc;
  }
  return stream_sse(bound, id, event, data);
}

/* From the host's own object, not ctx->headers: with CLOUD_OPT_LAZY_HEADERS the plugin's
 * ctx->headers is NULL and the object holds only what was looked up so far. */
static const char *a_request_header(FunctionContext *ctx, const char *name) {
  if (!ctx || !name)
    return NULL;
  struct conn *c = ctx_conn(ctx);
  struct http_req *r = ctx_req(ctx);
  if (!c && !r)
    return NULL; /* a timer, or a context that is not the call's */
  if (c && (!c->in_connect_event || !c->upgrade))
    return NULL; /* lws keeps the headers only until the connection is established */
  if (r && !r->wsi)
    return NULL; /* cloud_invoke's request: no headers */
  if (r)
    return bound->net->http_header_lookup(r->wsi, r->headers, name, r->headers_lazy);
  return bound->net->ws_upgrade_header(c, name);
}

static const char *a_env(const char *name) {
  struct lc_call c = {.op = LC_ENV, .key = name};
  if (!invocation_on_loop() && !lc_call(&c))
    return NULL;
  if (!invocation_on_loop())
    return c.text;
  return envfile_get(bound->env, name);
}

static int a_reject(FunctionContext *ctx, int status, const char *reason) {
  struct conn *c = ctx_conn(ctx);
  return c ? bound->net->ws_reject(c, status, reason) : CLOUD_ESTATE;
}

static int a_accept_protocol(FunctionContext *ctx, const char *name) {
  struct conn *c = ctx_conn(ctx);
  return c ? bound->net->ws_accept_protocol(c, name) : CLOUD_ESTATE;
}

static cloud_api table = {
    .abi_version = CLOUD_ABI_VERSION,
    .size = sizeof(cloud_api),
    .socket_send = a_socket_send,
    .socket_close = a_socket_close,
    .bind_user = a_bind_user,
    .send_to_user = a_send_to_user,
    .shared_get = a_shared_get,
    .shared_set = a_shared_set,
    .shared_delete = a_shared_delete,
    .response_json = a_response_json,
    .response_text = a_response_text,
    .response_header = a_response_header,
    .logv = a_logv,
    .strerror = api_strerror,
    .request_header = a_request_header,
    .room_join = a_room_join,
    .room_leave = a_room_leave,
    .room_send = a_room_send,
    .broadcast = a_broadcast,
    .room_members = a_room_members,
    .socket_rooms = a_socket_rooms,
    .timer_start = a_timer_start,
    .timer_stop = a_timer_stop,
    .log_levelv = a_log_levelv,
    .defer = a_defer,
    .deferred_respond = a_deferred_respond,
    .env = a_env,
    .reject = a_reject,
    .accept_protocol = a_accept_protocol,
    .deferred_send_to_user = a_deferred_send_to_user,
    .user_join = a_user_join,
    .user_leave = a_user_leave,
    .rooms = a_rooms,
    .user_sockets = a_user_sockets,
    .room_keep = a_room_keep,
    .room_history = a_room_history,
    .user_create = a_user_create,
    .jwt_sign = a_jwt_sign,
    .jwt_verify = a_jwt_verify,
    .invoke = a_invoke,
    .sockets_each = a_sockets_each,
    .db = api_db,
    .stream_start = a_stream_start,
    .stream_write = a_stream_write,
    .stream_end = a_stream_end,
    .sse_send = a_sse_send,
};

const cloud_api *api_table(void) {
  return &table;
}

void api_table_replace(const cloud_api *with) {
  /* The plugins keep the table's address: a worker process changes what is behind it. */
  table = *with;
}
