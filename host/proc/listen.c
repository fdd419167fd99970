/* listen.c: the listening socket and the descriptor budget. The supervisor binds the socket
 * once and hands it to each serving process, so a restart never refuses a connection. */
#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

long listen_raise_nofile(long *before) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) < 0) {
    *before = -1;
    return -1;
  }
  *before = (long)r.rlim_cur;
  /* lws sizes its fd lookup table by the soft limit (and falls back to 2560 entries past
   * 10 000 000): a sane cap keeps that table a few MB. */
  rlim_t want = r.rlim_max == RLIM_INFINITY || r.rlim_max > (1u << 20) ? (1u << 20) : r.rlim_max;
  if (want > r.rlim_cur) {
    r.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &r) < 0)
      return *before;
  }
  return (long)r.rlim_cur;
}

long listen_fd_budget(long nofile) {
  long reserve = nofile / 64 > LISTEN_FD_RESERVE_MIN ? nofile / 64 : LISTEN_FD_RESERVE_MIN;
  return nofile > reserve ? nofile - reserve : 0;
}

long listen_nofile_for(long websockets) {
  long need = websockets + websockets / 4 + 256;
  long n = need + LISTEN_FD_RESERVE_MIN;
  if (n / 64 > LISTEN_FD_RESERVE_MIN)
    n = need + need / 63;
  while (listen_fd_budget(n) < need)
    n++;
  return n;
}

long listen_lower_nofile(long want) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) < 0)
    return -1;
  if (want > 0 && (r.rlim_cur == RLIM_INFINITY || (rlim_t)want < r.rlim_cur)) {
    r.rlim_cur = (rlim_t)want;
    if (setrlimit(RLIMIT_NOFILE, &r) < 0)
      return getrlimit(RLIMIT_NOFILE, &r) < 0 ? -1 : (long)r.rlim_cur;
  }
  return (long)r.rlim_cur;
}

static int open_family(int family, int port, int reuse_port) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  int rc;
  if (family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    a.sin6_addr = in6addr_any;
    rc = bind(fd, (struct sockaddr *)&a, sizeof a);
  } else {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    rc = bind(fd, (struct sockaddr *)&a, sizeof a);
  }
  /* The backlog holds connections while a serving process restarts (the kernel clamps it to
   * net.core.somaxconn). */
  if (rc < 0 || listen(fd, 4096) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

int listen_open(int port, int retry_ms, int reuse_port, int *bound) {
  int fd;
  for (int waited = 0;; waited += 50) {
    fd = open_family(AF_INET6, port, reuse_port);
    if (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL)
      fd = open_family(AF_INET, port, reuse_port);
    if (fd != -EADDRINUSE || waited >= retry_ms)
      break;
    nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
  }
  if (fd < 0)
    return fd;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  *bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                    : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}
