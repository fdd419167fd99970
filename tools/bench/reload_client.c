/* reload_client.c: the load side of tools/bench/reload. Holds C connections to a running
 * wshost whose __websocket__ is tests/plugins/reload_ws.c (answers "v<N>:<message>"), keeps
 * every connection in a tight request/answer loop, and performs R reloads by rename(2) of a
 * staged copy of the other version into the plugins folder. It is the one clock: it stamps the
 * rename and every answer, so nothing between the two processes blurs the figures.
 *
 *   reload_client PORT PLUGINS_DIR V1_SO V2_SO STAGE_DIR RELOADS CONNS QUIET_MS
 *
 * STAGE_DIR must be on the file system of PLUGINS_DIR (rename is atomic there). The host must be
 * serving V1 when it starts. Prints one JSON object with the figures (times in microseconds):
 *   rename_to_first[]  rename to the first answer by the new version, per reload
 *   rename_to_all[]    rename until every connection had been answered by it, per reload
 *   gaps: max/p99/count of answer-to-answer gaps per connection, split into gaps touching a
 *   reload window (rename .. all switched + 50 ms) and the others (same run, no reload);
 *   "swap": the gap on each connection that ends with its first answer by the new version
 *   (it holds the moment the host copied, loaded and swapped the file).
 * Needs nothing but libc. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WINDOW_TAIL_NS 50000000LL /* a reload window ends 50 ms after the last switch */
#define SWITCH_TIMEOUT_NS 5000000000LL

struct conn {
  int fd;
  unsigned char buf[65536];
  size_t len;
  uint64_t seq;
  int64_t last_ns; /* last answer (or the send that started the loop) */
  int version;
  int switched; /* answered by the version of the current reload */
};

struct gaps {
  int64_t *v;
  size_t n, cap;
  int64_t max;
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "reload_client: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void gap_add(struct gaps *g, int64_t ns) {
  if (g->n == g->cap) {
    g->cap = g->cap ? g->cap * 2 : 65536;
    g->v = realloc(g->v, g->cap * sizeof *g->v);
    if (!g->v)
      die("realloc");
  }
  g->v[g->n++] = ns;
  if (ns > g->max)
    g->max = ns;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int64_t pct(int64_t *v, size_t n, double p) {
  if (!n)
    return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

static void send_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) /* small frames: the socket buffer is never full */
        continue;
      die("send");
    }
    c += w;
    n -= (size_t)w;
  }
}

/* A masked client frame. */
static void send_frame(struct conn *c, int opcode, const void *data, size_t n) {
  unsigned char f[256];
  uint32_t key;
  if (n > 125)
    n = 125;
  if (getrandom(&key, sizeof key, 0) != sizeof key)
    key = 0x5a5a5a5a;
  f[0] = 0x80 | opcode;
  f[1] = 0x80 | (unsigned char)n;
  memcpy(f + 2, &key, 4);
  for (size_t i = 0; i < n; i++)
    f[6 + i] = ((const unsigned char *)data)[i] ^ f[2 + (i & 3)];
  send_all(c->fd, f, 6 + n);
}

static void send_next(struct conn *c) {
  char msg[32];
  int n = snprintf(msg, sizeof msg, "p%llu", (unsigned long long)++c->seq);
  send_frame(c, 1, msg, (size_t)n);
}

static int connect_one(struct conn *c, int port) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0)
    die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0)
    die("connect");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const char *req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n";
  send_all(c->fd, req, strlen(req));
  char *end = NULL;
  while (!end) {
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
    if (r <= 0)
      die("handshake");
    c->len += (size_t)r;
    c->buf[c->len] = 0;
    end = strstr((char *)c->buf, "\r\n\r\n");
  }
  if (strncmp((char *)c->buf, "HTTP/1.1 101", 12)) {
    fprintf(stderr, "reload_client: upgrade refused: %.60s\n", c->buf);
    exit(2);
  }
  size_t head = (size_t)(end + 4 - (char *)c->buf);
  memmove(c->buf, c->buf + head, c->len - head);
  c->len -= head;
  fcntl(c->fd, F_SETFL, O_NONBLOCK);
  return 0;
}

static int copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC), out = -1;
  if (in < 0)
    return -1;
  out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    close(in);
    return -1;
  }
  char b[65536];
  ssize_t n;
  int rc = 0;
  while ((n = read(in, b, sizeof b)) > 0)
    if (write(out, b, (size_t)n) != n)
      rc = -1;
  if (n < 0)
    rc = -1;
  fchmod(out, 0644);
  if (close(out) < 0)
    rc = -1;
  close(in);
  return rc;
}

int main(int argc, char **argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: %s PORT PLUGINS_DIR V1_SO V2_SO STAGE_DIR RELOADS CONNS QUIET_MS\n",
            argv[0]);
    return 2;
  }
  int port = atoi(argv[1]), reloads = atoi(argv[6]), nconn = atoi(argv[7]);
  int64_t quiet_ns = atoll(argv[8]) * 1000000LL;
  const char *plugins = argv[2], *so[3] = {NULL, argv[3], argv[4]}, *stage = argv[5];
  char live[4096], staged[4096];
  snprintf(live, sizeof live, "%s/__websocket__.so", plugins);

  struct conn *cs = calloc((size_t)nconn, sizeof *cs);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!cs || ep < 0)
    die("setup");
  for (int i = 0; i < nconn; i++) {
    connect_one(&cs[i], port);
    cs[i].version = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0)
      die("epoll_ctl");
  }

  struct gaps during = {0}, quiet = {0}, swap = {0};
  int64_t *to_first = calloc((size_t)reloads + 1, sizeof *to_first);
  int64_t *to_all = calloc((size_t)reloads + 1, sizeof *to_all);
  uint64_t answers = 0, regressions = 0;
  int cur = 1, target = 1, done = 0, nswitched = 0;
  int64_t t_rename = 0, window_end = 0, next_reload, t_start = now_ns();
  next_reload = t_start + quiet_ns;

  /* Stage every version in advance: copying is not part of what is measured, and this
   * thread must do nothing but answer while a reload runs. Reload i (1-based) brings v2 when
   * i is odd, v1 when even. */
  for (int i = 1; i <= reloads; i++) {
    snprintf(staged, sizeof staged, "%s/__websocket__.%d.so", stage, i);
    if (copy_file(so[i % 2 ? 2 : 1], staged) < 0)
      die("stage copy");
  }
  sync();

  int64_t t0 = now_ns();
  for (int i = 0; i < nconn; i++) {
    cs[i].last_ns = t0;
    send_next(&cs[i]);
  }

  struct epoll_event evs[256];
  for (;;) {
    int64_t now = now_ns();
    int reloading = t_rename && (!window_end || now < window_end);
    if (!reloading && window_end && now >= window_end) {
      /* the last window closed */
      window_end = 0;
      t_rename = 0;
      if (done == reloads)
        break;
      next_reload = now + quiet_ns;
    }
    if (!t_rename && done < reloads && now >= next_reload) {
      target = cur == 1 ? 2 : 1;
      nswitched = 0;
      for (int i = 0; i < nconn; i++)
        cs[i].switched = 0;
      done++;
      snprintf(staged, sizeof staged, "%s/__websocket__.%d.so", stage, done);
      t_rename = now_ns();
      if (rename(staged, live) < 0)
        die("rename");
    }
    if (t_rename && !window_end && now - t_rename > SWITCH_TIMEOUT_NS) {
      fprintf(stderr, "reload_client: reload %d: only %d of %d connections switched to v%d "
                      "within 5 s\n", done, nswitched, nconn, target);
      return 1;
    }
    int n = epoll_wait(ep, evs, 256, 1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_wait");
    }
    for (int k = 0; k < n; k++) {
      struct conn *c = &cs[evs[k].data.u32];
      ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        fprintf(stderr, "reload_client: connection %u closed by the host\n", evs[k].data.u32);
        return 1;
      }
      if (r < 0)
        continue;
      c->len += (size_t)r;
      for (;;) { /* every complete frame in the buffer */
        if (c->len < 2)
          break;
        size_t plen = c->buf[1] & 0x7f, off = 2;
        if (plen == 126) {
          if (c->len < 4)
            break;
          plen = (size_t)c->buf[2] << 8 | c->buf[3];
          off = 4;
        } else if (plen == 127) {
          fprintf(stderr, "reload_client: unexpected huge frame\n");
          return 1;
        }
        if (c->len < off + plen)
          break;
        int op = c->buf[0] & 0x0f;
        char msg[256];
        size_t ml = plen < sizeof msg - 1 ? plen : sizeof msg - 1;
        memcpy(msg, c->buf + off, ml);
        msg[ml] = 0;
        memmove(c->buf, c->buf + off + plen, c->len - off - plen);
        c->len -= off + plen;
        if (op == 8) {
          fprintf(stderr, "reload_client: close frame from the host\n");
          return 1;
        }
        if (op == 9) {
          send_frame(c, 10, msg, ml);
          continue;
        }
        if (op != 1 || msg[0] == '{') /* the greeting */
          continue;
        int64_t t = now_ns();
        char *colon = strchr(msg, ':');
        unsigned long long seq = colon ? strtoull(colon + 2, NULL, 10) : 0;
        if (msg[0] != 'v' || !colon || colon[1] != 'p' || seq != c->seq) {
          fprintf(stderr, "reload_client: unexpected answer %s (sent p%llu)\n", msg,
                  (unsigned long long)c->seq);
          return 1;
        }
        int v = atoi(msg + 1);
        int64_t gap = t - c->last_ns;
        /* a gap touching a reload window counts as "during reload" */
        int in_window = t_rename && c->last_ns < (window_end ? window_end : INT64_MAX) &&
                        t >= t_rename;
        gap_add(in_window ? &during : &quiet, gap);
        if (t_rename && v == target && !c->switched) {
          c->switched = 1;
          gap_add(&swap, gap); /* this gap holds the moment the host swapped versions */
          if (nswitched++ == 0)
            to_first[done] = t - t_rename;
          if (nswitched == nconn) {
            to_all[done] = t - t_rename;
            window_end = t + WINDOW_TAIL_NS;
            cur = target;
          }
        } else if (v != c->version && v != target) {
          regressions++;
        }
        c->version = v;
        c->last_ns = t;
        answers++;
        send_next(c);
      }
    }
  }
  int64_t t_end = now_ns();

  qsort(during.v, during.n, sizeof *during.v, cmp64);
  qsort(quiet.v, quiet.n, sizeof *quiet.v, cmp64);
  printf("{\"connections\":%d,\"reloads\":%d,\"answers\":%llu,\"seconds\":%.3f,"
         "\"regressions\":%llu,\"rename_to_first\":[",
         nconn, reloads, (unsigned long long)answers, (double)(t_end - t0) / 1e9,
         (unsigned long long)regressions);
  for (int i = 1; i <= reloads; i++)
    printf("%s%lld", i > 1 ? "," : "", (long long)(to_first[i] / 1000));
  printf("],\"rename_to_all\":[");
  for (int i = 1; i <= reloads; i++)
    printf("%s%lld", i > 1 ? "," : "", (long long)(to_all[i] / 1000));
  qsort(swap.v, swap.n, sizeof *swap.v, cmp64);
  printf("],\"swap\":{\"count\":%zu,\"max\":%lld,\"p99\":%lld,\"p50\":%lld}", swap.n,
         (long long)(swap.max / 1000), (long long)(pct(swap.v, swap.n, .99) / 1000),
         (long long)(pct(swap.v, swap.n, .5) / 1000));
  printf(",\"during\":{\"count\":%zu,\"max\":%lld,\"p99\":%lld,\"p50\":%lld},"
         "\"quiet\":{\"count\":%zu,\"max\":%lld,\"p99\":%lld,\"p50\":%lld}}\n",
         during.n, (long long)(during.max / 1000), (long long)(pct(during.v, during.n, .99) / 1000),
         (long long)(pct(during.v, during.n, .5) / 1000), quiet.n,
         (long long)(quiet.max / 1000), (long long)(pct(quiet.v, quiet.n, .99) / 1000),
         (long long)(pct(quiet.v, quiet.n, .5) / 1000));
  return 0;
}
