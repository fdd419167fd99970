/* notify.c: what systemd hears (sd_notify from libsystemd): READY, STOPPING and the watchdog
 * ping. The unit says NotifyAccess=main, so only the process systemd started may speak: with a
 * supervisor that is the supervisor, and the serving process's loop sends its pings to it over
 * the control socket to be relayed. The watchdog reads $WATCHDOG_USEC itself:
 * sd_watchdog_enabled() answers no in a child, whose pid is not $WATCHDOG_PID. */
#include "notify.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

static void send_state(const char *state) {
  /* 0: keep $NOTIFY_SOCKET, so a serving process the supervisor restarts can say READY again. */
  int rc = sd_notify(0, state);
  if (rc < 0)
    log_warn(NULL, NULL, "sd_notify(%.40s): %s", state, strerror(-rc));
}

void notify_ready(int port) {
  char state[96];
  snprintf(state, sizeof state, "READY=1\nSTATUS=listening on port %d", port);
  send_state(state);
}

void notify_stopping(void) {
  send_state("STOPPING=1\nSTATUS=draining connections");
}

void notify_watchdog_ping(void) {
  send_state("WATCHDOG=1");
}

static void watchdog_ping(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  const int *relay_fd = t->data;
  if (!relay_fd || *relay_fd < 0) {
    notify_watchdog_ping();
    return;
  }
  /* Never blocks the loop: a supervisor too busy to read misses one ping of several. */
  struct notify_relay_msg m = {NOTIFY_WATCHDOG_MAGIC, 0};
  if (send(*relay_fd, &m, sizeof m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN)
    log_warn(NULL, NULL, "cannot pass the watchdog ping to the supervisor: %s", strerror(errno));
}

int notify_watchdog_start(struct ev_loop *loop, ev_timer *timer, const int *relay_fd) {
  const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
  if (!usec || !getenv("NOTIFY_SOCKET"))
    return 0;
  /* Meant for this service: the pid systemd started is this process or its parent. */
  if (pid && *pid) {
    long p = strtol(pid, NULL, 10);
    if (p != (long)getpid() && p != (long)getppid())
      return 0;
  }
  char *end;
  errno = 0;
  unsigned long long us = strtoull(usec, &end, 10);
  if (errno || *end || us == 0) {
    log_warn(NULL, NULL, "WATCHDOG_USEC=%.32s is not a number of microseconds: no watchdog", usec);
    return 0;
  }
  double every = (double)us / 2e6; /* systemd's advice: ping at half the interval */
  ev_timer_init(timer, watchdog_ping, 0, every);
  timer->data = (void *)relay_fd;
  ev_timer_start(loop, timer);
  log_info(NULL, NULL, "systemd watchdog: a ping every %.3f s from the event loop", every);
  return 1;
}

void notify_watchdog_stop(struct ev_loop *loop, ev_timer *timer) {
  if (ev_is_active(timer))
    ev_timer_stop(loop, timer);
}
