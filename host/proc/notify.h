/* notify.h: what systemd hears (sd_notify): READY once the port listens, STOPPING when the
 * drain starts, WATCHDOG=1 from a loop timer while the serving loop turns. Only the process
 * systemd started speaks (NotifyAccess=main): a serving process under a supervisor sends its
 * pings to the supervisor, which relays them. */
#ifndef WSHOST_NOTIFY_H
#define WSHOST_NOTIFY_H

#include <ev.h>
#include <stdint.h>

/* Each is a no-op without $NOTIFY_SOCKET (not started by systemd). */
void notify_ready(int port);
void notify_stopping(void);
void notify_watchdog_ping(void);

/* A watchdog ping on its way from the serving process to the supervisor (control socket). */
#define NOTIFY_WATCHDOG_MAGIC 0x77737764u /* "wswd" */
struct notify_relay_msg {
  uint32_t magic;
  int32_t unused;
};

/* Starts timer on loop, pinging the watchdog every half of $WATCHDOG_USEC, when systemd asked
 * for one (WatchDogSec=). The ping comes from the loop itself, so a stuck loop stops it and
 * systemd restarts the service. *relay_fd (read at each ping; NULL or -1: none) is the control
 * socket to the supervisor, which relays each ping as the main process. 1 when started, 0 when
 * not asked for. */
int notify_watchdog_start(struct ev_loop *loop, ev_timer *timer, const int *relay_fd);
void notify_watchdog_stop(struct ev_loop *loop, ev_timer *timer);

#endif
