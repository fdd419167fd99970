/* cpu_hash: the example __websocket__'s job with ~200 us of CPU per message (FNV-1a rounds over
 * a 4 KB buffer), for make bench: how --isolation process spreads CPU-heavy functions over
 * the cores. Greets like the example; answers "I have received your message". */
#include "greet.h"

static unsigned long burn(void) {
  static unsigned char buf[4096];
  unsigned long h = 1469598103934665603UL;
  for (int round = 0; round < 48; round++)
    for (size_t i = 0; i < sizeof buf; i++)
      h = (h ^ (buf[i] + (unsigned)round)) * 1099511628211UL;
  return h;
}

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:connection"))
    return greet(ctx);
  if (cloud_method_is(ctx, "WebSocket:message")) {
    volatile unsigned long sink = burn();
    (void)sink;
    return cloud_socket_send(ctx->socket, "I have received your message");
  }
  return 0;
}
