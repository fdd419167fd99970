/* greet.h: the example __websocket__'s greeting, for test functions that greet like it
 * ({"event":"connected","user_id":..,"token":..}) and differ in what they do afterwards. */
#ifndef TEST_PLUGINS_GREET_H
#define TEST_PLUGINS_GREET_H

#include <cloud.h>
#include <stdlib.h>

static inline int greet(FunctionContext *ctx) {
  json_t *hello = json_pack("{ss ss so}", "event", "connected", "user_id", ctx->user_id, "token",
                            ctx->user_token ? json_string(ctx->user_token) : json_null());
  char *text = json_dumps(hello, JSON_COMPACT);
  int rc = text ? cloud_socket_send(ctx->socket, text) : CLOUD_ENOMEM;
  free(text);
  json_decref(hello);
  return rc;
}

#endif
