/* worker_proc.c: --isolation process, a worker's side: runs the events the serving process
 * sends, with an API table whose calls are messages back to it (worker.c applies them). */
#include "api.h"
#include "crash.h"
#include "http_parse.h"
#include "invocation.h"
#include "log.h"
#include "metrics.h"
#include "plugins.h"
#include "sse.h"
#include "wire.h"
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <unistd.h>

#define WFD 3 /* the socket, moved here so every other inherited descriptor can go */

/* The event being run. Only the worker's main thread runs events. */
struct current {
  uint64_t seq;
  enum inv_kind kind;
  FunctionContext *ctx;
  uint64_t defer; /* HTTP: the serving process's deferred handle */
  int deferred, responded, status;
  char ctype[128];
  char *body;
  size_t body_len;
  json_t *rooms;   /* close event: the socket's rooms as they were */
  json_t *strings; /* strings handed to the plugin, valid until the event ends */
  json_t *headers; /* response headers set: [[name, value], ...] */
  int nested;      /* a cloud_invoke call run inside the event: no headers, no defer */
};

/* Queued events that arrived while the main thread waited for a reply. */
struct queued {
  struct queued *next;
  size_t len;
  char data[];
};

static struct {
  pthread_t main;
  pthread_mutex_t wmu;
  struct current cur;
  int running;
  int replay; /* running init/fini again in this worker: cloud_shared writes were made once */
  char *rbuf;
  size_t rcap;
  struct queued *head, *tail;
} W = {.wmu = PTHREAD_MUTEX_INITIALIZER};

/* The plugins this worker runs (cloud_invoke calls into them). */
static struct plugins *W_host;
/* --max-send-queue: what a stream may have waiting. */
static size_t W_cfg_max_send_queue;

static void stream_progress(const char *payload, size_t len);

static int on_main(void) {
  return pthread_equal(pthread_self(), W.main);
}

static int send_frame(struct wbuf *b) {
  if (wbuf_end(b) < 0)
    return CLOUD_ENOMEM;
  pthread_mutex_lock(&W.wmu);
  int rc = wire_write_all(WFD, b->p, b->len);
  pthread_mutex_unlock(&W.wmu);
  if (rc < 0)
    _exit(0); /* the serving process is gone */
  return 0;
}

/* Reads frames until a reply comes; events that arrive first wait in the queue. */
static int64_t wait_reply(const char **text) {
  for (;;) {
    size_t len;
    if (wire_read_frame(WFD, &W.rbuf, &W.rcap, &len) < 0)
      _exit(0);
    if ((unsigned char)W.rbuf[0] == W_REPLY) {
      struct wread rd;
      wread_init(&rd, W.rbuf + 1, len - 1);
      int64_t rc = (int64_t)wread_u64(&rd);
      const char *t = wread_str(&rd);
      if (text)
        *text = t;
      return rc;
    }
    if ((unsigned char)W.rbuf[0] == W_STREAM) {
      stream_progress(W.rbuf + 1, len - 1);
      continue;
    }
    struct queued *q = malloc(sizeof *q + len);
    if (!q)
      _exit(3);
    q->next = NULL;
    q->len = len;
    memcpy(q->data, W.rbuf, len);
    if (W.tail)
      W.tail->next = q;
    else
      W.head = q;
    W.tail = q;
  }
}

/* Starts a call frame: op, whether a reply is wanted, the event it belongs to. */
static void call_begin(struct wbuf *b, enum worker_op op, int want) {
  wbuf_begin(b, W_CALL);
  wbuf_u64(b, op);
  wbuf_u64(b, (uint64_t)want);
  wbuf_u64(b, on_main() && W.running ? W.cur.seq : 0);
}

/* Sends b; on the main thread waits for the answer. Off it (a plugin's own thread) the call
 * is posted and 0 returned, as the SDK says for calls from other threads. */
static int64_t call_end(struct wbuf *b, const char **text) {
  if (text)
    *text = NULL;
  int rc = send_frame(b);
  wbuf_free(b);
  if (rc < 0)
    return rc;
  return on_main() ? wait_reply(text) : 0;
}

/* A reply string kept until the event ends. */
static const char *keep(const char *s) {
  if (!s)
    return NULL;
  if (!W.cur.strings)
    W.cur.strings = json_array();
  json_t *j = json_string(s);
  if (!j)
    return NULL;
  json_array_append_new(W.cur.strings, j);
  return json_string_value(j);
}

static json_t *parse(const char *s) {
  return s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;
}

static int p_socket_send(cloud_socket s, const void *data, size_t len, int is_binary) {
  if (!s.id)
    return CLOUD_ECLOSED;
  if (!data && len)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_SEND, on_main());
  wbuf_u64(&b, s.id);
  wbuf_bytes(&b, data ? data : "", len);
  wbuf_u64(&b, (uint64_t)is_binary);
  return (int)call_end(&b, NULL);
}

static int p_socket_close(cloud_socket s, int code, const char *reason) {
  if (!on_main())
    return CLOUD_ESTATE;
  struct wbuf b = {0};
  call_begin(&b, OP_CLOSE, 1);
  wbuf_u64(&b, s.id);
  wbuf_u64(&b, (uint64_t)(int64_t)code);
  wbuf_str(&b, reason);
  return (int)call_end(&b, NULL);
}

static int p_bind_user(FunctionContext *ctx, const char *user_id) {
  if (!on_main() || !W.running || ctx != W.cur.ctx || W.cur.kind != INV_WS)
    return CLOUD_ESTATE;
  if (!user_id)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_BIND, 1);
  wbuf_str(&b, user_id);
  int rc = (int)call_end(&b, NULL);
  if (rc == 0) {
    ctx->user_token = NULL;       /* the token was the host-assigned user's */
    ctx->user_id = keep(user_id); /* in-process it is the connection's own, now changed */
  }
  return rc;
}

static int p_send_to_user(const char *user_id, const void *data, size_t len, int is_binary) {
  if (!user_id || (!data && len))
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_SEND_USER, on_main());
  wbuf_str(&b, user_id);
  wbuf_bytes(&b, data ? data : "", len);
  wbuf_u64(&b, (uint64_t)is_binary);
  return (int)call_end(&b, NULL);
}

static json_t *p_shared_get(const char *key) {
  if (!on_main() || !key)
    return NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_SHARED_GET, 1);
  wbuf_str(&b, key);
  const char *t;
  call_end(&b, &t);
  return parse(t);
}

static int p_shared_set(const char *key, json_t *value) {
  if (!on_main())
    return CLOUD_ESTATE;
  if (W.replay)
    return key && value ? 0 : CLOUD_EINVAL;
  if (!key || !value)
    return CLOUD_EINVAL;
  char *s = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!s)
    return CLOUD_ENOMEM;
  struct wbuf b = {0};
  call_begin(&b, OP_SHARED_SET, 1);
  wbuf_str(&b, key);
  wbuf_str(&b, s);
  free(s);
  return (int)call_end(&b, NULL);
}

static int p_shared_delete(const char *key) {
  if (!on_main())
    return CLOUD_ESTATE;
  if (W.replay)
    return key ? 0 : CLOUD_EINVAL;
  if (!key)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_SHARED_DEL, 1);
  wbuf_str(&b, key);
  return (int)call_end(&b, NULL);
}

/* The response of the HTTP event being run is kept here and sent with its end. */
static int http_ctx(FunctionContext *ctx) {
  return on_main() && W.running && ctx == W.cur.ctx && W.cur.kind == INV_HTTP && !W.cur.deferred;
}

static int set_response(int status, const char *ctype, const char *body, size_t len) {
  if (status < 100 || status > 599)
    return CLOUD_EINVAL;
  char *c = malloc(len + 1);
  if (!c)
    return CLOUD_ENOMEM;
  memcpy(c, body, len);
  c[len] = 0;
  free(W.cur.body);
  W.cur.body = c;
  W.cur.body_len = len;
  W.cur.status = status;
  W.cur.responded = 1;
  snprintf(W.cur.ctype, sizeof W.cur.ctype, "%s", ctype);
  return 0;
}

static int p_response_json(FunctionContext *ctx, int status, json_t *json) {
  if (!http_ctx(ctx) || !json) {
    json_decref(json);
    return http_ctx(ctx) ? CLOUD_EINVAL : CLOUD_ESTATE;
  }
  char *s = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(json);
  if (!s)
    return CLOUD_ENOMEM;
  int rc = set_response(status, "application/json", s, strlen(s));
  free(s);
  return rc;
}

static int p_response_text(FunctionContext *ctx, int status, const char *text) {
  if (!http_ctx(ctx))
    return CLOUD_ESTATE;
  if (!text)
    return CLOUD_EINVAL;
  return set_response(status, "text/plain; charset=utf-8", text, strlen(text));
}

static int p_response_header(FunctionContext *ctx, const char *name, const char *value) {
  if (!http_ctx(ctx))
    return CLOUD_ESTATE;
  /* The rule http_add_header applies, checked here so the plugin gets its answer. */
  if (!http_response_header_ok(name, value))
    return CLOUD_EINVAL;
  if (!strcasecmp(name, "content-type")) {
    snprintf(W.cur.ctype, sizeof W.cur.ctype, "%.127s", value);
    return 0;
  }
  if (!W.cur.headers && !(W.cur.headers = json_array()))
    return CLOUD_ENOMEM;
  return json_array_append_new(W.cur.headers, json_pack("[ss]", name, value)) ? CLOUD_ENOMEM : 0;
}

static const char *p_request_header(FunctionContext *ctx, const char *name) {
  /* ctx->headers is NULL for a function with CLOUD_OPT_LAZY_HEADERS: the host has them. */
  if (!on_main() || !W.running || ctx != W.cur.ctx || !name || W.cur.nested)
    return NULL;
  if (W.cur.kind != INV_HTTP && W.cur.kind != INV_WS)
    return NULL;
  char lower[128];
  size_t n = strlen(name);
  if (n >= sizeof lower)
    return NULL;
  for (size_t i = 0; i <= n; i++)
    lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
  const char *have = json_string_value(json_object_get(ctx->headers, lower));
  if (have)
    return have;
  struct wbuf b = {0};
  call_begin(&b, OP_HEADER, 1);
  wbuf_str(&b, name);
  const char *t;
  call_end(&b, &t);
  const char *v = keep(t);
  if (v && ctx->headers)
    json_object_set_new(ctx->headers, lower, json_string(v));
  return v;
}

/* Plugin log lines carry the source api.c gives them in-process ("api"). */
static void p_logv(const FunctionContext *ctx, const char *fmt, va_list ap) {
  log_emitv("api.c", LOG_INFO, ctx ? ctx->function_name : NULL, ctx ? ctx->request_id : NULL, fmt,
            ap);
}

static void p_log_levelv(const FunctionContext *ctx, int level, const char *fmt, va_list ap) {
  enum log_level l = level == 3 ? LOG_ERROR : level == 2 ? LOG_WARN : LOG_INFO;
  log_emitv("api.c", l, ctx ? ctx->function_name : NULL, ctx ? ctx->request_id : NULL, fmt, ap);
}

static int room_call(enum worker_op op, cloud_socket s, const char *room) {
  if (!on_main())
    return CLOUD_ESTATE;
  struct wbuf b = {0};
  call_begin(&b, op, 1);
  wbuf_u64(&b, s.id);
  wbuf_str(&b, room);
  return (int)call_end(&b, NULL);
}

static int p_room_join(cloud_socket s, const char *room) {
  return room_call(OP_ROOM_JOIN, s, room);
}

static int p_room_leave(cloud_socket s, const char *room) {
  return room_call(OP_ROOM_LEAVE, s, room);
}

static int p_room_send(const char *room, const void *data, size_t len, int is_binary,
                       cloud_socket except) {
  if (!room || (!data && len))
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_ROOM_SEND, on_main());
  wbuf_str(&b, room);
  wbuf_bytes(&b, data ? data : "", len);
  wbuf_u64(&b, (uint64_t)is_binary);
  wbuf_u64(&b, except.id);
  return (int)call_end(&b, NULL);
}

static int p_broadcast(const void *data, size_t len, int is_binary, cloud_socket except) {
  if (!data && len)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_BROADCAST, on_main());
  wbuf_bytes(&b, data ? data : "", len);
  wbuf_u64(&b, (uint64_t)is_binary);
  wbuf_u64(&b, except.id);
  return (int)call_end(&b, NULL);
}

/* In a close event the socket has left its rooms in the serving process already (the event
 * runs here later): it is still a member of those the event named, as p_socket_rooms says. */
static void members_with_closing(json_t *members, const char *room) {
  const FunctionContext *ctx = W.cur.ctx;
  if (!json_is_array(members) || !W.running || !W.cur.rooms || !ctx || !ctx->user_id)
    return;
  size_t i;
  json_t *v;
  int in = 0;
  json_array_foreach(W.cur.rooms, i, v) in |= !strcmp(json_string_value(v), room);
  if (!in)
    return;
  json_array_foreach(members, i, v) {
    if (!strcmp(json_string_value(json_object_get(v, "user_id")), ctx->user_id)) {
      json_int_t n = json_integer_value(json_object_get(v, "sockets"));
      json_object_set_new(v, "sockets", json_integer(n + 1));
      return;
    }
  }
  json_array_append_new(members, json_pack("{s:s, s:i}", "user_id", ctx->user_id, "sockets", 1));
}

static json_t *p_room_members(const char *room) {
  if (!on_main())
    return NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_ROOM_MEMBERS, 1);
  wbuf_str(&b, room);
  const char *t;
  call_end(&b, &t);
  json_t *m = parse(t);
  if (m && room)
    members_with_closing(m, room);
  return m;
}

static json_t *p_socket_rooms(cloud_socket s) {
  if (!on_main())
    return NULL;
  /* The close event runs after the socket left its rooms: the event brought their names. */
  if (W.running && W.cur.rooms && W.cur.ctx && s.id == W.cur.ctx->socket.id)
    return json_deep_copy(W.cur.rooms);
  struct wbuf b = {0};
  call_begin(&b, OP_SOCKET_ROOMS, 1);
  wbuf_u64(&b, s.id);
  const char *t;
  call_end(&b, &t);
  return parse(t);
}

static int p_timer_start(const char *name, uint64_t first_ms, uint64_t every_ms) {
  if (!on_main() || !W.running)
    return CLOUD_ESTATE;
  struct wbuf b = {0};
  call_begin(&b, OP_TIMER_START, 1);
  wbuf_str(&b, name);
  wbuf_u64(&b, first_ms);
  wbuf_u64(&b, every_ms);
  return (int)call_end(&b, NULL);
}

static int p_timer_stop(const char *name) {
  if (!on_main() || !W.running)
    return CLOUD_ESTATE;
  struct wbuf b = {0};
  call_begin(&b, OP_TIMER_STOP, 1);
  wbuf_str(&b, name);
  return (int)call_end(&b, NULL);
}

static cloud_deferred *p_defer(FunctionContext *ctx) {
  if (!on_main() || !W.running || ctx != W.cur.ctx || W.cur.kind != INV_HTTP || !W.cur.defer)
    return NULL;
  W.cur.deferred = 1;
  return (cloud_deferred *)(uintptr_t)W.cur.defer;
}

static int p_deferred_respond(cloud_deferred *d, int status, const char *content_type,
                              const void *body, size_t len) {
  if (!d || (!body && len))
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_DEFER_DONE, on_main());
  wbuf_u64(&b, (uint64_t)(uintptr_t)d);
  wbuf_u64(&b, (uint64_t)(int64_t)status);
  wbuf_str(&b, content_type);
  wbuf_bytes(&b, body ? body : "", len);
  return (int)call_end(&b, NULL);
}

static int p_deferred_send_to_user(cloud_deferred *d, const char *user_id, const void *data,
                                   size_t len, int is_binary) {
  if (!d || !user_id || (!data && len))
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_DEFER_PUSH, on_main());
  wbuf_u64(&b, (uint64_t)(uintptr_t)d);
  wbuf_str(&b, user_id);
  wbuf_bytes(&b, data ? data : "", len);
  wbuf_u64(&b, (uint64_t)is_binary);
  return (int)call_end(&b, NULL);
}

static const char *p_env(const char *name) {
  if (!on_main() || !name)
    return NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_ENV, 1);
  wbuf_str(&b, name);
  const char *t;
  call_end(&b, &t);
  return keep(t);
}

static int p_reject(FunctionContext *ctx, int status, const char *reason) {
  if (!on_main() || !W.running || ctx != W.cur.ctx || W.cur.kind != INV_WS)
    return CLOUD_ESTATE;
  struct wbuf b = {0};
  call_begin(&b, OP_REJECT, 1);
  wbuf_u64(&b, (uint64_t)(int64_t)status);
  wbuf_str(&b, reason);
  return (int)call_end(&b, NULL);
}

static int p_accept_protocol(FunctionContext *ctx, const char *name) {
  if (!on_main() || !W.running || ctx != W.cur.ctx || W.cur.kind != INV_WS)
    return CLOUD_ESTATE;
  if (!name)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_ACCEPT_PROTO, 1);
  wbuf_str(&b, name);
  return (int)call_end(&b, NULL);
}

static int user_room_call(enum worker_op op, const char *user_id, const char *room) {
  if (!on_main())
    return CLOUD_ESTATE;
  if (!user_id || !room)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, op, 1);
  wbuf_str(&b, user_id);
  wbuf_str(&b, room);
  return (int)call_end(&b, NULL);
}

static int p_user_join(const char *user_id, const char *room) {
  return user_room_call(OP_USER_JOIN, user_id, room);
}

static int p_user_leave(const char *user_id, const char *room) {
  return user_room_call(OP_USER_LEAVE, user_id, room);
}

static json_t *p_rooms(void) {
  if (!on_main())
    return NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_ROOMS, 1);
  const char *t;
  call_end(&b, &t);
  return parse(t);
}

static json_t *p_user_sockets(const char *user_id) {
  if (!on_main() || !user_id)
    return NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_USER_SOCKETS, 1);
  wbuf_str(&b, user_id);
  const char *t;
  call_end(&b, &t);
  return parse(t);
}

static int p_room_keep(const char *room, int last_n) {
  if (!on_main())
    return CLOUD_ESTATE;
  if (!room || last_n < 0)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_ROOM_KEEP, 1);
  wbuf_str(&b, room);
  wbuf_u64(&b, (uint64_t)last_n);
  return (int)call_end(&b, NULL);
}

static int p_room_history(cloud_socket s, const char *room, int n) {
  if (!on_main())
    return CLOUD_ESTATE;
  if (!room || n < 0)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_ROOM_HISTORY, 1);
  wbuf_u64(&b, s.id);
  wbuf_str(&b, room);
  wbuf_u64(&b, (uint64_t)n);
  return (int)call_end(&b, NULL);
}

static int p_user_create(const char *user_id) {
  if (!on_main())
    return CLOUD_ESTATE;
  if (!user_id)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_USER_CREATE, 1);
  wbuf_str(&b, user_id);
  return (int)call_end(&b, NULL);
}

static char *p_jwt_sign(json_t *claims, int ttl_s) {
  if (!on_main() || !json_is_object(claims) || ttl_s < 0)
    return NULL;
  char *js = json_dumps(claims, JSON_COMPACT);
  if (!js)
    return NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_JWT_SIGN, 1);
  wbuf_str(&b, js);
  wbuf_u64(&b, (uint64_t)ttl_s);
  free(js);
  const char *t;
  call_end(&b, &t);
  return t ? strdup(t) : NULL;
}

static json_t *p_jwt_verify(const char *token) {
  if (!on_main() || !token)
    return NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_JWT_VERIFY, 1);
  wbuf_str(&b, token);
  const char *t;
  call_end(&b, &t);
  return parse(t);
}

/* cloud_invoke runs the callee here, in this worker, inside the caller's event: asking the
 * serving process to route it would deadlock whenever it picked this worker (whose main
 * thread is waiting), and a callee's crash takes only this worker, failing the caller's event
 * (502) as any crash of it would. Its SDK calls belong to the caller's event. */
static int invoke_depth;

static int p_invoke(const char *function, const char *method, json_t *body, json_t **result) {
  if (result)
    *result = NULL;
  if (!on_main() || !W.running || invoke_depth >= API_INVOKE_DEPTH)
    return CLOUD_ESTATE;
  if (!function || !*function || !strncmp(function, "__", 2) || strlen(function) > FN_NAME_MAX ||
      strchr(function, '/'))
    return CLOUD_ENOFUNC;
  if (method && (!*method || strlen(method) > 16))
    return CLOUD_EINVAL;
  char *raw = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  if (body && !raw)
    return CLOUD_ENOMEM;
  char url[FN_NAME_MAX + 2], request_id[72];
  snprintf(url, sizeof url, "/%s", function);
  const FunctionContext *cc = W.cur.ctx;
  snprintf(request_id, sizeof request_id, "%s", cc && cc->request_id ? cc->request_id : "");
  FunctionContext ctx = {.size = sizeof ctx};
  ctx.function_name = function;
  ctx.request_id = request_id;
  ctx.method = method ? method : "POST";
  ctx.query = json_object();
  ctx.headers = json_object();
  ctx.body = body;
  ctx.body_raw = raw;
  ctx.body_len = raw ? strlen(raw) : 0;
  ctx.url = url;
  ctx.user = cc ? cc->user : NULL;
  struct current saved = W.cur;
  memset(&W.cur, 0, sizeof W.cur);
  W.cur.seq = saved.seq;
  W.cur.kind = INV_HTTP;
  W.cur.ctx = &ctx;
  W.cur.nested = 1;
  int found = 0;
  invoke_depth++;
  int rc = plugins_call(W_host, function, &ctx, &found);
  invoke_depth--;
  int out;
  if (!found)
    out = CLOUD_ENOFUNC;
  else if (rc && !W.cur.responded)
    out = CLOUD_EFAILED;
  else if (!W.cur.responded)
    out = api_invoke_result(NULL, 0, 204, result);
  else
    out = api_invoke_result(W.cur.body ? W.cur.body : "", W.cur.body_len, W.cur.status, result);
  free(W.cur.body);
  json_decref(W.cur.strings);
  json_decref(W.cur.headers);
  W.cur = saved;
  json_decref(ctx.query);
  json_decref(ctx.headers);
  free(raw);
  return out;
}

static int p_sockets_each(int (*fn)(cloud_socket, const char *, void *), void *arg) {
  if (!on_main())
    return CLOUD_ESTATE;
  if (!fn)
    return CLOUD_EINVAL;
  struct wbuf b = {0};
  call_begin(&b, OP_SOCKETS, 1);
  const char *t;
  int64_t rc = call_end(&b, &t);
  if (rc < 0)
    return (int)rc;
  json_t *list = parse(t);
  if (!json_is_array(list)) {
    json_decref(list);
    return CLOUD_ENOMEM;
  }
  int n = api_sockets_walk(list, fn, arg);
  json_decref(list);
  return n;
}

/* Streams this worker's functions write: found by their ctx (kept alive while the stream is),
 * with what was sent and what the serving process said it wrote (W_STREAM), so that a write
 * from any thread learns CLOUD_EFULL or CLOUD_ECLOSED without waiting for a reply. */
struct wstream {
  struct wstream *next;
  FunctionContext *ctx;
  uint64_t id, sent, acked, next_event;
  int closed, ended, owned; /* owned: the event is over, ctx is this record's to free */
  char function[FN_NAME_MAX + 1], request_id[72];
};

static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;
static struct wstream *streams;
static int nstreams;

static struct wstream *ws_find(const FunctionContext *ctx) {
  for (struct wstream *s = streams; s; s = s->next)
    if (s->ctx == ctx)
      return s;
  return NULL;
}

/* Unlinks and frees s (smu held). */
static void ws_drop(struct wstream *s) {
  for (struct wstream **pp = &streams; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  nstreams--;
  if (s->owned)
    free(s->ctx);
  free(s);
}

/* The event ended: a ctx with a stream stays (its members that pointed into the event's
 * frame now point nowhere but the names). 1 if kept. */
static int stream_keep(FunctionContext *ctx) {
  pthread_mutex_lock(&smu);
  struct wstream *s = ws_find(ctx);
  if (s) {
    memset(ctx, 0, sizeof *ctx);
    ctx->size = sizeof *ctx;
    ctx->function_name = s->function;
    ctx->request_id = s->request_id;
    s->owned = 1;
    if (s->closed || s->ended)
      ws_drop(s);
  }
  pthread_mutex_unlock(&smu);
  return s != NULL;
}

/* W_STREAM from the serving process. */
static void stream_progress(const char *payload, size_t len) {
  struct wread rd;
  wread_init(&rd, payload, len);
  uint64_t id = wread_u64(&rd), written = wread_u64(&rd);
  int closed = (int)wread_u64(&rd);
  if (rd.bad)
    return;
  pthread_mutex_lock(&smu);
  for (struct wstream *s = streams; s; s = s->next)
    if (s->id == id) {
      if (written > s->acked)
        s->acked = written;
      if (closed) {
        s->closed = 1;
        if (s->owned)
          ws_drop(s);
      }
      break;
    }
  pthread_mutex_unlock(&smu);
}

static int start_stream(FunctionContext *ctx, int status, const char *ctype, int sse) {
  if (!http_ctx(ctx) || !W.cur.defer || W.cur.nested)
    return CLOUD_ESTATE;
  pthread_mutex_lock(&smu);
  int full = nstreams >= 4096;
  pthread_mutex_unlock(&smu);
  if (full)
    return CLOUD_EFULL;
  struct wstream *s = calloc(1, sizeof *s);
  if (!s)
    return CLOUD_ENOMEM;
  char *hd = W.cur.headers ? json_dumps(W.cur.headers, JSON_COMPACT) : NULL;
  struct wbuf b = {0};
  call_begin(&b, OP_STREAM_START, 1);
  wbuf_u64(&b, (uint64_t)(int64_t)status);
  wbuf_str(&b, ctype);
  wbuf_u64(&b, (uint64_t)sse);
  wbuf_str(&b, hd);
  free(hd);
  const char *first;
  int64_t rc = call_end(&b, &first);
  if (rc <= 0) {
    free(s);
    return rc < 0 ? (int)rc : CLOUD_ENOMEM;
  }
  W.cur.deferred = 1; /* the stream is the response */
  s->ctx = ctx;
  s->id = (uint64_t)rc;
  s->next_event = first ? strtoull(first, NULL, 10) : 1;
  snprintf(s->function, sizeof s->function, "%s", ctx->function_name ? ctx->function_name : "");
  snprintf(s->request_id, sizeof s->request_id, "%s", ctx->request_id ? ctx->request_id : "");
  pthread_mutex_lock(&smu);
  s->next = streams;
  streams = s;
  nstreams++;
  pthread_mutex_unlock(&smu);
  return 0;
}

static int p_stream_start(FunctionContext *ctx, int status, const char *content_type) {
  return start_stream(ctx, status, content_type ? content_type : "application/octet-stream", 0);
}

/* Sends bytes on ctx's stream; sse: format (event, data) as the next event first. */
static int stream_send(FunctionContext *ctx, const void *data, size_t len, int sse,
                       const char *event) {
  char *own = NULL;
  pthread_mutex_lock(&smu);
  struct wstream *s = ws_find(ctx);
  if (!s || s->closed || s->ended) {
    pthread_mutex_unlock(&smu);
    return CLOUD_ECLOSED;
  }
  if (sse) {
    size_t cap = sse_size(event, (const char *)data);
    if (!cap || !(own = malloc(cap))) {
      pthread_mutex_unlock(&smu);
      return cap ? CLOUD_ENOMEM : CLOUD_EINVAL;
    }
    len = sse_format(own, s->next_event, event, (const char *)data);
    data = own;
  }
  if (s->sent - s->acked + len > W_cfg_max_send_queue) {
    pthread_mutex_unlock(&smu);
    free(own);
    return CLOUD_EFULL;
  }
  s->sent += len;
  if (sse)
    s->next_event++;
  uint64_t id = s->id;
  struct wbuf b = {0};
  call_begin(&b, OP_STREAM_WRITE, on_main());
  wbuf_u64(&b, id);
  wbuf_bytes(&b, data, len);
  free(own);
  /* Sent under the lock: events go out in the order of their ids. */
  int rc = send_frame(&b);
  wbuf_free(&b);
  pthread_mutex_unlock(&smu);
  if (rc < 0 || !on_main())
    return rc;
  return (int)wait_reply(NULL);
}

static int p_stream_write(FunctionContext *ctx, const void *data, size_t len) {
  if (!data && len)
    return CLOUD_EINVAL;
  return len ? stream_send(ctx, data, len, 0, NULL) : 0;
}

static int p_stream_end(FunctionContext *ctx) {
  pthread_mutex_lock(&smu);
  struct wstream *s = ws_find(ctx);
  if (!s || s->closed || s->ended) {
    pthread_mutex_unlock(&smu);
    return CLOUD_ECLOSED;
  }
  s->ended = 1;
  uint64_t id = s->id;
  struct wbuf b = {0};
  call_begin(&b, OP_STREAM_END, on_main());
  wbuf_u64(&b, id);
  int rc = send_frame(&b);
  wbuf_free(&b);
  if (s->owned)
    ws_drop(s);
  pthread_mutex_unlock(&smu);
  if (rc < 0 || !on_main())
    return rc;
  return (int)wait_reply(NULL);
}

static int p_sse_send(FunctionContext *ctx, const char *event, const char *data) {
  pthread_mutex_lock(&smu);
  int have = ws_find(ctx) != NULL;
  pthread_mutex_unlock(&smu);
  if (!have) {
    if (!on_main() || !W.running || ctx != W.cur.ctx)
      return CLOUD_ECLOSED;
    int rc = start_stream(ctx, 200, "text/event-stream", 1);
    if (rc < 0)
      return rc;
  }
  return stream_send(ctx, data, 0, 1, event);
}

static const cloud_api proxy = {
    .abi_version = CLOUD_ABI_VERSION,
    .size = sizeof(cloud_api),
    .socket_send = p_socket_send,
    .socket_close = p_socket_close,
    .bind_user = p_bind_user,
    .send_to_user = p_send_to_user,
    .shared_get = p_shared_get,
    .shared_set = p_shared_set,
    .shared_delete = p_shared_delete,
    .response_json = p_response_json,
    .response_text = p_response_text,
    .response_header = p_response_header,
    .logv = p_logv,
    .strerror = api_strerror,
    .request_header = p_request_header,
    .room_join = p_room_join,
    .room_leave = p_room_leave,
    .room_send = p_room_send,
    .broadcast = p_broadcast,
    .room_members = p_room_members,
    .socket_rooms = p_socket_rooms,
    .timer_start = p_timer_start,
    .timer_stop = p_timer_stop,
    .log_levelv = p_log_levelv,
    .defer = p_defer,
    .deferred_respond = p_deferred_respond,
    .deferred_send_to_user = p_deferred_send_to_user,
    .env = p_env,
    .reject = p_reject,
    .accept_protocol = p_accept_protocol,
    .user_join = p_user_join,
    .user_leave = p_user_leave,
    .rooms = p_rooms,
    .user_sockets = p_user_sockets,
    .room_keep = p_room_keep,
    .room_history = p_room_history,
    .user_create = p_user_create,
    .jwt_sign = p_jwt_sign,
    .jwt_verify = p_jwt_verify,
    .invoke = p_invoke,
    .sockets_each = p_sockets_each,
    .db = api_db, /* the worker's own handles on the same file */
    .stream_start = p_stream_start,
    .stream_write = p_stream_write,
    .stream_end = p_stream_end,
    .sse_send = p_sse_send,
};

/* Runs one event frame (its payload after the type byte). */
static void run_event(struct host *h, const char *payload, size_t len) {
  struct wread rd;
  wread_init(&rd, payload, len);
  uint64_t seq = wread_u64(&rd);
  uint64_t kind = wread_u64(&rd);
  if (kind == WORKER_QUIT) {
    /* Replaced after a reload: the versions' fini lets their threads finish (a deferred
     * response still owed is completed, not dropped). */
    W.replay = 1;
    plugins_run_fini(h->plugins);
    _exit(0);
  }
  const char *name = wread_str(&rd);
  /* On the heap: a streamed response is written through ctx after the event (streams). */
  FunctionContext *ctx = calloc(1, sizeof *ctx);
  if (!ctx)
    _exit(3);
  ctx->size = sizeof *ctx;
  ctx->function_name = wread_str(&rd);
  ctx->request_id = wread_str(&rd);
  ctx->method = wread_str(&rd);
  ctx->params.data = wread_bytes(&rd, &ctx->params.len);
  ctx->params.is_binary = (int)wread_u64(&rd);
  ctx->params.code = (int)(int64_t)wread_u64(&rd);
  ctx->params.reason = wread_str(&rd);
  ctx->params.error = wread_str(&rd);
  ctx->query = parse(wread_str(&rd));
  ctx->headers = parse(wread_str(&rd));
  ctx->body = parse(wread_str(&rd));
  ctx->body_raw = wread_bytes(&rd, &ctx->body_len);
  ctx->url = wread_str(&rd);
  ctx->socket.id = wread_u64(&rd);
  ctx->user_id = wread_str(&rd);
  ctx->user_token = wread_str(&rd);
  ctx->user = parse(wread_str(&rd));
  uint64_t defer = wread_u64(&rd);
  json_t *rooms = parse(wread_str(&rd));
  ctx->protocols = wread_str(&rd);
  uint64_t nfiles = wread_u64(&rd);
  cloud_file *files = NULL;
  if (nfiles && nfiles <= 1000 && (files = calloc((size_t)nfiles, sizeof *files))) {
    for (uint64_t i = 0; i < nfiles; i++) {
      files[i].field = wread_str(&rd);
      files[i].filename = wread_str(&rd);
      files[i].content_type = wread_str(&rd);
      files[i].path = wread_str(&rd);
      files[i].size = (size_t)wread_u64(&rd);
    }
    ctx->files = files;
    ctx->files_count = (size_t)nfiles;
  } else if (nfiles) {
    rd.bad = 1;
  }
  if (rd.bad || !name) {
    log_error(NULL, NULL, "worker: malformed event frame");
    _exit(4);
  }
  const char *token_given = ctx->user_token;
  memset(&W.cur, 0, sizeof W.cur);
  W.cur.seq = seq;
  W.cur.kind = (enum inv_kind)kind;
  W.cur.ctx = ctx;
  W.cur.defer = defer;
  W.cur.rooms = rooms;
  W.running = 1;
  int found;
  uint64_t t0 = metrics_now_ns();
  int rc = plugins_call(h->plugins, name, ctx, &found);
  uint64_t ns = metrics_now_ns() - t0;
  W.running = 0;
  if (!found)
    rc = 0;
  struct wbuf b = {0};
  wbuf_begin(&b, W_DONE);
  wbuf_u64(&b, seq);
  wbuf_u64(&b, (uint64_t)(int64_t)rc);
  wbuf_u64(&b, (uint64_t)W.cur.deferred);
  wbuf_u64(&b, (uint64_t)W.cur.responded);
  wbuf_u64(&b, (uint64_t)W.cur.status);
  wbuf_str(&b, W.cur.ctype);
  wbuf_bytes(&b, W.cur.body ? W.cur.body : "", W.cur.body_len);
  wbuf_u64(&b, (uint64_t)(token_given && !ctx->user_token));
  wbuf_u64(&b, ns);
  char *hd = W.cur.headers ? json_dumps(W.cur.headers, JSON_COMPACT) : NULL;
  wbuf_str(&b, hd);
  free(hd);
  send_frame(&b);
  wbuf_free(&b);
  free(W.cur.body);
  json_decref(W.cur.strings);
  json_decref(W.cur.headers);
  json_decref(rooms);
  json_decref(ctx->query);
  json_decref(ctx->headers);
  json_decref(ctx->body);
  json_decref(ctx->user);
  memset(&W.cur, 0, sizeof W.cur);
  free(files);
  if (!stream_keep(ctx))
    free(ctx);
}

void worker_main(struct host *h, int fd, int index) {
  pid_t parent = getppid();
  /* The serving process's death ends its workers at once (it holds their only socket too). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(0);
  char title[16];
  snprintf(title, sizeof title, "wshost-w%d", index);
  prctl(PR_SET_NAME, title);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGALRM, &sa, NULL);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
  sigset_t all;
  sigemptyset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  /* Nothing of the serving process but stderr and our socket: an inherited client socket
   * would keep its connection open after the serving process closed it. */
  if (dup2(fd, WFD) < 0)
    _exit(5);
  close_range(WFD + 1, ~0u, 0);
  /* Crash reports go to the log only: the serving process counts a worker's crashes itself,
   * and the supervisor must not take them for the serving process's. */
  crash_install(-1, -1);
  invocation_set_loop_thread();
  W.main = pthread_self();
  W_host = h->plugins;
  W_cfg_max_send_queue = h->cfg.max_send_queue;
  api_table_replace(&proxy);
  h->workers = NULL; /* this process runs plugins itself */
  h->runner = NULL;
  /* Threads the versions' init started in the serving process did not come along with the
   * fork: init runs again here, its cloud_shared writes not repeated (the load made them). */
  W.replay = 1;
  plugins_rerun_init(h->plugins);
  W.replay = 0;
  json_decref(W.cur.strings); /* what init's cloud_env calls kept */
  W.cur.strings = NULL;
  /* Loaded and inited: the serving process replaces a worker that never says so. */
  struct wbuf ready = {0};
  wbuf_begin(&ready, W_READY);
  send_frame(&ready);
  wbuf_free(&ready);
  for (;;) {
    struct queued *q = W.head;
    if (q) {
      W.head = q->next;
      if (!W.head)
        W.tail = NULL;
      if ((unsigned char)q->data[0] == W_EVENT)
        run_event(h, q->data + 1, q->len - 1);
      free(q);
      continue;
    }
    size_t len;
    if (wire_read_frame(WFD, &W.rbuf, &W.rcap, &len) < 0)
      _exit(0);
    if ((unsigned char)W.rbuf[0] == W_STREAM)
      stream_progress(W.rbuf + 1, len - 1);
    if ((unsigned char)W.rbuf[0] != W_EVENT)
      continue;
    /* run_event may read further frames into W.rbuf (replies): run a copy. */
    char *copy = malloc(len);
    if (!copy)
      _exit(3);
    memcpy(copy, W.rbuf + 1, len - 1);
    run_event(h, copy, len - 1);
    free(copy);
  }
}
