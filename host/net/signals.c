/* signals.c: SIGTERM/SIGINT through a real handler that works even while the loop is stuck in a
 * function: it wakes the loop to drain and arms a watchdog that ends the process regardless.
 *
 * libev's ev_signal only runs when the loop does, so a function spinning forever made SIGTERM
 * do nothing. Here the handler itself arms alarm() (async-signal-safe) and
 * wakes the loop with ev_async_send (safe from handlers); if the drain cannot run, SIGALRM
 * writes one line and _exit()s. The state is static: a signal handler has no other way in. */
#include "signals.h"

#include "log.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static struct ev_loop *sig_loop;
static ev_async wake;
static volatile sig_atomic_t got_signal;
static unsigned watchdog_s;
static void (*stop_cb)(int, void *);
static void *stop_arg;

static void on_term(int signum) {
  int saved = errno;
  if (!got_signal) {
    got_signal = signum;
    alarm(watchdog_s);
    if (sig_loop)
      ev_async_send(sig_loop, &wake);
  }
  errno = saved;
}

static void on_watchdog(int signum) {
  (void)signum;
  log_emergency(LOG_ERROR, "signals",
                "drain did not end within --drain-timeout + 2 s (a function stuck in a loop?): "
                "exiting now");
  _exit(1);
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop;
  (void)w;
  (void)revents;
  if (got_signal && stop_cb)
    stop_cb(got_signal, stop_arg);
}

int signals_start(struct ev_loop *loop, int drain_timeout_s, void (*on_stop)(int signum, void *arg),
                  void *arg) {
  sig_loop = loop;
  stop_cb = on_stop;
  stop_arg = arg;
  watchdog_s = (unsigned)drain_timeout_s + SIGNALS_EXIT_MARGIN_S;
  ev_async_init(&wake, on_wake);
  ev_async_start(loop, &wake);
  /* The loop must not keep running for the async watcher alone. */
  ev_unref(loop);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_watchdog;
  if (sigaction(SIGALRM, &sa, NULL) < 0)
    return -errno;
  /* A second signal while the first drains changes nothing. */
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGINT);
  sa.sa_handler = on_term;
  if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
    return -errno;
  /* A signal blocked by whoever started us would never arrive. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGALRM);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  return 0;
}

void signals_stop(void) {
  if (!sig_loop)
    return;
  ev_ref(sig_loop);
  ev_async_stop(sig_loop, &wake);
  sig_loop = NULL;
}
