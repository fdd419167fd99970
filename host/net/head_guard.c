/* head_guard.c: reads the first request head of each plain-TCP connection before lws 4.1
 * parses it, and answers the heads lws would drop without a word or misread.
 *
 * Why: lws 4.1 closes the connection without a response when a head needs more than its 95
 * header fragments (92+ query parameters, one header repeated 100 times: parsers.c "More hdr
 * frags than we can deal with") or is over --max-header, and it misreads a header name that
 * is a strict prefix of a name it knows ("Acc:", "Cont:", "Ho:"): on the colon it leaves its
 * name table but not the name state, so the rest of the head becomes one unknown name and the
 * request never completes (parsers.c WSI_TOKEN_NAME_PART; the colon test runs before the
 * table walk, against the position of the previous character). It gives the host no callback
 * before it shuts the socket down. So the host looks first: a libev watcher of the highest
 * priority on the same socket runs before lws's in every loop turn and peeks (MSG_PEEK) at
 * what lws has not read yet. Bytes lws already read are counted by the kernel
 * (TCP_INFO tcpi_bytes_received less SIOCINQ), which is how a peek is lined up with what was
 * seen before. Only the first head of a connection is watched; under TLS there is nothing
 * readable to peek at. */
#include "head_guard.h"

#include "log.h"
#include "ws.h"

#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* Query parameters plus header lines: lws 4.1 keeps each in one of WSI_TOKEN_COUNT (95)
 * fragments, with a few for the request line; past this the host answers 431 itself. */
#define HEAD_MAX_FIELDS 80

struct guard {
  ev_io io;
  ev_timer rearm; /* lws is not reading (no header table free): look again later */
  struct host *h;
  struct lws *wsi;
  int fd;
  char *buf;
  size_t base, len, cap; /* buf holds stream bytes [base, len); room for cap */
  size_t head_end;       /* a WebSocket upgrade: where its first frame starts, else 0 */
};

static void guard_free(struct guard *g) {
  ev_io_stop(g->h->loop, &g->io);
  ev_timer_stop(g->h->loop, &g->rearm);
  map_del(&g->h->head_guards, &g->wsi, sizeof g->wsi);
  free(g->buf);
  free(g);
}

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* 1 if name (n bytes, any case) is a strict prefix of a string in lws's table and not
 * itself a header name there ("accept" is both a name and a prefix of "accept-encoding"). */
static int lws_prefix_name(const char *name, size_t n) {
  int prefix = 0;
  for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
    const char *tok = (const char *)lws_token_to_string((enum lws_token_indexes)t);
    size_t tl = tok ? strlen(tok) : 0;
    if (tl == n + 1 && tok[n] == ':' && !strncasecmp(tok, name, n))
      return 0;
    if (tl > n && !strncasecmp(tok, name, n))
      prefix = 1;
  }
  return prefix;
}

int head_check(const char *head, size_t len, const char **why) {
  const char *end = head + len, *p = memchr(head, '\n', len);
  if (!p)
    p = end;
  /* Query parameters: each '&'-separated part of the request target. */
  int fields = 0;
  const char *q = memchr(head, '?', (size_t)(p - head));
  if (q)
    for (fields = 1; q < p; q++)
      fields += *q == '&';
  if (fields > HEAD_MAX_FIELDS) {
    *why = "too many header lines and query parameters";
    return 431;
  }
  for (p++; p < end;) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
      eol = end;
    size_t n = (size_t)(eol - p);
    if (n && p[n - 1] == '\r')
      n--;
    if (!n)
      break; /* the blank line */
    if (*p == ' ' || *p == '\t') {
      *why = "folded header line (RFC 9112 5.2)";
      return 400;
    }
    size_t k = 0;
    while (k < n && is_tchar((unsigned char)p[k]))
      k++;
    if (!k || k == n || p[k] != ':') {
      *why = k < n && (p[k] == ' ' || p[k] == '\t')
                 ? "whitespace between a header name and its colon"
                 : "malformed header line";
      return 400;
    }
    if (lws_prefix_name(p, k)) {
      *why = "header name is a prefix of a known one (libwebsockets 4.1 misreads it)";
      return 400;
    }
    if (++fields > HEAD_MAX_FIELDS) {
      *why = "too many header lines and query parameters";
      return 431;
    }
    p = eol + 1;
  }
  return 0;
}

/* Answers for lws and makes it drop the connection: what is queued is read and dropped
 * first, so lws finds nothing to parse and the close sends no reset. */
static void refuse(struct guard *g, int status, const char *why) {
  char drop[4096];
  for (int i = 0; i < 256 && recv(g->fd, drop, sizeof drop, MSG_DONTWAIT) > 0; i++)
    ;
  char body[200], resp[400], remote[64];
  int bl = snprintf(body, sizeof body, "{\"error\":\"%s\",\"message\":\"%s\"}",
                    status == 431 ? "Request Header Fields Too Large" : "Bad Request", why);
  int n =
      snprintf(resp, sizeof resp,
               "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
               "connection: close\r\n\r\n%s",
               status, status == 431 ? "Request Header Fields Too Large" : "Bad Request", bl, body);
  if (send(g->fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
    log_debug(NULL, NULL, "head refused, answer not sent: %s", strerror(errno));
  lws_get_peer_simple(g->wsi, remote, sizeof remote);
  log_info(NULL, NULL, "%d %s: %s", status, remote, why);
  g->h->stats.http_requests++;
  metrics_http_response(&g->h->metrics, status);
  lws_set_timeout(g->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
  guard_free(g);
}

/* 1 if the head asks for a WebSocket upgrade (an Upgrade header naming websocket). */
static int is_upgrade(const char *head, size_t len) {
  for (const char *p = head; p && p < head + len; p = memchr(p, '\n', (size_t)(head + len - p))) {
    p += *p == '\n';
    if ((size_t)(head + len - p) > 8 && !strncasecmp(p, "upgrade:", 8)) {
      const char *v = p + 8, *e = memchr(v, '\n', (size_t)(head + len - v));
      for (; v && e && v + 9 <= e; v++)
        if (!strncasecmp(v, "websocket", 9))
          return 1;
      return 0;
    }
  }
  return 0;
}

/* RFC 6455 5.1: a server MUST close the connection on a frame from the client that is not
 * masked; lws 4.1 reads the mask bit into a private field and unmasks nothing
 * (ops-ws.c LWS_RXPS_04_FRAME_HDR_LEN). Only the first frame is looked at: the watch ends
 * there, so the cost per connection stays one head and one frame header. A client that masks
 * its first frame and not a later one is not caught. */
static void frame_check(struct guard *g) {
  if (g->len < g->head_end + 2)
    return;
  int masked = (unsigned char)g->buf[g->head_end + 1 - g->base] & 0x80;
  if (!masked && ws_refuse(g->wsi, 1002, "unmasked frame from the client") == 0)
    log_debug(NULL, NULL, "unmasked client frame refused");
  guard_free(g);
}

/* Bytes the kernel has received on fd, and how many of them lws has read. -1 if unknown. */
static int stream_position(int fd, uint64_t *received, uint64_t *consumed) {
  struct tcp_info a, b;
  socklen_t al = sizeof a, bl = sizeof b;
  int inq;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &a, &al) < 0 || ioctl(fd, SIOCINQ, &inq) < 0 ||
      getsockopt(fd, IPPROTO_TCP, TCP_INFO, &b, &bl) < 0 ||
      al < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof a.tcpi_bytes_received)
    return -1;
  if (a.tcpi_bytes_received != b.tcpi_bytes_received || inq < 0 ||
      (uint64_t)inq > a.tcpi_bytes_received)
    return -1; /* data arrived meanwhile: look again next turn */
  *received = a.tcpi_bytes_received;
  *consumed = a.tcpi_bytes_received - (uint64_t)inq;
  return 0;
}

static void on_rearm(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  struct guard *g = t->data;
  ev_io_start(loop, &g->io);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  struct guard *g = w->data;
  uint64_t received, consumed;
  if (stream_position(g->fd, &received, &consumed) < 0)
    return;
  if (consumed > g->len) {
    guard_free(g); /* lws read bytes never seen here: stop rather than misalign */
    return;
  }
  size_t limit = g->base + g->cap,
         want = received > limit ? limit - g->len : (size_t)received - g->len;
  if (!want) {
    /* Nothing new: lws is not reading yet. Level-triggered, so do not spin on it. */
    ev_io_stop(loop, &g->io);
    ev_timer_start(loop, &g->rearm);
    return;
  }
  size_t skip = g->len - (size_t)consumed;
  char *tmp = malloc(skip + want);
  ssize_t n = tmp ? recv(g->fd, tmp, skip + want, MSG_PEEK | MSG_DONTWAIT) : -1;
  if (n > (ssize_t)skip) {
    memcpy(g->buf + (g->len - g->base), tmp + skip, (size_t)n - skip);
    g->len += (size_t)n - skip;
  }
  free(tmp);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    guard_free(g);
    return;
  }
  if (g->head_end) {
    frame_check(g);
    return;
  }
  const char *why = NULL;
  for (size_t i = 0; i + 1 < g->len; i++)
    if (g->buf[i] == '\n' && (g->buf[i + 1] == '\n' ||
                              (g->buf[i + 1] == '\r' && i + 2 < g->len && g->buf[i + 2] == '\n'))) {
      int status = head_check(g->buf, i + 1, &why);
      size_t end = i + (g->buf[i + 1] == '\n' ? 2 : 3);
      if (status)
        refuse(g, status, why);
      else if (is_upgrade(g->buf, end) && g->len == end) {
        /* Stay for the first frame's mask bit, with two bytes of room instead of a head's. */
        g->head_end = g->base = end;
        g->cap = 2;
        char *b = realloc(g->buf, g->cap);
        if (b)
          g->buf = b;
      } else
        guard_free(g); /* a head lws reads right: the rest is lws's */
      return;
    }
  if (g->len >= g->cap)
    refuse(g, 431, "request head over --max-header bytes");
}

void head_guard_start(struct host *h, struct lws *wsi) {
  if (h->cfg.tls_cert)
    return;
  int fd = lws_get_socket_fd(wsi);
  struct guard *g = fd >= 0 ? calloc(1, sizeof *g) : NULL;
  if (!g)
    return;
  g->h = h;
  g->wsi = wsi;
  g->fd = fd;
  /* lws fails a head whose stored part (target, values, unknown names) passes
   * max_http_header_data; the host counts the whole head, which is a little stricter. */
  g->cap = h->cfg.max_header;
  g->buf = malloc(g->cap);
  if (!g->buf || map_set(&h->head_guards, &wsi, sizeof wsi, g) < 0) {
    free(g->buf);
    free(g);
    return;
  }
  ev_io_init(&g->io, on_readable, fd, EV_READ);
  ev_set_priority(&g->io, EV_MAXPRI);
  ev_timer_init(&g->rearm, on_rearm, 0.02, 0);
  g->io.data = g->rearm.data = g;
  ev_io_start(h->loop, &g->io);
}

void head_guard_end(struct host *h, struct lws *wsi) {
  struct guard *g = map_get(&h->head_guards, &wsi, sizeof wsi);
  if (g)
    guard_free(g);
}
