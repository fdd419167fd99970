/* slow_connect: a __websocket__ whose connection event takes ?sleep=N seconds (blocking, as a
 * function waiting on something slow would) before it greets like the example; messages are
 * echoed. With --isolation process the serving process waits for that answer on its loop. */
#include "greet.h"

#include <string.h>
#include <unistd.h>

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    const char *s = json_string_value(json_object_get(ctx->query, "sleep"));
    if (s)
      sleep((unsigned)atoi(s));
    return greet(ctx);
  }
  if (cloud_method_is(ctx, "WebSocket:message"))
    return cloud_socket_send(ctx->socket, ctx->params.data) < 0;
  return 0;
}
