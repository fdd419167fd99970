/* fork_crash: a function that forks a child keeping every descriptor its process has (with
 * --isolation process: the worker's socket to the serving process), then aborts, for the test
 * that a dead worker is seen by its pid and not by the end of its socket. The child lives
 * ?hold=N seconds (default 20) and goes. Over HTTP, ?do=crash does it; as __websocket__, the
 * message "crash" does; anything else answers {"pid":..} (HTTP) or is echoed. */
#include <cloud.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fork_and_abort(int hold_s) {
  pid_t pid = fork();
  if (pid == 0) {
    sleep((unsigned)hold_s);
    _exit(0);
  }
  abort();
}

CLOUD_FUNCTION(ctx) {
  if (cloud_method_is(ctx, "WebSocket:message")) {
    if (ctx->params.data && !strcmp(ctx->params.data, "crash"))
      fork_and_abort(20);
    return cloud_socket_send(ctx->socket, ctx->params.data) < 0;
  }
  if (!strncmp(ctx->method, "WebSocket:", 10))
    return 0;
  const char *how = json_string_value(json_object_get(ctx->query, "do"));
  const char *hold = json_string_value(json_object_get(ctx->query, "hold"));
  if (how && !strcmp(how, "crash"))
    fork_and_abort(hold ? atoi(hold) : 20);
  return cloud_response_json(ctx, 200, json_pack("{s:i}", "pid", (int)getpid()));
}
