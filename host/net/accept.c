/* accept.c: accepting connections on the listening socket the supervisor hands over (an ev_io
 * on the host's loop) and adopting each into the lws vhost. Descriptors are a budget: past it
 * a connection is closed at once, and EMFILE/ENFILE pause accepting for ACCEPT_PAUSE_MS rather
 * than spin on a socket that stays readable; at most one log line a second says so. */
#include "accept.h"

#include "log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_PAUSE_MS 100
#define ACCEPT_BATCH 64

static void note(struct host *h, const char *why) {
  int64_t now = host_now_ms();
  if (now - h->accept_log_ms < 1000)
    return;
  h->accept_log_ms = now;
  log_warn(NULL, NULL,
           "accept: %s; %llu connections closed unserved and %llu accepts paused since the last "
           "line (descriptor limit %ld, budget %ld; raise ulimit -n)",
           why, (unsigned long long)h->accept_refused, (unsigned long long)h->accept_errors,
           h->nofile, h->fd_budget);
  h->accept_refused = h->accept_errors = 0;
}

static void resume(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  struct host *h = t->data;
  for (int i = 0; i < h->nlisten; i++)
    ev_io_start(loop, &h->accept_ios[i]);
}

static void pause_all(struct ev_loop *loop, struct host *h) {
  for (int i = 0; i < h->nlisten; i++)
    ev_io_stop(loop, &h->accept_ios[i]);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  struct host *h = w->data;
  int admin = h->listen_admin[w - h->accept_ios];
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK)
        return;
      if (e == EINTR || e == ECONNABORTED || e == EPROTO)
        continue;
      /* Out of descriptors or memory: the socket stays readable, so a retry now would spin.
       * Connections wait in the backlog meanwhile. */
      h->accept_errors++;
      pause_all(loop, h);
      ev_timer_set(&h->accept_pause, ACCEPT_PAUSE_MS / 1000.0, 0);
      ev_timer_start(loop, &h->accept_pause);
      note(h, strerror(e));
      return;
    }
    /* Descriptors are handed out lowest first, so the number is (about) how many are open:
     * past the budget the reserve is for the database, plugin loads and the loop. */
    if (fd >= h->fd_budget) {
      close(fd);
      h->accept_refused++;
      note(h, "descriptor budget reached");
      continue;
    }
    /* Which listener it came through decides what it may ask for (http.c). */
    if (h->admin_fds) {
      if (admin)
        h->admin_fds[fd / 8] |= (unsigned char)(1u << (fd % 8));
      else
        h->admin_fds[fd / 8] &= (unsigned char)~(1u << (fd % 8));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails on unix: harmless */
    /* HTTP role (WebSocket upgrades go through it); TLS when the vhost has a certificate.
     * On failure lws closes fd itself. */
    if (!lws_adopt_socket_vhost(h->vhost, fd)) {
      h->accept_errors++;
      note(h, "lws could not adopt a connection");
    }
  }
}

void accept_start(struct host *h) {
  ev_timer_init(&h->accept_pause, resume, 0, 0);
  h->accept_pause.data = h;
  for (int i = 0; i < h->nlisten; i++) {
    if (h->listen_admin[i] && !h->admin_fds)
      h->admin_fds = calloc((size_t)h->fd_budget / 8 + 1, 1);
    ev_io_init(&h->accept_ios[i], on_accept, h->listen_fds[i], EV_READ);
    h->accept_ios[i].data = h;
    ev_io_start(h->loop, &h->accept_ios[i]);
  }
}

int accept_via_admin(const struct host *h, int fd) {
  return h->admin_fds && fd >= 0 && fd < h->fd_budget && (h->admin_fds[fd / 8] & (1u << (fd % 8)));
}

void accept_stop(struct host *h) {
  pause_all(h->loop, h);
  ev_timer_stop(h->loop, &h->accept_pause);
  free(h->admin_fds);
  h->admin_fds = NULL;
}
