/* ws_closer: a __websocket__ for tests of socket handles and closing.
 *   "close1011"   -> cloud_socket_close(this socket, 1011, "closer asked")
 *   "keep"        -> remembers this socket's handle in a static; replies "kept"
 *   "stale"       -> cloud_socket_send on the kept handle; replies the return code ("-2")
 *   "stale-binary", "stale-close" -> the same with send_binary and close
 *   "fail"        -> replies its request id, then returns -1 (a handler error, no close)
 *   anything else -> replies "pong" */
#include <cloud.h>
#include <stdio.h>
#include <string.h>

static cloud_socket kept;

static void reply_int(cloud_socket s, int value) {
  char buf[32];
  snprintf(buf, sizeof buf, "%d", value);
  cloud_socket_send(s, buf);
}

CLOUD_FUNCTION(ctx) {
  if (!cloud_method_is(ctx, "WebSocket:message") || ctx->params.is_binary)
    return 0;
  const char *m = ctx->params.data;
  if (strcmp(m, "close1011") == 0)
    return cloud_socket_close(ctx->socket, 1011, "closer asked") < 0;
  if (strcmp(m, "keep") == 0) {
    kept = ctx->socket;
    cloud_socket_send(ctx->socket, "kept");
  } else if (strcmp(m, "stale") == 0) {
    reply_int(ctx->socket, cloud_socket_send(kept, "are you there?"));
  } else if (strcmp(m, "stale-binary") == 0) {
    reply_int(ctx->socket, cloud_socket_send_binary(kept, "x", 1));
  } else if (strcmp(m, "stale-close") == 0) {
    reply_int(ctx->socket, cloud_socket_close(kept, 1000, "late"));
  } else if (strcmp(m, "fail") == 0) {
    cloud_socket_send(ctx->socket, ctx->request_id ? ctx->request_id : "");
    return -1;
  } else {
    cloud_socket_send(ctx->socket, "pong");
  }
  return 0;
}
