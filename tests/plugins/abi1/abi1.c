/* abi1: a function built against the ABI 1 header (tests/plugins/abi1/cloud.h), to prove a
 * host serving ABI 2 still loads and serves it: echoes WebSocket messages, answers HTTP. */
#include <cloud.h>

_Static_assert(CLOUD_ABI_VERSION == 1, "built against the ABI 1 header");

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:message"))
    return cloud_socket_send(ctx->socket, ctx->params.data) < 0;
  /* ?hdr: says what ctx->headers holds (built for every plugin without
   * CLOUD_OPTIONS, as all ABI 1 plugins are). */
  if (cloud_method_is(ctx, "WebSocket:connection") && json_object_get(ctx->query, "hdr")) {
    json_t *ua = json_object_get(ctx->headers, "user-agent");
    return cloud_socket_send(ctx->socket, ua ? json_string_value(ua) : "(no headers)") < 0;
  }
  if (ctx->socket.id)
    return 0;
  return cloud_response_json(
             ctx, 200, json_pack("{s:i, s:s}", "abi", CLOUD_ABI_VERSION, "url", ctx->url)) < 0;
}
