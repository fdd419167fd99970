/* push.c: POST /push {"user_id": "...", "message": "..."} sends a message to every connection
 * of a user, or queues it until the user comes back (the second half of Laf's guide). */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  const char *user = json_string_value(json_object_get(ctx->body, "user_id"));
  const char *message = json_string_value(json_object_get(ctx->body, "message"));
  if (!user || !message)
    return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "need user_id and message"));
  int n = cloud_send_to_user(user, message);
  if (n >= 0)
    return cloud_response_json(ctx, 200, json_pack("{si}", "delivered", n));
  if (n == CLOUD_ENOUSER || n == CLOUD_EINVAL)
    return cloud_response_json(ctx, 404, json_pack("{ss}", "error", "no such user"));
  if (n == CLOUD_EUNAVAIL) /* a cluster whose Redis is down: not sent to other nodes, not queued */
    return cloud_response_json(ctx, 503, json_pack("{ss}", "error", cloud_strerror(n)));
  if (n == CLOUD_EFULL)
    return cloud_response_json(ctx, 507, json_pack("{ss}", "error", "outbox full"));
  return cloud_response_json(ctx, 500, json_pack("{ss}", "error", cloud_strerror(n)));
}
