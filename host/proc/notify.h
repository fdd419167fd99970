/* notify.h: what systemd hears from the serving process (sd_notify): READY once the port
 * listens, STOPPING when the drain starts, WATCHDOG=1 from a loop timer while the loop turns. */
#ifndef WSHOST_NOTIFY_H
#define WSHOST_NOTIFY_H

#include <ev.h>

/* Each is a no-op without $NOTIFY_SOCKET (not started by systemd). */
void notify_ready(int port);
void notify_stopping(void);
/* Starts timer on loop, pinging the watchdog every half of $WATCHDOG_USEC, when systemd asked
 * for one (WatchDogSec=). The ping comes from the loop itself, so a stuck loop stops it and
 * systemd restarts the service. 1 when started, 0 when not asked for. */
int notify_watchdog_start(struct ev_loop *loop, ev_timer *timer);
void notify_watchdog_stop(struct ev_loop *loop, ev_timer *timer);

#endif
