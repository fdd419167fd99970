/* peer.c: what the kernel knows about a connection that lws does not say (TCP_INFO and a
 * peek), for the moments lws closes a connection on its own and the host must tell why. */
#include "peer.h"

#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

int peer_probe(struct lws *wsi, struct peer_state *ps) {
  memset(ps, 0, sizeof *ps);
  int fd = lws_get_socket_fd(wsi);
  if (fd < 0)
    return -EBADF;
  char b;
  ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  ps->open = n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
  struct tcp_info ti;
  socklen_t tl = sizeof ti;
  memset(&ti, 0, sizeof ti);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0)
    return -errno;
  ps->idle_ms = ti.tcpi_last_data_recv;
  /* tcpi_bytes_sent came with Linux 4.19; before it, what the peer acknowledged. */
  ps->bytes_sent = tl >= offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof ti.tcpi_bytes_sent
                       ? ti.tcpi_bytes_sent
                       : ti.tcpi_bytes_acked;
  return 0;
}

int peer_write_last(struct lws *wsi, const void *buf, size_t len) {
  int fd = lws_get_socket_fd(wsi);
  if (fd < 0 || lws_is_ssl(wsi))
    return -EBADF;
  ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  return n < 0 ? -errno : (int)n;
}

size_t peer_discard_input(struct lws *wsi, size_t max) {
  int fd = lws_get_socket_fd(wsi);
  if (fd < 0 || lws_is_ssl(wsi))
    return 0;
  char drop[4096];
  size_t total = 0;
  while (total < max) {
    ssize_t n = recv(fd, drop, sizeof drop, MSG_DONTWAIT);
    if (n <= 0)
      break;
    total += (size_t)n;
  }
  return total;
}
