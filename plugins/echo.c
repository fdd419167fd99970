/* echo.c: answers with what it was given: method, url, query, headers, parsed and raw body.
 * ?header=<name> (repeatable) also looks up any request header by name, custom ones too. */
#include <cloud.h>

/* Looks up each ?header= name; the result maps the name to its value or null. */
static json_t *lookup_headers(FunctionContext *ctx) {
  json_t *names = json_object_get(ctx->query, "header"), *found = json_object();
  json_t *one = json_is_string(names) ? json_pack("[O]", names) : json_incref(names);
  size_t i;
  json_t *name;
  json_array_foreach(one, i, name) {
    const char *v = cloud_request_header(ctx, json_string_value(name));
    json_object_set_new(found, json_string_value(name), v ? json_string(v) : json_null());
  }
  json_decref(one);
  return found;
}

CLOUD_FUNCTION(ctx) {
  json_t *found = lookup_headers(ctx); /* before "headers" is copied: lookups add to it */
  json_t *out = json_pack("{ss ss sO sO sO so}", "method", ctx->method, "url", ctx->url,
                          "query", ctx->query, "headers", ctx->headers, "body",
                          ctx->body ? ctx->body : json_null(), "found", found);
  json_object_set_new(out, "body_raw",
                      ctx->body_raw ? json_stringn_nocheck(ctx->body_raw, ctx->body_len)
                                    : json_null());
  return cloud_response_json(ctx, 200, out);
}
