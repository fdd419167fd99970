/* defer.c: HTTP responses that come later. The plugin gets an opaque number, not a pointer:
 * a completion after a timeout, a second completion or one after shutdown finds nothing in
 * the table and fails cleanly instead of writing through a dangling pointer. */
#include "defer.h"

#include "http.h"
#include "invocation.h"
#include "log.h"
#include "net_ops.h"
#include "plugins.h"
#include "xthread.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct deferred {
  uint64_t id;
  struct host *h;
  struct http_req *r; /* NULL once the client went away */
  void *pin;          /* the plugin version, kept loaded until this is answered */
  ev_timer timeout;
  int done; /* completed or timed out (under the table's lock) */
  char function[FN_NAME_MAX + 1];
  char request_id[72];
};

struct defers {
  pthread_mutex_t mu;
  struct map by_id; /* 8-byte id -> struct deferred * */
  uint64_t next_id;
};

/* A completion on its way to the loop. */
struct completion {
  struct xthread_item base;
  uint64_t id;
  int status;
  char content_type[64];
  size_t len;
  char body[];
};

int defers_open(struct host *h) {
  struct defers *t = calloc(1, sizeof *t);
  if (!t)
    return CLOUD_ENOMEM;
  pthread_mutex_init(&t->mu, NULL);
  map_init(&t->by_id);
  h->defers = t;
  return 0;
}

size_t defers_outstanding(struct host *h) {
  if (!h->defers)
    return 0;
  pthread_mutex_lock(&h->defers->mu);
  size_t n = h->defers->by_id.count;
  pthread_mutex_unlock(&h->defers->mu);
  return n;
}

/* Lets go of what d holds (its timer, its request's link, its plugin version) and frees it. */
static void release(struct host *h, struct deferred *d) {
  if (h->loop)
    ev_timer_stop(h->loop, &d->timeout);
  if (d->r)
    d->r->defer = NULL;
  plugins_unpin(h->plugins, d->pin);
  free(d);
}

/* Removes d from the table (caller holds no lock) and releases it. Loop only. */
static void finish(struct deferred *d) {
  struct host *h = d->h;
  pthread_mutex_lock(&h->defers->mu);
  map_del(&h->defers->by_id, &d->id, sizeof d->id);
  pthread_mutex_unlock(&h->defers->mu);
  release(h, d);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  struct deferred *d = w->data;
  struct host *h = d->h;
  pthread_mutex_lock(&h->defers->mu);
  int done = d->done;
  d->done = 1;
  pthread_mutex_unlock(&h->defers->mu);
  if (done)
    return; /* a completion is queued: it arrives on this turn of the loop */
  log_warn(d->function, d->request_id, "deferred response not completed within %d s: 504",
           h->cfg.defer_timeout);
  struct http_req *r = d->r;
  if (r) {
    static const char body[] = "{\"error\":\"Gateway Timeout\"}";
    r->host->net->http_set_response(r, 504, "application/json", body, sizeof body - 1);
    r->defer = NULL;
    d->r = NULL;
    r->host->net->http_deferred_done(r);
  }
  finish(d);
}

cloud_deferred *defer_begin(struct host *h, struct http_req *r, const char *fn) {
  if (!h->defers || !h->loop)
    return NULL;
  if (r->defer)
    return (cloud_deferred *)(uintptr_t)r->defer->id;
  struct deferred *d = calloc(1, sizeof *d);
  if (!d)
    return NULL;
  d->h = h;
  d->r = r;
  snprintf(d->function, sizeof d->function, "%s", fn);
  snprintf(d->request_id, sizeof d->request_id, "%s", r->request_id);
  pthread_mutex_lock(&h->defers->mu);
  d->id = ++h->defers->next_id;
  int rc = map_set(&h->defers->by_id, &d->id, sizeof d->id, d);
  pthread_mutex_unlock(&h->defers->mu);
  if (rc < 0) {
    free(d);
    return NULL;
  }
  d->pin = plugins_pin(h->plugins, fn);
  r->defer = d;
  ev_timer_init(&d->timeout, on_timeout, (ev_tstamp)h->cfg.defer_timeout, 0.);
  d->timeout.data = d;
  ev_timer_start(h->loop, &d->timeout);
  /* The response may take longer than lws's own idle timeouts for a request. */
  lws_set_timeout(r->wsi, NO_PENDING_TIMEOUT, 0);
  return (cloud_deferred *)(uintptr_t)d->id;
}

static void apply(struct host *h, struct xthread_item *it) {
  struct completion *c = (struct completion *)it;
  if (!h) {
    free(c);
    return;
  }
  pthread_mutex_lock(&h->defers->mu);
  struct deferred *d = map_get(&h->defers->by_id, &c->id, sizeof c->id);
  pthread_mutex_unlock(&h->defers->mu);
  if (d) {
    struct http_req *r = d->r;
    if (r) {
      r->defer = NULL;
      d->r = NULL;
      if (r->host->net->http_set_response(r, c->status, c->content_type, c->body, c->len) < 0) {
        static const char oom[] = "{\"error\":\"Internal Server Error\"}";
        r->host->net->http_set_response(r, 500, "application/json", oom, sizeof oom - 1);
      }
      r->host->net->http_deferred_done(r);
    } else
      log_info(d->function, d->request_id, "deferred response %d dropped: the client went away",
               c->status);
    finish(d);
  }
  free(c);
}

int defer_complete(struct host *h, cloud_deferred *handle, int status, const char *content_type,
                   const void *body, size_t len) {
  uint64_t id = (uint64_t)(uintptr_t)handle;
  if (!h || !h->defers || !id || status < 100 || status > 599 || (!body && len))
    return CLOUD_EINVAL;
  struct completion *c = malloc(sizeof *c + len + 1);
  if (!c)
    return CLOUD_ENOMEM;
  c->base.run = apply;
  c->id = id;
  c->status = status;
  snprintf(c->content_type, sizeof c->content_type, "%s", content_type);
  c->len = len;
  if (len)
    memcpy(c->body, body, len);
  c->body[len] = 0;
  /* Exactly once: the first caller marks it done; a second call or a late one after the
   * timeout is refused here, on its own thread, without touching the request. */
  pthread_mutex_lock(&h->defers->mu);
  struct deferred *d = map_get(&h->defers->by_id, &id, sizeof id);
  int ok = d && !d->done;
  if (ok)
    d->done = 1;
  pthread_mutex_unlock(&h->defers->mu);
  if (!ok) {
    free(c);
    return CLOUD_EINVAL;
  }
  if (invocation_on_loop()) {
    apply(h, &c->base);
    return 0;
  }
  int rc = xthread_post(h, &c->base, sizeof *c + len + 1);
  if (rc < 0) {
    pthread_mutex_lock(&h->defers->mu);
    d = map_get(&h->defers->by_id, &id, sizeof id);
    if (d)
      d->done = 0; /* not delivered: the plugin may try again, or the timeout answers */
    pthread_mutex_unlock(&h->defers->mu);
    free(c);
  }
  return rc;
}

/* Whether handle is open (known, not completed) and, if so, its request (NULL once the
 * client went away). Takes the table's lock: any thread. */
static int lookup_open(struct host *h, cloud_deferred *handle, struct http_req **r) {
  uint64_t id = (uint64_t)(uintptr_t)handle;
  *r = NULL;
  if (!h || !h->defers || !id)
    return 0;
  pthread_mutex_lock(&h->defers->mu);
  struct deferred *d = map_get(&h->defers->by_id, &id, sizeof id);
  int open = d && !d->done;
  if (open)
    *r = d->r;
  pthread_mutex_unlock(&h->defers->mu);
  return open;
}

int defer_open(struct host *h, cloud_deferred *handle) {
  struct http_req *r;
  return lookup_open(h, handle, &r);
}

struct http_req *defer_request(struct host *h, cloud_deferred *handle) {
  struct http_req *r;
  lookup_open(h, handle, &r);
  return r;
}

void defer_detach(struct deferred *d) {
  if (d)
    d->r = NULL;
}

static void cancel_one(void *arg, const char *key, void *value) {
  (void)key;
  release(arg, value);
}

void defers_cancel(struct host *h) {
  struct defers *t = h->defers;
  if (!t)
    return;
  pthread_mutex_lock(&t->mu);
  struct map all = t->by_id;
  map_init(&t->by_id);
  pthread_mutex_unlock(&t->mu);
  if (all.count)
    log_warn(NULL, NULL, "stopping with %zu deferred responses outstanding: not answered",
             all.count);
  /* Unpinning may run a version's fini, which joins its threads; they may want the lock. */
  map_each(&all, cancel_one, h);
  map_free(&all);
}

void defers_free(struct host *h) {
  struct defers *t = h->defers;
  if (!t)
    return;
  defers_cancel(h);
  map_free(&t->by_id);
  pthread_mutex_destroy(&t->mu);
  free(t);
  h->defers = NULL;
}

struct http_req *defer_handover(struct host *h, cloud_deferred *handle) {
  uint64_t id = (uint64_t)(uintptr_t)handle;
  if (!h || !h->defers || !id)
    return NULL;
  pthread_mutex_lock(&h->defers->mu);
  struct deferred *d = map_get(&h->defers->by_id, &id, sizeof id);
  int open = d && !d->done && d->r;
  if (open)
    d->done = 1;
  pthread_mutex_unlock(&h->defers->mu);
  if (!open)
    return NULL;
  struct http_req *r = d->r;
  finish(d); /* unlinks r->defer */
  return r;
}
