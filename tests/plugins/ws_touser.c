/* ws_touser: greets like the example __websocket__, and answers every message through
 * cloud_send_to_user (to its own user), so the answer is a push, not a socket send. */
#include <cloud.h>
#include <stdlib.h>

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    json_t *hello = json_pack("{ss ss so}", "event", "connected", "user_id", ctx->user_id, "token",
                              ctx->user_token ? json_string(ctx->user_token) : json_null());
    char *text = json_dumps(hello, JSON_COMPACT);
    int rc = text ? cloud_socket_send(ctx->socket, text) : CLOUD_ENOMEM;
    free(text);
    json_decref(hello);
    return rc;
  }
  if (cloud_method_is(ctx, "WebSocket:message"))
    return cloud_send_to_user(ctx->user_id, ctx->params.data) < 0;
  return 0;
}
