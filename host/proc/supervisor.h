/* supervisor.h: the small parent process that owns the listening socket and keeps one serving
 * process running (restart with backoff, signals passed on, crash reports read). */
#ifndef WSHOST_SUPERVISOR_H
#define WSHOST_SUPERVISOR_H

#include "config.h"
#include "listen.h"

#include <stdint.h>
#include <sys/types.h>

/* Restart policy. A crash inside a function is quarantined, so it cannot repeat: the next
 * serving process starts at once. Other crashes (or the same version crashing again, i.e. the
 * quarantine did not hold) count towards a crash loop: CRASH_LOOP_K within CRASH_LOOP_T_MS
 * is logged as one and each further start waits twice as long, up to SUPERVISOR_BACKOFF_MAX_MS. */
#define CRASH_LOOP_K 5
#define CRASH_LOOP_T_MS 30000
#define SUPERVISOR_BACKOFF_MIN_MS 250
#define SUPERVISOR_BACKOFF_MAX_MS 30000
/* SIGTERM: the serving process drains (--drain-timeout) and its own watchdog ends it 2 s
 * later (signals.c); past that and this margin it gets SIGKILL. */
#define SUPERVISOR_STOP_MARGIN_MS 3000
/* The serving loop's heartbeat period; --heartbeat-timeout without one replaces the process. */
#define SUPERVISOR_HEARTBEAT_MS 1000
/* A serving process asked what holds its loop has this long to answer before SIGKILL. */
#define SUPERVISOR_STUCK_GRACE_MS 1000

/* What a serving process gets from whoever started it. */
struct serve_args {
  int listen_fd;  /* the first public listener (listeners[0].fd) */
  int ctl_fd;     /* control socket to the supervisor, -1 without one */
  int port;       /* the TCP port of the first public TCP listener, 0 if none */
  pid_t host_pid; /* the supervisor's pid (the host's, as operators see it) */
  /* Every listener, bound and listening (--bind, then --admin-bind); the serving process
   * accepts on each. */
  struct listener listeners[LISTEN_MAX];
  int nlisteners;
};

typedef int (*serve_fn)(struct config *cfg, const struct serve_args *a);

/* Runs the supervisor until the host is asked to stop: binds cfg->port, then forks serving
 * processes that run serve(). Returns the process exit code. Workers (--isolation process)
 * will be further children started the same way, each with its own control socket. */
int supervisor_run(struct config *cfg, serve_fn serve);
/* Without a supervisor (--no-supervisor): binds and runs serve() in this process. */
int supervisor_none(struct config *cfg, serve_fn serve);
/* Called by the serving process once it accepts: tells the supervisor, which logs
 * "listening on port N" the first time (the readiness line; sd_notify READY belongs there). */
void supervisor_ready(const struct serve_args *a);
/* The serving process's heartbeat: tells the supervisor on ctl_fd (-1: none) that its loop
 * turns, at most once per SUPERVISOR_HEARTBEAT_MS (*last_ms: when the last one went,
 * CLOCK_MONOTONIC ms). Called from a loop timer and from the loop's own bounded waits (a
 * worker's answer). Never blocks. */
void supervisor_heartbeat(int ctl_fd, int64_t *last_ms);

#endif
