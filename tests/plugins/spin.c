/* spin: a __websocket__ for tests that hangs the event loop on purpose: the message "spin"
 * loops forever (SIGTERM must still end the host); anything else is echoed. */
#include <cloud.h>
#include <string.h>

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:message") && !ctx->params.is_binary && ctx->params.len == 4 &&
      !memcmp(ctx->params.data, "spin", 4)) {
    volatile unsigned long n = 0;
    for (;;)
      n++;
  }
  if (cloud_method_is(ctx, "WebSocket:message"))
    return cloud_socket_send(ctx->socket, ctx->params.data) < 0;
  return 0;
}
