/* ws_echo: a __websocket__ for tests. Greets like the example (user id and token), echoes
 * every message as it came (text as text, binary as binary), and records each close event in
 * cloud_shared "ws_closes" (array of {user_id, code, reason}) and each error event in
 * "ws_errors", so the HTTP function `shared` can report them. With --isolation process two
 * workers may append at once and one append can be lost (a get then a set is not atomic
 * across processes): each close is also kept under "ws_close:<user id>", which only that
 * user's connections write. */
#include <cloud.h>
#include <stdio.h>
#include <stdlib.h>

static void append_shared(const char *key, json_t *item) {
  json_t *list = cloud_shared_get(key);
  if (!json_is_array(list)) {
    json_decref(list);
    list = json_array();
  }
  json_array_append_new(list, item);
  cloud_shared_set(key, list);
  json_decref(list);
}

static void send_json(cloud_socket s, json_t *j) {
  char *text = json_dumps(j, JSON_COMPACT);
  if (text)
    cloud_socket_send(s, text);
  free(text);
  json_decref(j);
}

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    send_json(ctx->socket, json_pack("{s:s, s:s?, s:s?}", "event", "connected", "user_id",
                                     ctx->user_id, "token", ctx->user_token));
  } else if (cloud_method_is(ctx, "WebSocket:message")) {
    if (ctx->params.is_binary)
      return cloud_socket_send_binary(ctx->socket, ctx->params.data, ctx->params.len) < 0;
    return cloud_socket_send(ctx->socket, ctx->params.data) < 0;
  } else if (cloud_method_is(ctx, "WebSocket:close")) {
    json_t *e = json_pack("{s:s?, s:i, s:s?}", "user_id", ctx->user_id, "code", ctx->params.code,
                          "reason", ctx->params.reason);
    char key[160];
    snprintf(key, sizeof key, "ws_close:%s", ctx->user_id ? ctx->user_id : "");
    append_shared(key, json_incref(e));
    append_shared("ws_closes", e);
  } else if (cloud_method_is(ctx, "WebSocket:error")) {
    append_shared("ws_errors",
                  json_pack("{s:s?, s:s?}", "user_id", ctx->user_id, "error", ctx->params.error));
  }
  return 0;
}
