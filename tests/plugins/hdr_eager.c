/* hdr_eager: a connection event that reports what it can see of the upgrade's headers, built
 * without CLOUD_OPTIONS (every plugin before CLOUD_OPTIONS existed): ctx->headers must be there.
 * hdr_lazy.c is the same code with CLOUD_OPT_LAZY_HEADERS. */
#include <cloud.h>
#include <stdlib.h>

#ifdef HDR_LAZY
CLOUD_OPTIONS(CLOUD_OPT_LAZY_HEADERS);
#endif

static json_t *str_or_null(const char *s) {
  return s ? json_string(s) : json_null();
}

CLOUD_FUNCTION(ctx) {
  if (!cloud_method_is(ctx, "WebSocket:connection"))
    return 0;
  json_t *ua_field = ctx->headers ? json_object_get(ctx->headers, "user-agent") : NULL;
  json_t *o = json_pack(
      "{s:b s:O s:o s:o s:o s:o s:O}", "headers_null", ctx->headers == NULL, "headers_ua",
      ua_field ? ua_field : json_null(), "ua", str_or_null(cloud_request_header(ctx, "User-Agent")),
      "custom", str_or_null(cloud_request_header(ctx, "x-custom")), "host",
      str_or_null(cloud_request_header(ctx, "host")), "absent",
      str_or_null(cloud_request_header(ctx, "x-not-sent")), "q",
      json_object_get(ctx->query, "q") ? json_object_get(ctx->query, "q") : json_null());
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  int rc = text ? cloud_socket_send(ctx->socket, text) : CLOUD_ENOMEM;
  free(text);
  json_decref(o);
  return rc < 0;
}
