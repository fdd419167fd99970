/* http.h: HTTP requests: routing to functions and to /_/, bodies, responses, request ids.
 * Owns struct http_req for the life of one request. */
#ifndef WSHOST_HTTP_H
#define WSHOST_HTTP_H

#include "host.h"
#include "http_answer.h"
#include "http_parse.h"

struct http_req {
  struct host *host;
  struct lws *wsi;
  char name[FN_NAME_MAX * 2 + 1];
  int route;
  int method_index;
  const char *method;
  char request_id[72];
  char *path;
  json_t *query, *headers;
  int headers_lazy; /* headers holds only what was looked up (CLOUD_OPT_LAZY_HEADERS) */
  char *body;
  size_t body_len, body_cap;
  int64_t content_length; /* -1 unknown */
  /* Body pace: checked every BODY_WINDOW_MS while a body is being read. */
  lws_sorted_usec_list_t body_timer;
  size_t window_bytes; /* body bytes since the last check */
  int body_checks;     /* checks so far; the first window is the grace */
  int body_done;       /* the whole body has arrived */
  /* Answered before the body was read: the rest is read and dropped (up to a bound) before
   * the connection closes, so the client is not reset before it reads the answer. */
  int lingering, slow;
  size_t drained;
  int64_t deadline_ms; /* closed then at the latest, 0: none */
  /* Response */
  int status;
  unsigned char *resp; /* LWS_PRE bytes of room, then resp_len bytes */
  size_t resp_len;
  char content_type[128];
  json_t *resp_headers; /* array of [name, value] */
  int responded, close_after, ready;
  /* cloud_defer: the response comes later, through http_deferred_done (defer.c owns it). */
  int deferred;
  int no_defer; /* an upgrade's interceptor: nothing can wait, the upgrade is answered now */
  struct deferred *defer;
  /* multipart/form-data: parsed as it arrives (upload.c), never held in body. */
  struct upload *upload;
  int upload_checked;
  size_t upload_bytes;
  /* cloud_stream_* / cloud_sse_send: the response goes out as it is written (stream.c). */
  struct stream *stream;
  FunctionContext *stream_ctx; /* the call's ctx, kept while its stream may be written */
  char remote[64];
  uint64_t started_ns; /* metrics_now_ns() when the request line arrived: the access line */
};

/* The admin area (/_/...): admin.c provides it and main.c hands it over (host->admin_area), so
 * http.c routes there without naming the admin module and calls go one way, admin -> http.
 * refuse: sets a response and returns 1 when the request stops there (before its body is
 * read); handle: answers it. Without one, /_/ is a 404. */
struct http_area {
  int (*refuse)(struct http_req *r);
  void (*handle)(struct http_req *r);
};

/* The lws protocol callback's HTTP reasons land here. */
int http_callback(struct lws *wsi, enum lws_callback_reasons reason, struct session *s, void *in,
                  size_t len);

/* Whole answers to an upgrade request, http_reject and http_answer: http_answer.h. */

/* Any header by name (lower case, no colon) into headers (cached there); NULL if absent.
 * lazy: headers was not built by http_headers_json (it starts empty), so a header lws knows
 * by name may be missing from it; otherwise only custom ones are. */
const char *http_header_lookup(struct lws *wsi, json_t *headers, const char *name, int lazy);

/* Response setters behind cloud_response_*: set status and a body (copied), content type. */
int http_set_response(struct http_req *r, int status, const char *content_type, const char *body,
                      size_t len);
int http_add_header(struct http_req *r, const char *name, const char *value);
/* The function that got r's uploaded files returned: they are removed (--isolation process:
 * when its worker says so). */
void http_uploads_done(struct http_req *r);
/* A deferred response was set (or timed out): log the request's line and send it. */
void http_deferred_done(struct http_req *r);

#endif
