/* gate: a test __interceptor__. /admin_only needs x-api-key = cloud_env("API_KEY");
 * x-gate: fail returns non-zero (403), x-gate: crash dereferences NULL; an upgrade with ?deny
 * is answered 429 by the interceptor itself (?deny=403: 403). Everything else goes on. */
#include <cloud.h>
#include <string.h>

CLOUD_FUNCTION(ctx) {
  const char *fn = ctx->function_name;
  const char *gate = cloud_request_header(ctx, "x-gate");
  cloud_log(ctx, "gate: %s %s", ctx->method, fn);
  if (gate && !strcmp(gate, "fail"))
    return 7;
  if (gate && !strcmp(gate, "crash")) {
    volatile int *p = NULL;
    return *p;
  }
  if (!strcmp(fn, "admin_only")) {
    const char *want = cloud_env("API_KEY"), *got = cloud_request_header(ctx, "x-api-key");
    if (!want || !got || strcmp(want, got))
      return cloud_response_json(ctx, 403, json_pack("{ss}", "error", "bad api key"));
  }
  const char *deny = json_string_value(json_object_get(ctx->query, "deny"));
  if (!strcmp(fn, "__websocket__") && deny && !strcmp(deny, "403"))
    return cloud_response_json(ctx, 403, json_pack("{ss}", "error", "no"));
  if (!strcmp(fn, "__websocket__") && deny)
    return cloud_response_text(ctx, 429, "slow down");
  return 0;
}
