/* slow_echo: a __websocket__ for the isolation tests. Echoes every message; "sleep" first
 * blocks its caller for 2 s ("sleep N": N s; a function waiting on something slow, without
 * cloud_defer), and
 * "pid" answers with the process that ran it. Over HTTP: {"pid": ..}. */
#include <cloud.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:message")) {
    const char *m = ctx->params.data ? ctx->params.data : "";
    if (!strcmp(m, "sleep"))
      sleep(2);
    else if (!strncmp(m, "sleep ", 6))
      sleep((unsigned)atoi(m + 6));
    if (!strcmp(m, "pid")) {
      char buf[32];
      snprintf(buf, sizeof buf, "pid %d", (int)getpid());
      return cloud_socket_send(ctx->socket, buf) < 0;
    }
    return cloud_socket_send(ctx->socket, m) < 0;
  }
  if (!strncmp(ctx->method, "WebSocket:", 10))
    return 0;
  return cloud_response_json(ctx, 200, json_pack("{s:i}", "pid", (int)getpid()));
}
