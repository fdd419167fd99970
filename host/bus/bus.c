/* bus.c: the connection to Redis behind --redis: two hiredis async contexts (commands and
 * pub/sub) on the host's libev loop, a liveness ping, reconnection with backoff by itself. */
#include "bus.h"

#include "log.h"
#include "map.h"

#include <errno.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A stopped Redis (SIGSTOP, a stalled VM) keeps its TCP connections open: only an answer
 * that does not come shows it. hiredis 0.14 (Debian 12) has no command timeouts. */
#define BUS_TICK_S 0.25
#define BUS_PING_EVERY_MS 1000
#define BUS_PING_DEADLINE_MS 2000
#define BUS_CONNECT_DEADLINE_MS 3000
#define BUS_BACKOFF_MIN_MS 100
#define BUS_BACKOFF_MAX_MS 2000

struct bus {
  struct ev_loop *loop;
  struct bus_hooks hooks;
  char url[320]; /* for log lines, without the password */
  char host[256], path[256], password[256];
  int port, db;
  redisAsyncContext *cmd, *sub;
  int cmd_ready, sub_ready, up;
  int ever_up, down_logged;
  int64_t connect_ms, ping_ms, last_ping_ms, down_ms, next_try_ms, backoff_ms;
  ev_timer tick;
  ev_prepare flush;    /* writes the commands of this loop pass before the loop polls */
  struct map channels; /* channel name -> (void *)1 */
};

struct pending {
  bus_reply_fn fn;
  void *arg;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_url(struct bus *b, const char *url) {
  const char *p;
  if (!strncmp(url, "unix://", 7)) {
    p = url + 7;
    const char *q = strchr(p, '?');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (!n || n >= sizeof b->path || *p != '/')
      return -EINVAL;
    memcpy(b->path, p, n);
    b->path[n] = 0;
    if (q && sscanf(q, "?db=%d", &b->db) != 1)
      return -EINVAL;
    snprintf(b->url, sizeof b->url, "unix://%s", b->path);
    return 0;
  }
  if (strncmp(url, "redis://", 8))
    return -EINVAL;
  p = url + 8;
  const char *at = strchr(p, '@');
  if (at) {
    /* redis://:password@host or redis://user:password@host (the user is ignored: AUTH with
     * one argument, as Redis 5 and the default user of 6+ take it). */
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *pw = colon ? colon + 1 : p;
    size_t n = (size_t)(at - pw);
    if (n >= sizeof b->password)
      return -EINVAL;
    memcpy(b->password, pw, n);
    b->password[n] = 0;
    p = at + 1;
  }
  b->port = 6379;
  const char *end = p + strcspn(p, ":/");
  size_t n = (size_t)(end - p);
  if (n >= sizeof b->host)
    return -EINVAL;
  memcpy(b->host, p, n);
  b->host[n] = 0;
  if (!n)
    snprintf(b->host, sizeof b->host, "127.0.0.1");
  if (*end == ':') {
    char *e;
    long port = strtol(end + 1, &e, 10);
    if (port <= 0 || port > 65535)
      return -EINVAL;
    b->port = (int)port;
    end = e;
  }
  if (*end == '/' && end[1]) {
    char *e;
    long db = strtol(end + 1, &e, 10);
    if (db < 0 || *e)
      return -EINVAL;
    b->db = (int)db;
  } else if (*end && strcmp(end, "/"))
    return -EINVAL;
  snprintf(b->url, sizeof b->url, "redis://%s:%d/%d", b->host, b->port, b->db);
  return 0;
}

static void teardown(struct bus *b, const char *why);
static void on_flush(struct ev_loop *loop, ev_prepare *w, int revents);

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct bus *b = ac->data;
  (void)status;
  /* hiredis frees ac after this returns: forget it, then drop the other one too. */
  if (ac == b->cmd)
    b->cmd = NULL, teardown(b, "connection closed");
  else if (ac == b->sub)
    b->sub = NULL, teardown(b, "connection closed");
}

static void on_connect(const redisAsyncContext *ac, int status) {
  struct bus *b = ac->data;
  if (status == REDIS_OK)
    return;
  /* Failed: hiredis frees ac after this returns. */
  if (ac == b->cmd)
    b->cmd = NULL;
  else if (ac == b->sub)
    b->sub = NULL;
  teardown(b, ac->errstr[0] ? ac->errstr : "cannot connect");
}

static void resubscribe(void *arg, const char *key, void *value);

static void on_ready(redisAsyncContext *ac, void *reply, void *priv) {
  struct bus *b = ac->data;
  redisReply *r = reply;
  (void)priv;
  if (!r)
    return; /* torn down meanwhile */
  if (r->type == REDIS_REPLY_ERROR) {
    teardown(b, r->str);
    return;
  }
  if (ac == b->cmd)
    b->cmd_ready = 1;
  else if (ac == b->sub)
    b->sub_ready = 1;
  if (!b->cmd_ready || !b->sub_ready || b->up)
    return;
  b->up = 1;
  b->backoff_ms = BUS_BACKOFF_MIN_MS;
  b->last_ping_ms = now_ms();
  if (!b->ever_up)
    log_info(NULL, NULL, "cluster: connected to %s", b->url);
  else
    log_info(NULL, NULL, "cluster: %s is back after %lld ms; healing", b->url,
             (long long)(now_ms() - b->down_ms));
  b->ever_up = 1;
  b->down_logged = 0;
  map_each(&b->channels, resubscribe, b);
  if (b->hooks.up)
    b->hooks.up(b->hooks.arg);
}

/* Every message of every subscribed channel arrives here (one callback for all). */
static void on_message(redisAsyncContext *ac, void *reply, void *priv) {
  struct bus *b = priv;
  redisReply *r = reply;
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
    return;
  if (!strcmp(r->element[0]->str, "unsubscribe")) {
    /* hiredis 0.14 drops a channel's callback when the answer to an UNSUBSCRIBE arrives, even
     * when a SUBSCRIBE to it was sent meanwhile (a room emptied and joined again): subscribe
     * again if the channel is still wanted. */
    if (ac == b->sub && map_get(&b->channels, r->element[1]->str, r->element[1]->len))
      redisAsyncCommand(b->sub, on_message, b, "SUBSCRIBE %s", r->element[1]->str);
    return;
  }
  if (strcmp(r->element[0]->str, "message") || r->element[2]->type != REDIS_REPLY_STRING)
    return;
  if (b->hooks.message)
    b->hooks.message(b->hooks.arg, r->element[1]->str, r->element[2]->str,
                     (size_t)r->element[2]->len);
}

static void resubscribe(void *arg, const char *key, void *value) {
  struct bus *b = arg;
  (void)value;
  if (b->sub)
    redisAsyncCommand(b->sub, on_message, b, "SUBSCRIBE %s", key);
}

static redisAsyncContext *conn_new(struct bus *b, int is_cmd) {
  redisAsyncContext *ac =
      b->path[0] ? redisAsyncConnectUnix(b->path) : redisAsyncConnect(b->host, b->port);
  if (!ac)
    return NULL;
  if (ac->err) {
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = b;
  if (redisLibevAttach(b->loop, ac) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  /* Queued now, written once connected; the PING's answer says the connection is usable. */
  if (b->password[0])
    redisAsyncCommand(ac, NULL, NULL, "AUTH %s", b->password);
  if (is_cmd && b->db)
    redisAsyncCommand(ac, NULL, NULL, "SELECT %d", b->db);
  redisAsyncCommand(ac, on_ready, NULL, "PING");
  return ac;
}

static void connect_both(struct bus *b) {
  b->connect_ms = now_ms();
  b->cmd_ready = b->sub_ready = 0;
  b->cmd = conn_new(b, 1);
  b->sub = b->cmd ? conn_new(b, 0) : NULL;
  if (!b->cmd || !b->sub)
    teardown(b, "cannot create a connection");
}

/* Frees both hiredis connections (commands in flight get their callback with NULL). */
static void free_connections(struct bus *b) {
  redisAsyncContext *c = b->cmd, *s = b->sub;
  b->cmd = b->sub = NULL;
  if (c)
    redisAsyncFree(c);
  if (s)
    redisAsyncFree(s);
}

/* Drops both connections (commands in flight get NULL) and schedules the next attempt. */
static void teardown(struct bus *b, const char *why) {
  int was_up = b->up;
  b->up = b->cmd_ready = b->sub_ready = 0;
  b->ping_ms = 0;
  free_connections(b);
  int64_t now = now_ms();
  b->next_try_ms = now + b->backoff_ms;
  b->backoff_ms = b->backoff_ms * 2 > BUS_BACKOFF_MAX_MS ? BUS_BACKOFF_MAX_MS : b->backoff_ms * 2;
  if (was_up) {
    b->down_ms = now;
    b->down_logged = 1;
    log_warn(NULL, NULL,
             "cluster: %s unreachable (%s): serving local connections only, cross-node sends "
             "fail until it is back; reconnecting",
             b->url, why);
    if (b->hooks.down)
      b->hooks.down(b->hooks.arg);
  } else {
    if (!b->down_logged) {
      b->down_logged = 1;
      b->down_ms = now;
      log_warn(NULL, NULL, "cluster: %s not reachable yet (%s); retrying", b->url, why);
    }
    if (b->hooks.down)
      b->hooks.down(b->hooks.arg);
  }
}

static void on_ping(redisAsyncContext *ac, void *reply, void *priv) {
  struct bus *b = ac->data;
  (void)priv;
  if (reply && ac == b->cmd)
    b->ping_ms = 0;
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents) {
  struct bus *b = t->data;
  (void)loop, (void)revents;
  int64_t now = now_ms();
  if (!b->cmd && !b->sub) {
    if (now >= b->next_try_ms)
      connect_both(b);
  } else if (!b->up) {
    if (now - b->connect_ms > BUS_CONNECT_DEADLINE_MS)
      teardown(b, "no answer to the handshake");
  } else if (b->ping_ms && now - b->ping_ms > BUS_PING_DEADLINE_MS) {
    teardown(b, "no answer to PING for 2 s");
  } else if (!b->ping_ms && now - b->last_ping_ms >= BUS_PING_EVERY_MS) {
    b->ping_ms = b->last_ping_ms = now;
    redisAsyncCommand(b->cmd, on_ping, NULL, "PING");
  }
}

int bus_open(struct ev_loop *loop, const char *url, const char *password,
             const struct bus_hooks *hooks, struct bus **out) {
  struct bus *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  if (parse_url(b, url) < 0) {
    log_error(NULL, NULL,
              "--redis: cannot read '%s': want redis://[:password@]host[:port][/db] or "
              "unix:///path",
              url);
    free(b);
    return -EINVAL;
  }
  const char *pw = password;
  if (!b->password[0] && pw && *pw)
    snprintf(b->password, sizeof b->password, "%s", pw);
  b->loop = loop;
  b->hooks = *hooks;
  b->backoff_ms = BUS_BACKOFF_MIN_MS;
  map_init(&b->channels);
  ev_timer_init(&b->tick, on_tick, BUS_TICK_S, BUS_TICK_S);
  b->tick.data = b;
  ev_timer_start(loop, &b->tick);
  ev_unref(loop); /* the bus alone does not keep the loop running */
  ev_prepare_init(&b->flush, on_flush);
  b->flush.data = b;
  connect_both(b);
  *out = b;
  return 0;
}

static void free_key(void *arg, const char *key, void *value) {
  (void)arg, (void)key, (void)value;
}

void bus_close(struct bus *b) {
  if (!b)
    return;
  ev_ref(b->loop);
  ev_timer_stop(b->loop, &b->tick);
  ev_prepare_stop(b->loop, &b->flush);
  b->hooks.down = NULL; /* stopping: not an outage */
  b->ever_up = 0;
  b->down_logged = 1;
  b->up = 0;
  free_connections(b);
  map_each(&b->channels, free_key, NULL);
  map_free(&b->channels);
  free(b);
}

int bus_up(const struct bus *b) {
  return b && b->up;
}

int bus_starting(const struct bus *b) {
  return b && !b->up && !b->ever_up && !b->down_logged;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  struct pending *p = priv;
  (void)ac;
  if (p->fn)
    p->fn(p->arg, reply);
  free(p);
}

/* hiredis arms its write watcher for each command and writes once the loop reports the
 * socket writable: two epoll_ctl and one more loop pass per command (measured on the local
 * push path of a cluster). Writing them here, before libev applies that change, costs
 * neither; a write that does not finish leaves the watcher armed, as before. */
static void on_flush(struct ev_loop *loop, ev_prepare *w, int revents) {
  struct bus *b = w->data;
  (void)revents;
  ev_prepare_stop(loop, w);
  if (b->cmd && (b->cmd->c.flags & REDIS_CONNECTED))
    redisAsyncHandleWrite(b->cmd);
}

int bus_cmd(struct bus *b, bus_reply_fn fn, void *arg, int argc, const char **argv,
            const size_t *lens) {
  if (!b || !b->up || !b->cmd)
    return -ENOTCONN;
  struct pending *p = malloc(sizeof *p);
  if (!p)
    return -ENOMEM;
  p->fn = fn;
  p->arg = arg;
  if (redisAsyncCommandArgv(b->cmd, on_reply, p, argc, argv, lens) != REDIS_OK) {
    free(p);
    return -ENOTCONN;
  }
  if (!ev_is_active(&b->flush))
    ev_prepare_start(b->loop, &b->flush);
  return 0;
}

int bus_cmd_droppable(struct bus *b, bus_reply_fn fn, void *arg, int argc, const char **argv,
                      const size_t *lens) {
  /* hiredis keeps what it has not written in one growing buffer (an sds): past the bound
   * Redis is not keeping up, and a publish is refused rather than buffered. */
  if (b && b->up && b->cmd && b->cmd->c.obuf && sdslen(b->cmd->c.obuf) > BUS_MAX_UNSENT)
    return -ENOBUFS;
  return bus_cmd(b, fn, arg, argc, argv, lens);
}

int bus_subscribe(struct bus *b, const char *channel) {
  size_t n = strlen(channel);
  if (map_get(&b->channels, channel, n))
    return 0;
  if (map_set(&b->channels, channel, n, (void *)1) < 0)
    return -ENOMEM;
  if (b->up && b->sub)
    redisAsyncCommand(b->sub, on_message, b, "SUBSCRIBE %s", channel);
  return 0;
}

void bus_unsubscribe(struct bus *b, const char *channel) {
  if (!map_del(&b->channels, channel, strlen(channel)))
    return;
  if (b->up && b->sub)
    redisAsyncCommand(b->sub, NULL, NULL, "UNSUBSCRIBE %s", channel);
}
