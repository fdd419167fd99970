/* xthread.h: work other threads hand to the event loop: a mutex-protected queue and an
 * ev_async that wakes the loop to run it. Owns the queue; what runs is the poster's. */
#ifndef WSHOST_XTHREAD_H
#define WSHOST_XTHREAD_H

#include "host.h"

/* Most items a queue holds; a post past it, or past --xthread-max-bytes of items waiting or
 * running, fails with CLOUD_EFULL (a thread flooding the loop is told, not buffered without
 * bound: the count alone let 1 MiB items pile up to 64 GiB while a handler held the loop). */
#define XTHREAD_MAX_ITEMS 65536

/* Something to run on the loop. `run` gets the host and the item, and frees the item (it was
 * malloc'ed by the poster). With h NULL the host is going away: free only, do nothing. */
struct xthread_item {
  struct xthread_item *next;
  void (*run)(struct host *h, struct xthread_item *item);
  size_t bytes; /* what the item holds, counted against the bound until it has run */
};

int xthread_open(struct host *h);
/* Runs what is left (with a NULL host: freed, not run) and stops the watcher. */
void xthread_close(struct host *h);
/* From any thread: queues item, which holds bytes (its allocation), and wakes the loop. 0, or
 * CLOUD_EFULL (past the item or byte bound; counted) / CLOUD_ESTATE (no loop); on failure
 * the item is still the caller's. */
int xthread_post(struct host *h, struct xthread_item *item, size_t bytes);
/* Any thread: bytes posted and not yet run, and posts refused with CLOUD_EFULL so far. */
size_t xthread_bytes(struct host *h);
uint64_t xthread_refused(struct host *h);

#endif
