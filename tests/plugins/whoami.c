/* whoami: answers what the host told it: the JWT claims (ctx->user), the user id, and a value
 * of its configuration (cloud_env(?env=NAME)). HTTP and __websocket__ alike; each call logged. */
#include <cloud.h>
#include <stdlib.h>

static json_t *describe(FunctionContext *ctx) {
  const char *name = json_string_value(json_object_get(ctx->query, "env"));
  const char *v = name ? cloud_env(name) : NULL;
  return json_pack("{sO? ss? ss? ss}", "user", ctx->user, "user_id", ctx->user_id, "env", v,
                   "function", ctx->function_name);
}

CLOUD_FUNCTION(ctx) {
  cloud_log(ctx, "whoami ran: %s", ctx->method);
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    json_t *o = describe(ctx);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    int rc = s ? cloud_socket_send(ctx->socket, s) : CLOUD_ENOMEM;
    free(s);
    return rc;
  }
  if (ctx->socket.id)
    return 0;
  return cloud_response_json(ctx, 200, describe(ctx));
}
