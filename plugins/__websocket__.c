/* __websocket__.c: the demo of Laf's WebSocket guide in C. Each connection is greeted with its
 * user id (and, for a new user, the token to resume it); each message is answered. */
#include <cloud.h>
#include <stdio.h>

/* It never reads ctx->headers: the host need not build them for every upgrade. */
CLOUD_OPTIONS(CLOUD_OPT_LAZY_HEADERS);

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    /* Written by hand, not with json_pack/json_dumps: user ids ([A-Za-z0-9_.@:-]) and tokens
     * (base64url) never need escaping in JSON, and this runs for every connection. */
    char hello[256];
    if (ctx->user_token)
      snprintf(hello, sizeof hello, "{\"event\":\"connected\",\"user_id\":\"%s\",\"token\":\"%s\"}",
               ctx->user_id, ctx->user_token);
    else
      snprintf(hello, sizeof hello, "{\"event\":\"connected\",\"user_id\":\"%s\",\"token\":null}",
               ctx->user_id);
    return cloud_socket_send(ctx->socket, hello);
  }
  if (cloud_method_is(ctx, "WebSocket:message"))
    return cloud_socket_send(ctx->socket, "I have received your message");
  return 0;
}
