/* worker.c: --isolation process, the serving process's side: forks the workers, sends each
 * event to one (a connection's events to the worker that has its earlier ones still in hand,
 * so they stay in order; otherwise the least busy), applies the SDK calls they send back on
 * the loop, and turns a worker's death into a failed event (1011 / 502) and a fresh worker.
 * The serving process never waits on a worker except for the events that must be answered
 * before the loop goes on (the connection event, the interceptor, __init__). */
#include "worker.h"

#include "api.h"
#include "crash.h"
#include "defer.h"
#include "http.h"
#include "initfn.h"
#include "log.h"
#include "net_ops.h"
#include "plugins.h"
#include "quarantine.h"
#include "rooms.h"
#include "stream.h"
#include "supervisor.h"
#include "timers.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char INTERCEPTOR[] = "__interceptor__";

/* Event bytes queued for one worker at most. In-process a client that floods a slow function
 * is held back by TCP (the loop does not read while the function runs); here the loop keeps
 * reading, so what waits for a worker is bounded instead. */
#define WORKER_QUEUE_MAX (32u << 20)

/* A worker that has finished nothing for this long is busy with something slow. */
#define WORKER_STALL_MS 20

struct worker {
  struct workers *pool;
  int index;
  pid_t pid;
  int fd;
  int pidfd;        /* readable once the process is gone, whoever still holds its socket */
  int retiring;     /* replaced after a reload: finishes what it has, then goes */
  int ready;        /* it said W_READY: its copies of the functions are loaded and inited */
  int64_t quit_ms;  /* when it was told to quit (0: not yet) */
  json_t *versions; /* plugins_status when it was forked: the builds it runs */
  int inflight;
  int64_t progress_ms; /* the last time it finished an event, or got one when idle */
  int64_t started_ms;
  ev_io rio, wio, dio;
  char *in;
  size_t in_len, in_cap;
  char *out;
  size_t out_len, out_off, out_cap;
  struct worker *next; /* the retiring list */
  uint64_t gen;        /* unique over the pool's life: what owns a deferred response */
  /* Set when it broke the boundary (a frame for what it was not handed, replies it does not
   * read): nothing more of it is read, and its reader replaces it. Static text. */
  const char *violation;
};

/* One event handed to a worker and not yet answered. */
struct pending {
  uint64_t seq;
  enum inv_kind kind;
  struct worker *w;
  uint64_t conn;         /* WS: the connection id */
  cloud_deferred *defer; /* async HTTP: the response to complete */
  struct http_req *r;    /* sync HTTP: the request (alive for the whole wait) */
  FunctionContext *ctx;  /* sync: the caller's context */
  struct firing *timer;  /* INV_TIMER: its in-hand record */
  int sync, done, rc, crashed;
  int64_t started_ms;
  char function[FN_NAME_MAX + 1];
  char request_id[72];
  char method[32];
  char what[200]; /* WS: the user id; HTTP: the path; timer: its name (for the log lines) */
};

/* A timer whose last firing a worker still runs: the next ones are skipped, not queued
 * (timers.c does the same in-process by the clock: a handler that overran its period). */
struct firing {
  uint64_t every_ms, skipped;
  char key[FN_NAME_MAX + 2 + 128 + 1];
  size_t keylen;
};

/* The recent crashes of one build of a function (keyed "<function>\0<sha256>"). */
struct crash_count {
  char sha256[CRASH_SHA_HEX];
  int n;
  int64_t t[64];
};

/* Which worker has a connection's events in hand. */
struct affinity {
  struct worker *w;
  int inflight;
};

struct workers {
  struct host *h;
  int n;
  struct worker **live; /* n slots */
  struct worker *retiring;
  struct map pend;    /* seq -> struct pending * */
  struct map aff;     /* conn id -> struct affinity * */
  struct map crashes; /* function -> struct crash_count: recent crashes of its build */
  struct map firing;  /* "<function>\0<timer>" -> struct firing *: a timer's event in hand */
  struct map streams; /* 8-byte stream id -> the pid of the worker writing it (as a pointer) */
  uint64_t next_seq;
  ev_timer tick;
  uint64_t lost; /* workers lost with events in hand */
  uint64_t next_gen;
  uint64_t violations; /* calls or answers refused: for what the worker was not handed */
  struct map owner;    /* deferred handle (8 bytes) -> gen of the worker it was handed to */
  int closed;          /* workers_close ran: events from here on are dropped, never run here */
};

int workers_on(const struct host *h) {
  return h && h->workers;
}

uint64_t workers_violations(const struct host *h) {
  return h && h->workers ? h->workers->violations : 0;
}

/* A deferred response belongs to the worker its request was handed to. Entries of responses
 * that ended (answered, timed out) are swept as the table grows. */
static void owner_sweep(struct workers *P) {
  for (size_t i = 0; i < P->owner.nbuckets; i++)
    for (struct map_entry *e = P->owner.buckets[i], *next; e; e = next) {
      next = e->next;
      uint64_t handle;
      memcpy(&handle, e->key, sizeof handle);
      if (!defer_open(P->h, (cloud_deferred *)(uintptr_t)handle))
        free(map_del(&P->owner, e->key, e->keylen));
    }
}

static void owner_set(struct workers *P, cloud_deferred *d, const struct worker *w) {
  uint64_t handle = (uint64_t)(uintptr_t)d, *gen = malloc(sizeof *gen);
  if (!gen)
    return;
  *gen = w->gen;
  free(map_del(&P->owner, &handle, sizeof handle));
  if (map_set(&P->owner, &handle, sizeof handle, gen) < 0)
    free(gen);
  else if (P->owner.count > 2 * defers_outstanding(P->h) + 64)
    owner_sweep(P);
}

static int owns(struct workers *P, const struct worker *w, uint64_t handle) {
  const uint64_t *gen = map_get(&P->owner, &handle, sizeof handle);
  return gen && *gen == w->gen;
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents);
static void on_write(struct ev_loop *loop, ev_io *io, int revents);
static void on_death(struct ev_loop *loop, ev_io *io, int revents);
static void worker_lost(struct worker *w, const char *why);

static struct worker *spawn(struct workers *P, int index) {
  struct host *h = P->h;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    log_error(NULL, NULL, "worker %d: socketpair: %s", index, strerror(errno));
    return NULL;
  }
  pid_t pid = fork();
  if (pid < 0) {
    log_error(NULL, NULL, "worker %d: fork: %s", index, strerror(errno));
    close(sv[0]);
    close(sv[1]);
    return NULL;
  }
  if (pid == 0) {
    close(sv[0]);
    worker_main(h, sv[1], index);
    _exit(0);
  }
  close(sv[1]);
  struct worker *w = calloc(1, sizeof *w);
  if (!w) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(sv[0]);
    return NULL;
  }
  w->gen = ++P->next_gen;

  w->pool = P;
  w->index = index;
  w->pid = pid;
  w->fd = sv[0];
  w->started_ms = host_now_ms();
  w->versions = plugins_status(h->plugins);
  fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
  ev_io_init(&w->rio, on_read, w->fd, EV_READ);
  w->rio.data = w;
  ev_io_init(&w->wio, on_write, w->fd, EV_WRITE);
  w->wio.data = w;
  ev_io_start(h->loop, &w->rio);
  /* Its death is seen by its pid, not by the end of its socket: a child it forked may hold a
   * copy of that socket open long after it died. */
  w->pidfd = pidfd_open(pid, 0);
  if (w->pidfd >= 0) {
    fcntl(w->pidfd, F_SETFD, FD_CLOEXEC);
    ev_io_init(&w->dio, on_death, w->pidfd, EV_READ);
    w->dio.data = w;
    ev_io_start(h->loop, &w->dio);
  } else
    log_debug(NULL, NULL, "worker %d: pidfd_open: %s: its death is checked once a second", index,
              strerror(errno));
  log_info(NULL, NULL, "worker %d started (pid %d)", index, (int)pid);
  return w;
}

static void worker_free(struct worker *w) {
  struct host *h = w->pool->h;
  ev_io_stop(h->loop, &w->rio);
  ev_io_stop(h->loop, &w->wio);
  ev_io_stop(h->loop, &w->dio);
  if (w->fd >= 0)
    close(w->fd);
  if (w->pidfd >= 0)
    close(w->pidfd);
  if (w->pid > 0) {
    kill(w->pid, SIGKILL);
    waitpid(w->pid, NULL, 0);
  }
  free(w->in);
  free(w->out);
  json_decref(w->versions);
  free(w);
}

/* ---- output: buffered, never blocking the loop */

static int flush_out(struct worker *w) {
  while (w->out_off < w->out_len) {
    ssize_t n = write(w->fd, w->out + w->out_off, w->out_len - w->out_off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n <= 0)
      return -EPIPE;
    w->out_off += (size_t)n;
  }
  if (w->out_off == w->out_len)
    w->out_off = w->out_len = 0;
  struct host *h = w->pool->h;
  if (w->out_len)
    ev_io_start(h->loop, &w->wio);
  else
    ev_io_stop(h->loop, &w->wio);
  return 0;
}

static int queue_frame(struct worker *w, struct wbuf *b) {
  if (wbuf_end(b) < 0)
    return CLOUD_ENOMEM;
  if (w->out_len + b->len > w->out_cap) {
    size_t cap = w->out_cap ? w->out_cap : 4096;
    while (cap < w->out_len + b->len)
      cap *= 2;
    char *q = realloc(w->out, cap);
    if (!q)
      return CLOUD_ENOMEM;
    w->out = q;
    w->out_cap = cap;
  }
  memcpy(w->out + w->out_len, b->p, b->len);
  w->out_len += b->len;
  return flush_out(w) < 0 ? CLOUD_EIO : 0;
}

static void on_write(struct ev_loop *loop, ev_io *io, int revents) {
  (void)loop;
  (void)revents;
  struct worker *w = io->data;
  if (flush_out(w) < 0)
    worker_lost(w, "its socket broke");
}

/* ---- events */

static int stalled(const struct worker *w, int64_t now) {
  return w->inflight && now - w->progress_ms > WORKER_STALL_MS;
}

/* fn: for events without a connection, the function: its home worker is preferred while it
 * keeps up, so state a function keeps in its own memory between a request and its timer's
 * firings (the ticker test's sleep setting) is mostly where it was set. cloud_shared is the
 * state every worker sees. */
static struct worker *pick(struct workers *P, uint64_t conn, const char *fn) {
  if (conn) {
    struct affinity *a = map_get(&P->aff, &conn, sizeof conn);
    if (a && a->inflight > 0 && a->w)
      return a->w;
  }
  /* The least busy; a worker that has not finished anything for a while is running something
   * slow (a blocking call, a loop): events queued there would wait for it. */
  struct worker *best = NULL;
  int64_t now = host_now_ms(), best_cost = 0;
  for (int i = 0; i < P->n; i++) {
    struct worker *w = P->live[i];
    if (!w)
      continue;
    int64_t cost = w->inflight;
    if (stalled(w, now))
      cost += 1000000 + (now - w->progress_ms);
    if (!best || cost < best_cost)
      best = w, best_cost = cost;
  }
  if (!conn && fn && best) {
    uint64_t hash = 1469598103934665603ull;
    for (const char *c = fn; *c; c++)
      hash = (hash ^ (unsigned char)*c) * 1099511628211ull;
    struct worker *home = P->live[hash % (uint64_t)P->n];
    if (home && !stalled(home, now) && home->inflight <= best->inflight + 1)
      return home;
  }
  return best;
}

static void affinity_add(struct workers *P, uint64_t conn, struct worker *w) {
  if (!conn)
    return;
  struct affinity *a = map_get(&P->aff, &conn, sizeof conn);
  if (!a) {
    a = calloc(1, sizeof *a);
    if (!a || map_set(&P->aff, &conn, sizeof conn, a) < 0) {
      free(a);
      return;
    }
  }
  a->w = w;
  a->inflight++;
}

static void affinity_drop(struct workers *P, uint64_t conn) {
  if (!conn)
    return;
  struct affinity *a = map_get(&P->aff, &conn, sizeof conn);
  if (a && --a->inflight <= 0)
    free(map_del(&P->aff, &conn, sizeof conn));
}

static void send_quit(struct worker *w) {
  struct wbuf b = {0};
  wbuf_begin(&b, W_EVENT);
  wbuf_u64(&b, 0);
  wbuf_u64(&b, WORKER_QUIT);
  queue_frame(w, &b);
  wbuf_free(&b);
  if (!w->quit_ms)
    w->quit_ms = host_now_ms();
}

static void pending_end(struct workers *P, struct pending *p) {
  map_del(&P->pend, &p->seq, sizeof p->seq);
  if (p->timer) {
    struct firing *f = p->timer;
    if (f->skipped)
      log_debug(p->function, p->request_id,
                "timer %s overran its %llu ms period: %llu firings skipped",
                f->key + strlen(f->key) + 1, (unsigned long long)f->every_ms,
                (unsigned long long)f->skipped);
    map_del(&P->firing, f->key, f->keylen);
    free(f);
    p->timer = NULL;
  }
  if (p->w) {
    p->w->inflight--;
    p->w->progress_ms = host_now_ms();
    /* A replaced worker goes once the events it has are done: until then a connection's
     * next events follow its earlier ones there, in order. */
    if (p->w->retiring && !p->w->inflight && p->w->pid > 0)
      send_quit(p->w);
  }
  affinity_drop(P, p->conn);
  if (!p->sync)
    free(p);
}

static void http_crashed(struct http_req *r, const char *request_id, int status,
                         const char *error) {
  char body[200];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\",\"requestId\":\"%s\"}", error, request_id);
  r->host->net->http_set_response(r, status, "application/json", body, (size_t)n);
}

/* The event's worker died (or was killed for overrunning): the event fails alone. */
static void pending_crashed(struct workers *P, struct pending *p, const char *why) {
  struct host *h = P->h;
  h->stats.plugin_errors++;
  log_error(p->function, p->request_id, "%s failed: %s", p->method, why);
  p->rc = -1;
  p->crashed = 1;
  if (p->kind == INV_WS && p->conn)
    h->net->ws_close(h, (cloud_socket){p->conn}, 1011, "function crashed");
  else if (p->kind == INV_HTTP && p->r)
    http_crashed(p->r, p->request_id, 502, "Function Crashed");
  else if (p->kind == INV_HTTP && p->defer) {
    char body[200];
    int n = snprintf(body, sizeof body, "{\"error\":\"Function Crashed\",\"requestId\":\"%s\"}",
                     p->request_id);
    defer_complete(h, p->defer, 502, "application/json", body, (size_t)n);
  }
  p->done = 1;
  pending_end(P, p);
}

/* Forgets the builds whose last crash is out of the window: the table stays as small as the
 * number of builds crashing now. */
struct prune_walk {
  int64_t now, window;
  char keys[16][FN_NAME_MAX + 1 + CRASH_SHA_HEX];
  size_t lens[16];
  int n;
};

static void prune_one(void *arg, const char *key, void *value) {
  struct prune_walk *w = arg;
  struct crash_count *c = value;
  size_t len = strlen(key) + 1 + strlen(c->sha256);
  if (w->n < 16 && (!c->n || w->now - c->t[c->n - 1] > w->window) && len <= sizeof w->keys[0]) {
    memcpy(w->keys[w->n], key, len);
    w->lens[w->n++] = len;
  }
}

static void crashes_prune(struct workers *P, int64_t now) {
  struct prune_walk w = {.now = now, .window = (int64_t)P->h->cfg.quarantine_window * 1000};
  map_each(&P->crashes, prune_one, &w);
  for (int i = 0; i < w.n; i++)
    free(map_del(&P->crashes, w.keys[i], w.lens[i]));
}

/* A worker died of a fatal signal in fn's event: the crash is recorded (/_/status shows it);
 * the build's K-th crash within T seconds quarantines it (the crash costs one event here,
 * so a few are tolerated; a build that keeps crashing is taken out, as in-process). */
static void crash_seen(struct workers *P, struct worker *w, struct pending *p, pid_t pid,
                       int signo) {
  struct host *h = P->h;
  /* The build that ran the event is the one the worker was forked with: a retiring worker
   * still runs the version a deploy replaced, and its crashes are that version's. */
  json_t *ran = json_object_get(w->versions, p->function);
  const char *ran_sha = json_string_value(json_object_get(ran, "sha256"));
  int version = (int)json_integer_value(json_object_get(ran, "version"));
  if (!ran_sha || !version)
    return;
  char sha[CRASH_SHA_HEX] = "", cur_sha[CRASH_SHA_HEX] = "";
  snprintf(sha, sizeof sha, "%s", ran_sha);
  int current =
      plugins_current(h->plugins, p->function, cur_sha) == version && !strcmp(cur_sha, sha);
  int64_t now = host_now_ms();
  char key[FN_NAME_MAX + 1 + CRASH_SHA_HEX];
  size_t fl = strlen(p->function);
  memcpy(key, p->function, fl + 1);
  memcpy(key + fl + 1, sha, CRASH_SHA_HEX);
  size_t keylen = fl + 1 + strlen(sha);
  crashes_prune(P, now);
  struct crash_count *c = map_get(&P->crashes, key, keylen);
  if (!c) {
    if (!(c = calloc(1, sizeof *c)) || map_set(&P->crashes, key, keylen, c) < 0) {
      free(c);
      return;
    }
    memcpy(c->sha256, sha, sizeof sha);
  }
  int64_t window = (int64_t)h->cfg.quarantine_window * 1000;
  int kept = 0;
  for (int i = 0; i < c->n; i++)
    if (now - c->t[i] <= window)
      c->t[kept++] = c->t[i];
  c->n = kept;
  if (c->n < (int)(sizeof c->t / sizeof c->t[0]))
    c->t[c->n++] = now;
  int k = h->cfg.quarantine_crashes > 0 ? h->cfg.quarantine_crashes : 1;
  int quarantine = c->n >= k;
  json_t *rec =
      json_pack("{ss sI si ss si ss si ss ss ss}", "kind", "crash", "t", (json_int_t)now, "signal",
                signo, "signal_name", crash_signal_name(signo), "pid", (int)pid, "function",
                p->function, "version", version, quarantine ? "sha256" : "build", sha, "request_id",
                p->request_id, "isolation", "process");
  if (rec && quarantine_add(h->quarantine, rec) < 0)
    log_warn(p->function, p->request_id, "cannot record the crash in the crash file");
  json_decref(rec);
  if (!quarantine) {
    log_warn(p->function, p->request_id,
             "%s version %d crashed (%s): %d of %d crashes within %d s before it is quarantined",
             p->function, version, crash_signal_name(signo), c->n, k, h->cfg.quarantine_window);
    return;
  }
  free(map_del(&P->crashes, key, keylen));
  char why[256];
  snprintf(why, sizeof why, "quarantined: crashed %d times within %d s (last: %s)", k,
           h->cfg.quarantine_window, crash_signal_name(signo));
  if (!current) { /* a replaced build: it stays out, the build serving now is not touched */
    log_error(p->function, p->request_id,
              "QUARANTINED %s version %d (sha256 %.12s..., no longer serving): %d crashes within "
              "%d s; version %d keeps serving",
              p->function, version, sha, k, h->cfg.quarantine_window,
              plugins_current(h->plugins, p->function, cur_sha));
    return;
  }
  plugins_unload(h->plugins, p->function, why);
  log_error(p->function, p->request_id,
            "QUARANTINED %s version %d (sha256 %.12s...): %d crashes within %d s; deploy a "
            "different build, or lift it (POST /_/quarantine/%s/lift)",
            p->function, version, sha, k, h->cfg.quarantine_window, p->function);
}

struct lost_walk {
  struct worker *w;
  struct pending **list;
  size_t n, cap;
};

static void collect(void *arg, const char *key, void *value) {
  (void)key;
  struct lost_walk *L = arg;
  struct pending *p = value;
  if (p->w != L->w)
    return;
  if (L->n == L->cap) {
    size_t cap = L->cap ? L->cap * 2 : 16;
    struct pending **q = realloc(L->list, cap * sizeof *q);
    if (!q)
      return;
    L->list = q;
    L->cap = cap;
  }
  L->list[L->n++] = p;
}

static int by_seq(const void *a, const void *b) {
  uint64_t x = (*(struct pending *const *)a)->seq, y = (*(struct pending *const *)b)->seq;
  return x < y ? -1 : x > y;
}

struct stream_walk {
  pid_t pid;
  uint64_t ids[64];
  size_t n;
};

static void stream_of(void *arg, const char *key, void *value) {
  struct stream_walk *S = arg;
  uint64_t id;
  memcpy(&id, key, sizeof id);
  if ((pid_t)(intptr_t)value == S->pid && S->n < sizeof S->ids / sizeof S->ids[0])
    S->ids[S->n++] = id;
}

/* The streams a lost worker was writing end (after what was queued): nobody will write them
 * again, and their clients should not wait for more. */
static void streams_of_lost(struct workers *P, pid_t pid) {
  for (int round = 0; round < 1024; round++) {
    struct stream_walk S = {.pid = pid};
    map_each(&P->streams, stream_of, &S);
    for (size_t i = 0; i < S.n; i++) {
      map_del(&P->streams, &S.ids[i], sizeof S.ids[i]);
      stream_end(P->h, S.ids[i]);
    }
    if (S.n < sizeof S.ids / sizeof S.ids[0])
      return;
  }
}

/* A worker is gone: the event it was running fails (its connection gets 1011, its request
 * 502); the ones queued behind it fail the same way, since their order cannot be kept by
 * running them elsewhere first. A fresh worker takes its slot. */
static void worker_lost(struct worker *w, const char *why) {
  struct workers *P = w->pool;
  struct host *h = P->h;
  int status = 0;
  pid_t pid = w->pid;
  if (pid > 0) {
    /* Usually already dead (its socket closed). Reaped first: a kill before it would turn a
     * crash into our SIGKILL. */
    int tries = strcmp(why, "overran") ? 10 : 0;
    pid_t got;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && tries-- > 0) {
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
    if (got == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
  }
  char what[128];
  if (WIFSIGNALED(status))
    snprintf(what, sizeof what, "worker %d (pid %d) died of signal %d (%s)", w->index, (int)w->pid,
             WTERMSIG(status), why);
  else
    snprintf(what, sizeof what, "worker %d (pid %d) exited with %d (%s)", w->index, (int)w->pid,
             WEXITSTATUS(status), why);
  w->pid = -1;
  struct lost_walk L = {.w = w};
  map_each(&P->pend, collect, &L);
  if (L.n)
    qsort(L.list, L.n, sizeof *L.list, by_seq);
  if (!w->retiring || L.n) {
    P->lost++;
    log_error(NULL, NULL, "%s with %zu events in hand: %s", what, L.n,
              h->stopping ? "stopping" : "replacing it");
  }
  if (L.n && WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    if (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGABRT)
      crash_seen(P, w, L.list[0], pid, sig);
  }
  streams_of_lost(P, pid);
  for (size_t i = 0; i < L.n; i++)
    pending_crashed(P, L.list[i],
                    i == 0 ? "function crashed (worker died)" : "its worker died before it ran");
  free(L.list);
  /* Connections whose events were there may go anywhere now. */
  if (w->retiring) {
    for (struct worker **pp = &P->retiring; *pp; pp = &(*pp)->next)
      if (*pp == w) {
        *pp = w->next;
        break;
      }
    worker_free(w);
    return;
  }
  int idx = w->index;
  /* One that dies as it starts (a build whose init crashes in every fresh process) is
   * replaced by the tick, once a second, not in a fork loop. */
  int early = !L.n && host_now_ms() - w->started_ms < 1000;
  P->live[idx] = NULL;
  worker_free(w);
  if (!h->stopping && !early)
    P->live[idx] = spawn(P, idx);
}

/* Serializes ctx for the worker. */
static int encode_event(struct wbuf *b, uint64_t seq, enum inv_kind kind, const char *name,
                        const FunctionContext *ctx, uint64_t defer, const char *rooms) {
  char *q = ctx->query ? json_dumps(ctx->query, JSON_COMPACT) : NULL;
  char *hd = ctx->headers ? json_dumps(ctx->headers, JSON_COMPACT) : NULL;
  char *bd = ctx->body ? json_dumps(ctx->body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  char *us = ctx->user ? json_dumps(ctx->user, JSON_COMPACT) : NULL;
  wbuf_begin(b, W_EVENT);
  wbuf_u64(b, seq);
  wbuf_u64(b, (uint64_t)kind);
  wbuf_str(b, name);
  wbuf_str(b, ctx->function_name);
  wbuf_str(b, ctx->request_id);
  wbuf_str(b, ctx->method);
  wbuf_bytes(b, ctx->params.data, ctx->params.len);
  wbuf_u64(b, (uint64_t)ctx->params.is_binary);
  wbuf_u64(b, (uint64_t)(int64_t)ctx->params.code);
  wbuf_str(b, ctx->params.reason);
  wbuf_str(b, ctx->params.error);
  wbuf_str(b, q);
  wbuf_str(b, hd);
  wbuf_str(b, bd);
  wbuf_bytes(b, ctx->body_raw, ctx->body_len);
  wbuf_str(b, ctx->url);
  wbuf_u64(b, ctx->socket.id);
  wbuf_str(b, ctx->user_id);
  wbuf_str(b, ctx->user_token);
  wbuf_str(b, us);
  wbuf_u64(b, defer);
  wbuf_str(b, rooms);
  wbuf_str(b, ctx->protocols);
  wbuf_u64(b, (uint64_t)ctx->files_count);
  for (size_t i = 0; i < ctx->files_count; i++) {
    wbuf_str(b, ctx->files[i].field);
    wbuf_str(b, ctx->files[i].filename);
    wbuf_str(b, ctx->files[i].content_type);
    wbuf_str(b, ctx->files[i].path);
    wbuf_u64(b, (uint64_t)ctx->files[i].size);
  }
  free(q);
  free(hd);
  free(bd);
  free(us);
  return wbuf_end(b);
}

static void handle_frame(struct worker *w, const char *payload, size_t len);

/* Reads what the worker sent; 0, or -1 when it is gone. */
static int read_some(struct worker *w) {
  for (;;) {
    if (w->in_cap - w->in_len < 65536) {
      size_t cap = w->in_cap ? w->in_cap * 2 : 131072;
      char *q = realloc(w->in, cap);
      if (!q)
        return -1;
      w->in = q;
      w->in_cap = cap;
    }
    ssize_t n = read(w->fd, w->in + w->in_len, w->in_cap - w->in_len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (n <= 0)
      return -1;
    w->in_len += (size_t)n;
    /* Whole frames are handled as they complete. */
    size_t off = 0;
    while (w->in_len - off >= 4) {
      uint32_t fl;
      memcpy(&fl, w->in + off, 4);
      if (fl == 0 || fl > WIRE_MAX)
        return -1;
      if (w->in_len - off - 4 < fl)
        break;
      /* handle_frame may end this worker's life only through the caller (a return value):
       * it never frees w itself. */
      handle_frame(w, w->in + off + 4, fl);
      off += 4 + fl;
      if (w->violation)
        return -1;
    }
    if (off) {
      memmove(w->in, w->in + off, w->in_len - off);
      w->in_len -= off;
    }
  }
}

/* Without a pidfd (valgrind knows no pidfd_open): 1 once the process has ended, without
 * reaping it (worker_lost does that, for its status). The tick and wait_for ask it. */
static int exited(const struct worker *w) {
  siginfo_t si = {0};
  return w->pidfd < 0 && w->pid > 0 &&
         waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == w->pid;
}

static void on_death(struct ev_loop *loop, ev_io *io, int revents) {
  (void)loop;
  (void)revents;
  struct worker *w = io->data;
  /* What it managed to send before it went is still handled, in order. */
  read_some(w);
  worker_lost(w, "it died");
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents) {
  (void)loop;
  (void)revents;
  struct worker *w = io->data;
  if (read_some(w) < 0)
    worker_lost(w, "its socket closed");
}

/* Waits, blocking the loop, for the answer to one event (the connection event, the
 * interceptor, __init__): they must be decided before the loop goes on. Bounded. */
static void wait_for(struct workers *P, struct pending *p) {
  struct host *h = P->h;
  int64_t deadline = host_now_ms() + (int64_t)h->cfg.defer_timeout * 1000;
  while (!p->done) {
    struct worker *w = p->w;
    /* A wait the host bounds itself: the loop is not stuck, whatever the function does. */
    supervisor_heartbeat(h->ctl_fd, &h->heartbeat_ms);
    int64_t left = deadline - host_now_ms();
    if (left <= 0) {
      log_error(p->function, p->request_id, "%s took more than %d s: stopping its worker",
                p->method, h->cfg.defer_timeout);
      worker_lost(w, "overran");
      continue;
    }
    struct pollfd pf = {w->fd, POLLIN | (w->out_len ? POLLOUT : 0), 0}, pd = {w->pidfd, POLLIN, 0};
    struct pollfd fds[2] = {pf, pd};
    int n = poll(fds, w->pidfd >= 0 ? 2 : 1, (int)(left > 1000 ? 1000 : left));
    pf = fds[0];
    if (n > 0 && w->pidfd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      read_some(w);
      if (!p->done)
        worker_lost(w, "it died");
      continue;
    }
    if (n < 0 && errno != EINTR) {
      worker_lost(w, "poll failed");
      continue;
    }
    if (n == 0 && exited(w)) {
      read_some(w);
      if (!p->done)
        worker_lost(w, "it died");
      continue;
    }
    if (n <= 0)
      continue;
    if ((pf.revents & POLLOUT) && flush_out(w) < 0) {
      worker_lost(w, "its socket broke");
      continue;
    }
    if ((pf.revents & (POLLIN | POLLHUP | POLLERR)) && read_some(w) < 0)
      worker_lost(w, "its socket closed");
  }
}

int workers_invoke(struct host *h, enum inv_kind kind, void *obj, const char *name,
                   FunctionContext *ctx, int *found) {
  struct workers *P = h->workers;
  *found = plugins_loaded(h->plugins, name);
  if (!*found)
    return 0;
  if (P->closed) { /* stopping: the close events of connections the drain did not end */
    log_debug(name, ctx->request_id, "%s dropped: the workers are stopped", ctx->method);
    return 0;
  }
  struct http_req *r = kind == INV_HTTP ? obj : NULL;
  int sync = kind == INV_INIT ||
             (kind == INV_HTTP && (r->no_defer || strcmp(name, r->name) || !h->loop)) ||
             (kind == INV_WS && ctx->method && !strcmp(ctx->method, "WebSocket:connection"));
  if (!strcmp(name, INTERCEPTOR))
    sync = 1;
  cloud_deferred *d = NULL;
  if (kind == INV_HTTP && !sync) {
    d = defer_begin(h, r, name);
    if (d)
      r->deferred = 1;
    else
      sync = 1;
  }
  uint64_t conn = kind == INV_WS ? ctx->socket.id : 0;
  struct firing *f = NULL;
  if (kind == INV_TIMER && ctx->params.data) {
    char key[sizeof f->key];
    size_t fl = strlen(name), nl = strlen(ctx->params.data);
    if (fl + 1 + nl < sizeof key) {
      memcpy(key, name, fl + 1);
      memcpy(key + fl + 1, ctx->params.data, nl + 1);
      struct firing *busy = map_get(&P->firing, key, fl + 1 + nl);
      if (busy) {
        busy->skipped++;
        return 0;
      }
      if ((f = calloc(1, sizeof *f))) {
        memcpy(f->key, key, fl + 2 + nl);
        f->keylen = fl + 1 + nl;
        f->every_ms = timers_every_ms(obj);
        if (map_set(&P->firing, f->key, f->keylen, f) < 0) {
          free(f);
          f = NULL;
        }
      }
    }
  }
  struct worker *w = pick(P, conn, name);
  if (w && d)
    owner_set(P, d, w);
  if (!w && f) {
    map_del(&P->firing, f->key, f->keylen);
    free(f);
  }
  if (!w) {
    log_error(name, ctx->request_id, "%s failed: no worker is running", ctx->method);
    if (d) {
      static const char body[] = "{\"error\":\"Function Crashed\"}";
      defer_complete(h, d, 502, "application/json", body, sizeof body - 1);
    }
    return -1;
  }
  if (!sync && w->out_len > WORKER_QUEUE_MAX) {
    log_warn(name, ctx->request_id,
             "%s refused: worker %d has %zu bytes of events waiting (it is busy): %s", ctx->method,
             w->index, w->out_len, conn ? "closing the connection with 1013" : "503");
    if (conn)
      h->net->ws_close(h, (cloud_socket){conn}, 1013, "server busy");
    if (d) {
      char body[200];
      int n =
          snprintf(body, sizeof body, "{\"error\":\"Service Unavailable\",\"requestId\":\"%s\"}",
                   ctx->request_id ? ctx->request_id : "-");
      defer_complete(h, d, 503, "application/json", body, (size_t)n);
    }
    if (f) {
      map_del(&P->firing, f->key, f->keylen);
      free(f);
    }
    return -1;
  }
  struct pending stack_p, *p = sync ? &stack_p : calloc(1, sizeof *p);
  if (!p) {
    if (f) {
      map_del(&P->firing, f->key, f->keylen);
      free(f);
    }
    return CLOUD_ENOMEM;
  }
  memset(p, 0, sizeof *p);
  p->seq = ++P->next_seq;
  p->kind = kind;
  p->w = w;
  p->conn = conn;
  p->defer = d;
  p->r = sync ? r : NULL;
  p->ctx = sync ? ctx : NULL;
  p->timer = f;
  p->sync = sync;
  p->started_ms = host_now_ms();
  snprintf(p->function, sizeof p->function, "%s", name);
  snprintf(p->request_id, sizeof p->request_id, "%s", ctx->request_id ? ctx->request_id : "-");
  snprintf(p->method, sizeof p->method, "%s", ctx->method ? ctx->method : "-");
  snprintf(p->what, sizeof p->what, "%s",
           kind == INV_WS                          ? (ctx->user_id ? ctx->user_id : "-")
           : kind == INV_HTTP                      ? (r && r->path ? r->path : "-")
           : kind == INV_TIMER && ctx->params.data ? ctx->params.data
                                                   : "-");
  /* The close event runs after the socket left its rooms: give the handler their names. */
  char *rooms = NULL;
  if (kind == INV_WS && ctx->method && !strcmp(ctx->method, "WebSocket:close")) {
    json_t *j = rooms_of(h, ctx->socket);
    rooms = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
  }
  struct wbuf b = {0};
  int rc = encode_event(&b, p->seq, kind, name, ctx, (uint64_t)(uintptr_t)d, rooms);
  free(rooms);
  if (rc == 0 && map_set(&P->pend, &p->seq, sizeof p->seq, p) < 0)
    rc = CLOUD_ENOMEM;
  if (rc < 0) {
    wbuf_free(&b);
    if (f) {
      map_del(&P->firing, f->key, f->keylen);
      free(f);
    }
    if (!sync)
      free(p);
    return CLOUD_ENOMEM;
  }
  if (!w->inflight++)
    w->progress_ms = host_now_ms();
  affinity_add(P, conn, w);
  rc = queue_frame(w, &b);
  wbuf_free(&b);
  if (rc == CLOUD_EIO) {
    worker_lost(w, "its socket broke");
  } else if (rc < 0) {
    pending_end(P, p);
    return rc;
  }
  if (!sync)
    return 0;
  wait_for(P, p);
  return p->rc;
}

/* ---- what the worker sends back */

/* What a worker may leave unread of what it asked for (replies) and was handed (events, each
 * bounded by WORKER_QUEUE_MAX when queued): past it the worker is replaced, so one that never
 * reads cannot make the serving process grow. */
#define WORKER_OUT_MAX (WORKER_QUEUE_MAX + (32u << 20))

static void violated(struct worker *w, const char *what, uint64_t seq) {
  if (w->violation)
    return;
  w->violation = what;
  w->pool->violations++;
  log_error(NULL, NULL, "worker %d (pid %d) refused: %s (sequence number %llu); replacing it",
            w->index, (int)w->pid, what, (unsigned long long)seq);
}

static void reply(struct worker *w, int64_t rc, const char *text) {
  if (w->out_len - w->out_off + (text ? strlen(text) : 0) > WORKER_OUT_MAX) {
    violated(w, "it does not read the replies to its calls", 0);
    return;
  }
  struct wbuf b = {0};
  wbuf_begin(&b, W_REPLY);
  wbuf_u64(&b, (uint64_t)rc);
  wbuf_str(&b, text);
  queue_frame(w, &b);
  wbuf_free(&b);
}

/* The object the event's ctx-taking calls act on, as invoke() recorded it. */
static void *event_obj(struct workers *P, struct pending *p) {
  if (!p)
    return NULL;
  if (p->kind == INV_WS)
    return P->h->net->ws_find(P->h, (cloud_socket){p->conn});
  if (p->kind == INV_HTTP)
    return p->r ? (void *)p->r : defer_request(P->h, p->defer);
  return NULL;
}

/* The pool streams report to (NULL once it is freed). */
static struct workers *stream_pool;

/* Progress reports are cumulative: a worker that is not reading (its output waits) misses
 * some without harm, so they do not pile up there; that a stream is over always goes. */
#define STREAM_PROGRESS_BACKLOG (1u << 20)

static void frame_to_all(struct workers *P, struct wbuf *b, int closed) {
  for (int i = 0; i < P->n; i++) {
    struct worker *w = P->live[i];
    if (w && w->pid > 0 && (closed || w->out_len < STREAM_PROGRESS_BACKLOG))
      queue_frame(w, b);
  }
  for (struct worker *w = P->retiring; w; w = w->next)
    if (w->pid > 0 && (closed || w->out_len < STREAM_PROGRESS_BACKLOG))
      queue_frame(w, b);
}

/* A stream a worker writes to made progress: every worker hears it (only the writer's knows
 * the id), so that its writers see the room the client's reading made, or CLOUD_ECLOSED. */
static void stream_progress(void *arg, uint64_t id, uint64_t written, int closed) {
  struct workers *P = arg;
  if (P != stream_pool || P->closed)
    return;
  if (closed)
    map_del(&P->streams, &id, sizeof id);
  struct wbuf b = {0};
  wbuf_begin(&b, W_STREAM);
  wbuf_u64(&b, id);
  wbuf_u64(&b, written);
  wbuf_u64(&b, (uint64_t)closed);
  frame_to_all(P, &b, closed);
  wbuf_free(&b);
}

static void apply_call(struct worker *w, struct wread *rd) {
  struct workers *P = w->pool;
  struct host *h = P->h;
  const cloud_api *api = api_table();
  uint64_t op = wread_u64(rd);
  int want = (int)wread_u64(rd);
  uint64_t seq = wread_u64(rd);
  struct pending *p = seq ? map_get(&P->pend, &seq, sizeof seq) : NULL;
  /* A number is a capability: the events handed to this worker, and no other's. A plugin's
   * own thread names none (0). */
  if (seq && (!p || p->w != w)) {
    violated(w, "a call for an event it was not handed", seq);
    return;
  }
  /* Calls with a context find their object through a record like invoke()'s own. */
  FunctionContext fake = {.size = sizeof fake};
  struct invocation inv = {
      .kind = p ? p->kind : INV_TIMER, .obj = event_obj(P, p), .ctx = &fake, .prev = h->inv};
  snprintf(inv.function, sizeof inv.function, "%s", p ? p->function : "");
  if (p) {
    fake.function_name = p->function;
    fake.request_id = p->request_id;
    fake.method = p->method;
    fake.socket.id = p->conn;
    if (p->ctx) /* a sync event: the connection event's or the interceptor's headers */
      fake.headers = p->ctx->headers;
    else if (p->kind == INV_HTTP && inv.obj)
      fake.headers = ((struct http_req *)inv.obj)->headers;
  }
  h->inv = p ? &inv : h->inv;
  int64_t rc = CLOUD_EINVAL;
  char *text = NULL;
  const char *ctext = NULL;
  size_t len;
  switch (op) {
  case OP_SEND: {
    cloud_socket s = {wread_u64(rd)};
    const char *data = wread_bytes(rd, &len);
    int bin = (int)wread_u64(rd);
    rc = rd->bad ? CLOUD_EINVAL : api->socket_send(s, data, len, bin);
    break;
  }
  case OP_CLOSE: {
    cloud_socket s = {wread_u64(rd)};
    int code = (int)wread_u64(rd);
    const char *reason = wread_str(rd);
    rc = rd->bad ? CLOUD_EINVAL : api->socket_close(s, code, reason);
    break;
  }
  case OP_BIND: {
    const char *uid = wread_str(rd);
    rc = p && p->ctx ? api->bind_user(&fake, uid) : CLOUD_ESTATE;
    break;
  }
  case OP_SEND_USER: {
    const char *uid = wread_str(rd);
    const char *data = wread_bytes(rd, &len);
    int bin = (int)wread_u64(rd);
    rc = rd->bad ? CLOUD_EINVAL : api->send_to_user(uid, data, len, bin);
    break;
  }
  case OP_SHARED_GET: {
    json_t *v = api->shared_get(wread_str(rd));
    text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    rc = 0;
    break;
  }
  case OP_SHARED_SET: {
    const char *key = wread_str(rd);
    const char *js = wread_str(rd);
    json_t *v = js ? json_loads(js, JSON_DECODE_ANY, NULL) : NULL;
    rc = api->shared_set(key, v);
    json_decref(v);
    break;
  }
  case OP_SHARED_DEL:
    rc = api->shared_delete(wread_str(rd));
    break;
  case OP_HEADER:
    ctext = p ? api->request_header(&fake, wread_str(rd)) : NULL;
    rc = 0;
    break;
  case OP_RESP_HEADER: {
    const char *name = wread_str(rd);
    const char *value = wread_str(rd);
    struct http_req *r = p && p->kind == INV_HTTP ? inv.obj : NULL;
    rc = r ? r->host->net->http_add_header(r, name, value) : CLOUD_ESTATE;
    break;
  }
  case OP_ROOM_JOIN:
  case OP_ROOM_LEAVE: {
    cloud_socket s = {wread_u64(rd)};
    const char *room = wread_str(rd);
    rc = op == OP_ROOM_JOIN ? api->room_join(s, room) : api->room_leave(s, room);
    break;
  }
  case OP_ROOM_SEND: {
    const char *room = wread_str(rd);
    const char *data = wread_bytes(rd, &len);
    int bin = (int)wread_u64(rd);
    cloud_socket ex = {wread_u64(rd)};
    rc = rd->bad ? CLOUD_EINVAL : api->room_send(room, data, len, bin, ex);
    break;
  }
  case OP_BROADCAST: {
    const char *data = wread_bytes(rd, &len);
    int bin = (int)wread_u64(rd);
    cloud_socket ex = {wread_u64(rd)};
    rc = rd->bad ? CLOUD_EINVAL : api->broadcast(data, len, bin, ex);
    break;
  }
  case OP_ROOM_MEMBERS:
  case OP_SOCKET_ROOMS: {
    json_t *v = NULL;
    if (op == OP_ROOM_MEMBERS)
      v = api->room_members(wread_str(rd));
    else
      v = api->socket_rooms((cloud_socket){wread_u64(rd)});
    text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    rc = 0;
    break;
  }
  case OP_TIMER_START: {
    const char *name = wread_str(rd);
    uint64_t first = wread_u64(rd), every = wread_u64(rd);
    rc = p ? api->timer_start(name, first, every) : CLOUD_ESTATE;
    break;
  }
  case OP_TIMER_STOP:
    rc = p ? api->timer_stop(wread_str(rd)) : CLOUD_ESTATE;
    break;
  case OP_DEFER_DONE: {
    uint64_t handle = wread_u64(rd);
    if (!owns(P, w, handle)) {
      violated(w, "an answer for a deferred response it was not handed", handle);
      break;
    }
    int status = (int)wread_u64(rd);
    const char *ct = wread_str(rd);
    const char *body = wread_bytes(rd, &len);
    rc = rd->bad
             ? CLOUD_EINVAL
             : api->deferred_respond((cloud_deferred *)(uintptr_t)handle, status, ct, body, len);
    break;
  }
  case OP_DEFER_PUSH: {
    uint64_t handle = wread_u64(rd);
    if (!owns(P, w, handle)) {
      violated(w, "a push for a deferred response it was not handed", handle);
      break;
    }
    const char *uid = wread_str(rd);
    const char *data = wread_bytes(rd, &len);
    int bin = (int)wread_u64(rd);
    rc = rd->bad
             ? CLOUD_EINVAL
             : api->deferred_send_to_user((cloud_deferred *)(uintptr_t)handle, uid, data, len, bin);
    break;
  }
  case OP_ENV:
    ctext = api->env(wread_str(rd));
    rc = 0;
    break;
  case OP_REJECT: {
    int status = (int)wread_u64(rd);
    const char *reason = wread_str(rd);
    rc = rd->bad ? CLOUD_EINVAL : p && p->ctx ? api->reject(&fake, status, reason) : CLOUD_ESTATE;
    break;
  }
  case OP_ACCEPT_PROTO: {
    const char *name = wread_str(rd);
    rc = rd->bad ? CLOUD_EINVAL : p && p->ctx ? api->accept_protocol(&fake, name) : CLOUD_ESTATE;
    break;
  }
  case OP_USER_JOIN:
  case OP_USER_LEAVE: {
    const char *uid = wread_str(rd);
    const char *room = wread_str(rd);
    rc = rd->bad              ? CLOUD_EINVAL
         : op == OP_USER_JOIN ? api->user_join(uid, room)
                              : api->user_leave(uid, room);
    break;
  }
  case OP_ROOMS:
  case OP_USER_SOCKETS: {
    json_t *v = op == OP_ROOMS ? api->rooms() : api->user_sockets(wread_str(rd));
    text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    rc = 0;
    break;
  }
  case OP_ROOM_KEEP: {
    const char *room = wread_str(rd);
    int64_t n = (int64_t)wread_u64(rd);
    rc = rd->bad || n < 0 || n > INT32_MAX ? CLOUD_EINVAL : api->room_keep(room, (int)n);
    break;
  }
  case OP_ROOM_HISTORY: {
    cloud_socket s = {wread_u64(rd)};
    const char *room = wread_str(rd);
    int64_t n = (int64_t)wread_u64(rd);
    rc = rd->bad || n < 0 || n > INT32_MAX ? CLOUD_EINVAL : api->room_history(s, room, (int)n);
    break;
  }
  case OP_USER_CREATE:
    rc = api->user_create(wread_str(rd));
    break;
  case OP_JWT_SIGN: {
    const char *js = wread_str(rd);
    int64_t ttl = (int64_t)wread_u64(rd);
    json_t *claims = js ? json_loads(js, 0, NULL) : NULL;
    text = rd->bad || ttl < 0 || ttl > INT32_MAX ? NULL : api->jwt_sign(claims, (int)ttl);
    json_decref(claims);
    rc = 0;
    break;
  }
  case OP_JWT_VERIFY: {
    json_t *v = api->jwt_verify(wread_str(rd));
    text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    rc = 0;
    break;
  }
  case OP_STREAM_START: {
    int status = (int)(int64_t)wread_u64(rd);
    const char *ct = wread_str(rd);
    int sse = (int)wread_u64(rd);
    const char *hd = wread_str(rd);
    struct http_req *r = NULL;
    uint64_t id = 0;
    if (rd->bad || !p || p->kind != INV_HTTP || !p->defer)
      rc = CLOUD_ESTATE;
    else if (!(r = defer_request(h, p->defer)))
      rc = CLOUD_ECLOSED;
    else if (r->stream)
      rc = CLOUD_ESTATE;
    else {
      json_t *hdrs = hd ? json_loads(hd, 0, NULL) : NULL;
      size_t i;
      json_t *nv;
      json_array_foreach(hdrs, i, nv) {
        h->net->http_add_header(r, json_string_value(json_array_get(nv, 0)),
                                json_string_value(json_array_get(nv, 1)));
      }
      json_decref(hdrs);
      rc = stream_start(h, r, NULL, status, ct ? ct : "application/octet-stream", sse, &id);
      if (rc == 0) {
        /* The response is the stream's now: the event's end completes nothing. */
        defer_handover(h, p->defer);
        p->defer = NULL;
        stream_set_notify(h, id, stream_progress, P);
        map_set(&P->streams, &id, sizeof id, (void *)(intptr_t)w->pid);
        char first[24];
        snprintf(first, sizeof first, "%llu", (unsigned long long)stream_first_event(h, id));
        text = strdup(first);
        rc = (int64_t)id;
      }
    }
    break;
  }
  case OP_STREAM_WRITE: {
    uint64_t id = wread_u64(rd);
    const char *data = wread_bytes(rd, &len);
    rc = rd->bad ? CLOUD_EINVAL : stream_write(h, id, data, len);
    break;
  }
  case OP_STREAM_END: {
    uint64_t id = wread_u64(rd);
    rc = rd->bad ? CLOUD_EINVAL : stream_end(h, id);
    break;
  }
  case OP_SOCKETS: {
    json_t *v = NULL;
    rc = api_sockets_each_list(h, &v);
    text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    break;
  }
  default:
    log_warn(NULL, NULL, "worker %d sent unknown call %llu", w->index, (unsigned long long)op);
  }
  h->inv = inv.prev;
  if (want && !w->violation)
    reply(w, rc, text ? text : ctext);
  free(text);
}

static json_t *parse_json(const char *s) {
  return s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;
}

static void handle_done(struct worker *w, struct wread *rd) {
  struct workers *P = w->pool;
  struct host *h = P->h;
  uint64_t seq = wread_u64(rd);
  int rc = (int)(int64_t)wread_u64(rd);
  int deferred = (int)wread_u64(rd);
  int responded = (int)wread_u64(rd);
  int status = (int)wread_u64(rd);
  const char *ctype = wread_str(rd);
  size_t blen;
  const char *body = wread_bytes(rd, &blen);
  int token_cleared = (int)wread_u64(rd);
  uint64_t ns = wread_u64(rd);
  json_t *hdrs = parse_json(wread_str(rd));
  struct pending *p = map_get(&P->pend, &seq, sizeof seq);
  if (!p || p->w != w || rd->bad) {
    json_decref(hdrs);
    violated(w, rd->bad ? "a malformed answer" : "an answer for an event it was not handed", seq);
    return;
  }
  if (p->kind == INV_HTTP && responded) {
    struct http_req *r = event_obj(P, p);
    size_t i;
    json_t *nv;
    json_array_foreach(hdrs, i, nv) {
      if (r)
        r->host->net->http_add_header(r, json_string_value(json_array_get(nv, 0)),
                                      json_string_value(json_array_get(nv, 1)));
    }
  }
  json_decref(hdrs);
  if (p->kind == INV_HTTP) { /* the function returned: its uploaded files go */
    struct http_req *r = event_obj(P, p);
    if (r)
      h->net->http_uploads_done(r);
  }
  metrics_function_call(&h->metrics, p->function, ns, rc);
  metrics_event(&h->metrics, p->method, ns);
  p->rc = rc;
  p->done = 1;
  if (p->kind == INV_WS) {
    if (p->sync && token_cleared && p->ctx)
      p->ctx->user_token = NULL;
    if (rc && !p->sync) {
      /* The line ws.c writes in-process, with its source. */
      h->stats.plugin_errors++;
      log_emit("ws.c", LOG_ERROR, p->function, p->request_id, "%s of user %s failed: returned %d",
               p->method, p->what, rc);
    }
  } else if (p->kind == INV_HTTP && p->sync && p->r) {
    if (responded)
      p->r->host->net->http_set_response(p->r, status, ctype ? ctype : "text/plain",
                                         body ? body : "", blen);
  } else if (p->kind == INV_HTTP && p->defer && !deferred) {
    /* The response is complete now: what the function set, or what invoke's caller would
     * have answered (http.c run_function) for a result without one. */
    char err[200];
    if (!responded && rc) {
      h->stats.plugin_errors++;
      log_emit("http.c", LOG_ERROR, p->function, p->request_id, "%s %s failed: returned %d",
               p->method, p->what, rc);
      int n = snprintf(err, sizeof err,
                       "{\"error\":\"Internal Server Error\",\"requestId\":\"%s\"}", p->request_id);
      defer_complete(h, p->defer, 500, "application/json", err, (size_t)n);
    } else if (!responded)
      defer_complete(h, p->defer, 204, "text/plain", "", 0);
    else {
      if (rc)
        log_emit("http.c", LOG_WARN, p->function, p->request_id,
                 "returned %d after setting a response", rc);
      defer_complete(h, p->defer, status, ctype ? ctype : "text/plain", body ? body : "", blen);
    }
  } else if (rc && p->kind == INV_TIMER) {
    h->stats.plugin_errors++;
    log_emit("timers.c", LOG_ERROR, p->function, p->request_id, "Timer %s failed: returned %d",
             p->what, rc);
  }
  pending_end(P, p);
}

static void handle_frame(struct worker *w, const char *payload, size_t len) {
  struct wread rd;
  wread_init(&rd, payload + 1, len - 1);
  switch ((enum wire_type)(unsigned char)payload[0]) {
  case W_CALL:
    apply_call(w, &rd);
    break;
  case W_DONE:
    handle_done(w, &rd);
    break;
  case W_READY:
    w->ready = 1;
    break;
  default:
    break;
  }
}

/* Events that overran the per-event bound cost their worker (nothing else can stop C code). */
struct overrun_walk {
  int64_t now, limit_ms;
  struct worker *victim;
};

static void find_overrun(void *arg, const char *key, void *value) {
  (void)key;
  struct overrun_walk *o = arg;
  struct pending *p = value;
  if (!o->victim && !p->sync && o->now - p->started_ms > o->limit_ms)
    o->victim = p->w;
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  struct workers *P = t->data;
  for (int i = 0; i < P->n; i++)
    if (P->live[i] && exited(P->live[i])) {
      read_some(P->live[i]);
      worker_lost(P->live[i], "it died");
    }
  for (struct worker *w = P->retiring, *next; w; w = next) {
    next = w->next;
    if (exited(w)) {
      read_some(w);
      worker_lost(w, "it died");
    }
  }
  for (int i = 0; i < P->n; i++)
    if (!P->live[i] && !P->h->stopping)
      P->live[i] = spawn(P, i);
  int64_t now = host_now_ms(), bound = (int64_t)P->h->cfg.load_timeout * 1000;
  /* A worker loads and inits its own copies of the functions when it starts: one stuck there
   * (a constructor or a CLOUD_INIT that does not return in this process) is replaced. */
  for (int i = 0; i < P->n; i++) {
    struct worker *w = P->live[i];
    if (w && !w->ready && bound > 0 && now - w->started_ms > bound) {
      log_error(NULL, NULL,
                "worker %d (pid %d) did not finish loading the functions within --load-timeout "
                "(%d s): replacing it",
                w->index, (int)w->pid, P->h->cfg.load_timeout);
      worker_lost(w, "stuck loading");
    }
  }
  /* A replaced worker runs the versions' CLOUD_FINI before it exits: bounded the same way. */
  for (struct worker **pw = &P->retiring; *pw;) {
    struct worker *w = *pw;
    if (w->quit_ms && bound > 0 && now - w->quit_ms > bound) {
      log_error(NULL, NULL,
                "worker %d (pid %d) was told to quit %d s ago and is still there (a CLOUD_FINI "
                "that does not return): killing it",
                w->index, (int)w->pid, P->h->cfg.load_timeout);
      *pw = w->next;
      worker_free(w);
      continue;
    }
    pw = &w->next;
  }
  struct overrun_walk o = {host_now_ms(), (int64_t)P->h->cfg.defer_timeout * 1000 + 1000, NULL};
  map_each(&P->pend, find_overrun, &o);
  if (o.victim) {
    log_error(NULL, NULL, "worker %d has run one event for more than %d s: stopping it",
              o.victim->index, P->h->cfg.defer_timeout);
    worker_lost(o.victim, "overran");
  }
}

static const struct invocation_runner workers_runner = {.invoke = workers_invoke};

int workers_open(struct host *h) {
  if (!h->cfg.isolation || strcmp(h->cfg.isolation, "process"))
    return 0;
  struct workers *P = calloc(1, sizeof *P);
  if (!P)
    return -ENOMEM;
  P->h = h;
  P->n = h->cfg.workers > 0 ? h->cfg.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (P->n < 1)
    P->n = 1;
  P->live = calloc((size_t)P->n, sizeof *P->live);
  if (!P->live) {
    free(P);
    return -ENOMEM;
  }
  map_init(&P->pend);
  map_init(&P->owner);
  map_init(&P->aff);
  map_init(&P->firing);
  map_init(&P->crashes);
  map_init(&P->streams);
  h->workers = P;
  h->runner = &workers_runner;
  stream_pool = P;
  for (int i = 0; i < P->n; i++)
    if (!(P->live[i] = spawn(P, i))) {
      workers_close(h);
      return -EAGAIN;
    }
  ev_timer_init(&P->tick, on_tick, 1., 1.);
  P->tick.data = P;
  ev_timer_start(h->loop, &P->tick);
  log_info(NULL, NULL, "isolation process: %d workers run the functions", P->n);
  return 0;
}

static void free_pending(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  struct pending *p = value;
  if (!p->sync)
    free(p);
}

static void free_value(void *arg, const char *key, void *value) {
  (void)arg;
  (void)key;
  free(value);
}

void workers_close(struct host *h) {
  struct workers *P = h->workers;
  if (!P || P->closed)
    return;
  P->closed = 1;
  ev_timer_stop(h->loop, &P->tick);
  for (int i = 0; i < P->n; i++)
    if (P->live[i]) {
      worker_free(P->live[i]);
      P->live[i] = NULL;
    }
  while (P->retiring) {
    struct worker *w = P->retiring;
    P->retiring = w->next;
    worker_free(w);
  }
}

void workers_free(struct host *h) {
  struct workers *P = h->workers;
  if (!P)
    return;
  workers_close(h);
  stream_pool = NULL;
  map_each(&P->pend, free_pending, NULL);
  map_free(&P->pend);
  map_each(&P->aff, free_value, NULL);
  map_free(&P->aff);
  map_each(&P->firing, free_value, NULL);
  map_free(&P->firing);
  map_free(&P->streams);
  map_each(&P->crashes, free_value, NULL);
  map_free(&P->crashes);
  map_each(&P->owner, free_value, NULL);
  map_free(&P->owner);
  free(P->live);
  free(P);
  h->workers = NULL;
  h->runner = NULL;
}

void workers_on_swap(void *arg, const char *name) {
  struct host *h = arg;
  struct workers *P = h->workers;
  if (P) {
    /* Each worker finishes the events it has, then gets a quit message and goes; a fresh fork of
     * this process, which has swapped the new version in, takes its slot. */
    for (int i = 0; i < P->n; i++) {
      struct worker *w = P->live[i];
      if (w) {
        if (!w->inflight)
          send_quit(w);
        w->retiring = 1;
        w->next = P->retiring;
        P->retiring = w;
      }
      P->live[i] = spawn(P, i);
    }
    log_info(name, NULL, "%s reloaded: %d workers replaced", name, P->n);
  }
  initfn_on_swap(arg, name);
}
