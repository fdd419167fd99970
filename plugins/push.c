/* push.c: POST /push {"user_id": "...", "message": "..."} sends a message to every connection
 * of a user, or queues it until the user comes back (the second half of Laf's guide). */
#include <cloud.h>

CLOUD_FUNCTION(ctx) {
  const char *user = json_string_value(json_object_get(ctx->body, "user_id"));
  const char *message = json_string_value(json_object_get(ctx->body, "message"));
  if (!user || !message)
    return cloud_response_json(ctx, 400, json_pack("{ss}", "error", "need user_id and message"));
  /* The answer waits for the outcome: in a cluster, until Redis took the push (200
   * {"delivered": n}, 0 = queued), or said the outbox is full (507) or is unreachable (503). */
  cloud_deferred *d = cloud_defer(ctx);
  int rc = d ? cloud_deferred_send_to_user(d, user, message) : CLOUD_ENOMEM;
  if (rc < 0 && d)
    return cloud_deferred_json(d, 500, json_pack("{ss}", "error", cloud_strerror(rc)));
  if (rc < 0)
    return cloud_response_json(ctx, 500, json_pack("{ss}", "error", cloud_strerror(rc)));
  return 0;
}
