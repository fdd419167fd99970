/* counter: counts its calls in cloud_shared "counter_calls" and answers
 * {"calls": n, "body": <parsed body or null>}. Proves whether a handler ran. */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  json_t *old = cloud_shared_get("counter_calls");
  json_t *calls = json_integer(json_integer_value(old) + 1);
  json_decref(old);
  cloud_shared_set("counter_calls", calls);
  return cloud_response_json(ctx, 200,
                             json_pack("{s:o, s:O?}", "calls", calls, "body", ctx->body));
}
