/* xthread.c: work other threads hand to the event loop: a mutex-protected queue and an
 * ev_async that wakes the loop to run it, in the order it was posted. */
#include "xthread.h"

#include "log.h"

#include <pthread.h>
#include <stdlib.h>

struct xthread {
  pthread_mutex_t mu;
  struct xthread_item *head, *tail;
  size_t count;
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
  ev_async_init(&x->wake, on_wake);
  x->wake.data = h;
  if (h->loop)
    ev_async_start(h->loop, &x->wake);
  h->xq = x;
  return 0;
}

int xthread_post(struct host *h, struct xthread_item *item) {
  struct xthread *x = h ? h->xq : NULL;
  if (!x || !item)
    return CLOUD_ESTATE;
  pthread_mutex_lock(&x->mu);
  int rc = x->closed ? CLOUD_ESTATE : x->count >= XTHREAD_MAX_ITEMS ? CLOUD_EFULL : 0;
  if (!rc) {
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
    it->run(h, it);
  }
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
