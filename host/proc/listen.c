/* listen.c: the listening socket and the descriptor budget. The supervisor binds the socket
 * once and hands it to each serving process, so a restart never refuses a connection. */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

static int open_unix(const char *path, struct listener *out, char *err, size_t errlen) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (!*path || strlen(path) >= sizeof a.sun_path) {
    snprintf(err, errlen, "unix socket path '%s' is empty or longer than %zu bytes", path,
             sizeof a.sun_path - 1);
    return -ENAMETOOLONG;
  }
  memcpy(a.sun_path, path, strlen(path) + 1);
  /* A socket file left by a host that was killed: nobody listens on it, so it goes. Anything
   * else at that path stays (EADDRINUSE below). */
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int live = probe >= 0 && connect(probe, (struct sockaddr *)&a, sizeof a) == 0;
    if (probe >= 0)
      close(probe);
    if (live) {
      snprintf(err, errlen, "%s: another process listens there", path);
      return -EADDRINUSE;
    }
    unlink(path);
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* Who may connect is who may open the file: owner and group. */
  mode_t old = umask(0117);
  int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
  umask(old);
  if (rc < 0 || listen(fd, 4096) < 0) {
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    close(fd);
    return -e;
  }
  out->fd = fd;
  out->port = 0;
  snprintf(out->name, sizeof out->name, "unix:%s", path);
  return 0;
}

int listen_open_addr(const char *addr, int default_port, int retry_ms, int reuse_port,
                     struct listener *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (!strncmp(addr, "unix:", 5))
    return open_unix(addr + 5, out, err, errlen);
  char host[INET6_ADDRSTRLEN + 8];
  const char *port_s = NULL;
  if (addr[0] == '[') { /* [v6]:port */
    const char *close_b = strchr(addr, ']');
    if (!close_b || (close_b[1] && close_b[1] != ':') || (size_t)(close_b - addr) >= sizeof host)
      goto bad;
    snprintf(host, sizeof host, "%.*s", (int)(close_b - addr - 1), addr + 1);
    port_s = close_b[1] ? close_b + 2 : NULL;
  } else {
    const char *colon = strchr(addr, ':');
    int one_colon = colon && !strchr(colon + 1, ':');
    size_t n = one_colon ? (size_t)(colon - addr) : strlen(addr);
    if (n >= sizeof host)
      goto bad;
    snprintf(host, sizeof host, "%.*s", (int)n, addr);
    port_s = one_colon ? colon + 1 : NULL;
  }
  int port = default_port;
  if (!port_s && port < 0) {
    snprintf(err, errlen,
             "'%s' names no port: give one (127.0.0.1:9090, [::1]:9090) or a unix:/path", addr);
    return -EINVAL;
  }
  if (port_s) {
    char *end;
    long p = strtol(port_s, &end, 10);
    if (!*port_s || *end || p < 0 || p > 65535)
      goto bad;
    port = (int)p;
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    sl = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    sl = sizeof *a6;
  } else
    goto bad;
  int fd = -1;
  for (int waited = 0;; waited += 50) {
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return -errno;
    int one = 1, rc = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* An address named is that address alone: "::" next to "0.0.0.0" must not clash. */
    if (ss.ss_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (reuse_port)
      rc = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (rc == 0)
      rc = bind(fd, (struct sockaddr *)&ss, sl);
    if (rc == 0 && listen(fd, 4096) == 0)
      break;
    int e = errno;
    close(fd);
    if (e != EADDRINUSE || !port || waited >= retry_ms) {
      snprintf(err, errlen, "cannot listen on %s: %s%s", addr, strerror(e),
               e == EADDRINUSE ? " (the port is in use)" : "");
      return -e;
    }
    nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
  }
  socklen_t gl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &gl);
  out->fd = fd;
  out->port = ss.ss_family == AF_INET6 ? ntohs(a6->sin6_port) : ntohs(a4->sin_port);
  snprintf(out->name, sizeof out->name, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host,
           out->port);
  return 0;
bad:
  snprintf(err, errlen,
           "cannot read listen address '%s': want 127.0.0.1, ::1, [::1]:PORT, 0.0.0.0:PORT or "
           "unix:/path.sock",
           addr);
  return -EINVAL;
}
