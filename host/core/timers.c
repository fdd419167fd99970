/* timers.c: timers owned by a function by name, on the libev loop. A firing looks the function
 * up again, so a timer survives a reload (the new version gets it) and ends when the file is
 * gone. A repeating timer whose handler overran skips the firings it missed: no pile-up. */
#include "timers.h"

#include "invocation.h"
#include "log.h"
#include "plugins.h"
#include "rooms.h"

#include <stdlib.h>
#include <string.h>

struct timer {
  ev_timer w;
  struct host *h;
  uint64_t every_ms;
  ev_tstamp due; /* loop time of the next firing */
  int firing, dead, replaced;
  size_t keylen;
  const char *name; /* inside key */
  char key[];       /* "<function>\0<name>" */
};

struct timers {
  struct map all; /* key -> struct timer * */
};

int timers_open(struct host *h) {
  struct timers *t = calloc(1, sizeof *t);
  if (!t)
    return CLOUD_ENOMEM;
  map_init(&t->all);
  h->timers = t;
  return 0;
}

static void timer_free(void *arg, const char *key, void *value) {
  (void)key;
  struct host *h = arg;
  struct timer *t = value;
  if (h->loop)
    ev_timer_stop(h->loop, &t->w);
  free(t);
}

void timers_close(struct host *h) {
  if (!h->timers)
    return;
  map_each(&h->timers->all, timer_free, h);
  map_free(&h->timers->all);
  free(h->timers);
  h->timers = NULL;
}

uint64_t timers_every_ms(const void *timer) {
  return timer ? ((const struct timer *)timer)->every_ms : 0;
}

size_t timers_count(const struct host *h) {
  return h->timers ? h->timers->all.count : 0;
}

static void timer_remove(struct host *h, struct timer *t) {
  map_del(&h->timers->all, t->key, t->keylen);
  ev_timer_stop(h->loop, &t->w);
  if (t->firing)
    t->dead = 1; /* its own handler stopped it: freed when the handler returns */
  else
    free(t);
}

static void arm(struct host *h, struct timer *t, ev_tstamp in_s) {
  ev_timer_stop(h->loop, &t->w);
  t->due = ev_now(h->loop) + in_s;
  ev_timer_set(&t->w, in_s, 0.);
  ev_timer_start(h->loop, &t->w);
}

static void fire(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  struct timer *t = w->data;
  struct host *h = t->h;
  const char *fn = t->key;
  if (!plugins_loaded(h->plugins, fn)) {
    log_info(fn, NULL, "timer %s ended: function %s is no longer loaded", t->name, fn);
    timer_remove(h, t);
    return;
  }
  FunctionContext ctx = {0};
  char rid[32];
  host_request_id(h, rid, sizeof rid);
  ctx.size = sizeof ctx;
  ctx.function_name = fn;
  ctx.request_id = rid;
  ctx.method = "Timer";
  ctx.params.data = t->name;
  ctx.params.len = strlen(t->name);
  int found;
  t->firing = 1;
  int rc = invoke(h, INV_TIMER, t, fn, &ctx, &found);
  t->firing = 0;
  if (t->dead) {
    free(t);
    return;
  }
  if (rc) {
    h->stats.plugin_errors++;
    log_error(fn, rid, "Timer %s failed: returned %d", t->name, rc);
  }
  if (t->replaced) { /* started again from its own handler: that start set the schedule */
    t->replaced = 0;
    return;
  }
  if (!found || !t->every_ms) {
    timer_remove(h, t);
    return;
  }
  /* The next firing is on the timer's own grid; the ones the handler overran are skipped. */
  ev_now_update(loop);
  ev_tstamp now = ev_now(loop), every = (ev_tstamp)t->every_ms / 1e3, next = t->due + every;
  uint64_t skipped = 0;
  if (next <= now) {
    skipped = (uint64_t)((now - next) / every) + 1;
    next += (ev_tstamp)skipped * every;
  }
  if (skipped)
    log_debug(fn, rid, "timer %s overran its %llu ms period: %llu firings skipped", t->name,
              (unsigned long long)t->every_ms, (unsigned long long)skipped);
  arm(h, t, next - now);
}

int timers_start(struct host *h, const char *fn, const char *name, uint64_t first_ms,
                 uint64_t every_ms) {
  if (!h->timers || !h->loop)
    return CLOUD_ESTATE;
  if (!fn || !room_name_valid(name) || first_ms > 365ULL * 86400 * 1000 ||
      every_ms > 365ULL * 86400 * 1000)
    return CLOUD_EINVAL;
  size_t fl = strlen(fn), nl = strlen(name), keylen = fl + 1 + nl;
  char key[FN_NAME_MAX + 2 + 128 + 1];
  if (keylen >= sizeof key)
    return CLOUD_EINVAL;
  memcpy(key, fn, fl + 1);
  memcpy(key + fl + 1, name, nl + 1);
  struct timer *t = map_get(&h->timers->all, key, keylen);
  if (!t) {
    if (h->timers->all.count >= TIMERS_MAX)
      return CLOUD_EFULL;
    t = calloc(1, sizeof *t + keylen + 1);
    if (!t)
      return CLOUD_ENOMEM;
    memcpy(t->key, key, keylen + 1);
    t->keylen = keylen;
    t->name = t->key + fl + 1;
    t->h = h;
    ev_init(&t->w, fire);
    t->w.data = t;
    if (map_set(&h->timers->all, t->key, keylen, t) < 0) {
      free(t);
      return CLOUD_ENOMEM;
    }
  } else if (t->firing)
    t->replaced = 1;
  t->every_ms = every_ms;
  arm(h, t, (ev_tstamp)first_ms / 1e3);
  return 0;
}

int timers_stop(struct host *h, const char *fn, const char *name) {
  if (!h->timers || !fn || !room_name_valid(name))
    return CLOUD_EINVAL;
  size_t fl = strlen(fn), nl = strlen(name);
  char key[FN_NAME_MAX + 2 + 128 + 1];
  if (fl + 1 + nl >= sizeof key)
    return CLOUD_EINVAL;
  memcpy(key, fn, fl + 1);
  memcpy(key + fl + 1, name, nl + 1);
  struct timer *t = map_get(&h->timers->all, key, fl + 1 + nl);
  if (!t)
    return CLOUD_EINVAL;
  timer_remove(h, t);
  return 0;
}
