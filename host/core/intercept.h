/* intercept.h: Laf's __interceptor__: runs before every HTTP function and every WebSocket
 * upgrade, and decides whether the target runs. Owns the fail-closed rule. */
#ifndef WSHOST_INTERCEPT_H
#define WSHOST_INTERCEPT_H

#include "http.h"

#define INTERCEPTOR "__interceptor__"

/* Runs __interceptor__ on ctx (the target's context: function_name is the target) with r as
 * where its response goes. 0: the target may run. 1: answered, r holds the response (the
 * interceptor's own; 403 when it returned non-zero without one; 503 when its file is deployed
 * but no version of it can run: refused, quarantined or failing closes the door, never opens
 * it). Without an __interceptor__.so in the folder: 0. */
int intercept(struct host *h, struct http_req *r, FunctionContext *ctx);

#endif
