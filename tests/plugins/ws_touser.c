/* ws_touser: greets like the example __websocket__, and answers every message through
 * cloud_send_to_user (to its own user), so the answer is a push, not a socket send. */
#include "greet.h"

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection"))
    return greet(ctx);
  if (cloud_method_is(ctx, "WebSocket:message"))
    return cloud_send_to_user(ctx->user_id, ctx->params.data) < 0;
  return 0;
}
