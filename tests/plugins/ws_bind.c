/* ws_bind: a __websocket__ that binds the app's own user id (cloud_bind_user) when the
 * upgrade URL carries ?name=<id>&secret=letmein, and otherwise keeps the host's user.
 * Greets {"event":"connected","user_id":...,"bind_rc":n}; message "whoami" replies
 * ctx->user_id, message "bind" tries cloud_bind_user outside the connection event and
 * replies the return code (CLOUD_ESTATE = -6). */
#include <cloud.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    const char *name = json_string_value(json_object_get(ctx->query, "name"));
    const char *secret = json_string_value(json_object_get(ctx->query, "secret"));
    int rc = 1; /* 1: nothing asked */
    if (name && secret && strcmp(secret, "letmein") == 0)
      rc = cloud_bind_user(ctx, name);
    json_t *g = json_pack("{s:s, s:s?, s:i}", "event", "connected", "user_id", ctx->user_id,
                          "bind_rc", rc);
    char *text = json_dumps(g, JSON_COMPACT);
    cloud_socket_send(ctx->socket, text);
    free(text);
    json_decref(g);
  } else if (cloud_method_is(ctx, "WebSocket:message")) {
    if (strcmp(ctx->params.data, "whoami") == 0) {
      cloud_socket_send(ctx->socket, ctx->user_id ? ctx->user_id : "(null)");
    } else if (strcmp(ctx->params.data, "bind") == 0) {
      char buf[32];
      snprintf(buf, sizeof buf, "%d", cloud_bind_user(ctx, "late-binder"));
      cloud_socket_send(ctx->socket, buf);
    }
  }
  return 0;
}
