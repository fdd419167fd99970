/* listen.h: the listening socket and the descriptor budget. The supervisor binds the socket
 * once and hands it to each serving process; nothing here knows lws. */
#ifndef WSHOST_LISTEN_H
#define WSHOST_LISTEN_H

#include <stddef.h>

/* Descriptors kept back from connections: the database (and its WAL, shm and checkpoint
 * connection), plugin loads (copy + dlopen), inotify, the loop's own fds, the log. */
#define LISTEN_FD_RESERVE_MIN 24

/* Raises the soft RLIMIT_NOFILE to the hard one (capped at 1 << 20: lws sizes a table by it).
 * Returns the soft limit now in force; *before gets the one found. */
long listen_raise_nofile(long *before);
/* Descriptors the host may spend on connections for a soft limit of nofile. */
long listen_fd_budget(long nofile);
/* The soft limit that serves `websockets` WebSocket connections, a quarter more (plus 256) for
 * HTTP requests and handshakes under way, and the reserve. */
long listen_nofile_for(long websockets);
/* Lowers the soft RLIMIT_NOFILE to want if it is higher; returns the soft limit in force. */
long listen_lower_nofile(long want);
/* Binds and listens on port (0: the kernel picks) on every address (IPv6 dual stack when the
 * kernel has it, IPv4 otherwise); non-blocking, close-on-exec. Retries a port in use for
 * retry_ms (a dying host's serving process may still hold it). The fd, or -errno; *bound gets
 * the port. reuse_port sets SO_REUSEPORT first, so several hosts can share the port (the kernel
 * spreads new connections over them). */
int listen_open(int port, int retry_ms, int reuse_port, int *bound);

/* Listeners at most (--bind and --admin-bind together). */
#define LISTEN_MAX 8

/* One bound listener: its descriptor, what it is for and how the log names it. */
struct listener {
  int fd;
  int admin;      /* --admin-bind: serves /_/ only */
  int port;       /* TCP port, 0 for a unix socket */
  char name[120]; /* "127.0.0.1:8080", "[::1]:8080", "unix:/run/wshost.sock", "*:8080" */
};

/* Binds one address of --bind / --admin-bind: an IPv4 or IPv6 literal ("[::1]:9000" and
 * "127.0.0.1:9000" name a port, else default_port; -1: a port must be named), or "unix:/path"
 * (a stale socket file there is replaced; mode 0660). 0 or -errno with the reason in err. */
int listen_open_addr(const char *addr, int default_port, int retry_ms, int reuse_port,
                     struct listener *out, char *err, size_t errlen);

#endif
