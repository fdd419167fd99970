/* initfn.h: Laf's __init__ function: run once at start, before the port accepts, and again
 * after each reload of its own file. Owns when it runs and what a failure does. */
#ifndef WSHOST_INITFN_H
#define WSHOST_INITFN_H

#include "host.h"

#define INIT_FUNCTION "__init__"

/* Runs __init__ (method "Init") if it is loaded. Its result: 0, or what it returned (logged at
 * error). The host serves either way: see README "Laf's special functions" for why. */
int initfn_run(struct host *h, const char *when);
/* plugins_on_swap hook: runs __init__ again when its own file was reloaded. */
void initfn_on_swap(void *host, const char *name);

#endif
