/* wsbench.c: the WebSocket load client of `make bench` (echo, churn, idle, push, room modes).
 * Owns its own minimal client framing on raw epoll sockets; needs nothing but libc.
 *
 *   wsbench [-m echo|churn|idle|push|room] [-h host] [-p port] [-u path] [-c conns] [-d seconds]
 *           [-s size] [-g greetings] [-k srcips] [-w warmup] [-o max_handshakes]
 *           [-t handshake_timeout] [-C 0|1] [-R pid[,pid...]] [-l label]
 *           push: [-P push_path] [-a header] [-n max_pushes] [-r pushes_per_s] [-T timeout_ms]
 *                 [-E http_port]
 *
 * Every run prints readable lines starting with "# " and one result line of key=value pairs
 * starting with "mode=", which tools/bench/run parses.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum mode { M_ECHO, M_CHURN, M_IDLE, M_PUSH, M_ROOM };
/* room: push's machinery with one HTTP sender and every connection a member of one room. */
#define PUSHLIKE(b) ((b)->mode == M_PUSH || (b)->mode == M_ROOM)
enum state { ST_IDLE, ST_CONNECTING, ST_UPGRADING, ST_OPEN, ST_CLOSING, ST_DEAD };

#define HTTP_SLOT UINT32_MAX
#define MAX_FRAME (64u << 20) /* a frame bigger than this is a broken server, not a load */
#define MAX_USER_ID 256
#define MAX_PIDS 8 /* -R: a cluster is several server processes (and a redis-server) */

struct conn {
  int fd;
  uint8_t st;
  uint8_t inflight; /* echo: one message awaiting its answer */
  uint8_t counted;  /* opened at least once (idle/push: counts towards "up") */
  uint8_t retries;
  int greet_left;
  int frag_op; /* opcode of the message being reassembled from continuation frames */
  double sent_at, deadline;
  double retry_at;     /* after a failed handshake: not before this, so a refusing server is not
                          hammered in a tight loop */
  unsigned char *pend; /* bytes of an incomplete frame, kept between reads */
  size_t pendlen;
  unsigned char *out; /* bytes the kernel did not take yet */
  size_t outlen;
  unsigned char *frag; /* a fragmented message being reassembled */
  size_t fraglen;
  char *user_id; /* push: from the greeting */
};

/* CPU use over the measured window: the server's (-R), ours, and everything else on the
 * machine, which on a shared box is the noise that explains a bad run. Clock ticks. */
struct cpu_snap {
  long long machine_busy, steal, server, self;
  long long per_pid[MAX_PIDS];
};

struct samples {
  double *v;
  size_t n, cap;
};

/* Everything the run needs, in one place (house rule: no scattered mutable globals). */
struct bench {
  /* options */
  const char *host, *path, *label, *push_path, *auth_header;
  int port, nconns, size, greet, srcips, max_handshakes, close_handshake;
  int deflate; /* -x: offer permessage-deflate (idle and churn: frames are counted, not read) */
  enum mode mode;
  double secs, warmup, hs_timeout, push_timeout, push_rate;
  long max_pushes;
  int rss_pid; /* the first of -R: its RSS is reported */
  int pids[MAX_PIDS], npids;
  int http_port; /* -E: pushes go to this port (another node of a cluster); 0: -p */
  /* runtime */
  struct sockaddr_in dst, hdst;
  int ep;
  struct conn *cs;
  unsigned char *msg; /* the echo frame, masked once: the server's unmasking cost is the same */
  size_t msglen;
  unsigned char *scratch;
  size_t scratch_cap;
  int handshaking; /* connections between socket() and the last greeting frame */
  int next_start;  /* idle/push/echo ramp: next slot that has never been started */
  long up_now;     /* open connections that got all their greetings */
  long failed, dropped, churned, rtt, opened;
  int measuring;
  double t_measure;
  struct cpu_snap cpu0;
  struct samples lat;
  /* push */
  int hfd;
  int hst; /* 0 none, 1 connecting, 2 ready */
  char hin[8192];
  size_t hinlen;
  int *order; /* push targets: a shuffled list of open slots */
  int norder;
  long pushes, push_ok, push_lost, push_queued, http_errors, late, http_reconnects;
  long cur_seq;
  int cur_target, cur_frame_seen, cur_resp_seen;
  double cur_sent, next_push_at;
  struct samples http_lat;
  /* room: arrivals of the current message; the host's join/leave timing of every socket */
  long cur_arrivals;
  long jl_n;
  double jl_join_us, jl_leave_us;
};

static volatile sig_atomic_t g_stop; /* SIGINT/SIGTERM: end the run early, still report */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("wsbench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    die("out of memory (%zu bytes)", n);
  return q;
}

static void samples_add(struct samples *s, double v) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1 << 16;
    s->v = xrealloc(s->v, s->cap * sizeof *s->v);
  }
  s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double pct_us(const struct samples *s, double q) {
  if (!s->n)
    return 0;
  size_t k = (size_t)(q * (double)s->n + 0.999999);
  if (k < 1)
    k = 1;
  if (k > s->n)
    k = s->n;
  return s->v[k - 1] * 1e6;
}

static long rss_kb(int pid) {
  char p[64], line[256];
  snprintf(p, sizeof p, "/proc/%d/status", pid);
  FILE *f = fopen(p, "r");
  if (!f)
    return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) {
      kb = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

static long long pid_ticks(int pid) {
  char p[64], buf[1024];
  snprintf(p, sizeof p, "/proc/%d/stat", pid);
  FILE *f = fopen(p, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *s = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long ut = 0, st = 0;
  if (!s || sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return -1;
  return (long long)(ut + st);
}

static void cpu_snap_take(struct cpu_snap *c, const int *pids, int npids) {
  unsigned long long v[8] = {0};
  FILE *f = fopen("/proc/stat", "r");
  memset(c, 0, sizeof *c);
  if (f) {
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
      c->machine_busy = (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
      c->steal = (long long)v[7];
    }
    fclose(f);
  }
  for (int i = 0; i < npids; i++) {
    c->per_pid[i] = pid_ticks(pids[i]);
    c->server += c->per_pid[i] > 0 ? c->per_pid[i] : 0;
  }
  c->self = pid_ticks(getpid());
}

/* " server_cpu_pct=.. client_cpu_pct=.. other_cpu_pct=.. steal_pct=.." (100 = one CPU);
 * server is the sum over -R's pids, so a cluster's own processes are not counted as others'.
 * With several pids, " cpu_pct_1=.. cpu_pct_2=.." too, in -R's order. */
static void cpu_report(char *dst, size_t cap, const struct cpu_snap *a, const struct cpu_snap *b,
                       int npids, double secs) {
  double hz = (double)sysconf(_SC_CLK_TCK), k = 100.0 / (hz * secs);
  long long server = b->server - a->server, self = b->self - a->self;
  long long other = (b->machine_busy - a->machine_busy) - server - self - (b->steal - a->steal);
  int o = snprintf(dst, cap,
                   " server_cpu_pct=%.0f client_cpu_pct=%.0f other_cpu_pct=%.0f steal_pct=%.0f",
                   (double)server * k, (double)self * k, (double)(other > 0 ? other : 0) * k,
                   (double)(b->steal - a->steal) * k);
  for (int i = 0; npids > 1 && i < npids && o > 0 && (size_t)o < cap; i++) {
    long long d = a->per_pid[i] >= 0 && b->per_pid[i] >= 0 ? b->per_pid[i] - a->per_pid[i] : 0;
    o += snprintf(dst + o, cap - (size_t)o, " cpu_pct_%d=%.1f", i + 1, (double)d * k);
  }
}

/* ---- sockets and framing ---- */

static void ep_set(struct bench *b, int fd, uint32_t slot, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.u32 = slot};
  if (epoll_ctl(b->ep, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL)
    die("epoll_ctl: %s", strerror(errno));
}

static void conn_free_buffers(struct conn *c) {
  free(c->pend);
  free(c->out);
  free(c->frag);
  c->pend = c->out = c->frag = NULL;
  c->pendlen = c->outlen = c->fraglen = 0;
}

static void conn_close(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  if (c->st == ST_IDLE || c->st == ST_DEAD)
    return;
  if (c->st == ST_CONNECTING || c->st == ST_UPGRADING || (c->st == ST_OPEN && c->greet_left > 0))
    b->handshaking--;
  else if (c->st == ST_OPEN)
    b->up_now--;
  close(c->fd); /* also removes it from the epoll set */
  c->fd = -1;
  c->st = ST_DEAD;
  c->inflight = 0;
  conn_free_buffers(c);
}

/* Queues what the kernel does not take now; EPOLLOUT drains it. */
static int conn_send(struct bench *b, int i, const void *buf, size_t len) {
  struct conn *c = &b->cs[i];
  size_t off = 0;
  if (!c->outlen) {
    ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN)
      return -1;
    off = w < 0 ? 0 : (size_t)w;
    if (off == len)
      return 0;
    ep_set(b, c->fd, (uint32_t)i, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
  }
  c->out = xrealloc(c->out, c->outlen + len - off);
  memcpy(c->out + c->outlen, (const char *)buf + off, len - off);
  c->outlen += len - off;
  return 0;
}

static int conn_flush(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  while (c->outlen) {
    ssize_t w = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
    if (w < 0)
      return errno == EAGAIN ? 0 : -1;
    memmove(c->out, c->out + w, c->outlen - (size_t)w);
    c->outlen -= (size_t)w;
  }
  free(c->out);
  c->out = NULL;
  ep_set(b, c->fd, (uint32_t)i, EPOLLIN, EPOLL_CTL_MOD);
  return 0;
}

/* A masked client frame (RFC 6455 5.3). The mask comes from the caller's random bytes. */
static size_t frame_build(unsigned char *dst, int op, const void *payload, size_t len,
                          const unsigned char mask[4]) {
  size_t h = 0;
  dst[h++] = (unsigned char)(0x80 | op);
  if (len < 126) {
    dst[h++] = (unsigned char)(0x80 | len);
  } else if (len < 65536) {
    dst[h++] = 0x80 | 126;
    dst[h++] = (unsigned char)(len >> 8);
    dst[h++] = (unsigned char)len;
  } else {
    dst[h++] = 0x80 | 127;
    for (int k = 7; k >= 0; k--)
      dst[h++] = (unsigned char)((uint64_t)len >> (8 * k));
  }
  memcpy(dst + h, mask, 4);
  h += 4;
  const unsigned char *p = payload;
  for (size_t k = 0; k < len; k++)
    dst[h + k] = p[k] ^ mask[k & 3];
  return h + len;
}

static int send_control(struct bench *b, int i, int op, const void *payload, size_t len) {
  unsigned char f[14 + 125], mask[4];
  if (len > 125)
    len = 125;
  if (getrandom(mask, sizeof mask, 0) != sizeof mask)
    memset(mask, 0x5a, sizeof mask);
  size_t n = frame_build(f, op, payload, len, mask);
  return conn_send(b, i, f, n);
}

static void build_echo_msg(struct bench *b) {
  unsigned char *payload = xrealloc(NULL, (size_t)b->size), mask[4];
  for (int k = 0; k < b->size; k++)
    payload[k] = (unsigned char)('a' + k % 26);
  if (getrandom(mask, sizeof mask, 0) != sizeof mask)
    memset(mask, 0x5a, sizeof mask);
  b->msg = xrealloc(NULL, (size_t)b->size + 14);
  b->msglen = frame_build(b->msg, 1, payload, (size_t)b->size, mask);
  free(payload);
}

static void conn_start(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0)
    die("socket: %s (raise ulimit -n?)", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (b->srcips > 1) {
    /* The port is picked at connect() from the whole 4-tuple, so each source address brings
     * its own ~28k ephemeral ports. */
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in s = {.sin_family = AF_INET};
    s.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % b->srcips));
    if (bind(c->fd, (struct sockaddr *)&s, sizeof s) < 0)
      die("bind 127.0.0.%d: %s", 1 + i % b->srcips, strerror(errno));
  }
  c->st = ST_CONNECTING;
  c->greet_left = b->greet;
  c->inflight = 0;
  c->frag_op = 0;
  c->deadline = now() + b->hs_timeout;
  b->handshaking++;
  if (connect(c->fd, (struct sockaddr *)&b->dst, sizeof b->dst) < 0 && errno != EINPROGRESS) {
    ep_set(b, c->fd, (uint32_t)i, EPOLLOUT, EPOLL_CTL_ADD); /* the error surfaces as an event */
    return;
  }
  ep_set(b, c->fd, (uint32_t)i, EPOLLOUT, EPOLL_CTL_ADD);
}

static void send_echo(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  c->inflight = 1;
  c->sent_at = now();
  if (conn_send(b, i, b->msg, b->msglen) < 0) {
    b->failed++;
    conn_close(b, i);
  }
}

/* Churn: begin the close. With the handshake we wait for the server's close frame, as a
 * well-behaved client does, so the server's close path is part of the cost measured. */
static void churn_finish(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  b->churned++;
  if (!b->close_handshake) {
    conn_close(b, i);
    conn_start(b, i);
    return;
  }
  unsigned char code[2] = {0x03, 0xe8}; /* 1000 */
  b->up_now--;
  c->st = ST_CLOSING;
  c->deadline = now() + 1.0;
  if (send_control(b, i, 8, code, 2) < 0) {
    c->st = ST_OPEN;
    b->up_now++;
    conn_close(b, i);
    conn_start(b, i);
  }
}

/* The connection finished its handshake and got every greeting frame. */
static void conn_ready(struct bench *b, int i) {
  b->handshaking--;
  b->up_now++;
  b->opened++;
  b->cs[i].counted = 1;
  if (b->mode == M_ECHO)
    send_echo(b, i);
  else if (b->mode == M_CHURN)
    churn_finish(b, i);
}

static void parse_user_id(struct conn *c, const unsigned char *p, size_t len) {
  const char *s = memmem(p, len, "\"user_id\"", 9);
  if (!s)
    return;
  const char *end = (const char *)p + len;
  s += 9;
  while (s < end && (*s == ' ' || *s == ':' || *s == '\t'))
    s++;
  if (s >= end || *s != '"')
    return;
  s++;
  const char *q = memchr(s, '"', (size_t)(end - s));
  if (!q || q - s == 0 || q - s > MAX_USER_ID)
    return;
  free(c->user_id);
  c->user_id = strndup(s, (size_t)(q - s));
}

static void push_on_frame(struct bench *b, int i, const unsigned char *p, size_t len);
static void on_upgrade_failed(struct bench *b, int i);

/* An open connection went away. echo and churn start it again; idle and push count it. */
static void conn_lost(struct bench *b, int i) {
  b->dropped++;
  conn_close(b, i);
  if (b->mode == M_ECHO || b->mode == M_CHURN)
    b->cs[i].st = ST_IDLE;
}

/* One complete message (or control frame) arrived on connection i. */
static void on_message(struct bench *b, int i, int op, const unsigned char *p, size_t len) {
  struct conn *c = &b->cs[i];
  if (op == 9) { /* ping: a heartbeat we must answer, or the server drops us */
    if (send_control(b, i, 10, p, len) < 0)
      conn_close(b, i);
    return;
  }
  if (op == 10)
    return;
  if (op == 8) {
    if (c->st == ST_CLOSING) {
      conn_close(b, i);
      conn_start(b, i);
      return;
    }
    if (c->greet_left > 0)
      on_upgrade_failed(b, i);
    else
      conn_lost(b, i);
    return;
  }
  if (c->st == ST_CLOSING)
    return;
  if (c->greet_left > 0) {
    if (PUSHLIKE(b))
      parse_user_id(c, p, len);
    if (--c->greet_left == 0)
      conn_ready(b, i);
    return;
  }
  if (b->mode == M_ECHO && c->inflight) {
    double d = now() - c->sent_at;
    c->inflight = 0;
    if (b->measuring) {
      samples_add(&b->lat, d);
      b->rtt++;
    }
    send_echo(b, i);
  } else if (PUSHLIKE(b)) {
    push_on_frame(b, i, p, len);
  }
}

/* Parses whole frames out of buf; returns bytes consumed, or -1 when the connection is gone. */
static ssize_t parse_frames(struct bench *b, int i, unsigned char *buf, size_t len) {
  size_t off = 0;
  struct conn *c = &b->cs[i];
  while (len - off >= 2) {
    unsigned char *f = buf + off;
    int fin = f[0] & 0x80, op = f[0] & 15, masked = f[1] & 0x80;
    uint64_t plen = f[1] & 127;
    size_t h = 2;
    if (plen == 126) {
      if (len - off < 4)
        break;
      plen = ((uint64_t)f[2] << 8) | f[3];
      h = 4;
    } else if (plen == 127) {
      if (len - off < 10)
        break;
      plen = 0;
      for (int k = 0; k < 8; k++)
        plen = (plen << 8) | f[2 + k];
      h = 10;
    }
    if (masked)
      h += 4;
    if (plen > MAX_FRAME) {
      b->failed++;
      conn_close(b, i);
      return -1;
    }
    if (len - off < h + plen)
      break;
    unsigned char *payload = f + h;
    if (masked)
      for (uint64_t k = 0; k < plen; k++)
        payload[k] ^= f[h - 4 + (k & 3)];
    off += h + plen;
    if (op >= 8) {
      on_message(b, i, op, payload, plen);
    } else if (fin && op != 0) {
      on_message(b, i, op, payload, plen);
    } else {
      if (op != 0) {
        c->frag_op = op;
        c->fraglen = 0;
      }
      if (c->fraglen + plen > MAX_FRAME) {
        b->failed++;
        conn_close(b, i);
        return -1;
      }
      c->frag = xrealloc(c->frag, c->fraglen + plen);
      memcpy(c->frag + c->fraglen, payload, plen);
      c->fraglen += plen;
      if (fin) {
        unsigned char *m = c->frag;
        size_t mlen = c->fraglen;
        c->frag = NULL;
        c->fraglen = 0;
        on_message(b, i, c->frag_op ? c->frag_op : 1, m, mlen);
        free(m);
      }
    }
    if (c->st != ST_OPEN && c->st != ST_CLOSING)
      return -1;
  }
  return (ssize_t)off;
}

static void ensure_scratch(struct bench *b, size_t n) {
  if (b->scratch_cap < n) {
    b->scratch_cap = n;
    b->scratch = xrealloc(b->scratch, n);
  }
}

static void on_upgrade_failed(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  b->failed++;
  conn_close(b, i);
  c->retry_at = now() + 0.05;
  /* idle/push want every slot up; a refused handshake (backlog full, server busy) retries */
  if ((b->mode == M_IDLE || PUSHLIKE(b)) && c->retries < 3 && !c->counted) {
    c->retries++;
    c->st = ST_IDLE;
  } else if (b->mode == M_CHURN || b->mode == M_ECHO) {
    c->st = ST_IDLE;
  }
}

static void on_readable(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  for (;;) {
    ensure_scratch(b, c->pendlen + 65536);
    if (c->pendlen)
      memcpy(b->scratch, c->pend, c->pendlen);
    size_t have = c->pendlen;
    ssize_t r = recv(c->fd, b->scratch + have, b->scratch_cap - have, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
      if (c->st == ST_CLOSING) {
        conn_close(b, i);
        conn_start(b, i);
      } else if (c->st == ST_UPGRADING || c->greet_left > 0) {
        on_upgrade_failed(b, i);
      } else {
        conn_lost(b, i);
      }
      return;
    }
    if (r < 0)
      return;
    /* A read that did not fill the buffer drained the socket: no need to ask again. */
    int drained = (size_t)r < b->scratch_cap - have;
    have += (size_t)r;
    size_t off = 0;
    if (c->st == ST_UPGRADING) {
      unsigned char *e = memmem(b->scratch, have, "\r\n\r\n", 4);
      if (!e) {
        if (have > 16384) {
          on_upgrade_failed(b, i);
          return;
        }
        c->pend = xrealloc(c->pend, have);
        memcpy(c->pend, b->scratch, have);
        c->pendlen = have;
        continue;
      }
      if (have < 12 || memcmp(b->scratch, "HTTP/1.1 101", 12)) {
        on_upgrade_failed(b, i);
        return;
      }
      off = (size_t)(e + 4 - b->scratch);
      c->st = ST_OPEN;
      if (c->greet_left == 0)
        conn_ready(b, i);
      if (c->st != ST_OPEN && c->st != ST_CLOSING)
        return;
    }
    ssize_t used = parse_frames(b, i, b->scratch + off, have - off);
    if (used < 0)
      return;
    off += (size_t)used;
    size_t left = have - off;
    if (left) {
      if (left > b->scratch_cap / 2)
        ensure_scratch(b, left * 2 + 65536);
      c->pend = xrealloc(c->pend, left);
      memcpy(c->pend, b->scratch + off, left);
    } else {
      free(c->pend);
      c->pend = NULL;
    }
    c->pendlen = left;
    if (drained)
      return;
  }
}

static void on_connected(struct bench *b, int i) {
  struct conn *c = &b->cs[i];
  int err = 0;
  socklen_t l = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
  if (err) {
    on_upgrade_failed(b, i);
    return;
  }
  char req[1024];
  unsigned char key[16];
  char key64[25];
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (getrandom(key, sizeof key, 0) != sizeof key)
    memset(key, 7, sizeof key);
  for (int k = 0, o = 0; k < 16; k += 3) {
    uint32_t v =
        (uint32_t)key[k] << 16 | (k + 1 < 16 ? key[k + 1] << 8 : 0) | (k + 2 < 16 ? key[k + 2] : 0);
    key64[o++] = b64[v >> 18 & 63];
    key64[o++] = b64[v >> 12 & 63];
    key64[o++] = k + 1 < 16 ? b64[v >> 6 & 63] : '=';
    key64[o++] = k + 2 < 16 ? b64[v & 63] : '=';
    key64[o] = 0;
  }
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                   b->path, b->host, b->port, key64,
                   b->deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                "client_max_window_bits\r\n"
                              : "");
  c->st = ST_UPGRADING;
  ep_set(b, c->fd, (uint32_t)i, EPOLLIN, EPOLL_CTL_MOD);
  if (conn_send(b, i, req, (size_t)n) < 0)
    on_upgrade_failed(b, i);
}

/* ---- push: an HTTP/1.1 keep-alive client on its own socket ---- */

static void http_close(struct bench *b) {
  if (b->hfd >= 0)
    close(b->hfd);
  b->hfd = -1;
  b->hst = 0;
  b->hinlen = 0;
}

static int http_open(struct bench *b) {
  b->hfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (b->hfd < 0)
    return -1;
  int one = 1;
  setsockopt(b->hfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* Blocking connect on loopback: done once, before any measurement. */
  if (connect(b->hfd, (struct sockaddr *)&b->hdst, sizeof b->hdst) < 0) {
    http_close(b);
    return -1;
  }
  fcntl(b->hfd, F_SETFL, fcntl(b->hfd, F_GETFL) | O_NONBLOCK);
  ep_set(b, b->hfd, HTTP_SLOT, EPOLLIN, EPOLL_CTL_ADD);
  b->hst = 2;
  return 0;
}

static size_t json_escape(char *dst, size_t cap, const char *s) {
  size_t o = 0;
  for (; *s && o + 7 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      dst[o++] = '\\';
      dst[o++] = (char)ch;
    } else if (ch < 0x20) {
      o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", ch);
    } else {
      dst[o++] = (char)ch;
    }
  }
  dst[o] = 0;
  return o;
}

static void push_send(struct bench *b) {
  if (b->hst != 2 && http_open(b) < 0) {
    b->http_errors++;
    b->next_push_at = now() + 0.1;
    return;
  }
  int target = b->mode == M_ROOM ? -1 : b->order[b->pushes % b->norder];
  if (target >= 0 && b->cs[target].st != ST_OPEN) { /* it dropped: skip it, not measure a queue */
    b->pushes++;
    return;
  }
  char id[2 * MAX_USER_ID + 8] = "", body[1024], req[2048];
  if (target >= 0)
    json_escape(id, sizeof id, b->cs[target].user_id);
  b->cur_seq = b->pushes + 1;
  b->cur_target = target;
  b->cur_frame_seen = b->cur_resp_seen = 0;
  b->cur_arrivals = 0;
  b->cur_sent = now();
  int bl =
      target < 0
          ? snprintf(body, sizeof body, "{\"message\":\"wsb %ld %.9f\"}", b->cur_seq, b->cur_sent)
          : snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"message\":\"wsb %ld %.9f\"}", id,
                     b->cur_seq, b->cur_sent);
  int n = snprintf(req, sizeof req,
                   "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                   "Content-Length: %d\r\n%s%s\r\n%s",
                   b->push_path, b->host, ntohs(b->hdst.sin_port), bl,
                   b->auth_header ? b->auth_header : "", b->auth_header ? "\r\n" : "", body);
  b->pushes++;
  if (send(b->hfd, req, (size_t)n, MSG_NOSIGNAL) != n) {
    b->http_errors++;
    http_close(b);
    b->cur_seq = 0;
  }
}

/* The push cycle ends when both the frame and the HTTP answer arrived (or the time ran out). */
static void push_maybe_done(struct bench *b) {
  if (!b->cur_seq || !b->cur_resp_seen || !b->cur_frame_seen)
    return;
  b->cur_seq = 0;
  double gap = b->push_rate > 0 ? 1.0 / b->push_rate : 0;
  b->next_push_at = b->cur_sent + gap;
}

static void push_on_frame(struct bench *b, int i, const unsigned char *p, size_t len) {
  char tmp[128];
  if (b->mode == M_ROOM && len > 3 && len < sizeof tmp && !memcmp(p, "jl ", 3)) {
    memcpy(tmp, p, len);
    tmp[len] = 0;
    sscanf(tmp + 3, "%ld %lf %lf", &b->jl_n, &b->jl_join_us, &b->jl_leave_us);
    return;
  }
  if (len < 4 || len >= sizeof tmp || memcmp(p, "wsb ", 4))
    return;
  memcpy(tmp, p, len);
  tmp[len] = 0;
  long seq = 0;
  double sent = 0;
  if (sscanf(tmp + 4, "%ld %lf", &seq, &sent) != 2)
    return;
  double d = now() - sent;
  if (b->mode == M_ROOM) { /* done when the last member has it: that is the latency */
    if (seq != b->cur_seq) {
      b->late++;
      return;
    }
    b->push_ok++;
    if (++b->cur_arrivals < b->norder)
      return;
    samples_add(&b->lat, d);
    b->cur_frame_seen = 1;
    push_maybe_done(b);
    return;
  }
  if (seq != b->cur_seq || i != b->cur_target) {
    b->late++;
    return;
  }
  samples_add(&b->lat, d);
  b->push_ok++;
  b->cur_frame_seen = 1;
  push_maybe_done(b);
}

/* The value of header `name` in the head [h, end), or NULL; *vlen gets its length. */
static const char *header_value(const char *h, const char *end, const char *name, size_t *vlen) {
  size_t nl = strlen(name);
  for (const char *l = strstr(h, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
    const char *v = l + 2;
    if (strncasecmp(v, name, nl) || v[nl] != ':')
      continue;
    v += nl + 1;
    while (*v == ' ' || *v == '\t')
      v++;
    const char *ve = strstr(v, "\r\n");
    *vlen = (size_t)(ve - v);
    return v;
  }
  return NULL;
}

static int value_has(const char *v, size_t vlen, const char *word) {
  size_t wl = strlen(word);
  for (size_t k = 0; v && k + wl <= vlen; k++)
    if (!strncasecmp(v + k, word, wl))
      return 1;
  return 0;
}

/* One whole response arrived: its status and {"delivered":n} end or continue the push. */
static void http_response(struct bench *b, int status, const char *body, size_t bodylen) {
  if (!b->cur_seq || b->cur_resp_seen)
    return;
  long delivered = -1;
  const char *d = memmem(body, bodylen, "\"delivered\"", 11);
  if (d && (d = memchr(d, ':', bodylen - (size_t)(d - body))))
    delivered = strtol(d + 1, NULL, 10);
  b->cur_resp_seen = 1;
  samples_add(&b->http_lat, now() - b->cur_sent);
  if (status != 200 || delivered < 1) {
    /* Not delivered live: no frame will come, so this push ends here. */
    if (status != 200)
      b->http_errors++;
    else
      b->push_queued++;
    b->cur_frame_seen = 1;
  }
  push_maybe_done(b);
}

/* Minimal response reader: status line, Content-Length or chunked body, keep-alive. Bodies
 * here are a few bytes, so a chunked body is searched as it stands, chunk sizes and all. */
static void http_readable(struct bench *b) {
  for (;;) {
    ssize_t r = recv(b->hfd, b->hin + b->hinlen, sizeof b->hin - b->hinlen - 1, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
      http_close(b);
      b->http_reconnects++;
      if (b->cur_seq && !b->cur_resp_seen)
        http_response(b, 0, "", 0);
      return;
    }
    if (r < 0)
      return;
    b->hinlen += (size_t)r;
    b->hin[b->hinlen] = 0;
    for (;;) {
      char *e = strstr(b->hin, "\r\n\r\n");
      if (!e)
        break;
      size_t hl = (size_t)(e + 4 - b->hin), vlen = 0, total;
      int status = b->hinlen > 12 ? atoi(b->hin + 9) : 0;
      const char *v = header_value(b->hin, e, "transfer-encoding", &vlen);
      if (value_has(v, vlen, "chunked")) {
        char *z = memmem(b->hin + hl - 2, b->hinlen - (hl - 2), "\r\n0\r\n\r\n", 7);
        if (!z)
          break;
        total = (size_t)(z + 7 - b->hin);
      } else {
        v = header_value(b->hin, e, "content-length", &vlen);
        total = hl + (v ? (size_t)strtoul(v, NULL, 10) : 0);
        if (b->hinlen < total)
          break;
      }
      v = header_value(b->hin, e, "connection", &vlen);
      int closing = value_has(v, vlen, "close");
      http_response(b, status, b->hin + hl, total - hl);
      memmove(b->hin, b->hin + total, b->hinlen - total);
      b->hinlen -= total;
      b->hin[b->hinlen] = 0;
      if (closing) {
        http_close(b);
        return;
      }
    }
    if (b->hinlen >= sizeof b->hin - 1) {
      b->http_errors++;
      http_close(b);
      return;
    }
  }
}

static void push_tick(struct bench *b, double t) {
  if (!b->norder)
    return;
  if (b->cur_seq && t - b->cur_sent > b->push_timeout) {
    if (!b->cur_frame_seen)
      b->push_lost++;
    if (!b->cur_resp_seen) {
      b->http_errors++;
      http_close(b); /* the answer may still come; a fresh socket keeps the pairing simple */
    }
    b->cur_seq = 0;
    b->next_push_at = t;
  }
  if (!b->cur_seq && t >= b->next_push_at && (!b->max_pushes || b->pushes < b->max_pushes))
    push_send(b);
}

static void push_begin(struct bench *b) {
  b->order = xrealloc(NULL, (size_t)b->nconns * sizeof *b->order);
  b->norder = 0;
  for (int i = 0; i < b->nconns; i++)
    if (b->cs[i].st == ST_OPEN && b->cs[i].user_id)
      b->order[b->norder++] = i;
  /* Random order: users are spread over the server's tables, not walked in insertion order. */
  for (int k = b->norder - 1; k > 0; k--) {
    uint32_t r;
    if (getrandom(&r, sizeof r, 0) != sizeof r)
      r = (uint32_t)k * 2654435761u;
    int j = (int)(r % (uint32_t)(k + 1)), tmp = b->order[k];
    b->order[k] = b->order[j];
    b->order[j] = tmp;
  }
  if (b->norder && http_open(b) < 0)
    die("push: cannot connect to %s:%d for HTTP", b->host, ntohs(b->hdst.sin_port));
  /* room: the host times joining every socket to a room and leaving it (the function answers
   * "jl <sockets> <join_us> <leave_us>" on the connection that asked). */
  if (b->mode == M_ROOM && b->norder) {
    unsigned char f[32], mask[4] = {1, 2, 3, 4};
    size_t n = frame_build(f, 1, "joinleave", 9, mask);
    conn_send(b, b->order[0], f, n);
  }
}

/* ---- main loop ---- */

static void sweep(struct bench *b, double t) {
  for (int i = 0; i < b->nconns; i++) {
    struct conn *c = &b->cs[i];
    int waiting =
        c->st == ST_CONNECTING || c->st == ST_UPGRADING || (c->st == ST_OPEN && c->greet_left > 0);
    if (waiting && t > c->deadline) {
      on_upgrade_failed(b, i);
    } else if (c->st == ST_CLOSING && t > c->deadline) {
      conn_close(b, i); /* the server never answered our close: count it done anyway */
      conn_start(b, i);
    }
  }
}

/* Starts idle slots while handshakes in progress stay under the limit, so a ramp of thousands
 * of connections does not overflow the server's listen backlog. */
static void ramp(struct bench *b) {
  while (b->handshaking < b->max_handshakes && b->next_start < b->nconns)
    conn_start(b, b->next_start++);
  if (b->next_start < b->nconns)
    return;
  double t = now();
  for (int i = 0; i < b->nconns && b->handshaking < b->max_handshakes; i++)
    if (b->cs[i].st == ST_IDLE && b->cs[i].retry_at <= t &&
        (b->cs[i].retries || b->mode == M_ECHO || b->mode == M_CHURN))
      conn_start(b, i);
}

static void usage(void) {
  fputs("usage: wsbench [-m echo|churn|idle|push|room] [-h host] [-p port] [-u path] [-c conns]\n"
        "               [-d seconds] [-s size] [-g greetings] [-k srcips] [-w warmup_s]\n"
        "               [-o max_handshakes] [-t handshake_timeout_s] [-C 0|1] [-R pid[,pid..]]\n"
        "               [-l label] [-P push_path] [-a 'Header: value'] [-n max_pushes]\n"
        "               [-r pushes_per_s] [-T push_timeout_ms] [-E http_port] [-x]\n"
        "  echo : one message in flight per connection: round trips/s, p50/p99 latency\n"
        "  churn: connect, upgrade, read -g frames, close (-C 1: close handshake): conns/s\n"
        "  idle : hold -c connections for -d s; -R pid reports the server's RSS per connection\n"
        "  push : -c users greeted with {\"user_id\":..}; POST -P for one at a time, measure\n"
        "         the time until the frame reaches that user's socket; -E: POST to this\n"
        "         port (another node of a cluster) while the users are connected to -p\n"
        "  room : -c members of one room (tests/plugins/room_bench.c); POST -P (/room_bench)\n"
        "         one message at a time to the room, measure until the last member has it\n"
        "  -k N : spread connections over source addresses 127.0.0.1..N (0: automatic)\n"
        "  -R   : server pids whose CPU is the server's (summed); RSS is the first one's\n"
        "  -x   : offer permessage-deflate (idle, churn: compressed frames are counted only)\n",
        stderr);
  exit(2);
}

static void parse_args(struct bench *b, int argc, char **argv) {
  int o;
  const char *m = "echo";
  b->greet = -1;
  while ((o = getopt(argc, argv, "h:p:u:c:d:s:m:g:k:w:o:t:C:R:l:P:a:n:r:T:xE:")) != -1) {
    switch (o) {
    case 'h':
      b->host = optarg;
      break;
    case 'p':
      b->port = atoi(optarg);
      break;
    case 'u':
      b->path = optarg;
      break;
    case 'c':
      b->nconns = atoi(optarg);
      break;
    case 'd':
      b->secs = atof(optarg);
      break;
    case 's':
      b->size = atoi(optarg);
      break;
    case 'm':
      m = optarg;
      break;
    case 'g':
      b->greet = atoi(optarg);
      break;
    case 'k':
      b->srcips = atoi(optarg);
      break;
    case 'w':
      b->warmup = atof(optarg);
      break;
    case 'o':
      b->max_handshakes = atoi(optarg);
      break;
    case 't':
      b->hs_timeout = atof(optarg);
      break;
    case 'C':
      b->close_handshake = atoi(optarg);
      break;
    case 'R': /* pid[,pid...] */
      for (char *t = optarg; *t; t += strspn(t, ",")) {
        char *e;
        long v = strtol(t, &e, 10);
        if (e == t || v <= 0)
          usage();
        if (b->npids == MAX_PIDS)
          die("-R: at most %d pids", MAX_PIDS);
        b->pids[b->npids++] = (int)v;
        t = e;
      }
      b->rss_pid = b->npids ? b->pids[0] : 0;
      break;
    case 'E':
      b->http_port = atoi(optarg);
      break;
    case 'l':
      b->label = optarg;
      break;
    case 'P':
      b->push_path = optarg;
      break;
    case 'a':
      b->auth_header = optarg;
      break;
    case 'n':
      b->max_pushes = atol(optarg);
      break;
    case 'r':
      b->push_rate = atof(optarg);
      break;
    case 'T':
      b->push_timeout = atof(optarg) / 1000.0;
      break;
    case 'x':
      b->deflate = 1;
      break;
    default:
      usage();
    }
  }
  if (optind != argc)
    usage();
  if (!strcmp(m, "echo"))
    b->mode = M_ECHO;
  else if (!strcmp(m, "churn"))
    b->mode = M_CHURN;
  else if (!strcmp(m, "idle"))
    b->mode = M_IDLE;
  else if (!strcmp(m, "push"))
    b->mode = M_PUSH;
  else if (!strcmp(m, "room"))
    b->mode = M_ROOM;
  else
    usage();
  if (b->mode == M_ROOM && !strcmp(b->push_path, "/push"))
    b->push_path = "/room_bench";
  if (b->greet < 0)
    b->greet = PUSHLIKE(b) ? 1 : 0;
  if (PUSHLIKE(b) && b->greet < 1)
    die("push mode needs the greeting (-g >= 1): it carries the user id");
  if (b->nconns < 1 || b->size < 0 || b->secs <= 0 || b->max_handshakes < 1)
    usage();
  if (b->srcips <= 0) /* automatic: one address per 20000 connections, churn always spreads */
    b->srcips = b->mode == M_CHURN ? 16 : 1 + b->nconns / 20000;
  if (b->srcips > 254)
    b->srcips = 254;
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(b->host, NULL, &hints, &res) != 0)
    die("cannot resolve %s", b->host);
  b->dst = *(struct sockaddr_in *)res->ai_addr;
  b->dst.sin_port = htons((uint16_t)b->port);
  b->hdst = b->dst;
  if (b->http_port > 0)
    b->hdst.sin_port = htons((uint16_t)b->http_port);
  freeaddrinfo(res);
}

static const char *mode_name(enum mode m) {
  return m == M_ECHO    ? "echo"
         : m == M_CHURN ? "churn"
         : m == M_IDLE  ? "idle"
         : m == M_PUSH  ? "push"
                        : "room";
}

/* Everything goes back before exit, so leak checkers (make test-asan) see a clean run. */
static void bench_free(struct bench *b) {
  for (int i = 0; i < b->nconns; i++) {
    struct conn *c = &b->cs[i];
    if (c->fd >= 0)
      close(c->fd);
    conn_free_buffers(c);
    free(c->user_id);
  }
  http_close(b);
  close(b->ep);
  free(b->cs);
  free(b->msg);
  free(b->scratch);
  free(b->order);
  free(b->lat.v);
  free(b->http_lat.v);
}

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

int main(int argc, char **argv) {
  struct bench b = {.host = "127.0.0.1",
                    .path = "/",
                    .label = "-",
                    .push_path = "/push",
                    .port = 8080,
                    .nconns = 50,
                    .size = 32,
                    .secs = 5,
                    .warmup = 0.5,
                    .hs_timeout = 10,
                    .push_timeout = 1.0,
                    .max_handshakes = 256,
                    .close_handshake = 1,
                    .hfd = -1};
  parse_args(&b, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  /* Hold as many sockets as the hard limit lets us; the bench needs one per connection. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)b.nconns + 32 > rl.rlim_cur)
    die("%d connections need more than the open files limit %lu", b.nconns,
        (unsigned long)rl.rlim_cur);

  build_echo_msg(&b);
  b.ep = epoll_create1(EPOLL_CLOEXEC);
  b.cs = calloc((size_t)b.nconns, sizeof *b.cs);
  if (!b.cs || b.ep < 0)
    die("setup failed");
  for (int i = 0; i < b.nconns; i++)
    b.cs[i].fd = -1;

  long rss0 = b.rss_pid ? rss_kb(b.rss_pid) : -1, rss1 = -1;
  double t0 = now(), all_up_at = 0, end = 0, last_sweep = t0;
  /* Phase 1 brings every connection up (bounded by the handshake timeout and retries);
   * phase 2 measures for -d seconds after -w warmup. */
  double ramp_deadline = t0 + b.hs_timeout * 4 + 5;
  struct epoll_event evs[1024];
  printf("# wsbench %s %s:%d%s label=%s conns=%d srcips=%d\n", mode_name(b.mode), b.host, b.port,
         b.path, b.label, b.nconns, b.srcips);
  fflush(stdout);
  while (!g_stop) {
    double t = now();
    if (!all_up_at) {
      ramp(&b);
      int ramp_done = b.next_start >= b.nconns && b.handshaking == 0;
      int enough = b.mode == M_CHURN || b.up_now >= b.nconns;
      if (!b.opened && b.failed >= 3L * b.nconns + 3)
        break; /* nothing but refusals: no server there, or not a WebSocket one */
      if (ramp_done || enough || t > ramp_deadline) {
        all_up_at = t;
        b.t_measure = t + b.warmup;
        end = b.t_measure + b.secs;
        printf("# %ld/%d up after %.2f s (%ld failed handshakes)\n", b.up_now, b.nconns, t - t0,
               b.failed);
        fflush(stdout);
        if (PUSHLIKE(&b))
          push_begin(&b);
      }
    } else {
      if (b.mode == M_ECHO || b.mode == M_CHURN)
        ramp(&b);
      if (!b.measuring && t >= b.t_measure) {
        b.measuring = 1;
        b.t_measure = t;
        b.rtt = 0;
        b.churned = 0;
        b.lat.n = 0;
        cpu_snap_take(&b.cpu0, b.pids, b.npids);
      }
      if (t >= end)
        break;
      if (PUSHLIKE(&b) && b.measuring)
        push_tick(&b, t);
      if (PUSHLIKE(&b) && b.max_pushes && b.pushes >= b.max_pushes && !b.cur_seq)
        break;
    }
    if (t - last_sweep > 0.1) {
      sweep(&b, t);
      last_sweep = t;
    }
    int timeout = 10;
    if (PUSHLIKE(&b) && b.measuring && !b.cur_seq && b.norder) {
      double w = b.next_push_at - now();
      timeout = w <= 0 ? 0 : (int)(w * 1000) < 10 ? (int)(w * 1000) : 10;
    }
    int n = epoll_wait(b.ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
    for (int k = 0; k < n; k++) {
      uint32_t slot = evs[k].data.u32;
      if (slot == HTTP_SLOT) {
        if (b.hfd >= 0)
          http_readable(&b);
        continue;
      }
      struct conn *c = &b.cs[slot];
      if (c->st == ST_CONNECTING) {
        on_connected(&b, (int)slot);
        continue;
      }
      if (c->st == ST_DEAD || c->st == ST_IDLE)
        continue;
      if ((evs[k].events & EPOLLOUT) && c->outlen && conn_flush(&b, (int)slot) < 0) {
        conn_lost(&b, (int)slot);
        continue;
      }
      if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(&b, (int)slot);
    }
  }
  /* Stopped before the measured window began (signal): report over the time it did run. */
  double el = now() - (b.measuring ? b.t_measure : t0);
  if (el <= 0)
    el = 1e-9;
  struct cpu_snap cpu1;
  cpu_snap_take(&cpu1, b.pids, b.npids);
  if (b.rss_pid)
    rss1 = rss_kb(b.rss_pid);
  long up = 0;
  for (int i = 0; i < b.nconns; i++)
    up += b.cs[i].st == ST_OPEN || b.cs[i].st == ST_CLOSING;
  if (b.lat.n)
    qsort(b.lat.v, b.lat.n, sizeof *b.lat.v, cmp_double);
  char rss[160] = "", cpu[400] = "", extra[576];
  if (b.rss_pid)
    snprintf(rss, sizeof rss, " rss_before_kb=%ld rss_after_kb=%ld bytes_per_conn=%.0f", rss0, rss1,
             up > 0 && rss0 >= 0 && rss1 >= 0 ? (double)(rss1 - rss0) * 1024.0 / (double)up : 0.0);
  if (b.measuring)
    cpu_report(cpu, sizeof cpu, &b.cpu0, &cpu1, b.npids, el);
  snprintf(extra, sizeof extra, "%s%s", rss, cpu); /* ends every result line */
  switch (b.mode) {
  case M_ECHO:
    printf("# %.0f round trips/s over %d connections, latency p50 %.0f us p99 %.0f us\n",
           (double)b.rtt / el, b.nconns, pct_us(&b.lat, 0.5), pct_us(&b.lat, 0.99));
    printf("mode=echo label=%s conns=%d up=%ld failed=%ld dropped=%ld size=%d seconds=%.2f "
           "rtt=%ld rtt_per_s=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f%s\n",
           b.label, b.nconns, up, b.failed, b.dropped, b.size, el, b.rtt, (double)b.rtt / el,
           pct_us(&b.lat, 0.5), pct_us(&b.lat, 0.99), pct_us(&b.lat, 1.0), extra);
    break;
  case M_CHURN:
    printf("# %.0f connections/s (connect, upgrade, %d greeting frame(s), close%s)\n",
           (double)b.churned / el, b.greet, b.close_handshake ? " handshake" : "");
    printf("mode=churn label=%s conns=%d failed=%ld dropped=%ld greetings=%d close_handshake=%d "
           "seconds=%.2f churned=%ld conns_per_s=%.0f%s\n",
           b.label, b.nconns, b.failed, b.dropped, b.greet, b.close_handshake, el, b.churned,
           (double)b.churned / el, extra);
    break;
  case M_IDLE:
    printf("# %ld of %d connections up after %.1f s held", up, b.nconns, el);
    if (b.rss_pid)
      printf(", server RSS %ld -> %ld kB, %.0f bytes per connection", rss0, rss1,
             up ? (double)(rss1 - rss0) * 1024.0 / (double)up : 0.0);
    printf("\nmode=idle label=%s conns=%d up=%ld failed=%ld dropped=%ld seconds=%.2f%s\n", b.label,
           b.nconns, up, b.failed, b.dropped, el, extra);
    break;
  case M_PUSH:
    if (b.http_lat.n)
      qsort(b.http_lat.v, b.http_lat.n, sizeof *b.http_lat.v, cmp_double);
    printf("# %ld pushes to %d users: %ld delivered, p50 %.0f us p99 %.0f us (HTTP answer p50 "
           "%.0f us); %ld lost, %ld queued, %ld HTTP errors\n",
           b.pushes, b.norder, b.push_ok, pct_us(&b.lat, 0.5), pct_us(&b.lat, 0.99),
           pct_us(&b.http_lat, 0.5), b.push_lost, b.push_queued, b.http_errors);
    printf("mode=push label=%s conns=%d up=%ld users=%d failed=%ld dropped=%ld seconds=%.2f "
           "pushes=%ld delivered=%ld lost=%ld queued=%ld late=%ld http_errors=%ld "
           "pushes_per_s=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f http_p50_us=%.0f "
           "http_p99_us=%.0f%s\n",
           b.label, b.nconns, up, b.norder, b.failed, b.dropped, el, b.pushes, b.push_ok,
           b.push_lost, b.push_queued, b.late, b.http_errors, (double)b.push_ok / el,
           pct_us(&b.lat, 0.5), pct_us(&b.lat, 0.99), pct_us(&b.lat, 1.0), pct_us(&b.http_lat, 0.5),
           pct_us(&b.http_lat, 0.99), extra);
    break;
  case M_ROOM:
    printf("# %ld messages to a room of %d: %ld frames delivered (%.0f/s), send to last member "
           "p50 %.0f us p99 %.0f us; %ld incomplete; host joined %ld sockets in %.1f ms, left "
           "in %.1f ms\n",
           b.pushes, b.norder, b.push_ok, (double)b.push_ok / el, pct_us(&b.lat, 0.5),
           pct_us(&b.lat, 0.99), b.push_lost, b.jl_n, b.jl_join_us / 1e3, b.jl_leave_us / 1e3);
    printf("mode=room label=%s conns=%d up=%ld members=%d failed=%ld dropped=%ld seconds=%.2f "
           "messages=%ld delivered=%ld incomplete=%ld late=%ld http_errors=%ld "
           "delivered_per_s=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f jl_sockets=%ld "
           "join_us=%.0f leave_us=%.0f%s\n",
           b.label, b.nconns, up, b.norder, b.failed, b.dropped, el, b.pushes, b.push_ok,
           b.push_lost, b.late, b.http_errors, (double)b.push_ok / el, pct_us(&b.lat, 0.5),
           pct_us(&b.lat, 0.99), pct_us(&b.lat, 1.0), b.jl_n, b.jl_join_us, b.jl_leave_us, extra);
    break;
  }
  fflush(stdout);
  int status = b.opened ? 0 : 1; /* not one connection came up: the figures mean nothing */
  if (!b.opened)
    fprintf(stderr, "wsbench: no WebSocket connection to %s:%d%s came up (%ld failed)\n", b.host,
            b.port, b.path, b.failed);
  bench_free(&b);
  return status;
}
