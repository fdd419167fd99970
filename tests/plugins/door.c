/* door: a test __websocket__ for the connection event's decisions. ?bind=ID binds the user;
 * ?reject=STATUS refuses the upgrade (after a send and a bind, which must leave no trace);
 * ?accept=NAME picks that offered subprotocol. Greets with {"user_id", "protocols"}; echoes. */
#include <cloud.h>
#include <stdlib.h>

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    const char *bind = json_string_value(json_object_get(ctx->query, "bind"));
    const char *reject = json_string_value(json_object_get(ctx->query, "reject"));
    const char *accept = json_string_value(json_object_get(ctx->query, "accept"));
    if (bind && cloud_bind_user(ctx, bind) < 0)
      return cloud_reject(ctx, 400, "bad id");
    if (accept && cloud_accept_protocol(ctx, accept) < 0)
      cloud_log(ctx, "door: %s was not offered", accept);
    json_t *hello = json_pack("{ss ss*}", "user_id", ctx->user_id, "protocols", ctx->protocols);
    char *text = json_dumps(hello, JSON_COMPACT);
    cloud_socket_send(ctx->socket, text);
    free(text);
    json_decref(hello);
    if (reject)
      return cloud_reject(ctx, atoi(reject), "go away");
    return 0;
  }
  if (cloud_method_is(ctx, "WebSocket:message"))
    return cloud_socket_send(ctx->socket, ctx->params.data);
  if (cloud_method_is(ctx, "WebSocket:close"))
    cloud_log(ctx, "door: close %d", ctx->params.code);
  return 0;
}
