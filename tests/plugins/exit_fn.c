/* exit_fn: a function that ends its process without a fault, for the supervisor tests. Over
 * HTTP, ?do=exit&status=N calls exit(N) in the call, ?do=_exit&status=N calls _exit(N) (no
 * exit hook runs: the host cannot tell who did it), ?do=thread calls exit(0) on a thread of
 * its own 100 ms after the call returned; anything else answers {"build":"exiting"}. With
 * EXIT_FN_AT_LOAD=N in the environment its constructor calls exit(N) as it is loaded. */
#include <cloud.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Exported (default visibility), so the backtrace from the thread runs through this file. */
__attribute__((visibility("default"), noinline)) void *exit_fn_thread(void *arg) {
  (void)arg;
  usleep(100 * 1000);
  exit(0);
}

__attribute__((constructor)) static void exit_fn_at_load(void) {
  const char *at_load = getenv("EXIT_FN_AT_LOAD");
  if (at_load)
    exit(atoi(at_load));
}

CLOUD_FUNCTION(ctx) {
  if (!strncmp(ctx->method, "WebSocket:", 10))
    return 0;
  const char *how = json_string_value(json_object_get(ctx->query, "do"));
  const char *st = json_string_value(json_object_get(ctx->query, "status"));
  int status = st ? atoi(st) : 0;
  if (how && !strcmp(how, "exit"))
    exit(status);
  if (how && !strcmp(how, "_exit"))
    _exit(status);
  pthread_t t;
  if (how && !strcmp(how, "thread") && !pthread_create(&t, NULL, exit_fn_thread, NULL))
    pthread_detach(t);
  return cloud_response_json(ctx, 200, json_pack("{s:s}", "build", "exiting"));
}
