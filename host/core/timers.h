/* timers.h: timers owned by a function by name (not by a code pointer), on the event loop.
 * Firing calls the function's current version with method "Timer". */
#ifndef WSHOST_TIMERS_H
#define WSHOST_TIMERS_H

#include "host.h"

/* Timers the whole host may hold (CLOUD_EFULL past it). */
#define TIMERS_MAX 4096

int timers_open(struct host *h);
void timers_close(struct host *h);
/* Back ends of cloud_timer_start/stop for function fn; loop thread only. Starting a name that
 * exists replaces it. 0, CLOUD_EINVAL (bad name), CLOUD_EFULL, CLOUD_ENOMEM. */
int timers_start(struct host *h, const char *fn, const char *name, uint64_t first_ms,
                 uint64_t every_ms);
/* 0, or CLOUD_EINVAL when fn has no timer of that name. */
int timers_stop(struct host *h, const char *fn, const char *name);
/* The period of the timer being fired (invoke's obj for INV_TIMER), 0 for a one-shot. */
uint64_t timers_every_ms(const void *timer);
size_t timers_count(const struct host *h);

#endif
