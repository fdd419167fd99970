/* xthread.c: work other threads hand to the event loop: a mutex-protected queue and an
 * ev_async that wakes the loop to run it, in the order it was posted. */
#include "xthread.h"

#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct xthread {
  pthread_mutex_t mu;
  struct xthread_item *head, *tail;
  size_t count;
  /* Bytes of items queued or taken and not yet run: the loop gives them back one item at a
   * time as each has run, so a queue taken whole and then refilled cannot hold twice the
   * bound. Added under mu, taken back without it (a late subtraction only refuses early). */
  atomic_size_t bytes;
  size_t max_bytes;
  atomic_uint_least64_t refused;
  int closed;
  ev_async wake;
};

/* On the loop: runs everything queued now. */
static void xthread_drain(struct host *h);

static void on_wake(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop;
  (void)revents;
  xthread_drain(w->data);
}

int xthread_open(struct host *h) {
  struct xthread *x = calloc(1, sizeof *x);
  if (!x)
    return CLOUD_ENOMEM;
  pthread_mutex_init(&x->mu, NULL);
  x->max_bytes = h->cfg.xthread_max_bytes;
  ev_async_init(&x->wake, on_wake);
  x->wake.data = h;
  if (h->loop)
    ev_async_start(h->loop, &x->wake);
  h->xq = x;
  return 0;
}

int xthread_post(struct host *h, struct xthread_item *item, size_t bytes) {
  struct xthread *x = h ? h->xq : NULL;
  if (!x || !item)
    return CLOUD_ESTATE;
  pthread_mutex_lock(&x->mu);
  size_t held = atomic_load(&x->bytes);
  int rc = x->closed ? CLOUD_ESTATE
           : x->count >= XTHREAD_MAX_ITEMS || bytes > x->max_bytes || held > x->max_bytes - bytes
               ? CLOUD_EFULL
               : 0;
  if (rc == CLOUD_EFULL)
    atomic_fetch_add(&x->refused, 1);
  if (!rc) {
    atomic_fetch_add(&x->bytes, bytes);
    item->bytes = bytes;
    item->next = NULL;
    if (x->tail)
      x->tail->next = item;
    else
      x->head = item;
    x->tail = item;
    x->count++;
  }
  pthread_mutex_unlock(&x->mu);
  /* ev_async_send is the one libev call documented safe from any thread. */
  if (!rc && h->loop)
    ev_async_send(h->loop, &x->wake);
  return rc;
}

/* Takes the whole queue under the lock and runs it outside: a posting thread waits only for
 * a pointer swap, never for a send to 10 000 sockets. */
static struct xthread_item *take_all(struct xthread *x) {
  pthread_mutex_lock(&x->mu);
  struct xthread_item *all = x->head;
  x->head = x->tail = NULL;
  x->count = 0;
  pthread_mutex_unlock(&x->mu);
  return all;
}

static void xthread_drain(struct host *h) {
  struct xthread *x = h->xq;
  if (!x)
    return;
  for (struct xthread_item *it = take_all(x), *next; it; it = next) {
    next = it->next;
    size_t bytes = it->bytes;
    it->run(h, it);
    atomic_fetch_sub(&x->bytes, bytes);
  }
}

size_t xthread_bytes(struct host *h) {
  return h && h->xq ? atomic_load(&h->xq->bytes) : 0;
}

uint64_t xthread_refused(struct host *h) {
  return h && h->xq ? atomic_load(&h->xq->refused) : 0;
}

void xthread_close(struct host *h) {
  struct xthread *x = h->xq;
  if (!x)
    return;
  pthread_mutex_lock(&x->mu);
  x->closed = 1;
  pthread_mutex_unlock(&x->mu);
  for (struct xthread_item *it = take_all(x), *next; it; it = next) {
    next = it->next;
    it->run(NULL, it);
  }
  if (h->loop)
    ev_async_stop(h->loop, &x->wake);
  pthread_mutex_destroy(&x->mu);
  free(x);
  h->xq = NULL;
}
