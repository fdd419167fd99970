/* signals.h: SIGTERM/SIGINT through a real handler that works even while the loop is stuck in a
 * function: it wakes the loop to drain and arms a watchdog that ends the process regardless. */
#ifndef WSHOST_SIGNALS_H
#define WSHOST_SIGNALS_H

#include <ev.h>

/* Seconds past the drain timeout the watchdog allows for the way down (store flush, unload). */
#define SIGNALS_EXIT_MARGIN_S 2

/* Installs the handlers. On the first SIGTERM/SIGINT on_stop(signum, arg) runs on the loop
 * (when it is free) and, whatever the loop does, the process writes one log line and exits 1
 * drain_timeout_s + SIGNALS_EXIT_MARGIN_S seconds later. 0 or -errno. */
int signals_start(struct ev_loop *loop, int drain_timeout_s, void (*on_stop)(int signum, void *arg),
                  void *arg);
/* Stops waking the loop; the watchdog, once armed, stays armed until the process is gone. */
void signals_stop(void);

#endif
