/* shared: GET /shared?key=K answers cloud_shared_get(K) as JSON (null when absent). */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  const char *key = json_string_value(json_object_get(ctx->query, "key"));
  if (!key)
    return cloud_response_json(ctx, 400, json_pack("{s:s}", "error", "key missing"));
  json_t *value = cloud_shared_get(key);
  return cloud_response_json(ctx, 200, value ? value : json_null());
}
