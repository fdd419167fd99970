/* ws_bye: a __websocket__ for tests whose close handler sends "bye" to its own user with
 * cloud_send_to_user (that connection is closing, so it must be queued, not lost). Greets
 * like ws_echo and records each send's return code in cloud_shared "bye_rc" (array), and what
 * a send to its own (closed) socket returned in "bye_socket_rc". */
#include <cloud.h>
#include <stdlib.h>

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection")) {
    json_t *g = json_pack("{s:s, s:s?, s:s?}", "event", "connected", "user_id", ctx->user_id,
                          "token", ctx->user_token);
    char *text = json_dumps(g, JSON_COMPACT);
    if (text)
      cloud_socket_send(ctx->socket, text);
    free(text);
    json_decref(g);
  } else if (cloud_method_is(ctx, "WebSocket:message")) {
    return cloud_socket_send(ctx->socket, ctx->params.data) < 0;
  } else if (cloud_method_is(ctx, "WebSocket:close")) {
    int rc = cloud_send_to_user(ctx->user_id, "bye");
    /* Its own socket is closed already: the host must answer CLOUD_ECLOSED, not send. */
    json_t *own = json_integer(cloud_socket_send(ctx->socket, "own socket"));
    cloud_shared_set("bye_socket_rc", own);
    json_decref(own);
    json_t *list = cloud_shared_get("bye_rc");
    if (!json_is_array(list)) {
      json_decref(list);
      list = json_array();
    }
    json_array_append_new(list, json_integer(rc));
    cloud_shared_set("bye_rc", list);
    json_decref(list);
  }
  return 0;
}
