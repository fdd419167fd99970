/* http.c: HTTP requests: routing to functions and to /_/, bodies, responses, request ids.
 * A request is read whole (bounded by --max-body), run, and answered in HTTP_WRITEABLE. */
#include "http.h"

#include "accept.h"
#include "auth.h"
#include "defer.h"
#include "intercept.h"
#include "invocation.h"
#include "log.h"
#include "multipart.h"
#include "peer.h"
#include "plugins.h"
#include "quarantine.h"
#include "stream.h"
#include "upload.h"
#include "ws.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const method_names[] = {"GET",   "POST",   "OPTIONS", "PUT",
                                           "PATCH", "DELETE", "CONNECT", "HEAD"};

/* Headers ctx->headers always carries besides lws's known ones (lws 4.1 cannot list unknown
 * headers; cloud_request_header finds any other by name). */
static const char *const custom_headers[] = {"x-request-id",     "x-api-key", "x-forwarded-proto",
                                             "x-forwarded-host", "x-real-ip", "x-requested-with"};

/* Request views for a function's context. New references / strings. */
static json_t *http_headers_json(struct lws *wsi) {
  json_t *o = json_object();
  if (!o)
    return NULL;
  char buf[4096];
  for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
    const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)t);
    if (!name || !*name || name[0] == ':' || t == WSI_TOKEN_HTTP_URI_ARGS)
      continue;
    size_t n = strlen(name);
    if (name[n - 1] != ':') /* "get ", "post ": the request line, not a header */
      continue;
    if (lws_hdr_total_length(wsi, (enum lws_token_indexes)t) <= 0)
      continue;
    if (lws_hdr_copy(wsi, buf, sizeof buf, (enum lws_token_indexes)t) < 0)
      continue;
    char key[64];
    if (n - 1 >= sizeof key)
      continue;
    memcpy(key, name, n - 1);
    key[n - 1] = 0;
    json_t *v = json_string(buf);
    if (v)
      json_object_set_new(o, key, v);
  }
  for (size_t i = 0; i < sizeof custom_headers / sizeof *custom_headers; i++)
    http_header_lookup(wsi, o, custom_headers[i], 0);
  return o;
}

/* The lws token of a header lws knows by name ("cookie"), or -1. lws 4.1 has no lookup by
 * name for its own tokens (lws_hdr_custom_* finds only the ones it does not know). */
static int known_token(const char *lname, size_t n) {
  for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
    const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)t);
    if (name && name[0] == lname[0] && !strncmp(name, lname, n) && name[n] == ':' && !name[n + 1] &&
        t != WSI_TOKEN_HTTP_URI_ARGS)
      return t;
  }
  return -1;
}

const char *http_header_lookup(struct lws *wsi, json_t *headers, const char *name, int lazy) {
  char lname[128], cname[130], buf[4096];
  size_t n = strlen(name);
  if (!n || n >= sizeof lname)
    return NULL;
  for (size_t i = 0; i <= n; i++)
    lname[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
  json_t *have = json_object_get(headers, lname);
  if (have)
    return json_string_value(have);
  /* Not there: one lws does not know by name, or, in a lazy object, any header. The scan of
   * lws's names (~1 500 instructions) is only for lazy objects. */
  int t = lazy ? known_token(lname, n) : -1;
  if (t >= 0) {
    if (lws_hdr_total_length(wsi, (enum lws_token_indexes)t) <= 0 ||
        lws_hdr_copy(wsi, buf, sizeof buf, (enum lws_token_indexes)t) < 0)
      return NULL;
  } else {
    snprintf(cname, sizeof cname, "%s:", lname);
    int len = lws_hdr_custom_length(wsi, cname, (int)n + 1);
    if (len < 0 || len >= (int)sizeof buf ||
        lws_hdr_custom_copy(wsi, buf, sizeof buf, cname, (int)n + 1) < 0)
      return NULL;
  }
  json_t *v = json_string(buf);
  if (!v || json_object_set_new(headers, lname, v))
    return NULL;
  return json_string_value(json_object_get(headers, lname));
}

static json_t *http_query_json(struct lws *wsi) {
  json_t *o = json_object();
  char buf[4096];
  for (int i = 0; o; i++) {
    int n = lws_hdr_copy_fragment(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n <= 0)
      break;
    query_add(o, buf, (size_t)n, 0); /* lws has decoded it already */
  }
  return o;
}

/* Appends s percent-encoded (all but RFC 3986 unreserved) to out. */
static size_t url_encode(char *out, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~')
      out[o++] = (char)c;
    else {
      out[o++] = '%';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  return o;
}

static size_t encoded_pair(char *out, const char *k, const char *v, int first) {
  size_t o = 0;
  if (out) {
    if (!first)
      out[o++] = '&';
    o += url_encode(out + o, k);
    out[o++] = '=';
    o += url_encode(out + o, v);
  } else
    o = 2 + 3 * (strlen(k) + strlen(v));
  return o;
}

/* Walks the query (values are strings or arrays of strings) twice: size, then write. */
static size_t walk_query(json_t *query, char *out) {
  size_t o = 0;
  const char *k;
  json_t *v;
  int first = 1;
  json_object_foreach(query, k, v) {
    if (json_is_array(v)) {
      size_t i;
      json_t *e;
      json_array_foreach(v, i, e) {
        o += encoded_pair(out ? out + o : NULL, k, json_string_value(e), first);
        first = 0;
      }
    } else {
      o += encoded_pair(out ? out + o : NULL, k, json_string_value(v), first);
      first = 0;
    }
  }
  return o;
}

static char *http_url(const char *path, json_t *query) {
  if (!path)
    path = "/";
  size_t plen = strlen(path), qlen = query ? walk_query(query, NULL) : 0;
  char *url = malloc(plen + qlen + 2);
  if (!url)
    return NULL;
  memcpy(url, path, plen);
  size_t o = plen;
  if (qlen && json_object_size(query)) {
    url[o++] = '?';
    o += walk_query(query, url + o);
  }
  url[o] = 0;
  return url;
}

/* Request bodies are read at a pace and within a budget (lws 4.1 resets its timeout on every read):
 * a body must bring min_body_rate bytes/s in every window after the first, and all bodies buffered
 * at once stay under max_body_total. A request answered before its body was read keeps reading and
 * dropping it for at most LINGER_MS and LINGER_BYTES, and as long as bytes keep coming
 * (LINGER_IDLE_MS), as nginx's lingering close does:
 * closing with unread bytes makes the kernel send a reset, and most clients (Node, Python)
 * then lose the answer that was already on its way. */
#define BODY_WINDOW_MS 5000
#define LINGER_MS 5000
#define LINGER_IDLE_MS 1000 /* a lingering client that sends nothing this long is done */
#define LINGER_BYTES ((size_t)64 << 20)

static void req_free(struct http_req *r) {
  if (!r)
    return;
  defer_detach(r->defer);
  stream_detach(r->host, r->stream);
  free(r->stream_ctx);
  upload_free(r->upload);
  lws_sul_cancel(&r->body_timer);
  r->host->http_body_bytes -= r->body_cap;
  free(r->path);
  json_decref(r->query);
  json_decref(r->headers);
  json_decref(r->resp_headers);
  free(r->body);
  free(r->resp);
  free(r);
}

int http_set_response(struct http_req *r, int status, const char *content_type, const char *body,
                      size_t len) {
  if (status < 100 || status > 599)
    return CLOUD_EINVAL;
  unsigned char *b = malloc(LWS_PRE + len + 1);
  if (!b)
    return CLOUD_ENOMEM;
  if (len)
    memcpy(b + LWS_PRE, body, len);
  free(r->resp);
  r->resp = b;
  r->resp_len = len;
  r->status = status;
  snprintf(r->content_type, sizeof r->content_type, "%s", content_type);
  r->responded = 1;
  return 0;
}

int http_add_header(struct http_req *r, const char *name, const char *value) {
  if (!http_response_header_ok(name, value))
    return CLOUD_EINVAL;
  if (!strcasecmp(name, "content-type")) {
    snprintf(r->content_type, sizeof r->content_type, "%.127s", value);
    return 0;
  }
  if (!r->resp_headers && !(r->resp_headers = json_array()))
    return CLOUD_ENOMEM;
  return json_array_append_new(r->resp_headers, json_pack("[ss]", name, value)) ? CLOUD_ENOMEM : 0;
}

/* Sets a JSON error body {"error": e[, "message": m][, "requestId": id]}. */
static void respond_error(struct http_req *r, int status, const char *error, const char *message,
                          int with_id) {
  json_t *o = json_pack("{ss}", "error", error);
  if (o && message)
    json_object_set_new(o, "message", json_string(message));
  if (o && with_id)
    json_object_set_new(o, "requestId", json_string(r->request_id));
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  http_set_response(r, status, "application/json", s ? s : "{}", s ? strlen(s) : 2);
  free(s);
  json_decref(o);
}

/* Milliseconds since the request line arrived: the access line's duration. */
static double elapsed_ms(const struct http_req *r) {
  return r->started_ns ? (double)(metrics_now_ns() - r->started_ns) / 1e6 : 0;
}

static void respond(struct http_req *r) {
  metrics_http_response(&r->host->metrics, r->status);
  r->ready = 1;
  lws_callback_on_writable(r->wsi);
}

/* Valid ids are echoed; anything else (too long, odd bytes) is replaced by our own. */
static void set_request_id(struct http_req *r) {
  const char *given = http_header_lookup(r->wsi, r->headers, "x-request-id", r->headers_lazy);
  size_t n = given ? strlen(given) : 0;
  int ok = n > 0 && n < 64;
  for (size_t i = 0; ok && i < n; i++) {
    char c = given[i];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == ':';
  }
  if (ok)
    memcpy(r->request_id, given, n + 1);
  else
    host_request_id(r->host, r->request_id, sizeof r->request_id);
}

static void run_function(struct http_req *r) {
  struct host *h = r->host;
  /* On the heap: a streamed response is written through ctx after the function returned,
   * so it lives as long as the request (stream_ctx) then. */
  FunctionContext *ctxp = calloc(1, sizeof *ctxp);
  char err[256];
  json_t *body = NULL;
  const char *ctype = http_header_lookup(r->wsi, r->headers, "content-type", r->headers_lazy);
  if (r->upload ? upload_finish(r->upload, err, sizeof err) < 0
                : body_parse(ctype, r->body, r->body_len, &body, err, sizeof err) < 0) {
    log_info(r->name, r->request_id, "%s %s: 400 %s", r->method, r->path, err);
    respond_error(r, 400, "Bad Request", err, 0);
    free(ctxp);
    return;
  }
  if (!ctxp) {
    json_decref(body);
    respond_error(r, 500, "Internal Server Error", "out of memory", 1);
    return;
  }
  FunctionContext *ctx = ctxp;
  char *url = http_url(r->path, r->query);
  ctx->size = sizeof *ctx;
  ctx->function_name = r->name;
  ctx->request_id = r->request_id;
  ctx->method = r->method;
  ctx->query = r->query;
  ctx->headers = r->headers;
  ctx->body = body;
  ctx->body_raw = r->body;
  ctx->body_len = r->body_len;
  ctx->url = url ? url : r->path;
  if (r->upload) {
    ctx->body = body = json_incref(upload_fields(r->upload));
    ctx->files = upload_files(r->upload, &ctx->files_count);
  }
  const char *why;
  json_t *user = NULL;
  if (auth_check(h, auth_bearer(json_string_value(json_object_get(r->headers, "authorization"))),
                 &user, &why) < 0) {
    log_warn(r->name, r->request_id, "%s %s: 401, JWT refused: %s", r->method, r->path, why);
    respond_error(r, 401, "Unauthorized", why, 1);
    json_decref(body);
    free(url);
    free(ctx);
    return;
  }
  ctx->user = user;
  int found = 0, rc = 0;
  /* The interceptor's answer, if it gives one, is the response; the target never runs. */
  if (!intercept(h, r, ctx))
    rc = invoke(h, INV_HTTP, r, r->name, ctx, &found);
  else
    found = 1;
  json_decref(user);
  json_decref(body);
  free(url);
  /* The function returned: its files go (a worker's: when it says its event ended). */
  if (r->upload && !h->runner)
    upload_remove(r->upload);
  if (r->stream) { /* written as the function writes it (stream.c, http_stream_write) */
    r->stream_ctx = ctx;
    ctx->query = ctx->headers = ctx->body = ctx->user = NULL;
    ctx->body_raw = ctx->url = NULL;
    ctx->files = NULL;
    ctx->files_count = 0;
    return;
  }
  free(ctx);
  if (r->deferred) { /* the response comes later (defer.c) */
    if (rc)
      log_warn(r->name, r->request_id, "returned %d after cloud_defer", rc);
    return;
  }
  if (!found) {
    respond_error(r, 404, "Function Not Found", NULL, 0);
    return;
  }
  if (rc && !r->responded) {
    h->stats.plugin_errors++;
    log_error(r->name, r->request_id, "%s %s failed: returned %d", r->method, r->path, rc);
    respond_error(r, 500, "Internal Server Error", NULL, 1);
  } else if (!r->responded)
    http_set_response(r, 204, "text/plain", "", 0);
  else if (rc)
    log_warn(r->name, r->request_id, "returned %d after setting a response", rc);
}

static void dispatch(struct http_req *r) {
  if (r->route == ROUTE_ADMIN)
    r->host->admin_area->handle(r);
  else
    run_function(r);
  if (r->deferred || r->stream)
    return; /* logged and answered by http_deferred_done, or streamed */
  log_access(r->route == ROUTE_ADMIN ? "_" : r->name, r->request_id, r->method, r->path, r->status,
             r->remote, r->resp_len, elapsed_ms(r), NULL);
  respond(r);
}

void http_uploads_done(struct http_req *r) {
  upload_remove(r->upload);
}

void http_deferred_done(struct http_req *r) {
  log_access(r->name, r->request_id, r->method, r->path, r->status, r->remote, r->resp_len,
             elapsed_ms(r), "(deferred)");
  respond(r);
}

/* The JWT of an upgrade: ?access_token= (what a browser can send), else a Bearer header.
 * With a key configured, a credential that says two things is refused (-1 and *why), never
 * read as no credential at all: a repeated access_token (the query holds an array), an
 * empty one, or one that disagrees with the Authorization header. */
static int upgrade_token(struct http_req *r, const char **token, const char **why) {
  *token = NULL;
  json_t *q = json_object_get(r->query, "access_token");
  const char *header =
      lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0
          ? http_header_lookup(r->wsi, r->headers, "authorization", r->headers_lazy)
          : NULL;
  const char *bearer = auth_bearer(header), *t = json_string_value(q);
  if (r->host->jwt && q) {
    if (!t) {
      *why = "access_token given more than once";
      return -1;
    }
    if (!*t) {
      *why = "empty access_token";
      return -1;
    }
    if (header && (!bearer || strcmp(t, bearer))) {
      *why = "access_token and the Authorization header disagree";
      return -1;
    }
  }
  *token = t ? t : bearer;
  return 0;
}

/* The resume credentials (?user_id=&token=) given more than once: the host would resume as
 * the first while the function saw an array. NULL, or the name of the repeated one. */
static const char *repeated_credential(json_t *query) {
  static const char *const names[] = {"user_id", "token"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (json_is_array(json_object_get(query, names[i])))
      return names[i];
  return NULL;
}

/* ctx->headers for an upgrade is built only when a function that runs for it reads it: the
 * connection event's, and the interceptor's when one is loaded (CLOUD_OPT_LAZY_HEADERS). */
static int headers_wanted(struct host *h, const char *name) {
  return !(plugins_options(h->plugins, name) & CLOUD_OPT_LAZY_HEADERS);
}

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, after the handshake checks: the JWT (?access_token= or
 * Authorization: Bearer), __interceptor__, then the connection event (ws_admit). 0: go on
 * with the upgrade; 1: refused, the answer is written. */
static int http_admit_upgrade(struct host *h, struct lws *wsi) {
  struct http_req r = {.host = h, .wsi = wsi, .method = "GET", .no_defer = 1};
  lws_get_peer_simple(wsi, r.remote, sizeof r.remote);
  snprintf(r.name, sizeof r.name, "__websocket__");
  int rc = -1;
  char path[1024] = "/";
  if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) < 0)
    snprintf(path, sizeof path, "/");
  r.path = path;
  int ws_headers = headers_wanted(h, r.name); /* __websocket__ */
  int icpt_headers = plugins_loaded(h->plugins, INTERCEPTOR) && headers_wanted(h, INTERCEPTOR);
  /* Lazily: an empty object that http_header_lookup fills by name (cloud_request_header). */
  r.headers_lazy = !ws_headers && !icpt_headers;
  r.headers = r.headers_lazy ? json_object() : http_headers_json(wsi);
  r.query = http_query_json(wsi);
  if (!r.headers || !r.query)
    goto out;
  set_request_id(&r);
  const char *why, *token, *twice = repeated_credential(r.query);
  json_t *user = NULL;
  if (twice) { /* a credential refused like a bad token: readable by a browser */
    log_warn(r.name, r.request_id, "upgrade from %s: close 4401, %s given more than once", r.remote,
             twice);
    metrics_upgrade_refused(&h->metrics, 401, "Unauthorized");
    rc = ws_admit_refused(h, wsi, WS_CLOSE_UNAUTHORIZED, "credential given more than once");
    goto out;
  }
  if (upgrade_token(&r, &token, &why) < 0 || auth_check(h, token, &user, &why) < 0) {
    log_warn(r.name, r.request_id, "upgrade from %s: close 4401, JWT refused: %s", r.remote, why);
    metrics_upgrade_refused(&h->metrics, 401, "Unauthorized");
    rc = ws_admit_refused(h, wsi, WS_CLOSE_UNAUTHORIZED, why ? why : "Unauthorized");
    goto out;
  }
  const char *sub = json_string_value(json_object_get(user, "sub"));
  if (user && json_object_get(user, "sub") && (!sub || !user_id_valid(sub))) {
    log_warn(r.name, r.request_id, "upgrade from %s: close 4401, JWT sub is not a user id",
             r.remote);
    json_decref(user);
    metrics_upgrade_refused(&h->metrics, 401, "Unauthorized");
    rc = ws_admit_refused(h, wsi, WS_CLOSE_UNAUTHORIZED, "JWT sub is not a user id");
    goto out;
  }
  FunctionContext ctx = {.size = sizeof ctx,
                         .function_name = r.name,
                         .request_id = r.request_id,
                         .method = "GET",
                         .query = r.query,
                         .headers = icpt_headers ? r.headers : NULL,
                         .user = user};
  char *url = http_url(r.path, r.query);
  ctx.url = url ? url : r.path;
  int answered = intercept(h, &r, &ctx);
  free(url);
  if (answered) {
    json_decref(user);
    log_info(INTERCEPTOR, r.request_id, "upgrade from %s: %d from the interceptor", r.remote,
             r.status);
    metrics_upgrade_refused(&h->metrics, r.status, "interceptor");
    /* 401 and 403 as close codes a browser can read; other statuses (429 with Retry-After,
     * a redirect, a 5xx) keep their HTTP answer: its headers and body mean something to the
     * clients that read them, and a browser retrying a 1006 with backoff is right for them. */
    if (r.status == 401 || r.status == 403)
      rc =
          ws_admit_refused(h, wsi, 4000 + r.status, r.status == 401 ? "Unauthorized" : "Forbidden");
    else
      rc = http_answer_extra(wsi, r.status, r.content_type, r.resp + LWS_PRE, r.resp_len,
                             r.resp_headers);
    goto out;
  }
  /* The connection event decides the rest (ws.c); it takes the claims. */
  url = http_url(r.path, r.query);
  rc = ws_admit(h, wsi,
                &(struct ws_upgrade){.request_id = r.request_id,
                                     .remote = r.remote,
                                     .headers = r.headers,
                                     .headers_lazy = r.headers_lazy,
                                     .headers_in_ctx = ws_headers,
                                     .query = r.query,
                                     .url = url ? url : r.path,
                                     .claims = user});
  free(url);
out:
  json_decref(r.headers);
  json_decref(r.query);
  json_decref(r.resp_headers);
  free(r.resp);
  return rc;
}

static int body_expected(struct http_req *r) {
  char buf[32];
  if (lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
      lws_hdr_copy(r->wsi, buf, sizeof buf, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
    char *end;
    long long n = strtoll(buf, &end, 10);
    r->content_length = (*end || n < 0) ? -1 : n;
    return r->content_length != 0;
  }
  return lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
}

/* RFC 9112 5.1: whitespace between a field name and its colon must get a 400, or
 * "Content-Length : 40" is a body to one server and none to the next (request smuggling).
 * lws 4.1 stops matching a known name at the space and files the line as an unknown header
 * named "content-length :", which lws_hdr_custom_length finds by that name. The first head of
 * a plain connection is checked whole by head_guard.c; this covers later ones and TLS, for
 * the names that decide framing and routing. */
static int spaced_field_name(struct lws *wsi) {
  static const char *const names[] = {"content-length", "transfer-encoding", "host",
                                      "connection",     "upgrade",           "expect"};
  static const char *const gaps[] = {" :", "\t:", "  :", " \t:", "\t :"};
  char name[64];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    for (size_t g = 0; g < sizeof gaps / sizeof *gaps; g++) {
      int n = snprintf(name, sizeof name, "%s%s", names[i], gaps[g]);
      if (lws_hdr_custom_length(wsi, name, n) >= 0)
        return 1;
    }
  return 0;
}

/* RFC 9112 6.1-6.3: a body whose length is unclear (a Content-Length that is not a number,
 * two that differ, one next to Transfer-Encoding, a coding other than chunked) is refused and
 * the connection closed, so no second request can hide in it. lws 4.1 does not check. It does
 * not decode chunked request bodies either (the request would hang until its timeout): 411. */
static int framing_refused(struct http_req *r) {
  char v[32];
  int ncl = lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
  int nte = lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
  const char *why = NULL;
  int status = 400;
  if (spaced_field_name(r->wsi))
    why = "whitespace between a header name and its colon";
  else if (ncl > 0 && nte > 0)
    why = "both Content-Length and Transfer-Encoding";
  else if (ncl > 0) {
    int ok = ncl < (int)sizeof v &&
             lws_hdr_copy(r->wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH) == ncl;
    for (int i = 0; ok && i < ncl; i++)
      ok = v[i] >= '0' && v[i] <= '9';
    if (!ok)
      why = "invalid Content-Length";
  } else if (nte > 0 &&
             (nte >= (int)sizeof v ||
              lws_hdr_copy(r->wsi, v, sizeof v, WSI_TOKEN_HTTP_TRANSFER_ENCODING) != nte ||
              strcasecmp(v, "chunked"))) {
    why = "unsupported Transfer-Encoding";
    status = 501;
  } else if (nte > 0) {
    why = "chunked request bodies are not supported: send Content-Length";
    status = 411;
  }
  if (!why)
    return 0;
  respond_error(r, status,
                status == 400   ? "Bad Request"
                : status == 411 ? "Length Required"
                                : "Not Implemented",
                why, 0);
  r->close_after = 1;
  log_access(NULL, r->request_id, r->method, r->path, status, r->remote, r->resp_len, elapsed_ms(r),
             why);
  respond(r);
  return 1;
}

static void body_check(lws_sorted_usec_list_t *sul);

static int http_begin(struct host *h, struct lws *wsi, struct session *s, const char *uri) {
  struct http_req *r = calloc(1, sizeof *r);
  if (!r)
    return -1;
  r->started_ns = metrics_now_ns();
  s->req = r;
  r->host = h;
  r->wsi = wsi;
  r->content_length = -1;
  h->stats.http_requests++;
  lws_get_peer_simple(wsi, r->remote, sizeof r->remote);
  char *uri_ptr;
  int uri_len;
  r->method_index = lws_http_get_uri_and_method(wsi, &uri_ptr, &uri_len);
  r->method = r->method_index >= 0 && r->method_index <= LWSHUMETH_HEAD
                  ? method_names[r->method_index]
                  : "GET";
  r->path = strdup(uri ? uri : "/");
  r->headers = http_headers_json(wsi);
  r->query = http_query_json(wsi);
  if (!r->path || !r->headers || !r->query)
    return -1;
  set_request_id(r);
  if (framing_refused(r))
    return 0;
  if (body_expected(r) && r->content_length > 0)
    lws_sul_schedule(lws_get_context(wsi), 0, &r->body_timer, body_check,
                     BODY_WINDOW_MS * LWS_US_PER_MS);
  r->route = http_route(r->path, r->name);
  if (r->route == ROUTE_ADMIN && !h->admin_area)
    r->route = ROUTE_NOT_FOUND; /* no admin area wired in (http_area in http.h) */
  /* With --admin-bind the admin API is there alone: the public listener keeps what a load
   * balancer and a page need (health, readiness, the client script; the metrics if
   * --metrics-public says so), the admin one serves nothing but /_/. */
  if (h->admin_fds) {
    int via_admin = accept_via_admin(h, lws_get_socket_fd(wsi));
    if (via_admin ? r->route != ROUTE_ADMIN
                  : r->route == ROUTE_ADMIN && strcmp(r->name, "healthz") &&
                        strcmp(r->name, "readyz") && strcmp(r->name, "client.js") &&
                        (strcmp(r->name, "metrics") || !h->cfg.metrics_public))
      r->route = ROUTE_NOT_FOUND;
  }

  if (r->route == ROUTE_FUNCTION && !plugins_loaded(h->plugins, r->name) &&
      quarantine_get(h->quarantine, r->name)) {
    /* Its build crashed the host (quarantine.c): say so, not 404, until it is replaced. */
    respond_error(r, 503, "Function Unavailable", NULL, 1);
    r->close_after = body_expected(r);
    log_access(r->name, r->request_id, r->method, r->path, 503, r->remote, r->resp_len,
               elapsed_ms(r), "(function quarantined after a crash)");
    respond(r);
    return 0;
  }
  if (r->route == ROUTE_NOT_FOUND ||
      (r->route == ROUTE_FUNCTION && !plugins_loaded(h->plugins, r->name))) {
    respond_error(r, 404, "Function Not Found", NULL, 0);
    r->close_after = body_expected(r);
    log_access(NULL, r->request_id, r->method, r->path, 404, r->remote, r->resp_len, elapsed_ms(r),
               NULL);
    respond(r);
    return 0;
  }
  if (r->route == ROUTE_ADMIN && h->admin_area->refuse(r)) {
    r->close_after = body_expected(r);
    respond(r);
    return 0;
  }
  if (body_expected(r)) {
    if (r->content_length > 0 && (uint64_t)r->content_length > h->cfg.max_body) {
      respond_error(r, 413, "Payload Too Large", NULL, 0);
      r->close_after = 1;
      log_access(r->name, r->request_id, r->method, r->path, 413, r->remote, r->resp_len,
                 elapsed_ms(r), "(Content-Length over --max-body)");
      respond(r);
    }
    return 0; /* the rest comes with LWS_CALLBACK_HTTP_BODY_COMPLETION */
  }
  dispatch(r);
  return 0;
}

static void body_check(lws_sorted_usec_list_t *sul) {
  struct http_req *r = lws_container_of(sul, struct http_req, body_timer);
  struct host *h = r->host;
  if ((r->deadline_ms && host_now_ms() >= r->deadline_ms) || (r->lingering && !r->window_bytes)) {
    lws_set_timeout(r->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    return;
  }
  if (r->lingering) {
    r->window_bytes = 0;
    lws_sul_schedule(lws_get_context(r->wsi), 0, &r->body_timer, body_check,
                     LINGER_IDLE_MS * LWS_US_PER_MS);
    return;
  }
  size_t floor = h->cfg.min_body_rate * (BODY_WINDOW_MS / 1000);
  if (!r->ready && !r->body_done && r->body_checks++ > 0 && r->window_bytes < floor) {
    respond_error(r, 408, "Request Timeout", "request body too slow", 0);
    r->close_after = 1;
    r->slow = 1;
    /* A peer too slow to send may be too slow to read its answer as well. */
    r->deadline_ms = host_now_ms() + LINGER_MS;
    log_access(r->name, r->request_id, r->method, r->path, 408, r->remote, r->resp_len,
               elapsed_ms(r), "(body slower than --min-body-rate)");
    respond(r);
  }
  r->window_bytes = 0;
  if (!r->body_done || r->deadline_ms)
    lws_sul_schedule(lws_get_context(r->wsi), 0, &r->body_timer, body_check,
                     BODY_WINDOW_MS * LWS_US_PER_MS);
}

/* Answers r now with status (and closes after it): the rest of the body is not read. */
static void body_refused(struct http_req *r, int status, const char *error, const char *why) {
  respond_error(r, status, error, why, 0);
  r->close_after = 1;
  log_info(r->name, r->request_id, "%s %s %d %s: %s", r->method, r->path, status, r->remote,
           why ? why : error);
  respond(r);
}

/* multipart/form-data goes to upload.c as it arrives. 1 when it took the bytes. */
static int body_upload(struct http_req *r, const void *in, size_t len) {
  if (!r->upload_checked) {
    r->upload_checked = 1;
    char boundary[MULTIPART_BOUNDARY_MAX + 1];
    const char *ct = http_header_lookup(r->wsi, r->headers, "content-type", r->headers_lazy);
    int b = r->route == ROUTE_ADMIN ? 0 : multipart_boundary(ct, boundary, sizeof boundary);
    if (b < 0) {
      body_refused(r, 400, "Bad Request", "multipart/form-data without a valid boundary");
      return 1;
    }
    if (b > 0 && !(r->upload = upload_new(r->host, boundary))) {
      body_refused(r, 500, "Internal Server Error", "cannot take an upload now");
      return 1;
    }
  }
  if (!r->upload)
    return 0;
  if (r->upload_bytes + len > r->host->cfg.max_body) {
    body_refused(r, 413, "Payload Too Large", NULL);
    return 1;
  }
  r->upload_bytes += len;
  char err[256];
  int rc = len ? upload_feed(r->upload, in, len, err, sizeof err) : 0;
  if (rc == -1)
    body_refused(r, 400, "Bad Request", err);
  else if (rc == -2)
    body_refused(r, 503, "Service Unavailable", "too many request bytes in flight; retry");
  else if (rc < 0)
    body_refused(r, 500, "Internal Server Error", "cannot store the upload");
  return 1;
}

static int http_body(struct http_req *r, const void *in, size_t len) {
  if (r->lingering) {
    r->drained += len;
    r->window_bytes += len;
    return r->drained > LINGER_BYTES || host_now_ms() >= r->deadline_ms ? -1 : 0;
  }
  r->window_bytes += len;
  if (r->ready)
    return 0; /* already answered (413): the rest is discarded */
  if (body_upload(r, in, len))
    return 0;
  if (r->body_len + len > r->host->cfg.max_body) {
    respond_error(r, 413, "Payload Too Large", NULL, 0);
    r->close_after = 1;
    log_access(r->name, r->request_id, r->method, r->path, 413, r->remote, r->resp_len,
               elapsed_ms(r), "(body over --max-body)");
    respond(r);
    return 0;
  }
  if (r->body_len + len + 1 > r->body_cap) {
    struct host *h = r->host;
    size_t want = r->body_len + len + 1, cap = r->body_cap ? r->body_cap : 4096;
    while (cap < want)
      cap *= 2;
    /* The announced length is all that is needed: no doubling past it. */
    if (r->content_length > 0 && want <= (size_t)r->content_length + 1 &&
        cap > (size_t)r->content_length + 1)
      cap = (size_t)r->content_length + 1;
    if (h->http_body_bytes - r->body_cap + cap > h->cfg.max_body_total) {
      respond_error(r, 503, "Service Unavailable", "too many request bytes in flight; retry", 0);
      r->close_after = 1;
      log_access(r->name, r->request_id, r->method, r->path, 503, r->remote, r->resp_len,
                 elapsed_ms(r), "(bodies in flight over --max-body-total)");
      respond(r);
      return 0;
    }
    char *b = realloc(r->body, cap);
    if (!b)
      return -1;
    h->http_body_bytes += cap - r->body_cap;
    r->body = b;
    r->body_cap = cap;
  }
  if (len) /* lws may end a body with (NULL, 0) */
    memcpy(r->body + r->body_len, in, len);
  r->body_len += len;
  r->body[r->body_len] = 0;
  return 0;
}

/* The headers a function set (cloud_response_header), after the host's own. 0 or -1. */
static int add_resp_headers(struct lws *wsi, const struct http_req *r, unsigned char **p,
                            unsigned char *end) {
  size_t i;
  json_t *pair;
  json_array_foreach(r->resp_headers, i, pair) {
    char name[104];
    const char *v = json_string_value(json_array_get(pair, 1));
    snprintf(name, sizeof name, "%s:", json_string_value(json_array_get(pair, 0)));
    if (lws_add_http_header_by_name(wsi, (unsigned char *)name, (const unsigned char *)v,
                                    (int)strlen(v), p, end))
      return -1;
  }
  return 0;
}

static int http_write(struct lws *wsi, struct http_req *r) {
  unsigned char hdr[LWS_PRE + 8192], *start = hdr + LWS_PRE, *p = start,
                                     *end = hdr + sizeof hdr - 1;
  if (lws_add_http_common_headers(wsi, (unsigned)r->status, r->content_type,
                                  (lws_filepos_t)r->resp_len, &p, end) ||
      lws_add_http_header_by_name(
          wsi, (const unsigned char *)"request-id:", (const unsigned char *)r->request_id,
          (int)strlen(r->request_id), &p, end))
    return -1;
  if (add_resp_headers(wsi, r, &p, end))
    return -1;
  if (r->close_after &&
      lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (unsigned char *)"close", 5, &p, end))
    return -1;
  if (lws_finalize_write_http_header(wsi, start, &p, end))
    return -1;
  /* HEAD: the headers GET would give (content-length included), no body (RFC 9110 9.3.2). */
  int head = r->method_index == LWSHUMETH_HEAD;
  if (r->resp_len && !head &&
      lws_write(wsi, r->resp + LWS_PRE, r->resp_len, LWS_WRITE_HTTP_FINAL) < (int)r->resp_len)
    return -1;
  int close_after = r->close_after;
  if (close_after && !r->slow && !r->body_done && r->content_length > 0) {
    /* Answered before the body was read (413, 503, 404): read the rest and drop it, then
     * close; what is buffered goes now. */
    r->lingering = 1;
    r->window_bytes = 0;
    r->deadline_ms = host_now_ms() + LINGER_MS;
    r->host->http_body_bytes -= r->body_cap;
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    lws_sul_schedule(lws_get_context(wsi), 0, &r->body_timer, body_check,
                     LINGER_IDLE_MS * LWS_US_PER_MS);
    return 0;
  }
  struct session *s = lws_wsi_user(wsi);
  s->req = NULL;
  req_free(r);
  if (close_after)
    return -1;
  return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* A streamed response: the head once, then one chunk per writable turn (what lws cannot take
 * at once it keeps, and it asks again only when that went), then the last chunk. A slow
 * reader's bytes wait in the stream, bounded by --max-send-queue (the writer gets EFULL). */
#define STREAM_CHUNK 16384

static int http_stream_write(struct lws *wsi, struct session *s, struct http_req *r) {
  int status, sse;
  const char *ctype;
  if (stream_head(r->stream, &status, &ctype, &sse)) {
    unsigned char hdr[LWS_PRE + 8192], *start = hdr + LWS_PRE, *p = start,
                                       *end = hdr + sizeof hdr - 1;
    if (lws_add_http_header_status(wsi, (unsigned)status, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (const unsigned char *)ctype,
                                     (int)strlen(ctype), &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
                                     (const unsigned char *)"chunked", 7, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-cache", 8, &p, end) ||
        lws_add_http_header_by_name(
            wsi, (const unsigned char *)"request-id:", (const unsigned char *)r->request_id,
            (int)strlen(r->request_id), &p, end))
      return -1;
    if (add_resp_headers(wsi, r, &p, end))
      return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
      return -1;
    lws_callback_on_writable(wsi);
    return 0;
  }
  /* "<hex>\r\n" goes right before the data, "\r\n" right after it. */
  unsigned char buf[LWS_PRE + 10 + STREAM_CHUNK + 2];
  char *data = (char *)buf + LWS_PRE + 10;
  int fin = 0;
  size_t n = stream_take(r->host, r->stream, data, STREAM_CHUNK, &fin);
  if (n) {
    char head[12];
    int k = snprintf(head, sizeof head, "%zx\r\n", n);
    memcpy(data - k, head, (size_t)k);
    memcpy(data + n, "\r\n", 2);
    if (lws_write(wsi, (unsigned char *)data - k, (size_t)k + n + 2, LWS_WRITE_HTTP) < 0)
      return -1;
    lws_callback_on_writable(wsi);
    return 0;
  }
  if (!fin)
    return 0;
  memcpy(data, "0\r\n\r\n", 5);
  if (lws_write(wsi, (unsigned char *)data, 5, LWS_WRITE_HTTP_FINAL) < 0)
    return -1;
  log_info(r->name, r->request_id, "%s %s stream ended", r->method, r->path);
  s->req = NULL;
  req_free(r);
  return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* lws 4.1 closes a connection whose request head never completed without a word: the
 * client sees an empty reply. Its only callback on such a connection is CLOSED_HTTP, with no
 * session (none is bound before a request). When nothing was ever sent on the connection and
 * the peer is still there, answer for lws: 408 when the head stopped coming (lws's 10 s
 * header timeout). A head lws refused (too many fields, too long) cannot be answered here:
 * lws has shut the socket down before this callback (close.c just_kill_connection) and the
 * write fails; head_guard.c answers those before lws reads them. Plain TCP only: under TLS
 * the bytes would have to go through lws. */
static void head_refused(struct host *h, struct lws *wsi) {
  struct peer_state ps;
  if (lws_is_ssl(wsi) || peer_probe(wsi, &ps) < 0 || !ps.open || ps.bytes_sent || ps.idle_ms < 1000)
    return;
  static const char body[] =
      "{\"error\":\"Request Timeout\",\"message\":\"request head not complete\"}";
  char resp[256];
  int n = snprintf(resp, sizeof resp,
                   "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                   "content-length: %zu\r\nconnection: close\r\n\r\n%s",
                   sizeof body - 1, body);
  if (peer_write_last(wsi, resp, (size_t)n) < 0)
    return;
  char remote[64];
  lws_get_peer_simple(wsi, remote, sizeof remote);
  h->stats.http_requests++;
  log_info(NULL, NULL, "408 %s: request head not complete after %u ms", remote, ps.idle_ms);
}

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, struct session *s, void *in,
                  size_t len) {
  struct host *h = lws_context_user(lws_get_context(wsi));
  switch (reason) {
  case LWS_CALLBACK_HTTP:
    if (s->req) { /* a pipelined request before the last was answered */
      req_free(s->req);
      s->req = NULL;
    }
    return http_begin(h, wsi, s, in);
  case LWS_CALLBACK_HTTP_BODY:
    return s->req ? http_body(s->req, in, len) : 0;
  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    if (!s->req)
      return 0;
    s->req->body_done = 1;
    if (s->req->lingering)
      return -1; /* everything read: the close sends no reset */
    if (!s->req->ready)
      dispatch(s->req);
    return 0;
  case LWS_CALLBACK_HTTP_WRITEABLE:
    if (s->req && s->req->stream)
      return http_stream_write(wsi, s, s->req);
    if (s->req && s->req->ready)
      return http_write(wsi, s->req);
    return 0;
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
    if (accept_via_admin(h, lws_get_socket_fd(wsi)))
      return http_reject(wsi, 404, "the admin listener serves /_/ only");
    int rc = ws_confirm_upgrade(h, wsi);
    return rc ? rc : http_admit_upgrade(h, wsi);
  }
  case LWS_CALLBACK_CLOSED_HTTP:
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    if (s && s->req) {
      req_free(s->req);
      s->req = NULL;
    } else if (!s)
      head_refused(h, wsi);
    return 0;
  default:
    return 0;
  }
}
