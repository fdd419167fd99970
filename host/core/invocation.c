/* invocation.c: the host-private record of the plugin call in progress, and which thread is
 * the loop's. The one place the dispatchers (ws.c, http.c, timers.c) call plugins through. */
#include "invocation.h"

#include "plugins.h"

#include <pthread.h>
#include <stdio.h>

static pthread_t loop_thread;
static int loop_thread_set;

void invocation_set_loop_thread(void) {
  loop_thread = pthread_self();
  loop_thread_set = 1;
}

int invocation_on_loop(void) {
  /* Before the loop exists (start-up, unit tests) the only thread is the loop's. */
  return !loop_thread_set || pthread_equal(pthread_self(), loop_thread);
}

int invoke(struct host *h, enum inv_kind kind, void *obj, const char *name, FunctionContext *ctx,
           int *found) {
  struct invocation inv = {.kind = kind, .obj = obj, .ctx = ctx, .prev = h->inv};
  snprintf(inv.function, sizeof inv.function, "%s", name);
  h->inv = &inv;
  /* --isolation process: the serving process never runs plugin code itself. */
  int rc = h->runner ? h->runner->invoke(h, kind, obj, name, ctx, found)
                     : plugins_call(h->plugins, name, ctx, found);
  h->inv = inv.prev;
  return rc;
}

struct invocation *invocation_current(struct host *h) {
  return h && invocation_on_loop() ? h->inv : NULL;
}

void *invocation_obj(struct host *h, enum inv_kind kind, const FunctionContext *ctx) {
  struct invocation *inv = invocation_current(h);
  return inv && ctx && inv->kind == kind && inv->ctx == ctx ? inv->obj : NULL;
}
