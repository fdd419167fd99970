/* echo.c: answers with what it was given: method, url, query, headers, parsed and raw body. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  json_t *out =
      json_pack("{ss ss sO sO sO}", "method", ctx->method, "url", ctx->url, "query", ctx->query,
                "headers", ctx->headers, "body", ctx->body ? ctx->body : json_null());
  json_object_set_new(out, "body_raw",
                      ctx->body_raw ? json_stringn_nocheck(ctx->body_raw, ctx->body_len)
                                    : json_null());
  return cloud_response_json(ctx, 200, out);
}
