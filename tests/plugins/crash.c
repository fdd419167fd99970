/* crash: a function that takes the host down on request, for the crash tests. As
 * __websocket__ it greets like the example and echoes, but the message "segv" dereferences
 * NULL, "abort" aborts, "fpe" divides by zero, "stack" recurses until the stack is gone and
 * "thread" dereferences NULL on a thread of its own after the call returned, "loop" never
 * returns, "slowsegv" sleeps 2 s and then dereferences NULL (a call still running when a fixed
 * build is deployed); over HTTP, ?do=segv|abort|fpe|stack|thread|loop|slowsegv does the same.
 * crash_fixed.c builds the same file with CRASH_FIXED: it never crashes (the "fixed build").
 * The faulting function is exported (default visibility) so the backtrace names it. */
#include <cloud.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CRASH_BUILD
#define CRASH_BUILD "crashing"
#endif

__attribute__((visibility("default"), noinline)) int crash_recurse(volatile int depth) {
  volatile char pad[256];
  pad[depth & 255] = (char)depth;
  /* Always true at run time; the compiler cannot tell (it refuses a plain infinite recursion). */
  if (depth >= 0)
    return crash_recurse(depth + 1) + pad[0];
  return pad[0];
}

__attribute__((visibility("default"), noinline)) void *crash_thread(void *arg) {
  (void)arg;
  usleep(100 * 1000);
  volatile int *volatile p = NULL;
  return (void *)(long)*p;
}

__attribute__((visibility("default"), noinline)) int crash_deref_null(const char *how) {
#ifdef CRASH_FIXED
  (void)how;
  return 0;
#else
  volatile int *volatile p = NULL;
  volatile int zero = 0, seven = 7; /* 1 / x compiles to a compare, no division */
  if (!strcmp(how, "segv"))
    return *p;
  if (!strcmp(how, "slowsegv")) {
    sleep(2);
    return *p;
  }
  if (!strcmp(how, "abort"))
    abort();
  if (!strcmp(how, "fpe"))
    return seven / zero;
  if (!strcmp(how, "stack"))
    return crash_recurse(0);
  while (!strcmp(how, "loop"))
    ;
  pthread_t t;
  if (!strcmp(how, "thread") && !pthread_create(&t, NULL, crash_thread, NULL))
    pthread_detach(t);
  return 0;
#endif
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
    send_json(ctx->socket, json_pack("{s:s, s:s?, s:s?, s:s}", "event", "connected", "user_id",
                                     ctx->user_id, "token", ctx->user_token, "build", CRASH_BUILD));
  } else if (cloud_method_is(ctx, "WebSocket:message")) {
    crash_deref_null(ctx->params.data ? ctx->params.data : "");
    return cloud_socket_send(ctx->socket, ctx->params.data) < 0;
  } else if (!strncmp(ctx->method, "WebSocket:", 10)) {
    return 0;
  } else {
    const char *how = json_string_value(json_object_get(ctx->query, "do"));
    crash_deref_null(how ? how : "");
    return cloud_response_json(ctx, 200, json_pack("{s:s}", "build", CRASH_BUILD));
  }
  return 0;
}
