/* __websocket__.c: the demo of Laf's WebSocket guide in C. Each connection is greeted with its
 * user id (and, for a new user, the token to resume it); each message is answered. */
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
    return cloud_socket_send(ctx->socket, "I have received your message");
  return 0;
}
