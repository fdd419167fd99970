/* invocation.h: the host-private record of the plugin call in progress (what kind of event,
 * for which host object), set by the dispatcher around every call into a function. */
#ifndef WSHOST_INVOCATION_H
#define WSHOST_INVOCATION_H

#include "host.h"
#include "http_parse.h"

enum inv_kind { INV_WS = 1, INV_HTTP, INV_TIMER, INV_INIT };

/* Lives on the dispatcher's stack for the length of one plugin call. The SDK calls that take
 * a FunctionContext find their object here, never through fields the plugin can write: a
 * plugin that clears ctx->socket or forges ctx->host redirects nothing. */
struct invocation {
  enum inv_kind kind;
  void *obj; /* struct conn * (WS), struct http_req * (HTTP), NULL (timer, __init__) */
  const FunctionContext *ctx;     /* the context handed to the plugin */
  char function[FN_NAME_MAX + 1]; /* the function called (host-owned copy) */
  struct invocation *prev;        /* an enclosing call, if any */
};

/* Where plugin calls run when not in this process: --isolation process sets host->runner to
 * worker.c's (workers_invoke) while its pool exists, so invoke() never names the proc layer. */
struct invocation_runner {
  int (*invoke)(struct host *h, enum inv_kind kind, void *obj, const char *name,
                FunctionContext *ctx, int *found);
};

/* Calls function `name` with ctx, recording (kind, obj) for the length of the call. Returns
 * the function's result; *found is 0 when no version is loaded. Loop thread only. */
int invoke(struct host *h, enum inv_kind kind, void *obj, const char *name, FunctionContext *ctx,
           int *found);

/* The object of the call in progress if it is of `kind` and ctx is its context, else NULL.
 * NULL too off the loop thread and between calls. */
void *invocation_obj(struct host *h, enum inv_kind kind, const FunctionContext *ctx);
/* The record of the call in progress on the loop thread, NULL if none. */
struct invocation *invocation_current(struct host *h);

/* The loop thread: set once when the loop starts. */
void invocation_set_loop_thread(void);
int invocation_on_loop(void);

#endif
