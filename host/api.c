/* api.c: the table of host functions handed to every plugin (cloud_api), and cloud_shared.
 * SDK calls without a context argument reach the host through the one pointer bound here. */
#include "api.h"

#include "http.h"
#include "log.h"
#include "ws.h"

#include <string.h>

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
  default:
    return code > 0 ? "ok" : "unknown error";
  }
}

/* The connection behind a WebSocket event's context, or NULL. */
static struct conn *ctx_conn(FunctionContext *ctx) {
  return ctx && ctx->socket.id && ctx->host ? ctx->host : NULL;
}

/* The request behind an HTTP function's context, or NULL. */
static struct http_req *ctx_req(FunctionContext *ctx) {
  return ctx && !ctx->socket.id && ctx->host ? ctx->host : NULL;
}

static int a_socket_send(cloud_socket s, const void *data, size_t len, int is_binary) {
  return ws_send(bound, s, data, len, is_binary);
}

static int a_socket_close(cloud_socket s, int code, const char *reason) {
  return ws_close(bound, s, code, reason);
}

static int a_bind_user(FunctionContext *ctx, const char *user_id) {
  struct conn *c = ctx_conn(ctx);
  if (!c)
    return CLOUD_ESTATE;
  int rc = ws_bind_user(bound, c, user_id);
  if (rc == 0)
    ctx->user_token = NULL; /* the token was the host-assigned user's */
  return rc;
}

static int a_send_to_user(const char *user_id, const void *data, size_t len, int is_binary) {
  return ws_send_to_user(bound, user_id, data, len, is_binary);
}

static json_t *a_shared_get(const char *key) {
  json_t *v = key ? json_object_get(bound->shared, key) : NULL;
  return v ? json_deep_copy(v) : NULL;
}

static int a_shared_set(const char *key, json_t *value) {
  if (!key || !value)
    return CLOUD_EINVAL;
  /* A copy: the plugin keeps its object, and a later change to it does not leak in. */
  json_t *copy = json_deep_copy(value);
  if (!copy)
    return CLOUD_ENOMEM;
  return json_object_set_new(bound->shared, key, copy) ? CLOUD_EINVAL : 0;
}

static int a_shared_delete(const char *key) {
  return key && json_object_del(bound->shared, key) == 0 ? 0 : CLOUD_EINVAL;
}

static int a_response_json(FunctionContext *ctx, int status, json_t *json) {
  struct http_req *r = ctx_req(ctx);
  if (!r || !json) {
    json_decref(json);
    return r ? CLOUD_EINVAL : CLOUD_ESTATE;
  }
  char *s = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(json);
  if (!s)
    return CLOUD_ENOMEM;
  int rc = http_set_response(r, status, "application/json", s, strlen(s));
  free(s);
  return rc;
}

static int a_response_text(FunctionContext *ctx, int status, const char *text) {
  struct http_req *r = ctx_req(ctx);
  if (!r)
    return CLOUD_ESTATE;
  if (!text)
    return CLOUD_EINVAL;
  return http_set_response(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

static int a_response_header(FunctionContext *ctx, const char *name, const char *value) {
  struct http_req *r = ctx_req(ctx);
  return r ? http_add_header(r, name, value) : CLOUD_ESTATE;
}

static void a_logv(const FunctionContext *ctx, const char *fmt, va_list ap) {
  log_msgv(LOG_INFO, ctx ? ctx->function_name : NULL, ctx ? ctx->request_id : NULL, fmt, ap);
}

static const char *a_request_header(FunctionContext *ctx, const char *name) {
  if (!ctx || !name || !ctx->headers)
    return NULL;
  struct conn *c = ctx_conn(ctx);
  struct http_req *r = ctx_req(ctx);
  if (c && !c->in_connect_event)
    return NULL; /* lws keeps the headers only until the connection is established */
  return http_header_lookup(c ? c->wsi : r->wsi, ctx->headers, name);
}

static const cloud_api table = {
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
};

const cloud_api *api_table(void) {
  return &table;
}
